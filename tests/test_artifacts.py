"""Model artifacts: round trip, versions, promotion and rollback, atomic pointer, clear errors."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import valuerec.artifacts as artifacts_mod
from valuerec import __version__
from valuerec.artifacts import (
    ArtifactError,
    ArtifactStore,
    DamagedArtifactError,
    data_fingerprint,
    default_root,
)
from valuerec.data.ingest import ingest
from valuerec.data.store import Store


@dataclass
class Toy:
    """A picklable stand-in for a fitted model."""

    weights: list[float]


@pytest.fixture
def arts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "shop.duckdb.models")


def _leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a writer left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock")


def test_default_root_sits_next_to_the_store(tmp_path: Path) -> None:
    assert default_root(tmp_path / "shop.duckdb") == tmp_path / "shop.duckdb.models"
    assert default_root("data/x.duckdb") == Path("data/x.duckdb.models")
    with pytest.raises(ValueError, match="in-memory"):
        default_root(":memory:")


def test_save_load_round_trip_with_metadata(arts: ArtifactStore) -> None:
    meta_in = {
        "calibration_end": pd.Timestamp("2024-08-28"),
        "holdout_days": np.int64(60),
        "metrics": {"normalized_gini": np.float64(0.75), "auc_return": math.nan},
        "features": ("a", "b"),
    }
    version = arts.save("value-toy", Toy([1.0, 2.5]), meta_in)
    assert version == "v0001"
    model, meta = arts.load("value-toy")
    assert model == Toy([1.0, 2.5])
    assert meta["version"] == "v0001" and meta["name"] == "value-toy"
    assert meta["calibration_end"] == "2024-08-28T00:00:00"
    assert meta["holdout_days"] == 60
    assert meta["metrics"] == {"normalized_gini": 0.75, "auc_return": None}  # NaN -> null
    assert meta["features"] == ["a", "b"]
    assert meta["valuerec"] == __version__ and meta["python"]
    assert meta["model_class"].endswith("Toy") and meta["created_at"]
    folder = arts.root / "value-toy" / "v0001"
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.pkl"]
    assert json.loads((folder / "meta.json").read_text()) == meta  # plain JSON on disk
    assert arts.meta("value-toy") == meta


def test_versions_increase_and_new_saves_become_current(arts: ArtifactStore) -> None:
    got = [arts.save("m", Toy([float(i)]), {"i": i}) for i in range(1, 4)]
    assert got == ["v0001", "v0002", "v0003"]
    assert arts.versions("m") == got
    assert arts.current("m") == "v0003"
    assert arts.load("m")[0] == Toy([3.0])
    assert arts.load("m", "v0001")[0] == Toy([1.0])
    assert arts.load("m", 2)[1]["i"] == 2  # 2, "2", "v2" and "v0002" name one version
    shadow = arts.save("m", Toy([4.0]), promote=False)
    assert shadow == "v0004" and arts.current("m") == "v0003"


def test_versions_sort_numerically_past_9999(arts: ArtifactStore) -> None:
    arts.save("m", Toy([1.0]))
    os.rename(arts.root / "m" / "v0001", arts.root / "m" / "v9999")
    assert arts.save("m", Toy([2.0]), promote=False) == "v10000"
    assert arts.versions("m") == ["v9999", "v10000"]


def test_promote_and_rollback_walk_the_history(arts: ArtifactStore) -> None:
    for i in range(3):
        arts.save("m", Toy([float(i)]))
    assert arts.promote("m", "v0001") == "v0001"
    assert arts.current("m") == "v0001"
    # each rollback goes one promotion further back, not back and forth
    assert arts.rollback("m") == "v0003"
    assert arts.rollback("m") == "v0002"
    assert arts.rollback("m") == "v0001"
    assert arts.current("m") == "v0001"
    with pytest.raises(ArtifactError, match="nothing to roll back"):
        arts.rollback("m")
    actions = [(h["action"], h["version"]) for h in arts.history("m")]
    assert actions == [
        ("promote", "v0001"), ("promote", "v0002"), ("promote", "v0003"), ("promote", "v0001"),
        ("rollback", "v0003"), ("rollback", "v0002"), ("rollback", "v0001"),
    ]  # fmt: skip
    # promoting after a rollback starts a new branch on top of the current version
    arts.promote("m", "v0003")
    assert arts.rollback("m") == "v0001"


def test_promoting_the_current_version_again_keeps_rollback_working(arts: ArtifactStore) -> None:
    """A retried promote recorded the current version twice: every later rollback landed on
    it again and the earlier version could never be reached."""
    arts.save("m", Toy([1.0]))
    arts.save("m", Toy([2.0]), promote=False)
    arts.promote("m", "v0002")
    assert arts.promote("m", "v0002") == "v0002"  # retried: changes nothing
    assert [h["action"] for h in arts.history("m")] == ["promote", "promote"]
    assert arts.rollback("m") == "v0001"
    # a history written before the fix, with the repeated promotion in it, replays the same
    history = arts.root / "m" / "HISTORY"
    first, second = history.read_text().splitlines()[:2]
    again = json.dumps({**json.loads(second), "from": "v0002"})  # as the old code wrote it
    history.write_text("\n".join([first, second, again]) + "\n")
    (arts.root / "m" / "CURRENT").write_text("v0002\n")
    assert arts.rollback("m") == "v0001"


def test_current_pointer_is_a_small_file_replaced_atomically(
    arts: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    arts.save("m", Toy([1.0]))
    arts.save("m", Toy([2.0]))
    pointer = arts.root / "m" / "CURRENT"
    assert pointer.read_text() == "v0002\n"
    assert _leftovers(arts.root / "m") == []

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(artifacts_mod.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        arts.promote("m", "v0001")
    monkeypatch.undo()
    # the interrupted promotion left the old pointer whole and no temporary file behind
    assert pointer.read_text() == "v0002\n"
    assert arts.current("m") == "v0002"
    assert _leftovers(arts.root / "m") == []


def test_a_promotion_whose_pointer_write_failed_is_never_a_rollback_target(
    arts: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    arts.save("m", Toy([1.0]))
    arts.save("m", Toy([2.0]), promote=False)
    write = artifacts_mod._write_atomic

    def full_disk_for_the_pointer(path: Path, text: str, *args: str) -> None:
        if path.name == "CURRENT":
            raise OSError("disk full")
        write(path, text, *args)

    monkeypatch.setattr(artifacts_mod, "_write_atomic", full_disk_for_the_pointer)
    with pytest.raises(OSError, match="disk full"):
        arts.promote("m", "v0002")  # recorded in HISTORY, never current
    monkeypatch.undo()
    assert arts.current("m") == "v0001"
    arts.save("m", Toy([3.0]))
    assert arts.rollback("m") == "v0001"  # not v0002, which was never current


def test_deleted_versions_are_clear_errors_and_never_rollback_targets(
    arts: ArtifactStore,
) -> None:
    for i in range(3):
        arts.save("m", Toy([float(i)]))
    shutil.rmtree(arts.root / "m" / "v0002")  # an old version cleaned up by hand
    assert arts.rollback("m") == "v0001"  # skips the missing v0002
    arts.promote("m", "v0003")
    shutil.rmtree(arts.root / "m" / "v0003")  # now the current one
    with pytest.raises(ArtifactError, match="current version v0003 is missing"):
        arts.load("m")
    assert arts.rollback("m") == "v0001"
    (arts.root / "m" / "v0001" / "model.pkl").unlink()
    with pytest.raises(ArtifactError, match=r"v0001 is incomplete: .*model\.pkl is missing"):
        arts.load("m")
    # numbers already in HISTORY are not handed out again: one name, one model
    assert arts.save("m", Toy([4.0])) == "v0004"


def test_a_failed_save_leaves_nothing_behind(arts: ArtifactStore) -> None:
    arts.save("m", Toy([1.0]))
    with pytest.raises(Exception, match="pickle"):
        arts.save("m", lambda: None)  # a lambda cannot be pickled
    assert arts.versions("m") == ["v0001"] and arts.current("m") == "v0001"
    assert _leftovers(arts.root / "m") == []


def test_a_version_taken_by_a_concurrent_writer_is_not_overwritten(
    arts: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    raced = []

    def racing_replace(src: str | Path, dst: str | Path) -> None:
        dst = Path(dst)
        if dst.name == "v0001" and not raced:  # another writer claims v0001 first
            raced.append(dst)
            dst.mkdir()
            (dst / "meta.json").write_text('{"version": "v0001", "winner": "other"}')
        real_replace(src, dst)

    monkeypatch.setattr(artifacts_mod.os, "replace", racing_replace)
    assert arts.save("m", Toy([1.0])) == "v0002"
    assert raced
    assert json.loads((arts.root / "m" / "v0001" / "meta.json").read_text())["winner"] == "other"
    assert arts.load("m")[0] == Toy([1.0])


def test_unknown_names_and_versions_are_clear_errors(arts: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match=r"no artifact named 'nope'.*none yet"):
        arts.load("nope")
    arts.save("value-naive", Toy([1.0]))
    with pytest.raises(ArtifactError, match=r"no artifact named 'nope'.*value-naive"):
        arts.current("nope")
    with pytest.raises(ArtifactError, match=r"no version v0042 \(available: v0001\)"):
        arts.load("value-naive", "v0042")
    with pytest.raises(ArtifactError, match="no version v0007"):
        arts.promote("value-naive", 7)
    with pytest.raises(ArtifactError, match="not a version"):
        arts.load("value-naive", "latest")
    with pytest.raises(ArtifactError, match="invalid artifact name"):
        arts.save("../escape", Toy([1.0]))
    with pytest.raises(ArtifactError, match="nothing to roll back"):
        arts.rollback("value-naive")
    arts.save("shadow", Toy([1.0]), promote=False)
    with pytest.raises(
        ArtifactError,
        match=r"no current version \(.*CURRENT does not exist\); promote one of v0001",
    ):
        arts.load("shadow")
    assert arts.versions("never-saved") == []


@pytest.mark.parametrize("version", ["v²", "²", "v\u0661\u0662", "v3a"])
def test_digits_that_are_not_ascii_are_not_a_version(arts: ArtifactStore, version: str) -> None:
    """``"²".isdigit()`` is True but ``int("²")`` raises: such a version was a ValueError (a
    500 from the API's promote), not the "not a version" every other bad name gives."""
    arts.save("value-naive", Toy([1.0]))
    with pytest.raises(ArtifactError, match="not a version"):
        arts.promote("value-naive", version)
    with pytest.raises(ArtifactError, match="not a version"):
        arts.load("value-naive", version)


def test_list_shows_every_version_and_the_current_one(arts: ArtifactStore) -> None:
    assert list(arts.list().columns) == [
        "name", "version", "current", "created_at", "model_class", "path", "error",
    ]  # fmt: skip
    assert arts.list().empty
    arts.save("b", Toy([1.0]))
    arts.save("a", Toy([1.0]))
    arts.save("a", Toy([2.0]))
    arts.promote("a", "v0001")
    listing = arts.list()
    assert listing[["name", "version", "current"]].to_dict(orient="records") == [
        {"name": "a", "version": "v0001", "current": True},
        {"name": "a", "version": "v0002", "current": False},
        {"name": "b", "version": "v0001", "current": True},
    ]
    assert arts.names() == ["a", "b"]


def test_incomplete_version_folders_are_ignored(arts: ArtifactStore) -> None:
    arts.save("m", Toy([1.0]))
    (arts.root / "m" / ".tmp-crashed").mkdir()
    (arts.root / "m" / "v0005").mkdir()  # no meta.json: never completed
    assert arts.versions("m") == ["v0001"]


def test_data_fingerprint_changes_with_the_data(store) -> None:
    empty = data_fingerprint(store)
    assert len(empty) == 16 and empty == data_fingerprint(store)
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "event_type": ["purchase", "view"],
            "timestamp": ["2024-01-01", "2024-01-02"],
            "value": [10.0, None],
        }
    )
    ingest(store, frame, "events")
    first = data_fingerprint(store)
    assert first != empty and first == data_fingerprint(store)
    ingest(store, frame, "events")  # idempotent ingest: same data, same fingerprint
    assert data_fingerprint(store) == first
    more = frame.assign(timestamp=["2024-02-01", "2024-02-02"])
    ingest(store, more, "events")
    assert data_fingerprint(store) != first


def test_data_fingerprint_of_an_unchanged_large_store_never_changes(tmp_path: Path) -> None:
    """The value totals were summed as DOUBLEs, in whatever order DuckDB's threads added the
    row groups (about 122,880 rows each): an unchanged store of a few hundred thousand
    purchases gave a different fingerprint from run to run, and the report called its models
    stale. Exact (DECIMAL) sums make it one fingerprint."""
    with Store(tmp_path / "big.duckdb") as store:
        store.con.execute("SET threads = 4")  # more than one row group summed at a time
        store.con.execute(
            "INSERT INTO events (user_id, event_type, timestamp, value, occurrence) "
            "SELECT 'u' || (i % 5000), 'purchase', TIMESTAMP '2024-01-01' + to_seconds(i), "
            "(hash(i) % 10000000) / 100, 0 FROM range(400000) t(i)"
        )
        n_groups = store.con.execute(
            "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('events')"
        ).fetchone()[0]
        assert n_groups > 2
        fingerprints = {data_fingerprint(store) for _ in range(12)}
    assert len(fingerprints) == 1


def test_damaged_metadata_is_an_artifact_error_naming_the_file(arts: ArtifactStore) -> None:
    """Broken JSON in one version's meta.json was a bare JSONDecodeError from meta(), load()
    and list() (and a 500 for the server's whole model list)."""
    arts.save("m", Toy([1.0]))
    arts.save("m", Toy([2.0]))
    path = arts.root / "m" / "v0001" / "meta.json"
    path.write_text('{"version": "v0001", "name": ')
    for call in (lambda: arts.meta("m", "v0001"), lambda: arts.load("m", 1)):
        with pytest.raises(
            DamagedArtifactError, match=rf"^{re.escape(str(path))}: damaged metadata"
        ):
            call()
    path.write_text("[1, 2]")
    with pytest.raises(DamagedArtifactError, match="a JSON list, not an object"):
        arts.meta("m", "v0001")
    listing = arts.list().set_index("version")
    assert str(path) in listing.loc["v0001", "error"]
    assert pd.isna(listing.loc["v0002", "error"]) and listing.loc["v0002", "current"]
    assert arts.load("m")[0] == Toy([2.0])  # the others are untouched


def test_a_version_whose_metadata_names_another_is_refused(arts: ArtifactStore) -> None:
    """A folder copied from another artifact was loaded as this one (EASE served as
    "popularity"), and an edited "version" was reported as the version served."""
    arts.save("rec-ease", Toy([1.0]))
    arts.save("rec-popularity", Toy([2.0]))
    shutil.copytree(arts.root / "rec-ease" / "v0001", arts.root / "rec-popularity" / "v0002")
    with pytest.raises(DamagedArtifactError, match=r"describes 'rec-ease' 'v0001', not"):
        arts.load("rec-popularity", "v0002")
    meta_path = arts.root / "rec-popularity" / "v0001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": "v0009"}))
    with pytest.raises(
        DamagedArtifactError, match=rf"^{re.escape(str(meta_path))} describes .*'v0009'"
    ):
        arts.load("rec-popularity")
    del meta["version"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DamagedArtifactError, match="None, not 'rec-popularity' 'v0001'"):
        arts.meta("rec-popularity", "v0001")


def test_promoting_while_current_is_unreadable_keeps_the_rollback_history(
    arts: ArtifactStore,
) -> None:
    """The promotion recorded ``"from": null`` and the replay popped down to null: the whole
    rollback stack was gone."""
    for i in range(3):
        arts.save("m", Toy([float(i)]))
    shutil.rmtree(arts.root / "m" / "v0003")  # the current version deleted by hand
    arts.promote("m", "v0002")
    assert arts.history("m")[-1]["from"] == "v0003"
    assert arts.rollback("m") == "v0001"  # not v0002 again, nor "nothing to roll back"
    for i in range(2):
        arts.save("n", Toy([float(i)]))
    (arts.root / "n" / "CURRENT").write_text("garbage\n")
    arts.promote("n", "v0002")
    assert arts.rollback("n") == "v0001"
    # a "from": null already in HISTORY (written by older releases) pops nothing either
    arts.save("o", Toy([1.0]))
    arts.save("o", Toy([2.0]))
    with open(arts.root / "o" / "HISTORY", "a") as fh:
        fh.write(json.dumps({"action": "promote", "version": "v0001", "from": None}) + "\n")
    (arts.root / "o" / "CURRENT").write_text("v0001\n")
    assert arts._stack("o") == ["v0001", "v0002", "v0001"]


def test_a_broken_pointer_or_version_is_explained_with_its_file(arts: ArtifactStore) -> None:
    """The errors said "not a version: ''" without naming CURRENT, called a version whose
    meta.json was gone "missing", and advised a command-line promote that does not exist."""
    arts.save("m", Toy([1.0]))
    arts.save("m", Toy([2.0]))
    pointer = arts.root / "m" / "CURRENT"
    pointer.write_text("garbage\n")
    with pytest.raises(
        ArtifactError, match=rf"^{re.escape(str(pointer))}: not a version: 'garbage'"
    ) as info:
        arts.load("m")
    assert "POST /models/m/promote" in str(info.value)
    assert "valuerec" not in str(info.value)  # no command to run: there is none
    pointer.write_text("\n")
    with pytest.raises(
        ArtifactError, match=rf"^{re.escape(str(pointer))} is empty; promote one of v0001, v0002"
    ):
        arts.current("m")
    pointer.write_text("v0002\n")
    (arts.root / "m" / "v0002" / "meta.json").unlink()
    with pytest.raises(ArtifactError, match=r"v0002 is incomplete \(.*v0002/meta\.json is missing"):
        arts.current("m")
