"""Write-back of exposures: what was shown becomes training signal, off the request path.

A recommendation call with ``write_back=true`` must not wait for a database write (an ingest
costs tens of milliseconds, the latency budget is 20), so returned items are buffered here
and a background thread writes them in one batch every ``interval`` seconds, and at shutdown.
Each exposure gets a fresh ``event_id``, so a batch retried after a failure is not stored
twice, and ``properties`` says which model version showed it at which rank, so click-through
can later be measured per model.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from valuerec.serve.periodic import Periodic

__all__ = ["ExposureLog"]

log = logging.getLogger("valuerec.serve")


class ExposureLog:
    """A buffer of exposure events flushed by a daemon thread (or by :meth:`flush`)."""

    def __init__(
        self, write: Callable[[pd.DataFrame], int], event_type: str, interval: float = 1.0
    ) -> None:
        self._write = write
        self.event_type = event_type
        self.interval = interval
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time, so batches stay in order
        self._worker = Periodic("exposure-log", interval, self.flush)

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self, user_id: str, items: list[tuple[int, str, float]], model: str, version: str
    ) -> None:
        """Buffer one exposure per ``(rank, item_id, score)`` shown to ``user_id``."""
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = [
            {
                "event_id": uuid.uuid4().hex,
                "user_id": user_id,
                "item_id": item_id,
                "event_type": self.event_type,
                "timestamp": now,
                "properties": {"model": model, "version": version, "rank": rank, "score": score},
            }
            for rank, item_id, score in items
        ]
        with self._lock:
            self._rows.extend(rows)

    def users(self) -> set[str]:
        """The users with exposures waiting to be written."""
        with self._lock:
            return {r["user_id"] for r in self._rows}

    def discard(self, user_ids: Collection[str]) -> None:
        """Drop the pending exposures of ``user_ids`` (deleted elsewhere: there is no deletion
        here to hold the flush back for, as :meth:`discarding` does), after a flush under way."""
        drop = set(user_ids)
        with self._flushing, self._lock:
            self._rows = [r for r in self._rows if r["user_id"] not in drop]

    @contextmanager
    def discarding(self, user_id: str) -> Iterator[None]:
        """Drop a user's pending exposures and write none until the block (their deletion) ends.

        Dropping alone is not enough: a flush may already have taken the user's rows out of
        the buffer and be about to write them, after the deletion, bringing the user back.
        Holding the flush lock across the block waits for such a flush to finish first (the
        deletion then removes what it wrote) and keeps the next one out until the user is
        gone. Lock order: the flush lock before the repository's (as a flush takes them).
        """
        with self._flushing:
            with self._lock:
                self._rows = [r for r in self._rows if r["user_id"] != user_id]
            yield

    def flush(self) -> int:
        """Write what is buffered now; returns the number of new events stored."""
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            frame = pd.DataFrame(rows)
            frame["timestamp"] = pd.to_datetime(frame["timestamp"])
            frame["properties"] = frame["properties"].map(json.dumps)
            try:
                return self._write(frame)
            except Exception:
                log.exception("writing %d exposures failed; kept for the next try", len(rows))
                with self._lock:
                    self._rows = rows + self._rows
                return 0

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        """Stop the thread and write what is left."""
        self._worker.stop()
        self.flush()
