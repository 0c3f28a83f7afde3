"""Value-aware re-ranking of a real store's recommendations: the simulator's blend, served.

A recommender ranks a user's candidates by relevance; :func:`value_rerank` re-orders them with
the same formula as :class:`~valuerec.recommend.policies.ValueAwarePolicy` (it calls
:func:`~valuerec.recommend.policies.blend_scores`), so what the policy benchmark measured in
the simulator is what the CLI and the API serve. What the simulator's platform learns from
its logs comes here from the store, once, through :class:`ItemValues` (price, purchase
propensity, margin rate and category of every item) and :class:`UserValues` (churn risk and
LTV percentile from a value model's predictions).

Typical use (the API holds both tables and re-ranks per request)::

    items = ItemValues.from_store(store)
    users = UserValues.from_predictions(value_model.predict(horizon_days=365, store=store))
    cand = recommender.recommend([user_id], k=50)          # candidates, best relevance first
    arrays = items.take(cand["item_id"])
    risk, rank = users.get(user_id)
    order = value_rerank(cand["score"].to_numpy(), arrays.price, arrays.p_purchase,
                         value_weight=1.0, churn_risk=risk, ltv_rank=rank, k=10)
    top = cand.iloc[order]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from valuerec.data.schema import event_type_list, id_list
from valuerec.recommend.policies import (
    blend_scores,
    expected_money,
    ltv_rank,
    mmr_rank,
    top_k,
    user_value_weight,
    zscore,
)

__all__ = ["ItemArrays", "ItemValues", "UserValues", "look_types", "value_rerank"]

#: events that mean "the user saw the item", the denominator of the purchase propensity
#: (the default serving roles' exposure type and views; :func:`look_types` for others)
LOOK_TYPES = ("exposure", "view")

#: the event type whose count is the numerator (never a look, whatever a setting says)
PURCHASE = "purchase"


def look_types(exposures: Sequence[str]) -> tuple[str, ...]:
    """The look types for a server whose settings call ``exposures`` its exposure types:
    those (what it logs as shown, e.g. ``impression``) and views. The server and
    ``recommend for --config`` both pass the settings' ``events.exposure`` here, so a
    configured exposure type counts as a look rather than only through the "any other
    event" fallback of :meth:`ItemValues.from_store`."""
    return _event_kinds((*exposures, "view"))


def _event_kinds(types: Sequence[str]) -> tuple[str, ...]:
    """Event types as the store keeps them (:func:`event_type_list`), each once, never the
    purchase type (a purchase is the numerator, never a look)."""
    return tuple(dict.fromkeys(t for t in event_type_list(types) if t and t != PURCHASE))


#: the fewest relevance candidates the value-aware blend re-ranks (see :func:`candidate_pool`)
MIN_POOL = 50


def candidate_pool(k: int) -> int:
    """How many of the most relevant items the blend re-ranks for a top-``k``: at least
    :data:`MIN_POOL`, and five per slot, so that value can lift an item from somewhat below
    the cut but not from the bottom of the catalogue (the server and the CLI both)."""
    return max(MIN_POOL, 5 * k)


def value_rerank(
    relevance: np.ndarray,
    price: np.ndarray,
    p_purchase: np.ndarray,
    value_weight: float = 0.0,
    *,
    k: int | None = None,
    margin_rate: np.ndarray | None = None,
    objective: str = "revenue",
    churn_risk: float | None = None,
    ltv_rank: float | None = None,
    protect: float = 1.0,
    diversity: float = 0.0,
    embedding: np.ndarray | None = None,
) -> np.ndarray:
    """Order one user's candidates for long-term value; returns candidate indices, best first.

    Args:
        relevance: ``(m,)`` the recommender's scores of the candidates (any scale; finite).
        price: ``(m,)`` item prices (money per purchase).
        p_purchase: ``(m,)`` estimated probability that showing the item leads to a purchase
            (:meth:`ItemValues.take` gives the store's smoothed purchase-per-view rate).
        value_weight: how much expected money counts against relevance, both standardised
            over the candidates: ``score = z(relevance) + w z(p_purchase x price [x margin])``.
            ``0`` (with ``diversity=0``) returns exactly the relevance order (stable: ties keep
            the candidates' order). The policy benchmark's tuned value is 3.0.
        k: how many to return (default: all ``m``).
        margin_rate: ``(m,)`` margin per unit of revenue; needed for ``objective="margin"``.
        objective: ``"revenue"`` or ``"margin"``: what the money term counts.
        churn_risk: the user's predicted churn risk (``1 - p_alive``), or None if unknown.
        ltv_rank: the user's predicted-LTV percentile in [0, 1] (:class:`UserValues`).
        protect: ``w = value_weight x (1 - protect x churn_risk x ltv_rank)``: at-risk,
            high-value users get a slate closer to pure relevance, the one most likely to
            keep them; needs both ``churn_risk`` and ``ltv_rank``.
        diversity: MMR weight (Carbonell & Goldstein 1998) against showing similar items
            together; needs ``embedding``.
        embedding: ``(m, f)`` item vectors for MMR (cosine similarity; :class:`ItemValues`
            gives category vectors).

    Raises:
        ValueError: shapes differ, a relevance score is not finite, or an option is out of
            range.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    m = len(rel)
    k = m if k is None else min(int(k), m)
    # written so that NaN fails too (every comparison with NaN is false)
    if not (0 <= value_weight < np.inf and 0 <= diversity < np.inf and 0 <= protect <= 1):
        raise ValueError(
            "need finite value_weight >= 0, finite diversity >= 0 and 0 <= protect <= 1"
        )
    if rel.ndim != 1 or np.shape(price) != rel.shape or np.shape(p_purchase) != rel.shape:
        raise ValueError("relevance, price and p_purchase must be 1-D arrays of one length")
    if not np.isfinite(rel).all():
        raise ValueError("relevance scores must be finite (drop masked candidates first)")
    if not (np.isfinite(price).all() and np.isfinite(p_purchase).all()):
        raise ValueError("price and p_purchase must be finite (fill unknown ones first)")
    if m == 0 or k < 1:
        return np.zeros(0, dtype=np.int64)
    if value_weight == 0:
        scores = rel[None, :]
    else:
        money = expected_money(p_purchase, price, margin_rate, objective)[None, :]
        w = user_value_weight(
            value_weight,
            1,
            protect,
            None if churn_risk is None else np.array([churn_risk]),
            None if ltv_rank is None else np.array([ltv_rank]),
        )
        scores = blend_scores(rel[None, :], money, w)
    if diversity > 0:
        if embedding is None or len(embedding) != m:
            raise ValueError("MMR diversity needs an (m, f) embedding of the candidates")
        emb = np.asarray(embedding, dtype=np.float64)
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = np.where(norm > 0, emb / np.where(norm > 0, norm, 1.0), 0.0)
        return mmr_rank(zscore(scores), emb[None], k, diversity)[0]
    return top_k(scores, k)[0]


@dataclass
class ItemArrays:
    """Per-candidate arrays for :func:`value_rerank`, aligned with the ids asked for."""

    price: np.ndarray
    p_purchase: np.ndarray
    margin_rate: np.ndarray | None
    embedding: np.ndarray


@dataclass
class ItemValues:
    """What each item is worth when shown, estimated once from a store's log.

    * ``price``: the catalogue price, else the item's median paid value, else the median of
      the prices known so (catalogue or paid; 1.0 when nothing has a price: the money term
      is then the propensity);
    * ``p_purchase``: purchases per look, where a look is an event of ``look_types``
      (exposures and views by default) if the store logs any (any other non-purchase event
      otherwise), smoothed towards the pooled rate of the looked items with ``prior_looks``
      pseudo-looks -- an item shown twice and bought once is not a 50% item. That needs
      looks that account for the sales: when at least half of the purchases fall on looks
      (an item's purchases up to its looks), the items with looks get their smoothed rate
      and the items without any (bought or not) the pooled rate. Otherwise (purchases only,
      or a few exposures a server wrote back among many purchases) every item gets its
      share of the buyers, as if there were no looks: purchases per look over so few looks
      would be about 1 for every item;
    * ``margin_rate``: from the items' ``margin_rate`` property when every item has one;
    * ``embedding``: category indicator vectors (``a|b`` categories split) for MMR.
    """

    item_ids: pd.Index
    price: np.ndarray
    p_purchase: np.ndarray
    margin_rate: np.ndarray | None
    embedding: np.ndarray
    default_p: float  # for items the store has no row for

    @classmethod
    def from_store(
        cls, store: Any, prior_looks: float = 20.0, look_types: Sequence[str] = LOOK_TYPES
    ) -> ItemValues:
        """Build the table from ``store`` (two SQL aggregates over events, plus the items).

        ``look_types``: the event types that mean "shown" (:func:`look_types` of the serving
        settings' exposure types; purchases never count as looks).

        Looks are counted over every event, purchases over the purchases alone: a
        ``count(DISTINCT ...) FILTER`` and a ``median FILTER`` in the one scan of every event
        made DuckDB hash all of them (0.6 s at 5M events, against 0.2 s for the two). A
        server rebuilds this while purchases stream in (``ServeService.item_values``).

        Portable SQL through ``fetch_frame``, so PostgreSQL aggregates on the server: through
        ``store.query`` (DuckDB SQL, on PostgreSQL a local copy of the tables) every rebuild
        after a stored event copied the whole events table first, 2-2.4 s at 1M events
        against 0.4 s for the aggregates themselves. ``percentile_cont(0.5)`` is DuckDB's
        ``median`` (interpolated), spelled as both engines read it.
        """
        items = store.items()
        kinds = list(_event_kinds(look_types))
        # bound as parameters (a configured type is text from a settings file), one per type:
        # a list parameter is spelled differently on DuckDB and PostgreSQL
        looks_in = ", ".join("?" for _ in kinds) or "NULL"
        looked = store.fetch_frame(
            f"""
            SELECT item_id,
                   count(*) FILTER (WHERE event_type IN ({looks_in})) AS looks,
                   count(*) FILTER (WHERE event_type <> 'purchase') AS other
            FROM events WHERE item_id IS NOT NULL GROUP BY item_id
            """,
            kinds,
        )
        bought = store.fetch_frame(
            """
            SELECT item_id, count(*) AS buys, count(DISTINCT user_id) AS buyers,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY value)
                       FILTER (WHERE value > 0) AS paid
            FROM events WHERE item_id IS NOT NULL AND event_type = 'purchase' GROUP BY item_id
            """
        )
        counts = looked.merge(bought, on="item_id", how="outer")
        ids = pd.Index(
            sorted(set(items["item_id"].astype(str)) | set(counts["item_id"].astype(str)))
        )
        c = counts.assign(item_id=counts["item_id"].astype(str)).set_index("item_id")
        c = c.reindex(ids)
        buys = c["buys"].fillna(0).to_numpy(float)
        looks = c["looks"].fillna(0).to_numpy(float)
        if looks.sum() == 0:
            looks = c["other"].fillna(0).to_numpy(float)
        seen = looks > 0
        # purchases the logged looks account for: an item's purchases up to its looks
        covered = np.minimum(looks, buys).sum()
        if seen.any() and 2 * covered >= buys.sum():
            looks = np.maximum(looks, buys)  # a purchase is at least one look
            # pooled over the looked items alone: an item bought but never shown would
            # otherwise count as bought on every look and pull the rate towards 1
            prior = buys[seen].sum() / looks[seen].sum()
            p = np.where(seen, (buys + prior_looks * prior) / (looks + prior_looks), prior)
        else:  # no looks, or too few to explain the sales (exposures written back among
            # many purchases): the share of the customers who bought the item (a repeat
            # buyer counts once: purchase events would not be a probability)
            n_buyers = int(
                store.fetch(
                    "SELECT count(DISTINCT user_id) FROM events WHERE event_type = 'purchase'"
                )[0][0]
            )
            p = c["buyers"].fillna(0).to_numpy(float) / max(n_buyers, 1)
            prior = float(p.mean()) if len(p) else 0.0  # for items the store never saw
        it = items.assign(item_id=items["item_id"].astype(str)).set_index("item_id").reindex(ids)
        price = pd.to_numeric(it["price"], errors="coerce").to_numpy(float)
        paid = pd.to_numeric(c["paid"], errors="coerce").to_numpy(float)
        price = np.where(np.isfinite(price) & (price > 0), price, paid)
        known = price[np.isfinite(price) & (price > 0)]
        fill = float(np.median(known)) if len(known) else 1.0
        price = np.where(np.isfinite(price) & (price > 0), price, fill)
        return cls(
            item_ids=ids,
            price=price,
            p_purchase=p,
            margin_rate=_margins(it["properties"]) if "properties" in it else None,
            embedding=_category_vectors(it["category"]),
            default_p=float(prior),
        )

    def take(self, item_ids: Sequence[str] | pd.Series | np.ndarray) -> ItemArrays:
        """The arrays for these candidates; items the store never saw get the catalogue's
        median price (over every item's price, filled as above), the store-wide purchase
        rate, no margin and no category."""
        idx = self.item_ids.get_indexer(pd.Index(id_list(item_ids, "item_ids")))
        hit = idx >= 0
        n = len(idx)
        if not len(self.item_ids):  # a store without items: every candidate is unknown
            emb = np.zeros((n, self.embedding.shape[1]), dtype=self.embedding.dtype)
            return ItemArrays(np.ones(n), np.full(n, self.default_p), None, emb)
        safe = np.where(hit, idx, 0)
        price = np.where(hit, self.price[safe], float(np.median(self.price)))
        p = np.where(hit, self.p_purchase[safe], self.default_p)
        margin = None
        if self.margin_rate is not None:
            margin = np.where(hit, self.margin_rate[safe], float(np.median(self.margin_rate)))
        emb = self.embedding[safe] * hit[:, None]
        return ItemArrays(price, p, margin, emb)


@dataclass
class UserValues:
    """Each user's churn risk and LTV percentile from a value model's predictions."""

    user_ids: pd.Index
    churn_risk: np.ndarray
    ltv_rank: np.ndarray

    @classmethod
    def from_predictions(cls, pred: pd.DataFrame) -> UserValues:
        """From ``ValueModel.predict`` output (``user_id``, ``ltv``, ``p_alive``)."""
        ltv = pd.to_numeric(pred["ltv"], errors="coerce").fillna(0.0).to_numpy(float)
        alive = pd.to_numeric(pred["p_alive"], errors="coerce").fillna(1.0).to_numpy(float)
        return cls(
            pd.Index(pred["user_id"].astype(str)), np.clip(1.0 - alive, 0.0, 1.0), ltv_rank(ltv)
        )

    def get(self, user_id: str) -> tuple[float | None, float | None]:
        """``(churn_risk, ltv_rank)`` of a user, ``(None, None)`` for one the model never saw
        (the blend then applies the full value weight)."""
        i = self.user_ids.get_indexer([str(user_id)])[0]
        if i < 0:
            return None, None
        return float(self.churn_risk[i]), float(self.ltv_rank[i])


def _margins(properties: pd.Series) -> np.ndarray | None:
    """``margin_rate`` from each item's JSON properties, if every item has a numeric one."""
    out = np.full(len(properties), np.nan)
    for i, raw in enumerate(properties):
        try:
            props = json.loads(raw) if isinstance(raw, str) else raw
            out[i] = float(props["margin_rate"])
        except (TypeError, ValueError, KeyError):
            return None
    return out if np.isfinite(out).all() else None


def _category_vectors(categories: pd.Series) -> np.ndarray:
    """Unit indicator vectors of each item's categories (``a|b`` counts both)."""
    lists = [
        [c.strip() for c in str(v).split("|") if c.strip()] if isinstance(v, str) else []
        for v in categories
    ]
    names = sorted({c for cats in lists for c in cats})
    col = {c: j for j, c in enumerate(names)}
    emb = np.zeros((len(lists), max(len(names), 1)))
    for i, cats in enumerate(lists):
        for c in cats:
            emb[i, col[c]] = 1.0
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return np.where(norm > 0, emb / np.where(norm > 0, norm, 1.0), 0.0)
