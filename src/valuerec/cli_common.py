"""What every ``valuerec`` command shares: consoles, common options, errors, progress bars.

One module so that the top-level CLI and its sub-apps (``valuerec value ...``) behave alike
without importing each other.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from valuerec.data.store import Store, StoreError, redact, store_exists

# markup off: what the consoles print is mostly data (ids, event types, paths, titles), and
# "[/bold]" or "shop[v2].duckdb" in it must be shown as is, not parsed; styles are given as
# Text styles (heading, warn, say_error) instead
out = Console(markup=False)
err = Console(stderr=True, markup=False)

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


class DataTable(Table):
    """The table every command prints: a cell too wide for its column folds onto more lines
    instead of ending in "…".

    What the tables show is data: ids, paths and numbers that a cut (``SKU-AD534D61-F717-5…``,
    ``317.…``) makes impossible to read or copy. rich cuts by default whenever the table is
    wider than the console, which is every table of UUIDs at the 80 columns a pipe or a log
    file gets. Free text still wraps at its spaces; only a word longer than the column folds.
    """

    def add_column(self, *args: Any, overflow: Any = "fold", **kwargs: Any) -> None:
        """:meth:`rich.table.Table.add_column`, folding by default."""
        super().add_column(*args, overflow=overflow, **kwargs)


def utc_text(when: datetime | str | None) -> str | None:
    """A time as the API writes it: ISO 8601 in UTC ending in ``Z`` (None stays None).

    The store keeps naive UTC; the API's pydantic models carry aware UTC times, which it
    writes as ``...Z``. A naive ``isoformat()`` in the CLI's JSON read as local time to
    every parser, and a script comparing the CLI's ``as_of`` with the API's saw two strings
    for one instant. A string is an ISO time the store wrote (``Store.stats``).
    """
    if when is None:
        return None
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat() + "Z"


def heading(title: str) -> None:
    """A bold rule between the parts of a long command's output."""
    out.rule(Text(title, style="bold"))


def warn(message: str) -> None:
    """A problem the command works around: said on stderr, so ``--json`` output stays clean."""
    err.print(Text.assemble(("warning:", "bold yellow"), " ", message), highlight=False)


def say_error(message: str, label: str = "error:") -> None:
    """Print ``error: message`` on stderr and go on (a part failed, the rest may not)."""
    err.print(Text.assemble((label, "bold red"), " ", message), highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; raise the returned Exit to stop with ``code``."""
    say_error(message)
    return typer.Exit(code)


def require_store(
    db: str, then: str = "ingest data first (valuerec ingest / valuerec load)"
) -> bool:
    """A mistyped ``--db`` (a file or a database without valuerec's tables) is an error for
    commands that read, not a new empty store as opening would make; ``then``: what to do.
    Returns True (the store exists) so that a caller need not ask again: for a URL each
    question is a connection to the server."""
    if not store_exists(db):
        raise fail(f"no store at {redact(db)}: {then}")
    return True


@contextmanager
def open_store(db: str, *, must_exist: bool = False) -> Iterator[Store]:
    """The store at ``db``; ``must_exist``: a mistyped path is an error, not a new store.

    A store file this command created is removed again when the command fails with a clear
    error (a missing input file, an unknown data set) before storing anything: it would hold
    nothing, and the next command would take it for a store instead of saying there is none.
    What a run stored before failing or being killed is kept (ingest resumes from it).
    """
    created = not (require_store(db) if must_exist else store_exists(db))
    try:
        store = Store(db)
    except StoreError as exc:
        raise fail(str(exc)) from None
    failed = False
    try:
        yield store
    except typer.Exit:
        failed = True
        raise
    finally:
        if failed and created:
            store.discard()
        else:
            store.close()


@contextmanager
def progress() -> Iterator[Progress]:
    """Transient rich progress bars on stderr (stdout stays clean for --json); none when
    stderr is no terminal (a log file, a pipe), where rich's stop left a stray blank line."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        yield bar


def strict_json(obj: Any, indent: int = 2) -> str:
    """``obj`` as strict JSON text: a NaN or infinity (an undefined correlation, an interval
    of one seed) becomes null, as JSON has no token for it; Python's bare ``NaN`` made the
    output unreadable to strict parsers (JavaScript's ``JSON.parse``, jq). numpy values and
    times are converted as artifact metadata is (:func:`valuerec.artifacts._jsonable`). What
    every ``--json`` output and JSON file valuerec writes goes through."""
    from valuerec.artifacts import _jsonable  # imported here: ``valuerec --help`` stays fast

    return json.dumps(_jsonable(obj), indent=indent, allow_nan=False)


def print_json(obj: Any) -> None:
    """Print ``obj`` as :func:`strict_json`."""
    sys.stdout.write(strict_json(obj) + "\n")


def load_saved(arts: Any, key: str, expected: type, kind: str, fit: str) -> tuple[Any, dict]:
    """``(model, metadata)`` of artifact ``key``'s current version, or one ``error:`` line.

    A damaged or truncated pickle, or another kind of model in the folder, was a traceback
    (or an AttributeError deep in scoring). The message names the model, version and folder;
    ``fit`` (the command that saves one) is the advice only where nothing was ever saved: a
    broken pointer or version is mended by promoting another one.
    """
    from valuerec.artifacts import ArtifactError  # imported here: --help stays fast

    try:
        version = arts.current(key)
    except ArtifactError as exc:
        hint = f" (run `{fit}` first)" if key not in arts.names() else ""
        raise fail(f"{exc}{hint}") from None
    where = f"{key} {version} ({arts.root / key / version})"
    try:
        model, meta = arts.load(key, version)
    except Exception as exc:  # unpickling needs the model's code and its dependencies
        raise fail(f"cannot load {where}: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, expected):
        raise fail(f"{where} holds a {type(model).__name__}, not a {kind}")
    return model, meta
