"""The REST API, driven through FastAPI's TestClient on a small synthetic shop.

One template deployment (store, model artifacts, API keys) is built per backend (a DuckDB
file, a PostgreSQL database); every test gets its own copy, so tests that post events, delete
users or swap models cannot leak into each other. Every test runs on both backends.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from conftest import BACKENDS, Databases, databases_for
from shop import build_shop
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.evaluate.ranking import Interactions
from valuerec.features.split import SplitError, log_end
from valuerec.recommend.ease import EASERecommender
from valuerec.recommend.popularity import PopularityRecommender
from valuerec.recommend.rerank import ItemValues
from valuerec.serve import ServeSettings, create_app, registry
from valuerec.serve.config import EventRoles
from valuerec.serve.keys import KeyStore, default_keys_path
from valuerec.serve.repository import Repository
from valuerec.serve.state import Catalog
from valuerec.value.segments import SEGMENTS

USER = "u1"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def databases(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Databases:
    return databases_for(backend, tmp_path_factory.mktemp(f"serve-{backend}"), request)


@pytest.fixture(scope="module")
def template(databases: Databases) -> tuple[str, dict[str, str]]:
    """A store with a shop's events and items, two recommenders (EASE in two versions, v0002
    not promoted), a value model, and one key per role."""
    db = databases.new("shop")
    build_shop(db, users=120, items=40, days=150, seed=5)
    keys = KeyStore(default_keys_path(db))
    return db, {
        role: keys.create(role, name=f"test {role}")[0] for role in ("read", "write", "admin")
    }


@pytest.fixture
def deployment(template: tuple[str, dict[str, str]], databases: Databases) -> tuple[str, dict]:
    src, keys = template
    return databases.copy(src), keys


def _client(db: str, keys: dict[str, str], **settings: object) -> TestClient:
    settings.setdefault("exposure_flush_seconds", 3600.0)  # tests flush by hand
    client = TestClient(create_app(db, settings=ServeSettings(**settings)))
    client.keys = keys  # type: ignore[attr-defined]
    return client


@pytest.fixture
def client(deployment: tuple[str, dict]) -> TestClient:
    """A fresh deployment: for tests that change something."""
    db, keys = deployment
    with _client(db, keys) as c:
        yield c


@pytest.fixture(scope="module")
def reader(template: tuple[str, dict[str, str]], databases: Databases) -> TestClient:
    """One deployment shared by the tests that only read (and by bad requests, which must not
    change anything either)."""
    src, keys = template
    with _client(databases.copy(src), keys) as c:
        yield c


def call(c: TestClient, method: str, path: str, role: str | None = "read", **kw):
    headers = {"X-API-Key": c.keys[role]} if role else {}  # type: ignore[attr-defined]
    return c.request(method, path, headers=headers | kw.pop("headers", {}), **kw)


def recs(c: TestClient, user: str, role: str = "read", **params) -> dict:
    res = call(c, "GET", f"/users/{user}/recommendations", role, params=params)
    assert res.status_code == 200, res.text
    return res.json()


def service(c: TestClient):
    return c.app.state.service


def stored_events(c: TestClient, user: str, event_type: str | None = None) -> int:
    return service(c).repo.count_events(event_type=event_type, user_id=user)


# -- every endpoint, and who may call it --------------------------------------------------------
# (method, path, minimum role, body)
ENDPOINTS = [
    ("GET", "/metrics", "read", None),
    ("POST", "/events", "write", {"events": [{"user_id": "x", "event_type": "view"}]}),
    ("GET", f"/users/{USER}/recommendations", "read", None),
    ("POST", "/recommendations/batch", "read", {"user_ids": [USER]}),
    ("POST", "/sessions/recommendations", "read", {"events": [{"item_id": "i1"}]}),
    ("GET", "/items/i1/similar", "read", None),
    ("GET", f"/users/{USER}/value", "read", None),
    ("GET", "/segments", "read", None),
    ("GET", "/segments/champions/users", "read", None),
    ("GET", "/users", "read", None),
    ("POST", "/users", "write", {"user_id": "brand-new"}),
    ("GET", f"/users/{USER}", "read", None),
    ("PATCH", f"/users/{USER}", "write", {"properties": {"tier": "gold"}}),
    ("DELETE", "/users/u2", "write", None),
    ("GET", "/items", "read", None),
    ("POST", "/items", "write", {"item_id": "new-item", "title": "New"}),
    ("GET", "/items/i1", "read", None),
    ("PATCH", "/items/i1", "write", {"title": "Renamed"}),
    ("DELETE", "/items/i2", "write", None),
    ("GET", "/models", "admin", None),
    ("POST", "/models/rec-ease/promote", "admin", {"version": "v0002"}),
    ("POST", "/models/rec-ease/rollback", "admin", None),
]
ROLES = ("read", "write", "admin")


def test_health_needs_no_key_and_reports_what_is_loaded(reader):
    res = reader.get("/health")
    assert res.status_code == 200
    assert res.json() == {
        "status": "ok",
        "recommenders": {"ease": "v0001", "popularity": "v0001"},
        "value_model": "naive v0001",
        "users_in_memory": 120,
    }


def test_every_endpoint_refuses_a_missing_or_unknown_key(reader):
    for method, path, _, body in ENDPOINTS:
        res = reader.request(method, path, json=body)
        assert res.status_code == 401, (method, path)
        assert res.json()["message"].startswith("missing API key"), (method, path)
        res = reader.request(method, path, json=body, headers={"X-API-Key": "vr_not-a-key"})
        assert res.status_code == 401, (method, path)
        assert res.json() == {"error": "unauthorized", "message": "invalid or revoked API key"}


def test_every_endpoint_needs_its_role_and_accepts_the_roles_above(client):
    for method, path, needed, body in ENDPOINTS:
        for role in ROLES:
            res = call(client, method, path, role, json=body)
            if ROLES.index(role) < ROLES.index(needed):
                assert res.status_code == 403, (method, path, role, res.text)
                article = "an" if needed == "admin" else "a"
                assert f"needs {article} {needed} key" in res.json()["message"]
            else:
                assert res.status_code in (200, 201), (method, path, role, res.text)
            if method != "GET" and res.status_code in (200, 201):
                break  # a write succeeded once: later roles would repeat it (409, 404)


def test_a_revoked_key_is_refused_on_the_next_request(client, deployment):
    db, _ = deployment
    keys = KeyStore(default_keys_path(db))
    key, record = keys.create("read")
    assert client.get("/segments", headers={"X-API-Key": key}).status_code == 200
    keys.revoke(record.id)
    assert client.get("/segments", headers={"X-API-Key": key}).status_code == 401


def test_a_broken_key_file_stops_the_start_not_every_request(deployment):
    """An unknown role or unreadable JSON is refused at start-up, naming the file; broken
    while the server runs, it is a 503 that says so (not a 500 per request)."""
    db, keys = deployment
    path = default_keys_path(db)
    good = path.read_text()
    data = json.loads(good)
    data["keys"][0]["role"] = "superuser"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"cannot read API keys from .*unknown role 'superuser'"):
        create_app(db)
    path.write_text(good)
    with _client(db, keys) as c:
        path.write_text("{not json")
        for fast_path in (True, False):
            c.app.state.fast_path = fast_path
            res = call(c, "GET", f"/users/{USER}/recommendations")
            assert res.status_code == 503 and "API keys" in res.json()["message"], res.text


# -- recommendations ---------------------------------------------------------------------------
def test_recommendations_match_the_model_with_titles_and_reasons(reader):
    svc = service(reader)
    history = list(svc.histories.get(USER))
    body = recs(reader, USER, k=5)
    handle = svc.models.recommender("ease")
    expected = handle.model.recommend([USER], k=5, histories={USER: history})
    assert [i["item_id"] for i in body["items"]] == list(expected["item_id"])
    assert np.allclose([i["score"] for i in body["items"]], expected["score"], rtol=1e-5)
    assert body["model"] == "ease" and body["version"] == "v0001" and not body["cold_start"]
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
    assert not {i["item_id"] for i in body["items"]} & set(history)
    titles = svc.catalog.titles
    history_titles = {titles[h] for h in history}
    for item in body["items"]:
        assert item["title"] == titles[item["item_id"]]
        assert item["reason"].removeprefix("similar to ") in history_titles


def test_exclude_seen_false_lets_history_items_back(reader):
    history = set(service(reader).histories.get(USER))
    shown = {i["item_id"] for i in recs(reader, USER, k=40, exclude_seen="false")["items"]}
    assert len(shown) == 40 and history <= shown


def test_unknown_user_gets_cold_start_popular_items(reader):
    body = recs(reader, "never-seen", k=3)
    assert body["cold_start"] is True
    popularity = service(reader).models.recommender("popularity").model
    top = popularity.item_ids_[np.argsort(-popularity.cold_start_scores(), kind="stable")[:3]]
    assert [i["item_id"] for i in body["items"]] == list(top)
    assert {i["reason"] for i in body["items"]} == {"popular with everyone (new user)"}


def test_value_weight_reranks_the_relevance_candidates_for_value(reader):
    """``value_weight`` serves the value-aware blend of the store's prices and propensities
    over the relevance candidates; 0 is the plain relevance order."""
    from valuerec.recommend.rerank import UserValues, value_rerank

    svc = service(reader)
    history = list(svc.histories.get(USER))
    plain = recs(reader, USER, k=6)
    assert recs(reader, USER, k=6, value_weight=0) == plain
    body = recs(reader, USER, k=6, value_weight=3)
    ids = [i["item_id"] for i in body["items"]]
    # the same computation from the public pieces: relevance candidates, then the blend
    model = svc.models.recommender("ease").model
    cand = model.recommend([USER], k=50, histories={USER: history})
    arrays = ItemValues.from_store(svc.repo.store).take(cand["item_id"])
    table = svc.models.value.table
    pred = pd.DataFrame(
        {"user_id": table.index, "ltv": table["ltv"], "p_alive": table["p_alive"]}
    ).reset_index(drop=True)
    risk, rank = UserValues.from_predictions(pred).get(USER)
    assert risk is not None
    order = value_rerank(
        cand["score"].to_numpy(),
        arrays.price,
        arrays.p_purchase,
        3.0,
        k=6,
        margin_rate=arrays.margin_rate,
        churn_risk=risk,
        ltv_rank=rank,
    )
    assert ids == list(cand["item_id"].to_numpy()[order])
    assert ids != [i["item_id"] for i in plain["items"]]  # the weight changed something
    assert not set(ids) & set(history)
    # scores stay the recommender's relevance scores; the fast path agrees with the route
    relevance = dict(zip(cand["item_id"], cand["score"], strict=True))
    assert np.allclose([i["score"] for i in body["items"]], [relevance[i] for i in ids])
    reader.app.state.fast_path = False
    try:
        assert recs(reader, USER, k=6, value_weight=3) == body
    finally:
        reader.app.state.fast_path = True
    res = call(reader, "GET", f"/users/{USER}/recommendations?value_weight=-1")
    assert res.status_code == 422 and res.json()["details"][0]["field"] == "value_weight"
    for bad in ("nan", "inf"):  # refused as "less than or equal to 100" before
        res = call(reader, "GET", f"/users/{USER}/recommendations?value_weight={bad}")
        assert res.status_code == 422 and "finite" in res.json()["details"][0]["reason"], res.text


def test_value_ranking_follows_price_edits_and_new_purchases(client, monkeypatch):
    """Item prices and purchase rates are rebuilt (under the store's lock) after an item write
    (before the request goes on) or a stored purchase (in the background), and only then: not
    per request, not for a view."""
    svc = service(client)
    locked: list[bool] = []
    build = ItemValues.from_store
    monkeypatch.setattr(
        ItemValues,
        "from_store",
        staticmethod(
            lambda store, **kw: locked.append(svc.repo.lock._is_owned()) or build(store, **kw)
        ),
    )
    q = {"k": 5, "value_weight": 100, "exclude_seen": "false"}
    shown = [i["item_id"] for i in recs(client, USER, **q)["items"]]
    values = svc.item_values()
    view = {"user_id": "looker", "item_id": shown[0], "event_type": "view"}
    call(client, "POST", "/events", "write", json={"events": [view]})
    assert recs(client, USER, **q)["items"] and svc.item_values() is values and locked == [True]
    cheap, dear = shown[0], shown[-1]
    for item, price in ((cheap, 0.01), (dear, 1e6)):
        assert call(client, "PATCH", f"/items/{item}", "write", json={"price": price}).is_success
    after = [i["item_id"] for i in recs(client, USER, **q)["items"]]
    assert after[0] == dear and cheap not in after
    item = after[1]
    rate = svc.item_values().take([item]).p_purchase[0]
    buys = [
        {"user_id": f"buyer{n}", "item_id": item, "event_type": "purchase", "value": 5.0}
        for n in range(20)
    ]
    monkeypatch.setattr(svc, "SALES_REFRESH_SECONDS", 3600.0)
    call(client, "POST", "/events", "write", json={"events": buys[:10]})
    # a stream of purchases rebuilds at most every SALES_REFRESH_SECONDS, not per post
    assert svc.item_values().take([item]).p_purchase[0] == rate and len(locked) == 2
    monkeypatch.setattr(svc, "SALES_REFRESH_SECONDS", 0.0)
    call(client, "POST", "/events", "write", json={"events": buys[10:]})
    # sales are refreshed in the background: the request goes on with the values it has
    stale = svc.item_values()
    assert stale.take([item]).p_purchase[0] == rate
    svc.wait_item_values(timeout=30)
    assert svc.item_values() is not stale and svc.item_values().take([item]).p_purchase[0] > rate
    assert svc.item_values() is svc.item_values()  # and once rebuilt, not again
    assert locked == [True, True, True]  # first use, the price edits, the purchases


def test_model_parameter_picks_the_recommender(reader):
    body = recs(reader, USER, k=3, model="popularity")
    assert body["model"] == "popularity"
    assert {i["reason"] for i in body["items"]} == {"popular with everyone"}


def test_posted_event_changes_the_next_recommendation_without_retraining(client):
    before = recs(client, USER, k=5)["items"]
    top = before[0]["item_id"]
    event = {"user_id": USER, "item_id": top, "event_type": "view"}
    res = call(client, "POST", "/events", "write", json={"events": [event]})
    assert res.json() == {
        "received": 1,
        "accepted": 1,
        "stored": 1,
        "duplicates": 0,
        "rejected": 0,
        "errors": [],
    }
    after = recs(client, USER, k=5)["items"]
    assert top not in {i["item_id"] for i in after}
    assert service(client).histories.get(USER)[-1] == top


def test_a_new_users_first_event_ends_cold_start(client):
    assert recs(client, "newbie")["cold_start"] is True
    item = "i7"
    call(client, "POST", "/events", "write", json={"events": [
        {"user_id": "newbie", "item_id": item, "event_type": "purchase", "value": 12.5,
         "timestamp": "2024-05-01T10:00:00+02:00"}]})  # fmt: skip
    body = recs(client, "newbie", k=4)
    assert body["cold_start"] is False
    assert item not in {i["item_id"] for i in body["items"]}
    title = service(client).catalog.titles[item]
    assert {i["reason"] for i in body["items"]} == {f"similar to {title}"}
    stored = service(client).repo.store.events(["newbie"])
    assert str(stored["timestamp"][0]) == "2024-05-01 08:00:00"  # converted to UTC
    assert stored["value"][0] == 12.5


def test_posting_the_same_events_again_stores_nothing(client):
    events = [
        {"user_id": "dup", "item_id": "i3", "event_type": "view", "timestamp": 1714557600},
        {"user_id": "dup", "item_id": "i3", "event_type": "view", "timestamp": 1714557600},
        {"event_id": "e-1", "user_id": "dup", "item_id": "i4", "event_type": "cart"},
    ]
    first = call(client, "POST", "/events", "write", json={"events": events}).json()
    assert (first["stored"], first["duplicates"]) == (3, 0)  # genuine repeats are kept
    again = call(client, "POST", "/events", "write", json={"events": events}).json()
    assert (again["stored"], again["duplicates"]) == (0, 3)
    assert stored_events(client, "dup") == 3
    assert service(client).histories.get("dup") == ("i3", "i3", "i4")


def test_bad_events_are_answered_per_item_while_good_ones_are_stored(client):
    events = [
        {"user_id": "mix", "item_id": "i1", "event_type": "view"},
        {"item_id": "i1", "event_type": "view"},
        {"user_id": "mix", "event_type": "view", "timestamp": "not a time"},
        "not an object",
        {"user_id": "mix", "event_type": "purchase", "value": "lots", "colour": "red"},
        {"user_id": "mix", "item_id": "i2", "event_type": "cart"},
    ]
    res = call(client, "POST", "/events", "write", json={"events": events})
    assert res.status_code == 200
    body = res.json()
    assert (body["received"], body["accepted"], body["stored"], body["rejected"]) == (6, 2, 2, 4)
    got = {(e["index"], e["field"]) for e in body["errors"]}
    assert got == {(1, "user_id"), (2, "timestamp"), (3, "(event)"), (4, "value"), (4, "colour")}
    assert all(e["reason"] for e in body["errors"])
    assert stored_events(client, "mix") == 2


def test_events_that_ingest_quarantines_are_answered_too(client, monkeypatch):
    """The API validates as ingest does; where the two ever differ (a lone surrogate in
    ``properties`` once did), an event ingest quarantines was only counted as rejected, with
    no error saying which or why, and a batch of nothing but such events answered 200."""
    repo = service(client).repo
    real = repo.ingest_events

    def ingest_sees_a_bad_property(frame, source):  # a rule only ingest knows
        bad = frame["user_id"].str.startswith("gap")
        return real(frame.assign(properties=frame["properties"].where(~bad, "{not json")), source)

    monkeypatch.setattr(repo, "ingest_events", ingest_sees_a_bad_property)
    events = [
        {"user_id": "gap1", "item_id": "i1", "event_type": "view"},
        {"item_id": "i1", "event_type": "view"},
        {"user_id": "fine", "item_id": "i1", "event_type": "view"},
        {"user_id": "gap2", "item_id": "i2", "event_type": "view"},
    ]
    body = call(client, "POST", "/events", "write", json={"events": events}).json()
    assert (body["accepted"], body["stored"], body["rejected"]) == (1, 1, 3)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (0, "properties"),
        (1, "user_id"),
        (3, "properties"),
    ]
    assert "JSON object" in body["errors"][0]["reason"]
    res = call(client, "POST", "/events", "write", json={"events": [events[0], events[1]]})
    assert res.status_code == 422, res.text
    assert [(d["index"], d["field"]) for d in res.json()["details"]] == [
        (0, "properties"),
        (1, "user_id"),
    ]
    assert stored_events(client, "gap1") == 0 and stored_events(client, "fine") == 1


def test_a_batch_with_no_valid_event_is_a_422_naming_each_field(client):
    res = call(client, "POST", "/events", "write", json={"events": [{"user_id": "x"}]})
    assert res.status_code == 422
    body = res.json()
    assert body["error"] == "invalid_input"
    assert {(d["index"], d["field"]) for d in body["details"]} == {
        (0, "event_type"),
    }


def test_event_timestamps_are_read_as_ingest_reads_them(client, tmp_path):
    """Eight digits are a YYYYMMDD date, up to eleven epoch seconds, as in file ingest;
    milliseconds and times out of range once in UTC are that event's error (not a 500)."""
    good = {
        "20240101": datetime(2024, 1, 1),
        20240102: datetime(2024, 1, 2),
        20240104.0: datetime(2024, 1, 4),  # a date held as a float
        "20240105.0": datetime(2024, 1, 5),
        1700000000: datetime(2023, 11, 14, 22, 13, 20),
        "1700000000.5": datetime(2023, 11, 14, 22, 13, 20, 500000),
        "2024-01-03T01:00:00+01:00": datetime(2024, 1, 3),
        # text goes through ingest's own rule: pydantic refused these three
        "2024-01-07 10:00:00 Europe/Paris": datetime(2024, 1, 7, 9),
        "2024-01-08T10:00:00+01:30:15": datetime(2024, 1, 8, 8, 29, 45),
        "2024-1-9": datetime(2024, 1, 9),
    }
    bad = [1700000000123, "20241301", "0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"]
    bad.append("2024-01-01t10:00:00")  # pydantic took it, a file's row is quarantined
    events = [
        {"user_id": "ts", "item_id": "i1", "event_type": "view", "timestamp": t}
        for t in [*good, *bad]
    ]
    res = call(client, "POST", "/events", "write", json={"events": events})
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["stored"], body["rejected"]) == (len(good), len(bad))
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (len(good) + i, "timestamp") for i in range(len(bad))
    ]
    stored = service(client).repo.store.events(["ts"])["timestamp"]
    assert sorted(pd.Timestamp(t).to_pydatetime() for t in stored) == sorted(good.values())
    # file ingest of the same values as text: the same times, the milliseconds quarantined
    with Store(str(tmp_path / "file.duckdb")) as store:
        texts = [str(t) for t in [*good, *bad[:2]]]
        frame = pd.DataFrame(
            {"user_id": "f", "item_id": "i1", "event_type": "view", "timestamp": texts}
        )
        ingest(store, frame, "events")
        from_file = store.events(["f"])["timestamp"]
    assert sorted(pd.Timestamp(t).to_pydatetime() for t in from_file) == sorted(good.values())


def test_properties_nested_too_deep_are_refused_before_they_break_every_read(client):
    """300 levels were stored, and from then on every read of the record (and each page of
    /users or /items holding it) answered 500: the response's serialiser stops at a depth."""

    def nested(depth: int) -> dict:
        node: dict = {"leaf": 1}
        for _ in range(depth - 1):
            node = {"x": node}
        return node

    for path, key in (("/users", "user_id"), ("/items", "item_id")):
        res = call(client, "POST", path, "write", json={key: "deep", "properties": nested(65)})
        assert res.status_code == 422 and "64" in res.text, res.text
        res = call(client, "POST", path, "write", json={key: "deep", "properties": nested(64)})
        assert res.status_code in (200, 201), res.text
        assert call(client, "GET", f"{path}/deep").status_code == 200
        assert call(client, "GET", path, params={"limit": 500}).status_code == 200


def test_a_body_is_read_only_for_a_known_key_and_up_to_the_limit(deployment, monkeypatch):
    """FastAPI parsed any body before the key check: 64 MB without a key doubled the
    server's memory before its 401. Now an unknown key is a 401 unread (malformed JSON says
    nothing) and a body over the limit a 413, declared or streamed."""
    import valuerec.serve.bodyguard as guard

    monkeypatch.setattr(guard, "MAX_BODY_BYTES", 1000)
    db, keys = deployment
    with _client(db, keys) as c:
        for headers, status in (({}, 401), ({"X-API-Key": "nope"}, 401)):
            res = c.post("/events", content=b"{not json", headers=headers)
            assert res.status_code == status, res.text
        big = {"events": [{"user_id": "u1", "event_type": "view", "note": "x" * 2000}]}
        res = call(c, "POST", "/events", "write", json=big)
        assert res.status_code == 413 and "larger than" in res.json()["message"]
        streamed = call(c, "POST", "/events", "write", content=iter([b'{"events": [', b" " * 2000]))
        assert streamed.status_code == 413
        small = {"events": [{"user_id": "u1", "item_id": "i1", "event_type": "view"}]}
        assert call(c, "POST", "/events", "write", json=small).json()["stored"] == 1
        assert call(c, "POST", "/events", "read", json=small).status_code == 403  # the route


def test_invented_methods_share_one_metrics_label(reader):
    """Each made-up method was a new label: /metrics and memory grew without end."""
    for i in range(3):
        reader.request(f"M{i:06d}", "/health")
    text = call(reader, "GET", "/metrics").text
    assert 'method="other"' in text and "M000001" not in text


def test_write_back_ids_are_path_segments_as_for_every_write(reader):
    """A read key's write-back stored exposures for "a/b", a user no /users/{id} route can
    read or delete."""
    res = call(reader, "POST", "/recommendations/batch",
               json={"user_ids": ["a/b"], "write_back": True})  # fmt: skip
    assert res.status_code == 422 and res.json()["details"][0]["field"].startswith("user_ids")


def _cursor(position: dict, list_name: str) -> str:
    """A hand-made cursor of the list ``list_name``: what a client that decoded and edited
    ours sends back."""
    raw = json.dumps({**position, "list": list_name}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_REQUESTS = [
    ("GET", f"/users/{USER}/recommendations?k=0", None, "k"),
    ("GET", f"/users/{USER}/recommendations?k=abc", None, "k"),
    ("GET", f"/users/{USER}/recommendations?k=100000", None, "k"),
    ("GET", f"/users/{USER}/recommendations?exclude_seen=maybe", None, "exclude_seen"),
    ("GET", f"/users/{USER}/recommendations?model=nope", None, "model"),
    ("GET", "/items/i1/similar?k=-3", None, "k"),
    ("POST", "/recommendations/batch", {}, "user_ids"),
    ("POST", "/recommendations/batch", {"user_ids": []}, "user_ids"),
    ("POST", "/recommendations/batch", {"user_ids": ["a"], "k": -1}, "k"),
    ("POST", "/recommendations/batch", {"user_ids": ["a"], "surprise": 1}, "surprise"),
    ("POST", "/recommendations/batch", {"user_ids": [["nested"]]}, "user_ids[0]"),
    (
        "POST",
        "/sessions/recommendations",
        {"events": [{"event_type": "view"}]},
        "events[0].item_id",
    ),
    ("POST", "/events", {"events": []}, "events"),
    ("POST", "/events", [], "(body)"),
    ("POST", "/users", {"user_id": ""}, "user_id"),
    ("POST", "/users", {"user_id": "x", "signup_time": "yesterday"}, "signup_time"),
    ("PATCH", "/items/i1", {"price": "cheap"}, "price"),
    ("PATCH", "/items/i1", {"hidden": "perhaps"}, "hidden"),
    ("POST", "/models/rec-ease/promote", {}, "version"),
    ("GET", "/users?limit=0", None, "limit"),
    ("GET", "/users?cursor=%25%25%25", None, "cursor"),
    ("GET", "/segments/champions/users?cursor=eyJ4IjoxfQ", None, "cursor"),
    # the right keys holding the wrong types: never a 500 or an arbitrary page
    *(
        ("GET", f"/{path}?cursor={_cursor({'after': after}, path)}", None, "cursor")
        for path in ("items", "users")
        # a lone surrogate or a NUL was a store error (500)
        for after in ([1, 2], {"a": 1}, 5, True, None, "\ud800", "a\x00b")
    ),
    *(
        (
            "GET",
            f"/segments/champions/users?cursor={_cursor(pos, 'segment:champions')}",
            None,
            "cursor",
        )
        for pos in (
            {"ltv": [1], "after": "u1"},
            {"ltv": "1.5", "after": "u1"},
            {"ltv": True, "after": "u1"},
            {"ltv": 1.5, "after": 7},
            {"ltv": 10**400, "after": "u1"},  # an OverflowError (500)
        )
    ),
    # times that overflow once converted to UTC, milliseconds, a date that is none
    ("POST", "/users", {"user_id": "x", "signup_time": "0001-01-01T00:00:00+01:00"}, "signup_time"),
    ("PATCH", f"/users/{USER}", {"signup_time": "9999-12-31T23:30:00-01:00"}, "signup_time"),
    ("POST", "/users", {"user_id": "x", "signup_time": 1700000000123}, "signup_time"),
    ("POST", "/users", {"user_id": "x", "signup_time": "20241301"}, "signup_time"),
    (
        "POST",
        "/sessions/recommendations",
        {"events": [{"item_id": "i1", "timestamp": "0001-01-01T00:00:00+01:00"}]},
        "events[0].timestamp",
    ),
    # a blank category would mask every item
    ("GET", f"/users/{USER}/recommendations?category=%20", None, "category"),
    ("GET", "/items/i1/similar?category=%20", None, "category"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD_REQUESTS)
def test_bad_input_is_a_422_naming_the_field(reader, method, path, body, field):
    res = call(reader, method, path, "admin", json=body)
    assert res.status_code == 422, res.text
    out = res.json()
    assert out["error"] == "invalid_input" and out["message"]
    assert field in {d["field"] for d in out["details"]}, out


def test_malformed_json_is_a_422_not_a_500(reader):
    res = call(
        reader,
        "POST",
        "/recommendations/batch",
        content=b'{"user_ids": [',
        headers={"Content-Type": "application/json"},
    )
    assert res.status_code == 422
    assert res.json()["details"] == [
        {"location": "body", "field": "(body)", "reason": "invalid JSON at character 14"}
    ]  # not the field "[14]", which on /events reads as the 15th event
    # a body that is not UTF-8 at all: the documented 422 too, not an undocumented 400
    for path in ("/events", "/recommendations/batch"):
        res = call(reader, "POST", path, "write", content=b'{"user_ids": ["\xb5"]}',
                   headers={"Content-Type": "application/json"})  # fmt: skip
        assert res.status_code == 422, res.text
        assert res.json()["details"] == [
            {
                "location": "body",
                "field": "(body)",
                "reason": "cannot be parsed as JSON (not UTF-8 text, or nested too deep)",
            }
        ]


def test_an_unknown_model_is_reported_where_it_was_sent(reader):
    res = call(reader, "GET", f"/users/{USER}/recommendations", params={"model": "nope"})
    assert (res.status_code, res.json()["details"][0]["location"]) == (422, "query")
    for path, body in (
        ("/recommendations/batch", {"user_ids": [USER], "model": "nope"}),
        ("/sessions/recommendations", {"events": [], "model": "nope"}),
    ):
        res = call(reader, "POST", path, json=body)
        assert res.status_code == 422
        assert res.json()["details"] == [
            {"location": "body", "field": "model", "reason": "not a loaded recommender"}
        ]


def test_unknown_routes_and_methods_answer_json(reader):
    res = call(reader, "GET", "/nowhere")
    assert res.status_code == 404
    assert res.json() == {"error": "not_found", "message": "no such endpoint: GET /nowhere"}
    res = call(reader, "PUT", "/segments")
    assert res.status_code == 405 and res.json()["error"] == "method_not_allowed"


def test_hidden_item_disappears_at_once_and_comes_back_when_unhidden(client):
    users = [USER, "u5", "never-seen"]
    shown = [recs(client, u, k=3)["items"][0]["item_id"] for u in users]
    target = shown[0]
    res = call(client, "PATCH", f"/items/{target}", "write", json={"hidden": True})
    assert res.status_code == 200 and res.json()["hidden"] is True
    for u in users:
        assert target not in {i["item_id"] for i in recs(client, u, k=40)["items"]}
    similar = call(client, "GET", f"/items/{shown[1]}/similar", params={"k": 39}).json()
    assert target not in {i["item_id"] for i in similar["items"]}
    assert call(client, "GET", f"/items/{target}").json()["hidden"] is True
    call(client, "PATCH", f"/items/{target}", "write", json={"hidden": False})
    assert recs(client, USER, k=3)["items"][0]["item_id"] == target


def test_category_filter_keeps_only_that_category(reader):
    catalog = service(reader).catalog
    category = sorted(next(iter(catalog.categories.values())))[0]
    in_category = {i for i, cats in catalog.categories.items() if category in cats}
    body = recs(reader, USER, k=40, category=category.upper(), exclude_seen="false")
    assert {i["item_id"] for i in body["items"]} == in_category
    assert recs(reader, USER, category="no-such-category")["items"] == []


def test_batch_recommendations_equal_the_single_calls(reader):
    users = [USER, "u5", "never-seen"]
    res = call(reader, "POST", "/recommendations/batch", json={"user_ids": users, "k": 4})
    body = res.json()
    assert body["model"] == "ease" and [r["user_id"] for r in body["results"]] == users
    for r in body["results"]:
        assert r == recs(reader, r["user_id"], k=4)


def test_session_recommendations_need_no_user(reader):
    session = {"events": [{"item_id": "i1", "event_type": "view"},
                          {"item_id": "i2", "event_type": "exposure"}], "k": 5}  # fmt: skip
    res = call(reader, "POST", "/sessions/recommendations", json=session)
    body = res.json()
    assert res.status_code == 200 and body["cold_start"] is False
    handle = service(reader).models.recommender("ease")
    expected = handle.model.recommend(["anon"], k=5, histories={"anon": ["i1"]})
    assert [i["item_id"] for i in body["items"]] == list(expected["item_id"])
    every = call(reader, "POST", "/sessions/recommendations", json={**session, "k": 40}).json()
    items = {i["item_id"] for i in every["items"]}
    assert "i1" not in items and "i2" in items  # seen: the view; an exposure is not interest
    empty = call(reader, "POST", "/sessions/recommendations", json={"events": []}).json()
    assert empty["cold_start"] is True
    assert service(reader).repo.count_events(user_id="anon") == 0  # sessions are not stored


def test_similar_items_come_from_the_model(reader):
    body = call(reader, "GET", "/items/i1/similar", params={"k": 3}).json()
    expected = service(reader).models.recommender("ease").model.similar_items("i1", k=3)
    assert [i["item_id"] for i in body["items"]] == list(expected["similar_item_id"])
    assert all(i["title"] for i in body["items"])
    res = call(reader, "GET", "/items/nothing/similar")
    assert res.status_code == 404 and "unknown to model ease" in res.json()["message"]


def test_write_back_records_exposures_that_are_not_interest(client):
    body = recs(client, USER, k=3, write_back="true")
    before = service(client).histories.get(USER)
    assert stored_events(client, USER, "exposure") == 0  # buffered, off the request path
    assert service(client).exposures.flush() == 3
    rows = service(client).repo.store.events([USER], event_types=["exposure"])
    assert list(rows["item_id"]) == [i["item_id"] for i in body["items"]]
    props = [json.loads(p) for p in rows["properties"]]
    assert [p["rank"] for p in props] == [1, 2, 3]
    assert {(p["model"], p["version"]) for p in props} == {("rec-ease", "v0001")}
    assert service(client).histories.get(USER) == before
    assert recs(client, USER, k=3) == {**body}


def test_exposures_of_a_custom_type_written_today_do_not_move_the_value_as_of(deployment):
    """A server whose settings name another exposure type writes that type back, stamped
    today; its value predictions must stay as of the end of what users did."""
    client = _client(*deployment, events={"exposure": ["impression"]})
    with client:
        svc = service(client)
        before = svc.repo.value_as_of()
        assert before is not None and before < datetime(2026, 1, 1)
        recs(client, USER, k=3, write_back="true")
        assert svc.exposures.flush() == 3
        assert stored_events(client, USER, "impression") == 3
        assert svc.repo.value_as_of() == before
        # the default roles (which know only "exposure") would have moved it to today
        with svc.repo.lock:
            assert log_end(svc.repo.store) > datetime.now() - timedelta(days=2)


def test_a_flush_under_way_cannot_bring_a_deleted_user_back(client, monkeypatch):
    """A flush that took a user's exposures out of the buffer before their deletion must not
    write them after it: the deletion waits for the flush, then deletes what it wrote."""
    svc = service(client)
    recs(client, USER, k=3, write_back="true")
    taken, release, deleted = threading.Event(), threading.Event(), threading.Event()
    write, delete = svc.exposures._write, svc.repo.delete_user

    def held_write(frame: pd.DataFrame) -> int:
        taken.set()  # the rows are out of the buffer, not yet in the store
        release.wait(10)
        return write(frame)

    def noted_delete(user_id: str) -> int | None:
        n = delete(user_id)
        deleted.set()
        return n

    monkeypatch.setattr(svc.exposures, "_write", held_write)
    monkeypatch.setattr(svc.repo, "delete_user", noted_delete)
    flusher = threading.Thread(target=svc.exposures.flush)
    deleter = threading.Thread(target=svc.delete_user, args=(USER,))
    flusher.start()
    assert taken.wait(10)
    deleter.start()
    try:
        assert not deleted.wait(0.5)  # the deletion waits for the flush under way
    finally:
        release.set()
        flusher.join()
        deleter.join()
    assert stored_events(client, USER) == 0
    assert call(client, "GET", f"/users/{USER}").status_code == 404


# -- users and items -----------------------------------------------------------------------------
def test_deleting_a_user_forgets_their_events_value_and_history(client):
    n = stored_events(client, USER)
    assert n > 0 and recs(client, USER)["cold_start"] is False
    assert call(client, "GET", f"/users/{USER}/value").status_code == 200
    res = call(client, "DELETE", f"/users/{USER}", "write")
    assert res.json() == {"user_id": USER, "events_deleted": n}
    assert stored_events(client, USER) == 0
    assert recs(client, USER)["cold_start"] is True
    assert call(client, "GET", f"/users/{USER}").status_code == 404
    assert call(client, "GET", f"/users/{USER}/value").status_code == 404
    assert call(client, "DELETE", f"/users/{USER}", "write").status_code == 404


def test_deleting_a_user_relabels_the_others_as_a_restart_would(client, deployment):
    """The "top x %" segment rules are quantiles of the customers: deleting the top champion
    moves the threshold, and the running server kept everyone else's old label."""
    top = call(client, "GET", "/segments/champions/users?limit=1").json()["items"][0]["user_id"]
    before = {s["segment"]: s["users"] for s in call(client, "GET", "/segments").json()["segments"]}
    assert call(client, "DELETE", f"/users/{top}", "write").status_code == 200
    running = call(client, "GET", "/segments").json()
    db, keys = deployment
    with _client(db, keys) as fresh:
        restarted = call(fresh, "GET", "/segments").json()
    assert running["as_of"] == restarted["as_of"]
    assert running["segments"] == restarted["segments"]
    after = {s["segment"]: s["users"] for s in running["segments"]}
    assert sum(after.values()) == sum(before.values()) - 1
    # the threshold moved: the labels are not the old ones less the deleted champion
    assert after != {**before, "champions": before["champions"] - 1}


def test_users_crud(client):
    res = call(client, "POST", "/users", "write",
               json={"user_id": "ann", "signup_time": "2024-03-01T12:00:00Z",
                     "properties": {"region": "north"}})  # fmt: skip
    assert res.status_code == 201
    assert res.json() == {
        "user_id": "ann",
        "signup_time": "2024-03-01T12:00:00Z",
        "properties": {"region": "north"},
        "events": 0,
    }
    assert call(client, "POST", "/users", "write", json={"user_id": "ann"}).status_code == 409
    res = call(client, "PATCH", "/users/ann", "write", json={"properties": {"region": "south"}})
    assert res.json()["properties"] == {"region": "south"}
    assert res.json()["signup_time"] == "2024-03-01T12:00:00Z"  # untouched
    assert call(client, "GET", "/users/ann").json()["properties"] == {"region": "south"}
    assert call(client, "PATCH", "/users/nobody", "write", json={}).status_code == 404
    assert call(client, "GET", f"/users/{USER}").json()["events"] == stored_events(client, USER)


def test_user_list_pages_through_everyone_once(client):
    """Users come from the users table and from events; each page takes the first of each
    after the cursor (interleaved here: users without events sort first, between and last)."""
    for user in ("0-no-events", "u5-no-events", "zzz-no-events"):
        call(client, "POST", "/users", "write", json={"user_id": user})
    svc = service(client)
    with svc.repo.lock:
        svc.repo.store.execute("DELETE FROM users WHERE user_id IN ('u1', 'u2', 'u3')")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 50} | ({"cursor": cursor} if cursor else {})
        page = call(client, "GET", "/users", params=params).json()
        seen += [u["user_id"] for u in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    with svc.repo.lock:
        every = svc.repo.store.fetch(
            "SELECT user_id FROM users UNION SELECT user_id FROM events ORDER BY 1"
        )
    assert seen == [u for (u,) in every] and len(seen) == 123 and pages == 3
    assert {"u1", "u5-no-events"} <= set(seen) and seen[-1] == "zzz-no-events"


def test_items_crud_and_paging(client):
    item = {"item_id": "new", "title": "Brand new", "category": "Toys|Games", "price": 9.5}
    res = call(client, "POST", "/items", "write", json=item)
    assert res.status_code == 201
    assert res.json() == {**item, "text": None, "properties": None, "hidden": False}
    assert call(client, "POST", "/items", "write", json=item).status_code == 409
    res = call(client, "PATCH", "/items/new", "write", json={"title": "Renamed", "price": None})
    assert (res.json()["title"], res.json()["price"], res.json()["category"]) == (
        "Renamed", None, "Toys|Games")  # fmt: skip
    assert service(client).catalog.categories["new"] == {"toys", "games"}
    first = call(client, "GET", "/items", params={"limit": 30}).json()
    rest = call(client, "GET", "/items", params={"limit": 30, "cursor": first["next_cursor"]})
    ids = [i["item_id"] for i in first["items"] + rest.json()["items"]]
    assert len(ids) == 41 and ids == sorted(ids) and rest.json()["next_cursor"] is None
    assert call(client, "PATCH", "/items/nothing", "write", json={}).status_code == 404


def test_deleted_item_is_never_recommended_again(client):
    top = recs(client, "never-seen", k=1)["items"][0]["item_id"]
    assert call(client, "DELETE", f"/items/{top}", "write").json() == {
        "item_id": top,
        "hidden": True,
    }
    assert call(client, "GET", f"/items/{top}").status_code == 404
    assert top not in {i["item_id"] for i in recs(client, "never-seen", k=40)["items"]}
    # editing it later (the model still knows it) gives it a row again, still hidden
    res = call(client, "PATCH", f"/items/{top}", "write", json={"title": "typo fixed"})
    assert (res.status_code, res.json()["hidden"]) == (200, True)
    assert top not in {i["item_id"] for i in recs(client, "never-seen", k=40)["items"]}
    res = call(client, "PATCH", f"/items/{top}", "write", json={"hidden": False})
    assert top in {i["item_id"] for i in recs(client, "never-seen", k=40)["items"]}


# -- value and segments ---------------------------------------------------------------------------
def test_user_value_is_the_precomputed_prediction(reader):
    snap = service(reader).models.value
    user = snap.ranked["user_id"][0]
    body = call(reader, "GET", f"/users/{user}/value").json()
    row = snap.table.loc[user]
    assert body["model"] == "naive" and body["version"] == "v0001"
    assert body["ltv"] == pytest.approx(row["ltv"]) and body["segment"] == row["segment"]
    assert body["ltv_low"] <= body["ltv"] <= body["ltv_high"]
    assert body["churn_probability"] == pytest.approx(1 - body["p_alive"])
    assert body["as_of"].endswith("Z")
    # as of the end of the log, as `valuerec value predict` scores (not its last purchase)
    svc = service(reader)
    with svc.repo.lock:
        end = log_end(svc.repo.store)
    assert pd.Timestamp(body["as_of"]).tz_convert(None) == end
    res = call(reader, "GET", "/users/no-purchases/value")
    assert res.status_code == 404 and "no value prediction" in res.json()["message"]


@pytest.mark.parametrize("refresh", [0.01, 0.0])
def test_new_purchases_reach_value_predictions_without_a_restart(deployment, refresh):
    """The snapshot was computed at start-up only: a new buyer got "no value prediction"
    and a steady one kept their old LTV until a restart. Now a refresh in the background
    predicts everyone again (``value_refresh_seconds``; 0 keeps the start-up snapshot)."""
    db, keys = deployment
    with _client(db, keys, value_refresh_seconds=refresh) as c:
        svc = service(c)
        before = call(c, "GET", f"/users/{USER}/value").json()
        assert call(c, "GET", "/users/newbie/value").status_code == 404
        when = pd.Timestamp(before["as_of"]).tz_convert(None) - pd.Timedelta(days=1)
        buys = [
            {"user_id": u, "item_id": "i1", "event_type": "purchase", "value": 50.0,
             "timestamp": (when - pd.Timedelta(days=d)).isoformat()}
            for u in (USER, "newbie") for d in (0, 3, 9)
        ]  # fmt: skip
        res = call(c, "POST", "/events", "write", json={"events": buys})
        assert res.json()["stored"] == 6, res.text
        svc.wait_value_refresh(60)
        after = call(c, "GET", f"/users/{USER}/value").json()
        newbie = call(c, "GET", "/users/newbie/value")
    if refresh:
        assert newbie.status_code == 200 and newbie.json()["ltv"] > 0
        assert after["ltv"] > before["ltv"]
        with _client(db, keys) as fresh:  # what a restart answers
            assert call(fresh, "GET", f"/users/{USER}/value").json() == after
    else:
        assert newbie.status_code == 404 and after == before


def _held_refresh(svc, monkeypatch):
    """Start a value refresh whose prediction waits until the returned event is set."""
    model = svc.models.value.model
    predicting, release = threading.Event(), threading.Event()
    real = model.predict_data

    def slow_predict(data, horizon_days=None):
        predicting.set()
        assert release.wait(30), "the test never released the prediction"
        return real(data, horizon_days)

    monkeypatch.setattr(model, "predict_data", slow_predict)
    refresher = threading.Thread(target=svc.models.refresh_value)
    refresher.start()
    assert predicting.wait(30)
    return refresher, release


def _during_refresh(svc, monkeypatch, request):
    """Run ``request`` in a thread while a value refresh predicts; returns its answers and
    whether it answered before the prediction was let go."""
    refresher, release = _held_refresh(svc, monkeypatch)
    answers: list = []
    worker = threading.Thread(target=lambda: answers.append(request()))
    worker.start()
    worker.join(10)
    in_time = bool(answers)
    release.set()
    worker.join(30)
    refresher.join(30)
    return answers, in_time


def test_writes_do_not_wait_for_a_value_refresh_to_predict(client, monkeypatch):
    """A refresh predicted every customer holding the repository's lock, so every write (and
    store read) waited seconds on a large store. Only its reads hold the lock now: an event
    posted while the model predicts is stored at once, and counts at the next refresh."""
    svc = service(client)
    when = svc.models.value.as_of - timedelta(days=2)  # inside the log: its end stays
    buy = {"user_id": "late", "item_id": "i1", "event_type": "purchase", "value": 9.0,
           "timestamp": when.isoformat()}  # fmt: skip
    answers, in_time = _during_refresh(
        svc, monkeypatch,
        lambda: call(client, "POST", "/events", "write", json={"events": [buy]}).json()["stored"],
    )  # fmt: skip
    assert in_time and answers == [1], "the post waited for the prediction"
    with svc.repo.lock:  # the refresh installed predictions as of the log's end
        assert svc.models.value.as_of == svc.repo.value_as_of()


def test_a_deletion_during_a_value_refresh_neither_waits_nor_comes_back(client, monkeypatch):
    """The refresh predicted under the swap lock, so deleting a user waited for all of it.
    It now installs under the lock only; a user deleted while it predicted (from reads made
    before the deletion) is left out of what it installs."""
    svc = service(client)
    gone = svc.models.value.ranked["user_id"][0]
    answers, in_time = _during_refresh(
        svc, monkeypatch, lambda: call(client, "DELETE", f"/users/{gone}", "write").status_code
    )
    assert in_time and answers == [200], "the deletion waited for the prediction"
    assert gone not in svc.models.value.table.index
    assert call(client, "GET", f"/users/{gone}/value").status_code == 404


def test_a_deletion_at_any_moment_after_a_refresh_read_is_not_undone(client, monkeypatch):
    """Each time the refresh takes the swap lock after its first, another user is deleted
    just before: a deletion between the refresh's collecting of who was forgotten and its
    install (two holds of the lock, review R5) was neither recorded nor applied, and the user
    came back with a value. Every user deleted must stay gone."""
    svc = service(client)
    registry, real = svc.models, svc.models._swap
    users = iter(svc.models.value.ranked["user_id"][:5].tolist())
    deleted: list[str] = []
    entries = 0

    class DeletingFirst:
        def __enter__(self):
            nonlocal entries
            if threading.current_thread().name == "refresher":
                entries += 1
                if entries > 1:  # after the reads: another request deletes a user now
                    user = next(users)
                    worker = threading.Thread(
                        target=lambda: call(client, "DELETE", f"/users/{user}", "write")
                    )
                    worker.start()
                    worker.join(30)
                    deleted.append(user)
            return real.__enter__()

        def __exit__(self, *exc):
            return real.__exit__(*exc)

    monkeypatch.setattr(registry, "_swap", DeletingFirst())
    refresher = threading.Thread(target=registry.refresh_value, name="refresher")
    refresher.start()
    refresher.join(60)
    monkeypatch.setattr(registry, "_swap", real)
    assert deleted
    assert not set(deleted) & set(registry.value.table.index)
    for user in deleted:
        assert call(client, "GET", f"/users/{user}/value").status_code == 404


def test_a_promotion_during_a_value_refresh_is_not_overwritten_by_it(client, monkeypatch):
    svc = service(client)
    snap = svc.models.value
    refresher, release = _held_refresh(svc, monkeypatch)
    res = call(client, "POST", f"/models/{snap.artifact}/promote", "admin",
               json={"version": snap.version})  # fmt: skip
    promoted = svc.models.value
    release.set()
    refresher.join(30)
    assert res.status_code == 200, res.text
    assert promoted.model is not snap.model  # loaded again, not waiting for the refresh
    assert svc.models.value is promoted


def test_an_empty_models_folder_drops_no_recommender(client, caplog):
    """An unmounted volume leaves its empty mount point: every recommender was dropped, and
    every recommendation became a 503 (review R8). Said once, not every poll."""
    svc = service(client)
    root = svc.models.arts.root
    moved = root.with_name(root.name + ".away")
    root.rename(moved)
    root.mkdir()
    try:
        with caplog.at_level("WARNING", logger="valuerec.serve"):
            assert svc.models.follow_current() == []
            assert svc.models.follow_current() == []
        assert sorted(svc.models.recommenders) == ["ease", "popularity"]
        said = [r for r in caplog.records if "lists no recommender" in r.getMessage()]
        assert len(said) == 1
    finally:
        root.rmdir()
        moved.rename(root)


def test_values_are_scored_as_of_the_end_of_a_log_that_ends_with_views(tmp_path):
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "b"],
            "item_id": "i1",
            "event_type": ["purchase", "purchase", "view"],
            "timestamp": ["2024-03-01 10:00", "2024-03-05 10:00", "2024-03-20 10:00"],
            "value": [5.0, 7.0, None],
        }
    )
    with Store(tmp_path / "s.duckdb") as store:
        assert Repository(store).value_as_of() is None  # nothing to predict from
        ingest(store, events, "events")
        assert Repository(store).value_as_of() == datetime(2024, 3, 21)  # not 03-06


def test_segments_cover_every_customer_and_page_in_ltv_order(reader):
    body = call(reader, "GET", "/segments").json()
    assert [s["segment"] for s in body["segments"]] == list(SEGMENTS)
    snap = service(reader).models.value
    assert sum(s["users"] for s in body["segments"]) == len(snap.table)
    biggest = max(body["segments"], key=lambda s: s["users"])
    slug = biggest["segment"].replace(" ", "-").upper()
    got, cursor = [], None
    while True:
        params = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        page = call(reader, "GET", f"/segments/{slug}/users", params=params).json()
        assert page["segment"] == biggest["segment"]
        got += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(got) == biggest["users"] == len({u["user_id"] for u in got})
    assert [u["ltv"] for u in got] == sorted((u["ltv"] for u in got), reverse=True)
    res = call(reader, "GET", "/segments/vips/users")
    assert res.status_code == 404 and "champions" in res.json()["message"]
    # a cursor belongs to its list: on another segment (or /users, /items) it is refused,
    # not read as a position there (it gave an empty "last" page of a 12-user segment)
    first = call(reader, "GET", f"/segments/{slug}/users", params={"limit": 2}).json()
    other = next(s["segment"] for s in body["segments"] if s["segment"] != biggest["segment"])
    users = call(reader, "GET", "/users", params={"limit": 2}).json()["next_cursor"]
    for path, cursor in (
        (f"/segments/{other.replace(' ', '-')}/users", first["next_cursor"]),
        ("/items", users),
        ("/users", first["next_cursor"]),
    ):
        res = call(reader, "GET", path, params={"cursor": cursor})
        assert res.status_code == 422 and res.json()["details"][0]["field"] == "cursor"


# -- models ----------------------------------------------------------------------------------------
def _models(reader) -> dict[str, dict]:
    return {m["name"]: m for m in call(reader, "GET", "/models", "admin").json()["models"]}


def test_promote_and_rollback_swap_the_served_version(client):
    models = _models(client)
    assert set(models) == {"rec-ease", "rec-popularity", "value-naive"}
    ease = models["rec-ease"]
    assert (ease["kind"], ease["current_version"], ease["serving_version"]) == (
        "recommender", "v0001", "v0001")  # fmt: skip
    assert [v["version"] for v in ease["versions"]] == ["v0001", "v0002"]
    v1 = recs(client, USER, k=5)
    res = call(client, "POST", "/models/ease/promote", "admin", json={"version": "2"})
    assert res.json() == {"name": "rec-ease", "version": "v0002", "previous_version": "v0001"}
    assert _models(client)["rec-ease"]["serving_version"] == "v0002"
    v2 = recs(client, USER, k=5)
    assert v2["version"] == "v0002" and len(v2["items"]) == 5
    assert [i["score"] for i in v2["items"]] != [i["score"] for i in v1["items"]]
    res = call(client, "POST", "/models/rec-ease/rollback", "admin")
    assert res.json() == {"name": "rec-ease", "version": "v0001", "previous_version": "v0002"}
    assert recs(client, USER, k=5) == v1
    again = call(client, "POST", "/models/rec-ease/rollback", "admin")
    assert again.status_code == 409 and "nothing to roll back" in again.json()["message"]
    missing = call(client, "POST", "/models/rec-ease/promote", "admin", json={"version": "v9"})
    assert missing.status_code == 404
    assert call(client, "POST", "/models/nope/rollback", "admin").status_code == 404


def test_hot_swap_under_load_fails_no_request(client):
    svc = service(client)
    errors: list[BaseException] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                _, (r,) = svc.recommend_users(
                    [USER], k=5, model="ease", exclude_seen=True, category=None, write_back=False
                )
                assert len(r.items) == 5
                versions.add(r.version)
            except BaseException as exc:  # any failure at all fails the test
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(4):
        svc.models.promote("ease", "v0002")
        time.sleep(0.02)
        svc.models.rollback("ease")
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and versions == {"v0001", "v0002"}


def test_deleting_a_user_during_a_value_model_swap_keeps_the_new_version(client, monkeypatch):
    """Forgetting a deleted user rebuilds the value snapshot: a promotion must neither be
    overwritten by the old snapshot nor keep the user, so it waits for the rebuild."""
    svc = service(client)
    model, _ = svc.models.arts.load("value-naive")
    svc.models.arts.save("value-naive", model, {"model": "naive"}, promote=False)
    user = str(svc.models.value.ranked["user_id"][0])
    forgetting, release, installed = threading.Event(), threading.Event(), threading.Event()
    summary, install = registry.segment_summary, svc.models._install

    def held_summary(seg: pd.DataFrame) -> pd.DataFrame:
        if threading.current_thread().name == "deleter":  # forget_user, not the promotion
            forgetting.set()
            release.wait(10)
        return summary(seg)

    def noted_install(loaded: object) -> None:
        install(loaded)
        installed.set()

    monkeypatch.setattr(registry, "segment_summary", held_summary)
    monkeypatch.setattr(svc.models, "_install", noted_install)
    deleter = threading.Thread(target=svc.delete_user, args=(user,), name="deleter")
    promoter = threading.Thread(target=svc.models.promote, args=("value-naive", "v0002"))
    deleter.start()
    assert forgetting.wait(10)
    promoter.start()
    try:
        assert not installed.wait(1.0)  # the swap waits for the snapshot being edited
    finally:
        release.set()
        deleter.join()
        promoter.join()
    snap = svc.models.value
    assert snap.version == "v0002" and user not in snap.table.index
    assert user not in set(snap.ranked["user_id"])


# -- configuration, metrics, docs, degraded modes --------------------------------------------------
def test_event_roles_are_configuration(deployment):
    db, keys = deployment
    roles = EventRoles(positive=["purchase"], exposure=["exposure"], negative=["dislike"])
    with _client(db, keys, events=roles) as c:
        post = [{"user_id": "cfg", "item_id": "i3", "event_type": "view"}]
        call(c, "POST", "/events", "write", json={"events": post})
        assert recs(c, "cfg")["cold_start"] is True  # a view is not interest here
        post[0]["event_type"] = "purchase"
        call(c, "POST", "/events", "write", json={"events": post})
        assert recs(c, "cfg")["cold_start"] is False
        top = recs(c, "cfg", k=1)["items"][0]["item_id"]
        dislike = {"user_id": "cfg", "item_id": top, "event_type": "dislike"}
        call(c, "POST", "/events", "write", json={"events": [dislike]})
        assert top not in {
            i["item_id"] for i in recs(c, "cfg", k=40, exclude_seen="false")["items"]
        }


def test_metrics_count_requests_by_route_and_show_model_versions(client):
    for _ in range(2):
        recs(client, USER)
    client.get("/segments")  # no key: counted as a 401
    text = call(client, "GET", "/metrics").text
    route = 'route="/users/{user_id}/recommendations"'
    assert f'valuerec_http_requests_total{{method="GET",{route},status="200"}} 2.0' in text
    assert 'valuerec_http_requests_total{method="GET",route="/segments",status="401"} 1.0' in text
    assert (
        f'valuerec_http_request_duration_seconds_bucket{{le="0.02",method="GET",{route}}}' in text
    )
    assert 'valuerec_model_info{kind="recommender",name="rec-ease",version="v0001"} 1.0' in text
    assert 'valuerec_model_info{kind="value",name="value-naive",version="v0001"} 1.0' in text


def _fast_path_count(c: TestClient) -> float:
    return service(c).metrics.fast_path._value.get()


FAST_PATH_QUERIES = [
    {},
    {"k": 3},
    {"k": "25", "exclude_seen": "false"},
    {"exclude_seen": "No", "write_back": "off"},
    {"model": "popularity"},
    {"category": "books", "k": 5},
    {"unknown_parameter": "ignored"},
    {"value_weight": "2.5", "k": 4},
]


@pytest.mark.parametrize("user", [USER, "u7", "never-seen-before"])
def test_the_fast_path_answers_exactly_as_the_fastapi_route(reader, user):
    """Valid requests are answered by the fast path, and the answer is the route's own."""
    app = reader.app
    for params in FAST_PATH_QUERIES:
        before = _fast_path_count(reader)
        fast = recs(reader, user, **params)
        assert _fast_path_count(reader) == before + 1, params  # the fast path answered
        app.state.fast_path = False
        try:
            slow = recs(reader, user, **params)
        finally:
            app.state.fast_path = True
        assert _fast_path_count(reader) == before + 1  # the route answered this time
        assert fast == slow, params
        assert len(fast["items"]) == min(int(params.get("k", 10)), len(fast["items"]))


def test_middleware_a_deployer_adds_wraps_the_fast_paths_answers(deployment):
    """Middleware added to the app after ``create_app`` (CORS for browsers, trusted hosts,
    gzip) must wrap every request, those the fast path answers included: the first step
    yields to the stack then, and the fast path answers from inside it, still counted once
    under the route's template."""
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    db, keys = deployment
    with _client(db, keys) as c:
        plain = recs(c, USER, k=30)
    app = create_app(db, settings=ServeSettings(exposure_flush_seconds=3600.0))
    app.add_middleware(GZipMiddleware, minimum_size=10)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["api.example"])
    app.add_middleware(CORSMiddleware, allow_origins=["https://shop.example"])
    with TestClient(app, base_url="http://api.example") as c:
        c.keys = keys  # type: ignore[attr-defined]
        before = _fast_path_count(c)
        headers = {"Origin": "https://shop.example", "Accept-Encoding": "gzip"}
        res = call(c, "GET", f"/users/{USER}/recommendations?k=30", headers=headers)
        assert res.status_code == 200 and res.json() == plain
        assert res.headers["access-control-allow-origin"] == "https://shop.example"
        assert res.headers["content-encoding"] == "gzip"
        assert _fast_path_count(c) == before + 1  # answered by the fast path, inside them
        res = call(c, "GET", f"/users/{USER}/recommendations", headers={"Host": "evil.example"})
        assert res.status_code == 400 and _fast_path_count(c) == before + 1
        text = call(c, "GET", "/metrics", "admin").text
        route = 'route="/users/{user_id}/recommendations"'
        assert f'valuerec_http_requests_total{{method="GET",{route},status="200"}} 1.0' in text


def test_only_short_query_strings_are_memoised(reader):
    """A client cannot pin memory with long query strings: those are parsed every time."""
    from valuerec.serve import fastpath

    fastpath._parse_short.cache_clear()
    recs(reader, USER, k=3)
    recs(reader, USER, k=3, pad="x" * 300)  # ignored parameter, as FastAPI ignores it
    recs(reader, USER, k=3, pad="x" * 300)
    info = fastpath._parse_short.cache_info()
    assert (info.currsize, info.hits) == (1, 0)
    recs(reader, USER, k=3)
    assert fastpath._parse_short.cache_info().hits == 1


def test_the_fast_path_steps_aside_while_opentelemetry_traces_requests(reader, monkeypatch):
    """The fast path answers before FastAPI's stack, so with OpenTelemetry configured (FastAPI
    then traces every request in that stack) it leaves the request to the route, which gives
    the same answer; its own answers are counted under the route's template."""
    app = reader.app
    telemetry = getattr(app, "_native_telemetry", None)
    if telemetry is None:
        pytest.skip("this FastAPI has no native telemetry")
    monkeypatch.setattr(app.fast_path, "_traced", False)  # restored after: the app is shared
    fast = recs(reader, USER, k=4)
    before = _fast_path_count(reader)
    monkeypatch.setattr(telemetry, "enabled", lambda: True)
    assert recs(reader, USER, k=4) == fast  # checked within the second, not yet seen
    assert _fast_path_count(reader) == before + 1
    monkeypatch.setattr(app.fast_path, "_next_check", 0.0)  # the second has passed
    assert recs(reader, USER, k=4) == fast
    assert _fast_path_count(reader) == before + 1  # FastAPI's route answered
    monkeypatch.setattr(telemetry, "enabled", lambda: False)
    monkeypatch.setattr(app.fast_path, "_next_check", 0.0)
    assert recs(reader, USER, k=4) == fast  # a provider is never unset: once on, stays on
    assert _fast_path_count(reader) == before + 1


@pytest.mark.parametrize(
    "query, status",
    [
        ("k=0", 422),
        ("k=abc", 422),
        ("k=201", 422),
        ("k=3&k=4", 200),  # repeated: FastAPI's choice, not the fast path's
        ("exclude_seen=maybe", 422),
        ("model=", 422),
        ("model=no-such-model", 422),
        ("category=" + "x" * 300, 422),
    ],
)
def test_requests_the_fast_path_leaves_get_the_routes_answers(reader, query, status):
    before = _fast_path_count(reader)
    res = call(reader, "GET", f"/users/{USER}/recommendations?{query}")
    assert res.status_code == status, res.text
    assert _fast_path_count(reader) == before  # left to FastAPI
    if status != 200:
        assert set(res.json()) >= {"error", "message"}
    for role in (None, "bad"):
        headers = {"X-API-Key": "vr_not-a-key"} if role == "bad" else {}
        res = reader.get(f"/users/{USER}/recommendations", headers=headers)
        assert res.status_code == 401 and _fast_path_count(reader) == before


def test_openapi_lists_every_endpoint_and_the_key_header(reader):
    schema = reader.get("/openapi.json").json()
    paths = schema["paths"]
    for method, path, _, _ in ENDPOINTS:
        template = (
            path.replace(USER, "{user_id}").replace("u2", "{user_id}")
            .replace("/i1", "/{item_id}").replace("/i2", "/{item_id}")
            .replace("champions", "{name}").replace("rec-ease", "{name}")
        )  # fmt: skip
        assert method.lower() in paths[template], (method, template)
        # every keyed operation documents what it can answer, an unreadable key file too
        assert {"401", "403", "422", "503"} <= set(paths[template][method.lower()]["responses"])
    # ids are stripped: the schema says an id needs a non-space character (" " is refused)
    user_id = schema["components"]["schemas"]["UserIn"]["properties"]["user_id"]
    assert user_id["pattern"] == r"\S" and user_id["minLength"] == 1
    assert "/health" in paths
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    events = schema["components"]["schemas"]["EventBatchIn"]["properties"]["events"]
    assert events["items"] == {"$ref": "#/components/schemas/EventIn"}
    assert "user_id" in schema["components"]["schemas"]["EventIn"]["required"]


def test_a_store_without_models_still_serves_and_says_why(databases):
    db = databases.new("bare")
    with Store(db) as store:
        ingest(store, generate(users=10, items=5, days=20, seed=1).events, "events")
    key, _ = KeyStore(default_keys_path(db)).create("read")
    with TestClient(create_app(db)) as c:
        assert c.get("/health").json()["recommenders"] == {}
        res = c.get("/users/u1/recommendations", headers={"X-API-Key": key})
        assert res.status_code == 503 and "valuerec train" in res.json()["message"]
        res = c.get("/segments", headers={"X-API-Key": key})
        assert res.status_code == 503 and "no value model" in res.json()["message"]


def test_serving_scores_are_the_models_own_history_scores():
    """The serving fast path (``ModelHandle.score`` on item positions) gives exactly what the
    model's ``score_histories`` gives on item ids: for order-blind models (CSR built by the
    handle) and an order-aware one (SASRec), with cold, unknown and repeated items."""
    from valuerec.recommend.knn import ItemKNNRecommender
    from valuerec.recommend.mf import BPRRecommender
    from valuerec.recommend.sasrec import SASRecRecommender
    from valuerec.serve.registry import ModelHandle

    events = generate(users=40, items=15, days=60, seed=3).events
    inter = Interactions.from_frame(events)
    models = [
        PopularityRecommender(),
        EASERecommender(reg=10.0),
        ItemKNNRecommender(k=5),
        BPRRecommender(factors=8, iterations=5),
        SASRecRecommender(max_len=8, d_model=16, n_layers=1, epochs=1, eval_every=1),
    ]
    for model in models:
        model.fit(inter)
        handle = ModelHandle("m", "rec-m", "v0001", {}, model, 0.0)
        assert handle.order_blind == (not isinstance(model, SASRecRecommender))
        ids = [str(i) for i in model.item_ids_]
        histories = [[], [ids[0]], [ids[3], ids[1], ids[3], "not-an-item"], ["nope"], ids[:7]]
        expected = np.asarray(model.score_histories(histories), dtype=np.float64)
        got = handle.score([handle.prepare(h) for h in histories])
        assert np.allclose(got, expected, rtol=1e-5, atol=1e-6), type(model).__name__
        for h, want in zip(histories, expected, strict=True):  # one history: its own path
            (one,) = handle.score([handle.prepare(h)])
            assert np.allclose(one, want, rtol=1e-5, atol=1e-6), (type(model).__name__, h)
        # named users: a training user's learned part is added on the fast path too
        names = [None, *model.user_ids_[:4]]
        expected = np.asarray(model.score_histories(histories, names), dtype=np.float64)
        got = handle.score([handle.prepare(h) for h in histories], names)
        assert np.allclose(got, expected, rtol=1e-5, atol=1e-6), type(model).__name__
        # a stored history (a tuple) is translated once per version of it, and a new version
        # (an event appended: a new tuple) is translated again
        stored = (ids[2], ids[0])
        first = handle.prepare(stored)
        assert handle.prepare(stored) is first
        assert first.seq.tolist() == [2, 0] and first.items.tolist() == [0, 2]
        grown = handle.prepare((*stored, ids[5]))
        assert grown is not first and grown.seq.tolist() == [2, 0, 5]
        # the batched similarity block the reasons use is the per-item similarity, cut
        items, hist = np.array([4, 1, 0]), np.array([2, 0, 6])
        if not isinstance(model, PopularityRecommender):
            want = np.stack([model._item_similarity(int(j))[hist] for j in items])
            assert np.allclose(model._similarity_block(items, hist), want)


# -- regressions: writes that raced, were unaddressable, or broke a later start -------------------
def _delete_during_the_read(c: TestClient, monkeypatch, reader: str, delete) -> None:
    """Issue ``delete`` from another thread right after the PATCH read its row (``reader``,
    the repository method that reads it), and give it time to finish if nothing holds it
    back: the interleaving a thread pool can produce, made near certain."""
    repo = service(c).repo
    read = getattr(repo, reader)
    deleters: list[threading.Thread] = []

    def read_then_delete(key: str):
        row = read(key)
        if not deleters:
            deleters.append(threading.Thread(target=delete, args=(key,)))
            deleters[0].start()
            deleters[0].join(0.5)  # a delete that must wait for the PATCH is still waiting
        return row

    monkeypatch.setattr(repo, reader, read_then_delete)
    c.deleters = deleters  # type: ignore[attr-defined]


def test_a_patch_racing_a_delete_cannot_bring_the_item_or_user_back(client, monkeypatch):
    """PATCH reads a row and writes it back changed: a DELETE landing between the two used
    to be undone (the row came back, unhidden). Whatever the order, the delete wins now."""
    svc = service(client)
    top = recs(client, "never-seen", k=1)["items"][0]["item_id"]
    _delete_during_the_read(client, monkeypatch, "get_item", svc.delete_item)
    res = call(client, "PATCH", f"/items/{top}", "write", json={"title": "renamed"})
    client.deleters[0].join(10)  # type: ignore[attr-defined]
    monkeypatch.undo()
    assert res.status_code == 200  # the PATCH went first: the DELETE waited for it
    assert call(client, "GET", f"/items/{top}").status_code == 404
    assert top in svc.catalog.hidden
    assert top not in {i["item_id"] for i in recs(client, "never-seen", k=40)["items"]}

    _delete_during_the_read(client, monkeypatch, "get_user", svc.delete_user)
    res = call(client, "PATCH", f"/users/{USER}", "write", json={"properties": {"vip": True}})
    client.deleters[0].join(10)  # type: ignore[attr-defined]
    monkeypatch.undo()
    assert res.status_code == 200
    assert call(client, "GET", f"/users/{USER}").status_code == 404
    assert stored_events(client, USER) == 0
    # a PATCH after the delete is a 404 and brings nothing back
    res = call(client, "PATCH", f"/users/{USER}", "write", json={"properties": {"vip": True}})
    assert res.status_code == 404
    assert call(client, "GET", f"/users/{USER}").status_code == 404


def test_event_and_signup_times_more_than_a_day_ahead_are_refused(client):
    """A future date moved the value snapshot's as-of past every customer (2099), or made
    it overflow (9999-12-31) so that no value model loaded at the next start."""
    now = datetime.now(UTC).replace(tzinfo=None)
    soon = (now + timedelta(hours=12)).isoformat()  # clock skew: accepted
    events = [
        {"user_id": "fut", "item_id": "i1", "event_type": "purchase", "timestamp": t, "value": 1}
        for t in ("2099-06-01T00:00:00", "9999-12-31T23:59:59", soon, 99999999999)
    ]
    res = call(client, "POST", "/events", "write", json={"events": events})
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["stored"], body["rejected"]) == (1, 3)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (0, "timestamp"),
        (1, "timestamp"),
        (3, "timestamp"),
    ]
    assert all("in the future" in e["reason"] for e in body["errors"])
    res = call(client, "POST", "/events", "write", json={"events": events[:1]})
    assert res.status_code == 422
    assert [d["field"] for d in res.json()["details"]] == ["timestamp"]
    for method, path, body in [
        ("POST", "/users", {"user_id": "fut", "signup_time": "2099-01-01"}),
        ("PATCH", f"/users/{USER}", {"signup_time": "9999-12-31T23:59:59"}),
    ]:
        res = call(client, method, path, "write", json=body)
        assert res.status_code == 422, res.text
        assert [d["field"] for d in res.json()["details"]] == ["signup_time"]
        assert "in the future" in res.json()["message"]
    # what a default cut-off is taken from (log_end) stays within the tolerance
    assert log_end(service(client).repo.store) <= now + timedelta(days=2)


def test_log_end_of_an_event_on_the_last_representable_day_is_a_split_error(tmp_path):
    """A file may still hold such a date: no day follows it, and that must be said, not an
    OverflowError ("year 10000 is out of range") escaping from every default cut-off."""
    events = pd.DataFrame(
        {"user_id": "a", "item_id": "i1", "event_type": "view", "timestamp": ["9999-12-31 23:59"]}
    )
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, events, "events")
        with pytest.raises(SplitError, match="9999-12-31"):
            log_end(store)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/events", {"events": [{"user_id": "team/42", "event_type": "view"}]}, "user_id"),
        (
            "/events",
            {"events": [{"user_id": "u1", "item_id": "SKU/9", "event_type": "view"}]},
            "item_id",
        ),
        ("/users", {"user_id": "a/b"}, "user_id"),
        ("/items", {"item_id": "sku/7", "title": "x"}, "item_id"),
        # every URL client (browsers and so the dashboard, curl, requests, httpx) removes the
        # dot segments of /users/./value before sending it: it asks for /users/value
        ("/events", {"events": [{"user_id": ".", "event_type": "view"}]}, "user_id"),
        ("/events", {"events": [{"user_id": " .. ", "event_type": "view"}]}, "user_id"),
        (
            "/events",
            {"events": [{"user_id": "u1", "item_id": "..", "event_type": "view"}]},
            "item_id",
        ),
        ("/users", {"user_id": "."}, "user_id"),
        ("/users", {"user_id": ".."}, "user_id"),
        ("/items", {"item_id": ".", "title": "x"}, "item_id"),
        ("/items", {"item_id": "..", "title": "x"}, "item_id"),
    ],
)
def test_ids_no_url_can_address_are_refused_on_write(client, path, body, field):
    """/users/{user_id} and /items/{item_id} take an id as one path segment, and "%2F" is
    decoded before routing: an id with a "/", or "." or "..", could be stored but never read
    or deleted."""
    res = call(client, "POST", path, "write", json=body)
    assert res.status_code == 422, res.text
    details = res.json()["details"]
    assert [d["field"] for d in details] == [field]
    slash = "/" in json.dumps(body)
    assert ("'/'" if slash else "'.' or '..'") in details[0]["reason"]
    assert "path segment" in details[0]["reason"]
    repo = service(client).repo
    for user in ("team/42", ".", ".."):
        assert repo.count_events(user_id=user) == 0
        assert repo.get_user(user) is None
    for item in ("sku/7", ".", ".."):
        assert repo.get_item(item) is None


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/users", '{"user_id": "a\\u0000b"}', "user_id"),
        ("/items", '{"item_id": "nul-item", "title": "x\\u0000y"}', "title"),
        ("/users", '{"user_id": "n1", "properties": {"x": NaN}}', "properties"),
        ("/items", '{"item_id": "nul-item", "properties": {"k": ["x\\u0000"]}}', "properties"),
        (
            "/events",
            '{"events": [{"user_id": "u1", "event_type": "view", "properties": {"x": Infinity}}]}',
            "properties",
        ),
        # a lone UTF-16 surrogate: a 500 on DuckDB; stored on PostgreSQL, and then every page
        # of /users or /items that held it was a 500
        ("/users", '{"user_id": "n1", "properties": {"s": "\\ud800"}}', "properties"),
        ("/items", '{"item_id": "nul-item", "properties": {"\\udc80": 1}}', "properties"),
        ("/users", '{"user_id": "n1\\ud800"}', "user_id"),
        (
            "/events",
            '{"events": [{"user_id": "u1", "event_type": "view", "properties": {"s": "\\ud800"}}]}',
            "properties",
        ),
    ],
)
def test_text_json_cannot_hold_is_a_422_on_every_backend(client, path, body, field):
    """NUL characters, NaN / Infinity and lone surrogates: Python's JSON parser takes them,
    DuckDB stored them (NaN silently turned null) and PostgreSQL answered 500, after storing
    the event under a different id. Both backends now refuse them the same way."""
    res = call(client, "POST", path, "write", content=body,
               headers={"Content-Type": "application/json"})  # fmt: skip
    assert res.status_code == 422, res.text
    details = res.json()["details"]
    assert details[0]["field"].split(".")[-1] == field, details
    assert re.search("NUL|NaN or Infinity|surrogate|unicode", details[0]["reason"]), details
    repo = service(client).repo
    assert repo.get_user("n1") is None and repo.get_item("nul-item") is None
    assert call(client, "GET", "/users?limit=1000").is_success


def test_items_without_a_title_have_none_after_a_restart(deployment):
    """The catalogue's NULL titles come back from the store as NaN: they were served as the
    title "nan" (and reasons "similar to nan") after the next start."""
    db, keys = deployment
    with _client(db, keys) as c:
        top = recs(c, "never-seen", k=1)["items"][0]["item_id"]
        assert call(c, "PATCH", f"/items/{top}", "write", json={"title": None}).status_code == 200
        assert recs(c, "never-seen", k=1)["items"][0]["title"] is None
    with _client(db, keys) as c:
        assert top not in service(c).catalog.titles
        first = recs(c, "never-seen", k=1)["items"][0]
        assert (first["item_id"], first["title"]) == (top, None)
        call(c, "POST", "/events", "write",
             json={"events": [{"user_id": "fresh", "item_id": top, "event_type": "view",
                               "timestamp": "2024-05-01"}]})  # fmt: skip
        reasons = {i["reason"] for i in recs(c, "fresh", k=5)["items"]}
        assert not any("nan" in r for r in reasons), reasons


def test_catalog_keeps_only_non_empty_text_titles():
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "title": ["Alpha", np.nan, None, ""],
            "category": [None, None, None, None],
        }
    )
    catalog = Catalog()
    catalog.load(items, [])
    assert catalog.titles == {"a": "Alpha"}


def test_promoting_a_version_that_is_no_number_is_a_404_not_a_500(client):
    for version in ("v²", "²", "v\u0661"):  # digits to str.isdigit, not to int()
        res = call(client, "POST", "/models/ease/promote", "admin", json={"version": version})
        assert res.status_code == 404, res.text
        assert res.json()["message"].startswith("not a version")


def _rejected(c: TestClient) -> float:
    text = call(c, "GET", "/metrics").text
    match = re.search(r'valuerec_events_total\{outcome="rejected"\} ([0-9.]+)', text)
    return float(match.group(1)) if match else 0.0


def test_rejected_events_are_counted_when_the_whole_batch_is_bad(client):
    bad = [{"user_id": "u1", "event_type": "view", "timestamp": "2024-13-45"}, {"user_id": "u1"}]
    assert call(client, "POST", "/events", "write", json={"events": bad}).status_code == 422
    assert _rejected(client) == 2.0
    mixed = [{"user_id": "u1"}, {"user_id": "u1", "event_type": "view", "timestamp": "2024-05-01"}]
    assert call(client, "POST", "/events", "write", json={"events": mixed}).status_code == 200
    assert _rejected(client) == 3.0


def test_purchase_times_are_utc_like_every_other_time(client):
    call(client, "POST", "/users", "write",
         json={"user_id": "tz", "signup_time": "2024-05-01T10:00:00Z"})  # fmt: skip
    event = {"user_id": "tz", "item_id": "i1", "event_type": "purchase", "value": 3,
             "timestamp": "2024-05-01T12:00:00+02:00"}  # fmt: skip
    assert call(client, "POST", "/events", "write", json={"events": [event]}).status_code == 200
    res = call(client, "GET", "/users/tz/purchases")
    assert res.status_code == 200
    assert [p["timestamp"] for p in res.json()["items"]] == ["2024-05-01T10:00:00Z"]
    assert call(client, "GET", "/users/tz").json()["signup_time"] == "2024-05-01T10:00:00Z"


def test_serve_settings_naming_models_that_are_not_there_say_so(deployment, caplog):
    """value_model "bogus" answered "no value model artifact: run valuerec train" although
    artifacts exist; an unknown default_model silently served another; an infinite horizon
    was accepted and broke the value model's load."""
    db, keys = deployment
    with (
        caplog.at_level("WARNING"),
        _client(db, keys, value_model="bogus", default_model="nope") as c,
    ):
        res = call(c, "GET", "/users/u1/value")
        assert res.status_code == 503
        assert "no artifact value-bogus (settings: value_model)" in res.json()["message"]
        served = recs(c, "u1", k=1)
        assert served["model"] != "nope"
    assert any("default_model 'nope' is not loaded" in r.getMessage() for r in caplog.records)
    for bad in (float("inf"), float("nan"), 40_000.0):
        with pytest.raises(ValueError, match="value_horizon_days"):
            ServeSettings(value_horizon_days=bad)


def test_histories_read_runs_of_users_in_row_order_grouped_or_not():
    """The per-user lists (built by runs of equal users, not pandas' per-row groupby) keep
    each user's rows in order, whether the rows come grouped by user or interleaved."""
    from valuerec.serve.state import Histories

    rows = pd.DataFrame(
        {
            "user_id": ["b", "a", "b", "a", "c", "a"],
            "item_id": ["x", "y", "z", "w", "v", "u"],
            "negative": [False, False, False, True, False, False],
        }
    )
    h = Histories(limit=2)
    h.load(rows)
    assert (h.get("a"), h.get("b"), h.get("c")) == (("y", "u"), ("x", "z"), ("v",))
    assert h.negatives("a") == frozenset({"w"}) and h.negatives("b") == frozenset()
    grouped = rows.sort_values("user_id", kind="stable")
    h2 = Histories(limit=2)
    h2.load(grouped)
    assert all(h2.get(u) == h.get(u) for u in "abc")


def test_items_seen_before_the_history_window_stay_seen(deployment):
    """A user who bought an item and then viewed another one many times: the history kept
    only the last ``history_limit`` events, all of them the one item, so the purchase was
    recommended again (and order-blind models scored a fan of one item)."""
    from valuerec.serve.state import Histories

    h = Histories(limit=3)
    h.load(
        pd.DataFrame(
            {
                "user_id": "u",
                "item_id": ["a", "b", "a", "c", "y", "y", "b", "y"],
                "negative": False,
            }
        )
    )
    # a and c only before the window (a last seen before c), then the last three as they came
    assert h.get("u") == ("a", "c", "y", "b", "y")
    db, keys = deployment
    with _client(db, keys, history_limit=5) as c:
        user = "repeat-viewer"
        first = recs(c, user, k=3, model="popularity")["items"][0]["item_id"]
        top = next(i["item_id"] for i in recs(c, USER, k=5)["items"] if i["item_id"] != first)
        bought = {"user_id": user, "item_id": first, "event_type": "purchase", "value": 1.0}
        views = [{"user_id": user, "item_id": top, "event_type": "view"} for _ in range(20)]
        start = datetime.now(UTC) - timedelta(minutes=5)
        for n, ev in enumerate([bought, *views]):
            ev["timestamp"] = (start + timedelta(seconds=n)).isoformat()
        res = call(c, "POST", "/events", "write", json={"events": [bought, *views]})
        assert res.json()["stored"] == 21
        assert service(c).histories.get(user) == (first, *[top] * 5)
        for model in ("popularity", "ease"):
            shown = {i["item_id"] for i in recs(c, user, k=30, model=model)["items"]}
            assert not shown & {first, top}, model


# -- damaged artifacts, versions copied by hand, promotion checks ----------------------------------
def _health_versions(c: TestClient) -> dict[str, str]:
    return call(c, "GET", "/health", None).json()["recommenders"]


def test_a_damaged_version_is_listed_with_its_error_not_a_500(client):
    """Broken JSON (or a field of the wrong type) in one version's meta.json, even one not
    served, was a 500 for GET /models, the dashboard's GET /models/current and its promote."""
    svc = service(client)
    meta = svc.models.arts.root / "rec-ease" / "v0002" / "meta.json"
    good = meta.read_text()
    meta.write_text('{"version": "v0002", "name": ')
    res = call(client, "GET", "/models", "admin")
    assert res.status_code == 200, res.text
    ease = {m["name"]: m for m in res.json()["models"]}["rec-ease"]
    assert [v["version"] for v in ease["versions"]] == ["v0001", "v0002"]
    assert ease["versions"][1]["created_at"] is None
    rows = ease["versions"]  # the API says why, naming the file
    assert rows[0]["error"] is None and rows[1]["error"].startswith(f"{meta}: damaged metadata")
    assert call(client, "GET", "/models/current").status_code == 200
    res = call(client, "POST", "/models/ease/promote", "admin", json={"version": "v0002"})
    assert res.status_code == 500 and str(meta) in res.json()["message"]
    assert res.json()["message"].endswith("still serving v0001")
    assert _health_versions(client)["ease"] == "v0001"
    meta.write_text(json.dumps({**json.loads(good), "fit_seconds": "about 2 s"}))
    res = call(client, "GET", "/models", "admin")
    assert res.status_code == 200, res.text
    ease = {m["name"]: m for m in res.json()["models"]}["rec-ease"]
    assert ease["versions"][1]["fit_seconds"] is None
    assert ease["versions"][1]["created_at"] == json.loads(good)["created_at"]
    assert (
        ease["versions"][1]["error"] == f"{meta}: left out, of the wrong type: fit_seconds is a str"
    )


def test_a_version_copied_from_another_model_is_not_served_under_its_name(client):
    """A copy of rec-ease/v0001 promoted as rec-popularity/v0002 served EASE's scores as
    "popularity", and an edited "version" in meta.json was reported as the served version."""
    svc = service(client)
    root = svc.models.arts.root
    shutil.copytree(root / "rec-ease" / "v0001", root / "rec-popularity" / "v0002")
    res = call(client, "POST", "/models/popularity/promote", "admin", json={"version": "v0002"})
    assert res.status_code == 500
    assert (
        f"{root / 'rec-popularity' / 'v0002' / 'meta.json'} describes 'rec-ease'"
        in (res.json()["message"])
    )
    assert _health_versions(client)["popularity"] == "v0001"
    assert svc.models.arts.current("rec-popularity") == "v0001"
    meta = root / "rec-popularity" / "v0001" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": "v0009"}))
    res = call(client, "POST", "/models/popularity/promote", "admin", json={"version": "v0001"})
    assert res.status_code == 500 and "'v0009'" in res.json()["message"]
    assert _health_versions(client)["popularity"] == "v0001"  # never "v0009"


def test_promoting_a_value_model_that_is_not_served_checks_it_first(client):
    """Only the served value model was loaded before its pointer moved: a truncated pickle,
    or a recommender, became another value model's current version with a 200."""
    svc = service(client)
    arts = svc.models.arts
    model, _ = arts.load("value-naive")
    arts.save("value-bgnbd", model, {"model": "bgnbd"})  # v0001, current; naive is served
    arts.save("value-bgnbd", model, promote=False)
    pkl = arts.root / "value-bgnbd" / "v0002" / "model.pkl"
    pkl.write_bytes(pkl.read_bytes()[:100])
    arts.save("value-bgnbd", EASERecommender(), promote=False)
    for version, why in (("v0002", "UnpicklingError"), ("v0003", "not a ValueModel")):
        res = call(client, "POST", "/models/bgnbd/promote", "admin", json={"version": version})
        assert res.status_code == 500 and why in res.json()["message"], res.text
        assert res.json()["message"].endswith("value-bgnbd stays at v0001")
        assert arts.current("value-bgnbd") == "v0001"
    arts.save("value-bgnbd", model, promote=False)
    res = call(client, "POST", "/models/bgnbd/promote", "admin", json={"version": "v0004"})
    assert res.status_code == 200 and arts.current("value-bgnbd") == "v0004"
    # bgnbd is preferred to naive (no value_model setting): swapped in, as a restart would
    assert (svc.models.value.artifact, svc.models.value.version) == ("value-bgnbd", "v0004")


def test_model_names_are_case_insensitive_in_admin_calls_as_in_recommendations(client):
    res = call(client, "POST", "/models/EASE/promote", "admin", json={"version": "2"})
    assert res.status_code == 200, res.text
    assert res.json()["name"] == "rec-ease" and recs(client, USER, model="EASE")["version"] == (
        "v0002"
    )
    assert call(client, "POST", "/models/Rec-Ease/rollback", "admin").status_code == 200


def test_data_fingerprint_keeps_its_old_value_on_a_small_store_on_both_backends(store):
    """The exact (DECIMAL) value totals give the hash the DOUBLE sums gave on a small store,
    so its saved artifacts do not all look stale; on PostgreSQL the SQL runs on the mirror."""
    from valuerec.artifacts import data_fingerprint

    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u3"],
            "event_type": ["purchase", "view", "purchase", "purchase"],
            "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
            "value": [0.1, None, 0.2, 1234567.89],
        }
    )
    ingest(store, frame, "events")
    assert data_fingerprint(store) == "444d6c2b9d16320c"  # the hash of earlier releases


def test_log_span_leaves_out_the_settings_exposure_types(store):
    """train's default holdout is half this span: exposures written back today stretched it
    from the log's weeks to years (and so the holdout past every purchase)."""
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u2", "u3"],
            "event_type": ["purchase", "view", "exposure", "impression", "purchase"],
            "timestamp": ["2024-01-01", "2024-01-11", "2027-01-01", "2026-01-01", "2023-12-31"],
        }
    )
    ingest(store, frame, "events")
    assert Repository(store).log_span_days() == 732.0  # impression is no exposure here
    assert Repository(store, ("impression", "exposure")).log_span_days() == 11.0


@pytest.mark.parametrize(
    "path, field",
    [
        ("/users/%20u1/recommendations", "user_id"),
        ("/users/u1%09/recommendations", "user_id"),
        ("/users/%C2%A0/recommendations", "user_id"),  # blank: NBSP only
        ("/users/u%001/recommendations", "user_id"),
        ("/users/%20u1", "user_id"),
        ("/users/%20u1/value", "user_id"),
        ("/users/%20u1/purchases", "user_id"),
        ("/items/%20i1", "item_id"),
        ("/items/i%001/similar", "item_id"),
    ],
)
def test_path_ids_no_write_could_store_are_a_422_naming_the_field(client, path, field):
    """GET /users/%20u1/recommendations?write_back=true served a cold-start " u1" and stored
    its exposures under "u1", another user; a NUL id was stored on DuckDB although the API
    refuses NUL text everywhere else, and a blank one had its exposures quarantined."""
    client.app.state.fast_path = False  # the route's contract (the fast path defers to it)
    before = stored_events(client, "u1", "exposure")
    res = call(client, "GET", path, params={"write_back": "true"})
    assert res.status_code == 422, res.text
    assert [(d["location"], d["field"]) for d in res.json()["details"]] == [("path", field)]
    service(client).exposures.flush()
    assert stored_events(client, "u1", "exposure") == before
    assert call(client, "GET", "/users/u1/recommendations").status_code == 200


def test_configured_model_names_are_normalised_and_a_missing_value_model_is_logged(
    deployment, caplog
):
    """default_model "Rec-Popularity" named no loaded model, so requests naming none got
    ease; value_model "value-naive" looked for value-value-naive; and a value_model without
    an artifact was said only in the 503 of the first value request, not at start-up."""
    db, keys = deployment
    with _client(db, keys, default_model="Rec-Popularity", value_model="Value-Naive") as c:
        assert recs(c, USER, k=1)["model"] == "popularity"
        res = call(c, "GET", f"/users/{USER}/value")
        assert res.status_code == 200 and res.json()["model"] == "naive"
    with (
        caplog.at_level("WARNING", logger="valuerec.serve"),
        _client(db, keys, value_model="bogus"),
    ):
        pass
    (message,) = [r.getMessage() for r in caplog.records if "value_model" in r.getMessage()]
    assert "'bogus' is not served" in message and "value-naive" in message


@pytest.mark.parametrize("user", ["%20u1", "u1%09", "%C2%A0", "u%001"])
def test_the_fast_path_leaves_path_ids_the_route_refuses_to_it(reader, user):
    """The fast path answered " u1" (cold start; its write_back exposures stored under "u1")
    where the route answers 422."""
    before = _fast_path_count(reader)
    res = call(reader, "GET", f"/users/{user}/recommendations", params={"write_back": "true"})
    assert res.status_code == 422 and res.json()["details"][0]["field"] == "user_id"
    assert _fast_path_count(reader) == before
