"""Public data sets: true sizes, cached fetches, clear errors when the registry is unreachable."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from valuerec.data import datasets
from valuerec.data.store import Store

network = pytest.mark.network


@network
def test_cdnow_master_has_its_true_size(store):
    result = datasets.load("cdnow", store)["events"]
    assert (result.rows_read, result.stored, result.quarantined) == (69_659, 69_659, 0)
    st = store.stats()
    assert st["users_with_events"] == 23_570
    assert st["first_event"] == "1997-01-01T00:00:00" and st["last_event"] == "1998-06-30T00:00:00"
    # identical same-day purchases exist in the real log and are all kept
    assert store.query("SELECT count(*) AS n FROM events WHERE occurrence > 0")["n"][0] > 0
    first = store.events(["00001"]).iloc[0]
    assert (first["value"], first["quantity"], first["event_type"]) == (11.77, 1.0, "purchase")


@network
def test_cdnow_sample(store):
    assert datasets.load("cdnow-sample", store)["events"].stored == 6_919
    assert store.stats()["users_with_events"] == 2_357


@network
def test_movielens_100k_has_its_true_size(store):
    results = datasets.load("movielens-100k", store)
    assert {k: r.stored for k, r in results.items()} == {
        "items": 1_682,
        "users": 943,
        "events": 100_000,
    }
    st = store.stats()
    assert (st["users_with_events"], st["items_with_events"]) == (943, 1_682)
    assert st["events_by_type"] == {"rating": 100_000}
    toy = store.items().set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story" and toy["category"] == "Animation|Children's|Comedy"
    ratings = store.events(["196"])
    assert 242 in ratings["item_id"].astype(int).tolist()


@network
def test_second_fetch_is_a_no_op(monkeypatch):
    folder = datasets.fetch("cdnow-sample")
    stamp = (folder / "CDNOW_sample.txt").stat().st_mtime_ns

    def no_network(*args, **kwargs):
        raise AssertionError("fetch ran pip although the data was cached")

    monkeypatch.setattr(subprocess, "run", no_network)
    assert datasets.fetch("cdnow-sample") == folder
    assert (folder / "CDNOW_sample.txt").stat().st_mtime_ns == stamp


def test_unreachable_registry_is_a_clear_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        return SimpleNamespace(
            returncode=1, stdout="", stderr="ERROR: Could not find a version that satisfies"
        )

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(datasets.DatasetError, match=r"could not download lifetimes==0\.11\.3"):
        datasets.fetch("cdnow", cache=tmp_path)
    assert not (tmp_path / "cdnow" / "CDNOW_master.txt").exists()


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(datasets.DatasetError, match="movielens-100k"):
        datasets.fetch("netflix-prize")


@network
def test_loading_twice_adds_nothing(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        datasets.load("cdnow-sample", store)
        again = datasets.load("cdnow-sample", store)["events"]
        assert (again.stored, again.duplicates) == (0, 6_919)


SAMPLE = "lifetimes/datasets/CDNOW_sample.txt"
TRUE_LINES = "00001 1 19970101 1 11.77\n00002 2 19970112 1 12.00\n"


def _fake_registry(monkeypatch, content: str) -> list[int]:
    """pip download answered by a wheel holding ``content`` as the CDNOW sample, whose
    expected SHA-256 is that of TRUE_LINES; returns the list of download calls."""
    import hashlib
    import zipfile

    calls: list[int] = []

    def download(cmd, **kwargs):
        calls.append(1)
        dest = cmd[cmd.index("--dest") + 1]
        with zipfile.ZipFile(f"{dest}/lifetimes-0.11.3-py3-none-any.whl", "w") as zf:
            zf.writestr(SAMPLE, content)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(subprocess, "run", download)
    monkeypatch.setitem(datasets.SHA256, SAMPLE, hashlib.sha256(TRUE_LINES.encode()).hexdigest())
    return calls


def test_a_damaged_cached_file_is_fetched_again(monkeypatch, tmp_path):
    """A cache cut short (a full disk, a killed copy) loaded silently: 29,999 of 69,659
    CDNOW purchases, exit 0. Files are used only if byte for byte the wheel's."""
    calls = _fake_registry(monkeypatch, TRUE_LINES)
    cached = tmp_path / "cdnow-sample" / "CDNOW_sample.txt"
    folder = datasets.fetch("cdnow-sample", cache=tmp_path)
    assert cached.read_text() == TRUE_LINES and len(calls) == 1
    assert datasets.fetch("cdnow-sample", cache=tmp_path) == folder and len(calls) == 1
    for damage in (TRUE_LINES[:30], "", "<html>not found</html>"):
        cached.write_text(damage)
        datasets.fetch("cdnow-sample", cache=tmp_path)
        assert cached.read_text() == TRUE_LINES
    assert len(calls) == 4
    events = datasets.frames("cdnow-sample", cache=tmp_path)["events"]
    assert events["user_id"].tolist() == ["00001", "00002"]


def test_a_wheel_whose_data_differs_is_refused(monkeypatch, tmp_path):
    _fake_registry(monkeypatch, TRUE_LINES.replace("11.77", "99.99"))
    with pytest.raises(datasets.DatasetError, match="is not the file valuerec knows"):
        datasets.fetch("cdnow-sample", cache=tmp_path)
    assert not (tmp_path / "cdnow-sample" / "CDNOW_sample.txt").exists()


def test_loading_bandit_feedback_is_refused_before_any_download(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from valuerec.cli import app

    def no_download(*args, **kwargs):
        raise AssertionError("pip ran for a data set that cannot be loaded")

    monkeypatch.setattr(subprocess, "run", no_download)
    res = CliRunner().invoke(app, ["load", "obd", "--db", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 2 and "obd.load(policy," in " ".join(res.output.split())
    with Store(tmp_path / "t.duckdb") as store, pytest.raises(datasets.DatasetError):
        datasets.load("obd", store)
