"""A daemon thread that runs one function every ``interval`` seconds until stopped.

The server's background writers and readers (the exposure log's flushes, the store follower)
share it, so that start-twice, stop-and-join and the stop signal's timing live in one place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Periodic"]


class Periodic:
    """Calls ``tick`` every ``interval`` seconds in a daemon thread named ``name``."""

    def __init__(self, name: str, interval: float, tick: Callable[[], object]) -> None:
        self.name, self.interval, self.tick = name, interval, tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def start(self) -> None:
        """Start the thread unless it runs (a second start is a no-op)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Signal the thread and wait for its current tick to end (at most ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
