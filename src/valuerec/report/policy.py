"""The report's ranking-policy section, from a policy experiment's JSON record.

The simulator experiment is too slow to rerun for every report, so the section reads what
``python benchmarks/value_policy.py --json FILE`` or ``valuerec policy evaluate --json``
wrote (:func:`valuerec.cli_simulate.policy_data`'s record): the policy table with 95%
intervals over seeds, the paired comparisons the targets are stated in, revenue and active
users over the days when the record has them, and the off-policy estimates beside the
simulated truth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import charts
from .document import Section, StorePart, Table, num, text

__all__ = ["policy_part", "read_policy"]

POLICY_METRICS = (
    ("revenue", "revenue", 0),
    ("active_end", "active users at end", 0),
    ("clicks", "clicks", 0),
    ("ndcg", "NDCG@10", 3),
)
ESTIMATORS = ("ips", "snips", "dr")


def read_policy(path: str | Path) -> dict[str, Any]:
    """Load and check a policy record; ``ValueError`` says what is wrong with the file.

    Every part the section reads is checked here, shape and types (figures are numbers or
    null), because the policy part is built outside the report's per-section guard: a record
    it cannot draw must be the file's clear error, not a traceback.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read policy figures from {path}: {exc}") from None
    rows = data.get("policies") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(
            f"{path} holds no policy table (write it with `python benchmarks/value_policy.py "
            "--json FILE` or `valuerec policy evaluate --json`)"
        )
    try:
        _check_record(data)
    except _BadRecord as exc:
        raise ValueError(f"cannot read policy figures from {path}: {exc}") from None
    return data


class _BadRecord(ValueError):
    """What does not fit in a policy record (``read_policy`` adds the file's name)."""


def _is_figure(value: Any) -> bool:
    """A number (``num`` shows it) or null (shown as ``-``); not a bool, not text."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _check_figures(row: dict[str, Any], keys: list[str], where: str) -> None:
    for key in keys:
        if not _is_figure(row.get(key)):
            raise _BadRecord(f"{where}.{key} is not a number: {row[key]!r}")


def _bounded(key: str) -> list[str]:
    """A figure and its interval's ends, as the tables read them."""
    return [key, f"{key}_low", f"{key}_high"]


def _check_record(data: dict[str, Any]) -> None:
    """Raise :class:`_BadRecord` naming the first part the section could not show."""
    for i, r in enumerate(data["policies"]):
        if not isinstance(r, dict):
            raise _BadRecord(f"policies[{i}] is not an object")
        if "policy" not in r:
            raise _BadRecord(f"policies[{i}] has no policy (its name)")
        _check_figures(
            r, [k for key, _, _ in POLICY_METRICS for k in _bounded(key)], f"policies[{i}]"
        )
    for key, kind in (("seeds", list), ("paired", dict), ("daily", dict), ("ope", list)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise _BadRecord(f"{key} is not {'a list' if kind is list else 'an object'}")
    simultaneous = data.get("ope_simultaneous")
    if simultaneous is not None and not isinstance(simultaneous, dict):
        raise _BadRecord("ope_simultaneous is not an object")
    for pair, figures in (data.get("paired") or {}).items():
        if not isinstance(figures, dict):
            raise _BadRecord(f"paired[{pair!r}] is not an object")
        for metric in ("revenue", "ndcg", "active_end"):
            triple = figures.get(metric, (None, None, None))
            if not (
                isinstance(triple, list | tuple)
                and len(triple) == 3
                and all(_is_figure(x) for x in triple)
            ):
                raise _BadRecord(f"paired[{pair!r}].{metric} is not [mean, low, high]: {triple!r}")
    for name, series in (data.get("daily") or {}).items():
        where = f"daily[{name!r}]"
        if not isinstance(series, dict):
            raise _BadRecord(f"{where} is not an object")
        lengths: set[int] = set()
        for key in ("day", "cumulative_revenue", "active"):
            values = series.get(key)
            if not isinstance(values, list) or not all(
                _is_figure(v) and v is not None for v in values
            ):
                raise _BadRecord(f"{where}.{key} is not a list of numbers")
            lengths.add(len(values))
        if len(lengths) > 1:
            raise _BadRecord(f"{where}: series of different lengths")
    for i, r in enumerate(data.get("ope") or []):
        if not isinstance(r, dict):
            raise _BadRecord(f"ope[{i}] is not an object")
        if "policy" not in r:
            raise _BadRecord(f"ope[{i}] has no policy (its name)")
        _check_figures(r, ["truth", *(k for est in ESTIMATORS for k in _bounded(est))], f"ope[{i}]")


def _policy_table(data: dict[str, Any]) -> Table:
    rows, keys = [], []
    for r in data["policies"]:
        cells = [text(r["policy"])]
        for key, _, digits in POLICY_METRICS:
            cells += [
                num(r.get(key), key, digits=digits),
                num(r.get(f"{key}_low"), f"{key}_low", digits=digits),
                num(r.get(f"{key}_high"), f"{key}_high", digits=digits),
            ]
        rows.append(cells)
        keys.append(str(r["policy"]))
    columns = ["policy"]
    for _, label, _ in POLICY_METRICS:
        columns += [label, "low", "high"]
    seeds = data.get("seeds") or []
    return Table(
        "policy-table",
        "Policies: mean over seeds with 95% t-interval",
        columns,
        rows,
        caption=f"{len(seeds)} seed(s); NDCG@10 of the shown slates against the true relevance.",
        row_keys=keys,
    )


def _paired_table(data: dict[str, Any]) -> Table:
    rows, keys = [], []
    for pair, figures in data.get("paired", {}).items():
        cells = [text(pair)]
        for metric in ("revenue", "ndcg", "active_end"):
            m, lo, hi = figures.get(metric, (None, None, None))
            cells += [
                num(m, metric, pct=True, digits=3),
                num(lo, f"{metric}_low", pct=True, digits=3),
                num(hi, f"{metric}_high", pct=True, digits=3),
            ]
        rows.append(cells)
        keys.append(pair)
    columns = ["comparison"]
    for label in ("revenue", "NDCG@10", "active at end"):
        columns += [f"{label} change", "low", "high"]
    return Table(
        "policy-paired",
        "Paired comparisons: relative difference per seed, mean and 95% interval",
        columns,
        rows,
        caption="Targets: value-aware vs relevance revenue >= +10% at NDCG@10 >= -5%; "
        "learned vs value-aware revenue > 0.",
        row_keys=keys,
    )


def _ope_table(data: dict[str, Any]) -> Table:
    rows, keys = [], []
    for r in data.get("ope", []):
        cells = [text(r.get("seed")), text(r["policy"]), num(r.get("truth"), "truth", digits=3)]
        for est in ESTIMATORS:
            cells += [
                num(r.get(est), est, digits=3),
                num(r.get(f"{est}_low"), f"{est}_low", digits=3),
                num(r.get(f"{est}_high"), f"{est}_high", digits=3),
                text("yes" if r.get(f"{est}_covers") else "NO"),
            ]
        rows.append(cells)
        keys.append(f"{r.get('seed')}:{r['policy']}")
    columns = ["seed", "policy", "truth"]
    for est in ESTIMATORS:
        columns += [est.upper(), "low", "high", "covers"]
    covered = {
        est: sum(bool(r.get(f"{est}_covers")) for r in data.get("ope", [])) for est in ESTIMATORS
    }
    n = len(data.get("ope", []))
    together = data.get("ope_simultaneous") or {}
    joint = (
        " Simultaneous 95% intervals (Bonferroni over all of them) hold every truth together: "
        + ", ".join(f"{e.upper()} {together[e]}" for e in ESTIMATORS if e in together)
        + "."
        if together
        else ""
    )
    return Table(
        "policy-ope",
        "Off-policy estimates of revenue per visit vs the simulated truth (95% intervals)",
        columns,
        rows,
        caption="Truth covered: "
        + ", ".join(f"{e.upper()} {covered[e]}/{n}" for e in ESTIMATORS)
        + ". A 95% interval misses about 1 time in 20 by design."
        + joint,
        row_keys=keys,
    )


def policy_part(data: dict[str, Any], source: str) -> StorePart:
    """The report part for one policy record (``source``: where it was read from)."""
    section = Section(
        "policy-comparison",
        "policies",
        "Ranking policies in the simulator",
        paragraphs=[
            "Each policy served the same simulated users from the same state with the same "
            "random numbers; the simulator knows each user's true relevance and value, so "
            "revenue, retention and NDCG are measured, not estimated. Rerun with "
            "`python benchmarks/value_policy.py --json FILE`."
        ],
    )
    section.blocks.append(_policy_table(data))
    if data.get("paired"):
        section.blocks.append(_paired_table(data))
    if data.get("daily"):
        section.blocks.append(charts.policy_over_days("policy-days", data["daily"]))
    else:
        section.notes.append("Not shown: revenue over days (the record has no daily series).")
    ope = Section("policy-ope-section", "ope", "Off-policy evaluation against the truth")
    if data.get("ope"):
        ope.blocks.append(_ope_table(data))
    else:
        ope.available = False
        ope.notes.append("Not shown: the record has no off-policy estimates.")
    section.children.append(ope)
    return StorePart("policy", "Ranking policies (simulator)", source, [section])
