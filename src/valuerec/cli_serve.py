"""``valuerec serve``, ``valuerec train`` and ``valuerec keys ...``: run the API and feed it.

``train`` fits every value and recommendation model through the same code as
``valuerec value fit`` and ``valuerec recommend fit`` and registers each as the current
artifact version; ``serve`` loads those versions and answers HTTP; ``keys`` manages the API
keys the server accepts (hashed, in ``<store>.keys.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from valuerec.cli_common import (
    DataTable,
    DbOption,
    JsonOption,
    fail,
    heading,
    open_store,
    out,
    print_json,
    require_store,
    say_error,
    warn,
)
from valuerec.cli_recommend import fit as rec_fit
from valuerec.cli_recommend import item_interactions
from valuerec.cli_value import fit as value_fit
from valuerec.data.store import Store, StoreError, default_db_path, is_url, redact
from valuerec.features.split import MAX_HORIZON_DAYS, SplitError, log_end
from valuerec.recommend.registry import MODELS as REC_MODELS
from valuerec.serve.config import CONFIG_ENV, ConfigError, ServeSettings, load_settings
from valuerec.serve.keys import KeyStore, default_keys_path
from valuerec.serve.repository import Repository
from valuerec.value.registry import MODELS as VALUE_MODELS

__all__ = ["keys_app", "serve", "train"]

keys_app = typer.Typer(
    help="API keys for `valuerec serve`: create, list, revoke.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", envvar=CONFIG_ENV, help="Serving settings (TOML or JSON)."),
]
KeysOption = Annotated[
    Path | None,
    typer.Option("--keys", help="API key file; default: the store path + '.keys.json'."),
]
#: longest value-model holdout train uses by default (CDNOW's 39 weeks)
MAX_HOLDOUT_DAYS = 273


def default_holdout_days(span_days: float) -> int:
    """``train``'s value holdout for a log spanning ``span_days`` (exposures aside): half of
    it, so that calibration is never the shorter period, at most :data:`MAX_HOLDOUT_DAYS`.
    The report's fallback fit uses it too."""
    return max(1, min(MAX_HOLDOUT_DAYS, int(span_days // 2)))


def _settings(config: Path | None) -> ServeSettings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _keys(db: str, keys: Path | None) -> KeyStore:
    try:
        return KeyStore(keys if keys is not None else default_keys_path(db))
    except ValueError as exc:
        raise fail(f"{exc} (--keys)") from None


def _names(spec: str, known: dict, what: str) -> list[str]:
    if spec.strip().lower() == "all":
        return list(known)
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise fail(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def _log_end_if_moved(store: Store, exposures: Sequence[str]) -> datetime | None:
    """The end of the log without the configured exposure types, if it differs from the end
    without the built-in ones (what ``value fit`` reads); else None.

    A server configured with ``exposure = ["impression"]`` writes impressions back stamped
    with today's date: ``value fit``'s default cut-off would count them as the end of the
    log and hold out months without a purchase.
    """
    try:
        end = log_end(store, exposures)
        return None if end == log_end(store) else end
    except SplitError:  # no events besides exposures: `value fit` says so
        return None


def serve(
    db: DbOption = default_db_path(),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    config: ConfigOption = None,
    keys: KeysOption = None,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Server processes on one port. More than 1 needs a PostgreSQL store: each "
            "keeps its own memory and follows the others' writes through the store's change "
            "feed (a DuckDB file admits one process).",
        ),
    ] = 1,
) -> None:
    """Serve the REST API with the current model versions of the store."""
    levels = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's
    if log_level.lower() not in levels:  # before loading any model, not a traceback after
        raise fail(f"--log-level must be one of {', '.join(levels)}, got {log_level!r}")
    log_level = log_level.lower()
    if workers > 1 and not is_url(db):
        raise fail(
            f"--workers {workers} needs a PostgreSQL store (--db postgresql://...): a DuckDB "
            "file admits one process"
        )
    require_store(db, "ingest data and run `valuerec train` first")
    settings = _settings(config)
    if workers > 1 and settings.sync_seconds == 0:
        raise fail(
            f"--workers {workers} needs sync_seconds > 0 in the settings: workers that do not "
            "follow each other's writes would answer from different data"
        )
    import uvicorn

    from valuerec.serve.app import WORKER_ENV, create_app

    key_store = _keys(db, keys)
    try:
        active = [k for k in key_store.list() if k.revoked_at is None]
    except ValueError as exc:  # a broken key file: say which, before loading anything
        raise fail(str(exc)) from None
    # the port before the models: a busy one is one line now, not uvicorn's error (exit
    # code 3) after minutes of loading and a "serving ... on" line that was never true
    with listening_socket(host, port) as sock:
        try:
            app = create_app(db, settings=settings, keys_path=key_store.path)
        except StoreError as exc:
            raise fail(str(exc)) from None
        if not active:
            warn(
                f"no API keys in {key_store.path}: every call but /health will be "
                "refused; create one with `valuerec keys create --role read`"
            )
        loaded = app.state.service.models.recommenders
        if not loaded:
            warn("no recommender artifacts: run `valuerec train` first")
        where = http_url(host, sock.getsockname()[1])  # port 0: the one the system gave
        out.print(
            f"serving {redact(db)} on {where} (docs: /docs); "
            f"recommenders: {', '.join(f'{n} {h.version}' for n, h in loaded.items()) or 'none'}",
            soft_wrap=True,
        )
        if workers == 1:
            _serve_one(app, sock, log_level, access_log)
            return
        # the check above loaded everything once (a broken store or model fails here, not in
        # N workers); each worker now builds its own app from the environment
        # (serve.app.worker_app)
        app.state.service.close()
        os.environ[WORKER_ENV] = json.dumps(
            {"db": db, "keys": str(key_store.path), "settings": settings.model_dump(mode="json")}
        )
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config(
            "valuerec.serve.app:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
        )
        out.print(f"{workers} worker processes on {where}", soft_wrap=True)
        Multiprocess(config, sockets=[sock]).run()


def http_url(host: str, port: int) -> str:
    """The URL ``serve`` is reached at on ``host``: an IPv6 address is bracketed
    (``http://[::]:8000``; ``http://:::8000`` is no URL), its zone's ``%`` written ``%25``
    (RFC 6874). uvicorn prints no "running on" line for a socket it is handed, so this line
    is the one that says where the server is."""
    if ":" in host:
        host = "[" + host.replace("%", "%25") + "]"
    return f"http://{host}:{port}"


def _serve_one(app: object, sock: socket.socket, log_level: str, access_log: bool) -> None:
    """Run ``app`` under uvicorn on the bound ``sock``: what ``uvicorn.run`` does (a failed
    start-up exits with uvicorn's code 3), but on a socket bound before the models loaded."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=access_log))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C: as uvicorn.run, no traceback
        server.run(sockets=[sock])
    if not server.started:
        raise typer.Exit(3)


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket ``serve`` listens on, bound before any model is loaded; ``--workers N``
    shares it with its worker processes. A port that is taken is one ``error:`` line.

    What ``uvicorn.run(..., workers=N)`` would bind, but created as a TCP socket by protocol
    number: uvicorn's (``socket.socket(family)``, protocol 0) made asyncio skip TCP_NODELAY
    on every accepted connection, and each response then waited out the client's delayed
    ACK: 2 workers answered 182 requests/s at 44 ms where 1 answered 2,900 at 2.8 ms.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = http_url(host, port).removeprefix("http://")  # [::]:8000, not :::8000
        raise fail(f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def train(
    db: DbOption = default_db_path(),
    value_models: Annotated[
        str,
        typer.Option("--value-models", help=f"'all' or a comma list of {', '.join(VALUE_MODELS)}."),
    ] = "all",
    rec_models: Annotated[
        str,
        typer.Option("--rec-models", help=f"'all' or a comma list of {', '.join(REC_MODELS)}."),
    ] = "all",
    holdout_days: Annotated[
        int | None,
        typer.Option(
            "--holdout-days",
            min=1,
            max=int(MAX_HORIZON_DAYS),
            help=f"Value label window; default: half the log, at most {MAX_HOLDOUT_DAYS}.",
        ),
    ] = None,
    test_fraction: Annotated[
        float,
        typer.Option("--test-fraction", help="Customers held out to score value models."),
    ] = 0.2,
    snapshots: Annotated[
        int,
        typer.Option(
            "--snapshots",
            min=0,
            help="The Transformer (alone and in the ensemble) also trains on this many earlier "
            "monthly cut-offs: for purchase rates that drift (as `valuerec value fit`).",
        ),
    ] = 0,
    config: ConfigOption = None,
) -> None:
    """Fit and register every value and recommendation model: what `valuerec serve` loads.

    Value models need purchase events (skipped otherwise). Recommenders learn from the event
    types the serving settings call positive, never from exposures. A model that fails is
    reported and the others still run (exit code 1 at the end).
    """
    if not 0.0 <= test_fraction < 1.0:  # before any fit: an option error stops everything
        raise fail(f"--test-fraction must be in [0, 1), got {test_fraction}")
    settings = _settings(config)
    value_names = _names(value_models, VALUE_MODELS, "value model") if value_models else []
    rec_names = _names(rec_models, REC_MODELS, "recommender") if rec_models else []
    exposures = settings.events.exposure
    with open_store(db, must_exist=True) as store:
        repo = Repository(store, exposures)
        types = repo.event_types()
        purchases = repo.count_events("purchase")
        span = repo.log_span_days()
        positive = settings.events.positive_types(types)
        with_items = item_interactions(store, positive) if positive else 0
        end = _log_end_if_moved(store, exposures) if purchases else None
    failed: list[str] = []
    if value_names and purchases == 0:
        out.print("no purchase events in the store: value models skipped")
    elif value_names:
        holdout = holdout_days if holdout_days is not None else default_holdout_days(span)
        heading(f"value models ({holdout}-day holdout)")
        # `value fit` knows only the built-in exposure type: when the configured ones move
        # the end of the log, give it the cut-off they imply (else its own default, which
        # also explains a log too short for the holdout)
        cut = None if end is None else (end - timedelta(days=holdout)).isoformat()
        try:
            value_fit(
                db=db,
                calibration_end=cut,
                holdout_days=holdout,
                models=",".join(value_names),
                test_fraction=test_fraction,
                snapshots=snapshots,
                artifacts=None,
                as_json=False,
            )
        except typer.Exit as exc:
            if exc.exit_code:
                failed.append("value models")
    if rec_names and not positive:
        out.print("no positive event types in the store: recommenders skipped")
    elif rec_names and not with_items:
        out.print(f"no {'/'.join(positive)} events with an item in the store: recommenders skipped")
    elif rec_names:
        heading(f"recommenders (events: {', '.join(positive)})")
        for name in rec_names:  # one at a time, so one failure does not lose the others
            try:
                rec_fit(db=db, models=name, as_json=False, event_types=",".join(positive))
            except typer.Exit as exc:
                if exc.exit_code:
                    failed.append(name)
            except Exception as exc:
                say_error(f"{name}: {type(exc).__name__}: {exc}")
                failed.append(name)
    if failed:
        say_error(", ".join(failed), label="failed:")
        raise typer.Exit(1)
    out.print(f"done: start the API with `valuerec serve --db {redact(db)}`")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option("--role", help="read, write or admin.")],
    name: Annotated[str, typer.Option("--name", help="A note: who or what uses it.")] = "",
    db: DbOption = default_db_path(),
    keys: KeysOption = None,
) -> None:
    """Create an API key, printed once alone on the last line (only its hash is kept)."""
    store = _keys(db, keys)
    try:
        key, record = store.create(role, name)
    except ValueError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"created {record.role} key {record.id} in {store.path}; it is shown only once:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    db: DbOption = default_db_path(), keys: KeysOption = None, as_json: JsonOption = False
) -> None:
    """Every key's id, role, note and dates (never the key)."""
    store = _keys(db, keys)
    try:
        records = store.list()
    except ValueError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json([{k: v for k, v in vars(r).items() if k != "hash"} for r in records])
        return
    table = DataTable(title=f"API keys ({store.path})")
    for col in ("id", "role", "name", "created", "revoked"):
        table.add_column(col)
    for r in records:
        table.add_row(r.id, r.role, r.name, r.created_at, r.revoked_at or "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `valuerec keys list`).")],
    db: DbOption = default_db_path(),
    keys: KeysOption = None,
) -> None:
    """Revoke a key: a running server refuses it from its next request on."""
    store = _keys(db, keys)
    try:
        record = store.revoke(key_id)
    except (KeyError, ValueError) as exc:  # an unknown id, a broken key file
        raise fail(str(exc.args[0])) from None
    typer.echo(f"revoked {record.role} key {record.id} at {record.revoked_at}")
