"""The platform's models, fitted on its own simulated logs with valuerec's regular tools.

* relevance: any registered recommender (:func:`valuerec.recommend.registry.make_recommender`)
  fitted on views, clicks and purchases;
* value: any registered value model (:func:`valuerec.value.registry.make_model`) fitted on the
  purchases after ingesting them into an in-memory store, exactly as on real data;
* purchase probability: a LightGBM classifier of purchase given an exposure, on the features
  the platform logged when it served (:data:`~valuerec.simulate.platform.FEATURES` plus the
  position), used by the revenue-greedy and value-aware policies and as the reward model of
  the doubly robust estimator.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from valuerec.simulate.log import SimLog
from valuerec.simulate.platform import Platform, interactions_frame


def fit_relevance(
    events: pd.DataFrame,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    model: str = "ease",
    types: Sequence[str] = ("view", "click", "purchase"),
) -> np.ndarray:
    """``(users, items)`` scores of a recommender fitted on ``events``; users or items it
    never saw get its cold-start (popularity) scores / the lowest score."""
    from valuerec.recommend.registry import make_recommender

    rec = make_recommender(model).fit(interactions_frame(events, types))
    rows = rec.user_ids_.get_indexer(pd.Index(user_ids))
    cols = rec.item_ids_.get_indexer(pd.Index(item_ids))
    known_cols = np.flatnonzero(cols >= 0)
    out = np.empty((len(user_ids), len(item_ids)), dtype=np.float32)
    cold = np.asarray(rec.cold_start_scores(), dtype=np.float32)
    out[:] = np.float32(cold.min() - 1.0)
    out[:, known_cols] = cold[cols[known_cols]]
    known = np.flatnonzero(rows >= 0)
    for lo in range(0, len(known), 2048):
        part = known[lo : lo + 2048]
        scores = np.asarray(rec.score_users(rows[part]), dtype=np.float32)
        block = np.full((len(part), len(item_ids)), scores.min() - 1.0, dtype=np.float32)
        block[:, known_cols] = scores[:, cols[known_cols]]
        out[part] = block
    return out


def fit_value(
    events: pd.DataFrame,
    user_ids: np.ndarray,
    as_of: np.datetime64 | pd.Timestamp,
    model: str = "bgnbd",
    horizon_days: float = 90.0,
    fit_users: int | None = 500,
    seed: int = 0,
    fallback: str | None = "naive",
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted LTV and churn risk (1 - P(alive)) per user from a value model fitted on the
    purchases before ``as_of``. Users without a purchase get LTV 0 and the mean risk.

    ``fit_users``: fit on a random sample of that many customers (BTYD models have a handful
    of population parameters, which a few hundred customers pin down, while their likelihood
    costs grow with every customer), then predict for all. A short history can defeat a BTYD
    fit (parameters running off to infinity); then ``fallback`` is fitted instead and a
    warning says so.
    """
    from valuerec.data.ingest import ingest
    from valuerec.data.store import Store
    from valuerec.features.split import log_end

    purchases = events[events["event_type"] == "purchase"]
    purchases = purchases[["user_id", "item_id", "event_type", "timestamp", "value", "quantity"]]
    ltv = np.zeros(len(user_ids))
    risk = np.full(len(user_ids), np.nan)
    with Store(":memory:") as store:
        ingest(store, purchases.reset_index(drop=True), "events")
        cut = pd.Timestamp(as_of)
        end = pd.Timestamp(log_end(store))
        if cut > end:
            # A population so small that nobody bought in the last days: the value layer
            # refuses a cut-off past the end of its data (it cannot tell that from a typo),
            # so the model is fitted and scored as of the day after the last purchase.
            warnings.warn(
                f"no purchase between {end:%Y-%m-%d} and {cut:%Y-%m-%d}: the value model is "
                f"fitted as of {end:%Y-%m-%d}",
                stacklevel=2,
            )
            cut = end
        # the sample comes from customers the model can see: a purchase before the cut
        before = pd.to_datetime(purchases["timestamp"]) < cut
        customers = np.sort(purchases.loc[before, "user_id"].unique())
        sample = None
        if fit_users is not None and len(customers) > fit_users:
            sample = list(np.random.default_rng(seed).choice(customers, fit_users, replace=False))
        try:
            pred = _fit_predict(store, model, cut, horizon_days, sample)
        except (ValueError, FloatingPointError) as exc:
            if fallback is None or fallback == model:
                raise
            warnings.warn(f"value model {model} failed ({exc}); using {fallback}", stacklevel=2)
            pred = _fit_predict(store, fallback, cut, horizon_days, sample)
    pos = pd.Index(user_ids).get_indexer(pred["user_id"])
    ok = pos >= 0
    ltv[pos[ok]] = pred["ltv"].to_numpy()[ok]
    risk[pos[ok]] = 1.0 - pred["p_alive"].to_numpy()[ok]
    risk[np.isnan(risk)] = np.nanmean(risk) if ok.any() else 0.5
    return ltv, risk


def _fit_predict(
    store: Any, model: str, cut: pd.Timestamp, horizon_days: float, users: list[str] | None
) -> pd.DataFrame:
    from valuerec.value.registry import make_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # BTYD special functions overflow
        fitted = make_model(model).fit(store, cut, holdout_days=int(horizon_days), users=users)
        return fitted.predict(horizon_days=horizon_days, store=store, as_of=cut)


def logged_rows(logs: Sequence[SimLog]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exposure rows of logs recorded with features: (features, position, bought, paid)."""
    feats, pos, buy, paid = [], [], [], []
    for log in logs:
        for d in log.slate_days():
            if d.features is None:
                raise ValueError("the log was recorded without features (record_features=True)")
            v, k = d.items.shape  # type: ignore[union-attr]
            # the feature width, not -1: a day without visitors has 0 rows, and numpy cannot
            # infer a dimension from an empty array
            feats.append(d.features.reshape(v * k, d.features.shape[-1]))
            pos.append(np.tile(np.arange(1, k + 1), v))
            buy.append(d.buy.ravel())  # type: ignore[union-attr]
            paid.append(d.paid.ravel())  # type: ignore[union-attr]
    return np.concatenate(feats), np.concatenate(pos), np.concatenate(buy), np.concatenate(paid)


class PurchaseModel:
    """P(purchase | item shown at a position), LightGBM on the platform's logged features.

    Position is a feature, so the model learns the position bias from the logs and can be
    asked for any position: policies rank by the probability at position 1, the doubly robust
    estimator needs it at the position an item was (or would be) shown.
    """

    def __init__(self, n_estimators: int = 80, learning_rate: float = 0.1, seed: int = 0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.seed = seed

    def fit(self, features: np.ndarray, position: np.ndarray, bought: np.ndarray) -> PurchaseModel:
        import lightgbm as lgb

        self.model_ = lgb.LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=15,  # small: it is asked for every candidate of every visit
            min_child_samples=50,
            subsample=0.8,
            subsample_freq=1,
            random_state=self.seed,
            n_jobs=1,
            verbose=-1,
        )
        self.model_.fit(self._design(features, position), bought.astype(int))
        return self

    @staticmethod
    def _design(features: np.ndarray, position: np.ndarray | int) -> np.ndarray:
        pos = np.broadcast_to(np.asarray(position, dtype=np.float32), features.shape[:-1])
        return np.concatenate([features, pos[..., None]], axis=-1).reshape(
            -1, features.shape[-1] + 1
        )

    def predict(self, features: np.ndarray, position: np.ndarray | int = 1) -> np.ndarray:
        """P(purchase) with the shape of ``features`` without its last axis."""
        design = self._design(features, position)
        if not len(design):  # a day without visitors (LightGBM refuses an empty matrix)
            return np.zeros(features.shape[:-1])
        p = self.model_.predict_proba(design)[:, 1]
        return p.reshape(features.shape[:-1])


def fit_purchase_model(logs: Sequence[SimLog], seed: int = 0) -> PurchaseModel:
    """The purchase model fitted on the exposures of ``logs``.

    Raises:
        ValueError: the logs show no slate (nobody visited), said in those words rather than
            LightGBM's "Found array with 0 sample(s)".
    """
    feats, pos, buy, _ = logged_rows(logs)
    if not len(buy):
        raise ValueError("no slate was shown (nobody visited) to fit the purchase model on")
    return PurchaseModel(seed=seed).fit(feats, pos, buy)


def attach_models(
    platform: Platform,
    events: pd.DataFrame,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    as_of: np.datetime64 | pd.Timestamp,
    recommender: str = "ease",
    value_model: str = "bgnbd",
) -> None:
    """Fit the relevance and value models on ``events`` and give them to ``platform``."""
    platform.set_relevance(fit_relevance(events, user_ids, item_ids, recommender))
    platform.set_value(*fit_value(events, user_ids, as_of, value_model))
