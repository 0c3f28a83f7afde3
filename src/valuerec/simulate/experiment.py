"""The policy experiment: one simulated population, a platform that learns from its own logs,
every policy run from the same state, and off-policy estimates checked against the truth.

For one seed:

1. **Pre-period** (``pre_days``): users browse organically; the platform fits its recommender
   (relevance) and a value model (LTV, churn risk) on that history.
2. **Logging** (``log_days``): an epsilon-greedy relevance policy serves and logs the
   platform's features of every shown item. The purchase model (LightGBM) and the learned
   long-term policy (PyTorch) are trained on this log.
3. **Off-policy evaluation**: a second logging run from the same pre-period state with fresh
   randomness (data no model has seen) is replayed for every target policy
   (:mod:`valuerec.simulate.ope`) and compared with its exact value.
4. **Evaluation** (``days``): from the state at the end of logging, each policy runs with the
   same random numbers; revenue, active users, clicks and NDCG@k against true relevance are
   recorded. Every ``refit_days`` the platform retrains what learns from logs -- the
   recommender (``refit_recommender``), the purchase model and the learned policy -- on the
   pre-period and logging run plus everything served since.

:func:`run_experiment` repeats this over seeds and :func:`summarise` gives means with 95%
t-intervals over seeds and the paired comparisons the targets are stated in.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from valuerec.evaluate import offpolicy
from valuerec.recommend.longterm import EPOCHS, LoggedSlates, LongTermPolicy
from valuerec.recommend.policies import (
    EpsilonGreedy,
    Policy,
    RelevancePolicy,
    RevenueGreedyPolicy,
    SlateContext,
    ValueAwarePolicy,
)
from valuerec.simulate.env import SimResult, Simulator
from valuerec.simulate.fitting import attach_models, fit_purchase_model, fit_relevance
from valuerec.simulate.log import SimLog
from valuerec.simulate.ope import OPEResult, evaluate_log
from valuerec.simulate.platform import FEATURES, Platform
from valuerec.simulate.world import SimConfig, World

POLICIES = ("random", "logging", "relevance", "revenue-greedy", "value-aware", "learned")
USER_FEATURES = (
    "user_ctr",
    "user_cvr",
    "log_visits",
    "log_ltv",
    "churn_risk",
    "has_clicks",
    "has_buys",
)

Progress = Callable[[str], None]


@dataclass
class ExperimentConfig:
    """Sizes, periods and policy settings of the experiment (``world``: SimConfig fields)."""

    users: int = 2_000
    items: int = 1_000
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    pre_days: int = 60
    log_days: int = 30
    days: int = 90
    slate_size: int = 10
    candidates: int = 50
    epsilon: float = 0.5
    recommender: str = "ease"
    value_model: str = "bgnbd"
    value_weight: float = 3.0
    diversity: float = 1.0
    protect: float = 1.0
    objective: str = "revenue"
    refit_days: int | None = 15  # the platform refits its purchase model this often
    #: at each refit the platform also refits its recommender on everything logged so far,
    #: as platforms retrain recommenders on their new interactions (off: the pre-period fit
    #: serves throughout). On the tuning seeds 100-109 it adds 1.9% [1.2, 2.6] to the blend's
    #: revenue but costs it 46 active users: retrained on what it showed, the recommender
    #: narrows (NDCG up, satisfaction down) -- the feedback loop a long-term policy must
    #: manage. The learned policy then earns 1.4% [0.5, 2.2] more than the blend (frozen
    #: recommender: +0.05% [-0.6, +0.7]).
    refit_recommender: bool = True
    learned_epochs: int = EPOCHS  # the learned policy's tuned default
    retention_weight: float = 1.0
    conservatism: float = 0.5
    policies: Sequence[str] = POLICIES
    ope: bool = True
    world: dict[str, Any] = field(default_factory=dict)

    def sim_config(self, seed: int) -> SimConfig:
        return SimConfig(
            users=self.users, items=self.items, slate_size=self.slate_size, seed=seed
        ).with_(**self.world)


@dataclass
class SeedResult:
    seed: int
    runs: dict[str, SimResult]
    ope: OPEResult | None
    seconds: dict[str, float]


def logged_slates(log: SimLog, platform: Platform, visit_rate: np.ndarray) -> LoggedSlates:
    """Training rows for :class:`LongTermPolicy` from a log recorded with features."""
    days = log.slate_days()
    if not days:
        raise ValueError("the log has no slates")
    first, last = days[0].day, days[-1].day
    n = platform.n_users
    rev = np.zeros((n, last - first + 2))
    last_visit = np.full(n, -1)
    for d in days:
        assert d.paid is not None
        rev[d.users, d.day - first] += d.paid.sum(axis=1)
        last_visit[d.users] = d.day
    after = np.cumsum(rev[:, ::-1], axis=1)[:, ::-1]  # after[u, t] = revenue from day t on
    feats, price, bought, clicked, silent, left, rate, future = [], [], [], [], [], [], [], []
    for d in days:
        assert d.features is not None and d.items is not None and d.buy is not None
        t = d.day - first
        days_left = last - d.day
        feats.append(d.features)
        price.append(platform.price[d.items])
        bought.append(d.buy)
        clicked.append(d.click)
        silent.append(last_visit[d.users] == d.day)
        left.append(np.full(len(d.users), days_left))
        rate.append(visit_rate[d.users])
        future.append(after[d.users, t + 1] / max(days_left, 1))
    return LoggedSlates(
        np.concatenate(feats),
        np.concatenate(price),
        np.concatenate(bought),
        np.concatenate(clicked),
        np.concatenate(silent),
        np.concatenate(left),
        np.concatenate(rate),
        np.concatenate(future),
    )


def make_policies(
    cfg: ExperimentConfig, learned: Policy | None = None, names: Sequence[str] | None = None
) -> dict[str, Policy]:
    relevance = RelevancePolicy()
    pool: dict[str, Policy] = {
        "random": EpsilonGreedy(relevance, 1.0, name="random"),
        "logging": EpsilonGreedy(relevance, cfg.epsilon, name="logging"),
        "relevance": relevance,
        "revenue-greedy": RevenueGreedyPolicy(),
        "value-aware": ValueAwarePolicy(
            cfg.value_weight, cfg.diversity, cfg.protect, cfg.objective
        ),
    }
    if learned is not None:
        pool["learned"] = learned
    wanted = list(names if names is not None else cfg.policies)
    unknown = [n for n in wanted if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    return {n: pool[n] for n in wanted if n in pool}


class Refitted(Policy):
    """``base`` served with the purchase model refitted every ``days`` days (0: never; see
    :meth:`PreparedSeed.run`): the same ranking rule on fresher or staler estimates."""

    def __init__(self, base: Policy, days: int, name: str | None = None) -> None:
        if days < 0:
            raise ValueError("refit every >= 1 day (0: never)")
        self.base, self.days = base, days
        self.name = name or f"{base.name}-refit{days}"

    def rank(self, ctx: SlateContext) -> np.ndarray:
        return self.base.rank(ctx)


@dataclass
class PreparedSeed:
    """One seed's state after steps 1-2: the simulator and platform at the end of logging
    (every policy starts from them), the pre-period state (for the OPE log), the training log
    and the fitted purchase model. Several policy variants can be run from one of these, which
    is what tuning needs."""

    seed: int
    cfg: ExperimentConfig
    sim: Simulator  # state at the end of the pre-period
    platform: Platform  # fitted at the end of the pre-period, with the purchase model
    log_sim: Simulator  # state at the end of logging
    log_platform: Platform
    train_log: SimLog
    pre_events: pd.DataFrame  # the pre-period's log as events (what the recommender saw)
    purchase_model: Any
    visit_rate: np.ndarray
    seconds: dict[str, float]

    def run(
        self, policy: Policy, days: int | None = None, refit_every: int | None = None
    ) -> SimResult:
        """Serve ``policy`` from the end of logging with the evaluation's random numbers (the
        same for every policy); the prepared state is not changed.

        ``refit_every`` (default ``cfg.refit_days``; 0: never): refit the purchase model
        (and retrain a learned policy, on a copy) every that many days on the logging run plus
        everything served since, as a platform retrains its models; the model fitted once on
        the logging run goes stale as fatigue,
        purchases and the users' mix drift (on the tuning seeds, refitting every 15 days
        added 1.2% [0.0, 2.4] to the blend's revenue). With ``cfg.refit_recommender`` the
        recommender is refitted too (:meth:`refit_recommender`), which changes every
        policy's candidates and relevance, the relevance policy's included. A policy
        that reads the true state (the oracle bound of the benchmark) has ``bind(sim)``
        called with the simulator it runs in.
        """
        days = days or self.cfg.days
        if refit_every is None:
            refit_every = self.cfg.refit_days
        if isinstance(policy, Refitted):
            policy, refit_every = policy.base, policy.days
        learns = isinstance(policy, LongTermPolicy)
        if not (policy.reads_purchase_model or learns or self.cfg.refit_recommender):
            refit_every = None  # refitting could not change what it shows
        run_sim = self.log_sim.copy(seed=self.seed + 20_000)
        platform = self.log_platform.copy()
        bind = getattr(policy, "bind", None)
        if bind is not None:
            bind(run_sim)
        if not refit_every:
            return run_sim.run(policy, platform, days, keep_log=False)
        parts, logs = [], [self.train_log]
        while sum(p.days for p in parts) < days:
            n = min(refit_every, days - sum(p.days for p in parts))
            part = run_sim.run(policy, platform, n, record_features=True)
            assert part.log is not None
            parts.append(part)
            logs.append(part.log)
            part.log = None  # the features are kept in ``logs`` until the run ends
            if sum(p.days for p in parts) < days:
                if self.cfg.refit_recommender:
                    self.refit_recommender(platform, logs)
                if policy.reads_purchase_model:
                    platform.purchase_model = fit_purchase_model(logs, seed=self.seed)
                if learns:  # retrained like the purchase model, on a copy: ``policy`` is shared
                    policy = copy.deepcopy(policy)
                    policy.fit(logged_slates(SimLog.concat(logs), platform, self.visit_rate))
        return concat_results(parts)

    def refit_recommender(self, platform: Platform, logs: Sequence[SimLog]) -> None:
        """Give ``platform`` its recommender refitted on the pre-period and ``logs`` (the
        views, clicks and purchases of everything served since)."""
        events = pd.concat([self.pre_events, *(log.events() for log in logs)], ignore_index=True)
        world = self.sim.world
        item_ids = world.items["item_id"].to_numpy()
        platform.set_relevance(
            fit_relevance(events, world.user_ids, item_ids, self.cfg.recommender)
        )


def concat_results(parts: Sequence[SimResult]) -> SimResult:
    """One result from consecutive runs of the same policy (totals add up, NDCG is averaged
    over every slate shown)."""
    daily = pd.concat([p.daily for p in parts], ignore_index=True)
    slates = np.array([p.daily["visitors"].sum() for p in parts], dtype=float)
    part_ndcg = np.array([p.ndcg for p in parts], dtype=float)
    # a part in which nobody visited has NDCG NaN (no slate to score) and weight 0: left out,
    # as NaN x 0 is NaN and made the whole run's NDCG NaN although slates were shown before
    shown = (slates > 0) & np.isfinite(part_ndcg)
    weight = slates[shown].sum()
    ndcg = float(np.dot(part_ndcg[shown], slates[shown]) / weight) if weight else float("nan")
    return SimResult(
        policy=parts[0].policy,
        days=sum(p.days for p in parts),
        revenue=float(daily["revenue"].sum()),
        margin=float(daily["margin"].sum()),
        clicks=int(daily["clicks"].sum()),
        purchases=int(daily["purchases"].sum()),
        impressions=sum(p.impressions for p in parts),
        active_start=parts[0].active_start,
        active_end=parts[-1].active_end,
        ndcg=ndcg,
        daily=daily,
        user_revenue=np.sum([p.user_revenue for p in parts], axis=0),
        active=parts[-1].active,
    )


class Laps:
    """Wall seconds per named step, each measured from the end of the previous one."""

    def __init__(self, seconds: Mapping[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = dict(seconds or {})
        self._tick = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._tick
        self._tick = now


def prepare_seed(
    cfg: ExperimentConfig, seed: int, progress: Progress | None = None
) -> PreparedSeed:
    """Steps 1-2 of the module docstring for one seed."""
    say = progress or (lambda _: None)
    lap = Laps()

    world = World.draw(cfg.sim_config(seed))
    sim = Simulator(world)
    platform = Platform(world.items, world.n_users, cfg.slate_size, cfg.candidates)
    say(f"seed {seed}: pre-period")
    pre = sim.organic(cfg.pre_days, platform)
    pre_events = pre.events()
    as_of = sim.start + np.timedelta64(cfg.pre_days, "D")
    try:
        attach_models(
            platform,
            pre_events,
            world.user_ids,
            world.items["item_id"].to_numpy(),
            as_of,
            cfg.recommender,
            cfg.value_model,
        )
    except ValueError as exc:  # said with the step: a small population can leave it empty
        raise ValueError(f"the {cfg.pre_days}-day pre-period: {exc}") from exc
    visit_rate = platform.visits / cfg.pre_days
    lap("pre-period + fit")

    say(f"seed {seed}: logging")
    logger = EpsilonGreedy(RelevancePolicy(), cfg.epsilon, name="logging")
    log_sim, log_platform = sim.copy(), platform.copy()
    train = log_sim.run(logger, log_platform, cfg.log_days, record_features=True, ndcg=False)
    assert train.log is not None
    try:
        purchase_model = fit_purchase_model([train.log], seed=seed)
    except ValueError as exc:
        raise ValueError(f"the {cfg.log_days}-day logging run: {exc}") from exc
    platform.purchase_model = log_platform.purchase_model = purchase_model
    lap("logging + purchase model")
    return PreparedSeed(
        seed,
        cfg,
        sim,
        platform,
        log_sim,
        log_platform,
        train.log,
        pre_events,
        purchase_model,
        visit_rate,
        lap.seconds,
    )


def fit_learned(prep: PreparedSeed) -> LongTermPolicy:
    """The learned long-term policy of the experiment, trained on the seed's logging run."""
    cfg = prep.cfg
    cols = [FEATURES.index(c) for c in USER_FEATURES]
    learned = LongTermPolicy(
        cols,
        horizon_days=cfg.days,
        epochs=cfg.learned_epochs,
        retention_weight=cfg.retention_weight,
        seed=prep.seed,
        diversity=cfg.diversity,
        conservatism=cfg.conservatism,
    )
    return learned.fit(logged_slates(prep.train_log, prep.platform, prep.visit_rate))


PolicyFactory = Callable[["PreparedSeed", "Policy | None"], Policy]


def run_seed(
    cfg: ExperimentConfig,
    seed: int,
    progress: Progress | None = None,
    extra: Mapping[str, PolicyFactory] | None = None,
) -> SeedResult:
    """Steps 1-4 of the module docstring for one seed.

    ``extra``: more policies to run in step 4 (not evaluated off-policy), each made from the
    prepared seed and the learned policy (None unless ``"learned"`` is in ``cfg.policies``)
    -- the variants a benchmark compares beside the standard ones.
    """
    say = progress or (lambda _: None)
    prep = prepare_seed(cfg, seed, progress)
    lap = Laps(prep.seconds)

    learned = None
    if "learned" in cfg.policies:
        say(f"seed {seed}: training the learned policy")
        learned = fit_learned(prep)
        lap("learned policy")
    policies = make_policies(cfg, learned)

    ope = None
    if cfg.ope:
        say(f"seed {seed}: off-policy evaluation")
        logger = EpsilonGreedy(RelevancePolicy(), cfg.epsilon, name="logging")
        ope_sim, ope_platform = prep.sim.copy(seed=seed + 10_000), prep.platform.copy()
        ope_run = ope_sim.run(logger, ope_platform, cfg.log_days, ndcg=False)
        assert ope_run.log is not None
        targets = {n: p for n, p in policies.items() if not isinstance(p, EpsilonGreedy)}
        ope = evaluate_log(ope_run.log, prep.platform, prep.sim, targets, prep.purchase_model)
        lap("off-policy evaluation")

    for name, factory in (extra or {}).items():
        policies[name] = factory(prep, learned)
    runs = {}
    for name, policy in policies.items():
        say(f"seed {seed}: {name}")
        runs[name] = prep.run(policy)
        lap(f"run {name}")
    return SeedResult(seed, runs, ope, lap.seconds)


def run_experiment(cfg: ExperimentConfig, progress: Progress | None = None) -> list[SeedResult]:
    return [run_seed(cfg, seed, progress) for seed in cfg.seeds]


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-interval over seeds.

    One seed has no spread to estimate, so its interval is undefined: NaN bounds (shown as
    "n/a", null in JSON), not the zero-width ``[m, m]`` that read as a certain result. No
    values: all NaN."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - half, m + half


METRICS = {
    "revenue": "revenue",
    "active_end": "active@end",
    "clicks": "clicks",
    "ndcg": "NDCG@10",
    "margin": "margin",
}


def summarise(results: Sequence[SeedResult]) -> pd.DataFrame:
    """One row per policy: mean and 95% interval over seeds of each metric."""
    names = list(results[0].runs)
    rows = []
    for name in names:
        row: dict[str, Any] = {"policy": name}
        for key in METRICS:
            m, lo, hi = mean_ci([getattr(r.runs[name], key) for r in results])
            row[key], row[f"{key}_low"], row[f"{key}_high"] = m, lo, hi
        rows.append(row)
    return pd.DataFrame(rows)


def paired_ratios(results: Sequence[SeedResult], a: str, b: str, metric: str) -> np.ndarray:
    """Per seed, the relative difference ``a / b - 1`` of a metric; NaN where it is undefined:
    the baseline ``b`` is 0 (a small population or a short run can earn nothing, or lose every
    user) or either figure is NaN (an NDCG with no slate shown)."""
    ratios = np.full(len(results), np.nan)
    for i, r in enumerate(results):
        num, den = float(getattr(r.runs[a], metric)), float(getattr(r.runs[b], metric))
        if den != 0 and np.isfinite(num) and np.isfinite(den):
            ratios[i] = num / den - 1.0
    return ratios


def paired(results: Sequence[SeedResult], a: str, b: str, metric: str) -> tuple[float, ...]:
    """Relative difference ``a / b - 1`` of a metric over seeds: mean and 95% interval over the
    seeds where it is defined (:func:`paired_ratios`; the others are left out, not divided by
    zero). NaN when no seed has one."""
    ratios = paired_ratios(results, a, b, metric)
    return mean_ci(ratios[np.isfinite(ratios)])


def ope_table(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Per seed and target: estimates with intervals and the truth (per-visit revenue)."""
    rows = []
    for r in results:
        if r.ope is None:
            continue
        for row in r.ope.rows():
            rows.append({"seed": r.seed, **row})
    return pd.DataFrame(rows)


def ope_simultaneous(results: Sequence[SeedResult], level: float = 0.95) -> pd.DataFrame:
    """Per estimator, every seed's and target's interval made simultaneous over all of them
    (:func:`~valuerec.evaluate.offpolicy.simultaneous`, Bonferroni): do they hold every truth
    together, as "the estimates cover the truth for every policy" claims of the family?

    One row per seed, target and estimator with ``low``, ``high``, ``covers`` and ``family``
    (how many intervals the estimator's family has)."""
    rows = []
    for est in offpolicy.ESTIMATORS:
        cells = [
            (r.seed, name, ests[est], r.ope.truth[name])
            for r in results
            if r.ope is not None
            for name, ests in r.ope.estimates.items()
            if est in ests
        ]
        if not cells:
            continue
        wide = offpolicy.simultaneous([c[2] for c in cells], level)
        for (seed, name, _, truth), e in zip(cells, wide, strict=True):
            row = {"seed": seed, "policy": name, "estimator": est, "low": e.low, "high": e.high}
            rows.append({**row, "covers": e.covers(truth), "family": len(cells)})
    return pd.DataFrame(rows)


def ope_pooled(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Per target and estimator: the mean error (estimate - truth) over seeds with its 95%
    interval from the seeds' standard errors -- does the estimator hit the truth on average?

    One seed's interval misses 5% of the time by design; the pooled error tests for bias."""
    rows = []
    z = float(stats.norm.ppf(0.975))
    names = {n for r in results if r.ope is not None for n in r.ope.estimates}
    for name in sorted(names):
        for est in ("ips", "snips", "dr"):
            errs, ses = [], []
            for r in results:
                if r.ope is None or est not in r.ope.estimates.get(name, {}):
                    continue
                e = r.ope.estimates[name][est]
                errs.append(e.estimate - r.ope.truth[name])
                ses.append(e.se)
            if not errs:
                continue
            mean = float(np.mean(errs))
            half = z * float(np.sqrt(np.sum(np.square(ses)))) / len(errs)
            rows.append(
                {
                    "policy": name,
                    "estimator": est,
                    "mean_error": mean,
                    "low": mean - half,
                    "high": mean + half,
                    "unbiased": bool(abs(mean) <= half),
                }
            )
    return pd.DataFrame(rows)


def config_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    out = asdict(cfg)
    out["seeds"] = list(cfg.seeds)
    out["policies"] = list(cfg.policies)
    return out
