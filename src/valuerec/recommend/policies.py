"""Ranking policies: what to show each user today, in which order, and with what probability.

A recommender scores items; a *policy* turns what the platform knows at serving time into a
slate. Every policy here sees the same :class:`SlateContext` -- today's users, their candidate
items (best relevance first), the recommender's scores, prices and margins, the users'
predicted lifetime value and churn risk, and (computed only when asked for) an estimated
purchase probability and a feature tensor -- and returns a :class:`Slate`: for each user the
chosen candidate positions and, for each shown item, the probability that the policy puts it
at that position. Deterministic policies show their ranking with probability 1; the
:class:`EpsilonGreedy` wrapper explores and reports exact marginal propensities, which is what
off-policy evaluation (:mod:`valuerec.evaluate.offpolicy`) needs from a logging policy.
:meth:`Policy.propensity` gives any policy's probability of an already logged slate, so a new
policy can be evaluated on an old policy's logs.

Policies:

* :class:`RelevancePolicy` -- the recommender's scores, nothing else;
* :class:`RevenueGreedyPolicy` -- estimated P(purchase) x price: maximises today's revenue;
* :class:`ValueAwarePolicy` -- relevance plus ``value_weight`` times the expected margin, the
  weight lowered for users whose loss would cost most (churn risk x LTV rank), with optional
  MMR diversity; ``value_weight=0`` and ``diversity=0`` is exactly the relevance ranking;
* :class:`valuerec.recommend.longterm.LongTermPolicy` -- learned from logged data (PyTorch).

The simulator (:mod:`valuerec.simulate`) builds contexts from its logs; nothing here knows
about it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EpsilonGreedy",
    "Policy",
    "RelevancePolicy",
    "RevenueGreedyPolicy",
    "ScoredPolicy",
    "Slate",
    "SlateContext",
    "ValueAwarePolicy",
    "blend_scores",
    "expected_money",
    "ltv_rank",
    "mmr_rank",
    "top_k",
    "user_value_weight",
    "zscore",
]


class SlateContext:
    """What a policy may know when it ranks today's slates (rows: users, columns: candidates).

    ``p_purchase`` (estimated P(purchase) of a candidate shown first) and ``features`` (a
    ``(users, candidates, F)`` array for learned policies) may be given as arrays or as
    zero-argument callables: they are computed on first use and shared by every policy that
    ranks the same context (the benchmark evaluates several policies on one logged day).
    """

    def __init__(
        self,
        users: np.ndarray,
        candidates: np.ndarray,
        relevance: np.ndarray,
        k: int,
        *,
        day: int = 0,
        price: np.ndarray | None = None,
        margin_rate: np.ndarray | None = None,
        ltv: np.ndarray | None = None,
        churn_risk: np.ndarray | None = None,
        ltv_rank: np.ndarray | None = None,
        item_embedding: np.ndarray | None = None,
        p_purchase: np.ndarray | Callable[[], np.ndarray] | None = None,
        features: np.ndarray | Callable[[], np.ndarray] | None = None,
        feature_names: Sequence[str] = (),
    ) -> None:
        self.users = np.asarray(users)
        self.candidates = np.asarray(candidates)
        self.relevance = np.asarray(relevance, dtype=np.float64)
        if self.candidates.shape != self.relevance.shape or self.candidates.ndim != 2:
            raise ValueError("candidates and relevance must both be (users, candidates)")
        if not 1 <= k <= self.candidates.shape[1]:
            raise ValueError(f"slate size {k} must be between 1 and the number of candidates")
        self.k = int(k)
        self.day = day
        self.price = price
        self.margin_rate = margin_rate
        self.ltv = ltv
        self.churn_risk = churn_risk
        self.ltv_rank = ltv_rank
        self.item_embedding = item_embedding
        self.feature_names = tuple(feature_names)
        self._lazy = {"p_purchase": p_purchase, "features": features}
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_candidates(self) -> int:
        return self.candidates.shape[1]

    def _get(self, name: str) -> np.ndarray:
        if name not in self._cache:
            source = self._lazy[name]
            if source is None:
                raise ValueError(f"this context has no {name}: the policy needs it")
            self._cache[name] = np.asarray(source() if callable(source) else source)
        return self._cache[name]

    @property
    def p_purchase(self) -> np.ndarray:
        return self._get("p_purchase")

    @property
    def features(self) -> np.ndarray:
        return self._get("features")

    def require(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) is None:
                raise ValueError(f"this context has no {name}: the policy needs it")


@dataclass
class Slate:
    """Chosen candidate positions ``(users, k)`` and each one's probability at its position."""

    positions: np.ndarray
    propensity: np.ndarray

    def items(self, ctx: SlateContext) -> np.ndarray:
        """The shown item indices (``ctx.candidates`` at the chosen positions)."""
        return np.take_along_axis(ctx.candidates, self.positions, axis=1)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` highest scores, best first; ties go to the lower
    index, so equal scores keep the candidate (relevance) order."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def mmr_rank(scores: np.ndarray, embedding: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Maximal marginal relevance (Carbonell & Goldstein 1998): greedily pick the candidate
    maximising ``score - diversity * max cosine similarity to the items already picked``.

    ``embedding``: ``(users, candidates, f)`` unit vectors. Similar items shown together tire
    users (the simulator discounts a category's repeats), which plain score ranking ignores.
    """
    n, m = scores.shape
    picked = np.zeros((n, k), dtype=np.int64)
    max_sim = np.full((n, m), -np.inf)  # nothing picked yet: no similarity to penalise
    taken = np.zeros((n, m), dtype=bool)
    rows = np.arange(n)
    for pos in range(k):
        # the max over picked items, negative similarities included (a floor at 0 would drop
        # them); the first pick is by score alone
        penalty = diversity * max_sim if pos else 0.0
        adj = np.where(taken, -np.inf, scores - penalty)
        best = np.argmax(adj, axis=1)  # first maximum: ties keep candidate order
        picked[:, pos] = best
        taken[rows, best] = True
        sim = np.einsum("nmf,nf->nm", embedding, embedding[rows, best])
        np.maximum(max_sim, sim, out=max_sim)
    return picked


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardise each row, so relevance and money add on comparable scales per user."""
    sd = x.std(axis=1, keepdims=True)
    return (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def ltv_rank(ltv: np.ndarray) -> np.ndarray:
    """Each user's predicted-LTV percentile in ``[0, 1]`` (ties by position): the scale on
    which the blend's protection compares users, whatever the value model's currency."""
    ltv = np.asarray(ltv, dtype=float)
    order = np.argsort(np.argsort(ltv, kind="stable"), kind="stable")
    return order / max(len(order) - 1, 1)


def expected_money(
    p_purchase: np.ndarray,
    price: np.ndarray,
    margin_rate: np.ndarray | None = None,
    objective: str = "revenue",
) -> np.ndarray:
    """What showing an item is expected to earn today: P(purchase) x price, times the margin
    rate when ``objective="margin"`` (revenue is what the business reports; margin what it
    keeps)."""
    if objective not in ("margin", "revenue"):
        raise ValueError("objective must be 'margin' or 'revenue'")
    money = np.asarray(p_purchase, dtype=np.float64) * np.asarray(price, dtype=np.float64)
    if objective == "margin":
        if margin_rate is None:
            raise ValueError("objective='margin' needs margin rates")
        money = money * np.asarray(margin_rate, dtype=np.float64)
    return money


def user_value_weight(
    value_weight: float,
    n_users: int,
    protect: float = 0.0,
    churn_risk: np.ndarray | None = None,
    ltv_rank: np.ndarray | None = None,
) -> np.ndarray:
    """``w_u = value_weight x (1 - protect x churn_risk_u x ltv_rank_u)``: how much money
    counts in each user's ranking. An at-risk, high-value user keeps the slate most likely to
    bring them back; without value predictions every user gets ``value_weight``."""
    w = np.full(n_users, float(value_weight))
    if protect and churn_risk is not None and ltv_rank is not None:
        risk = np.clip(
            np.asarray(churn_risk, dtype=float) * np.asarray(ltv_rank, dtype=float), 0, 1
        )
        w *= 1.0 - protect * risk
    return w


def blend_scores(relevance: np.ndarray, money: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The value-aware blend, ``z(relevance) + w_u z(money)`` per row (z: standardised over the
    row's candidates, so the two add on comparable scales whatever the recommender's or the
    currency's units). The one definition used by :class:`ValueAwarePolicy` in the simulator
    and by :func:`valuerec.recommend.rerank.value_rerank` on real data."""
    rel = zscore(np.asarray(relevance, dtype=np.float64))
    weight = np.asarray(weight, dtype=np.float64)
    if not np.any(weight):
        return rel
    return rel + weight[:, None] * zscore(money)


class Policy(ABC):
    """A ranking policy: :meth:`slate` for serving, :meth:`propensity` for evaluation."""

    name = "policy"
    #: whether the ranking reads the platform's purchase model (``ctx.p_purchase``): a
    #: platform that refits it need not rerun a policy that never looks at it
    reads_purchase_model = True

    @abstractmethod
    def rank(self, ctx: SlateContext) -> np.ndarray:
        """The policy's (most likely) slate: candidate positions ``(users, k)``, best first."""

    def slate(self, ctx: SlateContext, rng: np.random.Generator) -> Slate:
        """Today's slates; deterministic policies ignore ``rng`` and have propensity 1."""
        pos = self.rank(ctx)
        return Slate(pos, np.ones(pos.shape))

    def propensity(self, ctx: SlateContext, positions: np.ndarray) -> np.ndarray:
        """P(this policy shows candidate ``positions[u, k]`` at position k) for logged slates."""
        return (np.asarray(positions) == self.rank(ctx)).astype(np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ScoredPolicy(Policy):
    """A policy that ranks by a score per candidate (optionally diversified with MMR)."""

    diversity: float = 0.0

    @abstractmethod
    def scores(self, ctx: SlateContext) -> np.ndarray:
        """``(users, candidates)`` scores; higher is shown earlier."""

    def rank(self, ctx: SlateContext) -> np.ndarray:
        s = self.scores(ctx)
        if self.diversity > 0:
            if ctx.item_embedding is None:
                raise ValueError("MMR diversity needs item embeddings in the context")
            emb = ctx.item_embedding[ctx.candidates]
            return mmr_rank(zscore(s), emb, ctx.k, self.diversity)
        return top_k(s, ctx.k)


class RelevancePolicy(ScoredPolicy):
    """Show what the recommender scores highest: the relevance-only baseline."""

    name = "relevance"
    reads_purchase_model = False

    def scores(self, ctx: SlateContext) -> np.ndarray:
        return ctx.relevance


class RevenueGreedyPolicy(ScoredPolicy):
    """Show what maximises today's expected revenue: estimated P(purchase) x price.

    Ignores what the slate does to the user's satisfaction and so to their future visits.
    """

    name = "revenue-greedy"

    def scores(self, ctx: SlateContext) -> np.ndarray:
        ctx.require("price")
        return ctx.p_purchase * ctx.price


class ValueAwarePolicy(ScoredPolicy):
    """Relevance blended with expected margin, protecting the users worth keeping.

    ``score = z(relevance) + w_u z(P(purchase) x price x margin rate)`` per user (z: standardised
    over the user's candidates), with ``w_u = value_weight x (1 - protect x churn_risk_u x
    ltv_rank_u)``: the margin pushes harder for users who are safe or worth little, while an
    at-risk high-value user keeps the slate that is most likely to bring them back.
    ``objective="revenue"`` uses expected revenue instead of margin. ``diversity`` > 0 re-ranks
    with MMR over item embeddings. With ``value_weight=0`` and
    ``diversity=0`` the ranking is exactly :class:`RelevancePolicy`'s.
    """

    name = "value-aware"

    def __init__(
        self,
        value_weight: float = 0.5,
        diversity: float = 0.0,
        protect: float = 1.0,
        objective: str = "margin",
    ) -> None:
        if value_weight < 0 or diversity < 0 or not 0 <= protect <= 1:
            raise ValueError("need value_weight >= 0, diversity >= 0 and 0 <= protect <= 1")
        if objective not in ("margin", "revenue"):
            raise ValueError("objective must be 'margin' or 'revenue'")
        self.value_weight = value_weight
        self.diversity = diversity
        self.protect = protect
        self.objective = objective

    def user_weight(self, ctx: SlateContext) -> np.ndarray:
        """``w_u``: how much expected margin counts for each of today's users."""
        return user_value_weight(
            self.value_weight, len(ctx), self.protect, ctx.churn_risk, ctx.ltv_rank
        )

    def scores(self, ctx: SlateContext) -> np.ndarray:
        if self.value_weight == 0:
            return zscore(ctx.relevance)
        ctx.require("price", *(("margin_rate",) if self.objective == "margin" else ()))
        money = expected_money(ctx.p_purchase, ctx.price, ctx.margin_rate, self.objective)
        return blend_scores(ctx.relevance, money, self.user_weight(ctx))

    def __repr__(self) -> str:
        return (
            f"ValueAwarePolicy(value_weight={self.value_weight}, diversity={self.diversity}, "
            f"protect={self.protect}, objective={self.objective!r})"
        )


class EpsilonGreedy(Policy):
    """Explore: with probability ``epsilon`` a user's whole slate is ``k`` candidates drawn
    uniformly without replacement, otherwise the base policy's ranking.

    The marginal propensity of candidate ``c`` at position ``p`` is then exact and cheap:
    ``(1 - epsilon) [base puts c at p] + epsilon / M`` (M candidates: a uniformly random
    arrangement puts each candidate at each position with probability 1/M), and it sums to 1
    over the candidates at every position. ``epsilon=1`` is the uniformly random policy.
    """

    def __init__(self, base: Policy, epsilon: float = 0.3, name: str | None = None):
        if not 0 <= epsilon <= 1:
            raise ValueError("epsilon must be in [0, 1]")
        self.base = base
        self.epsilon = epsilon
        self.reads_purchase_model = base.reads_purchase_model
        self.name = name or f"{base.name}+eps{epsilon:g}"

    def rank(self, ctx: SlateContext) -> np.ndarray:
        return self.base.rank(ctx)

    def slate(self, ctx: SlateContext, rng: np.random.Generator) -> Slate:
        n, m = ctx.candidates.shape
        explore = rng.random(n) < self.epsilon
        pos = self.base.rank(ctx) if self.epsilon < 1 else np.zeros((n, ctx.k), np.int64)
        if explore.any():
            keys = rng.random((int(explore.sum()), m))
            pos[explore] = np.argsort(keys, axis=1)[:, : ctx.k]  # a uniform arrangement
        return Slate(pos, self.propensity(ctx, pos))

    def propensity(self, ctx: SlateContext, positions: np.ndarray) -> np.ndarray:
        m = ctx.n_candidates
        uniform = self.epsilon / m
        if self.epsilon == 1:
            return np.full(np.shape(positions), uniform)
        hit = np.asarray(positions) == self.base.rank(ctx)
        return (1.0 - self.epsilon) * hit + uniform

    def position_probabilities(self, ctx: SlateContext) -> np.ndarray:
        """``(users, k, M)``: P(candidate c at position p) -- each (user, p) row sums to 1."""
        n, m = ctx.candidates.shape
        out = np.full((n, ctx.k, m), self.epsilon / m)
        if self.epsilon < 1:
            base = self.base.rank(ctx)
            np.put_along_axis(
                out,
                base[:, :, None],
                np.take_along_axis(out, base[:, :, None], axis=2) + (1.0 - self.epsilon),
                axis=2,
            )
        return out
