"""Shared fixtures: a fresh store per test, a writer for small input files, and PostgreSQL.

Tests that take ``store`` run on DuckDB unless their module overrides ``backend`` with both
backends (``@pytest.fixture(params=BACKENDS)``); on ``postgres`` each test gets a new database
on a server started once per session (:mod:`pg_cluster`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from pg_cluster import Cluster, Unavailable
from valuerec.data import datasets
from valuerec.data.store import Store, deployment_path, is_url

# The test models are tiny: one thread is faster than two (no synchronisation per op), and it
# keeps the suite's speed steady when the machine is shared.
torch.set_num_threads(1)

#: the two store backends, for modules that run their tests on both
BACKENDS = ("duckdb", "postgres")


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A PostgreSQL server for the session; skipped (failed under CI) if none can be had.

    ``$VALUEREC_HOME`` points at a session folder meanwhile, so the model artifacts and keys
    of stores named by URL land there rather than in the working directory.
    """
    try:
        cluster = Cluster()
    except Unavailable as exc:
        if os.environ.get("VALUEREC_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here but unavailable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VALUEREC_HOME", str(tmp_path_factory.mktemp("pg-home")))
        try:
            yield cluster
        finally:
            cluster.stop()


class Databases:
    """Fresh store locations on one backend, and copies of whole deployments.

    A deployment is a store plus the files beside it (model artifacts, API keys): a DuckDB
    file's folder, or a PostgreSQL database and its folder under ``$VALUEREC_HOME``.
    """

    def __init__(self, backend: str, root: Path, cluster: Cluster | None) -> None:
        self.backend, self.root, self.cluster = backend, root, cluster
        self._n = 0

    def new(self, name: str) -> str:
        """Where a new, empty store can be opened: a path or a URL."""
        if self.cluster is not None:
            return self.cluster.create_schema(name)
        self._n += 1
        folder = self.root / f"{name}-{self._n}"
        folder.mkdir(parents=True)
        return str(folder / f"{name}.duckdb")

    def copy(self, db: str) -> str:
        """A copy of the deployment at ``db`` (the store must be closed); returns the new db."""
        if not is_url(db):
            self._n += 1
            dst = self.root / f"copy-{self._n}"
            shutil.copytree(Path(db).parent, dst)
            return str(dst / Path(db).name)
        assert self.cluster is not None
        new = self.cluster.copy_schema(db)
        src, dst = deployment_path(db), deployment_path(new)
        if Path(src + ".models").exists():
            shutil.copytree(src + ".models", dst + ".models")
        if Path(src + ".keys.json").exists():
            shutil.copy2(src + ".keys.json", dst + ".keys.json")
        return new


def databases_for(backend: str, root: Path, request: pytest.FixtureRequest) -> Databases:
    """:class:`Databases` on ``backend`` (starting the PostgreSQL server if it is that)."""
    cluster = request.getfixturevalue("pg_cluster") if backend == "postgres" else None
    return Databases(backend, root, cluster)


@pytest.fixture(scope="module")
def backend() -> str:
    """The store backend of ``store``: DuckDB, unless a test module asks for both."""
    return "duckdb"


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    if backend == "duckdb":
        s = Store(tmp_path / "test.duckdb")
    else:
        s = Store(databases_for(backend, tmp_path, request).new("test"))
    yield s
    s.close()


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write ``text`` to ``tmp_path/name`` and return the path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


@pytest.fixture(scope="session")
def cdnow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The real CDNOW sample (6,919 purchases), loaded once for every test that asks."""
    s = Store(tmp_path_factory.mktemp("cdnow") / "cdnow.duckdb")
    datasets.load("cdnow-sample", s)
    yield s
    s.close()


@pytest.fixture
def transformer_fit_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each TransformerValueModel fit of the test trains on, in call order:
    a fit that should also learn from earlier cut-offs sees more rows than customers."""
    from valuerec.value.base import ValueData
    from valuerec.value.transformer import TransformerValueModel

    rows: list[int] = []
    fit_one = TransformerValueModel._fit

    def counting(self: TransformerValueModel, data: ValueData) -> None:
        rows.append(len(data.users))
        fit_one(self, data)

    monkeypatch.setattr(TransformerValueModel, "_fit", counting)
    return rows
