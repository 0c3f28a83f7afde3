"""Calibration of expected-spend predictions that never changes their ranking.

Value models trained on mostly-zero, heavy-tailed spend are often mis-calibrated by level of
prediction (the top decile over-predicted, the middle under-predicted), which decile
calibration (decile MAPE) punishes even when the ranking is good. The map below is fitted on
out-of-fold predictions: customers are cut into bins by prediction, and the bins' mean
prediction and mean actual spend, made monotone by isotonic regression, are joined by a line
in log space. The map is strictly increasing, so Gini, top-k shares and AUC are untouched;
beyond the outer bins it keeps the outer bins' ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.isotonic import IsotonicRegression

_FLOOR = 1e-6


@dataclass(frozen=True)
class SpendCalibration:
    """Monotone piecewise-linear map in log space; the identity when it has no knots."""

    log_pred: np.ndarray = field(default_factory=lambda: np.zeros(0))
    log_actual: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        pred = np.asarray(pred, float)
        if len(self.log_pred) < 2:
            return pred
        lp = np.log(np.maximum(pred, _FLOOR))
        x, y = self.log_pred, self.log_actual
        inside = np.interp(lp, x, y)
        # beyond the knots keep the end ratio (slope 1 in log space): still strictly increasing
        out = np.where(
            lp < x[0], lp + (y[0] - x[0]), np.where(lp > x[-1], lp + (y[-1] - x[-1]), inside)
        )
        return np.where(pred > 0, np.exp(out), 0.0)

    @classmethod
    def fit(
        cls, pred: np.ndarray, actual: np.ndarray, n_bins: int = 10, min_customers: int = 500
    ) -> SpendCalibration:
        """Fit on held-out (prediction, actual) pairs; the identity with too little data."""
        pred, actual = np.asarray(pred, float), np.asarray(actual, float)
        ok = pred > 0
        if ok.sum() < min_customers or actual[ok].sum() <= 0:
            return cls()
        order = np.argsort(pred[ok], kind="stable")
        bins = np.array_split(order, n_bins)
        mp = np.array([pred[ok][b].mean() for b in bins])
        ma = np.array([actual[ok][b].mean() for b in bins])
        x = np.log(mp)
        if np.any(np.diff(x) <= 0):  # tied bins: merge by keeping unique knots
            x, first = np.unique(x, return_index=True)
            mp, ma = mp[first], ma[first]
        mono = IsotonicRegression(increasing=True).fit_transform(x, ma)
        y = np.log(np.maximum(mono, mp * 1e-3))
        y = y + np.arange(len(y)) * 1e-6  # strictly increasing: no new ties
        return cls(x, np.maximum.accumulate(y))
