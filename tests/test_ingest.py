"""Ingest: validation, quarantine, idempotency and clear errors, on small files made here."""

from __future__ import annotations

import gzip
import json
import re
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from conftest import BACKENDS
from valuerec.data.ingest import InputError, ingest
from valuerec.data.store import Store

MAP = {"user": "user_id", "ts": "timestamp", "type": "event_type"}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that takes ``store`` runs on DuckDB and on PostgreSQL."""
    return request.param


def lines_and_fields(store) -> tuple[list[int], list[str]]:
    """The quarantine's (line, field) columns in line order."""
    q = store.quarantine().sort_values("line")
    return list(q["line"]), list(q["field"])


GOOD_AND_BAD = """user,ts,type,value,channel
u1,2020-01-01T10:00:00+02:00,Purchase,10.5,web
u2,19970102,view,,app
,2020-01-03,view,,web
u3,881250949,view,abc,web
u4,not a date,view,1,web
u5,2020-01-01,view,1,web,EXTRA
u6,2020-01-05 08:30:00,cart,inf,web
u7,2020-01-06,click,2,web
"""


def test_good_rows_are_stored_with_canonical_types(store, write):
    path = write("events.csv", GOOD_AND_BAD)
    result = ingest(store, path, "events", mapping=MAP)
    assert (result.rows_read, result.stored, result.quarantined) == (8, 3, 5)
    ev = store.events().set_index("user_id")
    assert list(ev.index) == ["u1", "u2", "u7"]
    # offset converted to UTC; YYYYMMDD read as a date; event types lower-cased
    assert ev.loc["u1", "timestamp"] == datetime(2020, 1, 1, 8, 0)
    assert ev.loc["u2", "timestamp"] == datetime(1997, 1, 2)
    assert ev.loc["u1", "event_type"] == "purchase"
    assert ev.loc["u1", "value"] == 10.5
    assert pd.isna(ev.loc["u2", "value"])
    # leftover columns are kept in properties, not dropped
    assert json.loads(ev.loc["u7", "properties"]) == {"channel": "web"}


def test_epoch_seconds_are_parsed(store):
    frame = pd.DataFrame(
        {"user_id": ["a", "b"], "event_type": "view", "timestamp": ["881250949", "881250949.5"]}
    )
    ingest(store, frame, "events")
    got = sorted(store.events()["timestamp"])
    assert got[0] == datetime(1997, 12, 4, 15, 55, 49)
    assert got[1] == datetime(1997, 12, 4, 15, 55, 49, 500000)


def test_bad_rows_are_quarantined_with_reason(store, write):
    path = write("events.csv", GOOD_AND_BAD)
    ingest(store, path, "events", mapping=MAP)
    q = store.quarantine().sort_values("line").reset_index(drop=True)
    assert list(q["line"]) == [4, 5, 6, 7, 8]  # physical lines, header is line 1
    assert list(q["field"]) == ["user_id", "value", "timestamp", "(line)", "value"]
    assert q.loc[0, "reason"] == "missing required value"
    assert q.loc[1, "reason"] == "cannot parse a finite number from abc"
    assert "not a date" in q.loc[2, "reason"]
    assert q.loc[3, "reason"].startswith("too many columns")
    assert q.loc[3, "raw"] == "u5,2020-01-01,view,1,web,EXTRA"
    assert "from inf" in q.loc[4, "reason"]
    assert json.loads(q.loc[1, "raw"])["value"] == "abc"
    assert set(q["source"]) == {str(path)}


def test_a_row_with_several_bad_fields_names_them_all(store, write):
    path = write("e.csv", "user_id,timestamp,event_type,value\n,never,view,x\n")
    ingest(store, path)
    q = store.quarantine()
    assert q.loc[0, "field"] == "user_id, timestamp, value"
    assert q.loc[0, "reason"].count(";") == 2


def test_reingest_adds_nothing(store, write):
    path = write("events.csv", GOOD_AND_BAD)
    first = ingest(store, path, "events", mapping=MAP)
    second = ingest(store, path, "events", mapping=MAP)
    assert (second.stored, second.duplicates) == (0, first.stored)
    assert store.count("events") == 3
    assert store.count("quarantine") == 5  # the quarantine is idempotent too


def test_identical_rows_in_one_file_are_all_kept_and_reingest_adds_none(store, write):
    rows = "user_id,timestamp,event_type,value\n" + "u1,1997-01-12,purchase,12.0\n" * 3
    path = write("same_day.csv", rows + "u1,1997-01-12,purchase,77.0\n")
    assert ingest(store, path).stored == 4
    assert ingest(store, path).stored == 0
    assert sorted(store.events()["occurrence"]) == [0, 0, 1, 2]
    # a later export repeating the day with one more identical purchase adds exactly that one
    more = write("later.csv", rows + "u1,1997-01-12,purchase,12.0\n")
    result = ingest(store, more)
    assert (result.stored, result.duplicates) == (1, 3)
    assert store.count("events") == 5


def test_event_id_is_the_identity_when_given(store, write):
    path = write(
        "ids.csv",
        "event_id,user_id,timestamp,event_type\n"
        "e1,u1,2020-01-01,view\ne1,u1,2020-01-01,view\ne2,u1,2020-01-01,view\n",
    )
    first = ingest(store, path)
    assert (first.stored, first.duplicates) == (2, 1)
    # same id with different content is the same event: skipped
    again = write("ids2.csv", "event_id,user_id,timestamp,event_type\ne2,u9,2021-01-01,click\n")
    assert ingest(store, again).stored == 0
    assert store.count("events") == 2


def test_missing_required_column_is_an_error_and_changes_nothing(store, write):
    ingest(store, write("ok.csv", "user_id,timestamp,event_type\nu1,2020-01-01,view\n"))
    bad = write("no_time.csv", "user_id,event_type\nu1,view\n")
    with pytest.raises(InputError) as exc:
        ingest(store, bad)
    msg = str(exc.value)
    assert str(bad) in msg and "timestamp" in msg and "--map" in msg
    assert store.count("events") == 1 and store.count("quarantine") == 0
    assert store.count("ingest_runs") == 1


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.csv", None, "no such file"),
        ("empty.csv", "", "the file is empty"),
        ("events.xyz", "a,b\n", "cannot tell the format"),
        ("bad.parquet", "this is not parquet", "cannot be read"),
        # "export as JSON": an array, compact or pretty-printed, is no JSON Lines file (its
        # lines were quarantined, or those holding a whole object stored)
        (
            "array.json",
            '[{"user_id": "a", "event_type": "view", "timestamp": "2024-01-01"}]',
            "a JSON array, not JSON Lines",
        ),
        (
            "pretty.json",
            '[\n {"user_id": "a", "event_type": "view", "timestamp": "2024-01-01"}'
            ',\n {"user_id": "b", "event_type": "view", "timestamp": "2024-01-01"}\n]\n',
            "a JSON array, not JSON Lines",
        ),
        ("scalars.jsonl", '1\n"two"\n', "no line is a JSON object"),
    ],
)
def test_unreadable_files_get_one_clear_error(store, tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=expected) as exc:
        ingest(store, path)
    assert name in str(exc.value)
    assert store.count("events") == 0


def test_constants_fill_a_missing_field(store, write):
    path = write("tx.csv", "customer,date,amount\n00001,19970101,11.77\n")
    r = ingest(
        store,
        path,
        mapping={"customer": "user_id", "date": "timestamp", "amount": "value"},
        constants={"event_type": "purchase"},
    )
    assert r.stored == 1
    ev = store.events()
    assert ev.loc[0, "event_type"] == "purchase" and ev.loc[0, "user_id"] == "00001"


def test_map_errors_name_the_problem(store, write):
    path = write("e.csv", "user,ts,type\nu1,2020-01-01,view\n")
    with pytest.raises(InputError, match="not events fields"):
        ingest(store, path, mapping={"user": "customer"})
    with pytest.raises(InputError, match="does not have"):
        ingest(store, path, mapping={"nope": "user_id"})


def test_jsonl_malformed_lines_are_quarantined_with_their_line(store, write):
    path = write(
        "events.jsonl",
        '{"user_id": "u1", "timestamp": "2020-01-01", "event_type": "view", "device": "ios"}\n'
        "{not json}\n"
        "\n"
        '{"user_id": "u2", "timestamp": "2020-01-02", "event_type": "view"}\n'
        '["an", "array"]\n'
        '{"user_id": "u3", "timestamp": "yesterday", "event_type": "view"}\n',
    )
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (2, 3)
    assert lines_and_fields(store) == ([2, 5, 6], ["(line)", "(line)", "timestamp"])
    reasons = store.quarantine().sort_values("line")["reason"].tolist()
    # each fault says what it is: not JSON at all, or JSON that is not an object
    assert reasons[:2] == ["malformed JSON: not valid JSON", "malformed JSON: not a JSON object"]
    ev = store.events().set_index("user_id")
    assert json.loads(ev.loc["u1", "properties"]) == {"device": "ios"}


def test_parquet_and_dataframe_sources_keep_their_types(store, tmp_path):
    frame = pd.DataFrame(
        {
            "user_id": [1, 2],  # integers become string ids
            "item_id": ["a", None],
            "event_type": ["purchase", "view"],
            "timestamp": pd.to_datetime(["2021-03-01 12:00", "2021-03-02 00:00"]),
            "value": [9.99, None],
            "score": [0.5, 0.7],
        }
    )
    path = tmp_path / "e.parquet"
    frame.to_parquet(path)
    assert ingest(store, path).stored == 2
    ev = store.events().set_index("user_id")
    assert ev.loc["1", "timestamp"] == datetime(2021, 3, 1, 12)
    assert pd.isna(ev.loc["2", "item_id"])
    assert json.loads(ev.loc["1", "properties"]) == {"score": 0.5}
    # the same rows from a DataFrame are recognised as already stored
    assert ingest(store, frame).stored == 0


def test_items_are_upserted_by_id(store, write):
    first = write(
        "items.csv",
        "item_id,title,category,price,colour\ni1,Lamp,home|light,20,red\ni2,Kettle,home,30,blue\n",
    )
    assert ingest(store, first, "items").stored == 2
    second = write(
        "items2.csv",
        "item_id,title,category,price,colour\n"
        "i1,Lamp,home|light,20,red\ni2,Kettle,home,25,blue\ni3,Vase,home,12,\n",
    )
    r = ingest(store, second, "items")
    assert (r.stored, r.duplicates) == (2, 1)  # i2 updated, i3 new, i1 unchanged
    items = store.items().set_index("item_id")
    assert items.loc["i2", "price"] == 25.0
    assert items.loc["i1", "category"] == "home|light"
    assert json.loads(items.loc["i1", "properties"]) == {"colour": "red"}


def test_users_have_properties_and_signup_time(store, write):
    path = write(
        "users.csv", "user_id,signup_time,age,region\nu1,2020-05-01,34,north\nu2,soon,20,south\n"
    )
    r = ingest(store, path, "users")
    assert (r.stored, r.quarantined) == (1, 1)
    users = store.users().set_index("user_id")
    assert users.loc["u1", "signup_time"] == datetime(2020, 5, 1)
    assert json.loads(users.loc["u1", "properties"]) == {"age": "34", "region": "north"}


def test_batches_write_everything_once(store, tmp_path):
    n = 2_500
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i % 50}" for i in range(n)],
            "event_type": "view",
            "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(range(n), unit="min"),
        }
    )
    frame.loc[::7, "timestamp"] = None  # bad rows spread over every batch
    steps = []
    r = ingest(store, frame, batch_size=300, progress=lambda s, d, t: steps.append((s, d, t)))
    assert r.stored == n - len(frame[::7]) and r.quarantined == len(frame[::7])
    assert store.count("events") == r.stored and store.count("quarantine") == r.quarantined
    assert ("writing", 9, 9) in steps


def test_unknown_kind_is_rejected(store, write):
    with pytest.raises(ValueError, match="unknown kind"):
        ingest(store, write("e.csv", "a\n1\n"), "orders")


def test_a_set_default_fills_only_a_missing_value_never_a_bad_one(store, write):
    path = write(
        "e.csv",
        "user_id,event_type,timestamp,value\n"
        "u1,purchase,2024-01-01,12.5\nu2,purchase,not-a-date,xx\nu3,purchase,,\n",
    )
    r = ingest(store, path, constants={"value": "0", "timestamp": "2024-06-30"})
    assert (r.stored, r.quarantined) == (2, 1)
    ev = store.events().set_index("user_id")
    assert ev.loc["u3", "timestamp"] == datetime(2024, 6, 30) and ev.loc["u3", "value"] == 0.0
    q = store.quarantine()
    assert q.loc[0, "field"] == "timestamp, value"
    assert "cannot parse" in q.loc[0, "reason"] and "not-a-date" in q.loc[0, "reason"]


def test_timestamps_with_a_zone_are_converted_or_quarantined(store, write):
    path = write(
        "tz.csv",
        "user_id,event_type,timestamp\n"
        "paris,view,2024-01-01T10:00:00 Europe/Paris\n"
        "est,view,2024-01-01 10:00:00 EST\n"
        "secs,view,2024-01-01T10:00:00+01:30:15\n"
        "plain,view,2024-01-01 10:00:00\n"
        "pm,view,2024-01-01 10:00:00 PM\n"
        "foo,view,2024-01-01 10:00:00 foo\n"
        "bc,view,2024-01-01 10:00:00 BC\n",
    )
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (4, 3)
    ts = store.events().set_index("user_id")["timestamp"]
    assert ts["paris"] == datetime(2024, 1, 1, 9)
    assert ts["est"] == datetime(2024, 1, 1, 15)
    assert ts["secs"] == datetime(2024, 1, 1, 8, 29, 45)
    assert ts["plain"] == datetime(2024, 1, 1, 10)
    assert set(store.quarantine()["field"]) == {"timestamp"}


def test_a_properties_column_that_is_not_a_json_object_is_quarantined(store, write):
    path = write(
        "p.csv",
        "user_id,event_type,timestamp,properties,channel\n"
        'u1,view,2024-01-01,{bad json,web\nu2,view,2024-01-01,"[1,2]",web\n'
        'u3,view,2024-01-01,"{""a"": 1}",web\n',
    )
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (1, 2)
    q = store.quarantine().sort_values("line")
    assert list(q["field"]) == ["properties", "properties"]
    assert list(q["reason"]) == [
        "cannot parse a JSON object from {bad json",
        "cannot parse a JSON object from [1,2]",
    ]
    ev = store.events()
    assert json.loads(ev.loc[0, "properties"]) == {"a": 1, "channel": "web"}


def test_an_entity_file_with_fewer_columns_keeps_the_stored_fields(store, write):
    ingest(store, write("a.csv", "item_id,title,price,brand\ni1,Old,9.99,acme\n"), "items")
    r = ingest(store, write("b.csv", "item_id,title,colour\ni1,New,red\n"), "items")
    assert r.stored == 1
    items = store.items().set_index("item_id")
    assert items.loc["i1", "title"] == "New" and items.loc["i1", "price"] == 9.99
    assert json.loads(items.loc["i1", "properties"]) == {"brand": "acme", "colour": "red"}
    # the same partial file again changes nothing; an empty cell does not erase a property
    assert ingest(store, write("b.csv", "item_id,title,colour\ni1,New,red\n"), "items").stored == 0
    ingest(store, write("c.csv", "item_id,price,brand\ni1,,\n"), "items")
    items = store.items().set_index("item_id")
    assert pd.isna(items.loc["i1", "price"]) and items.loc["i1", "title"] == "New"
    assert json.loads(items.loc["i1", "properties"]) == {"brand": "acme", "colour": "red"}


@pytest.mark.parametrize(
    ("constants", "message"),
    [
        ({"timestamp": "yesterday"}, "--set timestamp=yesterday: cannot parse a timestamp"),
        ({"value": "abc"}, "--set value=abc: cannot parse a finite number"),
        ({"event_type": " "}, "--set event_type=: needs a value"),
    ],
)
def test_an_unparseable_set_default_is_an_error(store, write, constants, message):
    path = write("e.csv", "user_id,item_id\nu1,i1\n")
    with pytest.raises(InputError, match=message):
        ingest(store, path, constants={"event_type": "view", "timestamp": "2024-01-01"} | constants)
    assert store.count("events") == 0 and store.count("quarantine") == 0


def test_jsonl_with_a_byte_order_mark(store, tmp_path):
    path = tmp_path / "bom.jsonl"
    line = '{"user_id": "%s", "event_type": "view", "timestamp": "2024-01-01"}\n'
    path.write_bytes(b"\xef\xbb\xbf" + (line % "u1" + line % "u2").encode())
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (2, 0)


def test_a_file_name_is_never_a_glob_pattern(store, tmp_path):
    header = "user_id,event_type,timestamp\n"
    (tmp_path / "data[1].csv").write_text(header + "bracket,view,2024-01-01\n")
    (tmp_path / "data1.csv").write_text(header + "plain,view,2024-01-01\n")
    (tmp_path / "data2.csv").write_text(header + "other,view,2024-01-01\n")
    ingest(store, tmp_path / "data[1].csv")
    assert list(store.events()["user_id"]) == ["bracket"]
    with pytest.raises(InputError, match="no such file"):
        ingest(store, tmp_path / "data?.csv")
    (tmp_path / "data?.csv").write_text(header + "question,view,2024-01-01\n")
    ingest(store, tmp_path / "data?.csv")
    assert sorted(store.events()["user_id"]) == ["bracket", "question"]


def test_reingest_through_another_path_adds_no_quarantine_rows(store, tmp_path, monkeypatch):
    (tmp_path / "e.csv").write_text("user_id,event_type,timestamp\nu1,view,bad\n")
    monkeypatch.chdir(tmp_path)
    ingest(store, "e.csv")
    ingest(store, tmp_path / "e.csv")
    assert store.count("quarantine") == 1


def test_float_id_columns_store_the_integer_text(store, write):
    frame = pd.DataFrame(
        {"user_id": [1.0, None, 3.0, 2.5], "event_type": "view", "timestamp": "2024-01-01"}
    )
    ingest(store, frame)
    # the same ids from a CSV are the same users, not new ones
    ingest(store, write("e.csv", "user_id,event_type,timestamp\n1,view,2024-01-01\n"))
    assert sorted(store.events()["user_id"]) == ["1", "2.5", "3"]


def test_jsonl_keys_with_quotes_or_differing_only_in_case(store, write):
    path = write(
        "k.jsonl",
        '{"user_id": "u1", "event_type": "purchase", "timestamp": "2024-01-01", "Value": 1}\n'
        '{"user_id": "u2", "event_type": "purchase", "timestamp": "2024-01-01", "value": 2,'
        ' "q\\"x": 3, "a/b": 4}\n',
    )
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (2, 0)
    ev = store.events().set_index("user_id")
    assert list(ev["value"]) == [1.0, 2.0]
    assert json.loads(ev.loc["u2", "properties"]) == {"a/b": 4, 'q"x': 3}
    # one line holding both spellings: the same value is that value; two values cannot be
    # told apart (the one sorting first was stored, the other dropped without a word)
    both = write(
        "both.jsonl",
        '{"user_id": "u3", "USER_ID": "u3", "event_type": "view", "timestamp": "2024-01-02"}\n'
        '{"user_id": "u4", "USER_ID": "zz", "event_type": "view", "timestamp": "2024-01-02"}\n',
    )
    r = ingest(store, both)
    assert (r.stored, r.quarantined) == (1, 1)
    assert "u3" in set(store.events()["user_id"]) and "zz" not in set(store.events()["user_id"])
    q = store.quarantine().iloc[-1]
    assert q["line"] == 2 and "differ only in case and hold different values" in q["reason"]


def test_a_first_line_starting_with_hash_is_the_header_not_a_comment(store, write):
    """The reader's sniffer would make '#' a comment marker: records starting with it were
    dropped and values cut at it, without a word. The first line is always the header."""
    path = write(
        "items.csv",
        "# catalogue export 2024-06-01\nitem_id,title,price\n"
        "#42,Gift card,10\n7,Best of #1 hits,12.5\n8,Plain,3\n",
    )
    with pytest.raises(InputError, match="missing required column") as exc:
        ingest(store, path, "items")
    assert "['# catalogue export 2024-06-01']" in str(exc.value)
    assert store.count("items") == 0 and store.count("quarantine") == 0
    # without the preamble every record and value is kept, '#' and all
    ingest(store, write("items2.csv", path.read_text().split("\n", 1)[1]), "items")
    items = store.items().set_index("item_id")
    assert list(items.index) == ["#42", "7", "8"]
    assert items.loc["7", "title"] == "Best of #1 hits" and items.loc["#42", "price"] == 10.0


def test_a_yyyymmdd_date_held_as_float_is_a_date(store, tmp_path):
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "event_type": "purchase",
            "timestamp": [19970101, float("nan"), 881250949.0],  # float64: the NaN
        }
    )
    frame.to_parquet(tmp_path / "e.parquet")
    for source in (frame, tmp_path / "e.parquet"):
        r = ingest(store, source)
        assert r.quarantined == 1
        ts = store.events().set_index("user_id")["timestamp"]
        assert ts["a"] == datetime(1997, 1, 1)
        assert ts["c"] == datetime(1997, 12, 4, 15, 55, 49)  # epoch seconds stay so
    assert store.count("events") == 2


def test_a_csv_line_missing_several_columns_is_quarantined_once(store, write):
    path = write(
        "e.csv",
        "user_id,event_type,timestamp,value\na,view\nb,view,2020-01-01,1\nc,view,2020-01-02,oops\n",
    )
    r = ingest(store, path)
    assert (r.rows_read, r.stored, r.quarantined) == (3, 1, 2)
    q = store.quarantine().sort_values("line").reset_index(drop=True)
    assert list(q["line"]) == [2, 4]
    assert list(q["field"]) == ["timestamp, value", "value"]
    assert q.loc[0, "reason"] == "missing columns: Expected Number of Columns: 4 Found: 2"
    assert q.loc[0, "raw"] == "a,view" and pd.isna(q.loc[0, "row"])
    assert q.loc[1, "reason"] == "cannot parse a finite number from oops"
    assert store.stats()["quarantined"] == 2


def test_csv_lines_count_blank_lines_and_multi_line_fields(store, write):
    path = write(
        "e.csv",
        "user_id,event_type,timestamp\n"  # 1
        '"multi\nline",view,2020-01-01\n'  # 2-3
        "\n\n"  # 4-5
        "c,view\n"  # 6: rejected by the reader
        '"d ""q""\nx",view,bad\n'  # 7-8
        "e,view,2020-01-01\n"  # 9
        "f,view,bad\n",  # 10
    )
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (2, 3)
    q = store.quarantine().sort_values("line")
    assert list(q["line"]) == [6, 7, 10]
    assert list(q["raw"].iloc[[0]]) == ["c,view"]
    assert [json.loads(x)["user_id"] for x in q["raw"].iloc[1:]] == ['d "q"\nx', "f"]
    blank = write("b.csv", "user_id,event_type,timestamp\na,view,2020-01-01\n\nb,view,bad\n")
    ingest(store, blank)
    assert store.quarantine().query("source == @blank.as_posix()")["line"].tolist() == [4]


def test_jsonl_properties_keep_their_json_types(store, write):
    path = write(
        "p.jsonl",
        '{"user_id": 7, "event_type": "view", "timestamp": "2020-01-01", "value": 2.5, '
        '"meta": {"page": "home"}, "price": 12.5, "flag": true, "tags": ["a"], "n": null}\n',
    )
    assert ingest(store, path).stored == 1
    ev = store.events()
    assert ev.loc[0, "user_id"] == "7" and ev.loc[0, "value"] == 2.5
    assert json.loads(ev.loc[0, "properties"]) == {
        "meta": {"page": "home"},
        "price": 12.5,
        "flag": True,
        "tags": ["a"],
        "n": None,
    }


def test_input_columns_named_like_internal_ones_are_data(store, write):
    path = write(
        "e.csv",
        "user_id,event_type,timestamp,_row,_line,_bad,__t_value\na,view,2020-01-01,r1,l1,x,y\n",
    )
    assert ingest(store, path).stored == 1
    props = json.loads(store.events().loc[0, "properties"])
    assert props == {"_row": "r1", "_line": "l1", "_bad": "x", "__t_value": "y"}
    line = {"user_id": "b", "event_type": "view", "timestamp": "2020-01-01"}
    path = write("e.jsonl", json.dumps({**line, "_malformed": True, "_rawtext": "x"}) + "\n")
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (1, 0)
    ev = store.events().set_index("user_id")
    assert json.loads(ev.loc["b", "properties"]) == {"_malformed": True, "_rawtext": "x"}


def test_an_input_column_named_rowid_is_data_and_rows_keep_their_numbers(store, write):
    """DuckDB's row number is the pseudo-column rowid, which an input column of that name
    would hide: the records would be numbered by the column, or not read at all."""
    path = write(
        "e.csv",
        "user_id,event_type,timestamp,value,RowId\n"
        "a,purchase,2020-01-01,1,x\nb,purchase,2020-01-02,bad,y\nc,purchase,2020-01-03,3,z\n",
    )
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (2, 1)
    ev = store.events().set_index("user_id")
    assert json.loads(ev.loc["a", "properties"]) == {"RowId": "x"}
    q = store.quarantine()
    assert (q.loc[0, "row"], q.loc[0, "line"], q.loc[0, "field"]) == (2, 3, "value")
    frame = pd.DataFrame({"user_id": ["d", "e"], "event_type": "view",
                          "timestamp": ["2020-01-01", "2020-01-02"], "rowid": [7, 9]})  # fmt: skip
    assert ingest(store, frame).stored == 2
    ev = store.events().set_index("user_id")
    assert json.loads(ev.loc["e", "properties"]) == {"rowid": 9}


def test_jsonl_a_bad_value_under_another_spelling_names_field_and_reason(store, write):
    base = {"user_id": "a", "event_type": "purchase", "timestamp": "2020-01-01"}
    path = write(
        "case.jsonl",
        json.dumps({**base, "Value": 10}) + "\n" + json.dumps({**base, "value": "abc"}) + "\n",
    )
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (1, 1)
    q = store.quarantine()
    assert (q.loc[0, "line"], q.loc[0, "field"]) == (2, "value")
    assert q.loc[0, "reason"] == "cannot parse a finite number from abc"


def test_jsonl_an_empty_key_holds_back_nothing(store, tmp_path):
    good = {"user_id": "a", "event_type": "view", "timestamp": "2020-01-01"}
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "user_id": "b", "": "x"}) + "\n")
    assert ingest(store, path).stored == 2
    ev = store.events().set_index("user_id")
    assert json.loads(ev.loc["b", "properties"]) == {"": "x"}


def test_jsonl_a_line_that_is_not_utf8_is_quarantined_with_its_line(store, tmp_path):
    good = {"user_id": "a", "event_type": "view", "timestamp": "2020-01-01"}
    bad = tmp_path / "bad.jsonl"
    lines = [json.dumps({**good, "user_id": u}).encode() for u in ("c", "d")]
    bad.write_bytes(lines[0] + b"\n" + b'{"user_id": "caf\xff"}\n\n' + lines[1] + b"\n")
    r = ingest(store, bad)
    assert (r.stored, r.quarantined) == (2, 1)
    q = store.quarantine()
    assert (q.loc[0, "line"], q.loc[0, "field"], q.loc[0, "reason"]) == (
        2,
        "(line)",
        "invalid UTF-8",
    )
    assert q.loc[0, "raw"] == '{"user_id": "caf\\xff"}'
    assert sorted(store.events()["user_id"]) == ["c", "d"]


def test_an_update_replaces_a_nested_property_whole_on_every_backend(store):
    first = pd.DataFrame(
        {"item_id": ["i1"], "title": ["A"], "properties": ['{"dims":{"w":1,"h":2},"color":"red"}']}
    )
    second = pd.DataFrame(
        {"item_id": ["i1"], "properties": ['{"dims":{"w":5},"parts":[{"id":1,"note":null}]}']}
    )
    ingest(store, first, "items")
    assert ingest(store, second, "items").stored == 1
    assert json.loads(store.items().loc[0, "properties"]) == {
        "dims": {"w": 5},
        "color": "red",
        "parts": [{"id": 1, "note": None}],
    }
    assert ingest(store, second, "items").stored == 0  # and the result compares unchanged


def test_nan_or_infinity_in_properties_is_quarantined_naming_the_field(store, write):
    """JSON has no NaN or Infinity, though DuckDB's reader takes them: such a record is
    quarantined on every backend (PostgreSQL refused the whole file over one), naming where
    it was; the words inside a string, or as a key, are data."""
    path = write(
        "events.jsonl",
        '{"user_id": "nan1", "event_type": "view", "timestamp": "2024-01-01", '
        '"properties": {"a": NaN}}\n'
        '{"user_id": "inf1", "event_type": "view", "timestamp": "2024-01-01", "score": -inf}\n'
        '{"user_id": "ok1", "event_type": "view", "timestamp": "2024-01-01", '
        '"properties": {"NaN": "Infinity", "inf": "say \\"nan\\"", "info": [1e5, true, null]}}\n'
        '{"user_id": "nested", "event_type": "view", "timestamp": "2024-01-01", '
        '"deep": {"b": [1, Infinity]}}\n',
    )
    r = ingest(store, path)
    assert (r.stored, r.quarantined) == (1, 3)
    assert lines_and_fields(store) == ([1, 2, 4], ["properties", "score", "deep"])
    assert store.quarantine()["reason"].str.contains("NaN or Infinity").all()
    ev = store.events().set_index("user_id")
    assert json.loads(ev.loc["ok1", "properties"]) == {
        "NaN": "Infinity",
        "inf": 'say "nan"',
        "info": [1e5, True, None],
    }
    # a CSV properties column, and a typed float column gathered into properties
    header = "user_id,event_type,timestamp,properties\n"
    csv = write("e.csv", header + 'c1,view,2024-01-01,"{""x"": NaN}"\n')
    assert ingest(store, csv).quarantined == 1
    frame = pd.DataFrame(
        {
            "user_id": ["f1", "f2", "f3"],
            "event_type": "view",
            "timestamp": "2024-01-02",
            "score": [float("inf"), float("nan"), 2.5],
        }
    )
    r = ingest(store, frame, source_name="frame")
    assert (r.stored, r.quarantined) == (2, 1)
    q = store.quarantine().query("source == 'frame'")
    assert (q["row"].tolist(), q["field"].tolist()) == ([1], ["score"])
    ev = store.events().set_index("user_id")
    assert json.loads(ev.loc["f2", "properties"]) == {"score": None}  # pandas' NaN: missing
    assert json.loads(ev.loc["f3", "properties"]) == {"score": 2.5}


def test_a_float_column_saved_as_text_reads_as_it_does_from_parquet(store, tmp_path):
    """pandas holds an integer column with a missing value as float and writes it as
    ``42.0`` and ``19970101.0``: from CSV or JSON Lines those were the id "42.0" (matching no
    item) and 1970-08-20 (epoch seconds), while Parquet gave "42" and 1997-01-01."""
    frame = pd.DataFrame(
        {
            "user_id": [1.0, 2.0, 3.0],
            "item_id": [42.0, np.nan, 7.0],
            "event_type": "purchase",
            "timestamp": [19970101.0, 19970315.0, 19970401.0],
            "value": [1.0, 2.0, 3.0],
        }
    )
    frame.to_csv(tmp_path / "e.csv", index=False)
    frame.to_json(tmp_path / "e.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "e.parquet")
    got = {}
    for fmt in ("csv", "jsonl", "parquet"):
        with Store(tmp_path / f"{fmt}.duckdb") as s:
            assert ingest(s, tmp_path / f"e.{fmt}").stored == 3
            got[fmt] = s.events()[["user_id", "item_id", "timestamp"]]
    assert got["csv"]["user_id"].tolist() == ["1", "2", "3"]
    assert got["csv"]["item_id"].tolist()[::2] == ["42", "7"]
    assert got["csv"]["timestamp"].min() == pd.Timestamp("1997-01-01")
    pd.testing.assert_frame_equal(got["csv"], got["parquet"])
    pd.testing.assert_frame_equal(got["jsonl"], got["parquet"])
    # a text column that only looks like floats in places keeps its text (version-like ids)
    mixed = pd.DataFrame(
        {"user_id": ["2.0", "2.1"], "event_type": "view", "timestamp": "2024-01-01"}
    )
    ingest(store, mixed)
    assert sorted(store.events()["user_id"]) == ["2.0", "2.1"]


def test_nanoseconds_are_cut_alike_from_text_and_from_typed_columns(store, tmp_path):
    """A CSV export and a Parquet export of the same events are one set of events: text
    timestamps were cut to microseconds while typed ones were rounded, so re-ingesting the
    other export stored every event with a sub-microsecond part twice."""
    times = pd.to_datetime(["2024-01-01 10:00:00.123456789", "2024-01-02 11:00:00.000000500"])
    frame = pd.DataFrame({"user_id": ["a", "b"], "event_type": "view", "timestamp": times})
    frame.to_parquet(tmp_path / "e.parquet")
    assert ingest(store, tmp_path / "e.parquet").stored == 2
    assert ingest(store, frame).stored == 0
    assert sorted(store.events()["timestamp"]) == [
        pd.Timestamp("2024-01-01 10:00:00.123456"),
        pd.Timestamp("2024-01-02 11:00:00"),
    ]
    csv = tmp_path / "e2.csv"
    csv.write_text(
        "user_id,event_type,timestamp\n"
        "a,view,2024-01-01 10:00:00.123456789\nb,view,2024-01-02T11:00:00.000000500Z\n"
    )
    assert ingest(store, csv).stored == 0


def test_one_unescaped_quote_leaves_the_other_quoted_values_unquoted(store, write):
    """One malformed record in a file that quotes its text made DuckDB's sniffer read the
    whole file without a quote character: every id kept its quotes (``"u1"``, no purchase
    at all), silently; with the timestamps quoted too, every row was quarantined, and with
    the header quoted the file was refused for missing columns."""
    rows = [f'"u{k}","i{k}","purchase",{1704067200 + k * 3600},{k}.0' for k in range(1, 21)]
    rows[9] = '"u10","i10","purchase",1704103200,10.0,"bad "quote"'  # line 11
    path = write("e.csv", "user_id,item_id,event_type,timestamp,value\n" + "\n".join(rows))
    r = ingest(store, path)
    assert (r.rows_read, r.stored, r.quarantined) == (20, 19, 1)
    ev = store.events()
    assert set(ev["event_type"]) == {"purchase"}
    assert {"u1", "u20"} <= set(ev["user_id"]) and "u10" not in set(ev["user_id"])
    assert set(ev["item_id"]) == {f"i{k}" for k in range(1, 21)} - {"i10"}
    assert lines_and_fields(store)[0] == [11]
    # everything quoted, the header too, as PostgreSQL's COPY ... FORCE_QUOTE * writes it
    rows = [f'"w{k}","j{k}","view","2024-01-{k:02d}","1.5"' for k in range(1, 21)]
    rows[4] = '"w5","j5","view","2024-01-05","12" screen"'  # line 6
    head = '"user_id","item_id","event_type","timestamp","value"\n'
    r = ingest(store, write("f.csv", head + "\n".join(rows) + "\n"))
    assert (r.rows_read, r.stored, r.quarantined) == (20, 19, 1)
    forced = store.query("SELECT * FROM events WHERE user_id LIKE 'w%' ORDER BY timestamp")
    assert forced["user_id"].iloc[0] == "w1" and forced["value"].iloc[0] == 1.5
    assert forced["timestamp"].iloc[-1] == pd.Timestamp("2024-01-20")
    q = store.quarantine().query("source == @path.parent.joinpath('f.csv').as_posix()")
    assert list(q["line"]) == [6]
    # a file that quotes nothing keeps a stray quote as data (not a field to the file's end)
    stray = write("s.csv", "user_id,event_type,timestamp,note\nx1,view,2024-01-01,\"oops\n"
                  "x2,view,2024-01-02,ok\n")  # fmt: skip
    assert ingest(store, stray).stored == 2
    assert store.query("SELECT properties FROM events WHERE user_id = 'x1'").iloc[0, 0] == (
        '{"note":"\\"oops"}'
    )


@pytest.mark.parametrize(
    ("note", "escaped", "expected"),
    [
        # a quote inside an unquoted field is data: it opens no quoted field
        ('5" screen', '5" screen', [7, 9]),
        # with backslash escapes, an escaped backslash does not escape the closing quote
        ('"c:\\\\"', "c:\\", [6, 9]),
    ],
)
def test_csv_lines_follow_quotes_only_where_they_open_a_field(
    store, write, note, escaped, expected
):
    """The line scan counted every quote for parity, so such a quote shifted the line of every
    later quarantined row (after a record spanning two lines, where the scan matters)."""
    lines = [
        "user_id,item_id,event_type,timestamp,note",
        'u1,i1,view,2024-01-01,"two\nlines"',
        f"u2,i2,view,2024-01-02,{note}",
        'u3,i3,view,2024-01-03,"x\ny"',
        "u4,i4,view,BAD4,ok",
        'u5,i5,view,2024-01-05,"p\nq"' if note.startswith('"') else "u5,i5,view,2024-01-05,ok",
        "u6,i6,view,BAD6,ok",
    ]
    if note.startswith('"'):
        lines[1] = 'u1,i1,view,2024-01-01,"a \\"q\\" b"'  # the sniffer then takes \ as escape
    r = ingest(store, write("e.csv", "\n".join(lines) + "\n"))
    assert (r.stored, r.quarantined) == (4, 2)
    assert lines_and_fields(store)[0] == expected
    props = store.query("SELECT properties FROM events WHERE user_id = 'u2'").iloc[0, 0]
    assert json.loads(props) == {"note": escaped}


@pytest.mark.parametrize("name", ["e.csv.gz", "e.csv", "e.jsonl.gz"])
def test_compressed_files_are_refused_with_a_clear_error(store, tmp_path, name):
    """A gzipped CSV read with ``--format csv`` was ingested with every quarantine line wrong
    (the line scan read the compressed bytes); a .gz was told to pass --format, and a
    .jsonl.gz was "not JSON Lines"."""
    text = (
        '{"user_id": "a", "event_type": "view", "timestamp": "2024-01-01"}\n'
        if "jsonl" in name
        else "user_id,event_type,timestamp\na,view,2024-01-01\nb,view,bad\n"
    )
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    for fmt in (None, "jsonl" if "jsonl" in name else "csv"):
        with pytest.raises(InputError, match="gzip-compressed; compressed files are not sup"):
            ingest(store, path, format=fmt)
    assert store.count("events") == 0 and store.stats()["quarantined"] == 0


@pytest.mark.parametrize(
    ("encoding", "named"),
    [("utf-16", "UTF-16"), ("utf-16-be", "UTF-16 (big-endian)"), ("utf-32", "UTF-32")],
)
def test_utf16_text_is_refused_naming_its_encoding(store, tmp_path, encoding, named):
    """UTF-16 (Excel's "Unicode Text", PowerShell 5's Export-Csv) was refused for "missing
    required columns", listing byte-mangled names and advising --map."""
    path = tmp_path / "e.csv"
    path.write_text("user_id,event_type,timestamp\na,view,2024-01-01\n", encoding=encoding)
    with pytest.raises(InputError, match=rf"is {re.escape(named)}.* text, not UTF-8") as exc:
        ingest(store, path)
    assert "--map" not in str(exc.value)


def test_a_long_field_near_the_top_is_read(store, write):
    """A field over DuckDB's default 2 MB line limit in the sniffer's sample refused the whole
    file ("CSV Error on Line: 1"); further down the same record was quarantined."""
    big = "y" * 3_000_000
    path = write("items.csv", f'item_id,title,text\ni1,a,short\ni2,b,"{big}"\ni3,c,short\n')
    assert ingest(store, path, "items").stored == 3
    got = store.query("SELECT item_id, length(text) AS n FROM items ORDER BY item_id")
    assert list(got["n"]) == [5, 3_000_000, 5]
    # over the limit (16 MB), near the top as further down: one quarantined line, saying why
    huge = "z" * 17_000_000
    path = write("huge.csv", f'item_id,title,text\nj1,a,short\nj2,b,"{huge}"\nj3,c,short\n')
    r = ingest(store, path, "items")
    assert (r.rows_read, r.stored, r.quarantined) == (3, 2, 1)
    q = store.quarantine()
    assert list(q["line"]) == [3] and "Maximum line size" in q["reason"].iloc[0]


def test_ids_and_labels_are_trimmed_of_tabs_and_line_breaks(store, write):
    """Trimming took spaces (and NBSP) but not tabs or line breaks: "\\tu1" and a quoted
    "u1\\n" were other users than u1."""
    path = write(
        "e.csv",
        "user_id,event_type,timestamp\n"
        "u1,view,2024-01-01\n"
        "\tu1,view\t,2024-01-02\n"
        '"u1\n",\tview,2024-01-03\n'
        '"\r\n u1\u00a0",view,2024-01-04\n',
    )
    assert ingest(store, path).stored == 4
    ev = store.events()
    assert set(ev["user_id"]) == {"u1"} and set(ev["event_type"]) == {"view"}
