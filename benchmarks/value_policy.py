"""Value-aware ranking in the simulator: revenue, retention, clicks and NDCG of each policy over
seeds, off-policy estimates against the truth, and the simulator's speed.

python benchmarks/value_policy.py                # 2,000 users x 5 seeds (about 10 minutes)
python benchmarks/value_policy.py --full         # 10,000 users, as the issue states it
python benchmarks/value_policy.py --seeds 2 --no-speed --json out.json

Per seed (see :mod:`valuerec.simulate.experiment`): a 60-day organic pre-period fits the
recommender (EASE) and the value model (BG/NBD); a 30-day epsilon-greedy (0.5) relevance log
trains the purchase model (LightGBM) and the learned long-term policy (PyTorch); every policy
then serves 90 days from the same state with the same random numbers. Off-policy estimates
(IPS, SNIPS, DR of revenue per visit) come from a second, independent logging run and are
compared with the exact value of each policy on the logged contexts.

Targets (issue 7): the value-aware blend earns >= 10% more 90-day revenue than relevance-only
at <= 5% loss of NDCG@10; the learned policy beats the blend on revenue; the OPE interval
covers the truth for every policy; 10,000 users x 90 days simulate in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from valuerec.cli_simulate import policy_tables
from valuerec.recommend.policies import RelevancePolicy
from valuerec.simulate import Platform, SimConfig, Simulator, World
from valuerec.simulate.experiment import (
    ExperimentConfig,
    config_dict,
    ope_pooled,
    ope_table,
    paired,
    run_seed,
)
from valuerec.simulate.fitting import fit_relevance

console = Console()


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


def _pct(ci: tuple[float, ...]) -> str:
    m, lo, hi = ci
    return f"{m:+.1%} [{lo:+.1%}, {hi:+.1%}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--full", action="store_true", help="10,000 users per seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--value-weight", type=float, default=3.0)
    parser.add_argument("--diversity", type=float, default=1.0)
    parser.add_argument("--conservatism", type=float, default=0.5)
    parser.add_argument("--no-speed", action="store_true", help="skip the 10,000-user timing")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    users = 10_000 if args.full else args.users
    cfg = ExperimentConfig(
        users=users,
        seeds=tuple(range(args.seeds)),
        days=args.days,
        value_weight=args.value_weight,
        diversity=args.diversity,
        conservatism=args.conservatism,
    )
    start = time.perf_counter()
    results = []
    for seed in cfg.seeds:
        t = time.perf_counter()
        results.append(run_seed(cfg, seed))
        console.print(f"seed {seed}: {time.perf_counter() - t:.0f} s", style="dim")
    elapsed = time.perf_counter() - start
    table, ope_rich, data = policy_tables(results)
    console.print(table)
    if ope_rich is not None:
        console.print(ope_rich)

    rev_gain = paired(results, "value-aware", "relevance", "revenue")
    ndcg_change = paired(results, "value-aware", "relevance", "ndcg")
    learned_gain = paired(results, "learned", "value-aware", "revenue")
    ope = ope_table(results)
    targets = Table(title=f"targets ({users:,} users x {args.seeds} seeds, {elapsed:.0f} s)")
    for col in ("target", "result", "met"):
        targets.add_column(col)
    targets.add_row(
        "blend revenue vs relevance >= +10%", _pct(rev_gain), "yes" if rev_gain[0] >= 0.10 else "NO"
    )
    targets.add_row(
        "blend NDCG@10 loss <= 5%", _pct(ndcg_change), "yes" if ndcg_change[0] >= -0.05 else "NO"
    )
    targets.add_row(
        "learned revenue > blend", _pct(learned_gain), "yes" if learned_gain[0] > 0 else "NO"
    )
    coverage = {}
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
        with open(args.json, "w") as fh:
            json.dump(
                data,
                fh,
                indent=2,
                default=lambda o: o.item() if isinstance(o, np.generic) else str(o),
            )


if __name__ == "__main__":
    main()
