"""A throwaway PostgreSQL server for the tests: found or installed, started, torn down.

The server binaries come from Debian's ``postgresql`` package (installed with apt-get when
missing and the tests run as root). The cluster lives in a fresh ``/tmp/pg-*`` directory and
listens only on a unix socket there, so it never collides with another server or test run.
PostgreSQL refuses to run as root: as root the cluster is owned and run by the ``postgres``
system user (created by the package). Durability is switched off (``fsync=off``): nothing here
outlives the test session.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

USER = "valuerec"
#: the database that holds every test's schema
DATABASE = "vr"


class Unavailable(RuntimeError):
    """PostgreSQL cannot be found, installed or started here; the message says why."""


def find_bindir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: Debian's versioned folder (newest) or PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def install() -> None:
    """``apt-get install postgresql`` (root only); raises :class:`Unavailable` on failure."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("PostgreSQL is not installed and apt-get cannot run here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if res.returncode:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise Unavailable(f"{' '.join(cmd)} failed: {' / '.join(tail)}")


class Cluster:
    """One running PostgreSQL server; :meth:`create_database` hands out fresh databases."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            install()
            bindir = find_bindir()
        if bindir is None:
            raise Unavailable("apt-get installed postgresql but no initdb was found")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.runas: str | None = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no 'postgres' user") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.runas = "postgres"
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--locale=C",
            "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        opts = (
            f"-k {self.dir} -c listen_addresses='' -p 5432 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts, "-w", "start"
        )
        with psycopg.connect(self.url("postgres"), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {DATABASE}")
        self.admin = psycopg.connect(self.url(DATABASE), autocommit=True)

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.runas:
            cmd = ["runuser", "-u", self.runas, "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode:
            log = self.dir / "log"
            detail = log.read_text()[-2000:] if log.exists() else ""
            raise Unavailable(f"{tool} failed: {res.stderr.strip() or res.stdout.strip()}{detail}")

    def url(self, database: str, schema: str | None = None) -> str:
        """A libpq URL for ``database`` over this server's unix socket (in ``schema``)."""
        url = f"postgresql://{USER}@/{database}?host={self.dir}&port=5432"
        return url + (f"&options=-csearch_path%3D{schema}" if schema else "")

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def create_schema(self, prefix: str = "t") -> str:
        """A new empty schema in the shared database; returns a URL whose search path is it.

        A schema costs a millisecond where a database costs a few hundred, so each test gets
        its own; it also exercises stores that live outside ``public``.
        """
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.admin.execute(f"CREATE SCHEMA {name}")
        return self.url(DATABASE, name)

    def copy_schema(self, url: str, prefix: str = "copy") -> str:
        """A new schema holding a copy of every table the store at ``url`` registered.

        The copy is opened as a store first, so it has its own tables, indexes and triggers;
        then the rows are copied on the server.
        """
        from valuerec.data.store import Store

        new = self.create_schema(prefix)
        Store(new).close()
        src, dst = schema_name(url), schema_name(new)
        tables = self.admin.execute(f"SELECT table_name FROM {src}.valuerec_versions").fetchall()
        for (table,) in tables:
            self.admin.execute(f"INSERT INTO {dst}.{table} SELECT * FROM {src}.{table}")
        return new

    def stop(self) -> None:
        self.admin.close()
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def schema_name(url: str) -> str:
    """The schema a :meth:`Cluster.create_schema` URL names."""
    return url.rsplit("search_path%3D", 1)[1]
