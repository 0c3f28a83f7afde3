"""The service layer: what every endpoint does, with no HTTP in it.

Routes (:mod:`valuerec.serve.app`) validate and delegate here. Recommendations are computed
from memory only: a user's positive history (:class:`~valuerec.serve.state.Histories`) is
scored by the model as a history (:meth:`~valuerec.serve.registry.ModelHandle.score`, the
model's ``score_histories`` without its per-call overhead), so an event posted a moment ago
already counts and a deleted user is a stranger; hidden items and the category filter are
masked out of the score matrix before the top-k, and seen and disliked items are set to
``-inf`` in one vectorised assignment.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pydantic import ValidationError

from valuerec.artifacts import ArtifactStore
from valuerec.data.store import Store
from valuerec.evaluate.ranking import top_k
from valuerec.recommend.explain import because
from valuerec.recommend.rerank import (
    ItemValues,
    UserValues,
    candidate_pool,
    look_types,
    value_rerank,
)
from valuerec.serve.config import ServeSettings
from valuerec.serve.errors import ApiError, field_name
from valuerec.serve.exposures import ExposureLog
from valuerec.serve.follow import StoreFollower
from valuerec.serve.metrics import Metrics
from valuerec.serve.paging import decode_cursor, encode_cursor, keyset_page
from valuerec.serve.registry import ModelHandle, ModelRegistry
from valuerec.serve.repository import FLAGS_TABLE, Repository
from valuerec.serve.schemas import (
    EventError,
    EventIn,
    EventsOut,
    ItemIn,
    ItemOut,
    ItemPage,
    ItemPatch,
    RecItem,
    SegmentOut,
    SegmentsOut,
    SegmentUser,
    SegmentUsersOut,
    SessionIn,
    SimilarItem,
    SimilarOut,
    UserIn,
    UserOut,
    UserPage,
    UserPatch,
    UserRecommendations,
    ValueOut,
)
from valuerec.serve.state import Catalog, Histories
from valuerec.value.segments import SEGMENTS, segment_name

__all__ = ["ServeService"]

log = logging.getLogger("valuerec.serve")

#: candidates the value-aware re-ranking chooses from (at least; 5 x k for a larger k)
#: the event type ItemValues counts as a sale (its price and purchase rate come from these)
PURCHASE = "purchase"


def _finite_or_none(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class Ranked:
    """One history's top-k as plain values (rank = position + 1), before it becomes the
    response: pydantic objects for the FastAPI routes, JSON bytes for the fast path."""

    cold: bool
    item_ids: list[str]
    scores: list[float]
    titles: list[str | None]
    reasons: list[str]

    def items(self) -> list[RecItem]:
        return [RecItem(**d) for d in self.dicts()]

    def dicts(self) -> list[dict[str, Any]]:
        return [
            {"rank": i + 1, "item_id": j, "score": s, "title": t, "reason": r}
            for i, (j, s, t, r) in enumerate(
                zip(self.item_ids, self.scores, self.titles, self.reasons, strict=True)
            )
        ]


class ServeService:
    """Histories, catalogue, models and the store, behind the operations the API offers."""

    #: new purchases reach value-aware ranking's purchase rates within this many seconds
    SALES_REFRESH_SECONDS = 5.0

    def __init__(self, store: Store, arts: ArtifactStore, settings: ServeSettings) -> None:
        self.settings = settings
        self.roles = settings.events
        self.repo = Repository(store, self.roles.exposure)
        self.histories = Histories(settings.history_limit)
        self.catalog = Catalog()
        self.models = ModelRegistry(arts, self.repo, settings)
        self.metrics = Metrics(self._served_models)
        #: ItemValues with the stamp and (monotonic) time it was built at: an item write bumps
        #: the stamp (:meth:`_item_values_changed`), a stored purchase marks sales pending
        #: (:meth:`_sales_stored`); the next value-aware request rebuilds (item_values)
        self._item_values: tuple[int, float, ItemValues] | None = None
        self._item_values_stamp = 0
        self._sales_pending = False
        self._refresh: threading.Thread | None = None  # a background sales refresh, if any
        self._refresh_guard = threading.Lock()  # starts at most one of them
        self._user_values: tuple[Any, UserValues] | None = None
        #: purchases stored since the value snapshot's last refresh (:meth:`_value_refresh`)
        self._value_pending = False
        self._value_refreshed = time.monotonic()
        self._value_thread: threading.Thread | None = None
        self._value_stop = threading.Event()
        self.exposures = ExposureLog(
            self._write_exposures, self.roles.write_back_type, settings.exposure_flush_seconds
        )
        self.follower = StoreFollower(self, settings.sync_seconds)

    # -- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        """Read the catalogue, every history and the current models (start-up)."""
        self.repo.ensure_schema()
        self.follower.begin()  # before the reads: what lands meanwhile is read again
        self._load_catalog()
        self._load_histories()
        self.models.load_all()
        log.info(
            "serving %d users' histories, recommenders %s",
            len(self.histories),
            ", ".join(f"{n} {h.version}" for n, h in self.models.recommenders.items()) or "none",
        )

    def close(self) -> None:
        self.follower.stop()
        self.exposures.stop()
        self._value_stop.set()
        self.wait_item_values()
        self.wait_value_refresh()
        self.repo.close()

    def _served_models(self) -> list[tuple[str, str, str]]:
        served = [(h.artifact, h.version, "recommender") for h in self.models.recommenders.values()]
        snap = self.models.value_or_none
        if snap is not None:
            served.append((snap.artifact, snap.version, "value"))
        return served

    # -- other processes' writes (a shared PostgreSQL store: serve/follow.py) ---------------
    def reload_state(self) -> None:
        """Read the catalogue and every history again, as at start-up (after a gap in the
        change feed), forget the users that are gone, and refresh what purchases feed."""
        with self.repo.lock:
            known = self._known_users()
            self._load_catalog()
            self._load_histories()
            self._item_values_changed()
            self._sales_stored()
            gone = self.repo.missing_users(sorted(known))
        self._forget(gone)

    def _load_catalog(self) -> None:
        """Every title, category and hidden flag from the store (start-up, reloads)."""
        self.catalog.load(self.repo.catalogue(), self.repo.hidden_items())

    def _load_histories(self) -> None:
        """Every user's history from the store (start-up, reloads)."""
        self.histories.load(self.repo.interactions(self.roles))

    def _known_users(self) -> set[str]:
        """Users this server has seen in the store: a history or a value prediction. (Not
        every user with pending exposures: a new visitor is in the store only once their
        exposures are written, and forgetting them would drop those.)"""
        snap = self.models.value_or_none
        users = set(self.histories.users())
        if snap is not None:
            users.update(snap.table.index.astype(str))
        return users

    def _forget(self, user_ids: Sequence[str]) -> None:
        """Forget deleted users as :meth:`delete_user` does: their pending exposures (whose
        flush would store them again) and value predictions (one relabelling for all)."""
        if not user_ids:
            return
        self.exposures.discard(user_ids)
        self.models.forget_users(user_ids)

    def apply_changes(self, changes: pd.DataFrame) -> None:
        """Bring memory up to date with rows of the store's change feed
        (:meth:`~valuerec.data.postgres.PostgresStore.changes`), written by any process.

        Each changed user's history and each changed item's catalogue entry is read again
        from the store, so applying a change twice, or after this server's own update of the
        same key, leaves the same state. Events that are all exposures change no history and
        are skipped (a server's write-back is most of the feed). Deleted events come from a
        user's deletion: that user is forgotten as :meth:`delete_user` forgets (value
        snapshot, pending exposures; a user created again meanwhile is predicted again at the
        next value refresh). A row for every user (a bulk write, TRUNCATE) reloads every
        history, and a bulk deletion forgets every user the store no longer knows.
        """
        if changes.empty:
            return
        exposure = set(self.roles.exposure)
        events = changes.loc[changes["table_name"] == "events"]
        items = changes.loc[changes["table_name"].isin(["items", FLAGS_TABLE])]
        kinds = [set(k) if isinstance(k, list) else None for k in events["kinds"]]
        removed = events["op"].isin(["DELETE", "TRUNCATE"]).to_numpy()
        # None: the kinds are not known (TRUNCATE), so they may be anything
        moved = np.array(
            [k is None or bool(k - exposure) or r for k, r in zip(kinds, removed, strict=True)],
            dtype=bool,
        )
        every = events["key"].isna().to_numpy(dtype=bool)
        every_user = bool((every & moved).any())
        users = list(dict.fromkeys(events.loc[moved & ~every, "key"]))
        sold = any(k is None or PURCHASE in k for k, m in zip(kinds, moved, strict=True) if m)
        deleted = list(dict.fromkeys(events.loc[removed & ~every, "key"]))
        every_item = bool(items["key"].isna().any())
        item_ids = list(dict.fromkeys(items["key"].dropna()))
        gone: list[str] = []
        with self.repo.lock:
            known = sorted(self._known_users()) if (every & removed).any() else []
            if every_user:
                self._load_histories()
            elif users:
                self.histories.replace(users, self.repo.interactions(self.roles, users))
            if every_item:
                self._load_catalog()
            elif item_ids:
                self.catalog.refresh(
                    item_ids, self.repo.catalogue(item_ids), self.repo.hidden_items(item_ids)
                )
            if every_item or item_ids or removed.any():
                self._item_values_changed()  # prices, or purchases that are gone
            if sold:
                self._sales_stored()
            gone = [*deleted, *self.repo.missing_users(known)] if known else deleted
        self._forget(list(dict.fromkeys(gone)))

    # -- recommendations -------------------------------------------------------------------
    def _rank(
        self,
        handle: ModelHandle,
        histories: Sequence[Sequence[str]],
        negatives: Sequence[frozenset[str]],
        k: int,
        exclude_seen: bool,
        category: str | None,
        value_weight: float = 0.0,
        user_ids: Sequence[str | None] | None = None,
    ) -> list[Ranked]:
        """The top-k of each history, with masks applied before the cut.

        One row at a time after the scoring: requests are mostly for one user, and 1-D
        ``argpartition``/``lexsort`` on a row cost a fraction of their 2-D forms with
        ``take_along_axis`` (a batch has at most a few hundred rows). With ``value_weight``
        > 0 the best relevance candidates are re-ordered for value (:meth:`_value_order`);
        ``user_ids`` (None for an anonymous session) find each user's churn risk and LTV.
        """
        model = handle.model
        prepared = [handle.prepare(h) for h in histories]
        scores = handle.score(prepared, user_ids)
        allowed = self.catalog.allowed(handle.item_ids, category, handle.masks)
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        n = scores.shape[1]
        kk = min(k, n)
        titles = self.catalog.titles
        results = []
        users = user_ids if user_ids is not None else [None] * len(histories)
        # a history that tells the model nothing (content: items without text) is scored
        # with the cold-start scores, so it is said to be cold, as the CLI says
        blank = model._cold_histories([hist.seq for hist in prepared])
        for row, hist, neg, user, told_nothing in zip(
            scores, prepared, negatives, users, blank, strict=True
        ):
            if exclude_seen:
                row[hist.items] = -np.inf
            if neg:
                row[handle.indices(neg)] = -np.inf
            if value_weight > 0:
                items = self._value_order(handle, row, kk, value_weight, user)
                s = row[items]
            else:
                # the evaluator's own rule: by score, ties to the lower item index, also at
                # the cut (argpartition alone let an arbitrary one of the tied items in)
                top = top_k(row[None, :], kk)[0]
                items = top[top >= 0]
                s = row[items]
            cold = len(hist.seq) == 0 or bool(told_nothing)
            history = None if cold else hist.seq
            reasons = because(model, history, items, titles, ids=handle.ids)
            ids = handle.ids[items].tolist()
            results.append(
                Ranked(cold, ids, s.tolist(), [titles.get(i) for i in ids], list(reasons))
            )
        return results

    def _value_order(
        self, handle: ModelHandle, row: np.ndarray, k: int, value_weight: float, user: str | None
    ) -> np.ndarray:
        """The top ``k`` of one scored row, re-ranked by the value-aware blend.

        The pool is the :func:`candidate_pool` best items by relevance (masked ones never
        enter it), in relevance order, so that ``value_weight`` trades relevance for
        expected money among items that are relevant at all; prices and purchase
        propensities come from the store (:meth:`item_values`), churn risk and LTV
        percentile from the served value model.
        """
        size = min(int(np.isfinite(row).sum()), candidate_pool(k))
        pool = top_k(row[None, :], size)[0]  # relevance order, ties to the lower item index
        if len(pool) == 0:
            return pool
        arrays = self.item_values().take(handle.ids[pool])
        risk, rank = self.user_values().get(user) if user is not None else (None, None)
        order = value_rerank(
            row[pool],
            arrays.price,
            arrays.p_purchase,
            value_weight,
            k=k,
            margin_rate=arrays.margin_rate,
            churn_risk=risk,
            ltv_rank=rank,
        )
        return pool[order]

    def item_values(self) -> ItemValues:
        """Each item's price and purchase propensity, from the store.

        Built on first use and again after an item write or a stored purchase, not per
        request: it is an aggregate over every event. Built under the repository lock (the
        connection is not for two threads at once, and a write must be seen whole); the
        freshness check on the hot path takes no lock.

        After an item write (a price, a deletion) the request waits for the rebuild: it must
        not rank by a price that is gone. New purchases only nudge the purchase rates, so once
        :attr:`SALES_REFRESH_SECONDS` have passed the rebuild runs in a background thread and
        requests go on with the values they have until it lands (0.2-0.6 s at 5M events on
        DuckDB that no request should pay for; PostgreSQL aggregates on the server). Looks
        (views, exposures) change the purchase rates too, but arrive on every page view and
        move them slowly: they count from the next rebuild.
        """
        cached = self._item_values
        if cached is None or cached[0] != self._item_values_stamp:
            self._rebuild_item_values(sales_only=False)
        elif self._sales_pending and time.monotonic() - cached[1] >= self.SALES_REFRESH_SECONDS:
            with self._refresh_guard:
                if self._refresh is None or not self._refresh.is_alive():
                    self._refresh = threading.Thread(
                        target=self._refresh_sales,
                        name="valuerec-item-values",
                        daemon=True,
                    )
                    self._refresh.start()
        assert self._item_values is not None
        return self._item_values[2]

    def _rebuild_item_values(self, sales_only: bool) -> None:
        """Rebuild under the repository lock, unless a rebuild that saw everything (every
        item write, and for ``sales_only`` the pending sales) landed while this one waited."""
        with self.repo.lock:
            cached = self._item_values
            fresh = cached is not None and cached[0] == self._item_values_stamp
            if fresh and (not sales_only or not self._sales_pending):
                return
            stamp, self._sales_pending = self._item_values_stamp, False
            try:
                # the settings' exposure types are looks: a server writing back `impression`
                # counts those as shown, as `recommend for --config` does
                built = ItemValues.from_store(
                    self.repo.store, look_types=look_types(self.roles.exposure)
                )
            except BaseException:
                self._sales_pending = True  # the next request tries again
                raise
            self._item_values = (stamp, time.monotonic(), built)

    def _refresh_sales(self) -> None:
        try:
            self._rebuild_item_values(sales_only=True)
        except Exception:  # a background thread has no caller to raise to
            log.exception("rebuilding item values after new purchases failed; retried later")

    def wait_item_values(self, timeout: float | None = None) -> None:
        """Wait for a background rebuild of :meth:`item_values` to land (tests, shutdown)."""
        refresh = self._refresh
        if refresh is not None:
            refresh.join(timeout)

    def _item_values_changed(self) -> None:
        """Mark :meth:`item_values` stale; call it holding the repository lock, after the
        write, so that a rebuild (under the same lock) sees the write with the new stamp."""
        self._item_values_stamp += 1

    def _sales_stored(self) -> None:
        """New purchases: item values are refreshed within :attr:`SALES_REFRESH_SECONDS`,
        the value snapshot within ``value_refresh_seconds`` (hold the repository lock, as for
        :meth:`_item_values_changed`). A value model that could not be served for want of
        purchases is tried again at once, whatever ``value_refresh_seconds`` (a start would
        serve it now)."""
        self._sales_pending = True
        refresh = self.settings.value_refresh_seconds > 0 and self.models.value_or_none is not None
        if refresh or self.models.waits_for_purchases:
            # under the guard the refresher decides to stop under too: a purchase is never
            # left pending behind a thread that has just seen nothing pending
            with self._refresh_guard:
                self._value_pending = True
                if self._value_thread is None:
                    self._value_thread = threading.Thread(
                        target=self._value_refresh, name="valuerec-value-refresh", daemon=True
                    )
                    self._value_thread.start()

    def _value_refresh(self) -> None:
        """Background: predict every customer again once ``value_refresh_seconds`` have
        passed since the last refresh, and again while purchases keep arriving.

        Predicting every customer is an aggregate over the whole log (seconds for a large
        store, under the repository lock), so it is batched: at most one refresh per
        interval, however many purchases arrive, and none while nothing new was bought.

        While no value model is served because the store could not predict (no purchases
        yet), the first purchases load it without waiting (every value request is a 503 till
        then); a retry that fails again waits :attr:`SALES_REFRESH_SECONDS`, not to hold the
        store after every purchase.
        """
        interval = self.settings.value_refresh_seconds
        retried = -math.inf  # when a load waiting for purchases last failed
        while True:
            with self._refresh_guard:
                waiting = self.models.waits_for_purchases
                if (
                    not self._value_pending
                    or self._value_stop.is_set()
                    or not (waiting or interval > 0)  # served now, and 0: no refreshes
                ):
                    self._value_thread = None
                    return
            if waiting:
                wait = retried + self.SALES_REFRESH_SECONDS - time.monotonic()
            else:
                wait = self._value_refreshed + interval - time.monotonic()
            if wait > 0 and self._value_stop.wait(wait):
                continue  # stopping: the check above ends the thread
            with self._refresh_guard:
                self._value_pending = False
            try:
                self.models.refresh_value()
            except Exception:  # a background thread has no caller to raise to
                log.exception("predicting customer value again after new purchases failed")
            self._value_refreshed = time.monotonic()
            if self.models.waits_for_purchases:
                retried = self._value_refreshed

    def wait_value_refresh(self, timeout: float | None = None) -> None:
        """Wait for a background value refresh to land (tests, shutdown)."""
        thread = self._value_thread
        if thread is not None:
            thread.join(timeout)

    def user_values(self) -> UserValues:
        """Churn risk and LTV percentile of every customer, from the served value model
        (empty without one: the blend then applies the full weight to everyone)."""
        snap = self.models.value_or_none
        cached = self._user_values
        if cached is None or cached[0] is not snap:
            if snap is None:
                values = UserValues(pd.Index([]), np.zeros(0), np.zeros(0))
            else:
                table = snap.table
                values = UserValues.from_predictions(
                    pd.DataFrame(
                        {
                            "user_id": table.index.astype(str),
                            "ltv": table["ltv"].to_numpy(),
                            "p_alive": table["p_alive"].to_numpy(),
                        }
                    )
                )
            cached = (snap, values)
            self._user_values = cached
        return cached[1]

    def recommend_users(
        self,
        user_ids: Sequence[str],
        *,
        k: int,
        model: str | None,
        exclude_seen: bool,
        category: str | None,
        write_back: bool,
        value_weight: float = 0.0,
        model_in: str = "query",
    ) -> tuple[ModelHandle, list[UserRecommendations]]:
        """``model_in``: where the request named the model (``query``, or ``body`` for the
        batch endpoint), so that an unknown one is reported where it was sent."""
        handle, ranked = self._recommend(
            user_ids, k, model, exclude_seen, category, write_back, value_weight, model_in
        )
        out = [
            UserRecommendations(
                user_id=u,
                model=handle.name,
                version=handle.version,
                cold_start=r.cold,
                items=r.items(),
            )
            for u, r in zip(user_ids, ranked, strict=True)
        ]
        return handle, out

    def recommend_user_json(
        self,
        user_id: str,
        *,
        k: int,
        model: str | None,
        exclude_seen: bool,
        category: str | None,
        write_back: bool,
        value_weight: float = 0.0,
    ) -> bytes:
        """:meth:`recommend_users` for one user, straight to the response's JSON bytes.

        The fast path's serialiser (:mod:`valuerec.serve.fastpath`): the same fields as
        ``UserRecommendations``, written by orjson from plain values instead of validated
        pydantic objects, which cost more than ranking the items did.
        """
        handle, (r,) = self._recommend(
            [user_id], k, model, exclude_seen, category, write_back, value_weight
        )
        return orjson.dumps(
            {
                "user_id": user_id,
                "model": handle.name,
                "version": handle.version,
                "cold_start": r.cold,
                "items": r.dicts(),
            }
        )

    def _recommend(
        self,
        user_ids: Sequence[str],
        k: int,
        model: str | None,
        exclude_seen: bool,
        category: str | None,
        write_back: bool,
        value_weight: float,
        model_in: str = "query",
    ) -> tuple[ModelHandle, list[Ranked]]:
        # taken once: a swap cannot split a request
        handle = self.models.recommender(model, model_in)
        hist = self.histories
        ranked = self._rank(
            handle,
            [hist.get(u) for u in user_ids],
            [hist.negatives(u) for u in user_ids],
            k,
            exclude_seen,
            category,
            value_weight,
            user_ids,
        )
        if write_back:
            for u, r in zip(user_ids, ranked, strict=True):
                shown = list(zip(range(1, len(r.item_ids) + 1), r.item_ids, r.scores, strict=True))
                if shown:
                    self.exposures.add(u, shown, handle.artifact, handle.version)
        return handle, ranked

    def recommend_session(self, body: SessionIn) -> tuple[ModelHandle, bool, list[RecItem]]:
        """An anonymous visitor: the session's positive events are the whole history."""
        handle = self.models.recommender(body.model, "body")
        events = sorted(
            enumerate(body.events),
            key=lambda e: (e[1].timestamp is None, e[1].timestamp or datetime.min, e[0]),
        )
        positive = [ev.item_id for _, ev in events if self.roles.role(ev.event_type) == "positive"]
        negative = frozenset(
            ev.item_id for _, ev in events if self.roles.role(ev.event_type) == "negative"
        )
        (ranked,) = self._rank(
            handle,
            [positive],
            [negative],
            body.k,
            body.exclude_seen,
            body.category,
            body.value_weight,
        )
        return handle, ranked.cold, ranked.items()

    def similar(self, item_id: str, k: int, model: str | None, category: str | None) -> SimilarOut:
        handle = self.models.recommender(model)
        vocab = handle.item_ids
        if vocab.get_indexer([item_id])[0] < 0:
            raise ApiError(404, f"item {item_id!r} is unknown to model {handle.name}")
        allowed = self.catalog.allowed(vocab, category, handle.masks)
        want = k if allowed is None else len(vocab)
        sim = handle.model.similar_items(item_id, k=want)
        if allowed is not None:
            sim = sim[allowed[vocab.get_indexer(sim["similar_item_id"])]].head(k)
        titles = self.catalog.titles
        items = [
            SimilarItem(rank=i + 1, item_id=str(j), score=float(s), title=titles.get(j))
            for i, (j, s) in enumerate(zip(sim["similar_item_id"], sim["score"], strict=True))
        ]
        return SimilarOut(item_id=item_id, model=handle.name, version=handle.version, items=items)

    # -- events ----------------------------------------------------------------------------
    def post_events(self, raw: list[Any]) -> EventsOut:
        """Validate each event on its own, store the good ones, refresh their users' histories."""
        good: list[EventIn] = []
        positions: list[int] = []  # each good event's index in the posted list
        errors: list[EventError] = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                errors.append(EventError(index=i, field="(event)", reason="must be a JSON object"))
                continue
            try:
                good.append(EventIn.model_validate(item))
                positions.append(i)
            except ValidationError as exc:
                errors.extend(
                    EventError(index=i, field=field_name(tuple(e["loc"])), reason=e["msg"])
                    for e in exc.errors()
                )
        if not good:
            self._refuse_batch(len(raw), errors)
        now = datetime.now(UTC).replace(tzinfo=None)
        frame = pd.DataFrame(
            {
                "event_id": [e.event_id for e in good],
                "user_id": [e.user_id for e in good],
                "item_id": [e.item_id for e in good],
                "event_type": [e.event_type for e in good],
                "timestamp": pd.Series([e.timestamp or now for e in good], dtype="datetime64[us]"),
                "value": pd.Series([e.value for e in good], dtype="float64"),
                "quantity": pd.Series([e.quantity for e in good], dtype="float64"),
                "rating": pd.Series([e.rating for e in good], dtype="float64"),
                "properties": [
                    None if e.properties is None else json.dumps(e.properties) for e in good
                ],
            }
        )
        # one lock from write to history refresh: two posts for one user must not refresh out
        # of order (the later refresh would otherwise overwrite the fuller history)
        with self.repo.lock:
            result = self.repo.ingest_events(frame, source="api:/events")
            if result.stored:
                users = list(dict.fromkeys(e.user_id for e in good))
                self.histories.replace(users, self.repo.interactions(self.roles, users))
                if any(e.event_type == PURCHASE for e in good):
                    self._sales_stored()
        if result.quarantined:  # refused by ingest's own checks: say which and why
            errors = sorted(
                [*errors, *self._quarantined(result.run_id, positions)], key=lambda e: e.index
            )
            if result.quarantined == len(good):
                self._refuse_batch(len(raw), errors)
        rejected = len(raw) - len(good) + result.quarantined
        self.metrics.events.labels("stored").inc(result.stored)
        self.metrics.events.labels("duplicate").inc(result.duplicates)
        self.metrics.events.labels("rejected").inc(rejected)
        return EventsOut(
            received=len(raw),
            accepted=len(good) - result.quarantined,
            stored=result.stored,
            duplicates=result.duplicates,
            rejected=rejected,
            errors=errors,
        )

    def _refuse_batch(self, received: int, errors: list[EventError]) -> None:
        """The 422 for a batch without an event that could be stored."""
        # counted before the 422: a batch with no valid event is rejected events all the same
        self.metrics.events.labels("rejected").inc(received)
        raise ApiError(
            422,
            f"no valid event among {received}: nothing stored",
            [{"location": "body", **e.model_dump()} for e in errors],
        )

    def _quarantined(self, run_id: int, positions: list[int]) -> list[EventError]:
        """The errors of the events ingest quarantined in run ``run_id``: its rows are the
        validated events in order (1-based), so ``positions`` maps them back to the batch.
        The API's validation mirrors ingest's, so this is a backstop for any rule the two
        do not share (a lone surrogate in ``properties`` was one), never a silent drop."""
        rows = self.repo.store.fetch(
            "SELECT row, field, reason FROM quarantine WHERE run_id = ? ORDER BY row", [run_id]
        )
        return [
            EventError(index=positions[int(row) - 1], field=field or "(event)", reason=reason)
            for row, field, reason in rows
        ]

    def _write_exposures(self, frame: pd.DataFrame) -> int:
        """Store a flush of exposures, less those of users deleted since they were shown.

        On one server a deletion drops the user's pending exposures itself (``discarding``);
        a deletion through another server (or another worker) reaches this one with the
        next read of the change feed, and a flush before that read would store the deleted
        user again. So a user this server had seen in the store (a history, a value) whom the
        store no longer knows is left out; a new visitor, never seen, is not.
        """
        if not self.repo.store.local:
            # per user, not _known_users(): a set of every user each second costs a large store
            snap = self.models.value_or_none
            users = [
                u
                for u in frame["user_id"].unique()
                if u in self.histories or (snap is not None and u in snap.table.index)
            ]
            gone = set(self.repo.missing_users(users)) if users else set()
            if gone:
                frame = frame.loc[~frame["user_id"].isin(gone)]
                if frame.empty:
                    return 0
        stored = self.repo.ingest_events(frame, source="api:write_back").stored
        self.metrics.exposures.inc(stored)
        return stored

    # -- users -----------------------------------------------------------------------------
    def get_user(self, user_id: str) -> UserOut:
        row = self.repo.get_user(user_id)
        if row is None:
            raise ApiError(404, f"no user {user_id!r}")
        return UserOut(**row)

    def list_users(self, limit: int, cursor: str | None) -> UserPage:
        rows, nxt = keyset_page(self.repo.list_users, "user_id", limit, cursor, "users")
        return UserPage(items=[UserOut(**r) for r in rows], next_cursor=nxt)

    # Writes of users and items read, then write, then read back, all under the repository's
    # lock: a DELETE landing between the read and the write would otherwise be undone (the row
    # written back), and two creates of one id would both succeed. The lock is re-entrant, so
    # the repository's own methods (which take it too) run inside; nothing here takes another
    # lock that a holder of one might then wait on (the catalogue's lock is a leaf, the
    # exposure flush lock and the registry's swap lock are always taken before this one).
    def create_user(self, body: UserIn) -> UserOut:
        with self.repo.lock:
            if self.repo.get_user(body.user_id) is not None:
                raise ApiError(409, f"user {body.user_id!r} already exists: PATCH it instead")
            self.repo.put_user(body.model_dump())
            return self.get_user(body.user_id)

    def update_user(self, user_id: str, body: UserPatch) -> UserOut:
        with self.repo.lock:
            row = self.repo.get_user(user_id)
            if row is None:
                raise ApiError(404, f"no user {user_id!r}")
            self.repo.put_user({**row, **body.model_dump(exclude_unset=True)})
            return self.get_user(user_id)

    def delete_user(self, user_id: str) -> int:
        """Forget a user everywhere: their events, their row, their history, pending exposures."""
        # no exposure flush, and no event post for this user, may land between the two
        with self.exposures.discarding(user_id), self.repo.lock:
            deleted = self.repo.delete_user(user_id)
            self.histories.drop(user_id)
            if deleted:
                self._item_values_changed()  # their purchases are gone
                # and the end of the log may have moved: predicted again, as a restart would
                self._sales_stored()
        self.models.forget_user(user_id)
        if deleted is None:
            raise ApiError(404, f"no user {user_id!r}")
        return deleted

    # -- items -----------------------------------------------------------------------------
    def get_item(self, item_id: str) -> ItemOut:
        row = self.repo.get_item(item_id)
        if row is None:
            raise ApiError(404, f"no item {item_id!r} in the catalogue")
        return ItemOut(**row)

    def list_items(self, limit: int, cursor: str | None) -> ItemPage:
        rows, nxt = keyset_page(self.repo.list_items, "item_id", limit, cursor, "items")
        return ItemPage(items=[ItemOut(**r) for r in rows], next_cursor=nxt)

    def create_item(self, body: ItemIn) -> ItemOut:
        with self.repo.lock:  # check, write and read back as one (see create_user)
            if self.repo.get_item(body.item_id) is not None:
                raise ApiError(409, f"item {body.item_id!r} already exists: PATCH it instead")
            self._save_item(body.model_dump())
            return self.get_item(body.item_id)

    def update_item(self, item_id: str, body: ItemPatch) -> ItemOut:
        """Partial update; an item the models know but the catalogue lacks gets a row.

        Such a row keeps the item's hidden flag: a deleted item edited later stays out of
        every recommendation until the edit itself says ``"hidden": false``.
        """
        changes = body.model_dump(exclude_unset=True)
        if changes.get("hidden", False) is None:
            changes.pop("hidden")  # "hidden": null leaves the flag as it is
        with self.repo.lock:  # read, write and read back as one (see create_user)
            row = self.repo.get_item(item_id)
            if row is None:
                known = any(
                    h.item_ids.get_indexer([item_id])[0] >= 0
                    for h in self.models.recommenders.values()
                )
                if not known:
                    raise ApiError(404, f"no item {item_id!r} in the catalogue or any loaded model")
                row = {"item_id": item_id, "hidden": item_id in self.repo.hidden_items()}
            self._save_item({**row, **changes})
            return self.get_item(item_id)

    def _save_item(self, record: dict[str, Any]) -> None:
        """Write an item and mirror it in the catalogue, both under the repository's lock, so
        the catalogue sees writes and deletions in the order the store did."""
        with self.repo.lock:
            self.repo.put_item(record)
            self._item_values_changed()  # its price, margin or category may have changed
            self.catalog.upsert(record["item_id"], record.get("title"), record.get("category"))
            self.catalog.set_hidden(record["item_id"], bool(record.get("hidden")))

    def delete_item(self, item_id: str) -> None:
        with self.repo.lock:
            if not self.repo.delete_item(item_id):
                raise ApiError(404, f"no item {item_id!r} in the catalogue")
            self._item_values_changed()  # its catalogue price is gone
            self.catalog.remove(item_id)  # in store order (see _save_item)

    # -- value and segments ----------------------------------------------------------------
    def user_value(self, user_id: str) -> ValueOut:
        snap = self.models.value
        table = snap.table
        if user_id not in table.index:
            raise ApiError(
                404,
                f"no value prediction for user {user_id!r}: value models score customers "
                f"with a purchase before {snap.as_of:%Y-%m-%d %H:%M:%S} (the predictions' as_of; "
                "purchases posted since reach them within value_refresh_seconds)",
            )
        row = table.loc[user_id]
        return ValueOut(
            user_id=user_id,
            model=snap.name,
            version=snap.version,
            as_of=snap.as_of.replace(tzinfo=UTC),
            horizon_days=snap.horizon_days,
            pred_transactions=float(row["pred_transactions"]),
            pred_spend=float(row["pred_spend"]),
            p_alive=float(row["p_alive"]),
            churn_probability=1.0 - float(row["p_alive"]),
            ltv=float(row["ltv"]),
            ltv_low=float(row["ltv_low"]),
            ltv_high=float(row["ltv_high"]),
            segment=str(row["segment"]),
        )

    def segments(self) -> SegmentsOut:
        snap = self.models.value
        rows = [
            SegmentOut(
                segment=r.segment,
                users=int(r.users),
                share_users=_finite_or_none(r.share_users),
                predicted_value=float(r.predicted_value),
                share_value=_finite_or_none(r.share_value),
                median_recency_days=_finite_or_none(r.median_recency_days),
                median_frequency=_finite_or_none(r.median_frequency),
            )
            for r in snap.summary.itertuples(index=False)
        ]
        return SegmentsOut(
            model=snap.name,
            version=snap.version,
            as_of=snap.as_of.replace(tzinfo=UTC),
            segments=rows,
        )

    def segment_users(self, name: str, limit: int, cursor: str | None) -> SegmentUsersOut:
        """A segment's customers by predicted LTV (highest first), keyset-paged."""
        segment = segment_name(name)
        if segment is None:
            raise ApiError(404, f"no segment {name!r}: one of {', '.join(SEGMENTS)}")
        snap = self.models.value
        pos = decode_cursor(cursor, f"segment:{segment}", ("after", "ltv"))
        ranked = snap.ranked
        mask = (ranked["segment"] == segment).to_numpy()
        if pos is not None:  # decode_cursor checked the types
            ltv, after = float(pos["ltv"]), pos["after"]
            values = ranked["ltv"].to_numpy()
            mask = mask & (
                (values < ltv) | ((values == ltv) & (ranked["user_id"].to_numpy() > after))
            )
        page = ranked.loc[mask].head(limit + 1)
        more = len(page) > limit
        page = page.head(limit)
        items = [
            SegmentUser(
                user_id=str(r.user_id),
                ltv=float(r.ltv),
                p_alive=float(r.p_alive),
                pred_spend=float(r.pred_spend),
                frequency=float(r.frequency),
                days_since_last=float(r.days_since_last),
                total_spend=float(r.total_spend),
            )
            for r in page.itertuples(index=False)
        ]
        nxt = None
        if more and items:
            nxt = encode_cursor(
                {"ltv": items[-1].ltv, "after": items[-1].user_id}, f"segment:{segment}"
            )
        return SegmentUsersOut(segment=segment, items=items, next_cursor=nxt)
