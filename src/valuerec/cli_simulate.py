"""``valuerec simulate``, ``valuerec policy evaluate`` and ``valuerec value campaign``.

Thin commands over :mod:`valuerec.simulate`: generate an interactive log with ground truth,
compare ranking policies over seeds, and simulate an incentive campaign's A/B test. Heavy
imports (torch, LightGBM) happen inside the commands so ``valuerec --help`` stays fast.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.text import Text

from valuerec.cli_common import DataTable, fail, open_store, out, print_json, progress

policy_app = typer.Typer(
    help="Ranking policies in the simulator: revenue, retention, NDCG, off-policy checks.",
    no_args_is_help=True,
    add_completion=False,
)

SIMPLE_POLICIES = ("relevance", "random", "epsilon-greedy")


def _write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def simulate(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for events, items, truth.")],
    users: Annotated[int, typer.Option(min=1, help="Simulated users.")] = 10_000,
    items: Annotated[int, typer.Option(min=1, help="Catalogue size.")] = 1_000,
    # min=1: the recommender is fitted on the organic days, none leaves nothing to learn from
    pre_days: Annotated[int, typer.Option(min=1, help="Organic days before any policy.")] = 60,
    days: Annotated[int, typer.Option(min=1, help="Days the policy serves slates.")] = 90,
    policy: Annotated[
        str, typer.Option(help=f"One of {', '.join(SIMPLE_POLICIES)} (others: policy evaluate).")
    ] = "epsilon-greedy",
    epsilon: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Exploration of epsilon-greedy.")
    ] = 0.3,
    # min=0: numpy's seeding refuses a negative seed with a message naming no option
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    db: Annotated[
        str | None, typer.Option("--db", help="Also ingest the events into this store.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Simulate users shown slates by a policy; write the log (canonical events) and the truth.

    The log has organic views and purchases, then an exposure per shown item (position,
    propensity and policy in its properties), clicks and purchases. truth.csv holds each
    user's latent parameters and whether they are still active at the end.
    """
    from valuerec.recommend.policies import EpsilonGreedy, Policy, RelevancePolicy
    from valuerec.simulate import Platform, SimConfig, Simulator, World
    from valuerec.simulate.fitting import fit_relevance

    if policy not in SIMPLE_POLICIES:
        raise fail(f"unknown policy {policy!r}: choose from {', '.join(SIMPLE_POLICIES)}")
    if fmt not in ("csv", "parquet"):
        raise fail("--format must be csv or parquet")
    config = SimConfig(users=users, items=items, seed=seed)
    # the slate size is no option, so the limit it sets on --items is said with its number
    if items < config.slate_size:
        raise fail(f"--items must be at least {config.slate_size} (the slate size), got {items}")
    try:
        world = World.draw(config)
    except ValueError as exc:
        raise fail(str(exc)) from None
    # the output folder is made now, not after the simulation: a file in the way (or a folder
    # we may not write) is then a usage error at once instead of a traceback minutes later
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise fail(f"--out {out_dir}: cannot make the output folder ({reason})") from None
    sim = Simulator(world)
    platform = Platform(world.items, world.n_users, candidates=50)
    # only the chosen policy is built: another's options must not fail this one's run
    if policy == "relevance":
        chosen: Policy = RelevancePolicy()
    elif policy == "random":
        chosen = EpsilonGreedy(RelevancePolicy(), 1.0, name="random")
    else:
        chosen = EpsilonGreedy(RelevancePolicy(), epsilon, name="epsilon-greedy")
    with progress() as bar:
        task = bar.add_task("organic days", total=pre_days)
        pre = sim.organic(pre_days, platform, progress=lambda d, n: bar.update(task, completed=d))
        bar.update(task, description="fitting the recommender")
        pre_events = pre.events()
        try:
            relevance = fit_relevance(pre_events, world.user_ids, world.items["item_id"].to_numpy())
        except ValueError as exc:  # a tiny population or pre-period: nobody browsed
            raise fail(
                f"the {pre_days} organic day(s) of {users:,} user(s) gave too little to fit the "
                f"recommender on ({exc}): raise --users or --pre-days"
            ) from None
        platform.set_relevance(relevance)
        task2 = bar.add_task(f"{policy} days", total=days)
        run = sim.run(chosen, platform, days, progress=lambda d, n: bar.update(task2, completed=d))
        bar.update(task2, description="writing")
        assert run.log is not None
        events = pd.concat([pre_events, run.log.events()], ignore_index=True)
        truth = world.truth()
        truth["active_at_end"] = sim.alive
        truth["revenue"] = run.user_revenue
        paths = {}
        for name, frame in (("events", events), ("items", world.items), ("truth", truth)):
            paths[name] = out_dir / f"{name}.{fmt}"
            _write(frame, paths[name])
    ingested = None
    if db is not None:
        from valuerec.data.ingest import ingest

        with open_store(db) as store:
            ingest(store, world.items, "items")
            ingested = ingest(store, events, "events").to_dict()
    summary = {
        **run.summary(),
        "events": len(events),
        "files": {k: str(v) for k, v in paths.items()},
    }
    if ingested is not None:
        summary["ingested"] = ingested
    if as_json:
        print_json(summary)
        return
    table = DataTable(title=f"simulation (seed {seed}, {users:,} users, {days} days of {policy})")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("revenue", "clicks", "purchases", "active_end", "ndcg", "events"):
        value = summary[key]
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
    for name, path in paths.items():
        table.add_row(f"{name} file", str(path))
    if ingested is not None:
        table.add_row("stored in", f"{db} ({ingested['stored']:,} events)")
    out.print(table)


def _fmt_ci(m: float, lo: float, hi: float, digits: int = 0) -> str:
    """``m [lo, hi]``; an undefined figure (NaN: one seed has no interval, a paired ratio no
    seed with a non-zero baseline) shows as "n/a" rather than "nan" or a zero-width interval."""
    if not math.isfinite(m):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m:,.{digits}f} [n/a]"
    return f"{m:,.{digits}f} [{lo:,.{digits}f}, {hi:,.{digits}f}]"


def _fmt_pct(x: float) -> str:
    """A signed percentage, or "n/a" for an undefined one (NaN)."""
    return f"{x:+.1%}" if math.isfinite(x) else "n/a"


def policy_tables(results: list[Any]) -> tuple[DataTable, DataTable | None, dict[str, Any]]:
    """The policy table and the OPE table (rich) plus a JSON-able summary."""
    from valuerec.simulate.experiment import ope_table, summarise

    summary = summarise(results)
    n = len(results)
    title = f"policies over {n} seed(s): mean [95% interval]"
    if n < 2:
        title += " (an interval needs 2 or more seeds)"
    table = DataTable(title=title)
    days = next(iter(results[0].runs.values())).days
    widest = max(len(name) for name in summary["policy"])
    table.add_column("policy", no_wrap=True, min_width=widest)  # names are never cut short
    for col in (f"{days}-day revenue", "active at end", "clicks", "NDCG@10"):
        table.add_column(col, justify="right")
    for row in summary.itertuples():
        # Text cells: a console with markup on (the benchmark's) took "[n/a]" for a tag
        table.add_row(
            Text(row.policy),
            Text(_fmt_ci(row.revenue, row.revenue_low, row.revenue_high)),
            Text(_fmt_ci(row.active_end, row.active_end_low, row.active_end_high)),
            Text(_fmt_ci(row.clicks, row.clicks_low, row.clicks_high)),
            Text(_fmt_ci(row.ndcg, row.ndcg_low, row.ndcg_high, 3)),
        )
    ope = ope_table(results)
    ope_rich = None
    if len(ope):
        ope_rich = DataTable(title="off-policy estimates of revenue per visit vs the truth")
        for col in ("seed", "policy", "truth", "IPS", "SNIPS", "DR", "covered (IPS/SNIPS/DR)"):
            ope_rich.add_column(col, justify="left" if col == "policy" else "right")
        for r in ope.itertuples():
            ope_rich.add_row(
                str(r.seed),
                Text(r.policy),
                f"{r.truth:.2f}",
                Text(_fmt_ci(r.ips, r.ips_low, r.ips_high, 2)),
                Text(_fmt_ci(r.snips, r.snips_low, r.snips_high, 2)),
                Text(_fmt_ci(r.dr, r.dr_low, r.dr_high, 2)),
                "/".join("yes" if c else "NO" for c in (r.ips_covers, r.snips_covers, r.dr_covers)),
            )
    data = policy_data(results, summary, ope)
    if ope_rich is not None and data["ope_simultaneous"]:
        joint = ", ".join(f"{e.upper()} {n}" for e, n in data["ope_simultaneous"].items())
        ope_rich.caption = f"simultaneous 95% intervals (Bonferroni) hold the truth: {joint}"
    return table, ope_rich, data


#: paired comparisons reported with the policy table: (policy, baseline)
PAIRS = (("value-aware", "relevance"), ("learned", "value-aware"), ("revenue-greedy", "relevance"))


def policy_data(
    results: list[Any], summary: pd.DataFrame | None = None, ope: pd.DataFrame | None = None
) -> dict[str, Any]:
    """The JSON-able record of a policy experiment that ``valuerec report --policy-json``
    renders: the policy table with intervals, paired relative differences with intervals, the
    mean cumulative revenue and active users per day, and the OPE rows against the truth with
    how many truths the simultaneous (Bonferroni) intervals hold, per estimator.

    Undefined figures are NaN (null in ``--json``): an interval of one seed, a paired ratio
    no seed defines. A pair's ``seeds_left_out`` (only when some are) counts per metric the
    seeds left out of its ratio because the baseline was 0 there."""
    from valuerec.simulate.experiment import (
        mean_ci,
        ope_simultaneous,
        ope_table,
        paired_ratios,
        summarise,
    )

    summary = summarise(results) if summary is None else summary
    ope = ope_table(results) if ope is None else ope
    names = list(results[0].runs)
    pairs: dict[str, dict[str, Any]] = {}
    for a, b in PAIRS:
        if a in names and b in names:
            figures: dict[str, Any] = {}
            left_out = {}
            for m in ("revenue", "ndcg", "active_end"):
                ratios = paired_ratios(results, a, b, m)
                defined = ratios[np.isfinite(ratios)]
                figures[m] = list(mean_ci(defined))
                if len(defined) < len(ratios):
                    left_out[m] = len(ratios) - len(defined)
            if left_out:
                figures["seeds_left_out"] = left_out
            pairs[f"{a} vs {b}"] = figures
    daily = {}
    for name in names:
        frames = [r.runs[name].daily for r in results]
        n = min(len(f) for f in frames)
        rev = np.mean([f["revenue"].to_numpy()[:n].cumsum() for f in frames], axis=0)
        act = np.mean([f["active"].to_numpy()[:n] for f in frames], axis=0)
        daily[name] = {
            "day": list(range(1, n + 1)),
            "cumulative_revenue": rev.tolist(),
            "active": act.tolist(),
        }
    together = ope_simultaneous(results)
    joint = {
        est: f"{int(sel['covers'].sum())}/{len(sel)}"
        for est, sel in (together.groupby("estimator", sort=False) if len(together) else [])
    }
    return {
        "seeds": [r.seed for r in results],
        "policies": summary.to_dict(orient="records"),
        "paired": pairs,
        "daily": daily,
        "ope": ope.to_dict(orient="records"),
        "ope_simultaneous": joint,  # per estimator: truths held by the Bonferroni intervals
    }


def policy_demo(users: int = 1_000, seeds: int = 2, days: int = 30) -> dict[str, Any]:
    """A short policy experiment for ``valuerec demo``: relevance, revenue-greedy, the
    value-aware blend and the learned policy over ``seeds`` small simulated populations
    (no off-policy evaluation); prints the table and the blend's revenue gain; returns
    :func:`policy_data`'s record."""
    import torch

    from valuerec.simulate.experiment import ExperimentConfig, run_seed

    torch.set_num_threads(1)
    cfg = ExperimentConfig(
        users=users,
        seeds=tuple(range(seeds)),
        days=days,
        policies=("relevance", "revenue-greedy", "value-aware", "learned"),
        ope=False,
    )
    results = []
    with progress() as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BG/NBD fallbacks on tiny logs are expected here
        task = bar.add_task("seeds", total=seeds)
        for seed in cfg.seeds:
            results.append(run_seed(cfg, seed, lambda s: bar.update(task, description=s)))
            bar.update(task, advance=1)
    table, _, data = policy_tables(results)
    table.title = (
        f"ranking policies in the simulator: {users:,} users x {seeds} seed(s), {days} days "
        "(mean [95% interval])"
    )
    out.print(table)
    for pair, figures in data["paired"].items():
        if pair.startswith("revenue-greedy"):
            continue
        m, lo, hi = figures["revenue"]
        nd = figures["ndcg"][0]
        interval = f"[{_fmt_pct(lo)}, {_fmt_pct(hi)}]" if math.isfinite(lo) else "[n/a]"
        note = ""
        if skipped := figures.get("seeds_left_out", {}).get("revenue"):
            note = f" ({skipped} seed(s) with a zero baseline left out)"
        out.print(
            f"{pair}: revenue {_fmt_pct(m)} {interval}, NDCG@10 {_fmt_pct(nd)}{note}",
            highlight=False,
        )
    out.print(
        "Paired over seeds (same users, same random numbers); the full benchmark with "
        "off-policy checks: python benchmarks/value_policy.py",
        highlight=False,
    )
    data["config"] = {"users": users, "seeds": seeds, "days": days}
    return data


@policy_app.command("evaluate")
def policy_evaluate(
    users: Annotated[int, typer.Option(min=1, help="Simulated users per seed.")] = 2_000,
    seeds: Annotated[
        int,
        typer.Option(min=1, help="Number of seeds (0, 1, ...); the 95% intervals need 2 or more."),
    ] = 5,
    days: Annotated[int, typer.Option(min=1, help="Days each policy serves.")] = 90,
    policies: Annotated[
        str,
        typer.Option(
            help="Comma list of random, logging, relevance, revenue-greedy, value-aware, learned."
        ),
    ] = "random,logging,relevance,revenue-greedy,value-aware,learned",
    value_weight: Annotated[float, typer.Option(help="Value-aware blend's value weight.")] = 3.0,
    diversity: Annotated[float, typer.Option(help="MMR diversity of blend and learned.")] = 1.0,
    conservatism: Annotated[
        float, typer.Option(help="Learned policy's pull towards the logged ranking.")
    ] = 0.5,
    objective: Annotated[str, typer.Option(help="Blend's money term: revenue or margin.")] = (
        "revenue"
    ),
    ope: Annotated[bool, typer.Option(help="Off-policy evaluation against the truth.")] = True,
    refit_recommender: Annotated[
        bool,
        typer.Option(
            help="The platform refits its recommender on the growing log every 15 days, "
            "with its purchase model (off: the pre-period fit serves throughout)."
        ),
    ] = True,  # ExperimentConfig.refit_recommender (not imported here: --help stays fast)
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Run every policy in the simulator over seeds: revenue, active users, clicks, NDCG@10."""
    import torch

    from valuerec.simulate.experiment import POLICIES, ExperimentConfig, run_seed

    torch.set_num_threads(1)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    # checked here, before the pre-period: an empty list otherwise simulates for minutes and
    # ends in a StopIteration, an unknown name in an error after the pre-period
    if not names:
        raise fail(f"--policies is empty: name one or more of {', '.join(POLICIES)}")
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise fail(
            f"--policies: unknown {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(POLICIES)}"
        )
    # the blend's and the learned policy's settings, also before the pre-period (NaN passes
    # every comparison, so it would run, and mean nothing)
    weights = {"--value-weight": value_weight, "--diversity": diversity,
               "--conservatism": conservatism}  # fmt: skip
    for flag, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise fail(f"{flag} must be a number >= 0, got {weight}")
    if objective not in ("revenue", "margin"):
        raise fail(f"--objective must be revenue or margin, got {objective!r}")
    cfg = ExperimentConfig(
        users=users,
        seeds=tuple(range(seeds)),
        days=days,
        policies=names,
        value_weight=value_weight,
        diversity=diversity,
        objective=objective,
        conservatism=conservatism,
        ope=ope,
        refit_recommender=refit_recommender,
    )
    results = []
    with progress() as bar:
        task = bar.add_task("seeds", total=seeds)
        for seed in cfg.seeds:
            try:
                results.append(run_seed(cfg, seed, lambda s: bar.update(task, description=s)))
            except ValueError as exc:
                # the options are checked above, so what fails here is a model left with
                # (almost) nothing to learn from: the population is what the user can change
                raise fail(
                    f"seed {seed}: {exc}; {users:,} simulated user(s) are too few to fit the "
                    "platform's models on: raise --users"
                ) from None
            bar.update(task, advance=1)
    table, ope_rich, data = policy_tables(results)
    if as_json:
        print_json(data)
        return
    out.print(table)
    if ope_rich is not None:
        out.print(ope_rich)


def campaign(
    users: Annotated[int, typer.Option(min=1, help="Simulated users.")] = 4_000,
    # min=0: numpy's seeding refuses a negative seed with a message naming no option
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    segment: Annotated[
        str, typer.Option(help="at-risk-high-value, or all (every customer).")
    ] = "all",
    discount: Annotated[float, typer.Option(help="Discount given to the treated.")] = 0.2,
    campaign_days: Annotated[int, typer.Option(min=1, help="Days the discount lasts.")] = 30,
    goodwill: Annotated[
        float,
        typer.Option(help="Share of their dropout hazard the treated lose while it runs."),
    ] = 0.5,
    days: Annotated[int, typer.Option(min=1, help="Days of revenue measured.")] = 90,
    target_share: Annotated[float, typer.Option(help="Share a targeted roll-out reaches.")] = 0.2,
    power: Annotated[float, typer.Option(help="Power for the sample size.")] = 0.8,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Simulate an incentive campaign's randomised A/B test and compare targeting rules.

    Reports the uplift in revenue per user over the --days days from the campaign's start, with
    its 95% interval (and the true uplift, known in the simulator), the sample size per arm for
    the requested power, and how much true uplift targeting the top users by an uplift model
    (T-learner, LightGBM) captures compared with targeting by predicted LTV.
    """
    from valuerec.simulate.campaign import CampaignConfig, run_campaign

    cfg = CampaignConfig(
        users=users,
        seed=seed,
        segment=segment,
        discount=discount,
        campaign_days=campaign_days,
        goodwill=goodwill,
        days=days,
        target_share=target_share,
        power=power,
    )
    # the campaign's own rules, found before anything is simulated and named as options
    if (found := cfg.problem()) is not None:
        field_, what = found
        raise fail(f"--{field_.replace('_', '-')} {what}")
    try:
        with progress() as bar:
            task = bar.add_task("campaign", total=None)
            res = run_campaign(cfg, lambda s: bar.update(task, description=s))
    except ValueError as exc:
        raise fail(str(exc)) from None
    data = {
        "eligible": res.eligible,
        "treated": res.treated,
        "uplift": res.uplift,
        "low": res.low,
        "high": res.high,
        "p_value": res.p_value,
        "true_uplift": res.true_uplift,
        "covers_truth": res.covers,
        "sample_size_per_arm": res.sample_size_per_arm,
        **res.details,
        "targeting": res.targeting.to_dict(orient="records"),
    }
    if as_json:
        print_json(data)
        return
    table = DataTable(title=f"A/B test: {discount:.0%} off for {campaign_days} days ({segment})")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("eligible / treated", f"{res.eligible:,} / {res.treated:,}")
    table.add_row("revenue per user, control", f"{res.details['control_mean']:,.2f}")
    table.add_row("revenue per user, treated", f"{res.details['treated_mean']:,.2f}")
    table.add_row("uplift [95% CI]", _fmt_ci(res.uplift, res.low, res.high, 2))
    table.add_row("p-value", f"{res.p_value:.3g}")
    table.add_row("true uplift (simulated)", f"{res.true_uplift:,.2f}")
    table.add_row(f"users per arm for power {power:.0%}", f"{res.sample_size_per_arm:,}")
    out.print(table)
    tgt = DataTable(title=f"targeting the top {target_share:.0%}: true uplift captured")
    for col in ("ranking", "users", "total uplift", "per user"):
        tgt.add_column(col, justify="left" if col == "ranking" else "right")
    for r in res.targeting.itertuples():
        tgt.add_row(
            r.ranking,
            f"{r.targeted:,}",
            f"{r.true_uplift_total:,.0f}",
            f"{r.true_uplift_per_user:,.2f}",
        )
    out.print(tgt)


__all__ = [
    "campaign",
    "policy_app",
    "policy_data",
    "policy_demo",
    "policy_tables",
    "simulate",
]
