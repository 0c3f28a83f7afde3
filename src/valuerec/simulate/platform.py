"""The platform's side of the simulation: what it has logged, what it has fitted, and the
:class:`~valuerec.recommend.policies.SlateContext` it serves policies from.

The platform never reads the latent world. It keeps running aggregates of its own logs
(visits, exposures, clicks, purchases, price levels, category shares, which items each user
saw recently and bought), fits a recommender and a value model on its history, and builds
per-(user, candidate) features from them. Because every aggregate is a function of the logged
events only, replaying a log through a fresh platform rebuilds exactly the contexts the
logging policy saw: that is how a new policy is evaluated off-policy on old logs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from valuerec.data import synth
from valuerec.recommend.policies import SlateContext, ltv_rank
from valuerec.simulate.log import DayLog

FEATURES = (
    "rel_z",
    "rel_rank",
    "log_price",
    "price_gap_click",
    "price_gap_buy",
    "has_clicks",
    "has_buys",
    "seen",
    "cat_share",
    "item_pop",
    "margin_rate",
    "item_cvr",
    "user_price_gap",
    "user_ctr",
    "user_cvr",
    "log_visits",
    "log_ltv",
    "churn_risk",
)


class Platform:
    """Observed state and fitted models for ``n_users`` users over an item table.

    Users and items are indexed like the simulator's (row ``i`` is ``user_ids[i]``).
    """

    def __init__(
        self,
        items: pd.DataFrame,
        n_users: int,
        slate_size: int = 10,
        candidates: int = 100,
        seen_decay: float = 0.7,
        impression_discount: float = 0.5,
    ) -> None:
        m = len(items)
        self.k = slate_size
        self.n_candidates = min(candidates, m)
        if self.n_candidates < slate_size:
            raise ValueError("need at least as many candidates as slate positions")
        self.seen_decay = seen_decay
        self.impression_discount = impression_discount
        self.price = items["price"].to_numpy(dtype=float)
        self.margin_rate = items["margin_rate"].to_numpy(dtype=float)
        cats = pd.Index(synth._CATEGORIES)
        self.category = np.maximum(cats.get_indexer(items["category"]), 0)
        log_price = np.log(self.price)
        self.log_price = log_price
        self.log_price_z = (log_price - log_price.mean()) / log_price.std()
        self.item_embedding = np.eye(len(cats))[self.category]  # MMR: same category = similar
        # fitted models (set by the experiment)
        self.relevance_scores = np.zeros((n_users, m), dtype=np.float32)
        self.ltv = np.zeros(n_users)
        self.churn_risk = np.full(n_users, 0.5)
        self.ltv_rank = np.zeros(n_users)
        self.purchase_model: Any = None  # .predict(features, position) -> P(purchase)
        # observed state
        self.visits = np.zeros(n_users)
        self.exposures = np.zeros(n_users)
        self.clicks = np.zeros(n_users)
        self.buys = np.zeros(n_users)
        self.revenue = np.zeros(n_users)
        self.logp_click = np.zeros(n_users)
        self.logp_buy = np.zeros(n_users)
        self.cat_clicks = np.zeros((n_users, len(cats)))
        self.item_interactions = np.zeros(m)
        self.item_exposures = np.zeros(m)
        self.item_buys = np.zeros(m)
        self.seen = np.zeros((n_users, m), dtype=np.float32)
        self.bought = np.zeros((n_users, m), dtype=bool)

    @property
    def n_users(self) -> int:
        return len(self.visits)

    def copy(self) -> Platform:
        """An independent snapshot of the observed state; fitted models are shared."""
        new = copy.copy(self)
        for name, value in self.__dict__.items():
            if isinstance(value, np.ndarray):
                setattr(new, name, value.copy())
        return new

    # -- models -----------------------------------------------------------------------------
    def set_relevance(self, scores: np.ndarray) -> None:
        """A recommender's scores of every user and item, standardised per user."""
        if scores.shape != self.relevance_scores.shape:
            raise ValueError(f"scores must be {self.relevance_scores.shape}")
        sd = scores.std(axis=1, keepdims=True)
        z = (scores - scores.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
        self.relevance_scores = z.astype(np.float32)

    def set_value(self, ltv: np.ndarray, churn_risk: np.ndarray) -> None:
        """Predicted lifetime value and churn risk per user (any value model)."""
        self.ltv = np.asarray(ltv, dtype=float)
        self.churn_risk = np.clip(np.asarray(churn_risk, dtype=float), 0.0, 1.0)
        self.ltv_rank = ltv_rank(self.ltv)

    # -- observing the log --------------------------------------------------------------------
    def update(self, d: DayLog) -> None:
        """Fold one logged day into the aggregates (the same code live and in replay)."""
        self.seen *= self.seen_decay
        self.visits[d.users] += 1
        if d.is_slate:
            assert d.items is not None and d.click is not None and d.buy is not None
            users = np.repeat(d.users, d.items.shape[1])
            items, click, buy = d.items.ravel(), d.click.ravel(), d.buy.ravel()
            paid = d.paid.ravel() if d.paid is not None else np.zeros(len(items))
            np.add.at(self.exposures, users, 1.0)
            np.add.at(self.seen, (users, items), 1.0)
            np.add.at(self.item_exposures, items, 1.0)
            np.add.at(self.item_buys, items[buy], 1.0)
        else:
            assert d.view_user is not None and d.view_item is not None and d.view_buy is not None
            users, items = d.users[d.view_user], d.view_item
            click, buy = np.ones(len(items), bool), d.view_buy
            paid = d.view_paid if d.view_paid is not None else np.zeros(len(items))
        cu, ci = users[click], items[click]
        np.add.at(self.clicks, cu, 1.0)
        np.add.at(self.logp_click, cu, self.log_price[ci])
        np.add.at(self.cat_clicks, (cu, self.category[ci]), 1.0)
        np.add.at(self.item_interactions, ci, 1.0)
        bu, bi = users[buy], items[buy]
        np.add.at(self.buys, bu, 1.0)
        np.add.at(self.revenue, bu, paid[buy])
        np.add.at(self.logp_buy, bu, self.log_price[bi])
        self.bought[bu, bi] = True

    # -- serving ------------------------------------------------------------------------------
    def candidates(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each user's top-M items by relevance among those not bought yet, best first.

        Relevance is the recommender's standardised score minus ``impression_discount`` per
        (decayed) recent exposure of the item to the user: the usual impression discount of a
        retrieval stage, without which a model fitted once would show the same slate daily.
        """
        scores = self.relevance_scores[users] - self.impression_discount * self.seen[users]
        scores = np.where(self.bought[users], -np.inf, scores)
        m = self.n_candidates
        part = np.argpartition(-scores, m - 1, axis=1)[:, :m]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)  # by score, ties by item index
        cand = np.take_along_axis(part, order, axis=1)
        rel = np.take_along_axis(scores, cand, axis=1)
        # a user who bought nearly everything: unbought filler never beats a real candidate.
        # The floor is taken over finite scores only, and only when there are any: a day with
        # no visitors (a tiny population, or everyone has left) has an empty ``rel``, where a
        # plain nanmin raises instead of giving the empty context that day calls for.
        finite = np.isfinite(rel)
        floor = rel[finite].min() if finite.any() else 0.0
        rel = np.where(finite, rel, floor)
        return cand, rel

    def context(self, users: np.ndarray, day: int = 0) -> SlateContext:
        """Today's context for ``users``: candidates, their relevance, prices and margins, the
        users' value predictions; features and P(purchase) are computed when first asked for."""
        cand, rel = self.candidates(users)
        model = self.purchase_model
        features = _Once(lambda: self.features(users, cand, rel))
        # P(purchase) of each candidate shown first, from the logged-feature purchase model
        p_purchase = None if model is None else _Once(lambda: model.predict(features(), 1))
        return SlateContext(
            users,
            cand,
            rel,
            self.k,
            day=day,
            price=self.price[cand],
            margin_rate=self.margin_rate[cand],
            ltv=self.ltv[users],
            churn_risk=self.churn_risk[users],
            ltv_rank=self.ltv_rank[users],
            item_embedding=self.item_embedding,
            p_purchase=p_purchase,
            features=features,
            feature_names=FEATURES,
        )

    def features(self, users: np.ndarray, cand: np.ndarray, rel: np.ndarray) -> np.ndarray:
        """``(users, candidates, len(FEATURES))`` float32 features from the logs only."""
        n, m = cand.shape
        sd = rel.std(axis=1, keepdims=True)
        rel_z = (rel - rel.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
        clicks, buys = self.clicks[users], self.buys[users]
        lp = self.log_price[cand]
        mean_click = np.where(clicks > 0, self.logp_click[users] / np.maximum(clicks, 1), 0)
        mean_buy = np.where(buys > 0, self.logp_buy[users] / np.maximum(buys, 1), 0)
        gap_click = np.where(clicks[:, None] > 0, lp - mean_click[:, None], 0.0)
        gap_buy = np.where(buys[:, None] > 0, lp - mean_buy[:, None], 0.0)
        cat_share = (self.cat_clicks[users][np.arange(n)[:, None], self.category[cand]] + 0.1) / (
            clicks[:, None] + 0.1 * self.cat_clicks.shape[1]
        )
        per_user = np.column_stack(
            [
                (clicks + 1) / (self.exposures[users] + 10),
                (buys + 0.5) / (clicks + 5),
                np.log1p(self.visits[users]),
                np.log1p(self.ltv[users]),
                self.churn_risk[users],
            ]
        )
        out = np.empty((n, m, len(FEATURES)), dtype=np.float32)
        out[..., 0] = rel_z
        out[..., 1] = np.arange(m)[None, :] / m
        out[..., 2] = self.log_price_z[cand]
        out[..., 3] = gap_click
        out[..., 4] = gap_buy
        out[..., 5] = (clicks > 0)[:, None]
        out[..., 6] = (buys > 0)[:, None]
        out[..., 7] = self.seen[users[:, None], cand]
        out[..., 8] = cat_share
        out[..., 9] = np.log1p(self.item_interactions[cand])
        out[..., 10] = self.margin_rate[cand]
        # the item's own purchases per exposure, smoothed towards the platform-wide rate: what
        # taste and popularity features miss about an item (its price appeal, its quality)
        prior = (self.item_buys.sum() + 1.0) / (self.item_exposures.sum() + 20.0)
        out[..., 11] = (self.item_buys[cand] + 20.0 * prior) / (self.item_exposures[cand] + 20.0)
        # how much cheaper than what they click a user buys: a price-sensitivity signal
        out[..., 12] = np.where((clicks > 0) & (buys > 0), mean_buy - mean_click, 0.0)[:, None]
        out[..., 13:] = per_user[:, None, :]
        return out


class _Once:
    """A zero-argument function evaluated once, then remembered."""

    def __init__(self, fn: Callable[[], np.ndarray]) -> None:
        self.fn = fn
        self.value: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if self.value is None:
            self.value = self.fn()
        return self.value


def candidate_positions(candidates: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Where each shown item sits in its user's candidate row (items must be candidates)."""
    hit = candidates[:, None, :] == items[:, :, None]
    if not hit.any(axis=2).all():
        raise ValueError("a shown item is not among the user's candidates")
    return hit.argmax(axis=2)


def interactions_frame(events: pd.DataFrame, types: Sequence[str]) -> pd.DataFrame:
    """user_id/item_id pairs of the given event types (what recommenders fit on)."""
    sel = events[events["event_type"].isin(list(types))]
    return sel[["user_id", "item_id"]].drop_duplicates()
