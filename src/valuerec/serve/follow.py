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

Feed rows are kept for :attr:`StoreFollower.KEEP_SECONDS` (each follower prunes older ones).
A follower that could not read the feed for half that time (the database was unreachable) may
have lost rows to another follower's pruning, so it reloads everything instead of reading on.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from valuerec.serve.periodic import Periodic

if TYPE_CHECKING:
    from valuerec.serve.service import ServeService

__all__ = ["StoreFollower"]

log = logging.getLogger("valuerec.serve")


class StoreFollower:
    """Reads the change feed of the service's store and hands each batch to the service."""

    #: feed rows older than this are pruned (by any follower)
    KEEP_SECONDS = 3600.0
    #: how often a follower prunes
    PRUNE_SECONDS = 60.0

    def __init__(self, service: ServeService, interval: float) -> None:
        self.service = service
        self.interval = interval
        self.position: str | None = None
        self._last_read = time.monotonic()
        self._last_prune = 0.0
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
            with self.service.repo.lock:
                self.position, _ = self.service.repo.store.changes(None)
            self._last_read = time.monotonic()

    def poll(self) -> int:
        """Read and apply what changed since the last read; returns the feed rows applied.

        After a gap longer than half the feed's retention, everything is reloaded instead.
        """
        if not self.enabled:
            return 0
        repo = self.service.repo
        if self.position is None or time.monotonic() - self._last_read > self.KEEP_SECONDS / 2:
            self.begin()
            self.service.reload_state()
            return 0
        with repo.lock:
            position, frame = repo.store.changes(self.position)
        self.service.apply_changes(frame)
        # moved only once applied: a failure above reads the same rows again next time
        self.position, self._last_read = position, time.monotonic()
        if time.monotonic() - self._last_prune >= self.PRUNE_SECONDS:
            with repo.lock:
                repo.store.prune_changes(self.KEEP_SECONDS)
            self._last_prune = time.monotonic()
        return len(frame)

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
