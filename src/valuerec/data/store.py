"""The store: one small class in front of the database that holds events, items and users.

DuckDB is the default backend because an embedded columnar file needs no server and runs the
feature SQL of later layers at laptop scale. Callers only use the methods below (and
:meth:`Store.query` for read-only SQL), so a PostgreSQL backend can be added behind the same
surface without touching them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from valuerec.data.schema import EVENTS, ITEMS, QUARANTINE_COLUMNS, TABLES, USERS, Table

DEFAULT_DB = "valuerec.duckdb"


def default_db_path() -> str:
    """The store used when no ``--db`` is given: ``$VALUEREC_DB`` or ``./valuerec.duckdb``."""
    return os.environ.get("VALUEREC_DB") or DEFAULT_DB


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


class Store:
    """A valuerec database: the canonical tables, the quarantine and the ingest log.

    >>> store = Store(":memory:")
    >>> store.count("events")
    0
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False):
        self.path = str(path) if path is not None else default_db_path()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
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
        self.con.execute(
            """CREATE TABLE IF NOT EXISTS ingest_runs (
                run_id BIGINT PRIMARY KEY, kind VARCHAR, source VARCHAR,
                started_at TIMESTAMP, finished_at TIMESTAMP, rows_read BIGINT,
                stored BIGINT, duplicates BIGINT, quarantined BIGINT)"""
        )

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block atomically: everything in it commits together or not at all."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- reads -------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run read-only SQL against the store and return a DataFrame."""
        return self.con.execute(sql, params or []).df()

    def count(self, table: str) -> int:
        if table not in {*TABLES, "quarantine", "ingest_runs"}:
            raise ValueError(f"unknown table {table!r}")
        return int(self.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

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
            params.append(list(user_ids))
        if event_types is not None:
            where.append("event_type IN (SELECT unnest(?::VARCHAR[]))")
            params.append([e.lower() for e in event_types])
        if since is not None:
            where.append("timestamp >= ?::TIMESTAMP")
            params.append(since)
        if until is not None:
            where.append("timestamp < ?::TIMESTAMP")
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
        """Rows that failed validation, oldest first, with source, line, field and reason."""
        lim = f"LIMIT {int(limit)}" if limit is not None else ""
        return self.query(
            "SELECT run_id, kind, source, line, row, field, reason, raw, quarantined_at "
            f"FROM quarantine ORDER BY run_id, row {lim}"
        )

    def stats(self) -> dict[str, Any]:
        """Counts, date range and events by type: what ``valuerec stats`` prints."""
        c = self.con
        n_events, n_users_ev, n_items_ev, first, last = c.execute(
            "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), "
            "min(timestamp), max(timestamp) FROM events"
        ).fetchone()
        by_type = dict(
            c.execute(
                "SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, 1"
            ).fetchall()
        )
        spend = c.execute("SELECT coalesce(sum(value), 0) FROM events").fetchone()[0]
        return {
            "db": self.path,
            "events": int(n_events),
            "users_with_events": int(n_users_ev),
            "items_with_events": int(n_items_ev),
            "users": self.count("users"),
            "items": self.count("items"),
            "first_event": first.isoformat() if first else None,
            "last_event": last.isoformat() if last else None,
            "events_by_type": {k: int(v) for k, v in by_type.items()},
            "total_value": float(spend),
            "quarantined": self.count("quarantine"),
            "ingest_runs": self.count("ingest_runs"),
        }


class StoreError(RuntimeError):
    """The store could not be opened or used (locked by another process, corrupt, ...)."""
