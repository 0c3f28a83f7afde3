"""Data review 24 (r1), on both backends: a huge purchase value keeps the data fingerprint
computable, table names in ``store.query`` are matched as SQL matches them (any case, quoted
or not), and file ingest quarantines a timestamp outside years 1 to 9999 once in UTC."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from conftest import BACKENDS, databases_for
from valuerec.artifacts import data_fingerprint
from valuerec.data.ingest import ingest, parse_timestamp_text, parse_timestamp_texts
from valuerec.data.store import Store


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """An empty store on ``backend`` (a fresh schema on the session's PostgreSQL server)."""
    s = Store(databases_for(backend, tmp_path, request).new("r24"))
    yield s
    s.close()


def _events(users: list[str], values: list[float | None] | None = None) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": [f"i{k % 3}" for k in range(n)],
            "event_type": ["purchase"] * n,
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="D"),
            "value": values if values is not None else [1.5] * n,
        }
    )


# --- bug 1: the data fingerprint ---------------------------------------------------------


def _old_fingerprint(store: Store) -> str:
    """The fingerprint as computed before the fix (its SQL copied): right for values below
    1e20, so for an ordinary store the fixed one must give exactly this, or every saved model
    would be called stale."""
    n, last = store.con.execute("SELECT count(*), max(timestamp) FROM events").fetchone()
    by_type = store.con.execute(
        "SELECT event_type, count(*),"
        " coalesce(sum(CAST(value AS DECIMAL(38, 6))) FILTER (WHERE abs(value) < 1e20), 0),"
        " coalesce(sum(value) FILTER (WHERE abs(value) >= 1e20), 0)"
        " FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    summary = {
        "events": int(n),
        "max_timestamp": last.isoformat() if last is not None else None,
        "by_type": [[str(t), int(c), round(float(e) + float(h), 6)] for t, c, e, h in by_type],
    }
    return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()[:16]


def test_fingerprint_of_ordinary_data_is_unchanged(store: Store) -> None:
    frame = _events([f"u{k}" for k in range(6)], [0.1, 0.2, 19.99, 1e6 + 0.000001, -3.25, 7])
    views = frame.head(2).assign(event_type="view", value=None)
    ingest(store, pd.concat([frame, views], ignore_index=True), "events")
    # computed with the code before the fix, on both backends
    assert data_fingerprint(store) == "b45db48bf3087c43"
    assert data_fingerprint(store) == _old_fingerprint(store)


@pytest.mark.parametrize("huge", [1e32, 1e300, -1e32])
def test_fingerprint_survives_a_huge_value(store: Store, huge: float) -> None:
    report = ingest(store, _events(["u1", "u1"], [5.0, huge]), "events")
    assert (report.stored, report.quarantined) == (2, 0)
    before = data_fingerprint(store)
    assert len(before) == 16
    # the huge value still counts: another one gives another fingerprint
    ingest(store, _events(["u2"], [huge]).assign(timestamp=pd.Timestamp("2024-01-01")), "events")
    assert data_fingerprint(store) != before


# --- bug 2: table names in store.query on PostgreSQL --------------------------------------


@pytest.mark.parametrize("table", ["EVENTS", "Events", '"events"', '"EVENTS"'])
def test_query_reads_a_table_named_in_any_case_before_any_other_query(
    store: Store, table: str
) -> None:
    ingest(store, _events(["u1", "u2", "u3"]), "events")
    assert int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0]) == 3


@pytest.mark.parametrize("table", ["EVENTS", "Events", '"events"', '"Events"'])
def test_query_with_a_table_named_in_any_case_sees_new_rows(store: Store, table: str) -> None:
    ingest(store, _events(["u1", "u2", "u3"]), "events")
    assert int(store.query("SELECT count(*) AS n FROM events")["n"][0]) == 3
    ingest(store, _events([f"v{k}" for k in range(5)]), "events")
    # the copy read by the first query is stale now: naming the table otherwise must refresh it
    assert int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0]) == 8
    assert int(store.query("SELECT count(*) AS n FROM events")["n"][0]) == 8


def test_query_of_an_empty_table_named_in_upper_case(store: Store) -> None:
    assert int(store.query("SELECT count(*) AS n FROM EVENTS")["n"][0]) == 0


# --- bug 3: timestamps outside years 1 to 9999 in UTC -------------------------------------

OUT_OF_RANGE = [
    "0001-01-01T00:30:00+01:00",  # 1 BC once in UTC
    "9999-12-31T23:30:00-01:00",  # year 10000 once in UTC
    "0000-06-01",  # year 0 is 1 BC
    "00000101",  # the same as YYYYMMDD
    "-99999999999",  # epoch seconds: year -1199
]


@pytest.mark.parametrize("text", OUT_OF_RANGE)
def test_timestamp_outside_years_1_to_9999_is_quarantined(
    store: Store, write: Callable[[str, str], Path], text: str
) -> None:
    path = write(
        "ev.csv",
        "user_id,item_id,event_type,timestamp,value\n"
        f"u1,i1,purchase,{text},1\n"
        "u1,i1,purchase,2024-01-01,2\n",
    )
    report = ingest(store, path, "events")
    assert (report.stored, report.quarantined) == (1, 1)
    field, reason = store.fetch("SELECT field, reason FROM quarantine")[0]
    assert field == "timestamp"
    assert "years 1 to 9999" in reason and "UTC" in reason and text in reason
    # the stored row reads back on both backends (the mirror and a portable fetch)
    assert store.query("SELECT CAST(timestamp AS VARCHAR) AS t FROM events")["t"].tolist() == [
        "2024-01-01 00:00:00"
    ]
    assert [r[0].year for r in store.fetch("SELECT timestamp FROM events")] == [2024]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0001-01-01T01:00:00+01:00", "0001-01-01 00:00:00"),
        ("0001-01-01", "0001-01-01 00:00:00"),
        ("9999-12-31T22:59:59.999999-01:00", "9999-12-31 23:59:59.999999"),
        ("9999-12-31 23:59:59.999999", "9999-12-31 23:59:59.999999"),
    ],
)
def test_timestamps_at_the_edges_of_the_range_are_stored(
    store: Store, write: Callable[[str, str], Path], text: str, expected: str
) -> None:
    path = write("ev.csv", f"user_id,item_id,event_type,timestamp\nu1,i1,view,{text}\n")
    report = ingest(store, path, "events")
    assert (report.stored, report.quarantined) == (1, 0)
    got = store.query("SELECT strftime(timestamp, '%Y-%m-%d %H:%M:%S.%f') AS t FROM events")
    assert got["t"][0].removesuffix(".000000") == expected


@pytest.mark.parametrize("text", OUT_OF_RANGE[:2])
def test_api_reading_of_text_refuses_the_same_timestamps(text: str) -> None:
    assert parse_timestamp_text(text) is None


def test_one_text_parsed_leaves_the_shared_parser_ready_for_a_column():
    """The API's one-text parse left its result unfinished on the shared connection, so the
    next column parse in the process (ranking's text timestamps) failed to register."""
    assert parse_timestamp_text("2024-01-01T10:00:00+01:00") == datetime(2024, 1, 1, 9)
    got = parse_timestamp_texts(["2024-01-02", "not a time"])
    assert got.iloc[0] == pd.Timestamp("2024-01-02") and pd.isna(got.iloc[1])
