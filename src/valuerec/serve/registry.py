"""The models a server holds, and hot swaps that fail no request.

Models come from the versioned artifacts (:class:`valuerec.artifacts.ArtifactStore`):
recommenders are ``rec-<name>``, value models ``value-<name>``. At start-up the server loads
the current version of every recommender and of one value model.

A hot swap (promote or rollback) loads the new version *completely* first (unpickle, build
the vocabulary, score one request to warm it up, for a value model precompute every
customer's prediction), then replaces one reference: the registry's dict of handles, or its
value snapshot, is rebuilt and assigned in one statement. A request takes its handle once, at
its start, and uses it to the end, so every request is served entirely by the old version or
entirely by the new one and none fails. If the new version cannot be loaded the old one stays
in service and the pointer on disk is put back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd
import psycopg
import scipy.sparse as sp

from valuerec.artifacts import (
    META_FILE,
    MODEL_FILE,
    ArtifactError,
    ArtifactStore,
    DamagedArtifactError,
)
from valuerec.data.store import StoreError
from valuerec.recommend.base import Recommender
from valuerec.serve.config import ServeSettings
from valuerec.serve.errors import ApiError
from valuerec.serve.repository import Repository
from valuerec.value.base import ValueModel
from valuerec.value.segments import relabel, segment_summary

__all__ = ["REC_PREFIX", "VALUE_PREFIX", "ModelHandle", "ModelRegistry", "ValueSnapshot"]

log = logging.getLogger("valuerec.serve")

REC_PREFIX = "rec-"
VALUE_PREFIX = "value-"
#: value models by preference when the settings name none: the strongest on CDNOW first
VALUE_PREFERENCE = ("ensemble", "transformer", "lightgbm", "pareto", "bgnbd", "naive")


@dataclass(eq=False)
class ModelHandle:
    """One loaded recommender version and what serving needs beside it."""

    name: str
    artifact: str
    version: str
    meta: dict[str, Any]
    model: Recommender
    loaded_at: float
    masks: dict[tuple, np.ndarray | None] = field(default_factory=dict)  # Catalog.allowed
    memo_size: int = 100_000  # histories whose positions are remembered (see prepare)
    #: item ids as a plain array and id -> position: a dict lookup per history item is
    #: several times cheaper than a pandas indexer call on short lists (the hot path)
    ids: np.ndarray = field(init=False, repr=False)
    positions: dict[str, int] = field(init=False, repr=False)

    #: the model scores a history as a set of items (the base ``_score_sequences``): serving
    #: then builds the CSR rows itself, without scipy's COO round trip
    order_blind: bool = field(init=False, repr=False)
    #: the model adds per-user side information to a history's scores (``profile_scores``)
    has_profile: bool = field(init=False, repr=False)
    #: the model scores named histories itself (``_history_scores``: a hybrid, als-side)
    own_history_scores: bool = field(init=False, repr=False)

    _memo: dict[int, tuple[tuple[str, ...], Prepared]] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        # as text, the store's ids: responses take them with one ``tolist()``
        self.ids = np.asarray([str(item) for item in self.model.item_ids_], dtype=object)
        self.positions = {item: j for j, item in enumerate(self.ids)}
        self.order_blind = type(self.model)._score_sequences is Recommender._score_sequences
        self.has_profile = type(self.model).profile_scores is not Recommender.profile_scores
        self.own_history_scores = (
            type(self.model)._history_scores is not Recommender._history_scores
        )

    @property
    def item_ids(self) -> pd.Index:
        return self.model.item_ids_

    def indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Positions of the known items among ``item_ids`` (unknown ones are skipped)."""
        pos = self.positions
        return np.fromiter(
            (j for j in (pos.get(i, -1) for i in item_ids) if j >= 0), dtype=np.int64
        )

    def prepare(self, history: Sequence[str]) -> Prepared:
        """A history as this model's item positions, in order and as a sorted unique set.

        A user's stored history is an immutable tuple that the server replaces (never edits)
        when an event arrives, so its positions are remembered per tuple, by identity: the
        translation from ids (a dict lookup per item, most of a request's cost for a long
        history) is done once per history version, not once per request. The memo holds the
        tuple itself, so the identity cannot be reused while the entry lives; it is bounded
        and emptied when full. Other sequences (an anonymous session's list) are translated
        every time.
        """
        if not isinstance(history, tuple):
            return self._prepare(history)
        hit = self._memo.get(id(history))
        if hit is not None and hit[0] is history:
            return hit[1]
        prepared = self._prepare(history)
        if len(self._memo) >= self.memo_size:
            self._memo.clear()
        self._memo[id(history)] = (history, prepared)
        return prepared

    def _prepare(self, history: Sequence[str]) -> Prepared:
        seq = self.indices(history)
        items = np.unique(seq)
        row = None
        if self.order_blind and len(items):
            # built here, once per history version: scipy's checks when it builds a matrix
            # cost more than the multiplication with it
            row = sp.csr_matrix(
                (np.ones(len(items), np.float32), items, np.array([0, len(items)])),
                shape=(1, len(self.ids)),
            )
        return Prepared(seq, items, row)

    def score(
        self, histories: Sequence[Prepared], user_ids: Sequence[str | None] | None = None
    ) -> np.ndarray:
        """Scores (one row per history, float64) for histories given by :meth:`prepare`.

        The same scores as ``model.score_histories`` on the item ids (an empty history gets
        the cold-start scores), minus its per-request costs, which were most of a
        recommendation's latency: the pandas id lookup (positions come from :meth:`prepare`)
        and, for order-blind models, the COO matrix (the CSR rows are built directly, each
        row's items unique and sorted, value 1, as the base class does).
        """
        model = self.model
        out = np.empty((len(histories), len(self.ids)), dtype=np.float64)
        warm = [r for r, h in enumerate(histories) if len(h.seq)]
        if warm and self.own_history_scores and user_ids is not None:
            # the model folds a named user's side information into its own history scoring
            named = [user_ids[r] for r in warm]
            out[warm] = model._history_scores([histories[r].seq for r in warm], named)
        elif warm:
            if self.order_blind and len(warm) == 1:  # one user: plain indexing, no fancy
                out[warm[0]] = model._score_rows(histories[warm[0]].row)[0]
            elif self.order_blind:
                cols = [histories[r].items for r in warm]
                indptr = np.zeros(len(cols) + 1, dtype=np.int64)
                np.cumsum([len(c) for c in cols], out=indptr[1:])
                rows = sp.csr_matrix(
                    (np.ones(int(indptr[-1]), np.float32), np.concatenate(cols), indptr),
                    shape=(len(cols), len(self.ids)),
                )
                out[warm] = model._score_rows(rows)
            else:
                named = None if user_ids is None else [user_ids[r] for r in warm]
                out[warm] = model._history_scores([histories[r].seq for r in warm], named)
            if self.order_blind and user_ids is not None and self.has_profile:
                out[warm] += model.profile_scores([user_ids[r] for r in warm])
        if len(warm) < len(histories):
            cold = [r for r, h in enumerate(histories) if not len(h.seq)]
            out[cold] = model.cold_start_scores()
        return out


@dataclass(frozen=True, eq=False)
class Prepared:
    """A history in one model's item positions: ``seq`` in order, ``items`` sorted unique,
    and for order-blind models ``row``, ``items`` as a one-row CSR matrix (value 1)."""

    seq: np.ndarray
    items: np.ndarray
    row: sp.csr_matrix | None = None


@dataclass(eq=False)
class ValueSnapshot:
    """One loaded value model and its predictions for every customer (by user id)."""

    name: str
    artifact: str
    version: str
    meta: dict[str, Any]
    as_of: datetime
    horizon_days: float
    table: pd.DataFrame  # index user_id; segment, ltv, p_alive, ...
    summary: pd.DataFrame
    ranked: pd.DataFrame  # every customer by ltv desc, user_id: the order of segment lists
    model: ValueModel | None = None  # what predicts the customers again (refresh_value)


def _segment_tables(seg: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A snapshot's tables from its customers' segment rows: by user, by LTV, the summary."""
    ranked = seg.sort_values(["ltv", "user_id"], ascending=[False, True], kind="stable")
    return {
        "table": seg.set_index("user_id", drop=False),
        "ranked": ranked.reset_index(drop=True),
        "summary": segment_summary(seg),
    }


#: the metadata fields ``GET /models`` lists per version, and the types it can show them as
_VERSION_FIELDS: dict[str, tuple[type, ...]] = {
    "created_at": (str,),
    "fit_seconds": (int, float),
    "data_fingerprint": (str,),
    "metrics": (dict,),
}


def _transient(exc: BaseException) -> bool:
    """A failure of the database rather than of the artifact (a dropped connection)."""
    return isinstance(exc, psycopg.Error | duckdb.Error | StoreError)


class _CannotPredict(Exception):
    """A value version that unpickled and checked but could not predict from the store as it
    is (no purchase events yet): the store's failure, not the version's. Its files will not
    change, so it waits for purchases instead (:meth:`ModelRegistry.refresh_value`); the loaded
    model comes along so that the retry does not unpickle it again."""

    def __init__(self, cause: Exception, model: ValueModel, meta: dict[str, Any]) -> None:
        super().__init__(str(cause))
        self.cause, self.model, self.meta = cause, model, meta


def _why(exc: BaseException) -> str:
    """An exception as logs and errors name it: the store's own one for :class:`_CannotPredict`."""
    cause = exc.cause if isinstance(exc, _CannotPredict) else exc
    return f"{type(cause).__name__}: {cause}"


_Entry = TypeVar("_Entry")


def _still_current(
    failed: dict[tuple[str, str], _Entry], wanted: dict[str, str | None]
) -> dict[tuple[str, str], _Entry]:
    """The entries of a table of failed (artifact, version) whose version ``CURRENT`` still
    names (``wanted``: each artifact's): a version named again after another is tried anew."""
    return {key: entry for key, entry in failed.items() if wanted.get(key[0]) == key[1]}


def _kind(artifact: str) -> str:
    if artifact.startswith(REC_PREFIX):
        return "recommender"
    if artifact.startswith(VALUE_PREFIX):
        return "value"
    return "other"


class ModelRegistry:
    """Loaded recommenders by short name (``ease``) and the served value model."""

    def __init__(self, arts: ArtifactStore, repo: Repository, settings: ServeSettings) -> None:
        self.arts = arts
        self.repo = repo
        self.settings = settings
        self._recs: dict[str, ModelHandle] = {}
        self._value: ValueSnapshot | None = None
        self._value_error: str | None = None
        #: (artifact, version) that failed to load -> (its files then, see _files; why): skipped
        #: by follow_current while CURRENT names it and its files are unchanged, shown by
        #: describe
        self._unloadable: dict[tuple[str, str], tuple[tuple[Any, ...], str]] = {}
        #: value versions that loaded but could not predict from the store then (see
        #: _CannotPredict) -> (files, why, model, meta): skipped by follow_current as the
        #: unloadable are, tried again by refresh_value once purchases are stored
        self._waiting: dict[tuple[str, str], tuple[tuple[Any, ...], str, ValueModel, dict]] = {}
        #: one promotion (or snapshot edit, see forget_user) at a time; readers never wait
        self._swap = threading.Lock()
        #: whether _drop_removed has said that the models folder lists no recommender
        self._said_empty_root = False
        #: one value refresh at a time; it predicts outside the swap lock (see refresh_value)
        self._refreshing = threading.Lock()
        #: users forgotten while a refresh predicts from reads made before (None: no refresh)
        self._forgotten_meanwhile: set[str] | None = None

    # -- reads (hot path: no locks) --------------------------------------------------------
    @property
    def recommenders(self) -> dict[str, ModelHandle]:
        return self._recs

    @property
    def value_or_none(self) -> ValueSnapshot | None:
        return self._value

    @property
    def value(self) -> ValueSnapshot:
        snap = self._value
        if snap is None:
            why = self._value_error or "no value model artifact: run `valuerec train`"
            raise ApiError(503, f"no value model is loaded ({why})")
        return snap

    def recommender(self, name: str | None, location: str = "query") -> ModelHandle:
        """The handle to serve ``name`` (default: the configured or first loaded model).

        ``location``: where the request gave ``model`` (``query`` or ``body``), for the error.
        """
        recs = self._recs
        if not recs:
            raise ApiError(503, "no recommendation model is loaded: run `valuerec train` first")
        if name is None:
            default = self.settings.default_model
            return recs[default] if default in recs else recs[sorted(recs)[0]]
        key = name.strip().lower().removeprefix(REC_PREFIX)
        if key not in recs:
            raise ApiError(
                422,
                f"unknown model {name!r}: loaded models are {', '.join(sorted(recs))}",
                [{"location": location, "field": "model", "reason": "not a loaded recommender"}],
            )
        return recs[key]

    # -- loading ---------------------------------------------------------------------------
    def load_all(self) -> None:
        """Load the current version of every recommender and of the served value model."""
        recs = {}
        names = self.arts.names()
        for artifact in names:
            if _kind(artifact) != "recommender":
                continue
            handle = self._load_current(artifact, self._load_recommender)
            if isinstance(handle, ModelHandle):
                recs[handle.name] = handle
        self._recs = recs
        default = self.settings.default_model
        if recs and default not in recs:  # served anyway: the first loaded one, said once here
            log.warning(
                "default_model %r is not loaded (loaded: %s): requests naming no model get %s",
                default, ", ".join(sorted(recs)), sorted(recs)[0],
            )  # fmt: skip
        candidates = self._value_candidates(names)
        if not candidates:
            wanted = self.settings.value_model
            if wanted:  # said at start-up, not only in the 503 of the first value request
                have = sorted(n for n in self.arts.names() if _kind(n) == "value")
                self._value_error = (
                    f"no artifact {VALUE_PREFIX}{wanted} (settings: value_model); value "
                    f"artifacts: {', '.join(have) or 'none'}"
                )
                log.warning("value_model %r is not served: %s", wanted, self._value_error)
            else:
                self._value_error = "no value model artifact: run `valuerec train`"
            return
        self._value_error = self._serve_first_value(names)

    def _serve_first_value(self, names: Sequence[str]) -> str | None:
        """Serve the first value candidate whose ``CURRENT`` loads and predicts; returns why
        none does (None: one is served).

        The first of the preference order that loads: a shadow model (saved unpromoted: no
        CURRENT) or a broken current version of a preferred kind left the server with no value
        model at all, though the next one loaded (a configured one is the only candidate).
        """
        candidates = self._value_candidates(names)
        reasons = []
        for rank, artifact in enumerate(candidates):
            loaded = self._load_current(artifact, self._load_value)
            if isinstance(loaded, ValueSnapshot):
                self._install(loaded)
                # the waits of this one and of the later candidates are moot now
                moot = set(candidates[rank:])
                self._waiting = {k: w for k, w in self._waiting.items() if k[0] not in moot}
                return None
            reasons.append(loaded)
        return "; ".join(reasons)

    def _load_current(
        self, artifact: str, load: Callable[[str, str], ModelHandle | ValueSnapshot]
    ) -> ModelHandle | ValueSnapshot | str:
        """``artifact``'s current version loaded, or why it cannot be (logged here, once).

        A version that fails is remembered as follow_current's are (:meth:`_remember`): one
        that failed on its own files is not tried again while they are unchanged, and
        ``GET /models`` says why it is not served. The same failure is logged once.
        """
        version, files = None, ()
        try:
            version = self.arts.current(artifact)
            files = self._files(artifact, version)
            known = self._unloadable.get((artifact, version))
            if known is not None and known[0] == files:  # said when it failed
                return f"cannot load {artifact} {version}: {known[1]}"
            return load(artifact, version)
        except Exception as exc:  # one broken artifact must not keep the server down
            why = _why(exc)
            said = version is not None and self._failed(artifact, version) == why
            if version is not None:
                self._remember(artifact, version, files, exc)
            text = f"cannot load {artifact}{f' {version}' if version else ''}: {why}"
            if not said:
                log.warning("%s", text)
            return text

    def _value_candidates(self, names: Sequence[str]) -> list[str]:
        """The value artifacts this server may serve, best first: the one the settings name,
        else those of :data:`VALUE_PREFERENCE` that exist."""
        wanted = self.settings.value_model
        order = (wanted,) if wanted else VALUE_PREFERENCE
        return [VALUE_PREFIX + name for name in order if VALUE_PREFIX + name in names]

    def _files(self, artifact: str, version: str) -> tuple[Any, ...]:
        """Size and modification time of a version's files: a failed version whose files
        changed since (copied again, repaired) is tried again."""
        out: list[tuple[int, int] | None] = []
        for name in (MODEL_FILE, META_FILE):
            try:
                st = (self.arts.root / artifact / version / name).stat()
            except OSError:
                out.append(None)
            else:
                out.append((st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _failed(self, artifact: str, version: str) -> str | None:
        """Why ``version`` failed to load, while its files are still those that failed."""
        for table in (self._unloadable, self._waiting):
            entry = table.get((artifact, version))
            if entry is not None and entry[0] == self._files(artifact, version):
                return entry[1]
        return None

    def _remember(
        self, artifact: str, version: str, files: tuple[Any, ...], exc: BaseException
    ) -> None:
        """Record a failed load: the version's own failure until its files change, the
        store's (no purchases yet) until purchases are stored; the database's not at all (it
        is retried next round)."""
        key = (artifact, version)
        if isinstance(exc, _CannotPredict):
            self._waiting[key] = (files, _why(exc), exc.model, exc.meta)
        elif not _transient(exc):
            self._unloadable[key] = (files, _why(exc))

    def _load_recommender(self, artifact: str, version: str | None) -> ModelHandle:
        model, meta = self.arts.load(artifact, version)
        if not isinstance(model, Recommender):
            raise TypeError(
                f"{artifact} {meta['version']} holds a {type(model).__name__}, not a Recommender"
            )
        model.score_histories([[], list(model.item_ids_[:1])])  # warm up before serving
        return ModelHandle(
            name=artifact.removeprefix(REC_PREFIX),
            artifact=artifact,
            version=meta["version"],  # the folder's: load() refuses metadata naming another
            meta=meta,
            model=model,
            loaded_at=time.time(),
        )

    def _load_value_model(self, artifact: str, version: str | None) -> tuple[ValueModel, dict]:
        """A value model unpickled and checked, without its predictions (the costly part)."""
        model, meta = self.arts.load(artifact, version)
        if not isinstance(model, ValueModel):
            raise TypeError(
                f"{artifact} {meta['version']} holds a {type(model).__name__}, not a ValueModel"
            )
        return model, meta

    def _load_value(self, artifact: str, version: str | None) -> ValueSnapshot:
        """A value version's snapshot; one waiting for purchases (unpickled and checked, its
        files unchanged since) is predicted from its loaded model, not unpickled again."""
        waiting = self._waiting.get((artifact, version)) if version is not None else None
        if waiting is not None and waiting[0] == self._files(artifact, version):
            return self._predict(artifact, waiting[2], waiting[3])
        model, meta = self._load_value_model(artifact, version)
        return self._predict(artifact, model, meta)

    def _predict(self, artifact: str, model: ValueModel, meta: dict[str, Any]) -> ValueSnapshot:
        """A loaded value model's snapshot: every customer predicted from the store now."""
        horizon = float(self.settings.value_horizon_days or model.horizon_days_)
        try:
            seg, when = self.repo.value_segments(model, horizon)
        except Exception as exc:
            if _transient(exc):
                raise
            raise _CannotPredict(exc, model, meta) from exc
        return ValueSnapshot(
            name=artifact.removeprefix(VALUE_PREFIX),
            artifact=artifact,
            version=meta["version"],  # the folder's: load() refuses metadata naming another
            meta=meta,
            as_of=when,
            horizon_days=horizon,
            model=model,
            **_segment_tables(seg),
        )

    def refresh_value(self) -> bool:
        """Predict the served value model's customers again from the store as it is now.

        The snapshot is computed at start-up and promotion; purchases posted since then are
        in the store but not in it (a new buyer had no prediction, a steady one kept last
        week's LTV and segment). The same model, no refit: only the inputs are newer, and
        ``as_of`` moves to the end of the log. Returns whether a snapshot was replaced (or,
        while none is served for want of purchases, installed: :meth:`_serve_waiting`).

        The prediction (seconds on a large store) runs outside the swap lock, so a user's
        deletion and a promotion need not wait for it; only installing it is under the lock.
        A promotion installed meanwhile wins (its predictions are as new, from its own model),
        and users forgotten meanwhile, whom the refresh's earlier reads still saw, are dropped
        from it before it is installed.
        """
        if self._value is None:  # nothing to predict again, maybe one to serve at last
            return bool(self._waiting) and self._serve_waiting()
        with self._refreshing:
            with self._swap:
                snap = self._value
                if snap is None or snap.model is None:
                    return False
                self._forgotten_meanwhile = set()
            try:
                seg, when = self.repo.value_segments(snap.model, snap.horizon_days)
            except BaseException:
                with self._swap:
                    self._forgotten_meanwhile = None
                raise
            # one hold of the lock from reading who was forgotten to installing: a deletion
            # in between would be neither recorded nor applied to what is installed
            with self._swap:
                gone, self._forgotten_meanwhile = self._forgotten_meanwhile, None
                now = self._value
                if now is None or now.model is not snap.model:
                    return False  # promoted (or followed) meanwhile
                if gone:
                    seg = relabel(seg.loc[~seg["user_id"].isin(list(gone))])
                self._value = replace(now, as_of=when, **_segment_tables(seg))
        return True

    @property
    def waits_for_purchases(self) -> bool:
        """No value model is served because the store could not predict (no purchases yet):
        :meth:`refresh_value` tries again, and the service calls it when purchases arrive."""
        return self._value is None and bool(self._waiting)

    def _serve_waiting(self) -> bool:
        """Serve the value model a start would, now (:meth:`_serve_first_value`); returns
        whether one is served now.

        Called by :meth:`refresh_value` when purchases were stored while nothing was served:
        a failure for want of purchases was otherwise never tried again (its files do not
        change), a 503 until a restart. The same failure again is not logged again.
        """
        with self._swap:  # as a promotion: a deletion meanwhile waits, then is applied
            if self._value is not None:
                return False  # promoted or followed meanwhile
            why = self._serve_first_value(self.arts.names())
            if why is not None:
                self._value_error = why
                return False
            log.info("now serving %s %s (purchases are stored)", self.value.artifact,
                     self.value.version)  # fmt: skip
            return True

    def follow_current(self) -> list[str]:
        """Serve what a restart would: each artifact's ``CURRENT`` version, and the value model
        the settings prefer among the artifacts there now; returns the artifacts swapped.

        ``CURRENT`` moves under a running server when another process promotes: a second
        server's ``POST /models/.../promote`` (behind a load balancer, one server gets the
        call), ``valuerec train`` or ``recommend fit`` into a PostgreSQL store, Python's
        ``ArtifactStore.promote``. Each swap is a promotion's (loaded whole, then one
        reference), under the swap lock and checked again there, so a promotion through this
        server's API in the meantime is not undone. A version that fails to load is logged
        once and not tried again (the server keeps what it serves) while ``CURRENT`` names it
        and its files are unchanged: once the pointer has named another version, or the files
        were copied again, it is tried again. A failure of the database instead (a dropped
        connection) is tried again next round, and a value model's failure to predict from the
        store (no purchases yet) once purchases are stored (:meth:`refresh_value`). A
        recommender whose folder was removed is no longer served (a restart would not load it,
        and it could not be promoted).

        The value model is the first of the preference order (or the configured one) whose
        ``CURRENT`` loads, as at start-up; if the served one's new version fails, its old
        version is kept rather than another model's served.
        """
        names = self.arts.names()
        wanted = {artifact: self._wanted(artifact) for artifact in names}
        # a failure counts while CURRENT names that version: moved away and back, it is new
        self._unloadable = _still_current(self._unloadable, wanted)
        self._waiting = _still_current(self._waiting, wanted)
        done = self._drop_removed(names)
        for artifact in names:
            version = wanted[artifact]
            if (
                _kind(artifact) == "recommender"
                and version is not None
                and version != self._serving_version(artifact)
                and self._follow(artifact, version, self._load_recommender)
            ):
                done.append(artifact)
        value = self._follow_value(names, wanted)
        return done if value is None else [*done, value]

    def _follow_value(self, names: Sequence[str], wanted: dict[str, str | None]) -> str | None:
        """Serve the value model a restart would (see follow_current); the artifact swapped."""
        snap = self._value
        for artifact in self._value_candidates(names):
            version = wanted.get(artifact)
            if version is None:
                continue  # no CURRENT (a shadow model) or one naming nothing: a start skips it
            if snap is not None and (snap.artifact, snap.version) == (artifact, version):
                return None  # the best loadable one is served
            if self._follow(artifact, version, self._load_value):
                return artifact
            if self._failed(artifact, version) is None:
                return None  # the database failed, or CURRENT moved meanwhile: next round
            if snap is not None and snap.artifact == artifact:
                return None  # its old version is kept, as a recommender's is
        return None

    def _drop_removed(self, names: Sequence[str]) -> list[str]:
        """Stop serving recommenders whose artifact folder was removed; returns them.

        Not when the root is missing or lists no recommender at all (an unmounted or moved
        folder, or the empty mount point an unmounted volume leaves): emptying a running
        server for that would turn every recommendation into a 503. Removing the last one
        therefore takes a restart.
        """
        gone = [h.artifact for h in self._recs.values() if h.artifact not in names]
        if not gone or not self.arts.root.is_dir():
            return []
        if not any(_kind(n) == "recommender" for n in names):
            if not self._said_empty_root:  # once, not every poll
                log.warning(
                    "%s lists no recommender: still serving %s (an unmounted folder?)",
                    self.arts.root, ", ".join(gone),
                )  # fmt: skip
                self._said_empty_root = True
            return []
        self._said_empty_root = False
        with self._swap:
            self._recs = {k: h for k, h in self._recs.items() if h.artifact in names}
        log.warning("no longer serving %s: removed from %s", ", ".join(gone), self.arts.root)
        return gone

    def _wanted(self, artifact: str) -> str | None:
        """``CURRENT`` of ``artifact``; None when it names nothing loadable."""
        try:
            return self.arts.current(artifact)
        except ArtifactError:
            return None

    def _follow(
        self, artifact: str, version: str, load: Callable[[str, str], ModelHandle | ValueSnapshot]
    ) -> bool:
        """Load ``version`` and install it, under the swap lock as a promotion is: a user
        deleted while a value model loads is forgotten by it (``forget_users`` waits), not
        lost when the new snapshot, predicted before the deletion, is installed."""
        if self._failed(artifact, version) is not None:
            return False
        with self._swap:
            if self._wanted(artifact) != version:
                return False  # moved again meanwhile: the next round follows it
            files = self._files(artifact, version)  # before: a copy made during the load counts
            try:
                loaded = load(artifact, version)
            except Exception as exc:
                self._remember(artifact, version, files, exc)
                log.warning(
                    "cannot load %s %s (made current elsewhere): %s; still serving %s",
                    artifact, version, _why(exc), self._serving_version(artifact) or "nothing",
                )  # fmt: skip
                return False
            self._install(loaded)
        log.info("now serving %s %s (made current elsewhere)", artifact, version)
        return True

    # -- admin -----------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """An artifact name from ``rec-ease``, ``value-bgnbd`` or a short ``ease``.

        In any case, as ``?model=EASE`` is (:meth:`recommender`): ``POST /models/EASE/promote``
        was a 404 although recommendations accepted the name. An exact match comes first.
        """
        known = self.arts.names()
        folded = {k.lower(): k for k in reversed(known)}  # reversed: the first one wins
        text = name.strip()
        for candidate in (text, REC_PREFIX + text, VALUE_PREFIX + text):
            if candidate in known:
                return candidate
        for candidate in (text, REC_PREFIX + text, VALUE_PREFIX + text):
            if candidate.lower() in folded:
                return folded[candidate.lower()]
        raise ApiError(404, f"no model {name!r} (known: {', '.join(known) or 'none'})")

    def _serving_version(self, artifact: str) -> str | None:
        kind = _kind(artifact)
        if kind == "recommender":
            h = self._recs.get(artifact.removeprefix(REC_PREFIX))
            return h.version if h else None
        snap = self._value
        return snap.version if kind == "value" and snap and snap.artifact == artifact else None

    def describe(self) -> list[dict[str, Any]]:
        """Every artifact: kind, versions, the current pointer, what is being served, and
        why the two differ (``error``) when the reason is known here.

        The reason was only in the server's log: a missing or unreadable ``CURRENT``, one
        naming a missing version (``current_version`` null), and a current version that
        failed to load (``serving_version`` another one).
        """
        rows = []
        for artifact in self.arts.names():
            error = None
            try:
                current: str | None = self.arts.current(artifact)
            except ArtifactError as exc:
                current, error = None, str(exc)
            serving = self._serving_version(artifact)
            if current is not None and current != serving:
                why = self._failed(artifact, current)
                if why is not None:
                    error = f"cannot load {current}: {why}; {self._kept(artifact, None)}"
            versions = [self._version_info(artifact, v) for v in self.arts.versions(artifact)]
            rows.append(
                {
                    "name": artifact,
                    "kind": _kind(artifact),
                    "current_version": current,
                    "serving_version": serving,
                    "versions": versions,
                    "error": error,
                }
            )
        return rows

    def _kept(self, artifact: str, previous: str | None) -> str:
        """What answers instead of a version that cannot be served, for an error message."""
        serving = self._serving_version(artifact)  # what answers, which CURRENT may not name
        if serving:
            return f"still serving {serving}"
        snap = self._value
        if _kind(artifact) == "value" and snap is not None and previous is None:
            return f"serving {snap.artifact} {snap.version} instead"
        return f"{artifact} stays at {previous}" if previous else f"{artifact} is not served"

    def _version_info(self, artifact: str, version: str) -> dict[str, Any]:
        """One version's row of :meth:`describe`. Damaged metadata (bad JSON, a folder copied
        from another artifact, a field of the wrong type) was a 500 for the whole list, the
        dashboard's model panel included: the version is listed with an ``error`` instead,
        and a field of the wrong type is left out."""
        try:
            meta = self.arts.meta(artifact, version)
            error = None
        except ArtifactError as exc:
            meta, error = {}, str(exc)
        info: dict[str, Any] = {"version": version}
        wrong = []
        for key, types in _VERSION_FIELDS.items():
            value = meta.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
                wrong.append(f"{key} is a {type(value).__name__}")
                value = None
            info[key] = value
        if wrong:
            path = self.arts.root / artifact / version / META_FILE
            error = f"{path}: left out, of the wrong type: {', '.join(wrong)}"
        info["error"] = error
        return info

    def promote(self, name: str, version: str) -> dict[str, Any]:
        """Make ``version`` current on disk and in this server (hot swap)."""
        artifact = self.resolve(name)
        with self._swap:
            try:
                previous = self.arts.current(artifact)
            except ArtifactError:
                previous = None
            try:
                self.arts.meta(artifact, version)  # an unknown version is the client's error
            except DamagedArtifactError:
                pass  # the deployment's: _load says so, naming the file
            except ArtifactError as exc:
                raise ApiError(404, str(exc)) from None
            loaded = self._load(artifact, version, previous)
            target = self.arts.promote(artifact, version)
            self._install(loaded)
        return {"name": artifact, "version": target, "previous_version": previous}

    def rollback(self, name: str) -> dict[str, Any]:
        """Point the model back at the version promoted before the current one (hot swap)."""
        artifact = self.resolve(name)
        with self._swap:
            previous = None
            try:
                previous = self.arts.current(artifact)
                target = self.arts.rollback(artifact)
            except DamagedArtifactError as exc:  # HISTORY: the deployment's error, not a 409
                raise ApiError(500, f"{exc}; {self._kept(artifact, previous)}") from None
            except ArtifactError as exc:
                raise ApiError(409, str(exc)) from None
            try:
                loaded = self._load(artifact, target, previous)
            except ApiError:
                self.arts.promote(artifact, previous)  # the pointer goes back with the service
                raise
            self._install(loaded)
        return {"name": artifact, "version": target, "previous_version": previous}

    def _load(
        self, artifact: str, version: str, previous: str | None
    ) -> ModelHandle | ValueSnapshot | None:
        """Everything a swap needs, loaded before anything changes (None: nothing to serve).

        A value model this server does not serve is unpickled and type-checked too (only its
        predictions are skipped): moving the pointer unchecked let a broken version become
        current, to fail at the next start or ``value predict``.
        """
        kind = _kind(artifact)
        try:
            if kind == "recommender":
                return self._load_recommender(artifact, version)
            if kind == "value" and self._serves_value(artifact):
                return self._load_value(artifact, version)
            if kind == "value":
                self._load_value_model(artifact, version)
        except Exception as exc:
            log.exception("cannot load %s %s", artifact, version)
            kept = self._kept(artifact, previous or "no version")
            raise ApiError(500, f"cannot load {artifact} {version} ({_why(exc)}); {kept}") from exc
        return None

    def _install(self, loaded: ModelHandle | ValueSnapshot | None) -> None:
        """The swap itself: one reference assignment that readers pick up on their next call."""
        if isinstance(loaded, ModelHandle):
            self._recs = {**self._recs, loaded.name: loaded}
        elif isinstance(loaded, ValueSnapshot):
            self._value = loaded
            self._value_error = None

    def forget_user(self, user_id: str) -> None:
        """Drop a deleted user's precomputed value, segment and list entry (a new snapshot),
        and label the others again: "top x %" rules move when the population does.

        A read-modify-write of the snapshot, so under the swap lock: a promotion installed
        between the read and the write would be overwritten by the old version, and one loaded
        before the user's deletion would keep them. (The caller must not hold the
        repository's lock: a swap takes it, under this one, to load predictions.)
        """
        self.forget_users([user_id])

    def forget_users(self, user_ids: Sequence[str]) -> None:
        """:meth:`forget_user` for several users at once: one relabelling, not one each."""
        with self._swap:
            if self._forgotten_meanwhile is not None:  # a refresh read before this deletion
                self._forgotten_meanwhile.update(user_ids)
            snap = self._value
            if snap is None:
                return
            drop = snap.ranked["user_id"].isin(list(user_ids)).to_numpy()
            if not drop.any():
                return
            seg = relabel(snap.ranked.loc[~drop])
            self._value = replace(snap, **_segment_tables(seg))

    def _serves_value(self, artifact: str) -> bool:
        """Whether promoting ``artifact`` swaps the served value model, as a restart would
        serve it: the configured one; without a setting, the served one, one earlier in
        :data:`VALUE_PREFERENCE` (it only moved its pointer, and stayed unserved until the next
        follow poll, or for ever with ``sync_seconds=0``), or any while none is served.
        Others only move their pointer."""
        wanted = self.settings.value_model
        if wanted:
            return VALUE_PREFIX + wanted == artifact
        snap = self._value
        if snap is None or snap.artifact == artifact:
            return True
        order = [VALUE_PREFIX + name for name in VALUE_PREFERENCE]
        if artifact not in order:
            return False
        return snap.artifact not in order or order.index(artifact) < order.index(snap.artifact)
