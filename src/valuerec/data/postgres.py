"""The PostgreSQL backend of :class:`~valuerec.data.store.Store`.

``Store("postgresql://user@host:5432/db")`` returns a :class:`PostgresStore`: the canonical
tables, the quarantine and the ingest log live in PostgreSQL, the source of truth that many
processes (API workers, trainers, other tools) can share. Three kinds of access, as in
:mod:`valuerec.data.store`:

* **portable SQL** (:meth:`PostgresStore.execute` / ``fetch`` / ``fetch_frame``) runs on the
  server: ``?`` placeholders become psycopg's ``%s``, the SQL itself is the standard subset
  DuckDB accepts too. This is the serving layer's path (point reads and writes by index).
* **ingest** validates and dedupes inside the file in an in-process DuckDB, exactly as for a
  DuckDB store, then streams each batch to a temporary PostgreSQL table with ``COPY`` and
  inserts what the server does not hold yet (``INSERT ... SELECT ... WHERE NOT EXISTS``; items
  and users ``ON CONFLICT ... DO UPDATE``), so identity is decided against the stored rows
  without pulling them to the client, and each batch commits atomically.
* **analytic SQL** (:meth:`Store.query`, ``store.con.execute``, the read methods) is DuckDB's
  dialect (lists, ``QUALIFY``, ``arg_max`` ...) used throughout the feature code. It runs in
  an in-process DuckDB *mirror* of the tables it names, copied from PostgreSQL with ``COPY``
  in one snapshot. A statement-level trigger bumps a per-table version in
  ``valuerec_versions`` on every write from any client, and the mirror re-copies a table only
  when its version moved: one indexed read per query when nothing changed. Every analytic
  query therefore gives the same answer on both backends, by construction.

Several processes share one PostgreSQL store, so each server must learn what the others (and
``valuerec ingest``) wrote. Statement-level triggers with transition tables keep a *change
feed*, ``valuerec_changes``: one row per user (events) or item (items, and tables created with
``ensure_table(..., feed=True)``) a statement touched, stamped with its transaction id, which
:meth:`PostgresStore.changes` reads by snapshot (see there; ``serve/follow.py`` applies it).

Text columns use the "C" collation so that ``ORDER BY`` and cursor paging (``id > ?``) agree
with DuckDB's byte order whatever the server's default locale is.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import psycopg
from psycopg.types.string import TextLoader

from valuerec.data.schema import EVENTS, QUARANTINE_COLUMNS, TABLES, Table
from valuerec.data.store import (
    COUNTABLE,
    INGEST_RUNS_COLUMNS,
    Store,
    StoreError,
    default_db_path,
    redact,
    staged_columns,
    updated_columns,
)

__all__ = ["PostgresStore"]

VERSIONS = "valuerec_versions"
#: advisory lock keys (with the schema's hash as second key, so stores in different schemas
#: of one database do not wait for each other): ingests (run ids, dedupe) and schema creation
INGEST_LOCK, SCHEMA_LOCK = 0x7672, 0x7673  # "vr", "vs"
_LOCK_ARGS = "%s, hashtext(current_schema())"
_WATCHED = (*TABLES, "quarantine", "ingest_runs")
CHANGES = "valuerec_changes"
#: tables whose changes the feed records: (key column, its ``kinds`` expression over the rows)
_FEED = {
    "events": ("user_id", "array_agg(DISTINCT event_type ORDER BY event_type)"),
    "items": ("item_id", "NULL::VARCHAR[]"),
}
#: a statement touching more keys (users, items) than this is recorded as one row meaning
#: "all of them" (a bulk ingest: the reader reloads rather than reading 100k keys one by one)
FEED_KEYS_MAX = 10_000
#: feed rows older than this are pruned by any ingest (followers prune sooner, by position:
#: ``serve/follow.py``), so a store no server follows does not keep them for ever
FEED_KEEP_SECONDS = 86_400.0
_CONTENT = ("user_id", "item_id", "event_type", "timestamp", "value", "quantity", "rating")

# PostgreSQL types (information_schema.columns.data_type) -> DuckDB types, for the mirror
_TO_DUCK = {
    "character varying": "VARCHAR",
    "text": "VARCHAR",
    "character": "VARCHAR",
    "double precision": "DOUBLE",
    "real": "FLOAT",
    "numeric": "DOUBLE",
    "bigint": "BIGINT",
    "integer": "INTEGER",
    "smallint": "SMALLINT",
    "boolean": "BOOLEAN",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
    "date": "DATE",
    "json": "JSON",
    "jsonb": "JSON",
    "uuid": "UUID",
}


def pg_type(duck_type: str) -> str:
    """A column type in DuckDB spelling (as the schema writes it) in PostgreSQL's.

    VARCHAR gets the "C" collation (byte order, as DuckDB sorts), DOUBLE becomes DOUBLE
    PRECISION; constraints after the type (``NOT NULL``, ``PRIMARY KEY``) are kept.
    """
    head, _, rest = duck_type.strip().partition(" ")
    mapped = {"VARCHAR": 'VARCHAR COLLATE "C"', "DOUBLE": "DOUBLE PRECISION"}.get(
        head.upper(), head
    )
    return f"{mapped} {rest}".strip()


def _pg_ddl(t: Table) -> str:
    cols = [
        f"{f.name} {pg_type(f.sql_type)}" + (" NOT NULL" if f.required else "") for f in t.fields
    ]
    if t is EVENTS:
        cols.append("occurrence INTEGER NOT NULL DEFAULT 0")
    else:
        cols[0] += " PRIMARY KEY"
        cols.append("updated_at TIMESTAMP")
    return f"CREATE TABLE IF NOT EXISTS {t.name} ({', '.join(cols)})"


def to_pg_sql(sql: str) -> str:
    """Portable SQL with ``?`` placeholders as psycopg wants it (``%s``, literal ``%%``).

    Placeholders inside quoted strings or identifiers are left alone.
    """
    out: list[str] = []
    for part in re.split(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")", sql):
        if part[:1] in ("'", '"'):
            out.append(part.replace("%", "%%"))
        else:
            out.append(part.replace("%", "%%").replace("?", "%s"))
    return "".join(out)


@contextmanager
def _csv_file() -> Iterator[Path]:
    """A path for one CSV hand-over between the engines, removed (with its folder) after use.

    One folder per transfer rather than per store, so a store that is never closed, or a
    process that is killed, leaves at most one file behind.
    """
    with tempfile.TemporaryDirectory(prefix="valuerec-pg-") as folder:
        yield Path(folder) / "rows.csv"


def _quote(path: Path) -> str:
    """``path`` as a DuckDB string literal."""
    return "'" + str(path).replace("'", "''") + "'"


_TRIGGER_FN = f"""CREATE OR REPLACE FUNCTION valuerec_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('UPDATE %I.{VERSIONS} SET version = version + 1 WHERE table_name = %L',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME);
    RETURN NULL;
END $$"""


# The change feed (module doc). TG_ARGV: the key column and the ``kinds`` expression. A
# statement with no row records nothing; TRUNCATE (no transition table) records "all".
_FEED_FN = f"""CREATE OR REPLACE FUNCTION valuerec_feed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rows text := CASE TG_OP WHEN 'INSERT' THEN 'new_rows' WHEN 'DELETE' THEN 'old_rows'
                 ELSE '(SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows)' END;
    n bigint := {FEED_KEYS_MAX} + 1;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('INSERT INTO %I.{CHANGES} (table_name, op, key, kinds) '
                       'VALUES (%L, %L, NULL, NULL)', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP);
        RETURN NULL;
    END IF;
    -- distinct keys, not rows: one user's 10,001 deleted events are one user
    EXECUTE format('SELECT count(*) FROM (SELECT DISTINCT %I FROM %s r LIMIT %s) c',
                   TG_ARGV[0], rows, n) INTO n;
    IF n > {FEED_KEYS_MAX} THEN  -- one row for all, with every kind (exposures can be told)
        EXECUTE format('INSERT INTO %I.{CHANGES} (table_name, op, key, kinds) '
                       'SELECT %L, %L, NULL, %s FROM %s r',
                       TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, TG_ARGV[1], rows);
    ELSIF n > 0 THEN
        EXECUTE format('INSERT INTO %I.{CHANGES} (table_name, op, key, kinds) '
                       'SELECT %L, %L, %I, %s FROM %s r GROUP BY %I',
                       TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, TG_ARGV[0], TG_ARGV[1], rows,
                       TG_ARGV[0]);
    END IF;
    RETURN NULL;
END $$"""
_CHANGES_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {CHANGES} (
        txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        at TIMESTAMP NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'UTC'),
        table_name VARCHAR NOT NULL, op VARCHAR NOT NULL, key VARCHAR, kinds VARCHAR[])""",
    f"CREATE INDEX IF NOT EXISTS {CHANGES}_txid ON {CHANGES} (txid)",
    f"CREATE INDEX IF NOT EXISTS {CHANGES}_at ON {CHANGES} (at)",
)


def _pg_safe(col: str, sql_type: str) -> str:
    r"""DuckDB SQL: column ``col`` as PostgreSQL can hold it (see ``PostgresStore._copy_in``).

    In JSON text a NUL is the escape ``\u0000`` (valid JSON holds no raw control character).
    It is replaced unless its backslash is itself escaped (``\\u0000`` is the text
    ``\u0000``): every escaped backslash is first set aside as U+0001, which valid JSON text
    cannot hold raw either.
    """
    kind = sql_type.split()[0].upper()
    if kind == "VARCHAR":
        return f"replace(CAST({col} AS VARCHAR), chr(0), chr(65533)) AS {col}"
    if kind == "JSON":
        text = f"replace(CAST({col} AS VARCHAR), '\\\\', chr(1))"
        text = f"replace({text}, '\\u0000', '\\ufffd')"
        return f"replace({text}, chr(1), '\\\\') AS {col}"
    return col


def _registered(pg: psycopg.Connection[Any]) -> set[str]:
    """Tables in the schema's version table (none when it does not exist yet)."""
    exists = pg.execute("SELECT to_regclass(%s)", [VERSIONS]).fetchone()
    if exists is None or exists[0] is None:
        return set()
    return {r[0] for r in pg.execute(f"SELECT table_name FROM {VERSIONS}").fetchall()}


def _schema_hint(exc: psycopg.Error) -> str:
    """psycopg's first line, naming a missing search-path schema where that is the cause."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.errors.InvalidSchemaName):
        msg += " (the schema in the URL's search_path must exist: CREATE SCHEMA it first)"
    return msg


def holds_store(url: str) -> bool:
    """Whether the database (schema) at ``url`` holds valuerec's tables; True when it cannot
    be asked (unreachable, refused), so that opening it reports the reason."""
    try:
        with psycopg.connect(url, autocommit=True) as pg:
            return bool(_registered(pg))
    except psycopg.Error:
        return True


class PostgresStore(Store):
    """A :class:`Store` whose tables live in a PostgreSQL database (see the module doc)."""

    local = False

    def __init__(self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False):
        self.path = str(path) if path is not None else default_db_path()
        self.read_only = read_only
        #: connections made again after the server dropped one (a restart, a failover):
        #: readers of the change feed reload everything when this moves
        self.reconnects = 0
        self._closing = False
        self._in_transaction = 0
        self.pg = self._connect()
        self._scratch: duckdb.DuckDBPyConnection | None = None
        try:
            if not read_only:
                self._create_schema()
            elif not _registered(self.pg):
                raise StoreError(f"{redact(self.path)} holds no valuerec store (nothing to read)")
            self.con = _Mirror(self)
        except psycopg.Error as exc:
            # e.g. a search_path schema that does not exist: "no schema has been selected"
            self.close()
            raise StoreError(f"cannot open store {redact(self.path)}: {_schema_hint(exc)}") from exc
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        try:
            pg = psycopg.connect(self.path, autocommit=True)
        except psycopg.Error as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot open store {redact(self.path)}: {msg}") from exc
        # JSON comes back as its text (as from DuckDB), not parsed, so both backends agree
        pg.adapters.register_loader("json", TextLoader)
        pg.adapters.register_loader("jsonb", TextLoader)
        # naive UTC timestamps, ISO text and shortest exact float text for COPY
        pg.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1")
        if self.read_only:
            pg.execute("SET default_transaction_read_only = on")
        return pg

    def _revive(self) -> None:
        """Connect again if the server dropped the connection (a restart): a long-running
        server would otherwise fail every request until it is restarted itself. The call that
        met the broken connection has failed already; the next one gets a new connection.
        Never inside a transaction of this connection, which a new one could not continue."""
        if not (self.pg.broken or self.pg.closed) or self._closing or self._in_transaction:
            return  # (in a transaction: its next statement must fail, not run outside it)
        self.pg = self._connect()
        self.reconnects += 1

    def _create_schema(self) -> None:
        """Create the tables, indexes and change triggers, unless a previous open did.

        The check is one read, so opening an existing store (every API start, every CLI
        command) costs no DDL and takes no lock.
        """
        has_feed = self.pg.execute("SELECT to_regclass(%s)", [CHANGES]).fetchone()
        if _registered(self.pg) >= set(_WATCHED) and has_feed and has_feed[0] is not None:
            return  # (a store made before the change feed gets it here, once)
        ddl = [_pg_ddl(t) for t in TABLES.values()]
        cols = ", ".join(f"{name} {pg_type(typ)}" for name, typ in QUARANTINE_COLUMNS)
        ddl.append(f"CREATE TABLE IF NOT EXISTS quarantine ({cols})")
        cols = ", ".join(f"{name} {pg_type(typ)}" for name, typ in INGEST_RUNS_COLUMNS)
        ddl.append(f"CREATE TABLE IF NOT EXISTS ingest_runs ({cols})")
        # unlike DuckDB's ART, B-tree indexes cost little on append and serve the API's
        # per-user reads and the anti-joins of ingest
        ddl += [
            "CREATE INDEX IF NOT EXISTS events_user_time ON events (user_id, timestamp)",
            "CREATE INDEX IF NOT EXISTS events_event_id ON events (event_id) "
            "WHERE event_id IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS quarantine_key ON quarantine (quarantine_key)",
        ]
        with self.pg.transaction():
            # two processes opening a new database at once must not race on CREATE
            self.pg.execute(f"SELECT pg_advisory_xact_lock({_LOCK_ARGS})", [SCHEMA_LOCK])
            self.pg.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSIONS} (table_name VARCHAR PRIMARY KEY, "
                "version BIGINT NOT NULL DEFAULT 0)"
            )
            self.pg.execute(_TRIGGER_FN)
            self.pg.execute(_FEED_FN)
            for stmt in [*ddl, *_CHANGES_DDL]:
                self.pg.execute(stmt)
            for name in _WATCHED:
                self._watch(name, _FEED.get(name))

    def _watch(self, name: str, feed: tuple[str, str] | None = None) -> None:
        """Register ``name`` in the version table and bump its version on every write; with
        ``feed`` (key column, kinds expression), record its changed keys in the change feed."""
        self.pg.execute(
            f"INSERT INTO {VERSIONS} VALUES (%s, 0) ON CONFLICT (table_name) DO NOTHING", [name]
        )
        exists = self.pg.execute(
            "SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = 'valuerec_touch'",
            [name],
        ).fetchone()
        if not exists:
            self.pg.execute(
                f"CREATE TRIGGER valuerec_touch AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                f"ON {name} FOR EACH STATEMENT EXECUTE FUNCTION valuerec_touch()"
            )
        if feed is None:
            return
        have = {
            r[0]
            for r in self.pg.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass", [name]
            ).fetchall()
        }
        args = ", ".join("'" + a.replace("'", "''") + "'" for a in feed)
        for op, refs in (
            ("INSERT", "REFERENCING NEW TABLE AS new_rows"),
            ("UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("DELETE", "REFERENCING OLD TABLE AS old_rows"),
            ("TRUNCATE", ""),
        ):
            trigger = f"valuerec_feed_{op.lower()}"
            if trigger not in have:  # one per event: a transition table allows only one
                self.pg.execute(
                    f"CREATE TRIGGER {trigger} AFTER {op} ON {name} {refs} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION valuerec_feed({args})"
                )

    def ensure_table(
        self, name: str, columns: Sequence[tuple[str, str]], key: str, feed: bool = False
    ) -> None:
        cols = ", ".join(
            f"{c} {pg_type(typ)}" + (" PRIMARY KEY" if c == key else "") for c, typ in columns
        )
        with self.pg.transaction():
            self.pg.execute(f"SELECT pg_advisory_xact_lock({_LOCK_ARGS})", [SCHEMA_LOCK])
            self.pg.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")
            self._watch(name, (key, "NULL::VARCHAR[]") if feed else None)

    def close(self) -> None:
        self._closing = True
        mirror = getattr(self, "con", None)
        for con in (getattr(self, "_scratch", None), getattr(mirror, "duck", None)):
            if con is not None:
                con.close()
        if not self.pg.closed:
            self.pg.close()

    def discard(self) -> None:
        """Close, and drop this store's tables if they hold nothing (see ``Store.discard``).

        Under exclusive locks taken without waiting, so a client writing into the new store
        at this moment keeps it (the lock fails and nothing is dropped).
        """
        tables = [*_WATCHED, VERSIONS, CHANGES]
        try:
            with self.pg.transaction():
                self.pg.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE NOWAIT")
                if all(self.count(t) == 0 for t in COUNTABLE):
                    self.pg.execute(f"DROP TABLE {', '.join(tables)}")
                    self.pg.execute("DROP FUNCTION IF EXISTS valuerec_touch()")
                    self.pg.execute("DROP FUNCTION IF EXISTS valuerec_feed()")
        except psycopg.Error:
            pass  # in use or changed meanwhile: keep it as it is
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        self._revive()
        self._in_transaction += 1
        try:
            with self.pg.transaction():
                yield self.pg
        finally:
            self._in_transaction -= 1

    # -- portable SQL --------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        self._revive()
        cur = self.pg.execute(to_pg_sql(sql), list(params or []))
        return cur.rowcount if cur.description is None else -1

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        self._revive()
        return self.pg.execute(to_pg_sql(sql), list(params or [])).fetchall()

    def fetch_frame(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        self._revive()
        cur = self.pg.execute(to_pg_sql(sql), list(params or []))
        names = [d.name for d in cur.description or []]
        return pd.DataFrame.from_records(cur.fetchall(), columns=names)

    def count(self, table: str) -> int:
        if table not in COUNTABLE:
            raise ValueError(f"unknown table {table!r}")
        return int(self.fetch(f"SELECT count(*) FROM {table}")[0][0])

    # -- change feed ---------------------------------------------------------------------------
    def changes(self, since: str | None) -> tuple[str, pd.DataFrame]:
        """``(position, changes)``: the feed's rows committed since position ``since``, and
        the position the next read starts from (None: only the position, for a reader that
        is about to load everything).

        A position is a snapshot (``pg_current_snapshot()``), taken *before* the rows are
        read; the next read returns the rows its snapshot could not see. A sequence number
        would not do: a transaction holding number 9 may commit after one holding 10, and a
        reader that had moved past 10 would never see 9. A row that commits between the
        snapshot and the read comes again in the next read (applying a change is idempotent:
        the reader re-reads the current state of each key), but nothing seen at a position
        is read again after it, however long another transaction stays open.

        Columns: ``table_name``, ``op`` (INSERT, UPDATE, DELETE, TRUNCATE), ``key`` (a user
        or item id; None: every row of the table), ``kinds`` (events: their types).
        """
        ((position,),) = self.fetch("SELECT pg_current_snapshot()::text")  # (fetch revives)
        if since is None:
            return str(position), pd.DataFrame(columns=["table_name", "op", "key", "kinds"])
        frame = self.fetch_frame(
            f"SELECT table_name, op, key, kinds FROM {CHANGES} "
            "WHERE txid >= pg_snapshot_xmin(?::pg_snapshot) "
            "AND NOT pg_visible_in_snapshot(txid, ?::pg_snapshot)",
            [since, since],
        )
        return str(position), frame

    def prune_changes(self, before: str | None = None, older_than: float | None = None) -> int:
        """Delete feed rows every follower has read: those visible at position ``before``
        (whose transactions had ended then), or, with ``older_than``, written more than that
        many seconds ago. Returns how many went."""
        if before is not None:
            return self.execute(
                f"DELETE FROM {CHANGES} WHERE txid < pg_snapshot_xmin(?::pg_snapshot)", [before]
            )
        return self.execute(
            f"DELETE FROM {CHANGES} WHERE at < (clock_timestamp() AT TIME ZONE 'UTC') - "
            "make_interval(secs => ?)",
            [float(FEED_KEEP_SECONDS if older_than is None else older_than)],
        )

    # -- ingest ----------------------------------------------------------------------------------
    @property
    def compute(self) -> duckdb.DuckDBPyConnection:
        """A private in-memory DuckDB: ingest stages there and streams the result to the server."""
        if self._scratch is None:
            self._scratch = duckdb.connect(":memory:")
            self._scratch.execute("SET TimeZone = 'UTC'")
        return self._scratch

    @contextmanager
    def ingest_lock(self) -> Iterator[None]:
        """One ingest at a time per database, across processes: run ids stay unique and two
        clients posting the same event cannot both find it new. Feed rows older than
        :data:`FEED_KEEP_SECONDS` are pruned after each ingest."""
        self._revive()
        self.pg.execute(f"SELECT pg_advisory_lock({_LOCK_ARGS})", [INGEST_LOCK])
        try:
            yield
        finally:
            if not (self.pg.closed or self.pg.broken):
                self.pg.execute(f"SELECT pg_advisory_unlock({_LOCK_ARGS})", [INGEST_LOCK])
                self.prune_changes()

    def _copy_in(
        self,
        con: duckdb.DuckDBPyConnection,
        select: str,
        columns: Sequence[tuple[str, str]],
        staging: str,
    ) -> int:
        """Stream the rows of ``select`` (on DuckDB ``con``) into temp table ``staging``.

        DuckDB writes CSV (doubles in shortest exact form, NULL unquoted, '' quoted) and
        PostgreSQL's COPY reads it back with the same conventions. PostgreSQL text cannot hold
        NUL characters, so they are replaced by U+FFFD; so are the ``\u0000`` escapes of
        JSON, which ``jsonb`` (the merge of an item's or user's properties) refuses. Returns
        the rows copied.
        """
        cols = ", ".join(f"{c} {pg_type(typ)}" for c, typ in columns)
        # Kept for the session (no catalogue churn per API post) and emptied at each commit.
        # Asked for every time: a creation rolled back with a failed batch must be redone.
        self.pg.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} ({cols}) ON COMMIT DELETE ROWS")
        exprs = ", ".join(_pg_safe(c, typ) for c, typ in columns)
        names = ", ".join(c for c, _ in columns)
        with _csv_file() as path, self.pg.cursor() as cur:
            fmt = "(FORMAT csv, HEADER false)"
            con.execute(f"COPY (SELECT {exprs} FROM ({select})) TO {_quote(path)} {fmt}")
            with (
                cur.copy(f"COPY {staging} ({names}) FROM STDIN (FORMAT csv)") as copy,
                open(path, "rb") as f,
            ):
                while data := f.read(1 << 20):
                    copy.write(data)
            n = cur.rowcount
        if n > 10_000:
            self.pg.execute(f"ANALYZE {staging}")
        return int(n)

    def append_staged(
        self,
        t: Table,
        con: duckdb.DuckDBPyConnection,
        select: str,
        supplied: Collection[str] | None = None,
    ) -> int:
        """Insert what the server does not hold yet; runs inside the caller's transaction.

        Events: a row with an ``event_id`` is new unless that id is stored; one without is new
        unless an id-less stored event has the same content and ``occurrence``. Items and
        users: upserted by id as in :meth:`Store.append_staged` (only the ``supplied`` fields
        change, ``properties`` are merged), counted only where something changed.
        """
        types = {f.name: f.sql_type for f in t.fields}
        extra = "occurrence" if t is EVENTS else "updated_at"
        types[extra] = "INTEGER" if t is EVENTS else "TIMESTAMP"
        names = staged_columns(t)
        staging = f"_vr_in_{t.name}"
        if not self._copy_in(con, select, [(c, types[c]) for c in names], staging):
            return 0
        cols = ", ".join(names)
        if t is EVENTS:
            # Probe the stored events through their indexes, row by row: cost grows with the
            # batch, never with the table. A hash anti-join would read the whole table for
            # every batch (quadratic over a bulk load, seconds per API post on a big store),
            # and the planner picks it whenever the table's statistics lag behind a load.
            self.pg.execute("SET LOCAL enable_hashjoin = off")
            self.pg.execute("SET LOCAL enable_mergejoin = off")
            # required columns are never null: plain equality lets the index serve the probe
            same = " AND ".join(
                (
                    f"e.{c} = s.{c}"
                    if EVENTS.field(c).required
                    else f"e.{c} IS NOT DISTINCT FROM s.{c}"
                )
                for c in _CONTENT
            )
            cur = self.pg.execute(
                f"""INSERT INTO events ({cols})
                SELECT {cols} FROM {staging} s WHERE s.event_id IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = s.event_id)
                UNION ALL
                SELECT {cols} FROM {staging} s WHERE s.event_id IS NULL
                    AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id IS NULL
                        AND {same} AND e.occurrence = s.occurrence)"""
            )
            return int(cur.rowcount)
        key = t.key
        rest = updated_columns(t, supplied)
        # store.merge_properties in PostgreSQL, the same rule and the same text: top-level
        # keys merge (a key replaces its whole value, nested objects are not merged), a key
        # set to null removes it; the stored keys the new object does not name come first in
        # their order, then the new keys in theirs, written compactly as DuckDB writes them.
        # Not jsonb's `||`: jsonb reorders keys (by length) and adds spaces, so the stored
        # text, and what reads it in key order, would differ between the backends.
        pairs = (
            "SELECT s.k, s.v, 0 AS part, s.n FROM json_each(t.properties) "
            "WITH ORDINALITY s(k, v, n) WHERE NOT (excluded.properties::jsonb ? s.k) "
            "UNION ALL SELECT s.k, s.v, 1, s.n FROM json_each(excluded.properties) "
            "WITH ORDINALITY s(k, v, n) WHERE json_typeof(s.v) <> 'null'"
        )
        merged = (
            "CASE WHEN excluded.properties IS NULL THEN t.properties::text "
            "WHEN t.properties IS NULL THEN excluded.properties::text "
            "ELSE (SELECT '{' || coalesce(string_agg(to_json(p.k)::text || ':' || p.v::text, "
            f"',' ORDER BY p.part, p.n), '') || '}}' FROM ({pairs}) p) END"
        )
        # as ingest decides "unchanged" on DuckDB (ingest._key_entities): by the text
        changed = (
            f"({', '.join([*(f't.{c}' for c in rest), 't.properties::text'])}) "
            f"IS DISTINCT FROM ({', '.join([*(f'excluded.{c}' for c in rest), merged])})"
        )
        sets = ", ".join(
            [f"{c} = excluded.{c}" for c in rest]
            + [f"properties = ({merged})::json", f"{extra} = excluded.{extra}"]
        )
        cur = self.pg.execute(
            f"""INSERT INTO {t.name} AS t ({cols}) SELECT {cols} FROM {staging}
            ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE {changed}"""
        )
        return int(cur.rowcount)

    def append_quarantine(self, con: duckdb.DuckDBPyConnection, select: str) -> int:
        """Insert quarantine rows whose key is not stored yet (re-ingesting adds none)."""
        staging = "_vr_in_quarantine"
        if not self._copy_in(con, select, QUARANTINE_COLUMNS, staging):
            return 0
        cols = ", ".join(name for name, _ in QUARANTINE_COLUMNS)
        cur = self.pg.execute(
            f"""INSERT INTO quarantine ({cols}) SELECT {cols} FROM {staging} s
            WHERE NOT EXISTS (SELECT 1 FROM quarantine q
                              WHERE q.quarantine_key = s.quarantine_key)"""
        )
        return int(cur.rowcount)


class _Mirror:
    """``store.con`` of a PostgreSQL store: read-only DuckDB SQL over copies of its tables.

    :meth:`execute` refreshes the tables a statement names whose version in PostgreSQL moved,
    then runs it in DuckDB, returning DuckDB's connection (``.df()``, ``.fetchone()`` ...), so
    code written against a DuckDB store's ``con`` runs unchanged. Writes are refused: they
    would only change the copy.
    """

    _READ = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.duck = duckdb.connect(":memory:")
        self.duck.execute("SET TimeZone = 'UTC'")
        self.versions: dict[str, int] = {}

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyConnection:
        kinds = {s.type for s in self.duck.extract_statements(sql)}
        if not kinds <= self._READ:
            raise StoreError(
                "a PostgreSQL store runs only read-only SQL through query()/con; "
                "write with ingest() or Store.execute()"
            )
        self.store._revive()
        # DuckDB matches table names in any case, quoted or not (``EVENTS``, ``"Events"``), and
        # the watched names are lower case: compare folded words, or such a statement would
        # read a stale copy, or none at all. (A quoted name's word is found inside its quotes.)
        self.sync({word.lower() for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)})
        return self.duck.execute(sql, params or [])

    def sync(self, names: set[str]) -> None:
        """Copy every watched table among ``names`` whose version moved since the last copy."""
        pg = self.store.pg
        in_txn = pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        current = dict(pg.execute(f"SELECT table_name, version FROM {VERSIONS}").fetchall())
        stale = sorted(t for t in names & set(current) if self.versions.get(t) != current[t])
        if not stale:
            return
        # one snapshot for the versions and the rows, so they describe the same state
        with pg.transaction():
            if not in_txn:
                pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            current = dict(pg.execute(f"SELECT table_name, version FROM {VERSIONS}").fetchall())
            for name in stale:
                self._copy(name)
                # read inside an open transaction: may include writes that roll back, so
                # never trust the copy for later statements
                self.versions[name] = -1 if in_txn else current[name]

    def _copy(self, name: str) -> None:
        pg = self.store.pg
        columns = pg.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            [name],
        ).fetchall()
        cols = ", ".join(f'"{c}" {_TO_DUCK.get(typ, "VARCHAR")}' for c, typ in columns)
        self.duck.execute(f'CREATE OR REPLACE TABLE "{name}" ({cols})')
        names = ", ".join(f'"{c}"' for c, _ in columns)
        out = f'COPY (SELECT {names} FROM "{name}") TO STDOUT (FORMAT csv)'
        with _csv_file() as path:
            with pg.cursor() as cur, open(path, "wb") as f, cur.copy(out) as copy:
                for data in copy:
                    f.write(data)
            if path.stat().st_size:
                self.duck.execute(
                    f"""COPY "{name}" FROM {_quote(path)} (FORMAT csv, HEADER false,
                    DELIMITER ',', QUOTE '"', ESCAPE '"', ALLOW_QUOTED_NULLS false,
                    MAX_LINE_SIZE 1073741824)"""
                )
