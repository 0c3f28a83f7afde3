"""The classical value models behind the common interface: naive carry-forward and BTYD.

These are the baselines every other model is judged against, so they are kept exactly as the
literature defines them (:mod:`valuerec.value.btyd` holds the maths).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from valuerec.value.base import CountPMF, ValueData, ValueModel
from valuerec.value.btyd import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter

WEEK = 7.0


class NaiveValueModel(ValueModel):
    """Carry the calibration rate forward: repeat purchases and spend per day x horizon.

    The "do nothing clever" baseline a value model must beat.
    """

    name = "naive"

    def _fit(self, data: ValueData) -> None:
        self.is_fitted_ = True

    def _predict(self, data: ValueData, horizon_days: float) -> pd.DataFrame:
        f = data.features
        age = np.maximum(f["age_days"].to_numpy(), 1.0)
        rate = f["frequency"].to_numpy() / age
        # floored like the value layer's spend labels: refunds netting out are worth 0, not less
        spend_rate = (
            np.maximum(f["frequency"].to_numpy() * f["monetary_repeat"].to_numpy(), 0) / age
        )
        return pd.DataFrame(
            {
                "pred_transactions": rate * horizon_days,
                "pred_spend": spend_rate * horizon_days,
                "p_alive": (f["frequency"].to_numpy() > 0).astype(float),
            }
        )


class BTYDValueModel(ValueModel):
    """BG/NBD or Pareto/NBD for purchases, Gamma-Gamma for spend per purchase."""

    def __init__(self, transactions: str = "bgnbd", penalizer: float = 0.0,
                 discount_rate: float = 0.01) -> None:  # fmt: skip
        if transactions not in ("bgnbd", "pareto"):
            raise ValueError("transactions must be 'bgnbd' or 'pareto'")
        self.transactions = transactions
        self.penalizer = penalizer
        self.discount_rate = discount_rate

    @property
    def name(self) -> str:  # type: ignore[override]
        return "bgnbd+gg" if self.transactions == "bgnbd" else "pareto+gg"

    def _fit(self, data: ValueData) -> None:
        cls = BetaGeoFitter if self.transactions == "bgnbd" else ParetoNBDFitter
        self.transaction_model_ = cls(penalizer=self.penalizer).fit(data.rfm)
        repeaters = data.rfm[(data.rfm["monetary_days"] > 0) & (data.rfm["monetary_value"] > 0)]
        if len(repeaters) < 3:
            raise ValueError(
                "Gamma-Gamma needs at least 3 customers with repeat purchases of positive "
                f"value, got {len(repeaters)}"
            )
        self.spend_model_ = GammaGammaFitter(penalizer=self.penalizer).fit(repeaters)
        self.profile_model_ = self.transaction_model_

    def _count_pmf(self, data: ValueData, horizon_days: float) -> tuple[CountPMF, float]:
        """The model's own conditional PMF of purchases in the horizon (weeks inside)."""
        r = data.rfm
        x, t_x, T = (r[c].to_numpy(float) for c in ("frequency", "recency", "T"))
        tm = self.transaction_model_

        def pmf(n: int, rows: np.ndarray) -> np.ndarray:
            return np.asarray(
                tm.conditional_probability_of_n_purchases_up_to_time(
                    n, horizon_days / WEEK, x[rows], t_x[rows], T[rows]
                ),
                dtype=float,
            )

        return pmf, 1.0

    def _predict(self, data: ValueData, horizon_days: float) -> pd.DataFrame:
        r = data.rfm
        x, t_x, T = (r[c].to_numpy() for c in ("frequency", "recency", "T"))
        tm = self.transaction_model_
        n = np.asarray(
            tm.conditional_expected_number_of_purchases_up_to_time(horizon_days / WEEK, x, t_x, T),
            dtype=float,
        )
        spend = np.asarray(
            # weighed by the repeat days with a value: days without one say nothing of spend
            self.spend_model_.conditional_expected_average_profit(
                r["monetary_days"].to_numpy(), r["monetary_value"].to_numpy()
            ),
            dtype=float,
        )
        alive = np.asarray(tm.conditional_probability_alive(x, t_x, T), dtype=float)
        # LTV comes from the base class: this model's own per-period purchase curve
        return pd.DataFrame({"pred_transactions": n, "pred_spend": n * spend, "p_alive": alive})
