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
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuerec import __version__
from valuerec.data.store import Store, deployment_path

try:  # POSIX advisory locks serialise promotions; elsewhere writers must not race
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ArtifactError", "ArtifactStore", "data_fingerprint", "default_root"]

MODEL_FILE = "model.pkl"
META_FILE = "meta.json"
CURRENT_FILE = "CURRENT"
HISTORY_FILE = "HISTORY"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^v(\d{4,})$")


class ArtifactError(LookupError):
    """An unknown artifact name or version, or an operation the history does not allow."""


def default_root(db_path: str | os.PathLike[str]) -> Path:
    """Where the artifacts of the store at ``db_path`` live: ``db_path + ".models"``.

    Keeping them beside the store ties a model to the data it was trained on, and copying the
    two together moves a whole deployment. A PostgreSQL URL has no folder: its artifacts go
    under ``$VALUEREC_HOME`` (:func:`valuerec.data.store.deployment_path`).
    """
    path = str(db_path)
    if path == ":memory:":
        raise ValueError("an in-memory store has no default artifact folder: pass a root")
    return Path(deployment_path(path) + ".models")


def data_fingerprint(store: Store) -> str:
    """A short hash of what the store holds: event count, time range, counts and value by type.

    Saved in an artifact's metadata so that one can tell whether a model was trained on the
    data now in the store: any ingest that adds, or a re-ingest that changes, events changes
    it. (It is a cheap summary, not a content hash: an edit that keeps every count, the last
    timestamp and the total value per type would go unnoticed.)
    """
    n, last = store.con.execute("SELECT count(*), max(timestamp) FROM events").fetchone()
    by_type = store.con.execute(
        "SELECT event_type, count(*), coalesce(sum(value), 0) FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    summary = {
        "events": int(n),
        "max_timestamp": last.isoformat() if last is not None else None,
        "by_type": [[str(t), int(c), round(float(v), 6)] for t, c, v in by_type],
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


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename) to disk where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new content, nothing else."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
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
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(folder / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

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

    def _pointer(self, name: str) -> str:
        """What ``CURRENT`` says, whether or not that version still exists."""
        folder = self._known(name)
        try:
            text = (folder / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ArtifactError(
                f"{name} has no current version; promote one of {', '.join(self.versions(name))}"
            ) from None
        return _version_str(text)

    def current(self, name: str) -> str:
        """The version ``CURRENT`` points at: what a server should load."""
        version = self._pointer(name)
        folder = self._dir(name)
        if version not in self.versions(name):  # its folder was deleted by hand
            raise ArtifactError(
                f"{name}'s current version {version} is missing from {folder}; promote one of "
                f"{', '.join(self.versions(name))}"
            )
        return version

    def meta(self, name: str, version: str | int | None = None) -> dict[str, Any]:
        """The metadata of one version (default: the current one), without loading the model."""
        v = self.current(name) if version is None else self._existing(name, version)
        with open(self._known(name) / v / META_FILE, encoding="utf-8") as fh:
            return json.load(fh)

    def load(self, name: str, version: str | int | None = None) -> tuple[Any, dict[str, Any]]:
        """``(model, metadata)`` of one version, by default the current one."""
        v = self.current(name) if version is None else self._existing(name, version)
        folder = self._known(name) / v
        try:
            with open(folder / MODEL_FILE, "rb") as fh:
                model = pickle.load(fh)
            with open(folder / META_FILE, encoding="utf-8") as fh:
                meta = json.load(fh)
        except FileNotFoundError as exc:  # a file deleted by hand
            raise ArtifactError(f"{name} {v} is incomplete: {exc.filename} is missing") from None
        return model, meta

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every promotion and rollback of ``name``, oldest first."""
        path = self._dir(name) / HISTORY_FILE
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

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
        # one version name must always mean one model
        recorded = [str(h.get("version")) for h in self.history(folder.name)]
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
                before: str | None = self.current(name)
            except ArtifactError:
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
            while stack and stack[-1] not in available:  # deleted since it was promoted
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
        history, is never a rollback target. (Entries written before ``from`` existed lack it.)
        """
        stack: list[str] = []
        for entry in self.history(name):
            v = entry.get("version")
            if entry.get("action") == "promote":
                if "from" in entry:
                    while stack and stack[-1] != entry["from"]:
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
        """Add one line to ``HISTORY`` (rewritten atomically: it stays small)."""
        path = self._dir(name) / HISTORY_FILE
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        entry = {**entry, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        _write_atomic(path, old + json.dumps(entry, sort_keys=True) + "\n")

    # last: inside the class body, ``list`` below this point would name the method
    def list(self) -> pd.DataFrame:
        """One row per stored version: name, version, current, created_at, model_class, path."""
        rows = []
        for name in self.names():
            try:
                current = self.current(name)
            except ArtifactError:
                current = None
            for v in self.versions(name):
                meta = self.meta(name, v)
                rows.append(
                    {
                        "name": name,
                        "version": v,
                        "current": v == current,
                        "created_at": meta.get("created_at"),
                        "model_class": meta.get("model_class"),
                        "path": str(self.root / name / v),
                    }
                )
        columns = ["name", "version", "current", "created_at", "model_class", "path"]
        return pd.DataFrame(rows, columns=columns)
