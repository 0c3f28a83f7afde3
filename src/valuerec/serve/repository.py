"""Every database access of the serving layer, in one class.

The recommendation path never comes here: it reads the in-memory state
(:mod:`valuerec.serve.state`). This module is what writes events, users and items, reads the
histories at start-up and after a write, and pages through lists. Keeping every SQL statement
here, written in the SQL that DuckDB and PostgreSQL both accept (``?`` placeholders,
``INSERT ... ON CONFLICT``, ``IN (SELECT unnest(?::VARCHAR[]))``) and run through the store's
portable methods (:meth:`Store.execute`, :meth:`Store.fetch`, :meth:`Store.fetch_frame`), is
what lets the same API run on a DuckDB file or a PostgreSQL server.

A database connection must not be used from two threads at once, and FastAPI runs synchronous
endpoints on a thread pool, so every method holds :attr:`Repository.lock` (re-entrant, so a
method may call another).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from valuerec.data.ingest import IngestResult, ingest
from valuerec.data.schema import EVENTS
from valuerec.data.store import Store
from valuerec.features.split import EXPOSURE_EVENT_TYPES, log_end
from valuerec.serve.config import EventRoles
from valuerec.value.base import ValueModel
from valuerec.value.segments import segment_users

__all__ = ["FLAGS_TABLE", "Repository"]

#: hidden flags live beside the canonical ``items`` table, so re-ingesting a catalogue file
#: (which replaces item rows) does not un-hide what an operator hid over the API
FLAGS_TABLE = "serve_item_flags"
ITEM_COLUMNS = ("item_id", "title", "text", "category", "price", "properties")
USER_COLUMNS = ("user_id", "signup_time", "properties")


def _utc(value: Any) -> datetime | None:
    """A stored naive-UTC timestamp as an aware one, so the API says which zone it is."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        return None
    return ts.tz_localize(UTC).to_pydatetime() if ts.tzinfo is None else ts.to_pydatetime()


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict | list):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


def _upsert(table: str, columns: Sequence[str], values: str) -> str:
    """Portable insert-or-replace of one row by its first column, stamping ``updated_at``.

    ``INSERT ... ON CONFLICT DO UPDATE`` is the form both DuckDB and PostgreSQL accept
    (DuckDB's ``INSERT OR REPLACE`` is not PostgreSQL).
    """
    sets = ", ".join(f"{c} = excluded.{c}" for c in [*columns[1:], "updated_at"])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}, updated_at) "
        f"VALUES ({values}, now()::TIMESTAMP) ON CONFLICT ({columns[0]}) DO UPDATE SET {sets}"
    )


def _among(column: str, values: Sequence[str] | None) -> tuple[str, list[Any]]:
    """``WHERE column IN values`` and its parameter; nothing for None (every row)."""
    if values is None:
        return "", []
    return f"WHERE {column} IN (SELECT unnest(?::VARCHAR[]))", [list(values)]


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


class Repository:
    """The serving layer's window on the store."""

    def __init__(self, store: Store, exposures: Sequence[str] = EXPOSURE_EVENT_TYPES) -> None:
        self.store = store
        #: the settings' exposure types: what this server writes back, never "now" (log_end)
        self.exposures = tuple(exposures)
        self.lock = threading.RLock()

    def ensure_schema(self) -> None:
        """Create the serving layer's own table (item flags) if it is missing."""
        with self.lock:
            self.store.ensure_table(
                FLAGS_TABLE,
                [
                    ("item_id", "VARCHAR"),
                    ("hidden", "BOOLEAN NOT NULL"),
                    ("updated_at", "TIMESTAMP"),
                ],
                key="item_id",
                feed=True,  # other servers learn of hidden items from the change feed
            )

    def close(self) -> None:
        with self.lock:
            self.store.close()

    # -- events ----------------------------------------------------------------------------
    def interactions(
        self, roles: EventRoles, user_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """``user_id, item_id, negative`` of every event that means interest or disinterest.

        Ordered oldest first per user (ties broken like the trainer does, by item id), so
        histories end with the newest item, as sequence models expect.
        """
        where = ["item_id IS NOT NULL"]
        params: list[Any] = []
        if roles.any_positive:
            where.append("event_type NOT IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(roles.exposure))
        else:
            where.append("event_type IN (SELECT unnest(?::VARCHAR[]))")
            params.append([*roles.positive, *roles.negative])
        if user_ids is not None:
            where.append("user_id IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(user_ids))
        with self.lock:
            frame = self.store.fetch_frame(
                "SELECT user_id, item_id, event_type IN (SELECT unnest(?::VARCHAR[])) AS negative"
                f" FROM events WHERE {' AND '.join(where)}"
                " ORDER BY user_id, timestamp, item_id, occurrence",
                [list(roles.negative), *params],
            )
        return frame

    def ingest_events(self, frame: pd.DataFrame, source: str) -> IngestResult:
        """Store events through the one ingest path: same validation, dedupe and quarantine."""
        frame = frame.reindex(columns=EVENTS.names)
        with self.lock:
            return ingest(self.store, frame, "events", source_name=source)

    def event_types(self) -> list[str]:
        with self.lock:
            rows = self.store.fetch("SELECT DISTINCT event_type FROM events ORDER BY 1")
        return [r[0] for r in rows]

    def value_as_of(self) -> datetime | None:
        """The end of the log (midnight after its last event), as ``valuerec value predict``
        scores by default; None without a purchase to predict value from.

        (The value layer scores as of any cut-off up to the log's end: a log that ends with
        views after its last purchase is scored as of its end.)
        """
        with self.lock:
            ((n,),) = self.store.fetch("SELECT count(*) FROM events WHERE event_type = 'purchase'")
            return log_end(self.store, self.exposures) if n else None

    def log_span_days(self) -> float:
        """Days from the first to the last event, exposures left out (``train``'s default
        holdout is half of it): the exposures a server writes back are stamped with today's
        date, so counting them would stretch the span, and the holdout, past the real log."""
        with self.lock:
            ((first, last),) = self.store.fetch(
                "SELECT min(timestamp), max(timestamp) FROM events "
                "WHERE event_type NOT IN (SELECT unnest(?::VARCHAR[]))",
                [list(self.exposures)],
            )
        if first is None:
            return 0.0
        return (pd.Timestamp(last) - pd.Timestamp(first)).total_seconds() / 86_400

    def count_events(self, event_type: str | None = None, user_id: str | None = None) -> int:
        where, params = [], []
        if event_type is not None:
            where.append("event_type = ?")
            params.append(event_type)
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        with self.lock:
            ((n,),) = self.store.fetch(f"SELECT count(*) FROM events {cond}", params)
        return int(n)

    # -- items -----------------------------------------------------------------------------
    def catalogue(self, item_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """``item_id, title, category`` of every catalogued item (what responses show), or
        of those among ``item_ids``."""
        where, params = _among("item_id", item_ids)
        with self.lock:
            return self.store.fetch_frame(
                f"SELECT item_id, title, category FROM items {where} ORDER BY item_id", params
            )

    def hidden_items(self, item_ids: Sequence[str] | None = None) -> set[str]:
        """Items hidden through the API (or those among ``item_ids``); none in a store no
        server has run on (no flags table, which a read does not create)."""
        where, params = _among("item_id", item_ids)
        with self.lock:
            (exists,) = self.store.fetch(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_name = ? AND table_schema = current_schema()",
                [FLAGS_TABLE],
            )[0]
            if not exists:
                return set()
            rows = self.store.fetch(
                f"SELECT item_id FROM {FLAGS_TABLE} {where or 'WHERE true'} AND hidden", params
            )
        return {r[0] for r in rows}

    def _item_rows(self, where: str, params: list[Any], limit: int | None = None) -> list[dict]:
        cols = ", ".join(f"i.{c}" for c in ITEM_COLUMNS)
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        with self.lock:
            rows = self.store.fetch(
                f"SELECT {cols}, coalesce(f.hidden, false) FROM items i "
                f"LEFT JOIN {FLAGS_TABLE} f USING (item_id) WHERE {where} ORDER BY i.item_id{lim}",
                params,
            )
        out = []
        for r in rows:
            rec = dict(zip(ITEM_COLUMNS, r[:-1], strict=True))
            rec["properties"] = _json(rec["properties"])
            rec["hidden"] = bool(r[-1])
            out.append(rec)
        return out

    def get_item(self, item_id: str) -> dict | None:
        rows = self._item_rows("i.item_id = ?", [item_id])
        return rows[0] if rows else None

    def list_items(self, after: str | None, limit: int) -> list[dict]:
        if after is None:
            return self._item_rows("true", [], limit)
        return self._item_rows("i.item_id > ?", [after], limit)

    def put_item(self, record: dict[str, Any]) -> None:
        """Insert or replace one item row; ``hidden`` (if present) sets its flag too."""
        values = [record.get(c) for c in ITEM_COLUMNS]
        values[-1] = None if values[-1] is None else json.dumps(values[-1])
        with self.lock, self.store.transaction():
            self.store.execute(_upsert("items", ITEM_COLUMNS, "?, ?, ?, ?, ?, ?::JSON"), values)
            if record.get("hidden") is not None:
                self._set_hidden(record["item_id"], bool(record["hidden"]))

    def set_hidden(self, item_id: str, hidden: bool) -> None:
        with self.lock:
            self._set_hidden(item_id, hidden)

    def _set_hidden(self, item_id: str, hidden: bool) -> None:
        self.store.execute(_upsert(FLAGS_TABLE, ("item_id", "hidden"), "?, ?"), [item_id, hidden])

    def delete_item(self, item_id: str) -> bool:
        """Remove an item from the catalogue and hide it, so models stop recommending it."""
        with self.lock, self.store.transaction():
            n = self.store.execute("DELETE FROM items WHERE item_id = ?", [item_id])
            if n:
                self._set_hidden(item_id, True)
        return bool(n)

    # -- users -----------------------------------------------------------------------------
    def _event_counts(self, user_ids: list[str]) -> dict[str, int]:
        with self.lock:
            rows = self.store.fetch(
                "SELECT user_id, count(*) FROM events "
                "WHERE user_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1",
                [user_ids],
            )
        return {u: int(n) for u, n in rows}

    def _user_rows(self, rows: list[tuple]) -> list[dict]:
        counts = self._event_counts([r[0] for r in rows])
        return [
            {
                "user_id": u,
                "signup_time": _utc(t),
                "properties": _json(p),
                "events": counts.get(u, 0),
            }
            for u, t, p in rows
        ]

    def get_user(self, user_id: str) -> dict | None:
        """A user in the users table or with events (a user is known by either)."""
        with self.lock:
            found = self.store.fetch(
                "SELECT user_id, signup_time, properties FROM users WHERE user_id = ?", [user_id]
            )
            row = found[0] if found else None
            if row is None and self.count_events(user_id=user_id):
                row = (user_id, None, None)
        return self._user_rows([row])[0] if row else None

    def list_users(self, after: str | None, limit: int) -> list[dict]:
        with self.lock:
            # the cursor and the limit inside each half: the page's ids are the first
            # ``limit`` of each source after the cursor, which PostgreSQL reads off its
            # (user_id, timestamp) index; the distinct users of every event, then the cursor,
            # cost a pass over all events per page (0.45 s at 1M events; a full listing
            # grew with the square of the log)
            rows = self.store.fetch(
                """WITH ids AS (
                    (SELECT user_id FROM users
                     WHERE ?::VARCHAR IS NULL OR user_id > ?::VARCHAR
                     ORDER BY user_id LIMIT ?)
                    UNION
                    (SELECT DISTINCT user_id FROM events
                     WHERE ?::VARCHAR IS NULL OR user_id > ?::VARCHAR
                     ORDER BY user_id LIMIT ?))
                SELECT ids.user_id, u.signup_time, u.properties
                FROM ids LEFT JOIN users u USING (user_id)
                ORDER BY ids.user_id LIMIT ?""",
                [after, after, int(limit)] * 2 + [int(limit)],
            )
        return self._user_rows(rows)

    def put_user(self, record: dict[str, Any]) -> None:
        props = record.get("properties")
        with self.lock:
            self.store.execute(
                _upsert("users", USER_COLUMNS, "?, ?, ?::JSON"),
                [
                    record["user_id"],
                    _naive_utc(record.get("signup_time")),
                    None if props is None else json.dumps(props),
                ],
            )

    def missing_users(self, user_ids: Sequence[str]) -> list[str]:
        """Those of ``user_ids`` the store knows nothing of (no row, no event), in order."""
        if not user_ids:
            return []
        with self.lock:
            rows = self.store.fetch(
                "SELECT user_id FROM users WHERE user_id IN (SELECT unnest(?::VARCHAR[])) "
                "UNION SELECT DISTINCT user_id FROM events "
                "WHERE user_id IN (SELECT unnest(?::VARCHAR[]))",
                [list(user_ids), list(user_ids)],
            )
        found = {r[0] for r in rows}
        return [u for u in user_ids if u not in found]

    def delete_user(self, user_id: str) -> int | None:
        """Delete a user and every event of theirs in one transaction.

        Returns the number of events deleted, or None when the user was not known at all.
        """
        with self.lock, self.store.transaction():
            events = self.store.execute("DELETE FROM events WHERE user_id = ?", [user_id])
            rows = self.store.execute("DELETE FROM users WHERE user_id = ?", [user_id])
        return int(events) if events or rows else None

    # -- value -----------------------------------------------------------------------------
    def value_segments(
        self, model: ValueModel, horizon_days: float | None
    ) -> tuple[pd.DataFrame, datetime]:
        """Predictions and segments of every customer as of the end of the log.

        Computed once per loaded model (at start-up, promotion, and after purchases), never
        per request. Only the reads hold the repository's lock (a consistent view, and the
        connection is not for two threads); the prediction, most of the time (on CDNOW's
        23,570 customers a LightGBM bag reads for 0.45 s and predicts for 2.5 s), runs
        outside it, so events posted meanwhile are not held up.
        """
        with self.lock:
            when = self.value_as_of()
            if when is None:
                raise ValueError("the store has no purchase events to predict value from")
            data = model.prediction_data(store=self.store, as_of=when)
        pred = model.predict_data(data, horizon_days)
        features = data.features  # every customer's, as of ``when``: what segments read
        seg = segment_users(pred, features, as_of=when)
        extra = pred.set_index("user_id")[["pred_transactions", "ltv_low", "ltv_high"]]
        # age_days: what segments.relabel needs when a deleted user leaves the population
        seg = seg.join(extra, on="user_id").join(features["age_days"], on="user_id")
        return seg, when
