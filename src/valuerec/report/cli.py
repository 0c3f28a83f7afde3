"""The ``valuerec report`` command: a thin wrapper over :func:`valuerec.report.write_report`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from valuerec.cli_common import fail, out, progress
from valuerec.data.store import default_db_path

__all__ = ["report"]


def report(
    db: Annotated[
        list[str] | None,
        typer.Option(
            "--db",
            # not envvar=: Click splits a list option's variable on spaces, and a path may
            # hold one; $VALUEREC_DB is read whole below, as every other command reads it
            help="Store (DuckDB file or postgresql:// URL); repeat to cover several stores "
            "in one report. "
            "Default: $VALUEREC_DB, else ./valuerec.duckdb (none with --policy-json alone).",
        ),
    ] = None,
    out_path: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path(
        "report.html"
    ),
    peer: Annotated[
        Path | None,
        typer.Option("--peer", help="RecBole figures (JSON from benchmarks/peers) to show beside."),
    ] = None,
    value_model: Annotated[
        str | None,
        typer.Option(
            "--value-model",
            help="Value model for the LTV distribution, calibration and segments; "
            "default: lightgbm if scored, else the best held-out Gini.",
        ),
    ] = None,
    rec_models: Annotated[
        str | None,
        typer.Option(
            "--rec-models", help="Recommenders to evaluate (comma list); default: popularity,ease."
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy-json",
            help="Policy experiment figures (benchmarks/value_policy.py --json, or valuerec "
            "policy evaluate --json) for a ranking-policy section; alone, no store is needed.",
        ),
    ] = None,
    title: Annotated[str, typer.Option("--title", help="Report title.")] = "valuerec report",
) -> None:
    """Write one self-contained HTML report (data, customer value, recommendations, and
    ranking policies with ``--policy-json``).

    Prints the path of the written file (only that, on stdout, so scripts can use it).
    """
    from valuerec.report.build import OutPathError, ReportError, ReportOptions, write_report

    env_db = os.environ.get("VALUEREC_DB")
    options = ReportOptions(
        title=title, value_model=value_model, rec_models=rec_models, peer=peer, policy=policy
    )
    with progress() as bar:
        task = bar.add_task("report", total=None)
        try:
            path = write_report(
                db or ([default_db_path()] if policy is None or env_db else []),
                out_path,
                options,
                step=lambda s: bar.update(task, description=s),
            )
        except OutPathError as exc:
            raise fail(f"--out: {exc}") from None
        except ReportError as exc:
            raise fail(str(exc)) from None
    out.print(str(path), highlight=False, soft_wrap=True)
