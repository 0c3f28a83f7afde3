"""The store: schema creation, reads and stats."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import BACKENDS, databases_for
from valuerec.cli import app
from valuerec.data.ingest import ingest
from valuerec.data.store import Store, StoreError, default_db_path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that takes ``store`` runs on DuckDB and on PostgreSQL."""
    return request.param


@pytest.fixture
def filled(store):
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "c"],
            "item_id": ["x", "y", "x", None],
            "event_type": ["view", "purchase", "purchase", "click"],
            "timestamp": ["2024-01-01", "2024-01-02", "2024-02-01", "2024-03-01"],
            "value": [None, 10.0, 5.5, None],
        }
    )
    ingest(store, frame)
    return store


def test_stats_count_what_was_stored(filled):
    st = filled.stats()
    assert st["events"] == 4 and st["users_with_events"] == 3 and st["items_with_events"] == 2
    assert st["events_by_type"] == {"purchase": 2, "click": 1, "view": 1}
    assert st["first_event"] == "2024-01-01T00:00:00" and st["last_event"] == "2024-03-01T00:00:00"
    assert st["total_value"] == pytest.approx(15.5)
    assert st["ingest_runs"] == 1


def test_events_filters(filled):
    assert list(filled.events(["a"])["event_type"]) == ["view", "purchase"]
    assert len(filled.events(event_types=["PURCHASE"])) == 2
    assert list(filled.events(since="2024-01-02", until="2024-03-01")["user_id"]) == ["a", "b"]
    # one id alone is that user (iterating "a" would also be ["a"]: "ab" is not "a" and "b")
    ingest(
        filled, pd.DataFrame({"user_id": ["ab"], "event_type": "view", "timestamp": "2024-01-05"})
    )
    assert list(filled.events("ab")["user_id"]) == ["ab"]


def test_store_persists_across_connections(tmp_path, backend, request):
    path = databases_for(backend, tmp_path, request).new("s")
    with Store(path) as s:
        ingest(
            s, pd.DataFrame({"user_id": ["a"], "event_type": ["view"], "timestamp": ["2024-01-01"]})
        )
    with Store(path, read_only=True) as s:
        assert s.count("events") == 1


def test_default_db_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("VALUEREC_DB", "/tmp/elsewhere.duckdb")
    assert default_db_path() == "/tmp/elsewhere.duckdb"
    monkeypatch.delenv("VALUEREC_DB")
    assert default_db_path() == "valuerec.duckdb"


def test_a_locked_or_corrupt_store_gives_a_clear_error(tmp_path):
    bad = tmp_path / "not-a-db.duckdb"
    bad.write_text("definitely not duckdb")
    with pytest.raises(StoreError, match="cannot open store"):
        Store(bad)


def test_unknown_table_is_rejected(store):
    with pytest.raises(ValueError):
        store.count("events; DROP TABLE events")


def test_a_negative_quarantine_limit_is_a_clear_error(store):
    with pytest.raises(ValueError, match="limit must be 0 or more"):
        store.quarantine(limit=-1)
    assert store.quarantine(limit=0).empty


def test_a_file_that_is_not_a_duckdb_store_is_refused_and_left_alone(tmp_path):
    """DuckDB would open it as a temporary database: whatever was ingested would vanish."""
    csv = tmp_path / "old_export.csv"
    csv.write_text("user_id,event_type,timestamp\nu1,purchase,2024-01-01\n")
    with pytest.raises(
        StoreError, match=r"cannot open store .*old_export\.csv: not a DuckDB store"
    ):
        Store(csv)
    with pytest.raises(StoreError, match="not a DuckDB store"):
        Store(csv, read_only=True)
    assert csv.read_text() == "user_id,event_type,timestamp\nu1,purchase,2024-01-01\n"
    res = CliRunner().invoke(app, ["ingest", str(csv), "--db", str(csv)])
    assert res.exit_code == 2 and "not a DuckDB store" in res.output
    # a real store still opens, read-only too
    with Store(tmp_path / "real.duckdb") as s:
        ingest(s, csv)
    with Store(tmp_path / "real.duckdb", read_only=True) as s:
        assert s.count("events") == 1


def test_a_store_whose_folder_cannot_be_made_is_a_store_error(tmp_path):
    (tmp_path / "events.csv").write_text("user_id,event_type,timestamp\n")
    with pytest.raises(StoreError, match=r"cannot open store .*events\.csv/store\.duckdb"):
        Store(tmp_path / "events.csv" / "store.duckdb")


def test_events_since_and_until_convert_an_offset_to_utc(store):
    ingest(
        store,
        pd.DataFrame(
            {
                "user_id": ["a", "b"],
                "event_type": "view",
                "timestamp": ["2024-01-01T00:30:00Z", "2024-01-01T03:00:00Z"],
            }
        ),
    )
    # 02:00 at +02:00 is midnight UTC
    assert list(store.events(since="2024-01-01T02:00:00+02:00")["user_id"]) == ["a", "b"]
    assert list(store.events(until="2024-01-01T02:00:00+02:00")["user_id"]) == []
    aware = datetime(2024, 1, 1, 3, tzinfo=timezone(timedelta(hours=2)))  # 01:00 UTC
    assert list(store.events(since=aware)["user_id"]) == ["b"]
    # naive bounds are UTC, as before
    assert list(store.events(since="2024-01-01 01:00")["user_id"]) == ["b"]
    assert list(store.events(until=datetime(2024, 1, 1, 1))["user_id"]) == ["a"]
