"""The interactive environment: each day every active user visits with their rate, a policy
shows them a slate, they click, buy and -- depending on how satisfying the slate was -- stay
or leave.

Randomness is drawn per day from streams keyed by ``(seed, stream, day)`` and indexed by user
and position, so two policies run from the same state face the same visits and the same
uniform draws (common random numbers): differences between their outcomes come from what they
showed, not from luck, which tightens every comparison the benchmark makes.

The environment holds the true state (who is still active, fatigue, what each user bought) and
the latent :class:`~valuerec.simulate.world.World`; policies see only the platform's
:class:`~valuerec.simulate.platform.Platform` contexts. ``copy()`` snapshots a state so several
policies can start from the same one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit
from threadpoolctl import threadpool_limits

from valuerec.recommend.policies import Policy
from valuerec.simulate.log import DayLog, SimLog
from valuerec.simulate.platform import Platform
from valuerec.simulate.world import World

# random streams
_VISIT, _CLICK, _BUY, _DROP, _POLICY, _CLOCK, _ORGANIC = range(7)


@dataclass
class Incentive:
    """A campaign: treated users get ``discount`` off every purchase for ``days`` days.

    A discount raises a user's purchase probability as a price cut would (through their price
    sensitivity) and the goodwill lowers their dropout hazard by ``goodwill`` while it runs; it
    also lowers what every purchase earns, so giving it to users who would buy anyway loses
    money. Effects differ by user, which is what an uplift model can learn and an LTV ranking
    cannot.
    """

    treated: np.ndarray  # (n_users,) bool
    discount: float = 0.2
    days: int = 30
    goodwill: float = 0.5
    first_day: int = 0  # the run's day the campaign starts

    def __post_init__(self) -> None:
        # out of range, the simulation would not fail but quietly compute nonsense: a
        # discount of 1 or more makes log1p(-discount) -inf or NaN in :func:`_discounted`, and
        # a goodwill outside [0, 1] makes the dropout hazard negative or larger than before
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must be in [0, 1), got {self.discount}")
        if not 0.0 <= self.goodwill <= 1.0:
            raise ValueError(f"goodwill must be in [0, 1], got {self.goodwill}")


@dataclass
class SimResult:
    """Outcome of one run: totals, per-day series, per-user revenue and the log."""

    policy: str
    days: int
    revenue: float
    margin: float
    clicks: int
    purchases: int
    impressions: int
    active_start: int
    active_end: int
    ndcg: float  # mean NDCG@k of the shown slates against the users' true relevance
    daily: pd.DataFrame
    user_revenue: np.ndarray = field(repr=False)
    active: np.ndarray = field(repr=False)  # (n_users,) bool at the end
    log: SimLog | None = field(default=None, repr=False)

    def summary(self) -> dict[str, float | int | str]:
        return {
            "policy": self.policy,
            "revenue": self.revenue,
            "margin": self.margin,
            "active_end": self.active_end,
            "clicks": self.clicks,
            "purchases": self.purchases,
            "ndcg": self.ndcg,
        }


def slate_ndcg(world: World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """NDCG@k of each slate with the true relevance as graded gain (linear gain, log2
    discount; sklearn's ``ndcg_score`` definition), the ideal being the user's k most relevant
    items of the whole catalogue."""
    k = items.shape[1]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    gains = world.relevance(users)  # (v, m)
    dcg = (np.take_along_axis(gains, items, axis=1) * disc).sum(axis=1)
    m = gains.shape[1]
    best = np.sort(np.partition(gains, m - k, axis=1)[:, m - k :], axis=1)[:, ::-1]
    ideal = (best * disc).sum(axis=1)
    return dcg / ideal


class Simulator:
    """True state of a population: who is active, their fatigue and purchases, today's day."""

    def __init__(self, world: World, seed: int | None = None) -> None:
        self.world = world
        self.seed = world.config.seed if seed is None else seed
        n, m = world.n_users, world.n_items
        self.alive = np.ones(n, dtype=bool)
        self.fatigue = np.zeros((n, m), dtype=np.float32)
        self.bought = np.zeros((n, m), dtype=bool)
        self.day = 0
        self.start = np.datetime64(pd.Timestamp(world.config.start).to_datetime64(), "us")

    def copy(self, seed: int | None = None) -> Simulator:
        """An independent snapshot (the world is shared: it never changes)."""
        new = copy.copy(self)
        new.alive, new.fatigue, new.bought = (
            self.alive.copy(),
            self.fatigue.copy(),
            self.bought.copy(),
        )
        if seed is not None:
            new.seed = seed
        return new

    def advance(self, users: np.ndarray, items: np.ndarray, buy: np.ndarray) -> None:
        """Fold a day's slates into the true state: fatigue decays and grows with each
        exposure, bought items stay bought (also used to replay a log's true state)."""
        self.fatigue *= self.world.config.fatigue_decay
        self.fatigue[users[:, None], items] += 1.0
        self.bought[np.repeat(users, items.shape[1])[buy.ravel()], items[buy]] = True

    def expected_revenue(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True expected revenue of showing ``items`` (users, k) in that order today."""
        w = self.world
        k = items.shape[1]
        attr = expit(w.attraction_logit(users, items, self.fatigue[users[:, None], items]))
        p_buy = w.buy_prob(users, items) * ~self.bought[users[:, None], items]
        return w.theta[None, :k] * attr * p_buy * w.price[items]

    def _rng(self, stream: int, day: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, day])

    def _new_log(self, name: str) -> SimLog:
        return SimLog(name, self.start, self.world.user_ids, self.world.items["item_id"].to_numpy())

    def _visitors(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        w = self.world
        u = self._rng(_VISIT, day).random(w.n_users)
        users = np.flatnonzero(self.alive & (u < w.visit_prob))
        seconds = self._rng(_CLOCK, day).uniform(0, 86_000, w.n_users)[users]
        return users, seconds

    # -- the organic pre-period ----------------------------------------------------------------
    def organic(
        self,
        days: int,
        platform: Platform | None = None,
        views_mean: float = 1.5,
        progress: Callable[[int, int], None] | None = None,
    ) -> SimLog:
        """History before any policy: users browse items they like (Gumbel-top-k over their
        attraction), buy some and leave at their base hazard. It gives the platform its first
        recommender, value model and price signals."""
        with threadpool_limits(1, user_api="blas"):  # small products: threads only cost
            return self._organic(days, platform, views_mean, progress)

    def _organic(
        self,
        days: int,
        platform: Platform | None,
        views_mean: float,
        progress: Callable[[int, int], None] | None,
    ) -> SimLog:
        w, log = self.world, self._new_log("organic")
        for t in range(days):
            day = self.day
            users, seconds = self._visitors(day)
            rng = self._rng(_ORGANIC, day)
            # a visit cannot view more distinct items than the catalogue holds (a small
            # catalogue would index past ``top``'s columns); capping after the draw keeps the
            # random streams, so larger catalogues simulate exactly as before
            nv = np.minimum(1 + rng.poisson(views_mean, len(users)), w.n_items)
            logits = (
                w.attraction_logit(users, np.arange(w.n_items))
                - w.config.fatigue * (self.fatigue[users])
            )
            keys = logits + rng.gumbel(size=logits.shape)
            top = np.argsort(-keys, axis=1)[:, : int(nv.max(initial=1))]
            row = np.repeat(np.arange(len(users)), nv)
            col = np.concatenate([np.arange(c) for c in nv]) if len(nv) else np.zeros(0, int)
            items = top[row, col]
            vu = users[row]
            p_buy = w.buy_prob(vu, items[:, None])[:, 0] * ~self.bought[vu, items]
            buy = rng.random(len(items)) < p_buy
            paid = np.where(buy, w.price[items], 0.0)
            self.fatigue *= w.config.fatigue_decay
            np.add.at(self.fatigue, (vu, items), 1.0)
            self.bought[vu[buy], items[buy]] = True
            drop = self._rng(_DROP, day).random(w.n_users)[users] < w.base_hazard[users]
            self.alive[users[drop]] = False
            d = DayLog(
                day, users, seconds, view_user=row, view_item=items, view_buy=buy, view_paid=paid
            )
            log.days.append(d)
            if platform is not None:
                platform.update(d)
            self.day += 1
            if progress:
                progress(t + 1, days)
        return log

    # -- policy days --------------------------------------------------------------------------
    def run(
        self,
        policy: Policy,
        platform: Platform,
        days: int,
        *,
        keep_log: bool = True,
        record_features: bool = False,
        ndcg: bool = True,
        incentive: Incentive | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> SimResult:
        """Run ``policy`` for ``days`` days from the current state (which it advances).

        ``record_features``: keep the platform's features of every shown item in the log (what
        a learned policy and the purchase model train on); ``incentive``: a campaign.
        """
        with threadpool_limits(1, user_api="blas"):  # small products: threads only cost
            return self._run(
                policy, platform, days, keep_log, record_features, ndcg, incentive, progress
            )

    def _run(
        self,
        policy: Policy,
        platform: Platform,
        days: int,
        keep_log: bool,
        record_features: bool,
        ndcg: bool,
        incentive: Incentive | None,
        progress: Callable[[int, int], None] | None,
    ) -> SimResult:
        w = self.world
        k = platform.k
        log = self._new_log(policy.name)
        user_rev = np.zeros(w.n_users)
        active_start = int(self.alive.sum())
        rows = []
        margin_rate = w.margin_rate
        ndcg_sum = ndcg_n = 0.0
        for t in range(days):
            day = self.day
            users, seconds = self._visitors(day)
            ctx = platform.context(users, day)
            slate = policy.slate(ctx, self._rng(_POLICY, day))
            items = slate.items(ctx)
            attr = expit(w.attraction_logit(users, items, self.fatigue[users[:, None], items]))
            p_click = w.theta[None, :k] * attr
            click = self._rng(_CLICK, day).random((w.n_users, k))[users] < p_click
            p_buy = w.buy_prob(users, items)
            paid = w.price[items]
            treated = None
            if (
                incentive is not None
                and incentive.first_day <= t < incentive.first_day + incentive.days
            ):
                treated = incentive.treated[users]
                p_buy = _discounted(w, users, items, p_buy, treated, incentive.discount)
                paid = paid * np.where(treated, 1.0 - incentive.discount, 1.0)[:, None]
            p_buy = p_buy * ~self.bought[users[:, None], items]
            buy = click & (self._rng(_BUY, day).random((w.n_users, k))[users] < p_buy)
            paid = np.where(buy, paid, 0.0)
            sat = w.satisfaction(users, items, attr)
            hazard = w.hazard(users, sat)
            if treated is not None:
                hazard = hazard * np.where(treated, 1.0 - incentive.goodwill, 1.0)  # type: ignore[union-attr]
            drop = self._rng(_DROP, day).random(w.n_users)[users] < hazard
            self.alive[users[drop]] = False
            self.advance(users, items, buy)
            rev = paid.sum(axis=1)
            user_rev[users] += rev
            d = DayLog(
                day,
                users,
                seconds,
                items=items,
                propensity=slate.propensity,
                click=click,
                buy=buy,
                paid=paid,
            )
            if record_features:
                d.features = np.take_along_axis(ctx.features, slate.positions[:, :, None], axis=1)
            if keep_log:
                log.days.append(d)
            platform.update(d)
            day_ndcg = slate_ndcg(w, users, items) if ndcg and len(users) else np.zeros(0)
            ndcg_sum += day_ndcg.sum()
            ndcg_n += len(day_ndcg)
            rows.append(
                (
                    day,
                    len(users),
                    int(click.sum()),
                    int(buy.sum()),
                    float(rev.sum()),
                    float((paid * margin_rate[items]).sum()),
                    int(self.alive.sum()),
                    float(day_ndcg.mean()) if len(day_ndcg) else np.nan,
                )
            )
            self.day += 1
            if progress:
                progress(t + 1, days)
        daily = pd.DataFrame(
            rows,
            columns=[
                "day",
                "visitors",
                "clicks",
                "purchases",
                "revenue",
                "margin",
                "active",
                "ndcg",
            ],
        )
        return SimResult(
            policy=policy.name,
            days=days,
            revenue=float(daily["revenue"].sum()),
            margin=float(daily["margin"].sum()),
            clicks=int(daily["clicks"].sum()),
            purchases=int(daily["purchases"].sum()),
            impressions=int(daily["visitors"].sum()) * k,
            active_start=active_start,
            active_end=int(self.alive.sum()),
            ndcg=ndcg_sum / ndcg_n if ndcg_n else float("nan"),
            daily=daily,
            user_revenue=user_rev,
            active=self.alive.copy(),
            log=log if keep_log else None,
        )


def _discounted(
    w: World,
    users: np.ndarray,
    items: np.ndarray,
    p_buy: np.ndarray,
    treated: np.ndarray,
    discount: float,
) -> np.ndarray:
    """P(buy) of treated users at the discounted price: their price term shifts by
    ``-beta log(1 - discount)``."""
    logit = np.log(p_buy) - np.log1p(-p_buy)
    shift = -w.price_sensitivity[users] * np.log1p(-discount)
    return expit(logit + np.where(treated, shift, 0.0)[:, None])
