"""Following a shared PostgreSQL store: what other servers and ``valuerec ingest`` wrote.

A server answers from memory (:mod:`valuerec.serve.state`) kept current by its own writes.
On PostgreSQL several servers, and batch ingests, write into one store, so each server also
reads the store's change feed (:meth:`valuerec.data.postgres.PostgresStore.changes`: one row
per user or item a committed statement touched, from triggers, whoever wrote) every
``sync_seconds`` and re-reads the state of what changed: a user's history, an item's title,
category and hidden flag. The service decides what each change means
(:meth:`~valuerec.serve.service.ServeService.apply_changes`); this module owns the position in
the feed, the thread, and pruning.

A DuckDB file admits one process, so there is no feed to follow there. On both backends the
same thread also follows the model artifacts' ``CURRENT`` pointers, which other processes
move (:meth:`~valuerec.serve.registry.ModelRegistry.follow_current`): a promotion sent to one
server behind a load balancer reaches them all.

Feed rows are kept until every follower has had :attr:`StoreFollower.KEEP_SECONDS` to read
them (each follower prunes, by feed position; every ingest prunes rows a day old). A follower
that could not read the feed for half that time, or whose database connection was made again
(a restart), may have missed rows, so it reloads everything instead of reading on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from valuerec.serve.periodic import Periodic

if TYPE_CHECKING:
    from valuerec.serve.service import ServeService

__all__ = ["StoreFollower"]

log = logging.getLogger("valuerec.serve")


class StoreFollower:
    """Reads the change feed of the service's store and hands each batch to the service."""

    #: feed rows every follower has had this long to read are pruned (by any follower)
    KEEP_SECONDS = 3600.0
    #: how often a follower prunes
    PRUNE_SECONDS = 60.0

    def __init__(self, service: ServeService, interval: float) -> None:
        self.service = service
        self.interval = interval
        self.position: str | None = None
        self._last_read = time.monotonic()
        self._last_prune = 0.0
        self._reconnects = 0
        #: (monotonic time, position) of recent reads: pruning removes rows visible at the
        #: newest position at least KEEP_SECONDS old, i.e. of transactions that had ended
        #: by then (pruning by write time would drop the rows of a transaction that stayed
        #: open for longer, the moment it commits)
        self._read_at: deque[tuple[float, str]] = deque()
        self._worker = Periodic("valuerec-follow", interval, self._tick)

    @property
    def enabled(self) -> bool:
        """Whether there is a feed to follow: a shared (PostgreSQL) store, a positive interval."""
        return self.interval > 0 and not self.service.repo.store.local

    def poll_models(self) -> list[str]:
        """Serve each model's ``CURRENT`` version (see the module doc); the artifacts swapped."""
        return self.service.models.follow_current() if self.interval > 0 else []

    def begin(self) -> None:
        """Take the feed's position; call it *before* loading the state it will keep current,
        so that a write landing during the load is read again, not lost."""
        if self.enabled:
            self._commit(*self._mark())

    def _mark(self) -> tuple[str, int]:
        store = self.service.repo.store
        with self.service.repo.lock:
            position, _ = store.changes(None)
            return position, store.reconnects

    def _commit(self, position: str, reconnects: int) -> None:
        self.position, self._reconnects = position, reconnects
        self._last_read = time.monotonic()

    def _reload(self) -> None:
        """Everything again, from a position taken before the reads; the position moves
        only once the reload has succeeded (a failed one is tried again at the next poll)."""
        mark = self._mark()
        self.service.reload_state()
        self._commit(*mark)

    def poll(self) -> int:
        """Read and apply what changed since the last read; returns the feed rows applied.

        Everything is reloaded instead after a gap longer than half the feed's retention,
        and after the store connected again (the database restarted: what was written
        meanwhile, and the position itself, cannot be trusted).
        """
        if not self.enabled:
            return 0
        repo = self.service.repo
        stale = time.monotonic() - self._last_read > self.KEEP_SECONDS / 2
        if self.position is None or stale or repo.store.reconnects != self._reconnects:
            self._reload()
            return 0
        with repo.lock:
            position, frame = repo.store.changes(self.position)
        if repo.store.reconnects != self._reconnects:  # connected again within the read
            self._reload()
            return 0
        self.service.apply_changes(frame)
        # moved only once applied: a failure above reads the same rows again next time
        now = time.monotonic()
        self.position, self._last_read = position, now
        self._read_at.append((now, position))
        if now - self._last_prune >= self.PRUNE_SECONDS:
            self._prune(now)
        return len(frame)

    def _prune(self, now: float) -> None:
        cutoff = None
        while self._read_at and now - self._read_at[0][0] >= self.KEEP_SECONDS:
            cutoff = self._read_at.popleft()[1]
        if cutoff is not None:
            with self.service.repo.lock:
                self.service.repo.store.prune_changes(before=cutoff)
        self._last_prune = now

    def _tick(self) -> None:
        for step, what in (
            (self.poll, "reading the store's change feed"),
            (self.poll_models, "following the models' CURRENT versions"),
        ):
            try:
                step()
            except Exception:  # a background thread has no caller to raise to
                log.exception("%s failed; tried again", what)

    def start(self) -> None:
        if self.interval > 0:
            self._worker.start()

    def stop(self) -> None:
        self._worker.stop()
