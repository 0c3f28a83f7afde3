"""The in-memory state every recommendation is served from: histories and the catalogue.

Latency is why this exists: a recommendation must not wait for a database query, so each
user's positive history and the catalogue's titles, categories and hidden flags are loaded
once at start-up and kept current by the write endpoints.

Concurrency model: writers (thread-pool endpoints) never mutate a value a reader may hold;
they build the new value and replace it with one assignment (a dict item, or an attribute),
which is atomic in CPython. A reader therefore sees a user's history before or after an
event, never half of it, without taking a lock on the hot path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

__all__ = ["Catalog", "Histories"]

_EMPTY: frozenset[str] = frozenset()


def _per_user(frame: pd.DataFrame) -> Iterator[tuple[str, list[str]]]:
    """(user, item ids in row order) for each user of ``user_id, item_id`` rows.

    By runs of equal users on the rows grouped by user (stably, when they are not already):
    pandas' ``groupby(...).agg(list)`` ran a Python loop per row, 8.5 s of a server's
    start-up on 5.6M events, where this takes about 1 s.
    """
    users = frame["user_id"].to_numpy(dtype=object)
    items = frame["item_id"].to_numpy(dtype=object)
    if len(users) and not pd.Index(users).is_monotonic_increasing:
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
    ends = np.r_[starts[1:], len(users)] if len(users) else []
    listed = items.tolist()
    for start, end in zip(starts, ends, strict=True):
        yield users[start], listed[start:end]


class Histories:
    """Each user's positive items (oldest first: the last ``limit`` events, after the items
    seen only before them, :meth:`_window`) and negative items."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._positive: dict[str, tuple[str, ...]] = {}
        self._negative: dict[str, frozenset[str]] = {}
        self._write = threading.Lock()  # one writer at a time; readers never wait

    def __len__(self) -> int:
        return len(self._positive)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._positive or user_id in self._negative

    def get(self, user_id: str) -> tuple[str, ...]:
        return self._positive.get(user_id, ())

    def users(self) -> list[str]:
        """Every user with a positive or negative history."""
        return list({**self._positive, **self._negative})

    def negatives(self, user_id: str) -> frozenset[str]:
        return self._negative.get(user_id, _EMPTY)

    def _window(self, items: list[str]) -> tuple[str, ...]:
        """The last ``limit`` positive events in order, after each item seen only before them
        (once, in order of its last occurrence).

        Sequence models read the tail as it happened; the items before it keep every seen
        item masked and in order-blind models' item set (a user who bought X and then viewed
        Y a thousand times was offered X again, scored as a fan of Y alone). Memory grows
        with a user's distinct items, which the catalogue bounds, not with their events.
        """
        if len(items) <= self.limit:
            return tuple(items)
        recent = items[-self.limit :]
        inside = set(recent)
        earlier = [i for i in dict.fromkeys(reversed(items[: -self.limit])) if i not in inside]
        return (*reversed(earlier), *recent)

    def _build(
        self, frame: pd.DataFrame
    ) -> tuple[dict[str, tuple[str, ...]], dict[str, frozenset[str]]]:
        """``user_id, item_id, negative`` rows (oldest first per user) -> the two maps."""
        neg = frame["negative"].astype(bool).to_numpy()
        positive = {u: self._window(items) for u, items in _per_user(frame.loc[~neg])}
        negative = {u: frozenset(items) for u, items in _per_user(frame.loc[neg])}
        return positive, negative

    def load(self, frame: pd.DataFrame) -> None:
        """Replace every history (start-up)."""
        positive, negative = self._build(frame)
        with self._write:
            self._positive, self._negative = positive, negative

    def replace(self, user_ids: Iterable[str], frame: pd.DataFrame) -> None:
        """Set the histories of ``user_ids`` from their rows in ``frame`` (after new events)."""
        positive, negative = self._build(frame)
        with self._write:
            for u in user_ids:
                if u in positive:
                    self._positive[u] = positive[u]
                else:
                    self._positive.pop(u, None)
                if u in negative:
                    self._negative[u] = negative[u]
                else:
                    self._negative.pop(u, None)

    def drop(self, user_id: str) -> None:
        """Forget a user: the next recommendation treats them as new."""
        with self._write:
            self._positive.pop(user_id, None)
            self._negative.pop(user_id, None)


class Catalog:
    """Titles, categories and hidden flags of items, and the masks built from them.

    ``version`` changes with every edit; masks over a model's item vocabulary are cached per
    version, so hiding an item costs one vectorised ``isin`` on the next request and nothing
    after that.
    """

    def __init__(self) -> None:
        self.titles: dict[str, str] = {}
        self.categories: dict[str, frozenset[str]] = {}
        self.hidden: frozenset[str] = _EMPTY
        self.version = 0
        self._write = threading.Lock()

    @staticmethod
    def _split(category: object) -> frozenset[str]:
        if not isinstance(category, str):
            return _EMPTY
        return frozenset(c.strip().lower() for c in category.split("|") if c.strip())

    def load(self, items: pd.DataFrame, hidden: Iterable[str]) -> None:
        # only text is a title: a NULL title comes back from the store as NaN, which is truthy
        # and would be served as the title "nan" (and reasons "similar to nan")
        titles = {
            str(i): t
            for i, t in zip(items["item_id"], items["title"], strict=True)
            if isinstance(t, str) and t
        }
        cats = {
            str(i): self._split(c) for i, c in zip(items["item_id"], items["category"], strict=True)
        }
        with self._write:
            self.titles, self.categories = titles, cats
            self.hidden = frozenset(hidden)
            self.version += 1

    def refresh(self, item_ids: Iterable[str], items: pd.DataFrame, hidden: Iterable[str]) -> None:
        """Set ``item_ids`` as the store now holds them: their rows in ``items`` (``item_id,
        title, category``; an id without a row is no longer catalogued) and which of them are
        ``hidden`` (another process's writes, read from the store's change feed)."""
        ids, hidden = set(item_ids), set(hidden)
        rows = {
            str(i): (t, c)
            for i, t, c in zip(items["item_id"], items["title"], items["category"], strict=True)
        }
        with self._write:
            titles, cats = dict(self.titles), dict(self.categories)
            for i in ids:
                title, category = rows.get(i, (None, None))
                if isinstance(title, str) and title:
                    titles[i] = title
                else:
                    titles.pop(i, None)
                if i in rows:
                    cats[i] = self._split(category)
                else:
                    cats.pop(i, None)
            self.titles, self.categories = titles, cats
            self.hidden = (self.hidden - ids) | (hidden & ids)
            self.version += 1

    def upsert(self, item_id: str, title: str | None, category: str | None) -> None:
        with self._write:
            titles, cats = dict(self.titles), dict(self.categories)
            if title:
                titles[item_id] = title
            else:
                titles.pop(item_id, None)
            cats[item_id] = self._split(category)
            self.titles, self.categories = titles, cats
            self.version += 1

    def remove(self, item_id: str) -> None:
        with self._write:
            titles, cats = dict(self.titles), dict(self.categories)
            titles.pop(item_id, None)
            cats.pop(item_id, None)
            self.titles, self.categories = titles, cats
            self.hidden = self.hidden | {item_id}
            self.version += 1

    def set_hidden(self, item_id: str, hidden: bool) -> None:
        with self._write:
            self.hidden = self.hidden | {item_id} if hidden else self.hidden - {item_id}
            self.version += 1

    def allowed(
        self, vocabulary: pd.Index, category: str | None, cache: dict[tuple, np.ndarray | None]
    ) -> np.ndarray | None:
        """Boolean mask of items that may be shown (not hidden, in ``category``); None: all.

        ``cache`` belongs to the caller (one per model vocabulary); stale versions are dropped.
        """
        key = (self.version, category.strip().lower() if category else None)
        if key in cache:
            return cache[key]  # the mask, or None when every item may be shown
        if any(k[0] != self.version for k in cache) or len(cache) > 256:
            cache.clear()
        keep = ~vocabulary.isin(list(self.hidden)) if self.hidden else None
        if key[1] is not None:
            cats = self.categories
            in_cat = np.fromiter(
                (key[1] in cats.get(item, _EMPTY) for item in vocabulary),
                dtype=bool,
                count=len(vocabulary),
            )
            keep = in_cat if keep is None else keep & in_cat
        mask = None if keep is None else np.asarray(keep)
        if mask is not None and mask.all():
            mask = None
        cache[key] = mask
        return mask
