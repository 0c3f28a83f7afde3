"""``valuerec value ...``: fit, compare, save, serve and segment customer-value models.

``fit`` trains each model on one temporal split (features before the calibration end, labels
in the ``--holdout-days`` after it), scores it and stores it as a versioned artifact
(:mod:`valuerec.artifacts`) that ``predict``, ``evaluate`` and ``segments`` load.

How models are scored without flattering the supervised ones: a supervised model (LightGBM,
the Transformer) learns from the very holdout labels a BTYD model never sees, so scoring it on
the customers it was trained on would measure memory, not prediction. ``fit`` therefore holds
out a fixed share of customers (``--test-fraction``, chosen by a hash of the user id, so the
same customers are held out on every run and can be found again later without storing a
list), trains every model on the others and scores every model on the held-out ones: the same
customers and the same holdout window for all, a fair comparison. The saved artifact is exactly
the model that was scored. ``evaluate`` re-scores saved artifacts on those held-out customers,
or on every customer for a window that starts after the training labels end.

Errors a user can fix (no artifact yet, unknown model name, a calibration end outside the data)
print one message and exit with code 2; a model that fails to fit is reported and the others
still run (exit code 1).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.text import Text

from valuerec.artifacts import ArtifactStore, data_fingerprint, default_root
from valuerec.cli_common import (
    DataTable,
    DbOption,
    JsonOption,
    load_saved,
    open_store,
    out,
    require_store,
    say_error,
    utc_text,
)
from valuerec.cli_common import fail as _fail
from valuerec.cli_common import print_json as _print_json
from valuerec.cli_common import progress as _progress
from valuerec.cli_common import warn as _warn
from valuerec.data.store import Store, default_db_path
from valuerec.evaluate.value import ValueReport, evaluate_value
from valuerec.features.behaviour import behaviour_features
from valuerec.features.split import (
    SplitError,
    TemporalSplit,
    check_within_log,
    future_events,
    log_end,
    log_end_or_none,
    to_timestamp,
)
from valuerec.serve.config import model_name
from valuerec.value.base import MAX_HORIZON_DAYS, ValueData, ValueModel, value_data
from valuerec.value.ensemble import EnsembleValueModel
from valuerec.value.registry import MODELS, make_model, use_snapshots
from valuerec.value.segments import (
    SEGMENTS,
    segment_name,
    segment_summary,
    segment_users,
    target_list,
)

__all__ = ["holdout_customers", "value_app"]

value_app = typer.Typer(
    help="Customer-value models: fit and compare, predict, evaluate, segment.",
    no_args_is_help=True,
    add_completion=False,
)


ArtifactsOption = Annotated[
    Path | None,
    typer.Option("--artifacts", help="Artifact folder; default: the store path + '.models'."),
]
ModelOption = Annotated[
    str, typer.Option("--model", help=f"Value model: one of {', '.join(MODELS)}.")
]
AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of", help="Score customers as of this date (events before it); default: log end."
    ),
]
HorizonOption = Annotated[
    float | None,
    typer.Option("--horizon-days", help="Prediction horizon; default: the model's holdout."),
]

DEFAULT_MODELS = "naive,bgnbd,pareto,lightgbm"
#: what the registry's ensemble is made of, in order (reused when fitted in the same run)
ENSEMBLE_MEMBERS = ("lightgbm", "transformer")
ARTIFACT_PREFIX = "value-"
SPLIT_SALT = "valuerec-value-test"
TOP_ROWS = 20


def _open_store(db: str) -> AbstractContextManager[Store]:
    return open_store(db, must_exist=True)


# ----------------------------------------------------------------------------- helpers


def holdout_customers(users: Sequence[str] | pd.Index, fraction: float, salt: str) -> np.ndarray:
    """Boolean mask of the customers held out for scoring: a hash of ``salt:user_id``.

    A hash rather than a random draw, so the held-out set is the same on every run, survives
    new data (a customer keeps their side) and can be recomputed from the artifact's metadata.
    """
    if fraction <= 0:
        return np.zeros(len(users), dtype=bool)
    draws = np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{salt}:{u}".encode(), digest_size=8).digest(), "big")
            >> 11
            for u in users
        ],
        dtype=np.float64,
    )
    return draws / float(2**53) < fraction


def _parse_models(spec: str) -> list[str]:
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if not names:
        raise _fail(f"--models is empty: choose from {', '.join(MODELS)}")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise _fail(f"--models lists {', '.join(sorted(dup))} more than once")
    return names


def _make(name: str) -> ValueModel:
    try:
        return make_model(name)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _truth(data: ValueData, users: pd.Index) -> pd.DataFrame:
    assert data.labels is not None
    return data.labels.loc[users].rename_axis("user_id").reset_index()


def _artifacts(db: str, root: Path | None) -> ArtifactStore:
    try:
        return ArtifactStore(root if root is not None else default_root(db))
    except ValueError as exc:
        raise _fail(f"{exc} (--artifacts)") from None


def _load(arts: ArtifactStore, name: str) -> tuple[ValueModel, dict[str, Any]]:
    """The current version of value model ``name``, unpickled and checked to be one.

    Every failure is one line naming the artifact, its version and folder: a truncated pickle,
    or a recommender's pickle in a value model's folder, was a traceback (or an AttributeError
    deep in ``predict``). Fitting is the advice only where nothing was ever saved: a broken
    pointer or version is mended by promoting another one.
    """
    short = model_name(name, ARTIFACT_PREFIX) if name.strip() else name  # as the API reads it
    if short not in MODELS:
        raise _fail(f"unknown value model {name!r}: choose from {', '.join(MODELS)}")
    key = ARTIFACT_PREFIX + short
    fit = f"valuerec value fit --models {short}"
    return load_saved(arts, key, ValueModel, "value model", fit)


def _check_out(path: Path | None, what: str, example: str) -> None:
    """Refuse an ``--out`` that can never be written before any model is loaded: a file name
    that is neither .csv nor .parquet, a folder, or a path below a file. Found after every
    customer was predicted, these were a traceback (exit code 1) and the work was lost.

    The check is the one ``report --out`` makes (:func:`valuerec.report.build.out_target`).
    """
    if path is None:
        return
    from valuerec.report.build import OutPathError, out_target  # only for an --out

    if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise _fail(f"--out {path}: use a .csv or .parquet file name")
    try:
        out_target(path, what, example)
    except OutPathError as exc:
        raise _fail(f"--out: {exc}") from None


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` (checked by :func:`_check_out`); what only the write itself
    finds (no permission, a full disk, a read-only file system) is one error line too."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    except OSError as exc:
        raise _fail(f"--out: cannot write {path}: {exc.strerror or exc}") from None


def _fmt(value: Any, pct: bool = False, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:,.{digits}f}"


def _decile_table(title: str, deciles: list[dict[str, Any]]) -> DataTable:
    """The evaluator's decile table: what decile MAPE averages, decile by decile (1 = the
    customers predicted to spend most)."""
    table = DataTable(title=title)
    cols = ("decile", "customers", "predicted", "actual", "error %")
    for col in cols:
        table.add_column(col, justify="right")
    for d in deciles:
        table.add_row(
            str(d["decile"]),
            f"{d['customers']:,}",
            f"{d['predicted_sum']:,.2f}",
            f"{d['actual_sum']:,.2f}",
            _fmt(100 * d["abs_pct_error"] if d["abs_pct_error"] is not None else None, digits=1),
        )
    return table


def _metric_table(title: str, rows: dict[str, dict[str, Any]]) -> DataTable:
    """The comparison every command prints: ranking, calibration, counts, churn, fit time.

    The caption gives the floor under decile MAPE (what a perfectly calibrated model with the
    same ranking scores from sampling alone): it hardly moves between models, and a column
    for it would squeeze the model names off an 80-column terminal.
    """
    floors = [
        f
        for row in rows.values()
        if not row.get("error")
        and (f := (row.get("metrics") or {}).get("decile_mape_floor")) is not None
        and math.isfinite(f)
    ]
    caption = None
    if floors:
        lo, hi = min(floors), max(floors)
        span = (
            f"{100 * lo:.1f}%"
            if round(lo, 3) == round(hi, 3)
            else f"{100 * lo:.1f}-{100 * hi:.1f}%"
        )
        caption = (
            f"a perfectly calibrated model with the same ranking would score decile MAPE {span} "
            "from sampling alone"
        )
    table = DataTable(title=title, caption=caption)
    # MAE of the median count forecast (what MAE rewards), and of the expectation beside it
    cols = ("model", "version", "gini", "decile MAPE", "MAE tx", "MAE tx mean", "AUC", "fit s")
    for col in cols:
        if col == "model":  # whole names on an 80-column terminal: headers wrap instead
            table.add_column(col, no_wrap=True, min_width=max(map(len, rows), default=5))
        else:
            table.add_column(col, justify="left" if col == "version" else "right")
    for name, row in rows.items():
        m = row.get("metrics") or {}
        if row.get("error"):
            table.add_row(
                name, "-", Text("failed", style="red"), "", "", "", "", _fmt(row.get("fit_seconds"))
            )
            continue
        table.add_row(
            name,
            str(row.get("version") or "-"),
            _fmt(m.get("normalized_gini")),
            _fmt(m.get("decile_mape"), pct=True),
            _fmt(m.get("mae_transactions_median")),
            _fmt(m.get("mae_transactions")),
            _fmt(m.get("auc_return")),
            _fmt(row.get("fit_seconds"), digits=2),
        )
    return table


def _predict_all(
    store: Store, model: ValueModel, as_of: str | None, horizon: float | None
) -> tuple[pd.DataFrame, datetime]:
    """Predictions for every customer with a purchase before ``as_of`` (default: log end)."""
    if horizon is not None and not (math.isfinite(horizon) and 0 < horizon <= MAX_HORIZON_DAYS):
        raise _fail(f"--horizon-days must be in (0, {MAX_HORIZON_DAYS:g}] days, got {horizon}")
    if as_of is None and (problem := future_events(store)):
        _warn(problem)
    try:
        if as_of is None:
            when = log_end(store)
        else:
            when = to_timestamp(as_of, "--as-of")
            # named as given: the split built inside predict would call it "the cut-off"
            check_within_log(store, when, "--as-of")
        pred = model.predict(horizon_days=horizon, store=store, as_of=when)
    except SplitError as exc:
        raise _fail(str(exc)) from None
    return pred, when


# ----------------------------------------------------------------------------- commands


@value_app.command()
def fit(
    db: DbOption = default_db_path(),
    calibration_end: Annotated[
        str | None,
        typer.Option(
            "--calibration-end",
            help="Features before this date, labels after it; default: log end - holdout.",
        ),
    ] = None,
    holdout_days: Annotated[
        int,
        typer.Option(
            "--holdout-days",
            min=1,
            max=int(MAX_HORIZON_DAYS),
            help="Label window (and horizon), in days.",
        ),
    ] = 273,
    models: Annotated[
        str, typer.Option("--models", help=f"Comma list of {', '.join(MODELS)}.")
    ] = DEFAULT_MODELS,
    test_fraction: Annotated[
        float,
        typer.Option(
            "--test-fraction",
            help="Share of customers held out for scoring (0: train on all, no scores).",
        ),
    ] = 0.2,
    snapshots: Annotated[
        int,
        typer.Option(
            "--snapshots",
            help="Also train the Transformer (alone and in the ensemble) on the training "
            "customers at this many earlier monthly cut-offs: for purchase rates that drift. "
            "Other models fit at the cut-off only.",
        ),
    ] = 0,
    artifacts: ArtifactsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit value models, score them on held-out customers, save each as an artifact."""
    names = _parse_models(models)
    fresh = {name: _make(name) for name in names}  # unknown names fail before any work
    if snapshots < 0:
        raise _fail(f"--snapshots must be >= 0, got {snapshots}")
    # every model is offered them (no short-circuit); at least one must take them
    if snapshots and not [name for name, m in fresh.items() if use_snapshots(m, snapshots)]:
        raise _fail(
            f"--snapshots applies to transformer and ensemble; --models has neither ({models})"
        )
    if not 0.0 <= test_fraction < 1.0:
        raise _fail(f"--test-fraction must be in [0, 1), got {test_fraction}")
    arts = _artifacts(db, artifacts)
    with _open_store(db) as store:
        try:
            if calibration_end is None:
                if problem := future_events(store):
                    _warn(problem)
                split = TemporalSplit.last_days(store, holdout_days)
            else:  # parsed here so that an error names the option as typed
                split = TemporalSplit(
                    to_timestamp(calibration_end, "--calibration-end"), holdout_days
                )
            data = value_data(store, split.calibration_end, split.holdout_days)
        except SplitError as exc:
            raise _fail(str(exc) + _short_log_hint(store, calibration_end, holdout_days)) from None
        held = holdout_customers(data.users, test_fraction, SPLIT_SALT)
        train, test = data.users[~held], data.users[held]
        if len(train) == 0:
            raise _fail("no customers left to train on: lower --test-fraction")
        holdout_purchases = split.holdout_purchases(store)
        now = log_end_or_none(store)
        if now is not None and split.holdout_end > now:
            _warn(
                f"the holdout window ends {split.holdout_end:%Y-%m-%d}, after the log's last day "
                f"({now - timedelta(days=1):%Y-%m-%d}): supervised models learn the spend of "
                f"{(split.holdout_end - now).days} days they cannot see as zero"
            )
        note = None
        if test_fraction == 0:
            note = "--test-fraction 0: models are trained on every customer and not scored"
        elif len(test) < 2:
            note = "fewer than 2 held-out customers: models are not scored"
        elif holdout_purchases == 0:
            note = "the holdout window has no purchases: models are not scored"
        truth = _truth(data, test) if note is None else None
        common = {
            "calibration_end": split.calibration_end,
            "holdout_days": split.holdout_days,
            "holdout_end": split.holdout_end,
            "holdout_complete": now is None or split.holdout_end <= now,
            "test_fraction": test_fraction,
            "split_salt": SPLIT_SALT,
            "snapshots": snapshots,
            "train_customers": len(train),
            "test_customers": len(test),
            "data_fingerprint": data_fingerprint(store),
            "db": str(db),
        }
        results: dict[str, dict[str, Any]] = {}
        fitted: dict[str, ValueModel] = {}
        with _progress() as bar:
            task = bar.add_task("fitting", total=len(names))
            for name, model in fresh.items():
                bar.update(task, description=f"{name}: fitting")
                members = [fitted[m] for m in ENSEMBLE_MEMBERS if m in fitted]
                if name == "ensemble" and len(members) == len(ENSEMBLE_MEMBERS):
                    # its members were fitted above on the same customers: combine, don't refit
                    model = EnsembleValueModel.from_fitted(members, data.subset(train))
                    prefit_s = sum(results[m]["fit_seconds"] for m in ENSEMBLE_MEMBERS)
                else:
                    prefit_s = None
                results[name] = _fit_one(
                    store,
                    arts,
                    name,
                    model,
                    split,
                    train,
                    test,
                    truth,
                    common,
                    lambda step, name=name: bar.update(task, description=f"{name}: {step}"),
                    prefit_s,
                )
                if not results[name].get("error"):
                    fitted[name] = model
                bar.advance(task)
    failed = [n for n, r in results.items() if r.get("error")]
    if as_json:
        summary = {**_jsonable(common), "artifacts": str(arts.root), "note": note}
        _print_json({**summary, "models": results})
    else:
        out.print(
            _metric_table(
                f"value models: calibration end {split.calibration_end:%Y-%m-%d}, holdout "
                f"{split.holdout_days} d, {len(train):,} train / {len(test):,} held-out customers",
                results,
            )
        )
        if note:
            out.print(note)
        out.print(f"artifacts: {arts.root}")
    for name in failed:
        say_error(f"{name}: {results[name]['error']}")
    if failed:
        raise typer.Exit(1)


def _short_log_hint(store: Store, calibration_end: str | None, holdout_days: int) -> str:
    """What to do when the default split (the last ``holdout_days`` held out) does not fit:
    a log shorter than the default 273-day holdout plus some calibration time."""
    if calibration_end is not None:
        return ""
    first, last = store.con.execute(
        "SELECT min(timestamp), max(timestamp) FROM events WHERE event_type = 'purchase'"
    ).fetchone()
    if first is None:
        return ""
    span = (last - first).days + 1
    if span > holdout_days:
        return ""
    return (
        f"; the purchases span {span} days, no more than the {holdout_days}-day holdout: "
        f"give a shorter --holdout-days (e.g. {max(1, span // 3)}) or a --calibration-end"
    )


def _jsonable(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with its times as the API writes them (the artifact metadata keeps its own)."""
    return {k: (utc_text(v) if isinstance(v, datetime) else v) for k, v in obj.items()}


def _fit_one(
    store: Store,
    arts: ArtifactStore,
    name: str,
    model: ValueModel,
    split: TemporalSplit,
    train: pd.Index,
    test: pd.Index,
    truth: pd.DataFrame | None,
    common: dict[str, Any],
    step: Callable[[str], object],
    prefit_seconds: float | None = None,
) -> dict[str, Any]:
    """Fit, score and save one model; a failure is returned, not raised, so others still run.

    ``prefit_seconds``: the model arrives fitted (an ensemble of members fitted in this run);
    its fit time is theirs.
    """
    started = time.perf_counter()
    result: dict[str, Any] = {"artifact": ARTIFACT_PREFIX + name, "version": None}
    try:
        if prefit_seconds is None:
            users = None if len(test) == 0 else list(train)
            model.fit(store, split.calibration_end, holdout_days=split.holdout_days, users=users)
            result["fit_seconds"] = time.perf_counter() - started
        else:
            result["fit_seconds"] = prefit_seconds
        report: ValueReport | None = None
        if truth is not None:
            step("scoring")
            pred = model.predict(
                list(test), split.holdout_days, store=store, as_of=split.calibration_end
            )
            report = evaluate_value(truth, pred)
        scores = report.to_dict() if report is not None else {"metrics": None, "deciles": None}
        result["metrics"] = scores["metrics"]
        result["deciles"] = scores["deciles"]
        step("saving")
        meta = {
            **common,
            "model": name,
            "fit_seconds": result["fit_seconds"],
            "metrics": scores["metrics"],
            "deciles": scores["deciles"],
        }
        result["version"] = arts.save(ARTIFACT_PREFIX + name, model, meta)
    except Exception as exc:  # one model's failure must not lose the others' work
        result.setdefault("fit_seconds", time.perf_counter() - started)
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


@value_app.command()
def predict(
    model: ModelOption = "lightgbm",
    horizon_days: HorizonOption = None,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Write every prediction to .csv or .parquet."),
    ] = None,
    as_of: AsOfOption = None,
    db: DbOption = default_db_path(),
    artifacts: ArtifactsOption = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help=f"Print the totals and the top {TOP_ROWS} customers by LTV (every column) as "
            "JSON; --out writes every customer.",
        ),
    ] = False,
) -> None:
    """Predict value for every customer with the current artifact of one model."""
    _check_out(out_path, "the predictions", "predictions.csv")
    arts = _artifacts(db, artifacts)
    with _open_store(db) as store:
        fitted, meta = _load(arts, model)
        model = model_name(model, ARTIFACT_PREFIX)  # as the API names it: BGNBD is bgnbd
        pred, when = _predict_all(store, fitted, as_of, horizon_days)
    horizon = horizon_days or fitted.horizon_days_
    top = pred.sort_values(["ltv", "user_id"], ascending=[False, True]).head(TOP_ROWS)
    if out_path is not None:
        _write_frame(pred, out_path)
    if as_json:
        _print_json(
            {
                "model": model,
                "version": meta["version"],
                "as_of": utc_text(when),
                "horizon_days": horizon,
                "customers": len(pred),
                "total_ltv": float(pred["ltv"].sum()),
                "total_pred_spend": float(pred["pred_spend"].sum()),
                "out": None if out_path is None else str(out_path),
                "top": top.to_dict(orient="records"),
            }
        )
        return
    if out_path is not None:
        out.print(f"{len(pred):,} customers -> {out_path}")
        return
    table = DataTable(
        title=f"{model} {meta['version']}: top {len(top)} of {len(pred):,} customers by LTV, "
        f"as of {when:%Y-%m-%d}, {horizon:g}-day horizon"
    )
    cols = ("user_id", "ltv", "pred_spend", "pred_transactions", "p_alive")
    for col in cols:
        table.add_column(col, justify="left" if col == "user_id" else "right")
    for row in top.itertuples(index=False):
        table.add_row(str(row.user_id), *(_fmt(getattr(row, c), digits=2) for c in cols[1:]))
    out.print(table)
    out.print(f"total predicted LTV: {pred['ltv'].sum():,.2f}")


@value_app.command()
def evaluate(
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma list; default: every model with an artifact."),
    ] = None,
    calibration_end: Annotated[
        str | None,
        typer.Option("--calibration-end", help="Score on this window; default: the fit's."),
    ] = None,
    holdout_days: Annotated[
        int | None,
        typer.Option(
            "--holdout-days", min=1, max=int(MAX_HORIZON_DAYS), help="Default: the fit's."
        ),
    ] = None,
    db: DbOption = default_db_path(),
    artifacts: ArtifactsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score saved artifacts: on their held-out customers, or on all for a later window."""
    arts = _artifacts(db, artifacts)
    try:  # checked once, before any model is loaded, and named as typed
        cut = (
            None if calibration_end is None else to_timestamp(calibration_end, "--calibration-end")
        )
    except SplitError as exc:
        raise _fail(str(exc)) from None
    require_store(db)
    if models is None:
        names = [n for n in MODELS if ARTIFACT_PREFIX + n in arts.names()]
        if not names:
            raise _fail(f"no value model artifacts in {arts.root}: run `valuerec value fit`")
    else:
        names = _parse_models(models)
    loaded = {name: _load(arts, name) for name in names}
    results: dict[str, dict[str, Any]] = {}
    cache: dict[tuple[datetime, int], ValueData] = {}
    with _open_store(db) as store, _progress() as bar:
        task = bar.add_task("scoring", total=len(names))
        for name, (model, meta) in loaded.items():
            bar.update(task, description=f"{name}: scoring")
            results[name] = _evaluate_one(store, model, meta, cut, holdout_days, cache)
            bar.advance(task)
    if as_json:
        _print_json({"artifacts": str(arts.root), "models": results})
    else:
        out.print(_metric_table("value models: evaluation", results))
        for name, r in results.items():
            out.print(
                f"{name} {r['version']}: {r['calibration_end'][:10]} + {r['holdout_days']} d, "
                f"{r['scope']}" + (f" ({r['customers']:,})" if r.get("customers") else "")
            )
        for name, r in results.items():
            if r.get("deciles"):
                out.print(_decile_table(f"{name}: spend by decile of prediction", r["deciles"]))


def _evaluate_one(
    store: Store,
    model: ValueModel,
    meta: dict[str, Any],
    calibration_end: datetime | None,
    holdout_days: int | None,
    cache: dict[tuple[datetime, int], ValueData],
) -> dict[str, Any]:
    """Score one artifact on customers and a window it did not learn from."""
    try:
        split = TemporalSplit(
            calibration_end if calibration_end is not None else meta["calibration_end"],
            holdout_days if holdout_days is not None else meta["holdout_days"],
        )
        key = (split.calibration_end, split.holdout_days)
        if key not in cache:
            cache[key] = value_data(store, split.calibration_end, split.holdout_days)
    except SplitError as exc:
        raise _fail(str(exc)) from None
    data = cache[key]
    result: dict[str, Any] = {
        "version": meta["version"],
        "calibration_end": utc_text(split.calibration_end),
        "holdout_days": split.holdout_days,
        "fit_seconds": meta.get("fit_seconds"),
        "metrics": None,
    }
    now = log_end_or_none(store)
    if now is not None and split.holdout_end > now:
        _warn(
            f"{meta['model']}: the holdout window ends {split.holdout_end:%Y-%m-%d}, after the "
            f"log's last day ({now - timedelta(days=1):%Y-%m-%d}): its last "
            f"{(split.holdout_end - now).days} days are unseen and score as no spend"
        )
    result["holdout_complete"] = now is None or split.holdout_end <= now
    if split.calibration_end >= to_timestamp(meta["holdout_end"]):
        users, result["scope"] = data.users, "all customers (window after the training labels)"
    else:
        held = holdout_customers(data.users, meta.get("test_fraction", 0.0), meta["split_salt"])
        users, result["scope"] = data.users[held], "held-out customers"
    if len(users) < 2 or split.holdout_purchases(store) == 0:
        result["scope"] += ": too few customers or no holdout purchases, not scored"
        return result
    pred = model.predict(list(users), split.holdout_days, store=store, as_of=split.calibration_end)
    report = evaluate_value(_truth(data, users), pred)
    result["customers"] = len(users)
    scores = report.to_dict()
    result["metrics"], result["deciles"] = scores["metrics"], scores["deciles"]
    return result


@value_app.command()
def segments(
    model: ModelOption = "lightgbm",
    segment: Annotated[
        str, typer.Option("--segment", help=f"Segment to export: {', '.join(SEGMENTS)}.")
    ] = "at-risk high value",
    top: Annotated[int, typer.Option("--top", help="Rows in the exported target list.")] = 100,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the target list to .csv or .parquet.")
    ] = None,
    as_of: AsOfOption = None,
    horizon_days: HorizonOption = None,
    db: DbOption = default_db_path(),
    artifacts: ArtifactsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Segment customers by behaviour and predicted value; export one segment's target list."""
    named = segment_name(segment)  # either spelling, as the API takes it
    if named is None:
        raise _fail(f"unknown segment {segment!r}: choose from {', '.join(SEGMENTS)}")
    segment = named
    if top < 1:
        raise _fail(f"--top must be at least 1, got {top}")
    _check_out(out_path, "the target list", "targets.csv")
    arts = _artifacts(db, artifacts)
    with _open_store(db) as store:
        fitted, meta = _load(arts, model)
        model = model_name(model, ARTIFACT_PREFIX)  # as the API names it: BGNBD is bgnbd
        pred, when = _predict_all(store, fitted, as_of, horizon_days)
        features = behaviour_features(store, when)
    seg = segment_users(pred, features, as_of=when)
    summary = segment_summary(seg)
    targets = target_list(seg, segment, top)
    if out_path is not None:
        _write_frame(targets, out_path)
    if as_json:
        _print_json(
            {
                "model": model,
                "version": meta["version"],
                "as_of": utc_text(when),
                "segments": summary.astype(object)
                .where(summary.notna(), None)
                .to_dict(orient="records"),
                "target_rows": len(targets),
                "out": str(out_path) if out_path else None,
            }
        )
        return
    table = DataTable(title=f"segments: {model} {meta['version']}, as of {when:%Y-%m-%d}")
    for col in ("segment", "users", "% users", "value", "% value", "days since", "freq"):
        table.add_column(
            col, justify="left" if col == "segment" else "right", no_wrap=col == "segment"
        )
    for r in summary.itertuples(index=False):
        table.add_row(
            r.segment,
            f"{r.users:,}",
            _fmt(r.share_users, pct=True),
            _fmt(r.predicted_value, digits=0),
            _fmt(r.share_value, pct=True),
            _fmt(r.median_recency_days, digits=0),
            _fmt(r.median_frequency, digits=1),
        )
    out.print(table)
    if out_path is not None:
        out.print(f"{segment}: {len(targets):,} customers -> {out_path}")
