"""Calibration of expected-spend predictions that never changes their ranking.

Value models trained on mostly-zero, heavy-tailed spend tend to spread their predictions too
far (the top decile over-predicted, the bottom under-predicted), which decile calibration
(decile MAPE) punishes even when the ranking is good. A power map
``calibrated = exp(c0) * pred ** c1`` with ``c1 > 0``, fitted by Poisson deviance on
customers the model did not train on, corrects the level and the spread with two numbers and
is strictly increasing, so Gini, top-k shares and AUC are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

_FLOOR = 1e-6


@dataclass(frozen=True)
class PowerCalibration:
    """``exp(c0) * pred ** c1``; the identity is ``PowerCalibration(0.0, 1.0)``."""

    c0: float = 0.0
    c1: float = 1.0

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        pred = np.asarray(pred, float)
        out = np.exp(self.c0 + self.c1 * np.log(np.maximum(pred, _FLOOR)))
        return np.where(pred > 0, out, 0.0)

    @classmethod
    def fit(
        cls, pred: np.ndarray, actual: np.ndarray, min_customers: int = 200
    ) -> PowerCalibration:
        """Fit on held-out (pred, actual) pairs; the identity when there are too few or no spend."""
        pred, actual = np.asarray(pred, float), np.asarray(actual, float)
        ok = pred > 0
        if ok.sum() < min_customers or actual[ok].sum() <= 0:
            return cls()
        lp, y = np.log(pred[ok]), actual[ok]

        def deviance(theta: np.ndarray) -> float:
            eta = theta[0] + theta[1] * lp
            return float(np.mean(np.exp(eta) - y * eta))

        res = minimize(
            deviance,
            np.array([0.0, 1.0]),
            method="Nelder-Mead",
            options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000},
        )
        c0, c1 = (float(v) for v in res.x)
        if not res.success or not 0.3 <= c1 <= 3.0:  # a wild map is worse than none
            return cls()
        return cls(c0, c1)
