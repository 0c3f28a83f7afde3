"""CLI review 24 (r4): ``--out`` errors, whole cells in tables, the value-weight bound, options
named as typed, the quarantine's limit, one time format with the API, ``serve`` on a busy port."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import TypeAdapter

from test_cli import runner
from valuerec import cli_common, cli_value
from valuerec.cli import app
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate


def _invoke(*args: str) -> Any:
    """The command's result, exceptions caught: a traceback must show as a wrong exit code."""
    return runner.invoke(app, list(args))


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny store with UUID user ids and ``SKU-<UUID>`` item ids (as real exports have), a
    naive value model and a popularity recommender fitted."""
    data = generate(users=80, items=20, days=200, holdout_days=10, seed=3)
    users = {u: str(uuid.uuid5(uuid.NAMESPACE_DNS, u)) for u in data.users["user_id"]}
    items = {
        i: "SKU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, i)).upper() for i in data.items["item_id"]
    }
    events = data.events.assign(
        user_id=data.events["user_id"].map(users), item_id=data.events["item_id"].map(items)
    )
    db = str(tmp_path_factory.mktemp("review24") / "shop.duckdb")
    with Store(db) as store:
        ingest(store, data.items.assign(item_id=data.items["item_id"].map(items)), "items")
        ingest(store, events, "events")
    fit = _invoke("value", "fit", "--db", db, "--models", "naive", "--holdout-days", "30")
    assert fit.exit_code == 0, fit.output
    rec = _invoke("recommend", "fit", "--db", db, "--models", "popularity")
    assert rec.exit_code == 0, rec.output
    return db


# ----------------------------------------------------------------- 1. --out that cannot be written


@pytest.mark.parametrize("command", ["predict", "segments"])
@pytest.mark.parametrize("target", ["folder.csv", "afile/x.csv"])
def test_an_out_that_cannot_be_written_is_one_line_before_any_prediction(
    shop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, target: str
) -> None:
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "afile").write_text("x")
    predicted: list[object] = []
    real = cli_value._predict_all
    monkeypatch.setattr(cli_value, "_predict_all", lambda *a: predicted.append(a) or real(*a))
    path = tmp_path / target
    res = _invoke("value", command, "--db", shop, "--model", "naive", "--out", str(path))
    assert res.exit_code == 2, (res.output, res.exception)
    said = _flat(res.stderr)
    assert said.startswith("error: --out: cannot write ") and str(path.resolve()) in said, said
    reason = "it is a directory" if target == "folder.csv" else f"{path.parent} is not a directory"
    assert reason in said and said.count("error:") == 1
    assert predicted == []  # refused before the model predicted anything


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_out_the_system_refuses_at_write_time_is_one_line(shop: str) -> None:
    res = _invoke("value", "predict", "--db", shop, "--model", "naive", "--out", "/proc/x.csv")
    assert res.exit_code == 2, res.output
    said = _flat(res.stderr)
    assert said == "error: --out: cannot write /proc/x.csv: No such file or directory", said


# ----------------------------------------------------------------- 2. whole ids and numbers


def _column(output: str, index: int) -> str:
    """Column ``index`` of a rich table's body rows, every row's lines joined: what a reader
    can piece together from the cells, folded or not."""
    cells = []
    for line in output.splitlines():
        parts = line.split("│")
        if len(parts) > index + 1:  # a body line (the header's bars are heavy: ┃)
            cells.append(parts[index + 1].strip())
    return "".join(cells)


def test_table_cells_fold_ids_and_numbers_instead_of_cutting_them(
    shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_common.out, "_width", 40)  # a narrow terminal
    table = _invoke("value", "predict", "--db", shop, "--model", "naive")
    data = json.loads(
        _invoke("value", "predict", "--db", shop, "--model", "naive", "--json").stdout
    )
    assert table.exit_code == 0, table.output
    assert "…" not in table.stdout, table.stdout
    top = data["top"]
    assert _column(table.stdout, 0) == "".join(r["user_id"] for r in top)
    assert _column(table.stdout, 1) == "".join(f"{r['ltv']:,.2f}" for r in top)
    user = top[0]["user_id"]
    monkeypatch.setattr(cli_common.out, "_width", 60)
    recs = _invoke("recommend", "for", user, "--db", shop, "--model", "popularity", "-k", "3")
    rows = json.loads(
        _invoke(
            "recommend", "for", user, "--db", shop, "--model", "popularity", "-k", "3", "--json"
        ).stdout
    )
    assert recs.exit_code == 0 and "…" not in recs.stdout, recs.stdout
    assert _column(recs.stdout, 1) == "".join(r["item_id"] for r in rows)
    stats = _invoke("stats", "--db", shop)
    assert stats.exit_code == 0 and "…" not in stats.stdout, stats.stdout


# ----------------------------------------------------------------- 3. the value weight's bound


@pytest.mark.parametrize("weight", ["100.5", "1e308"])
def test_a_value_weight_above_the_apis_bound_is_refused(shop: str, weight: str) -> None:
    res = _invoke("recommend", "for", "u1", "--db", shop, "--model", "popularity",
                  "--value-weight", weight)  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "--value-weight" in res.stderr and "at most 100" in _flat(res.stderr), res.stderr
    assert f"got {float(weight):g}" in _flat(res.stderr)


def test_a_value_weight_at_the_bound_is_served(shop: str) -> None:
    res = _invoke("recommend", "for", "u1", "--db", shop, "--model", "popularity",
                  "--value-weight", "100", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 10


# ----------------------------------------------------------------- 4. options named as typed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["value", "fit", "--calibration-end", "2024-13-01"], "--calibration-end is not a valid"),
        (["value", "evaluate", "--calibration-end", "2024-13-01"], "--calibration-end is not a"),
        (["datasets", "synth", "--holdout-days", "-1", "--out", "x"], "'--holdout-days'"),
        (["datasets", "synth", "--users", "0", "--out", "x"], "'--users'"),
        (["datasets", "synth", "--items", "0", "--out", "x"], "'--items'"),
        (["datasets", "synth", "--days", "0", "--out", "x"], "'--days'"),
    ],
)
def test_errors_name_the_option_as_typed(
    shop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    db = [] if args[0] == "datasets" else ["--db", shop]
    res = _invoke(*args, *db)
    assert res.exit_code == 2, res.output
    assert message in res.output, res.output
    assert not (tmp_path / "x").exists()


def test_ingest_batch_size_below_one_names_the_option(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user_id,timestamp,event_type\nu,2024-01-01,view\n")
    db = tmp_path / "s.duckdb"
    res = _invoke("ingest", str(path), "--batch-size", "0", "--db", str(db))
    assert res.exit_code == 2 and "'--batch-size'" in res.output, res.output
    assert not db.exists()


def test_a_campaign_with_too_few_users_says_which_option_to_raise() -> None:
    res = _invoke("value", "campaign", "--users", "10", "--days", "5", "--campaign-days", "5")
    assert res.exit_code == 2, res.output
    assert "raise --users" in _flat(res.stderr), res.stderr


# ----------------------------------------------------------------- 5. quarantine --json is whole


def _quarantined(tmp_path: Path, rows: int) -> str:
    path = tmp_path / "bad.csv"
    lines = [f"u{i},not-a-time-{i},view" for i in range(rows)]
    path.write_text("user_id,timestamp,event_type\n" + "\n".join(lines) + "\n")
    db = str(tmp_path / "q.duckdb")
    assert _invoke("ingest", str(path), "--db", db).exit_code == 0
    return db


def test_quarantine_json_lists_every_row_and_the_table_says_when_it_is_cut(tmp_path: Path) -> None:
    db = _quarantined(tmp_path, 60)
    rows = json.loads(_invoke("quarantine", "--db", db, "--json").stdout)
    assert len(rows) == 60
    assert [r["line"] for r in rows] == list(range(2, 62))
    assert len(json.loads(_invoke("quarantine", "--db", db, "--json", "--limit", "5").stdout)) == 5
    table = _invoke("quarantine", "--db", db)
    assert table.exit_code == 0
    assert "showing 50 of 60 (--limit)" in _flat(table.stdout), table.stdout
    whole = _invoke("quarantine", "--db", db, "--limit", "60")
    assert "showing" not in whole.stdout and "60 rows" in whole.stdout


# ----------------------------------------------------------------- 6. times as the API writes them


def _api_text(when: datetime) -> str:
    """How the API (pydantic) writes an aware UTC time."""
    return TypeAdapter(datetime).dump_python(when.replace(tzinfo=UTC), mode="json")


def test_cli_json_times_are_utc_with_a_z_as_in_the_api(shop: str, tmp_path: Path) -> None:
    with Store(shop, read_only=True) as store:
        first, last = store.con.execute(
            "SELECT min(timestamp), max(timestamp) FROM events"
        ).fetchone()
    st = json.loads(_invoke("stats", "--db", shop, "--json").stdout)
    assert (st["first_event"], st["last_event"]) == (_api_text(first), _api_text(last))
    assert st["first_event"].endswith("Z")
    pred = json.loads(
        _invoke("value", "predict", "--db", shop, "--model", "naive", "--json").stdout
    )
    end = pd.Timestamp(last).normalize() + pd.Timedelta(days=1)  # the log's end: next midnight
    assert pred["as_of"] == _api_text(end.to_pydatetime()) == f"{end:%Y-%m-%d}T00:00:00Z"
    seg = json.loads(
        _invoke("value", "segments", "--db", shop, "--model", "naive", "--json").stdout
    )
    assert seg["as_of"] == pred["as_of"]
    fit = json.loads(
        _invoke(
            "value",
            "fit",
            "--db",
            shop,
            "--models",
            "naive",
            "--holdout-days",
            "30",
            "--calibration-end",
            "2024-03-01",
            "--test-fraction",
            "0.3",
            "--json",
            "--artifacts",
            str(tmp_path / "arts"),
        ).stdout
    )
    assert fit["calibration_end"] == "2024-03-01T00:00:00Z"
    assert fit["holdout_end"] == "2024-03-31T00:00:00Z"
    ev = json.loads(
        _invoke(
            "value",
            "evaluate",
            "--db",
            shop,
            "--json",
            "--artifacts",
            str(tmp_path / "arts"),
            "--calibration-end",
            "2024-03-02",
        ).stdout
    )
    assert ev["models"]["naive"]["calibration_end"] == "2024-03-02T00:00:00Z"
    db = _quarantined(tmp_path, 1)
    (row,) = json.loads(_invoke("quarantine", "--db", db, "--json").stdout)
    with Store(db, read_only=True) as store:
        (stored,) = store.con.execute("SELECT quarantined_at FROM quarantine").fetchone()
    assert row["quarantined_at"] == _api_text(stored)


def test_the_time_helper_writes_aware_times_in_utc() -> None:
    from datetime import timedelta, timezone

    paris = datetime(2024, 5, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert (
        cli_common.utc_text(paris)
        == "2024-05-01T12:30:05.123456Z"
        == _api_text(datetime(2024, 5, 1, 12, 30, 5, 123456))
    )
    assert cli_common.utc_text(pd.Timestamp("2024-05-01")) == "2024-05-01T00:00:00Z"
    assert cli_common.utc_text(None) is None


# ----------------------------------------------------------------- 8. serve on a busy port


def test_serve_on_a_busy_port_is_one_line_before_loading_anything(
    shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[object] = []

    def create_app(*args: object, **kwargs: object) -> None:
        loaded.append(args)
        raise RuntimeError("the models were loaded before the port was bound")

    monkeypatch.setattr("valuerec.serve.app.create_app", create_app)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _invoke("serve", "--db", shop, "--port", str(port))
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "serving" not in res.stdout and loaded == []


def test_a_busy_ipv6_port_is_named_with_brackets(shop: str) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with socket.socket(socket.AF_INET6) as taken:
        try:
            taken.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback on this machine")
        taken.listen()
        port = taken.getsockname()[1]
        res = _invoke("serve", "--db", shop, "--host", "::1", "--port", str(port))
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: cannot listen on [::1]:{port}: Address already in use"
