"""Several servers, and batch ingests, on one PostgreSQL store: each follows the change feed.

Two apps on one deployment play two API servers behind a load balancer. The feed is read by
hand (``follower.poll()``; the thread's interval is ten minutes here), so each test shows the
second server stale before its read and current after it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import Databases, databases_for
from server_process import free_port, wait_until_healthy
from shop import build_shop
from valuerec.artifacts import ArtifactStore, default_root
from valuerec.cli import app
from valuerec.data import postgres
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.features.split import TemporalSplit
from valuerec.serve import ServeSettings, create_app
from valuerec.serve.keys import KeyStore, default_keys_path
from valuerec.value.registry import make_model

USER = "u1"


@pytest.fixture(scope="module")
def databases(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Databases:
    return databases_for("postgres", tmp_path_factory.mktemp("follow"), request)


@pytest.fixture(scope="module")
def template(databases: Databases) -> tuple[str, dict[str, str]]:
    db = databases.new("shop")
    build_shop(db, users=80, items=30, days=120, seed=7)
    keys = KeyStore(default_keys_path(db))
    return db, {role: keys.create(role, name=role)[0] for role in ("read", "write", "admin")}


def _client(db: str, keys: dict[str, str], **settings: object) -> TestClient:
    settings.setdefault("exposure_flush_seconds", 3600.0)
    settings.setdefault("sync_seconds", 600.0)  # read by hand
    client = TestClient(create_app(db, settings=ServeSettings(**settings)))
    client.keys = keys  # type: ignore[attr-defined]
    return client


@pytest.fixture
def pair(template: tuple[str, dict[str, str]], databases: Databases):
    """Two servers on one fresh copy of the deployment, and its URL."""
    src, keys = template
    db = databases.copy(src)
    with _client(db, keys) as a, _client(db, keys) as b:
        yield a, b, db


def call(c: TestClient, method: str, path: str, role: str = "read", **kw):
    return c.request(method, path, headers={"X-API-Key": c.keys[role]}, **kw)  # type: ignore[attr-defined]


def top(c: TestClient, user: str, k: int = 5) -> list[str]:
    res = call(c, "GET", f"/users/{user}/recommendations", params={"k": k})
    assert res.status_code == 200, res.text
    return [i["item_id"] for i in res.json()["items"]]


def svc(c: TestClient):
    return c.app.state.service


def test_an_event_posted_on_one_server_reaches_the_other(pair):
    a, b, _ = pair
    first = top(b, USER)[0]
    res = call(a, "POST", "/events", "write", json={"events": [
        {"user_id": USER, "item_id": first, "event_type": "view"}]})  # fmt: skip
    assert res.json()["stored"] == 1
    assert first not in top(a, USER)
    assert first in top(b, USER)  # b has not read the feed yet
    assert svc(b).follower.poll() >= 1
    assert first not in top(b, USER)
    assert top(b, USER, 10) == top(a, USER, 10)
    assert svc(b).histories.get(USER) == svc(a).histories.get(USER)
    assert svc(b).follower.poll() == 0  # nothing new: the position moved past it


def test_a_batch_ingest_reaches_a_running_server(pair):
    """`valuerec ingest` into the store (here its Python form) while servers run."""
    _, b, db = pair
    assert (
        top(b, "walk-in") and call(b, "GET", "/users/walk-in/recommendations").json()["cold_start"]
    )
    frame = pd.DataFrame(
        {
            "user_id": ["walk-in", "walk-in"],
            "item_id": ["i3", "i4"],
            "event_type": ["purchase", "view"],
            "timestamp": pd.to_datetime(["2024-01-02", "2024-01-03"]),
            "value": [20.0, None],
        }
    )
    with Store(db) as store:
        assert ingest(store, frame, "events").stored == 2
    svc(b).follower.poll()
    body = call(b, "GET", "/users/walk-in/recommendations", params={"k": 5}).json()
    assert body["cold_start"] is False
    assert {"i3", "i4"}.isdisjoint(i["item_id"] for i in body["items"])
    assert svc(b)._sales_pending  # a purchase: item values and value predictions follow


def test_catalogue_edits_reach_the_other_server(pair):
    a, b, _ = pair
    shown = top(b, USER, 10)
    hidden, renamed, deleted = shown[0], shown[1], shown[2]
    assert call(a, "PATCH", f"/items/{hidden}", "write", json={"hidden": True}).status_code == 200
    assert (
        call(a, "PATCH", f"/items/{renamed}", "write", json={"title": "Brand new name"}).status_code
        == 200
    )
    assert call(a, "DELETE", f"/items/{deleted}", "write").status_code == 200
    assert hidden in top(b, USER, 10)
    svc(b).follower.poll()
    after = call(b, "GET", f"/users/{USER}/recommendations", params={"k": 10}).json()["items"]
    ids = [i["item_id"] for i in after]
    assert hidden not in ids and deleted not in ids
    assert {i["item_id"]: i["title"] for i in after}[renamed] == "Brand new name"
    assert svc(b).catalog.titles == svc(a).catalog.titles
    assert svc(b).catalog.categories == svc(a).catalog.categories
    assert svc(b).catalog.hidden == svc(a).catalog.hidden == {hidden, deleted}
    # and back
    call(a, "PATCH", f"/items/{hidden}", "write", json={"hidden": False})
    svc(b).follower.poll()
    assert svc(b).catalog.hidden == {deleted}
    assert hidden in top(b, USER, 10)


def test_a_user_deleted_on_one_server_is_forgotten_by_the_other(pair):
    a, b, _ = pair
    assert call(b, "GET", f"/users/{USER}/value").status_code == 200
    assert call(a, "DELETE", f"/users/{USER}", "write").status_code == 200
    svc(b).exposures.add(USER, [(1, "i1", 0.5)], "rec-ease", "v0001")  # shown before it knew
    svc(b).follower.poll()
    assert call(b, "GET", f"/users/{USER}/recommendations").json()["cold_start"] is True
    assert call(b, "GET", f"/users/{USER}/value").status_code == 404
    assert len(svc(b).exposures) == 0  # its flush will not bring the user back
    # the others are labelled again, as on the server that deleted
    assert call(b, "GET", "/segments").json() == call(a, "GET", "/segments").json()


def test_exposures_alone_do_not_reread_histories(pair, monkeypatch):
    a, b, _ = pair
    top(a, USER)
    call(a, "GET", f"/users/{USER}/recommendations", params={"write_back": "true"})
    assert svc(a).exposures.flush() > 0
    reads: list[object] = []
    original = svc(b).repo.interactions
    monkeypatch.setattr(
        svc(b).repo, "interactions", lambda *x, **kw: reads.append(x) or original(*x, **kw)
    )
    assert svc(b).follower.poll() >= 1  # the exposures' row was read ...
    assert reads == []  # ... and changed no history


def test_a_bulk_write_is_one_feed_row_and_a_full_reload(pair):
    a, b, db = pair
    n = postgres.FEED_KEYS_MAX + 1
    with Store(db) as store:
        store.execute(
            "INSERT INTO events (user_id, item_id, event_type, timestamp, occurrence) "
            "SELECT 'bulk' || i, 'i1', 'view', TIMESTAMP '2024-01-01', 1 "
            "FROM generate_series(1, ?) AS g(i)",
            [n],
        )
        (rows,) = store.fetch(f"SELECT count(*), count(key) FROM {postgres.CHANGES} "
                              "WHERE key IS NULL OR key LIKE 'bulk%'")  # fmt: skip
    assert rows == (1, 0)  # one row meaning "every user"
    svc(b).follower.poll()
    assert svc(b).histories.get("bulk7") == ("i1",)
    assert len(svc(b).histories) == len(svc(a).histories) + n


def test_a_transaction_committing_after_a_younger_one_is_not_skipped(template, databases):
    """The feed's position is a snapshot's oldest running transaction, not a counter: a row
    whose transaction began first but committed last is still read."""
    db = databases.new("feed")
    with Store(db) as store:
        position, _ = store.changes(None)
        old = psycopg.connect(db)  # a transaction: begins now, commits last
        old.execute("INSERT INTO items (item_id, title) VALUES ('older', 'x')")
        # (another table: writers of one table take turns on its row of the version table)
        store.execute(
            "INSERT INTO events (user_id, item_id, event_type, timestamp, occurrence) "
            "VALUES ('younger', 'i', 'view', TIMESTAMP '2024-01-01', 1)"
        )
        position, seen = store.changes(position)
        assert list(seen["key"]) == ["younger"]
        old.commit()
        old.close()
        _, seen = store.changes(position)
        assert "older" in set(seen["key"])


def test_a_store_made_before_the_feed_gets_it_when_opened(databases):
    db = databases.new("legacy")
    Store(db).close()
    with psycopg.connect(db, autocommit=True) as pg:
        for op in ("insert", "update", "delete", "truncate"):
            pg.execute(f"DROP TRIGGER valuerec_feed_{op} ON events")
        pg.execute(f"DROP TABLE {postgres.CHANGES}")
    with Store(db) as store:
        position, _ = store.changes(None)
        store.execute(
            "INSERT INTO events (user_id, item_id, event_type, timestamp, occurrence) "
            "VALUES ('x', 'i', 'view', TIMESTAMP '2024-01-01', 1)"
        )
        _, seen = store.changes(position)
    assert seen[["table_name", "op", "key"]].values.tolist() == [["events", "INSERT", "x"]]
    assert list(seen["kinds"]) == [["view"]]


def test_after_a_long_gap_the_follower_reloads_everything(pair, monkeypatch):
    a, b, db = pair
    follower = svc(b).follower
    first = top(b, USER)[0]
    call(a, "POST", "/events", "write", json={"events": [
        {"user_id": USER, "item_id": first, "event_type": "view"}]})  # fmt: skip
    with Store(db) as store:
        store.prune_changes(older_than=0)  # another follower pruned what this one had not read
    reloads: list[bool] = []
    original = svc(b).reload_state
    monkeypatch.setattr(svc(b), "reload_state", lambda: reloads.append(True) or original())
    follower._last_read -= follower.KEEP_SECONDS  # unreachable database, for an hour
    follower.poll()
    assert reloads == [True]
    assert first not in top(b, USER)


def test_a_duckdb_server_has_no_feed_to_follow(tmp_path):
    db = str(tmp_path / "shop.duckdb")
    build_shop(db, users=30, items=10, days=60, seed=1)
    with TestClient(create_app(db)) as c:
        assert svc(c).follower.enabled is False
        assert svc(c).follower.poll() == 0


# -- models: every server serves each artifact's CURRENT version ------------------------------
def test_a_promotion_sent_to_one_server_reaches_the_other(pair):
    a, b, _ = pair
    res = call(a, "POST", "/models/rec-ease/promote", "admin", json={"version": "v0002"})
    assert res.status_code == 200, res.text
    assert svc(b).models.recommenders["ease"].version == "v0001"
    assert svc(b).follower.poll_models() == ["rec-ease"]
    assert svc(b).models.recommenders["ease"].version == "v0002"
    assert top(b, USER, 10) == top(a, USER, 10)
    assert svc(b).follower.poll_models() == []  # nothing moved since


def test_a_value_model_refitted_elsewhere_is_served_without_a_restart(pair):
    _, b, db = pair
    old = call(b, "GET", f"/users/{USER}/value").json()
    with Store(db) as store:
        split = TemporalSplit.last_days(store, 45)
        model = make_model("naive").fit(store, split.calibration_end, holdout_days=45)
    version = ArtifactStore(default_root(db)).save("value-naive", model, {"model": "naive"})
    assert svc(b).follower.poll_models() == ["value-naive"]
    new = call(b, "GET", f"/users/{USER}/value").json()
    assert (old["version"], new["version"]) == ("v0001", version)
    assert new["horizon_days"] == 45 != old["horizon_days"]


def test_a_version_that_cannot_load_is_logged_once_and_the_old_one_kept(pair, caplog):
    _, b, db = pair
    arts = ArtifactStore(default_root(db))
    arts.save("rec-ease", {"not": "a recommender"}, {"model": "ease"})  # made current
    with caplog.at_level("WARNING", logger="valuerec.serve"):
        assert svc(b).follower.poll_models() == []
        assert svc(b).follower.poll_models() == []
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "not a Recommender" in caplog.records[0].getMessage()
    assert svc(b).models.recommenders["ease"].version == "v0001"
    assert top(b, USER)  # still serving
    arts.promote("rec-ease", "v0002")  # a loadable version made current: followed
    assert svc(b).follower.poll_models() == ["rec-ease"]


# -- `valuerec serve --workers N`: processes on one port, one store -----------------------------
def test_serve_with_two_workers_answers_every_request_from_the_same_data(template, databases):
    """An event posted to whichever worker takes the connection is seen by both within
    sync_seconds: every fresh connection afterwards (either worker) leaves the item out."""
    src, keys = template
    db = databases.copy(src)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "valuerec.cli", "serve", "--db", db, "--port", str(port),
         "--workers", "2", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    read, write = {"X-API-Key": keys["read"]}, {"X-API-Key": keys["write"]}
    try:
        wait_until_healthy(proc, base)
        path = f"{base}/users/{USER}/recommendations"
        first = httpx.get(path, headers=read).json()["items"][0]["item_id"]
        event = {"user_id": USER, "item_id": first, "event_type": "view"}
        assert (
            httpx.post(f"{base}/events", json={"events": [event]}, headers=write).json()["stored"]
            == 1
        )
        # many connections at once, so that both workers accept some (an idle kernel wakes
        # the same one for requests made one after another); asked again until every answer
        # leaves the item out (within sync_seconds, 1, on an idle machine; a loaded one may
        # delay a poll), never if a worker does not follow the feed
        deadline = time.monotonic() + 30
        while True:
            time.sleep(1.5)
            with ThreadPoolExecutor(8) as pool:
                tops = list(
                    pool.map(
                        lambda _: httpx.get(path, headers=read).json()["items"][0]["item_id"],
                        range(200),
                    )
                )
            if first not in tops or time.monotonic() > deadline:
                break
        assert first not in tops and len(set(tops)) == 1
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(workers) >= 2  # uvicorn's supervisor with its worker processes
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_more_workers_than_one_need_a_postgresql_store(tmp_path):
    res = CliRunner().invoke(
        app, ["serve", "--db", str(tmp_path / "shop.duckdb"), "--workers", "2"]
    )
    assert res.exit_code == 2
    assert "--workers 2 needs a PostgreSQL store" in " ".join(res.output.split())


# -- what review E found -----------------------------------------------------------------------
def _bulk_events(db: str, user: str, n: int, event_type: str = "exposure") -> None:
    with Store(db) as store:
        store.execute(
            "INSERT INTO events (user_id, item_id, event_type, timestamp, occurrence) "
            "SELECT ?, 'i1', ?, TIMESTAMP '2024-01-01' + g * INTERVAL '1 second', 1 "
            "FROM generate_series(1, ?) AS g",
            [user, event_type, n],
        )


def test_a_user_with_more_events_than_the_feed_lists_is_still_forgotten(pair):
    """The feed counts distinct users, not rows: one user's 10,001 deleted events are one
    user, named, and the other server forgets them (before: one "every user" row, and
    nobody forgotten, so their pending exposures brought them back)."""
    a, b, db = pair
    _bulk_events(db, USER, postgres.FEED_KEYS_MAX + 1)
    svc(b).follower.poll()
    assert call(a, "DELETE", f"/users/{USER}", "write").status_code == 200
    svc(b).exposures.add(USER, [(1, "i1", 0.5)], "rec-ease", "v0001")
    svc(b).follower.poll()
    assert call(b, "GET", f"/users/{USER}/value").status_code == 404
    assert len(svc(b).exposures) == 0
    assert call(b, "GET", "/segments").json() == call(a, "GET", "/segments").json()


def test_exposure_only_writes_are_skipped_however_many_rows(pair, monkeypatch):
    _, b, db = pair
    _bulk_events(db, USER, postgres.FEED_KEYS_MAX + 1)  # one user: a named row
    with Store(db) as store:  # and more users than the feed names: one row for all
        store.execute(
            "INSERT INTO events (user_id, item_id, event_type, timestamp, occurrence) "
            "SELECT 'x' || g, 'i1', 'exposure', TIMESTAMP '2024-01-01', 1 "
            "FROM generate_series(1, ?) AS g",
            [postgres.FEED_KEYS_MAX + 1],
        )
    reads: list[object] = []
    original = svc(b).repo.interactions
    monkeypatch.setattr(
        svc(b).repo, "interactions", lambda *x, **kw: reads.append(x) or original(*x, **kw)
    )
    assert svc(b).follower.poll() == 2
    assert reads == [] and not svc(b)._sales_pending


def test_an_open_transaction_elsewhere_does_not_make_every_poll_read_again(pair, databases):
    a, b, _ = pair
    other = databases.new("other")
    with Store(other):
        pass
    idle = psycopg.connect(other)  # a writing transaction left open, in another schema
    idle.execute("INSERT INTO items (item_id) VALUES ('held')")
    try:
        call(a, "POST", "/events", "write", json={"events": [
            {"user_id": USER, "item_id": "i2", "event_type": "view"}]})  # fmt: skip
        assert svc(b).follower.poll() >= 1
        assert svc(b).follower.poll() == 0  # the snapshot's xmin stayed behind: read again
    finally:
        idle.rollback()
        idle.close()


def test_a_user_deleted_and_created_again_between_two_reads_is_forgotten_first(pair):
    a, b, _ = pair
    assert call(a, "DELETE", f"/users/{USER}", "write").status_code == 200
    call(a, "POST", "/events", "write", json={"events": [
        {"user_id": USER, "item_id": "i2", "event_type": "view"}]})  # fmt: skip
    svc(b).follower.poll()
    assert call(b, "GET", f"/users/{USER}/value").status_code == 404  # the old one's value
    assert svc(b).histories.get(USER) == svc(a).histories.get(USER) == ("i2",)


def test_a_restarted_database_is_connected_again_and_everything_reloaded(pair, databases):
    a, b, _ = pair
    store = svc(b).repo.store
    with psycopg.connect(databases.cluster.url("vr"), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(?)".replace("?", "%s"), [store.pg.info.backend_pid]
        )
    with pytest.raises(psycopg.OperationalError):
        svc(b).follower.poll()  # the read that meets the dropped connection fails ...
    call(a, "POST", "/events", "write", json={"events": [
        {"user_id": USER, "item_id": "i2", "event_type": "view"}]})  # fmt: skip
    svc(b).follower.poll()  # ... the next one connects again and reloads
    assert store.reconnects == 1
    assert svc(b).histories.get(USER) == svc(a).histories.get(USER)
    assert call(b, "GET", f"/users/{USER}").status_code == 200


def test_an_ingest_prunes_feed_rows_a_day_old(databases):
    db = databases.new("prune")
    with Store(db) as store:
        store.execute(
            f"INSERT INTO {postgres.CHANGES} (table_name, op, key, at) "
            "VALUES ('events', 'INSERT', 'old', TIMESTAMP '2000-01-01')"
        )
        one = {"user_id": ["n"], "item_id": ["i"], "event_type": ["view"]}
        ingest(store, pd.DataFrame({**one, "timestamp": [pd.Timestamp("2024-01-01")]}), "events")
        keys = [r[0] for r in store.fetch(f"SELECT key FROM {postgres.CHANGES}")]
    assert keys == ["n"]


def test_followers_prune_what_every_follower_has_had_an_hour_to_read(pair, monkeypatch):
    a, b, db = pair
    follower = svc(b).follower
    call(a, "POST", "/events", "write", json={"events": [
        {"user_id": USER, "item_id": "i2", "event_type": "view"}]})  # fmt: skip
    follower.poll()
    clock = [follower._last_read]
    monkeypatch.setattr("valuerec.serve.follow.time.monotonic", lambda: clock[0])
    clock[0] += follower.KEEP_SECONDS / 3
    follower.poll()  # a read an hour before the next prune: its position is the cut
    with Store(db) as store:
        before = store.fetch(f"SELECT count(*) FROM {postgres.CHANGES}")[0][0]
    assert before >= 1
    for _ in range(4):
        clock[0] += follower.KEEP_SECONDS / 3
        follower.poll()
    with Store(db) as store:
        assert store.fetch(f"SELECT count(*) FROM {postgres.CHANGES}")[0][0] == 0


def test_a_database_error_while_following_a_version_is_tried_again(pair, monkeypatch):
    _, b, db = pair
    with Store(db) as store:
        split = TemporalSplit.last_days(store, 45)
        model = make_model("naive").fit(store, split.calibration_end, holdout_days=45)
    version = ArtifactStore(default_root(db)).save("value-naive", model, {"model": "naive"})
    repo = svc(b).repo
    original, calls = repo.value_segments, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.OperationalError("the connection is closed")
        return original(*args, **kwargs)

    monkeypatch.setattr(repo, "value_segments", flaky)
    assert svc(b).follower.poll_models() == []
    assert svc(b).follower.poll_models() == ["value-naive"]
    assert call(b, "GET", f"/users/{USER}/value").json()["version"] == version


# -- what review G found -----------------------------------------------------------------------
def test_a_reload_keeps_the_pending_exposures_of_new_visitors(pair):
    """A visitor the store does not know yet has exposures waiting; a reload (after a gap,
    a reconnect, a bulk deletion) forgot every pending user the store did not know."""
    _, b, _ = pair
    svc(b).exposures.add("visitor-42", [(1, "i1", 0.5)], "rec-ease", "v0001")
    svc(b).reload_state()
    assert svc(b).exposures.users() == {"visitor-42"}
    assert svc(b).exposures.flush() == 1


def test_a_flush_before_the_feed_is_read_does_not_bring_a_deleted_user_back(pair):
    a, b, _ = pair
    svc(a).exposures.add(USER, [(1, "i1", 0.5)], "rec-ease", "v0001")
    svc(a).exposures.add("visitor-7", [(1, "i1", 0.5)], "rec-ease", "v0001")
    assert call(b, "DELETE", f"/users/{USER}", "write").status_code == 200
    assert svc(a).exposures.flush() == 1  # the visitor's; not the deleted user's
    assert call(a, "GET", f"/users/{USER}").status_code == 404
    assert call(a, "GET", "/users/visitor-7").status_code == 200


def test_a_reload_that_fails_is_tried_again(pair, monkeypatch):
    a, b, _ = pair
    follower = svc(b).follower
    hidden = top(b, USER)[0]
    call(a, "PATCH", f"/items/{hidden}", "write", json={"hidden": True})
    original, calls = svc(b).reload_state, []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
        original()

    monkeypatch.setattr(svc(b), "reload_state", flaky)
    follower._last_read -= follower.KEEP_SECONDS  # a gap: the next poll reloads
    with pytest.raises(psycopg.errors.LockNotAvailable):
        follower.poll()
    follower.poll()  # the position had not moved: reloads again
    assert len(calls) == 2 and hidden in svc(b).catalog.hidden


def test_deleting_a_buyer_predicts_value_again_as_a_restart_would(template, databases):
    src, keys = template
    db = databases.copy(src)
    with _client(db, keys, value_refresh_seconds=0.05) as c:
        last = svc(c).repo.store.fetch(
            "SELECT user_id FROM events WHERE event_type = 'purchase' "
            "ORDER BY timestamp DESC LIMIT 1"
        )[0][0]
        assert call(c, "DELETE", f"/users/{last}", "write").status_code == 200
        time.sleep(0.2)
        svc(c).wait_value_refresh(30)
        running = call(c, "GET", "/segments").json()
    with _client(db, keys) as fresh:
        assert call(fresh, "GET", "/segments").json() == running
