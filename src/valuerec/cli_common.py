"""What every ``valuerec`` command shares: consoles, common options, errors, progress bars.

One module so that the top-level CLI and its sub-apps (``valuerec value ...``) behave alike
without importing each other.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from valuerec.data.store import Store, StoreError, store_exists

out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="VALUEREC_DB",
        help="Store: a DuckDB file path or a postgresql:// URL.",
        show_default=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def warn(message: str) -> None:
    """A problem the command works around: said on stderr, so ``--json`` output stays clean."""
    err.print(f"[bold yellow]warning:[/] {message}", highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; raise the returned Exit to stop with ``code``."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@contextmanager
def open_store(db: str, *, must_exist: bool = False) -> Iterator[Store]:
    """The store at ``db``; ``must_exist``: a mistyped path is an error, not a new store."""
    if must_exist and not store_exists(db):
        raise fail(f"no store at {db}: ingest data first (valuerec ingest / valuerec load)")
    try:
        store = Store(db)
    except StoreError as exc:
        raise fail(str(exc)) from None
    try:
        yield store
    finally:
        store.close()


@contextmanager
def progress() -> Iterator[Progress]:
    """Transient rich progress bars on stderr (stdout stays clean for --json)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        yield bar


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
