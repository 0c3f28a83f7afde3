"""Customer-value figures for the report: saved models re-scored on customers they never saw.

Where the figures come from, in order of preference:

1. **Saved artifacts** (``valuerec value fit``). Their metadata records the temporal split
   (calibration end, holdout days) and the hash-chosen held-out customers; the report rebuilds
   exactly that split, predicts the held-out customers with each saved model and scores them
   with :func:`~valuerec.evaluate.value.evaluate_value`, the function ``value fit`` used. The
   metadata stores metrics and deciles but not per-customer predictions, and the gain, ROC and
   scatter charts need those, so re-predicting is unavoidable; the re-computed metrics are
   checked against the stored ones and a mismatch is reported, never hidden.
2. **Nothing saved** (or nothing scored): the cheap baselines are fitted now, on the split
   ``valuerec train`` makes by default (the last half of the log, at most ``value fit``'s
   default window, see :func:`default_split`; 20 % of customers held out by the same hash),
   and the report says which.

Supervised models learn from the training customers' holdout labels, so scoring on held-out
customers only is what keeps the comparison honest (see :mod:`valuerec.cli_value`).

The LTV distribution and the segments are "as of today" (the day after the last event), as
``valuerec value segments`` computes them, with one featured model. A log without an end (an
event dated 9999-12-31, a placeholder date) has no today: those two are left out with a note
saying so, and the held-out comparison, which needs only the split, is still shown.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from valuerec.artifacts import ArtifactStore, data_fingerprint
from valuerec.cli_serve import default_holdout_days
from valuerec.cli_value import ARTIFACT_PREFIX, SPLIT_SALT, holdout_customers
from valuerec.data.store import Store
from valuerec.evaluate.value import ValueReport, evaluate_value, paired_bootstrap, top_share
from valuerec.features.behaviour import behaviour_features
from valuerec.features.split import (
    EXPOSURE_EVENT_TYPES,
    SplitError,
    TemporalSplit,
    future_events,
    log_end_or_none,
    to_timestamp,
    when_text,
)
from valuerec.serve.config import EventRoles
from valuerec.serve.repository import Repository
from valuerec.value.base import ValueModel, value_data
from valuerec.value.registry import MODELS, make_model
from valuerec.value.segments import segment_summary, segment_users

from .defaults import (
    TRAIN_MAX_HOLDOUT_DAYS,
    VALUE_FALLBACK_MODELS,
    VALUE_FEATURED_MODEL,
    VALUE_TEST_FRACTION,
)

__all__ = [
    "BASELINES",
    "NotApplicable",
    "ValueEvaluation",
    "ValueResult",
    "default_split",
    "evaluate_models",
    "gain_curve",
]

#: the models benchmarks/ltv_cdnow.py sets "ours" against
BASELINES = ("naive", "bgnbd", "pareto", "lightgbm")
#: paired-bootstrap resamples for the Gini difference against the best baseline
N_BOOT = 1000
#: relative difference between stored and re-computed metrics that is reported
STORED_TOLERANCE = 1e-6

Step = Callable[[str], object]


class NotApplicable(Exception):
    """A section cannot be computed for this store; the message says why, for the reader."""


@dataclass
class ValueResult:
    """One model scored on the held-out customers."""

    name: str
    version: str | None
    pred: pd.DataFrame  # held-out predictions, in truth order
    report: ValueReport
    fit_seconds: float | None
    baseline: bool
    vs_best_baseline: dict[str, float] | None = None


@dataclass
class ValueEvaluation:
    """Everything the value section shows, with where it came from."""

    source: str  # "artifacts" or "fitted now"
    split: TemporalSplit
    holdout_complete: bool
    test_fraction: float
    train_customers: int
    truth: pd.DataFrame  # user_id, holdout_transactions, holdout_spend
    results: dict[str, ValueResult]
    featured: str
    featured_why: str  # why this model is the featured one, for the reader
    # the three below are None when the log has no end (an event dated 9999-12-31): there is
    # no "today" to predict as of, and a note says so
    as_of: datetime | None
    today: pd.DataFrame | None  # featured model: every customer as of ``as_of``
    segments: pd.DataFrame | None  # segment_summary of ``today``
    best_baseline: str | None
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _split_key(meta: dict[str, Any]) -> tuple[Any, ...]:
    return (
        meta.get("calibration_end"),
        meta.get("holdout_days"),
        meta.get("test_fraction"),
        meta.get("split_salt"),
    )


@dataclass
class _Plan:
    """The split to score on and the models to score, before any prediction."""

    source: str
    split: TemporalSplit
    test_fraction: float
    salt: str
    models: dict[str, tuple[ValueModel, str | None, float | None, dict[str, Any] | None]]
    skipped: dict[str, str]
    notes: list[str]


def _from_artifacts(
    store: Store, arts: ArtifactStore, step: Step
) -> tuple[_Plan | None, dict[str, str]]:
    """Saved value models that were scored on held-out customers, on one common split.

    Returns the plan (None when no saved model is usable) and why each other artifact was
    left out.
    """
    metas: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in MODELS:
        key = ARTIFACT_PREFIX + name
        if key not in arts.names():
            continue
        try:
            metas[name] = arts.meta(key)
        except Exception as exc:  # a broken artifact must not take the report down
            skipped[name] = f"cannot read {key}: {type(exc).__name__}: {exc}"
    scored = {n: m for n, m in metas.items() if (m.get("test_fraction") or 0) > 0}
    for name in metas.keys() - scored.keys():
        skipped[name] = "trained on every customer (--test-fraction 0): no held-out customers"
    if not scored:
        return None, skipped
    # the newest fit decides the split; models fitted on another split would not be comparable
    newest = max(scored.values(), key=lambda m: str(m.get("created_at", "")))
    models = {}
    for name, meta in scored.items():
        if _split_key(meta) != _split_key(newest):
            skipped[name] = (
                f"{meta['version']} was fitted on another split (calibration end "
                f"{_cut_text(meta.get('calibration_end'))}, {meta.get('holdout_days')} d)"
            )
            continue
        step(f"value: loading {name}")
        try:
            model, meta = arts.load(ARTIFACT_PREFIX + name)
        except Exception as exc:  # unpickling needs the model's code and dependencies
            skipped[name] = f"cannot load {meta['version']}: {type(exc).__name__}: {exc}"
            continue
        models[name] = (model, meta.get("version"), meta.get("fit_seconds"), meta)
    if not models:
        return None, skipped
    notes = []
    fingerprint = data_fingerprint(store)
    stale = [m for _, _, _, m in models.values() if m and m.get("data_fingerprint") != fingerprint]
    if stale:
        notes.append(
            "The store has changed since these models were fitted; they are scored on the "
            "data as it is now, so figures may differ from those printed by `value fit`."
        )
    plan = _Plan(
        "artifacts",
        TemporalSplit(newest["calibration_end"], newest["holdout_days"]),
        float(newest["test_fraction"]),
        str(newest.get("split_salt") or SPLIT_SALT),
        models,
        skipped,
        notes,
    )
    return plan, skipped


def _cut_text(when: Any) -> str:
    """A stored cut-off for a note, with its time of day when it has one: two fits cut on
    the same day at different hours are different splits and must not read as one."""
    try:
        return when_text(to_timestamp(when, "calibration_end"))
    except SplitError:  # metadata written by hand or by an old version: show it as it is
        return str(when)


def _endless_note(store: Store) -> str:
    """Why the "as of today" parts are missing when an event is dated on the last day a time
    can name, and which events to fix to get them back."""
    rows = store.con.execute(
        "SELECT user_id, count(*) FROM events "
        "WHERE timestamp >= '9999-12-31'::TIMESTAMP AND event_type NOT IN (SELECT unnest(?)) "
        "GROUP BY user_id ORDER BY user_id",
        [list(EXPOSURE_EVENT_TYPES)],
    ).fetchall()
    n = sum(c for _, c in rows)
    users = ", ".join(str(u) for u, _ in rows[:5]) + (", ..." if len(rows) > 5 else "")
    # the report takes its cut-off from the saved models, so there is no option to point to:
    # the data is what must change
    who = f"user{'s' if len(rows) > 1 else ''} {users}"
    return (
        f"{n} event{'s are' if n != 1 else ' is'} dated 9999-12-31 ({who}), the last day a "
        "time can name (a placeholder date, most likely): the log has no end, so there is "
        "no today to predict as of. The LTV distribution and the segments, which are as of "
        "today, are not shown, and whether the holdout window is complete is not checked; "
        "the held-out comparison needs neither. Fix or delete such events to see them."
    )


def default_split(store: Store) -> TemporalSplit:
    """The split ``valuerec train`` makes by default: half the log as holdout, at most
    :data:`TRAIN_MAX_HOLDOUT_DAYS` (``value fit``'s default window), so that the calibration
    period is never the shorter one; the log's span is train's, every event but exposures.

    The span and the halving are ``train``'s own code (:meth:`Repository.log_span_days`,
    with the default event roles, and :func:`~valuerec.cli_serve.default_holdout_days`).
    """
    span = Repository(store, EventRoles().exposure).log_span_days()
    holdout = default_holdout_days(span)
    return TemporalSplit.last_days(store, holdout)


def _fit_now(store: Store, root: str, step: Step, skipped: dict[str, str]) -> _Plan:
    """The cheap baselines, fitted now on the default split's training customers."""
    try:
        split = default_split(store)
        data = value_data(store, split.calibration_end, split.holdout_days)
    except SplitError as exc:
        raise NotApplicable(f"no usable calibration / holdout split: {exc}") from None
    held = holdout_customers(data.users, VALUE_TEST_FRACTION, SPLIT_SALT)
    train = list(data.users[~held])
    if not train:
        raise NotApplicable("too few customers to train on")
    models: dict[str, tuple[ValueModel, str | None, float | None, dict[str, Any] | None]] = {}
    for name in VALUE_FALLBACK_MODELS:
        step(f"value: fitting {name}")
        started = time.perf_counter()
        try:
            model = make_model(name).fit(
                store, split.calibration_end, holdout_days=split.holdout_days, users=train
            )
        except Exception as exc:  # one failure must not lose the others
            skipped[name] = f"fit failed: {type(exc).__name__}: {exc}"
            continue
        models[name] = (model, None, time.perf_counter() - started, None)
    shortened = (
        ""
        if split.holdout_days == TRAIN_MAX_HOLDOUT_DAYS
        else f" (shortened from {TRAIN_MAX_HOLDOUT_DAYS} days to half the log's span, "
        "exposures aside, as `valuerec train` does, so that the calibration period is not "
        "the shorter one)"
    )
    note = (
        f"No scored value-model artifacts in {root}: the baselines "
        f"{', '.join(VALUE_FALLBACK_MODELS)} were fitted now, with the last "
        f"{split.holdout_days} days of the log as holdout{shortened}. Run `valuerec value fit` "
        "to report your saved models instead."
    )
    return _Plan("fitted now", split, VALUE_TEST_FRACTION, SPLIT_SALT, models, skipped, [note])


def _compare(results: dict[str, ValueResult], truth: pd.DataFrame) -> str | None:
    """Paired-bootstrap Gini difference of each non-baseline model against the best baseline."""
    base = [r for r in results.values() if r.baseline]
    if not base:
        return None
    best = max(base, key=lambda r: r.report.metrics["normalized_gini"])
    actual = truth["holdout_spend"].to_numpy(dtype=float)
    for r in results.values():
        if r.baseline:
            continue
        r.vs_best_baseline = paired_bootstrap(
            actual,
            r.pred["pred_spend"].to_numpy(dtype=float),
            best.pred["pred_spend"].to_numpy(dtype=float),
            n_boot=N_BOOT,
            seed=0,
        )
    return best.name


def _check_stored(name: str, report: ValueReport, meta: dict[str, Any] | None) -> str | None:
    """A note when a saved model's stored metrics differ from the re-computed ones."""
    stored = (meta or {}).get("metrics") or {}
    off = []
    for key, value in report.to_dict()["metrics"].items():
        old = stored.get(key)
        if value is None or old is None:
            continue
        if not math.isclose(value, old, rel_tol=STORED_TOLERANCE, abs_tol=1e-12):
            off.append(f"{key} {old:.4g} -> {value:.4g}")
    if not off:
        return None
    return f"{name}: re-computed metrics differ from those stored at fit time ({'; '.join(off)})."


def evaluate_models(
    store: Store,
    artifacts_root: str,
    *,
    featured: str | None = None,
    step: Step = lambda _: None,
) -> ValueEvaluation:
    """Score the store's value models on held-out customers; predict today's customers
    (unless the log has no end: see the module's docstring).

    ``featured``: the model whose LTV distribution, calibration, scatter and segments are
    shown, by its registry name (lower case, as :func:`~valuerec.report.build.build_report`
    passes it); default the model ``valuerec value segments`` uses when it was scored, else
    the model with the highest held-out Gini.

    Raises:
        NotApplicable: the store has no purchases, no usable split, or nothing to score.
    """
    (purchases,) = store.con.execute(
        "SELECT count(*) FROM events WHERE event_type = 'purchase'"
    ).fetchone()
    if not purchases:
        raise NotApplicable(
            "this store has no purchase events: value models learn from purchases "
            "(event_type 'purchase' with a value)"
        )
    arts = ArtifactStore(artifacts_root)
    plan, skipped_saved = _from_artifacts(store, arts, step)
    if plan is None:
        plan = _fit_now(store, str(arts.root), step, skipped_saved)
    split = plan.split
    step("value: building the holdout")
    try:
        data = value_data(store, split.calibration_end, split.holdout_days)
    except SplitError as exc:
        raise NotApplicable(f"the saved models' split does not fit this store: {exc}") from None
    held = holdout_customers(data.users, plan.test_fraction, plan.salt)
    test, n_train = data.users[held], int((~held).sum())
    if len(test) < 2:
        raise NotApplicable(f"only {len(test)} held-out customer(s): nothing to score")
    if split.holdout_purchases(store) == 0:
        raise NotApplicable("the holdout window has no purchases: nothing to score")
    assert data.labels is not None
    truth = data.labels.loc[test].rename_axis("user_id").reset_index()
    notes = list(plan.notes)
    # None: the log has no end (an event dated 9999-12-31); scoring the held-out customers
    # needs only the split, so only the "as of today" parts are lost
    now = log_end_or_none(store)
    if now is None:
        # instead of future_events' warning, whose advice (give the cut-off explicitly) names
        # options of other commands: the report's cut-off comes from the saved models
        notes.append(_endless_note(store))
    elif problem := future_events(store, advice=""):  # its cut-off: the saved models
        notes.append(f"Warning: {problem}.")
    # as `value evaluate` reports it: a log without an end runs past any window
    complete = now is None or split.holdout_end <= now
    if not complete:
        notes.append(
            f"The holdout window ends {when_text(split.holdout_end)}, after the last event: "
            "actual holdout spend is incomplete and every model looks too optimistic."
        )

    results: dict[str, ValueResult] = {}
    skipped = dict(plan.skipped)
    for name, (model, version, fit_s, meta) in plan.models.items():
        step(f"value: scoring {name}")
        try:
            pred = model.predict(
                list(test), split.holdout_days, store=store, as_of=split.calibration_end
            )
            report = evaluate_value(truth, pred)
        except Exception as exc:  # one model's failure must not lose the others
            skipped[name] = f"scoring failed: {type(exc).__name__}: {exc}"
            continue
        pred = truth[["user_id"]].merge(pred, on="user_id", how="left")
        results[name] = ValueResult(name, version, pred, report, fit_s, name in BASELINES)
        mismatch = _check_stored(name, report, meta)
        if mismatch:
            notes.append(mismatch)
    if not results:
        raise NotApplicable(
            "no value model could be scored: "
            + "; ".join(f"{n}: {why}" for n, why in skipped.items())
        )
    best_baseline = _compare(results, truth)

    if featured is not None and featured not in results:
        notes.append(f"--value-model {featured} was not scored here; showing another model.")
        featured = None
    if featured is not None:
        why = "chosen with --value-model"
    elif VALUE_FEATURED_MODEL in results:
        featured, why = VALUE_FEATURED_MODEL, "the model `valuerec value segments` uses by default"
    else:
        featured = max(results, key=lambda n: results[n].report.metrics["normalized_gini"])
        why = f"the highest held-out Gini; {VALUE_FEATURED_MODEL}, the default, was not scored"
    today: pd.DataFrame | None = None
    segments: pd.DataFrame | None = None
    if now is not None:
        step(f"value: predicting today's customers with {featured}")
        model = plan.models[featured][0]
        today = model.predict(None, None, store=store, as_of=now)
        features = behaviour_features(store, now)
        segments = segment_summary(segment_users(today, features, as_of=now))
    return ValueEvaluation(
        source=plan.source,
        split=split,
        holdout_complete=complete,
        test_fraction=plan.test_fraction,
        train_customers=n_train,
        truth=truth,
        results=results,
        featured=featured,
        featured_why=why,
        as_of=None if now is None else to_timestamp(now),
        today=today,
        segments=segments,
        best_baseline=best_baseline,
        skipped=skipped,
        notes=notes,
    )


def gain_curve(actual: np.ndarray, predicted: np.ndarray, points: int = 101) -> np.ndarray:
    """Share of actual spend captured by the top x of customers, for x on a grid of [0, 1].

    Built from :func:`~valuerec.evaluate.value.top_share`, so the curve passes exactly through
    the table's top-10 % and top-20 % shares and treats tied predictions the same way.
    """
    grid = np.linspace(0.0, 1.0, points)
    return np.array([top_share(actual, predicted, float(x)) for x in grid])
