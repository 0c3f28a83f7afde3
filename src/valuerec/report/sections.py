"""Arrange computed figures into report sections: tables with exact values, charts, notes.

One function per section. They only format and arrange: every number comes from
:mod:`.summary`, :mod:`.value` (which scores through
:func:`~valuerec.evaluate.value.evaluate_value`) or :mod:`.recs` (through
:func:`~valuerec.evaluate.ranking.evaluate_scores`), and every table cell keeps the exact
value it shows, so the report can be checked against the evaluator number by number.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from valuerec.features.split import when_text
from valuerec.value.segments import SEGMENTS

from . import charts
from .document import Cell, Section, Table, num, text
from .recs import PROTOCOLS, ExampleUser, RecEvaluation
from .summary import DataSummary
from .value import N_BOOT, ValueEvaluation, gain_curve

__all__ = [
    "VALUE_METRICS",
    "data_section",
    "not_applicable",
    "recommendations_section",
    "slug",
    "value_section",
]

#: (metric key of evaluate_value, column label, shown as a percentage)
VALUE_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("normalized_gini", "Gini", False),
    ("top10_share", "top 10% share", True),
    ("top20_share", "top 20% share", True),
    ("spearman_spend", "Spearman", False),
    ("decile_mape", "decile MAPE", True),
    ("decile_mape_floor", "decile MAPE from sampling alone", True),
    ("mae_spend", "MAE spend", False),
    ("rmse_spend", "RMSE spend", False),
    ("aggregate_error_pct", "total spend error %", False),
    ("mae_transactions_median", "MAE transactions (median forecast)", False),
    ("mae_transactions", "MAE transactions (expected count)", False),
    ("auc_return", "AUC return", False),
    ("f1_return", "F1 return", False),
    ("coverage80", "80% interval coverage", True),
)
REC_ACCURACY = ("ndcg", "recall", "mrr", "hit", "precision", "map")
REC_BEYOND = (
    ("coverage", "catalogue coverage", True),
    ("novelty", "novelty (bits)", False),
    ("avg_popularity", "avg popularity (train interactions)", False),
    ("exposure_gini", "exposure Gini", False),
)
GAIN_POINTS = 101


def slug(label: str) -> str:
    """An HTML id fragment from a store label."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "store"


def not_applicable(sid: str, kind: str, title: str, reason: str) -> Section:
    """A section that says what is missing instead of failing the whole report."""
    return Section(sid, kind, title, notes=[f"Not shown: {reason}."], available=False)


# ------------------------------------------------------------------------------ data


def data_section(sid: str, summary: DataSummary) -> Section:
    """Counts, date range, events by type and month, quarantined rows."""
    s = summary.stats
    counts = [  # (label, machine key, value)
        ("events", "events", s["events"]),
        ("users with events", "users_with_events", s["users_with_events"]),
        ("customers with a purchase", "purchasers", summary.purchasers),
        ("items with events", "items_with_events", s["items_with_events"]),
        ("users in the users table", "users", s["users"]),
        ("items in the catalogue", "items", s["items"]),
        ("events with an item", "interactions_with_items", summary.interactions_with_items),
        ("quarantined rows", "quarantined", s["quarantined"]),
        ("ingest runs", "ingest_runs", s["ingest_runs"]),
    ]
    rows = [[text(label), num(v, key, integer=True)] for label, key, v in counts]
    rows.append([text("total value of events"), num(s["total_value"], "total_value", digits=2)])
    for label, key in (("first event", "first_event"), ("last event", "last_event")):
        when = s[key]
        rows.append([text(label), text(f"{pd.Timestamp(when):%Y-%m-%d %H:%M}" if when else None)])
    table = Table(
        f"{sid}-counts",
        "What is in the store",
        ["what", "value"],
        rows,
        row_keys=[r[0].text for r in rows],
    )
    types = s["events_by_type"]
    by_type = Table(
        f"{sid}-types",
        "Events by type",
        ["event type", "events", "share"],
        [
            [text(t), num(n, "events", integer=True), num(n / s["events"], "share", pct=True)]
            for t, n in types.items()
        ],
        row_keys=list(types),
    )
    section = Section(f"{sid}-data", "data", "Data summary", blocks=[table, by_type])
    if s["quarantined"]:
        section.notes.append(
            f"{s['quarantined']:,} input rows failed validation and are in the quarantine, not "
            "in these figures: `valuerec quarantine` lists them with file, line and reason."
        )
    if not summary.by_month.empty:
        section.blocks.append(charts.events_by_month(f"{sid}-events-by-month", summary.by_month))
        bm = summary.by_month
        section.blocks.append(
            Table(
                f"{sid}-months",
                "Events by month and type",
                ["month", *map(str, bm.columns), "total"],
                [
                    [text(f"{m:%Y-%m}")]
                    + [num(v, str(c), integer=True) for c, v in row.items()]
                    + [num(row.sum(), "total", integer=True)]
                    for m, row in bm.iterrows()
                ],
                row_keys=[f"{m:%Y-%m}" for m in bm.index],
            )
        )
    return section


# ----------------------------------------------------------------------------- value


def _value_table(sid: str, ev: ValueEvaluation) -> Table:
    columns = ["model", "kind", "version", "customers"]
    columns += [label for _, label, _ in VALUE_METRICS]
    columns += ["Gini - best baseline [95% CI]", "fit s"]
    rows, keys = [], []
    for name, r in ev.results.items():
        m = r.report.metrics
        diff = r.vs_best_baseline
        if diff is None:
            delta = Cell("(baseline)" if r.baseline else "-")
        else:
            delta = Cell(
                f"{diff['diff']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]",
                diff["diff"],
                "gini_vs_best_baseline",
            )
        rows.append(
            [
                text(name),
                text("baseline" if r.baseline else "ours"),
                text(r.version or "fitted now"),
                num(m["customers"], "customers", integer=True),
                *(num(m.get(key), key, pct=pct) for key, _, pct in VALUE_METRICS),
                delta,
                num(r.fit_seconds, "fit_seconds", digits=2),
            ]
        )
        keys.append(name)
    best = f"best baseline: {ev.best_baseline}; " if ev.best_baseline else ""
    return Table(
        f"{sid}-value-models",
        "Value models on the held-out customers",
        columns,
        rows,
        caption=(
            "Ranking (Gini, top shares, Spearman: higher is better), calibration (decile MAPE, "
            "errors: lower is better; a perfectly calibrated model with the same ranking would "
            "still score the decile MAPE from sampling alone, as spend is heavy-tailed), "
            "churn (AUC / F1 of p_return, the probability of buying in the holdout). "
            f"{best}the last column is a paired bootstrap ({N_BOOT:,} resamples of customers) "
            "of the Gini gap, with its 95% interval."
        ),
        row_keys=keys,
    )


def _decile_table(sid: str, ev: ValueEvaluation) -> Table:
    d = ev.results[ev.featured].report.deciles
    cols = [
        ("customers", "customers", False, True),
        ("predicted_sum", "predicted spend", False, False),
        ("actual_sum", "actual spend", False, False),
        ("predicted_mean", "predicted per customer", False, False),
        ("actual_mean", "actual per customer", False, False),
        ("abs_pct_error", "abs error", True, False),
    ]
    return Table(
        f"{sid}-value-deciles",
        f"Deciles of predicted spend ({ev.featured})",
        ["decile", *(label for _, label, _, _ in cols)],
        [
            [num(row["decile"], "decile", integer=True)]
            + [num(row[k], k, pct=pct, integer=integer, digits=2) for k, _, pct, integer in cols]
            for _, row in d.iterrows()
        ],
        row_keys=[str(int(x)) for x in d["decile"]],
    )


def _segment_table(sid: str, ev: ValueEvaluation) -> Table:
    assert ev.segments is not None and ev.as_of is not None  # value_section checks
    seg = ev.segments.set_index("segment").reindex(list(SEGMENTS))
    return Table(
        f"{sid}-value-segments",
        f"Segments as of {when_text(ev.as_of)} ({ev.featured})",
        [
            "segment",
            "customers",
            "share of customers",
            "predicted LTV",
            "share of value",
            "median days since last purchase",
            "median repeat purchases",
        ],
        [
            [
                text(name),
                num(r["users"], "users", integer=True),
                num(r["share_users"], "share_users", pct=True),
                num(r["predicted_value"], "predicted_value", digits=0),
                num(r["share_value"], "share_value", pct=True),
                # one decimal: a median of whole days is often x.5, which rounding to a whole
                # number would send to the even neighbour here and up on the dashboard
                num(r["median_recency_days"], "median_recency_days", digits=1),
                num(r["median_frequency"], "median_frequency", digits=1),
            ]
            for name, r in seg.iterrows()
        ],
        caption=(
            "Rule-based segments of `valuerec value segments` (first matching rule wins); "
            "value is the featured model's predicted LTV of every current customer."
        ),
        row_keys=list(SEGMENTS),
    )


def value_section(sid: str, ev: ValueEvaluation) -> Section:
    """Model comparison, the five value charts, deciles and segments (the LTV distribution
    and the segments only when the log has an end: ``ev.today``)."""
    split = ev.split
    n_test = len(ev.truth)
    featured = ev.results[ev.featured]
    source = (
        "saved model artifacts (`valuerec value fit`), re-scored now"
        if ev.source == "artifacts"
        else "baseline models fitted now (no scored artifacts)"
    )
    # with its time of day when it has one (a cut-off given in another time zone): a bare
    # date would put that day's earlier purchases on the wrong side of the cut
    cut = when_text(split.calibration_end)
    shown = (
        "distribution, calibration, scatter and segments"
        if ev.today is not None
        else "calibration and scatter"
    )
    paragraphs = [
        f"Source: {source}. Models learnt from purchases before {cut}; they are scored on "
        f"what {n_test:,} held-out customers ({100 * ev.test_fraction:.0f}% of customers, "
        f"chosen by a hash of the user id, never used in training; {ev.train_customers:,} "
        f"trained on) spent in the {split.holdout_days} days from {cut} to "
        f"{when_text(split.holdout_end)}.",
        f"The {shown} show {ev.featured} ({ev.featured_why}).",
    ]
    section = Section(f"{sid}-value", "value", "Customer value", paragraphs, list(ev.notes))
    for name, why in ev.skipped.items():
        section.notes.append(f"{name} not shown: {why}.")
    section.blocks.append(_value_table(sid, ev))
    if ev.today is not None:  # else a note of evaluate_models says why not
        section.blocks.append(
            charts.ltv_distribution(
                f"{sid}-ltv-distribution",
                ev.today["ltv"].to_numpy(dtype=float),
                ev.featured,
                float(ev.split.holdout_days),
            )
        )
    actual = ev.truth["holdout_spend"].to_numpy(dtype=float)
    grid = np.linspace(0.0, 1.0, GAIN_POINTS)
    gains = {
        name: gain_curve(actual, r.pred["pred_spend"].to_numpy(dtype=float), GAIN_POINTS)
        for name, r in ev.results.items()
    }
    if any(np.isfinite(g).all() for g in gains.values()):
        section.blocks.append(charts.gain_lift(f"{sid}-gain-lift", grid, gains))
    section.blocks.append(
        charts.decile_calibration(f"{sid}-decile-calibration", featured.report.deciles, ev.featured)
    )
    section.blocks.append(
        charts.actual_vs_predicted(
            f"{sid}-actual-vs-predicted",
            actual,
            featured.pred["pred_spend"].to_numpy(dtype=float),
            ev.featured,
        )
    )
    churned = ev.truth["holdout_transactions"].to_numpy(dtype=float) <= 0
    if churned.all() or not churned.any():  # a chart would show only the diagonal
        section.notes.append("Every held-out customer is in one churn class: no ROC curve.")
    else:
        section.blocks.append(
            charts.churn_roc(
                f"{sid}-churn-roc",
                churned,
                {
                    n: r.pred["p_return" if "p_return" in r.pred else "p_alive"].to_numpy(float)
                    for n, r in ev.results.items()
                },
                {n: r.report.metrics["auc_return"] for n, r in ev.results.items()},
            )
        )
    section.blocks.append(_decile_table(sid, ev))
    if ev.segments is not None:
        section.blocks.append(_segment_table(sid, ev))
    return section


# --------------------------------------------------------------------------- recommendations


def _rec_table(sid: str, ev: RecEvaluation, protocol: str) -> Table:
    k = ev.k
    res = ev.protocols[protocol]
    keys = [f"{m}@{k}" for m in REC_ACCURACY]
    if protocol == "leave-one-out":
        keys.append(f"ndcg@{k}_unmasked")
    rows, row_keys = [], []
    for name, m in res.metrics.items():
        rows.append(
            [text(name), text("valuerec")]
            + [num(m.get(key), key, digits=4) for key in keys]
            + [num(m.get("fit_s"), "fit_s", digits=2)]
        )
        row_keys.append(name)
    for p in ev.peers:
        if p.protocol != protocol:
            continue
        rows.append(  # the note says which of the peer's figure sets each column holds
            [text(p.model), text(f"RecBole (peer): {p.note}" if p.note else "RecBole (peer)")]
            + [num(p.metrics.get(key), key, digits=4) for key in keys]
            + [text(None)]
        )
        row_keys.append(f"peer:{p.model}")
    sizes = res.sizes
    return Table(
        f"{sid}-rec-{protocol}",
        f"{protocol}: test part, full ranking, seen items masked",
        ["model", "source", *keys, "fit s"],
        rows,
        caption=(
            f"{int(next(iter(res.metrics.values()))['users']):,} users with a test item; "
            f"train / valid / test pairs {sizes['train']:,} / {sizes['valid']:,} / "
            f"{sizes['test']:,}. RecBole definitions; higher is better."
            + (
                f" ndcg@{k}_unmasked ranks without masking the user's history."
                if protocol == "leave-one-out"
                else ""
            )
        ),
        row_keys=row_keys,
    )


def _beyond_table(sid: str, ev: RecEvaluation) -> Table:
    k = ev.k
    rows, row_keys = [], []
    for protocol, res in ev.protocols.items():
        for name, m in res.metrics.items():
            rows.append(
                [text(name), text(protocol)]
                + [
                    num(m.get(f"{key}@{k}"), f"{key}@{k}", pct=pct, digits=3)
                    for key, _, pct in REC_BEYOND
                ]
            )
            row_keys.append(f"{protocol}:{name}")
    return Table(
        f"{sid}-rec-beyond",
        f"Beyond accuracy (top {k})",
        ["model", "protocol", *(label for _, label, _ in REC_BEYOND)],
        rows,
        caption=(
            "Coverage: share of the catalogue recommended to anyone; novelty: mean "
            "-log2(share of users who had the item); exposure Gini: 0 = every item shown "
            "equally often, 1 = one item takes every slot."
        ),
        row_keys=row_keys,
    )


def _example_tables(sid: str, i: int, user: ExampleUser) -> list[Table]:
    history = Table(
        f"{sid}-example-{i}-history",
        f"User {user.user_id}: {len(user.history)} most recent of {user.items:,} distinct "
        f"items ({user.interactions:,} interactions)",
        ["when", "event", "item", "title"],
        [
            [
                text(f"{pd.Timestamp(r.timestamp):%Y-%m-%d}"),
                text(r.event_type),
                text(r.item_id),
                text(r.title),
            ]
            for r in user.history.itertuples()
        ],
        row_keys=list(user.history["item_id"]),
    )
    recs = Table(
        f"{sid}-example-{i}-recs",
        f"Recommended for user {user.user_id}",
        ["rank", "item", "title", "score", "reason"],
        [
            [
                num(r.rank, "rank", integer=True),
                text(r.item_id),
                text(r.title),
                num(r.score, "score", digits=3),
                text(r.reason),
            ]
            for r in user.recs.itertuples()
        ],
        row_keys=list(user.recs["item_id"]),
    )
    return [history, recs]


def recommendations_section(sid: str, ev: RecEvaluation) -> Section:
    """Both protocols' tables (with peers), beyond-accuracy, popularity bias, examples."""
    section = Section(
        f"{sid}-recommendations",
        "recommendations",
        "Recommendations",
        [
            f"Models: {', '.join(ev.models)}; k = {ev.k}. Protocols: random 80/10/10 split of "
            "each user's items (seed 0) and leave-one-out by time, as `valuerec recommend "
            "evaluate` runs them."
        ],
        list(ev.notes),
    )
    if ev.peers:
        section.paragraphs.append(
            "Peer rows: RecBole's own trainer and evaluator on the same splits "
            "(benchmarks/peers); a peer model of the same name may be tuned differently."
        )
    # one note per reason: on a tiny store every model fails on every protocol alike
    by_reason: dict[str, list[str]] = {}
    for what, why in ev.skipped.items():
        by_reason.setdefault(why, []).append(what)
    for why, whats in by_reason.items():
        section.notes.append(f"{', '.join(whats)} not shown: {why}.")
    for protocol in PROTOCOLS:
        if protocol in ev.protocols:
            section.blocks.append(_rec_table(sid, ev, protocol))
    if ev.protocols:
        section.blocks.append(_beyond_table(sid, ev))
        protocol = PROTOCOLS[0] if PROTOCOLS[0] in ev.protocols else next(iter(ev.protocols))
        res = ev.protocols[protocol]
        shares = charts.popularity_deciles(res.train_counts, res.top_items)
        section.blocks.append(
            charts.popularity_bias(f"{sid}-popularity-bias", shares, ev.k, protocol)
        )
    examples = Section(
        f"{sid}-examples",
        "examples",
        "Example users",
        [
            f"Five users from light to heavy histories, served by {ev.example_source}. Each "
            "user is scored from their history as the store holds it now, as the server does, "
            "so nothing in it is recommended; each reason names the item in the user's history "
            "the recommended item is most similar to, by the model's own similarity."
        ],
    )
    for i, user in enumerate(ev.examples, start=1):
        examples.blocks.extend(_example_tables(sid, i, user))
    if not ev.examples:
        examples.notes.append("No user has an interaction the model knows.")
    section.children.append(examples)
    return section
