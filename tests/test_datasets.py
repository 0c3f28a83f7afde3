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
