"""Review 24 (r5), bugs 2-4: cut-offs in years before 1 are one error line naming the option,
text timestamps outside pandas' nanosecond range are never read as other dates, and ``serve``
prints a URL an IPv6 host can be reached at."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from test_cli import runner
from valuerec import cli_serve
from valuerec.cli import app
from valuerec.data.ingest import ingest, parse_timestamp_text, parse_timestamp_texts
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.evaluate.ranking import Interactions, temporal_split, to_datetimes
from valuerec.features.split import SplitError, TemporalSplit, to_timestamp


def _invoke(*args: str) -> Any:
    """The command's result, exceptions caught: a traceback must show as a wrong exit code."""
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny store with a naive value model fitted."""
    data = generate(users=40, items=10, days=120, holdout_days=10, seed=5)
    db = str(tmp_path_factory.mktemp("misc-review24") / "shop.duckdb")
    with Store(db) as store:
        ingest(store, data.items, "items")
        ingest(store, data.events, "events")
    fit = _invoke("value", "fit", "--db", db, "--models", "naive", "--holdout-days", "20")
    assert fit.exit_code == 0, fit.output
    return db


# ----------------------------------------------------------------- 2. a cut-off before year 1


@pytest.mark.parametrize(
    "when",
    [
        "0000-01-01",
        "-0001-01-01",
        "0001-01-01T00:00+01:00",  # year 0 once in UTC
        "9999-12-31T23:00-05:00",  # year 10000 once in UTC
    ],
)
def test_a_cut_off_outside_years_1_to_9999_is_a_split_error_naming_it(when: str) -> None:
    """pandas holds year 0 and negative years; Python's datetime, which the store's times
    are, does not: the conversion raised a bare ValueError ("year 0 is out of range")."""
    with pytest.raises(
        SplitError, match=re.escape(f"--calibration-end is not a valid time: '{when}'")
    ):
        to_timestamp(when, "--calibration-end")
    with pytest.raises(SplitError, match=r"^calibration_end is not a valid time"):
        TemporalSplit(when, 30)


def test_the_first_and_last_times_a_cut_off_can_name_are_kept() -> None:
    assert to_timestamp("0001-01-01") == datetime(1, 1, 1)
    assert to_timestamp("9999-12-31T23:59:59.999999") == datetime(9999, 12, 31, 23, 59, 59, 999999)


@pytest.mark.parametrize(
    "args",
    [
        ["value", "fit", "--models", "naive", "--holdout-days", "20", "--calibration-end"],
        ["value", "evaluate", "--calibration-end"],
        ["value", "predict", "--model", "naive", "--as-of"],
        ["value", "segments", "--model", "naive", "--as-of"],
    ],
)
@pytest.mark.parametrize("when", ["0000-01-01", "-0001-01-01"])
def test_a_cut_off_before_year_1_is_one_error_line_naming_the_option(
    shop: str, tmp_path: Path, args: list[str], when: str
) -> None:
    # fit and evaluate write artifacts: elsewhere than the fixture's model, which the others read
    arts = ["--artifacts", str(tmp_path / "arts")] if args[1] in ("fit", "evaluate") else []
    res = _invoke(*args, when, "--db", shop, *arts)
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    err = " ".join(res.stderr.split())  # the console folds long lines at its width
    assert err.startswith(f"error: {args[-1]} is not a valid time: '{when}'"), err
    assert err.count("error:") == 1 and "Traceback" not in res.output, res.output


# ----------------------------------------------------------------- 3. text times out of ns range

#: times ingest and the API keep (years 1 to 9999) that datetime64[ns] cannot hold
_FAR = ["0001-01-01", "1500-06-01T12:00", "9999-12-31"]


def test_text_timestamps_are_read_as_one_text_is_even_outside_the_nanosecond_range() -> None:
    """datetime64[ns] holds 1677-09-21 to 2262-04-11: the column's times wrapped round into
    other dates (9999-12-31 read as 1816-03-29, 1500 as 2084), silently."""
    texts = [*_FAR, "2024-01-01T10:00+01:00", "not a time", None]
    got = parse_timestamp_texts(texts)
    want = [parse_timestamp_text(t) for t in texts[:5]]
    assert want[:4] == [
        datetime(1, 1, 1),
        datetime(1500, 6, 1, 12),
        datetime(9999, 12, 31),
        datetime(2024, 1, 1, 9),
    ]
    assert [t.to_pydatetime() for t in got.iloc[:4]] == want[:4]
    assert got.iloc[4:].isna().all()  # no time ingest reads, and a missing one


def test_text_timestamps_keep_the_index_of_the_values() -> None:
    got = parse_timestamp_texts(pd.Series(["2024-01-02", "9999-12-31"], index=[7, 9]))
    assert list(got.index) == [7, 9] and got[9] == pd.Timestamp("9999-12-31")


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(["2024-01-01", "9999-12-31", "2024-01-03"], index=[10, 11, 12]),
        pd.Series(
            [datetime(2024, 1, 1), datetime(9999, 12, 31), datetime(2024, 1, 3)],
            index=[10, 11, 12],
            dtype=object,
        ),
    ],
    ids=["text", "datetimes"],
)
def test_a_frames_time_outside_the_nanosecond_range_is_an_error_naming_it(
    values: pd.Series,
) -> None:
    """The frames models read keep times as datetime64[ns]: a time it cannot hold is refused
    by name, not wrapped into another date (or dropped as if it were missing)."""
    with pytest.raises(ValueError) as exc:
        to_datetimes(values)
    message = str(exc.value)
    assert "timestamp column" in message and "9999-12-31" in message, message
    assert "row 11" in message and "1677-09-21" in message and "2262-04-11" in message, message
    # a model's frame: its times are read when it is split by time
    frame = pd.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["x", "y", "z"]})
    inter = Interactions.from_frame(frame.assign(timestamp=values.to_numpy()))
    with pytest.raises(ValueError, match=r"timestamp column.*9999-12-31.*row 1"):
        temporal_split(inter, "2024-01-02", "2024-01-03")


def test_a_frames_times_inside_the_nanosecond_range_are_read_as_before() -> None:
    got = to_datetimes(pd.Series(["1677-09-22", "2262-04-10T23:00", "2024-01-01T10:00+01:00"]))
    assert got.dtype == "datetime64[ns]"
    assert list(got) == [
        pd.Timestamp("1677-09-22"),
        pd.Timestamp("2262-04-10T23:00"),
        pd.Timestamp("2024-01-01T09:00"),
    ]


# ----------------------------------------------------------------- 4. serve on an IPv6 host


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("::", "http://[::]:{port}"),
        ("::1", "http://[::1]:{port}"),
        ("127.0.0.1", "http://127.0.0.1:{port}"),
    ],
)
def test_serve_prints_a_url_its_host_can_be_reached_at(
    shop: str, monkeypatch: pytest.MonkeyPatch, host: str, url: str
) -> None:
    """An IPv6 address in a URL is bracketed: ``http://:::8000`` is no URL."""
    served: list[int] = []
    fake = SimpleNamespace(
        state=SimpleNamespace(service=SimpleNamespace(models=SimpleNamespace(recommenders={})))
    )
    monkeypatch.setattr("valuerec.serve.app.create_app", lambda *a, **k: fake)
    monkeypatch.setattr(
        cli_serve, "_serve_one", lambda app, sock, *a: served.append(sock.getsockname()[1])
    )
    res = _invoke("serve", "--db", shop, "--host", host, "--port", "0")
    assert res.exit_code == 0, res.output
    (port,) = served
    assert f"serving {shop} on {url.format(port=port)} (docs: /docs)" in res.stdout, res.stdout


def test_an_ipv6_zone_is_escaped_in_the_url() -> None:
    """RFC 6874: the ``%`` before a zone id is written ``%25`` inside the brackets."""
    assert cli_serve.http_url("fe80::1%eth0", 80) == "http://[fe80::1%25eth0]:80"


def test_a_temporal_cut_beyond_nanoseconds_range_splits_as_its_edge():
    """numpy cast a cut of 1500-01-01 round into 2084: every interaction fell in training.
    A cut before every time puts everything after it; one after every time, before it."""
    frame = pd.DataFrame(
        {"user_id": ["a", "a", "b"], "item_id": ["i1", "i2", "i1"],
         "timestamp": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"])}
    )  # fmt: skip
    inter = Interactions.from_frame(frame)
    split = temporal_split(inter, "1500-01-01", "9999-12-31")
    assert (split.train.matrix.nnz, split.valid.matrix.nnz, split.test.matrix.nnz) == (0, 3, 0)


def test_number_cuts_and_times_beyond_nanoseconds_range_never_wrap():
    """Epoch seconds of 2e10 (year 2603) or 1.6e12 (milliseconds given as seconds) wrapped
    round into 2019 and 1815 on the way to nanoseconds: a cut split the wrong rows, and a
    number timestamp sorted wrongly (review R8)."""
    frame = pd.DataFrame(
        {"user_id": ["u1", "u1", "u2", "u2", "u3"], "item_id": ["a", "b", "a", "c", "b"],
         "timestamp": pd.to_datetime(
             ["2019-01-01", "2019-06-01", "2020-03-01", "2021-01-01", "2021-06-01"])}
    )  # fmt: skip
    inter = Interactions.from_frame(frame)
    for valid, test in ((1.5e9, 2e10), (1577836800, 2e10), (1577836800, 1.6e12)):
        split = temporal_split(inter, valid, test)
        parts = [len(p.frame) for p in (split.train, split.valid, split.test)]
        assert parts == ([0, 5, 0] if valid == 1.5e9 else [2, 3, 0]), (valid, test)
    with pytest.raises(ValueError, match="test_start nan is no time"):
        temporal_split(inter, 1.5e9, float("nan"))
    with pytest.raises(ValueError, match=r"1600000000000.0 \(row 1\) is outside the times"):
        to_datetimes(pd.Series([1.5e9, 1.6e12]))


def test_a_history_line_that_is_no_utf8_is_one_damaged_line(tmp_path: Path):
    """A HISTORY line edited in Latin-1 made every save and promotion fail with a bare
    UnicodeDecodeError (review R8): it is one damaged line, named, and kept byte for byte."""
    from valuerec.artifacts import ArtifactStore, DamagedArtifactError

    arts = ArtifactStore(tmp_path / "models")
    arts.save("value-x", {"a": 1}, {"model": "x"})
    history = tmp_path / "models" / "value-x" / "HISTORY"
    latin = '{"action": "note", "by": "Ren\xe9"}\n'.encode("latin-1")
    history.write_bytes(history.read_bytes() + latin)
    with pytest.warns(UserWarning, match=r"HISTORY, line 2: damaged entry, not UTF-8"):
        assert arts.save("value-x", {"a": 2}, {"model": "x"}) == "v0002"
    assert arts.current("value-x") == "v0002"
    assert latin in history.read_bytes()
    with pytest.raises(DamagedArtifactError, match=r"HISTORY, line 2: damaged entry, not UTF-8"):
        arts.history("value-x")


# ----------------------------------------------------------------- r8 7. years below 1000, --as-of


def test_a_time_before_year_1000_prints_with_four_digit_years() -> None:
    """glibc's %Y does not pad: year 1 printed as "1-01-01", year 999 as "999-05-01"."""
    from valuerec.features.split import when_text

    assert when_text(datetime(1, 1, 1)) == "0001-01-01"
    assert when_text(datetime(999, 5, 1, 10, 0)) == "0999-05-01 10:00:00"
    assert when_text(datetime(2024, 3, 9, 0, 0, 5)) == "2024-03-09 00:00:05"


def test_as_of_after_the_log_names_the_option_and_the_end_of_the_log(shop: str) -> None:
    """--as-of 9999-12-31 said "calibration_end 9999-12-31 + 20 days is past the last date a
    timestamp can hold": an option the user did not give, and not the real cause."""
    with Store(shop) as store:
        last = store.con.execute("SELECT max(timestamp)::DATE FROM events").fetchone()[0]
    res = _invoke("value", "predict", "--model", "naive", "--db", shop, "--as-of", "9999-12-31")
    assert res.exit_code == 2, res.output
    err = " ".join(res.stderr.split())
    assert err.startswith(f"error: --as-of 9999-12-31 is after the end of the log ({last}):"), err
    assert "calibration_end" not in err
    res = _invoke("value", "predict", "--model", "naive", "--db", shop, "--as-of", "0001-01-01")
    assert res.exit_code == 2, res.output
    err = " ".join(res.stderr.split())
    assert err.startswith("error: the cut-off 0001-01-01 is not after the first purchase"), err
