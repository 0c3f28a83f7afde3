"""``valuerec keys``, ``valuerec train`` and ``valuerec serve`` end to end (a real server)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from server_process import free_port, wait_until_healthy
from valuerec.artifacts import ArtifactStore, default_root
from valuerec.cli import app
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.features.split import log_end
from valuerec.serve.config import ConfigError, ServeSettings, load_settings
from valuerec.serve.keys import KeyStore, default_keys_path

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A shop store, with exposures of a user nobody saw buy anything, after `valuerec train`."""
    db = tmp_path_factory.mktemp("serve-cli") / "shop.duckdb"
    data = generate(users=150, items=40, days=200, holdout_days=10, seed=9)
    exposures = data.events.head(5).assign(user_id="only-exposed", event_type="exposure")
    with Store(db) as store:
        ingest(store, data.items, "items")
        ingest(store, data.events, "events")
        ingest(store, exposures, "events")
    res = _run(
        "train", "--db", str(db), "--value-models", "naive", "--rec-models", "popularity,ease"
    )
    assert res.exit_code == 0, res.output
    return str(db)


def test_keys_create_prints_the_key_alone_on_its_last_line_and_keeps_only_its_hash(tmp_path):
    db = str(tmp_path / "s.duckdb")
    res = _run("keys", "create", "--role", "write", "--name", "shop backend", "--db", db)
    assert res.exit_code == 0
    key = res.stdout.strip().splitlines()[-1]
    assert key.startswith("vr_") and " " not in key and len(key) > 40
    stored = Path(db + ".keys.json").read_text()
    assert key not in stored
    (record,) = json.loads(stored)["keys"]
    assert record["hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert (record["role"], record["name"], record["revoked_at"]) == ("write", "shop backend", None)
    assert KeyStore(default_keys_path(db)).role_of(key).label == "write"


def test_keys_list_and_revoke(tmp_path):
    db = str(tmp_path / "s.duckdb")
    key = _run("keys", "create", "--role", "admin", "--db", db).stdout.strip().splitlines()[-1]
    listed = json.loads(_run("keys", "list", "--db", db, "--json").stdout)
    assert len(listed) == 1 and "hash" not in listed[0] and listed[0]["role"] == "admin"
    assert _run("keys", "revoke", listed[0]["id"], "--db", db).exit_code == 0
    assert KeyStore(default_keys_path(db)).role_of(key) is None
    assert json.loads(_run("keys", "list", "--db", db, "--json").stdout)[0]["revoked_at"]
    res = runner.invoke(app, ["keys", "revoke", "nope", "--db", db])
    assert res.exit_code == 2 and "no API key with id 'nope'" in res.stderr


def test_keys_create_refuses_an_unknown_role(tmp_path):
    res = runner.invoke(app, ["keys", "create", "--role", "root", "--db", str(tmp_path / "s")])
    assert res.exit_code == 2 and "read, write or admin" in res.stderr


def test_settings_come_from_a_file(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text('default_model = "popularity"\n[events]\npositive = ["Purchase", "cart"]\n')
    settings = load_settings(path)
    assert settings.default_model == "popularity"
    assert settings.events.positive == ("purchase", "cart")
    assert settings.events.role("view") is None and settings.events.role("exposure") == "exposure"
    path.write_text('[events]\npositive = ["view"]\nnegative = ["view"]\n')
    with pytest.raises(ConfigError, match="both positive and negative"):
        load_settings(path)


def test_train_registers_models_learned_from_positive_events_only(trained):
    arts = ArtifactStore(default_root(trained))
    assert arts.names() == ["rec-ease", "rec-popularity", "value-naive"]
    ease, meta = arts.load("rec-ease")
    assert "only-exposed" not in ease.user_ids_  # exposures are not interest
    assert meta["data_fingerprint"] and meta["fit_seconds"] >= 0
    assert arts.meta("value-naive")["holdout_days"] == 99  # half the 200-day log


def test_train_passes_snapshots_to_the_value_fit(trained):
    # no listed value model learns from earlier cut-offs: value fit refuses, train says so
    res = _run(
        "train", "--db", trained, "--value-models", "naive", "--rec-models", "",
        "--snapshots", "3",
    )  # fmt: skip
    assert res.exit_code == 1
    assert "--snapshots applies to transformer and ensemble" in res.output
    assert "failed: value models" in res.output


def test_train_skips_value_models_without_purchases(tmp_path):
    db = str(tmp_path / "views.duckdb")
    events = generate(users=40, items=10, days=30, seed=2).events
    with Store(db) as store:
        ingest(store, events[events["event_type"] == "view"], "events")
    res = _run("train", "--db", db, "--rec-models", "popularity")
    assert res.exit_code == 0, res.output
    assert "value models skipped" in res.stdout
    assert ArtifactStore(default_root(db)).names() == ["rec-popularity"]


def test_train_skips_recommenders_without_item_interactions(tmp_path):
    db = str(tmp_path / "purchases.duckdb")
    events = generate(users=60, items=10, days=60, seed=2).events
    buys = events[events["event_type"] == "purchase"].assign(item_id=None)  # as CDNOW's log
    with Store(db) as store:
        ingest(store, buys, "events")
    res = _run("train", "--db", db, "--value-models", "naive", "--holdout-days", "20")
    assert res.exit_code == 0, res.output
    assert "events with an item in the store: recommenders skipped" in res.stdout
    assert ArtifactStore(default_root(db)).names() == ["value-naive"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--holdout-days", "0"], "greater than or equal to"),  # was the default in silence
        (["--test-fraction", "1.5"], "--test-fraction must be in [0, 1)"),
        (["--snapshots", "-2"], "greater than or equal to"),
    ],
)
def test_train_option_errors_stop_before_any_fit(trained, tmp_path, option, message):
    res = _run("train", "--db", trained, *option)
    assert res.exit_code == 2 and message in " ".join(res.output.split())
    assert "value models (" not in res.output and "recommenders (" not in res.output


def test_serve_answers_over_http_and_swaps_models_under_load(trained):
    _run("recommend", "fit", "--db", trained, "--models", "ease")  # rec-ease v0002, current
    keys = KeyStore(default_keys_path(trained))
    read, _ = keys.create("read")
    admin, _ = keys.create("admin")
    port = free_port()
    env = {**os.environ, "VALUEREC_DB": trained}
    proc = subprocess.Popen(
        [sys.executable, "-m", "valuerec.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, base, 60)
        with httpx.Client(base_url=base, timeout=10) as http:
            health = http.get("/health").json()
            assert health["recommenders"] == {"ease": "v0002", "popularity": "v0001"}
            assert http.get("/users/u3/recommendations").status_code == 401
            res = http.get("/users/u3/recommendations", headers={"X-API-Key": read})
            assert res.status_code == 200 and len(res.json()["items"]) == 10

            statuses, versions, stop = [], set(), threading.Event()

            def load() -> None:
                with httpx.Client(base_url=base, timeout=10) as c:
                    while not stop.is_set():
                        r = c.get("/users/u3/recommendations", headers={"X-API-Key": read})
                        statuses.append(r.status_code)
                        if r.status_code == 200:
                            versions.add(r.json()["version"])

            worker = threading.Thread(target=load)
            worker.start()
            admin_h = {"X-API-Key": admin}
            time.sleep(0.2)
            swap = http.post("/models/ease/promote", json={"version": "v0001"}, headers=admin_h)
            time.sleep(0.3)
            back = http.post("/models/ease/rollback", headers=admin_h)
            time.sleep(0.2)
            stop.set()
            worker.join()
            assert swap.status_code == 200 and back.json()["version"] == "v0002"
            assert len(statuses) > 5 and set(statuses) == {200}
            assert versions == {"v0001", "v0002"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


_KEY_WORKER = """
import sys, time
from pathlib import Path
from valuerec.serve.keys import KeyStore
path, go, action, *args = sys.argv[1:]
while not Path(go).exists():  # start together: the race is in the overlap
    time.sleep(0.001)
store = KeyStore(path)
if action == "create":
    for i in range(int(args[0])):
        print(store.create("read", f"{args[1]}{i}")[0], flush=True)
else:
    for key_id in args:
        store.revoke(key_id)
"""


def test_concurrent_key_writes_lose_no_key_and_undo_no_revocation(tmp_path):
    """Two `keys create` and a `keys revoke` at once: each read the file, added its change and
    replaced it, so the last writer dropped the others' keys (printed, then refused with 401)
    and undid revocations (a revoked admin key kept working)."""
    path = tmp_path / "s.duckdb.keys.json"
    old = [KeyStore(path).create("admin", f"old{i}") for i in range(60)]
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _KEY_WORKER, str(path), str(go), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        for args in (
            ["create", "60", "a"],
            ["create", "60", "b"],
            ["revoke", *(record.id for _, record in old)],
        )
    ]
    time.sleep(0.5)  # the interpreters start
    go.touch()
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    created = [line for out in outputs[:2] for line in out.split()]
    assert len(created) == 120
    keys = KeyStore(path)
    assert len(keys.list()) == 180
    assert all(keys.role_of(key) is not None for key in created)  # every printed key works
    assert all(keys.role_of(key) is None for key, _ in old)  # every revocation holds


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 1e12, 86_401.0])
def test_an_exposure_flush_interval_the_writer_cannot_wait_is_refused(bad):
    """inf (or 1e12) validated, then the exposure thread died on Event.wait's OverflowError,
    and exposures were held in memory until shutdown."""
    with pytest.raises(ValueError, match="exposure_flush_seconds"):
        ServeSettings(exposure_flush_seconds=bad)
    assert ServeSettings(exposure_flush_seconds=86_400).exposure_flush_seconds == 86_400


def test_configured_model_names_are_read_as_a_requests_model_name(tmp_path):
    """default_model "Popularity" or "rec-popularity" named no loaded model (so requests got
    ease), and value_model "value-naive" looked for value-value-naive."""
    settings = ServeSettings(default_model=" Rec-Popularity ", value_model="Value-NAIVE")
    assert (settings.default_model, settings.value_model) == ("popularity", "naive")
    assert ServeSettings(value_model=None).value_model is None
    for field in ("default_model", "value_model"):
        with pytest.raises(ValueError, match=f"(?s){field}.*needs a model name"):
            ServeSettings(**{field: " rec- " if field == "default_model" else "value-"})
    path = tmp_path / "serve.toml"
    path.write_text('default_model = "Rec-Popularity"\nvalue_model = "value-naive"\n')
    settings = load_settings(path)
    assert (settings.default_model, settings.value_model) == ("popularity", "naive")


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_settings_files_with_a_byte_order_mark_are_read(tmp_path, suffix):
    """A file saved with a UTF-8 BOM (Windows editors) was refused: "Invalid statement"."""
    path = tmp_path / f"serve{suffix}"
    text = '{"history_limit": 7}' if suffix == ".json" else "history_limit = 7\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_settings(path).history_limit == 7


def test_train_cut_off_and_holdout_leave_out_the_configured_exposures(tmp_path):
    """Exposures written back (stamped today) stretched the log span and so train's default
    holdout; and value models cut the log at its end counting the configured exposure type
    (here "impression") as events, holding out months without a purchase."""
    db = str(tmp_path / "shop.duckdb")
    data = generate(users=80, items=10, days=120, seed=4)
    with Store(db) as store:
        ingest(store, data.items, "items")
        ingest(store, data.events, "events")
        end = log_end(store)
        first, last = store.con.execute(
            "SELECT min(timestamp), max(timestamp) FROM events"
        ).fetchone()
        later = data.events.head(4).assign(
            event_type="impression", timestamp=end + timedelta(days=300)
        )
        ingest(store, later, "events")
        ingest(store, later.assign(event_type="exposure"), "events")
    config = tmp_path / "serve.toml"
    config.write_text('[events]\nexposure = ["impression", "exposure"]\n')
    res = _run(
        "train", "--db", db, "--config", str(config), "--value-models", "naive",
        "--rec-models", "",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    meta = ArtifactStore(default_root(db)).meta("value-naive")
    # half the span of the log without its exposures, cut at the end of that log
    assert meta["holdout_days"] == int((last - first).total_seconds() / 86_400 // 2)
    assert pd.Timestamp(meta["calibration_end"]) == pd.Timestamp(end) - timedelta(
        days=meta["holdout_days"]
    )


def test_the_socket_shared_by_workers_is_tcp_by_protocol_and_says_when_taken():
    """asyncio sets TCP_NODELAY on accepted connections only for a socket whose protocol is
    TCP; uvicorn's own (protocol 0) left every multi-worker response waiting ~40 ms for the
    client's delayed ACK."""
    from valuerec.cli_serve import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.get_inheritable()
        sock.listen()
        with pytest.raises(typer.Exit) as exc:
            listening_socket("127.0.0.1", sock.getsockname()[1])  # taken
        assert exc.value.exit_code == 2
    finally:
        sock.close()
