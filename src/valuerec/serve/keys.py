"""API keys: roles and hashed storage in a small file beside the store.

Why a file (``<store>.keys.json``) and not a table in the store: DuckDB lets one process hold
the database file for writing, so a table would make ``valuerec keys create`` impossible while
``valuerec serve`` runs. The file is replaced atomically on every change and the server re-reads
it when its modification time changes, so a key created or revoked from the command line takes
effect on the next request without a restart. Every change is a read-modify-write of the whole
file under an exclusive lock on ``<keys file>.lock``: without it two ``keys create`` runs (or a
create during a revoke) would each write what they read, and the last writer would silently
drop the other's key or undo its revocation. Readers need no lock (the replace is atomic).

Only ``sha256(key)`` is stored. A plain hash (no salt, no slow KDF) is right here because keys
are 256-bit random tokens (``secrets.token_urlsafe(32)``): nothing to brute-force, and a
lookup must cost microseconds on every request.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path

from valuerec.artifacts import exclusive_lock
from valuerec.data.store import KEYS_SUFFIX, deployment_path

__all__ = ["KeyRecord", "KeyStore", "Role", "default_keys_path", "hash_key"]

KEY_PREFIX = "vr_"


class Role(IntEnum):
    """What a key may do; each role includes the ones below it (read < write < admin)."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}: read, write or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored: never the key itself."""

    id: str
    hash: str
    role: str
    name: str
    created_at: str
    revoked_at: str | None = None


def default_keys_path(db_path: str | os.PathLike[str]) -> Path:
    """``<store path>.keys.json``: keys travel with the deployment they open.

    For a PostgreSQL URL, the path is under ``$VALUEREC_HOME`` (see
    :func:`valuerec.data.store.deployment_path`).
    """
    path = str(db_path)
    if path == ":memory:":
        raise ValueError("an in-memory store has no default key file: pass a path")
    return Path(deployment_path(path) + KEYS_SUFFIX)


@functools.lru_cache(maxsize=4096)
def hash_key(key: str) -> str:
    """sha256 of the key, memoised: every request checks its key, mostly the same few keys."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    """Hashed API keys in one JSON file, re-read when it changes on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, KeyRecord] = {}
        self._loaded = False

    # -- reads -----------------------------------------------------------------------------
    def _read(self) -> list[KeyRecord]:
        """Every record; a ``ValueError`` naming the file if it is not a valid key file."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            records = [KeyRecord(**row) for row in data.get("keys", [])]
            for r in records:
                Role.parse(r.role)  # here, for the whole file, not when the key is first used
        except FileNotFoundError:
            return []
        except (OSError, AttributeError, TypeError, ValueError) as exc:  # not what we write
            raise ValueError(f"cannot read API keys from {self.path}: {exc}") from None
        return records

    def refresh(self) -> None:
        """Re-read the file if it changed on disk (``ValueError`` if it cannot be read)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if self._loaded and stamp == self._stamp:
            return
        with self._lock:
            self._by_hash = {r.hash: r for r in self._read()}
            self._stamp = stamp
            self._loaded = True

    def role_of(self, key: str) -> Role | None:
        """The role of a valid key; None for an unknown or revoked one."""
        self.refresh()
        record = self._by_hash.get(hash_key(key))
        if record is None or record.revoked_at is not None:
            return None
        return Role.parse(record.role)

    def list(self) -> list[KeyRecord]:
        return self._read()

    # -- writes ----------------------------------------------------------------------------
    def create(self, role: Role | str, name: str = "") -> tuple[str, KeyRecord]:
        """A new key of ``role``: returns ``(key, record)``; the key is not kept anywhere."""
        role = role if isinstance(role, Role) else Role.parse(role)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            id=secrets.token_hex(4),
            hash=hash_key(key),
            role=role.label,
            name=name,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with self._writing():
            self._write([*self._read(), record])
        return key, record

    def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (kept for audit); a ``KeyError`` names unknown ids."""
        with self._writing():
            records = self._read()
            for i, r in enumerate(records):
                if r.id == key_id:
                    if r.revoked_at is None:
                        now = datetime.now(UTC).isoformat(timespec="seconds")
                        records[i] = KeyRecord(**{**asdict(r), "revoked_at": now})
                        self._write(records)
                    return records[i]
        raise KeyError(f"no API key with id {key_id!r} in {self.path}")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold an exclusive lock on ``<keys file>.lock`` across one read-modify-write.

        A sidecar file, not the key file itself: the key file is replaced on every write, so a
        lock on it would be a lock on an inode that the next writer no longer opens.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.path.with_name(self.path.name + ".lock")):
            yield

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"keys": [asdict(r) for r in records]}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)  # hashes only, but nobody else needs to read them
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
