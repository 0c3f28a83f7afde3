"""Shared fixtures: a fresh store per test and a writer for small input files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from valuerec.data import datasets
from valuerec.data.store import Store

# The test models are tiny: one thread is faster than two (no synchronisation per op), and it
# keeps the suite's speed steady when the machine is shared.
torch.set_num_threads(1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "test.duckdb")
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
