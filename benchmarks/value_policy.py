"""Value-aware ranking in the simulator: each policy's revenue, retention, clicks and NDCG.

Over seeds, with off-policy estimates against the truth, and the simulator's speed.

python benchmarks/value_policy.py                # 2,000 users x 5 seeds (test seeds 0-4)
python benchmarks/value_policy.py --full         # 10,000 users, as the issue states it
python benchmarks/value_policy.py --seeds 2 --no-speed --json out.json
python benchmarks/value_policy.py --approaches --first-seed 100 --jobs 5   # tuning seeds

Settings (value weight, diversity, conservatism, ...) were chosen on the tuning seeds
100-104; the figures to report are those of the test seeds 0-4. ``--approaches`` also runs,
on the same seeds, every variant tried for the targets (see APPROACHES) with its paired
revenue and NDCG change against relevance and against the blend.

Per seed (see :mod:`valuerec.simulate.experiment`): a 60-day organic pre-period fits the
recommender (EASE) and the value model (BG/NBD); a 30-day epsilon-greedy (0.5) relevance log
trains the purchase model (LightGBM) and the learned long-term policy (PyTorch); every policy
then serves 90 days from the same state with the same random numbers, and every 15 days the
platform refits its recommender, its purchase model and the learned policy on everything logged
so far (``--no-refit-recommender``: the pre-period recommender throughout). Off-policy estimates
(IPS, SNIPS, DR of revenue per visit) come from a second, independent logging run and are
compared with the exact value of each policy on the logged contexts.

Targets (issue 7): the value-aware blend earns >= 10% more 90-day revenue than relevance-only
at <= 5% loss of NDCG@10; the learned policy beats the blend on revenue; the OPE interval
covers the truth for every policy; 10,000 users x 90 days simulate in a few minutes.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.special import expit

from valuerec.cli_common import strict_json
from valuerec.cli_simulate import policy_tables
from valuerec.recommend.longterm import LongTermPolicy
from valuerec.recommend.policies import (
    Policy,
    RelevancePolicy,
    SlateContext,
    ValueAwarePolicy,
    blend_scores,
    expected_money,
    zscore,
)
from valuerec.simulate import Platform, SimConfig, Simulator, World
from valuerec.simulate.experiment import (
    POLICIES,
    ExperimentConfig,
    PolicyFactory,
    PreparedSeed,
    Refitted,
    SeedResult,
    config_dict,
    fit_learned,
    ope_pooled,
    ope_simultaneous,
    ope_table,
    paired,
    run_seed,
)
from valuerec.simulate.fitting import fit_relevance

console = Console(width=None if sys.stdout.isatty() else 150)


def speed(users: int = 10_000, days: int = 90) -> dict[str, float]:
    """Seconds to simulate ``users`` for a 60-day organic pre-period and ``days`` policy days
    (relevance policy over 50 candidates, events logged, NDCG scored)."""
    world = World.draw(SimConfig(users=users, seed=0))
    sim = Simulator(world)
    platform = Platform(world.items, world.n_users, candidates=50)
    t0 = time.perf_counter()
    pre = sim.organic(60, platform)
    t1 = time.perf_counter()
    platform.set_relevance(
        fit_relevance(pre.events(), world.user_ids, world.items["item_id"].to_numpy())
    )
    t2 = time.perf_counter()
    run = sim.run(RelevancePolicy(), platform, days)
    t3 = time.perf_counter()
    assert run.log is not None
    n_events = len(run.log.events())
    t4 = time.perf_counter()
    return {
        "users": users,
        "organic_60d_s": t1 - t0,
        "fit_s": t2 - t1,
        f"policy_{days}d_s": t3 - t2,
        "events": n_events,
        "events_table_s": t4 - t3,
    }


def _pct(ci: tuple[float, ...] | None) -> str:
    if ci is None:
        return "not run (see --policies)"
    m, lo, hi = ci
    return f"{m:+.1%} [{lo:+.1%}, {hi:+.1%}]"


def _paired_if_run(
    results: list[SeedResult], a: str, b: str, metric: str
) -> tuple[float, ...] | None:
    """:func:`paired`, or None when ``--policies`` left out either policy."""
    return paired(results, a, b, metric) if {a, b} <= set(results[0].runs) else None


# -- approaches tried for the targets -------------------------------------------------------
class GlobalMoneyScale(ValueAwarePolicy):
    """Blend variant: money is centred per user but scaled by the median spread over users,
    so a user with little money at stake (a non-buyer) keeps a slate close to relevance
    instead of having noise in tiny purchase probabilities standardised up to unit variance."""

    name = "blend-global-scale"

    def scores(self, ctx: SlateContext) -> np.ndarray:
        money = expected_money(ctx.p_purchase, ctx.price, ctx.margin_rate, self.objective)
        sd = money.std(axis=1)
        scale = float(np.median(sd[sd > 0])) if (sd > 0).any() else 1.0
        centred = (money - money.mean(axis=1, keepdims=True)) / scale
        return zscore(ctx.relevance) + self.user_weight(ctx)[:, None] * centred


class OracleBlend(ValueAwarePolicy):
    """Upper bound, not a policy a platform could run: the blend with the simulator's true
    P(purchase) of each candidate in place of the purchase model's estimate."""

    name = "blend-oracle-p"
    sim: Any = None

    def bind(self, sim: Any) -> None:
        self.sim = sim

    def scores(self, ctx: SlateContext) -> np.ndarray:
        w, s, u, c = self.sim.world, self.sim, ctx.users, ctx.candidates
        attr = expit(w.attraction_logit(u, c, s.fatigue[u[:, None], c]))
        p = w.theta[0] * attr * w.buy_prob(u, c) * ~s.bought[u[:, None], c]
        return blend_scores(ctx.relevance, p * ctx.price, self.user_weight(ctx))


class BlendWithLearned(ValueAwarePolicy):
    """Learned-policy variants initialised from the blend: ``mode="retention"`` adds the
    learned policy's retention money (revenue its slate protects) to the blend's money term,
    so it deviates from the blend only as far as the dropout head's effect is large against
    the spread of today's revenue; ``mode="ensemble"`` averages LightGBM's and the learned
    network's purchase probabilities (two estimates of the quantity the oracle shows matters
    most)."""

    def __init__(self, learned: LongTermPolicy, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.learned, self.mode = learned, mode
        self.name = f"learned-{mode}"

    def scores(self, ctx: SlateContext) -> np.ndarray:
        c = self.learned.components(ctx)
        if self.mode == "ensemble":
            money = 0.5 * (ctx.p_purchase + c["p_buy"]) * ctx.price
        else:
            slope = (c["value"] * c["dropout"] * (1 - c["dropout"]) * c["theta1"])[:, None]
            money = ctx.p_purchase * ctx.price - slope * c["g"]
        return blend_scores(ctx.relevance, money, self.user_weight(ctx))


def approaches(cfg: ExperimentConfig) -> dict[str, PolicyFactory]:
    """Every variant tried for the two policy targets, made per seed."""
    blend = {
        "value_weight": cfg.value_weight,
        "diversity": cfg.diversity,
        "protect": cfg.protect,
        "objective": cfg.objective,
    }

    def learned(prep: PreparedSeed, fitted: Policy | None) -> LongTermPolicy:
        return fitted if isinstance(fitted, LongTermPolicy) else fit_learned(prep)

    def with_conservatism(value: float) -> PolicyFactory:
        def make(prep: PreparedSeed, fitted: Policy | None) -> Policy:
            pol = copy.copy(learned(prep, fitted))
            pol.conservatism, pol.name = value, f"learned-conservatism{value:g}"
            return pol

        return make

    return {
        "blend-protect0": lambda p, f: ValueAwarePolicy(**{**blend, "protect": 0.0}),
        "blend-margin": lambda p, f: ValueAwarePolicy(**{**blend, "objective": "margin"}),
        "blend-weight5": lambda p, f: ValueAwarePolicy(**{**blend, "value_weight": 5.0}),
        "blend-diversity2": lambda p, f: ValueAwarePolicy(**{**blend, "diversity": 2.0}),
        "blend-global-scale": lambda p, f: GlobalMoneyScale(**blend),
        "blend-refit7": lambda p, f: Refitted(ValueAwarePolicy(**blend), 7, "blend-refit7"),
        "blend-no-refit": lambda p, f: Refitted(ValueAwarePolicy(**blend), 0, "blend-no-refit"),
        "blend-oracle-p": lambda p, f: OracleBlend(**blend),
        "learned-no-refit": lambda p, f: Refitted(learned(p, f), 0, "learned-no-refit"),
        "learned-refit7": lambda p, f: Refitted(learned(p, f), 7, "learned-refit7"),
        "learned-conservatism0": with_conservatism(0.0),
        "learned-conservatism0.25": with_conservatism(0.25),
        "learned-conservatism1": with_conservatism(1.0),
        "learned-retention": lambda p, f: BlendWithLearned(learned(p, f), "retention", **blend),
        "learned-ensemble": lambda p, f: BlendWithLearned(learned(p, f), "ensemble", **blend),
    }


def one_seed(cfg: ExperimentConfig, seed: int, with_approaches: bool) -> SeedResult:
    """One seed in a worker process (torch and BLAS single-threaded: seeds run in parallel)."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="value model")
    return run_seed(cfg, seed, extra=approaches(cfg) if with_approaches else None)


def approach_table(results: list[SeedResult]) -> tuple[Table, list[dict[str, Any]]]:
    """Paired revenue / NDCG / active-user changes of every policy against relevance and
    against the blend (mean and 95% interval over seeds)."""
    table = Table(title="every policy and approach: paired change, mean [95% interval]")
    for col in ("policy", "revenue vs relevance", "NDCG vs relevance", "revenue vs blend",
                "active vs blend"):  # fmt: skip
        table.add_column(col, justify="left" if col == "policy" else "right")
    rows = []
    for name in results[0].runs:
        rev = _paired_if_run(results, name, "relevance", "revenue")
        nd = _paired_if_run(results, name, "relevance", "ndcg")
        vb = _paired_if_run(results, name, "value-aware", "revenue")
        act = _paired_if_run(results, name, "value-aware", "active_end")
        table.add_row(name, _pct(rev), _pct(nd), _pct(vb), _pct(act))
        rows.append({"policy": name, "revenue_vs_relevance": rev, "ndcg_vs_relevance": nd,
                     "revenue_vs_blend": vb, "active_vs_blend": act})  # fmt: skip
    return table, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--full", action="store_true", help="10,000 users per seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--value-weight", type=float, default=3.0)
    parser.add_argument("--diversity", type=float, default=1.0)
    parser.add_argument("--conservatism", type=float, default=0.5)
    parser.add_argument("--first-seed", type=int, default=0, help="0: test seeds; 100: tuning")
    parser.add_argument("--log-days", type=int, default=30, help="days of the exploring log")
    parser.add_argument("--approaches", action="store_true", help="also run every variant")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument(
        "--refit-days", type=int, default=15, help="purchase model refits (0: fitted once)"
    )
    parser.add_argument(
        "--refit-recommender",
        action=argparse.BooleanOptionalAction,
        default=ExperimentConfig.refit_recommender,
        help="the platform also refits its recommender at each refit",
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the 10,000-user timing")
    parser.add_argument("--speed-only", action="store_true", help="only the 10,000-user timing")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma list to run")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    users = 10_000 if args.full else args.users
    cfg = ExperimentConfig(
        users=users,
        seeds=tuple(range(args.first_seed, args.first_seed + args.seeds)),
        days=args.days,
        log_days=args.log_days,
        refit_days=args.refit_days or None,
        refit_recommender=args.refit_recommender,
        policies=tuple(p.strip() for p in args.policies.split(",") if p.strip()),
        value_weight=args.value_weight,
        diversity=args.diversity,
        conservatism=args.conservatism,
    )
    if args.speed_only:
        console.print(speed(10_000, args.days))
        return
    start = time.perf_counter()
    cpu = time.process_time()
    results: list[SeedResult] = []
    if args.jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            futures = [pool.submit(one_seed, cfg, s, args.approaches) for s in cfg.seeds]
            results = [f.result() for f in futures]
    else:
        for seed in cfg.seeds:
            t = time.perf_counter()
            results.append(one_seed(cfg, seed, args.approaches))
            console.print(f"seed {seed}: {time.perf_counter() - t:.0f} s", style="dim")
    elapsed = time.perf_counter() - start
    for r in results:
        console.print(f"seed {r.seed}: {sum(r.seconds.values()):.0f} s", style="dim")
    table, ope_rich, data = policy_tables(results)
    console.print(table)
    if ope_rich is not None:
        console.print(ope_rich)
    approach_rows = None
    if args.approaches:
        approach_rich, approach_rows = approach_table(results)
        console.print(approach_rich)

    rev_gain = _paired_if_run(results, "value-aware", "relevance", "revenue")
    ndcg_change = _paired_if_run(results, "value-aware", "relevance", "ndcg")
    learned_gain = _paired_if_run(results, "learned", "value-aware", "revenue")
    ope = ope_table(results)
    seeds = f"seeds {cfg.seeds[0]}-{cfg.seeds[-1]}"
    where = f"{elapsed:.0f} s wall, {time.process_time() - cpu:.0f} s CPU in the main process"
    targets = Table(title=f"targets ({users:,} users, {seeds}, {where})")
    for col in ("target", "result", "met"):
        targets.add_column(col)
    for label, change, met in (
        ("blend revenue vs relevance >= +10%", rev_gain, lambda c: c >= 0.10),
        ("blend NDCG@10 loss <= 5%", ndcg_change, lambda c: c >= -0.05),
        ("learned revenue > blend", learned_gain, lambda c: c > 0),
    ):
        verdict = "-" if change is None else "yes" if met(change[0]) else "NO"
        targets.add_row(label, _pct(change), verdict)
    coverage: dict[str, Any] = {}
    pooled = ope_pooled(results)
    if len(ope):
        for est in ("ips", "snips", "dr"):
            per_policy = ope.groupby("policy")[f"{est}_covers"].agg(["sum", "count"])
            coverage[est] = {
                p: f"{int(r['sum'])}/{int(r['count'])}" for p, r in per_policy.iterrows()
            }
            all_in = bool(ope[f"{est}_covers"].all())
            text = ", ".join(f"{p} {c}" for p, c in coverage[est].items())
            targets.add_row(
                f"OPE {est.upper()} 95% interval covers truth (per seed)",
                text,
                "yes" if all_in else "NO",
            )
        together = ope_simultaneous(results)
        for est in ("ips", "snips", "dr"):
            sel = together[together["estimator"] == est]
            missed = sel[~sel["covers"]]
            text = data["ope_simultaneous"][est] + "".join(
                f"; misses {r.policy} seed {r.seed}" for r in missed.itertuples()
            )
            targets.add_row(
                f"OPE {est.upper()} simultaneous 95% intervals (Bonferroni over all {len(sel)}) "
                "cover every truth",
                text,
                "yes" if bool(sel["covers"].all()) else "NO",
            )
        for est in ("ips", "snips", "dr"):
            sel = pooled[pooled["estimator"] == est]
            text = ", ".join(
                f"{r.policy} {r.mean_error:+.2f} [{r.low:+.2f}, {r.high:+.2f}]"
                for r in sel.itertuples()
            )
            targets.add_row(
                f"OPE {est.upper()} mean error over seeds (interval holds 0)",
                text,
                "yes" if bool(sel["unbiased"].all()) else "NO",
            )
    timing = None
    if not args.no_speed:
        timing = speed(10_000, args.days)
        total = timing["organic_60d_s"] + timing[f"policy_{args.days}d_s"]
        targets.add_row(
            f"10,000 users x {args.days} days in a few minutes",
            f"{timing[f'policy_{args.days}d_s']:.0f} s policy days "
            f"(+{timing['organic_60d_s']:.0f} s 60 organic days, {timing['events']:,} events)",
            "yes" if total < 300 else "NO",
        )
    console.print(targets)
    if args.json:
        data.update(
            config=config_dict(cfg),
            approaches=approach_rows,
            seconds=elapsed,
            speed=timing,
            seed_seconds=[r.seconds for r in results],
            targets={
                "blend_revenue_gain": rev_gain,
                "blend_ndcg_change": ndcg_change,
                "learned_vs_blend": learned_gain,
                "ope_coverage": coverage,
                "ope_pooled": pooled.to_dict(orient="records"),
            },
        )
        Path(args.json).write_text(strict_json(data), encoding="utf-8")


if __name__ == "__main__":
    main()
