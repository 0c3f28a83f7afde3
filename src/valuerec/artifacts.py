"""Versioned model artifacts on disk: what the serving layer loads, promotes and rolls back.

Layout under a root folder (by default ``<store path>.models``, next to the store)::

    root/
      value-lightgbm/
        v0001/model.pkl  v0001/meta.json
        v0002/model.pkl  v0002/meta.json
        CURRENT          # "v0002": the version a server should load
        HISTORY          # JSON lines: every promotion and rollback, for audit and rollback

Why it is built this way:

* A reader must never see half an artifact. A version is written into a temporary folder next
  to its final place and renamed into place with :func:`os.replace` (one atomic rename on the
  same file system), so ``vNNNN/`` either does not exist or is complete.
* The ``CURRENT`` pointer is a tiny file, also replaced atomically (write a temporary file,
  then :func:`os.replace`), so a server reading it concurrently sees the old or the new version,
  never an empty or torn file. Promotion does not touch the versions themselves, so rolling
  back is instant and loses nothing.
* Versions are zero-padded increasing integers (``v0001``) so that they sort as text and as
  numbers alike, and a new one can be claimed without a central counter: the rename fails if
  another writer took the number first, and the writer moves on to the next.
* ``HISTORY`` is a stack of promotions (rollbacks pop it), so repeated rollbacks walk further
  back instead of flipping between two versions.

Models are stored with :mod:`pickle`: loading runs code from the file, so only load artifacts
this system wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import platform
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuerec import __version__
from valuerec.data.store import MODELS_SUFFIX, Store, deployment_path

try:  # POSIX advisory locks serialise promotions; elsewhere writers must not race
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ArtifactError",
    "ArtifactStore",
    "DamagedArtifactError",
    "data_fingerprint",
    "default_root",
    "exclusive_lock",
]

MODEL_FILE = "model.pkl"
META_FILE = "meta.json"
CURRENT_FILE = "CURRENT"
HISTORY_FILE = "HISTORY"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^v(\d{4,})$")
#: values summed exactly (as DECIMAL) in :func:`data_fingerprint`; larger ones cannot be cast
_EXACT_BELOW = 1e20


class ArtifactError(LookupError):
    """An unknown artifact name or version, or an operation the history does not allow."""


class DamagedArtifactError(ArtifactError):
    """A version that exists but whose files cannot be trusted: metadata that is no JSON
    object, or that names another artifact or version (a folder copied by hand); or a
    ``HISTORY`` line that is no JSON object.

    Its own class so that a server can tell "no such version" (the client's error) from a
    damaged one (the deployment's)."""


def default_root(db_path: str | os.PathLike[str]) -> Path:
    """Where the artifacts of the store at ``db_path`` live: ``db_path + ".models"``.

    Keeping them beside the store ties a model to the data it was trained on, and copying the
    two together moves a whole deployment. A PostgreSQL URL has no folder: its artifacts go
    under ``$VALUEREC_HOME`` (:func:`valuerec.data.store.deployment_path`).
    """
    path = str(db_path)
    if path == ":memory:":
        raise ValueError("an in-memory store has no default artifact folder: pass a root")
    return Path(deployment_path(path) + MODELS_SUFFIX)


def data_fingerprint(store: Store) -> str:
    """A short hash of what the store holds: event count, time range, counts and value by type.

    Saved in an artifact's metadata so that one can tell whether a model was trained on the
    data now in the store: any ingest that adds, or a re-ingest that changes, events changes
    it. (It is a cheap summary, not a content hash: an edit that keeps every count, the last
    timestamp and the total value per type would go unnoticed.)

    The value totals are summed exactly, as DECIMAL with 6 decimals: a sum of DOUBLEs depends
    on the order DuckDB's threads add a table's row groups (about 122,880 rows each) in, so an
    unchanged store of a few hundred thousand events gave a different fingerprint from run to
    run, and a report called its models stale. For amounts with at most 6 decimals the exact
    total, rounded to 6 decimals as before, is what the DOUBLE sum of a small table (one row
    group, summed in one order, its error far below 1e-6) gave: fingerprints saved from such
    stores keep matching; those of larger ones change once. Values of 1e20 or more, which
    DECIMAL(38, 6) cannot hold, are still summed as DOUBLEs. The SQL is DuckDB's: a PostgreSQL
    store runs it on its DuckDB mirror of the events.
    """
    n, last = store.con.execute("SELECT count(*), max(timestamp) FROM events").fetchone()
    # The CASE sits inside the CAST: DuckDB casts every row before an aggregate's FILTER
    # drops it, so a FILTER alone let one value of 1e32 or more (which ingest and the API
    # accept) fail the cast and every fit. The sums, hence the fingerprints, are unchanged.
    by_type = store.con.execute(
        "SELECT event_type, count(*),"
        " coalesce(sum(CAST("
        f"CASE WHEN abs(value) < {_EXACT_BELOW:.0f} THEN value END AS DECIMAL(38, 6))), 0),"
        f" coalesce(sum(value) FILTER (WHERE abs(value) >= {_EXACT_BELOW:.0f}), 0)"
        " FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    summary = {
        "events": int(n),
        "max_timestamp": last.isoformat() if last is not None else None,
        "by_type": [
            [str(t), int(c), round(float(exact) + float(huge), 6)] for t, c, exact, huge in by_type
        ],
    }
    blob = json.dumps(summary, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy of metadata: numpy scalars to Python, times to ISO text, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) between
    processes, for one read-modify-write of files beside it (POSIX only; elsewhere writers
    must not race). Lock a sidecar file, never one that is replaced by a rename: the next
    writer would open the new inode and lock nothing the holder holds."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename) to disk where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, text: str, errors: str = "strict") -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new content, nothing else.

    ``errors="surrogateescape"`` writes back bytes that were read with it unchanged."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors=errors) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _version_str(version: str | int) -> str:
    """``3``, ``"3"``, ``"v3"`` and ``"v0003"`` all name version ``v0003``."""
    text = str(version).strip()
    digits = text[1:] if text[:1] in ("v", "V") else text
    # ASCII digits only: "²".isdigit() is True but int("²") raises, and "١٢" (Arabic-Indic)
    # would name v0012 without ever appearing in a folder name
    if not (digits.isascii() and digits.isdigit()):
        raise ArtifactError(f"not a version: {version!r} (expected e.g. v0003 or 3)")
    return f"v{int(digits):04d}"


class ArtifactStore:
    """Versioned, atomically promoted model artifacts under one root folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    # -- paths and checks ------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ArtifactError(
                f"invalid artifact name {name!r}: use letters, digits, '.', '_' and '-'"
            )
        return self.root / name

    def _known(self, name: str) -> Path:
        folder = self._dir(name)
        if not folder.is_dir() or not self.versions(name):
            known = ", ".join(self.names()) or "none yet"
            raise ArtifactError(f"no artifact named {name!r} in {self.root} (known: {known})")
        return folder

    def _existing(self, name: str, version: str | int) -> str:
        v = _version_str(version)
        available = self.versions(name)
        if v not in available:
            raise ArtifactError(
                f"{name} has no version {v} (available: {', '.join(available) or 'none'})"
            )
        return v

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """Serialise pointer updates of one artifact between processes (POSIX only)."""
        folder = self._dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(folder / ".lock"):
            yield

    # -- reads -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Artifact names that have at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _NAME.match(p.name) and self.versions(p.name)
        )

    def versions(self, name: str) -> list[str]:
        """Complete versions of ``name``, oldest first (empty if there are none)."""
        folder = self._dir(name)
        if not folder.is_dir():
            return []
        found = [
            (int(m.group(1)), p.name)
            for p in folder.iterdir()
            if (m := _VERSION.match(p.name)) and (p / META_FILE).is_file()
        ]
        return [v for _, v in sorted(found)]

    def _promote_hint(self, name: str) -> str:
        """How to repair a pointer. There is no command-line promote: saying "promote" alone
        sent people looking for one."""
        versions = ", ".join(self.versions(name)) or "none"
        return (
            f"promote one of {versions} (POST /models/{name}/promote, or "
            f"ArtifactStore.promote in Python), or save a new version"
        )

    def _pointer(self, name: str) -> str:
        """What ``CURRENT`` says, whether or not that version still exists.

        Errors name the file: "not a version: ''" alone did not say which file was empty.
        """
        path = self._known(name) / CURRENT_FILE
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ArtifactError(
                f"{name} has no current version ({path} does not exist); {self._promote_hint(name)}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{path}: unreadable ({exc}); {self._promote_hint(name)}") from None
        if not text:
            raise ArtifactError(f"{path} is empty; {self._promote_hint(name)}")
        try:
            return _version_str(text)
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}; {self._promote_hint(name)}") from None

    def current(self, name: str) -> str:
        """The version ``CURRENT`` points at: what a server should load."""
        version = self._pointer(name)
        folder = self._dir(name)
        if version not in self.versions(name):
            if (folder / version).is_dir():  # the folder is there, its meta.json is not
                why = f"is incomplete ({folder / version / META_FILE} is missing)"
            else:  # its folder was deleted by hand
                why = f"is missing from {folder}"
            raise ArtifactError(
                f"{name}'s current version {version} {why}; {self._promote_hint(name)}"
            )
        return version

    def _read_meta(self, name: str, v: str) -> dict[str, Any]:
        """The metadata of the existing version ``v``, checked to be a JSON object that names
        this artifact and this version.

        A version folder copied from another artifact (or a meta.json edited by hand) would
        otherwise be served under the wrong name and report a version that does not exist;
        broken JSON was a bare JSONDecodeError (a 500 from the server's model list).
        """
        path = self._dir(name) / v / META_FILE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:  # deleted by hand since the version was listed
            raise ArtifactError(f"{name} {v} is incomplete: {path} is missing") from None
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
            raise DamagedArtifactError(f"{path}: damaged metadata ({exc})") from None
        if not isinstance(meta, dict):
            raise DamagedArtifactError(
                f"{path}: damaged metadata (a JSON {type(meta).__name__}, not an object)"
            )
        if meta.get("name") != name or meta.get("version") != v:
            raise DamagedArtifactError(
                f"{path} describes {meta.get('name')!r} {meta.get('version')!r}, not "
                f"{name!r} {v!r} (a version folder copied from another artifact?)"
            )
        return meta

    def meta(self, name: str, version: str | int | None = None) -> dict[str, Any]:
        """The metadata of one version (default: the current one), without loading the model.

        Raises :class:`DamagedArtifactError` for metadata that is no JSON object or that
        names another artifact or version.
        """
        v = self.current(name) if version is None else self._existing(name, version)
        return self._read_meta(name, v)

    def load(self, name: str, version: str | int | None = None) -> tuple[Any, dict[str, Any]]:
        """``(model, metadata)`` of one version, by default the current one.

        The metadata is checked first (:meth:`meta`), so its ``version`` is the folder the
        model was read from, and nothing is unpickled from a folder that belongs elsewhere.
        """
        v = self.current(name) if version is None else self._existing(name, version)
        meta = self._read_meta(name, v)
        path = self._known(name) / v / MODEL_FILE
        try:
            with open(path, "rb") as fh:
                model = pickle.load(fh)
        except FileNotFoundError:  # a file deleted by hand
            raise ArtifactError(f"{name} {v} is incomplete: {path} is missing") from None
        return model, meta

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every promotion and rollback of ``name``, oldest first.

        Raises :class:`DamagedArtifactError` naming the file and line when a line is no JSON
        object (a torn write, an edit by hand): a bare JSONDecodeError from every save and
        rollback said neither.
        """
        entries, damaged = self._read_history(name)
        if damaged:
            raise DamagedArtifactError(damaged[0])
        return entries

    def _read_history(self, name: str) -> tuple[list[dict[str, Any]], list[str]]:
        """``HISTORY``'s readable entries, and why each unreadable line is (file and line)."""
        path = self._dir(name) / HISTORY_FILE
        if not path.is_file():
            return [], []
        try:  # a line that is no UTF-8 is one damaged line, not a file that cannot be read
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            return [], [f"{path}: unreadable ({exc}); repair or remove the file"]
        entries: list[dict[str, Any]] = []
        damaged: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                line.encode("utf-8")
                entry = json.loads(line)
            except UnicodeEncodeError:  # a byte that was no UTF-8, kept as a surrogate
                why = "not UTF-8"
            except ValueError as exc:
                why = f"not JSON ({exc})"
            else:
                if isinstance(entry, dict):
                    entries.append(entry)
                    continue
                why = f"a JSON {type(entry).__name__}, not an object"
            damaged.append(f"{path}, line {number}: damaged entry, {why}; repair or delete it")
        return entries, damaged

    # -- writes ----------------------------------------------------------------------------
    def save(
        self,
        name: str,
        model: Any,
        metadata: dict[str, Any] | None = None,
        *,
        promote: bool = True,
    ) -> str:
        """Store ``model`` as the next version of ``name``; returns the version (``v0001``).

        The version is complete on disk before it becomes visible, and (unless
        ``promote=False``, e.g. for a shadow model) it becomes current only after that.
        """
        folder = self._dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
        try:
            with open(tmp / MODEL_FILE, "wb") as fh:
                pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
                fh.flush()
                os.fsync(fh.fileno())
            meta = _jsonable(dict(metadata or {}))
            meta.update(
                name=name,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                python=platform.python_version(),
                valuerec=__version__,
                model_class=f"{type(model).__module__}.{type(model).__qualname__}",
            )
            version = self._claim(folder, tmp, meta)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if promote:
            self.promote(name, version)
        return version

    def _claim(self, folder: Path, tmp: Path, meta: dict[str, Any]) -> str:
        """Rename ``tmp`` to the next free version; retry if a concurrent writer took it."""
        # a number HISTORY names is never handed out again, even if its folder was deleted:
        # one version name must always mean one model. A damaged line must not stop every
        # save of the model (`value fit` failed on it): it is skipped, and said so
        entries, damaged = self._read_history(folder.name)
        for why in damaged:
            warnings.warn(
                f"{why} (skipped when numbering the new version of {folder.name})", stacklevel=3
            )
        recorded = [str(h.get("version")) for h in entries]
        used = [int(m.group(1)) for v in recorded if (m := _VERSION.match(v))]
        for _ in range(1000):
            taken = [int(m.group(1)) for p in folder.iterdir() if (m := _VERSION.match(p.name))]
            version = f"v{max(taken + used, default=0) + 1:04d}"
            meta["version"] = version
            with open(tmp / META_FILE, "w", encoding="utf-8") as fh:
                json.dump(meta, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.replace(tmp, folder / version)  # fails if the folder exists and is not empty
            except OSError:
                if (folder / version).exists():
                    continue
                raise
            _fsync_dir(folder)
            return version
        raise ArtifactError(f"could not claim a new version under {folder}")  # pragma: no cover

    def promote(self, name: str, version: str | int) -> str:
        """Make ``version`` the current one; returns it.

        Promoting the current version again (a retried request) changes nothing: recorded,
        it would stand twice on the rollback stack, and a rollback would land on it again.
        """
        self._known(name)
        v = self._existing(name, version)
        with self._lock(name):
            try:
                # what CURRENT names, even a version deleted since: recorded as None, the
                # replay would have emptied the rollback stack (_stack)
                before: str | None = self._pointer(name)
            except ArtifactError:  # no CURRENT yet, or no version in it
                before = None
            if before == v:
                return v
            # "from" lets the replay drop a promotion whose pointer write failed (_stack)
            self._record(name, {"action": "promote", "version": v, "from": before})
            _write_atomic(self._dir(name) / CURRENT_FILE, v + "\n")
        return v

    def rollback(self, name: str) -> str:
        """Point ``CURRENT`` back at the version promoted before the current one; returns it."""
        self._known(name)
        with self._lock(name):
            current = self._pointer(name)  # a deleted current version can be rolled back too
            stack = self._stack(name)
            while stack and stack[-1] != current:  # a promotion that never reached CURRENT
                stack.pop()
            if stack:
                stack.pop()
            available = set(self.versions(name))
            # deleted since it was promoted, or the current one again (promoted twice in a row
            # while CURRENT named a deleted version)
            while stack and (stack[-1] not in available or stack[-1] == current):
                stack.pop()
            if not stack:
                raise ArtifactError(f"{name}: nothing to roll back to before {current}")
            target = stack[-1]
            self._record(name, {"action": "rollback", "version": target, "from": current})
            _write_atomic(self._dir(name) / CURRENT_FILE, target + "\n")
        return target

    def _stack(self, name: str) -> list[str]:
        """Replay ``HISTORY``: promotions push, a rollback to v pops down to v.

        A promotion records the version current before it (``from``): the replay first pops
        down to that one, so a promotion whose pointer write failed, wherever it sits in the
        history, is never a rollback target. A ``from`` that is not on the stack pops nothing:
        it is null when CURRENT was unreadable (older releases also wrote null when it named a
        deleted version), and popping down to it emptied the whole stack. (Entries written
        before ``from`` existed lack it.)
        """
        stack: list[str] = []
        for entry in self.history(name):
            v = entry.get("version")
            if entry.get("action") == "promote":
                if entry.get("from") in stack:
                    while stack[-1] != entry["from"]:
                        stack.pop()
                if not stack or stack[-1] != v:  # a repeated promotion (older histories)
                    stack.append(v)
            elif entry.get("action") == "rollback":
                while stack and stack[-1] != v:
                    stack.pop()
                if not stack:
                    stack.append(v)
        return stack

    def _record(self, name: str, entry: dict[str, Any]) -> None:
        """Add one line to ``HISTORY`` (rewritten atomically: it stays small).

        Earlier lines are kept byte for byte, a damaged one too (not UTF-8: a line edited in
        Latin-1): reading them strictly made every save and promotion fail on it, and
        :meth:`history` names such a line instead.
        """
        path = self._dir(name) / HISTORY_FILE
        old = path.read_text(encoding="utf-8", errors="surrogateescape") if path.is_file() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        entry = {**entry, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        _write_atomic(path, old + json.dumps(entry, sort_keys=True) + "\n", "surrogateescape")

    # last: inside the class body, ``list`` below this point would name the method
    def list(self) -> pd.DataFrame:
        """One row per stored version: name, version, current, created_at, model_class, path,
        error (why its metadata cannot be trusted, else None: one damaged version must not
        hide the others)."""
        rows = []
        for name in self.names():
            try:
                current = self.current(name)
            except ArtifactError:
                current = None
            for v in self.versions(name):
                error = None
                try:
                    meta = self.meta(name, v)
                except ArtifactError as exc:
                    meta, error = {}, str(exc)
                rows.append(
                    {
                        "name": name,
                        "version": v,
                        "current": v == current,
                        "created_at": meta.get("created_at"),
                        "model_class": meta.get("model_class"),
                        "path": str(self.root / name / v),
                        "error": error,
                    }
                )
        columns = ["name", "version", "current", "created_at", "model_class", "path", "error"]
        return pd.DataFrame(rows, columns=columns)
