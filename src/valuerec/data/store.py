"""The store: one small class in front of the database that holds events, items and users.

DuckDB is the default backend because an embedded columnar file needs no server and runs the
feature SQL of later layers at laptop scale. ``Store("postgresql://user@host/db")`` (or
``$VALUEREC_DB`` set to such a URL) gives a :class:`valuerec.data.postgres.PostgresStore`
instead: a subclass with the same methods, so callers never ask which one they hold.

Callers use three kinds of access, and each backend implements all three:

* the read methods below and :meth:`Store.query` / ``store.con.execute`` for read-only
  analytic SQL in DuckDB's dialect (feature SQL, reports). On PostgreSQL these run in an
  in-process DuckDB copy of the tables that is refreshed when PostgreSQL says a table changed,
  so every analytic query gives the same answer on both backends;
* :meth:`Store.execute`, :meth:`Store.fetch` and :meth:`Store.fetch_frame` for *portable*
  SQL (``?`` placeholders, standard SQL both engines accept, e.g. ``INSERT ... ON CONFLICT``)
  that runs on the database itself: the serving layer's point reads and writes;
* the ingest hooks (:attr:`Store.compute`, :meth:`Store.append_staged`,
  :meth:`Store.append_quarantine`, :meth:`Store.ingest_lock`), through which
  :mod:`valuerec.data.ingest` validates in DuckDB and writes to either backend.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import pandas as pd

from valuerec.data.schema import (
    EVENTS,
    ITEMS,
    QUARANTINE_COLUMNS,
    TABLES,
    USERS,
    Table,
    event_type_list,
    id_list,
)

DEFAULT_DB = "valuerec.duckdb"
URL_SCHEMES = ("postgresql://", "postgres://")

#: Tables :meth:`Store.count` accepts (the name is put into SQL, so it must be one of these).
COUNTABLE = frozenset({*TABLES, "quarantine", "ingest_runs"})


def default_db_path() -> str:
    """The store used when no ``--db`` is given: ``$VALUEREC_DB`` or ``./valuerec.duckdb``."""
    return os.environ.get("VALUEREC_DB") or DEFAULT_DB


def is_url(db: str | os.PathLike[str]) -> bool:
    """Whether ``db`` is a URL (``scheme://...``) rather than a file path.

    Any scheme counts, so that ``postgresql+psycopg://`` or ``POSTGRESQL://`` is refused
    (:func:`check_url`) instead of becoming a DuckDB file under a folder named after the
    URL, password and all.
    """
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(db)) is not None


def check_url(db: str) -> None:
    """A URL this package can open (PostgreSQL's), or a StoreError saying what to write."""
    if not db.startswith(URL_SCHEMES):
        scheme = db.split("://", 1)[0]
        raise StoreError(
            f"cannot open store {redact(db)}: {scheme}:// is no store URL here; a PostgreSQL "
            "database is postgresql://user@host/dbname, anything else a DuckDB file path"
        )


def redact(db: str | os.PathLike[str]) -> str:
    """``db`` safe to print: a URL's password replaced by ``***``."""
    text = str(db)
    if not is_url(text):
        return text
    text = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?]*):[^@/?]*@", r"\1:***@", text)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", text)


def store_exists(db: str | os.PathLike[str]) -> bool:
    """Whether ``db`` already holds a store.

    A URL is asked: a database (or search-path schema) without valuerec's tables holds none,
    so a mistyped ``--db`` naming another application's database is "no store" rather than a
    place to create tables in. A server that cannot be reached is taken to hold one: opening
    it then says why it cannot be reached.
    """
    text = str(db)
    if is_url(text):
        if not text.startswith(URL_SCHEMES):
            return True  # opening it says what is wrong with it (check_url)
        from valuerec.data.postgres import holds_store

        return holds_store(text)
    return text == ":memory:" or Path(text).exists()


def deployment_path(db: str | os.PathLike[str]) -> str:
    """The local path beside which a store's model artifacts and API keys live.

    A DuckDB store's own path; for a PostgreSQL URL, ``$VALUEREC_HOME`` (default: the working
    directory) joined with ``DBNAME@HOST`` (``DBNAME@HOST_PORT`` on a port other than 5432;
    plus ``.SCHEMA`` when the URL sets a search path), since a database on a server has no
    folder to sit beside, yet a deployment still needs one place for its files. The port is
    part of the name because two servers on one host are two deployments: without it they
    shared one model folder and one keys file. The schema is the search path's first, named
    as PostgreSQL resolves it, so that one schema is one deployment however it is spelt: an
    unquoted name folded to lower case (``Shop`` and ``shop``), ``$user`` as the connecting
    user's name, a quoted name unquoted with its case kept (``"shop"`` is ``shop``, ``"Shop"``
    another schema). Its characters other than letters, digits and ``_.-`` are written
    ``@XX`` (the UTF-8 bytes in hex, ``@`` itself too), so that different schemas never share
    a name (``"Shop Data"`` is ``Shop@20Data``, ``"Shop_Data"`` stays ``Shop_Data``).
    """
    text = str(db)
    if not is_url(text):
        return text
    parts = urlsplit(text)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = parts.hostname or query.get("host", "local")
    try:
        port = parts.port
    except ValueError:  # not a number: libpq will refuse the URL, the name need not
        port = None
    # libpq's own order: the URL's port, then the query's, then $PGPORT
    port = str(port or query.get("port") or os.environ.get("PGPORT") or 5432)
    database = parts.path.lstrip("/") or query.get("dbname", "postgres")
    # the first schema of the search path is the store's: a quoted name (spaces, commas and
    # case kept), or an unquoted one up to a space or comma
    found = re.search(r'search_path\s*=\s*("(?:[^"]|"")+"|[^\s,]+)', query.get("options", ""))
    spelt = found.group(1) if found else None
    schema = old_schema = spelt
    if spelt is not None and spelt.startswith('"'):
        schema = spelt[1:-1].replace('""', '"')  # the name PostgreSQL reads: case kept
    elif spelt is not None:
        # $user is the schema named as the user who connects, so one per user; an unquoted
        # name is folded to lower case by PostgreSQL
        user = parts.username or query.get("user") or os.environ.get("PGUSER") or _os_user()
        schema = old_schema = spelt.lower().replace("$user", user)  # the user name as it is
    home = Path(os.environ.get("VALUEREC_HOME") or ".")
    hosts = [host] if port == "5432" else [f"{host}_{port}", host]
    new = _deployment_base(home, database, hosts[0], schema and _schema_token(schema))
    if _has_files(new):
        return str(new)
    # earlier names of this deployment's files: before the port was part of the name, and
    # (old_schema, spelt) before schemas were unquoted, case-folded and escaped, when
    # characters outside [A-Za-z0-9_.@-] became "_" and a trailing "_" was dropped
    earlier: dict[Path, bool] = {}
    for h in hosts:
        # this naming without the port: the same schema's (a quoted "shop" is shop's too)
        earlier[_deployment_base(home, database, h, schema and _schema_token(schema))] = True
        for old in dict.fromkeys([old_schema, spelt]):
            ours = old is None or _old_name_is_only(old, schema)
            path = _deployment_base(home, database, h, old and _old_schema_token(old))
            earlier[path] = earlier.get(path, True) and ours
    for old, ours in earlier.items():
        if old == new or not _has_files(old):
            continue
        if not ours:
            # another schema's deployment may own these files: using them would share its
            # keys and models; say so, since this deployment's own keys may be among them
            warnings.warn(
                f"not using {old}.models / .keys.json: named the old way, which other schemas "
                f"than {schema!r} could also have produced; if they are this deployment's, "
                f"rename them to {new.name}.models / .keys.json",
                stacklevel=2,
            )
            continue
        # keep its keys and models working, and say how to name them
        warnings.warn(
            f"using {old}.models / .keys.json, named without the port {port} or the "
            f"schema as PostgreSQL names it; rename them to {new.name}.models / "
            ".keys.json (another server on this host, or another spelling of the schema, "
            "would not find them)",
            stacklevel=2,
        )
        return str(old)
    return str(new)


#: the characters a deployment's file name keeps as they are
_SAFE = re.compile(r"[A-Za-z0-9_.@-]")


def _deployment_base(home: Path, database: str, host: str, schema: str | None) -> Path:
    """``home/DBNAME@HOST[.SCHEMA]``, ``schema`` already a token (:func:`_schema_token`).

    The database and host are named as before schemas were escaped (runs of other characters
    as "_", none at the ends), so that the names of existing deployments stay the same.
    """
    base = re.sub(r"[^A-Za-z0-9_.@-]+", "_", f"{database}@{host}").lstrip("_")
    return home / (f"{base}.{schema}" if schema else base.rstrip("_"))


def _schema_token(schema: str) -> str:
    """A schema's name as a file name: one token per name, no two names alike.

    Characters outside ``[A-Za-z0-9_.-]`` (and ``@``, the escape) become ``@XX`` per UTF-8
    byte, like a URL's percent-escapes: a plain name (``shop_a``) is unchanged.
    """
    return "".join(
        c if c != "@" and _SAFE.fullmatch(c) else "".join(f"@{b:02X}" for b in c.encode())
        for c in schema
    )


def _old_schema_token(spelt: str) -> str:
    """A schema's part of a deployment name as it was named before :func:`_schema_token`:
    runs of unsafe characters (quotes included) as "_", a trailing "_" dropped."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", spelt).rstrip("_")


def _old_name_is_only(old: str, schema: str) -> bool:
    """Whether the old-style name of ``old`` (a spelling of ``schema``) names ``schema`` only.

    Not when the old naming changed anything in it (a quote, a space, a trailing "_"...):
    other names gave the same text ("Shop Data", "Shop,Data" and "Shop_Data" all gave
    ``_Shop_Data``). Not when it is the new name of another schema (``Shop_B``, an unquoted
    spelling before folding, is now the quoted ``"Shop_B"``'s name).
    """
    token = _old_schema_token(old)
    if token != old:
        return False
    unescaped = re.sub(r"@([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), token)
    try:
        other = unescaped.encode("latin-1").decode()
    except UnicodeError:  # not a byte sequence escaped by _schema_token: no schema's name
        return True
    return other == schema or _schema_token(other) != token


def _os_user() -> str:
    """libpq's default user name: the operating system's."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return str(os.getuid())


#: what a deployment keeps beside its store path (``artifacts.default_root``,
#: ``serve.keys.default_keys_path``)
MODELS_SUFFIX = ".models"
KEYS_SUFFIX = ".keys.json"


def _has_files(base: Path) -> bool:
    """Whether a deployment's model folder or keys file exists at ``base``."""
    return any(Path(f"{base}{suffix}").exists() for suffix in (MODELS_SUFFIX, KEYS_SUFFIX))


def _ddl(t: Table) -> str:
    cols = [f"{f.name} {f.sql_type}" + (" NOT NULL" if f.required else "") for f in t.fields]
    if t is EVENTS:
        # Index of the event among identical events of one source (0 for the first): part of
        # an id-less event's identity, so genuine repeats survive deduplication. No PRIMARY
        # KEY or index: DuckDB's ART index slows bulk appends several fold, and ingest
        # anti-joins new rows against the table in one pass instead.
        cols.append("occurrence INTEGER NOT NULL DEFAULT 0")
    else:
        cols[0] += " PRIMARY KEY"
        cols.append("updated_at TIMESTAMP")
    return f"CREATE TABLE IF NOT EXISTS {t.name} ({', '.join(cols)})"


#: ``ingest_runs``: one row per ingest, written with its last batch.
INGEST_RUNS_COLUMNS = (
    ("run_id", "BIGINT PRIMARY KEY"),
    ("kind", "VARCHAR"),
    ("source", "VARCHAR"),
    ("started_at", "TIMESTAMP"),
    ("finished_at", "TIMESTAMP"),
    ("rows_read", "BIGINT"),
    ("stored", "BIGINT"),
    ("duplicates", "BIGINT"),
    ("quarantined", "BIGINT"),
)


def staged_columns(t: Table) -> list[str]:
    """The columns ingest hands to :meth:`Store.append_staged` for table ``t``, in order."""
    return [*t.names, "occurrence" if t is EVENTS else "updated_at"]


def merge_properties(stored: str, new: str) -> str:
    """DuckDB SQL for an entity's ``properties`` after an upsert brings ``new`` over ``stored``.

    Top-level keys merge: a key of ``new`` replaces that key's whole value (a nested object
    is not merged into the stored one) or adds it, a key set to null removes it, keys ``new``
    does not name are kept; no ``new`` object keeps ``stored`` as it is. PostgreSQL applies
    the same rule (:meth:`PostgresStore.append_staged`).

    json_merge_patch alone would merge nested objects recursively (RFC 7396), so the keys of
    ``new`` are first removed from ``stored`` (a patch setting each to null).
    """
    cleared = (
        f"to_json(map_from_entries(list_transform(json_keys({new}), "
        "lambda k: (k, CAST(NULL AS JSON)))))"
    )
    return (
        f"CASE WHEN {new} IS NULL THEN {stored} WHEN {stored} IS NULL THEN {new} "
        f"ELSE CAST(json_merge_patch(json_merge_patch({stored}, {cleared}), {new}) AS JSON) END"
    )


def updated_columns(t: Table, supplied: Collection[str] | None) -> list[str]:
    """The columns of ``t`` (but its key) an upsert overwrites: those the source supplied.

    ``supplied`` None means every column. ``properties`` is not among them: it is merged
    (:func:`merge_properties`), never overwritten.
    """
    return [
        c for c in t.names if c not in (t.key, "properties") and (supplied is None or c in supplied)
    ]


class Store:
    """A valuerec database: the canonical tables, the quarantine and the ingest log.

    ``Store(path)`` opens (or creates) a DuckDB file; ``Store("postgresql://...")`` returns a
    :class:`~valuerec.data.postgres.PostgresStore`, a subclass with the same methods.

    >>> store = Store(":memory:")
    >>> store.count("events")
    0
    """

    #: whether ingest's DuckDB staging runs on the store's own connection (and can therefore
    #: anti-join against the stored tables in place)
    local: bool = True

    def __new__(
        cls, path: str | os.PathLike[str] | None = None, *, read_only: bool = False
    ) -> Store:
        target = str(path) if path is not None else default_db_path()
        if cls is Store and is_url(target):
            check_url(target)
            from valuerec.data.postgres import PostgresStore

            return super().__new__(PostgresStore)
        return super().__new__(cls)

    def __init__(self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False):
        self.path = str(path) if path is not None else default_db_path()
        self.read_only = read_only
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                _check_duckdb_file(Path(self.path))
            self.con = duckdb.connect(self.path, read_only=read_only)
        except StoreError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        except (duckdb.Error, OSError) as exc:
            # OSError: the folder cannot be made (a file is in the way, no permission)
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        # Timestamps are stored as naive UTC; pin the session zone so text with an offset
        # and epoch seconds convert the same way on every machine.
        self.con.execute("SET TimeZone = 'UTC'")
        if not read_only:
            self._create_schema()

    # -- lifecycle ---------------------------------------------------------------------------
    def _create_schema(self) -> None:
        for t in TABLES.values():
            self.con.execute(_ddl(t))
        cols = ", ".join(f"{name} {typ}" for name, typ in QUARANTINE_COLUMNS)
        self.con.execute(f"CREATE TABLE IF NOT EXISTS quarantine ({cols})")
        cols = ", ".join(f"{name} {typ}" for name, typ in INGEST_RUNS_COLUMNS)
        self.con.execute(f"CREATE TABLE IF NOT EXISTS ingest_runs ({cols})")

    def ensure_table(
        self, name: str, columns: Sequence[tuple[str, str]], key: str, feed: bool = False
    ) -> None:
        """Create a table of the caller's own (e.g. the API's item flags) if it is missing.

        ``columns`` are ``(name, type)`` in DuckDB spelling (VARCHAR, DOUBLE, TIMESTAMP,
        BOOLEAN, ... optionally ``NOT NULL``); ``key`` is the primary key column. Going
        through the store lets each backend map the types and watch the table for changes;
        ``feed``: a shared (PostgreSQL) store also records each changed ``key`` in its change
        feed, for the other processes that keep it in memory (a DuckDB file has one process).
        """
        cols = ", ".join(f"{c} {typ}" + (" PRIMARY KEY" if c == key else "") for c, typ in columns)
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")

    def close(self) -> None:
        self.con.close()

    def discard(self) -> None:
        """Close and remove this store if it holds nothing (no row in any table).

        For a command that created the store and then failed before storing anything: left
        behind, the empty store would be taken for one by the next command instead of its
        saying there is none. A store holding anything is only closed.
        """
        empty = self.path != ":memory:" and all(self.count(t) == 0 for t in COUNTABLE)
        self.close()
        if empty:
            for leftover in (Path(self.path), Path(f"{self.path}.wal")):
                leftover.unlink(missing_ok=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.path)!r})"

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """Run a block atomically: everything in it commits together or not at all."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- portable SQL on the database itself --------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Run one portable statement (``?`` placeholders); returns the rows it changed.

        Portable: SQL that DuckDB and PostgreSQL both accept, so the serving layer's writes
        run unchanged on either backend. -1 when the statement changes no rows by nature.
        """
        cur = self.con.execute(sql, params or [])
        if cur.description and cur.description[0][0] == "Count":
            row = cur.fetchone()
            return int(row[0]) if row else 0
        return -1

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of one portable query, run on the database itself (point reads, pages)."""
        return self.con.execute(sql, params or []).fetchall()

    def fetch_frame(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """:meth:`fetch` as a DataFrame."""
        return self.con.execute(sql, params or []).df()

    # -- ingest hooks ------------------------------------------------------------------------
    @property
    def compute(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection where ingest reads, validates and dedupes (its temp tables)."""
        return self.con

    def ingest_lock(self) -> AbstractContextManager[object]:
        """Held while an ingest decides its run id and writes (one writer per DuckDB file)."""
        return nullcontext()

    def append_staged(
        self,
        t: Table,
        con: duckdb.DuckDBPyConnection,
        select: str,
        supplied: Collection[str] | None = None,
    ) -> int:
        """Store the rows of ``select`` (on ``con``; columns :func:`staged_columns`).

        Ingest has already dropped the rows this store holds; events are appended. Items and
        users are upserted by id: a stored row keeps every field the source did not supply
        (``supplied``: the fields it did; None: all of them) and its ``properties`` are
        merged with the new ones (:func:`merge_properties`), so a file with fewer columns
        never wipes what an earlier one stored. Returns the rows written.
        """
        cols = ", ".join(staged_columns(t))
        if t is EVENTS:
            (n,) = con.execute(f"INSERT INTO events ({cols}) {select}").fetchone()
            return int(n)
        sets = [f"{c} = excluded.{c}" for c in updated_columns(t, supplied)]
        sets.append(
            f"properties = {merge_properties(f'{t.name}.properties', 'excluded.properties')}"
        )
        sets.append("updated_at = excluded.updated_at")
        (n,) = con.execute(
            f"INSERT INTO {t.name} ({cols}) {select} "
            f"ON CONFLICT ({t.key}) DO UPDATE SET {', '.join(sets)}"
        ).fetchone()
        return int(n)

    def append_quarantine(self, con: duckdb.DuckDBPyConnection, select: str) -> int:
        """Store quarantine rows (``select`` on ``con`` yields every quarantine column)."""
        (n,) = con.execute(f"INSERT INTO quarantine {select}").fetchone()
        return int(n)

    # -- reads -------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run read-only SQL (DuckDB's dialect) against the store and return a DataFrame."""
        return self.con.execute(sql, params or []).df()

    def count(self, table: str) -> int:
        if table not in COUNTABLE:
            raise ValueError(f"unknown table {table!r}")
        return int(self.fetch(f"SELECT count(*) FROM {table}")[0][0])

    def events(
        self,
        user_ids: Sequence[str] | None = None,
        *,
        event_types: Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> pd.DataFrame:
        """Events in canonical columns, ordered by user and time; ``until`` is exclusive.

        ``occurrence`` numbers identical events from one source (0 for the first).
        """
        where, params = [], []
        if user_ids is not None:
            where.append("user_id IN (SELECT unnest(?::VARCHAR[]))")
            params.append(id_list(user_ids, "user_ids"))
        if event_types is not None:
            where.append("event_type IN (SELECT unnest(?::VARCHAR[]))")
            params.append(event_type_list(event_types))
        # Stored timestamps are naive UTC: a bound with an offset ("...+02:00", an aware
        # datetime) is converted to UTC, as ingest does, rather than having it dropped; a
        # naive one is UTC already (the session zone is UTC).
        if since is not None:
            where.append("timestamp >= CAST(CAST(? AS TIMESTAMPTZ) AS TIMESTAMP)")
            params.append(since)
        if until is not None:
            where.append("timestamp < CAST(CAST(? AS TIMESTAMPTZ) AS TIMESTAMP)")
            params.append(until)
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        cols = ", ".join([*EVENTS.names, "occurrence"])
        return self.query(
            f"SELECT {cols} FROM events {cond} ORDER BY user_id, timestamp, occurrence", params
        )

    def items(self) -> pd.DataFrame:
        return self.query(f"SELECT {', '.join(ITEMS.names)} FROM items ORDER BY item_id")

    def users(self) -> pd.DataFrame:
        return self.query(f"SELECT {', '.join(USERS.names)} FROM users ORDER BY user_id")

    def quarantine(self, limit: int | None = None) -> pd.DataFrame:
        """Rows that failed validation, oldest first, with source, line, field and reason.

        Raises:
            ValueError: ``limit`` is negative.
        """
        if limit is not None and int(limit) < 0:
            raise ValueError(f"limit must be 0 or more, got {limit}")
        lim = f"LIMIT {int(limit)}" if limit is not None else ""
        return self.query(
            "SELECT run_id, kind, source, line, row, field, reason, raw, quarantined_at "
            f"FROM quarantine ORDER BY run_id, row {lim}"
        )

    def event_type_counts(self, *, with_item: bool = False) -> dict[str, int]:
        """Events per type, most frequent first (ties by name); ``with_item``: only events
        with an item (what recommenders can learn from). For ``stats`` and for the errors
        that tell a user which types a store holds."""
        where = " WHERE item_id IS NOT NULL" if with_item else ""
        rows = self.con.execute(
            f"SELECT event_type, count(*) FROM events{where} GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
        return {t: int(n) for t, n in rows}

    def stats(self) -> dict[str, Any]:
        """Counts, date range and events by type: what ``valuerec stats`` prints."""
        c = self.con
        n_events, n_users_ev, n_items_ev, first, last = c.execute(
            "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), "
            "min(timestamp), max(timestamp) FROM events"
        ).fetchone()
        by_type = self.event_type_counts()
        spend = c.execute("SELECT coalesce(sum(value), 0) FROM events").fetchone()[0]
        return {
            "db": redact(self.path),
            "events": int(n_events),
            "users_with_events": int(n_users_ev),
            "items_with_events": int(n_items_ev),
            "users": self.count("users"),
            "items": self.count("items"),
            "first_event": first.isoformat() if first else None,
            "last_event": last.isoformat() if last else None,
            "events_by_type": by_type,
            "total_value": float(spend),
            "quarantined": self.count("quarantine"),
            "ingest_runs": self.count("ingest_runs"),
        }


class StoreError(RuntimeError):
    """The store could not be opened or used (locked by another process, corrupt, ...)."""


#: where every DuckDB database file says what it is (after an 8-byte checksum)
_DUCKDB_MAGIC, _DUCKDB_MAGIC_AT = b"DUCK", 8


def _check_duckdb_file(path: Path) -> None:
    """Refuse an existing file that is not a DuckDB database.

    DuckDB would open, say, a CSV file as a temporary in-memory database, so everything
    written to the "store" would silently vanish on close. An empty file is left to DuckDB
    (which refuses it with its own message).

    Raises:
        StoreError: ``path`` is a file of another kind.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as fh:
        head = fh.read(_DUCKDB_MAGIC_AT + len(_DUCKDB_MAGIC))
    if head[_DUCKDB_MAGIC_AT:] != _DUCKDB_MAGIC:
        raise StoreError("not a DuckDB store (the file exists and holds something else)")
