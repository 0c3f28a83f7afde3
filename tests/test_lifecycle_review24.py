"""Model lifecycle across processes (review 24, R7): which value model a server picks when a
preferred one has no current version or cannot load, following a version repaired after a
failed load, a damaged HISTORY file, and what ``GET /models`` says about a pointer it cannot
serve.

The deployment is :mod:`test_serve`'s small shop, on DuckDB only: what is tested here is the
artifact folder and the registry, which do not depend on the store's backend. Followed
pointers are read by calling ``follow_current`` by hand (what the follow thread runs every
``sync_seconds``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import test_serve
from test_serve import _client, call, service
from valuerec.artifacts import ArtifactStore, DamagedArtifactError, default_root
from valuerec.data.store import Store

# test_serve's fixtures, found by pytest under these names in this module
databases = test_serve.databases
template = test_serve.template
deployment = test_serve.deployment
client = test_serve.client

USER = "u1"


@pytest.fixture(scope="module")
def backend() -> str:
    """The artifact folder behaves the same beside either store: DuckDB is enough."""
    return "duckdb"


def _naive(db: str) -> object:
    """The shop's fitted value model, to save under other value artifact names."""
    model, _ = ArtifactStore(default_root(db)).load("value-naive")
    return model


def _truncate(path: Path) -> bytes:
    """Cut a pickle short (a copy that stopped half way); returns the good bytes."""
    good = path.read_bytes()
    path.write_bytes(good[:100])
    return good


def _value(c) -> tuple[str, str]:
    res = call(c, "GET", f"/users/{USER}/value")
    assert res.status_code == 200, res.text
    return res.json()["model"], res.json()["version"]


def _models(c) -> dict[str, dict]:
    res = call(c, "GET", "/models", "admin")
    assert res.status_code == 200, res.text
    return {m["name"]: m for m in res.json()["models"]}


# -- bug 1: the value model a server picks --------------------------------------------------------
def test_a_shadow_or_broken_preferred_value_model_leaves_the_next_one_served(deployment, caplog):
    """A shadow value-pareto (saved with promote=False: no CURRENT) and a value-bgnbd whose
    current pickle is truncated both come before naive in the preference order: a restart
    served no value model at all (503 on every value endpoint)."""
    db, keys = deployment
    arts = ArtifactStore(default_root(db))
    model = _naive(db)
    arts.save("value-pareto", model, {"model": "pareto"}, promote=False)
    arts.save("value-bgnbd", model, {"model": "bgnbd"})
    _truncate(arts.root / "value-bgnbd" / "v0001" / "model.pkl")
    with caplog.at_level("WARNING", logger="valuerec.serve"), _client(db, keys) as c:
        assert _value(c) == ("naive", "v0001")
        assert service(c).models.follow_current() == []  # what a restart would serve
        assert _value(c) == ("naive", "v0001")
    logged = [r.getMessage() for r in caplog.records]
    assert sum("value-bgnbd" in m and "UnpicklingError" in m for m in logged) == 1, logged


def test_an_explicit_value_model_that_cannot_load_is_not_replaced(deployment):
    """value_model names one artifact: it is served or nothing is (the 503 says why)."""
    db, keys = deployment
    arts = ArtifactStore(default_root(db))
    arts.save("value-bgnbd", _naive(db), {"model": "bgnbd"})
    _truncate(arts.root / "value-bgnbd" / "v0001" / "model.pkl")
    with _client(db, keys, value_model="bgnbd") as c:
        res = call(c, "GET", f"/users/{USER}/value")
        assert res.status_code == 503
        assert "cannot load value-bgnbd" in res.json()["message"]
        assert "UnpicklingError" in res.json()["message"]


def test_following_skips_a_shadow_value_model_for_the_next_preferred_one(client):
    """A shadow value-pareto hid a value-bgnbd promoted later: the server kept naive, though
    a restart serves bgnbd."""
    svc = service(client)
    arts = svc.models.arts
    model, _ = arts.load("value-naive")
    arts.save("value-pareto", model, {"model": "pareto"}, promote=False)
    assert svc.models.follow_current() == []
    arts.save("value-bgnbd", model, {"model": "bgnbd"})
    assert svc.models.follow_current() == ["value-bgnbd"]
    assert _value(client) == ("bgnbd", "v0001")


def test_a_served_value_model_whose_new_version_is_broken_keeps_its_old_version(client):
    """The served artifact's old version is kept (README: "the old one kept"), not swapped for
    the next artifact of the preference order."""
    svc = service(client)
    arts = svc.models.arts
    model, _ = arts.load("value-naive")
    arts.save("value-bgnbd", model, {"model": "bgnbd"})
    assert svc.models.follow_current() == ["value-bgnbd"]
    arts.save("value-bgnbd", model, {"model": "bgnbd"})
    _truncate(arts.root / "value-bgnbd" / "v0002" / "model.pkl")
    assert svc.models.follow_current() == []
    assert _value(client) == ("bgnbd", "v0001")


# -- bug 2: a version that failed once ----------------------------------------------------------
def test_a_repaired_version_made_current_again_is_followed(client, caplog):
    """A version that failed to load was never tried again, even after its repair and CURRENT
    moving away and back: the server served another version than CURRENT until a restart."""
    svc = service(client)
    arts = svc.models.arts
    model, _ = arts.load("rec-ease", "v0001")
    assert arts.save("rec-ease", model, {"model": "ease"}) == "v0003"
    pkl = arts.root / "rec-ease" / "v0003" / "model.pkl"
    good = _truncate(pkl)
    with caplog.at_level("WARNING", logger="valuerec.serve"):
        assert svc.models.follow_current() == []
        assert svc.models.follow_current() == []  # an unchanged pointer: not tried again
    assert len([r for r in caplog.records if "rec-ease v0003" in r.getMessage()]) == 1
    assert svc.models.recommenders["ease"].version == "v0001"
    pkl.write_bytes(good)
    arts.promote("rec-ease", "v0002")
    assert svc.models.follow_current() == ["rec-ease"]
    arts.promote("rec-ease", "v0003")
    assert svc.models.follow_current() == ["rec-ease"]
    assert svc.models.recommenders["ease"].version == "v0003"


def test_a_version_repaired_in_place_is_tried_again(client):
    """The files of the failed version changed (copied again): it is tried on the next poll."""
    svc = service(client)
    arts = svc.models.arts
    model, _ = arts.load("rec-ease", "v0001")
    arts.save("rec-ease", model, {"model": "ease"})
    pkl = arts.root / "rec-ease" / "v0003" / "model.pkl"
    good = _truncate(pkl)
    assert svc.models.follow_current() == []
    pkl.write_bytes(good)
    assert svc.models.follow_current() == ["rec-ease"]
    assert svc.models.recommenders["ease"].version == "v0003"


# -- bug 3: a damaged HISTORY --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "why"),
    [('{"action": "promote", "version": "v00', "not JSON"), ("[]", "a JSON list, not an object")],
)
def test_a_damaged_history_line_is_named_and_saving_still_works(tmp_path, line, why):
    """A torn line was a bare JSONDecodeError (a list an AttributeError) from every save,
    rollback and API rollback, naming neither the file nor the line."""
    arts = ArtifactStore(tmp_path / "shop.duckdb.models")
    arts.save("m", {"w": 1})
    arts.save("m", {"w": 2})
    path = arts.root / "m" / "HISTORY"
    with path.open("a") as fh:
        fh.write(line + "\n")
    where = re.escape(f"{path}, line 3")
    with pytest.raises(DamagedArtifactError, match=where + f".*{re.escape(why)}"):
        arts.history("m")
    with pytest.raises(DamagedArtifactError, match=where):
        arts.rollback("m")
    with pytest.warns(UserWarning, match=where + ".*skipped"):
        assert arts.save("m", {"w": 3}) == "v0003"
    assert arts.current("m") == "v0003"


def test_an_api_rollback_over_a_damaged_history_says_which_file_and_line(client):
    svc = service(client)
    path = svc.models.arts.root / "rec-ease" / "HISTORY"
    with path.open("a") as fh:
        fh.write('{"action": "prom\n')
    res = call(client, "POST", "/models/rec-ease/rollback", "admin")
    assert res.status_code == 500, res.text
    message = res.json()["message"]
    assert f"{path}, line 2" in message and "still serving v0001" in message, message
    assert svc.models.arts.current("rec-ease") == "v0001"


# -- bug 4: what GET /models says ----------------------------------------------------------------
def test_models_say_why_current_is_null_or_not_served(client):
    """CURRENT naming a missing version or holding garbage, and a current version that failed
    to load, were listed as null / a differing serving_version with no reason; the dashboard's
    /models/current showed the metrics and date of the version not served."""
    svc = service(client)
    arts = svc.models.arts
    (arts.root / "rec-ease" / "CURRENT").write_text("v0042\n")
    (arts.root / "rec-popularity" / "CURRENT").write_text("latest\n")
    model, meta1 = arts.load("value-naive")
    arts.save("value-naive", model, {"model": "naive", "metrics": {"gini": 0.123}})
    _truncate(arts.root / "value-naive" / "v0002" / "model.pkl")
    assert svc.models.follow_current() == []
    models = _models(client)
    ease, pop, naive = models["rec-ease"], models["rec-popularity"], models["value-naive"]
    assert (ease["current_version"], ease["serving_version"]) == (None, "v0001")
    assert "current version v0042 is missing" in ease["error"], ease
    assert (pop["current_version"], pop["serving_version"]) == (None, "v0001")
    assert "not a version: 'latest'" in pop["error"], pop
    assert (naive["current_version"], naive["serving_version"]) == ("v0002", "v0001")
    assert naive["error"].startswith("cannot load v0002: UnpicklingError"), naive
    assert naive["error"].endswith("; still serving v0001"), naive
    res = call(client, "GET", "/models/current")
    assert res.status_code == 200, res.text
    current = {m["name"]: m for m in res.json()["models"]}["value-naive"]
    assert current["created_at"] == meta1["created_at"]
    assert current["metrics"] == meta1.get("metrics") != {"gini": 0.123}
    assert current["error"] == naive["error"]
    schema = call(client, "GET", "/openapi.json").json()["components"]["schemas"]
    assert "error" in schema["ModelInfo"]["properties"]
    assert "null when" in schema["ModelInfo"]["properties"]["current_version"]["description"]


def test_models_list_no_error_for_what_is_served_as_current(client):
    models = _models(client)
    assert {n: m["error"] for n, m in models.items()} == {
        "rec-ease": None,
        "rec-popularity": None,
        "value-naive": None,
    }


# -- bug 5: an artifact folder removed while the server runs -------------------------------------
def test_a_removed_recommender_is_no_longer_served(client):
    """A restart would not serve it, and it could no longer be promoted or rolled back."""
    svc = service(client)
    shutil.rmtree(svc.models.arts.root / "rec-popularity")
    assert svc.models.follow_current() == ["rec-popularity"]
    assert sorted(svc.models.recommenders) == ["ease"]
    res = call(client, "GET", f"/users/{USER}/recommendations", params={"model": "popularity"})
    assert res.status_code == 422, res.text
    assert json.loads(res.text)["details"][0]["field"] == "model"


# -- review 24, R8 -------------------------------------------------------------------------------
def _without_purchases(db: str) -> pd.Timestamp:
    """Delete the store's purchase events (a shop that has sold nothing yet); returns the
    time of the last event left."""
    with Store(db) as store:
        store.con.execute("DELETE FROM events WHERE event_type = 'purchase'")
        (last,) = store.con.execute("SELECT max(timestamp) FROM events").fetchone()
    return pd.Timestamp(last)


def _buy(c, last: pd.Timestamp, users: tuple[str, ...] = (USER, "newbie")) -> None:
    """Post three purchases per user in the days before ``last``."""
    events = [
        {"user_id": u, "item_id": "i1", "event_type": "purchase", "value": 50.0,
         "timestamp": (last - pd.Timedelta(days=d)).isoformat()}
        for u in users for d in (1, 5, 12)
    ]  # fmt: skip
    res = call(c, "POST", "/events", "write", json={"events": events})
    assert res.json()["stored"] == len(events), res.text


@pytest.mark.parametrize("refresh", [0.01, 0.0])
def test_a_value_model_waiting_for_purchases_is_served_once_they_are_stored(
    deployment, caplog, monkeypatch, refresh
):
    """A value model whose snapshot failed because the store had no purchase events yet was
    remembered as unloadable (keyed on its files, which never change): it stayed a 503 until a
    restart, though purchases had arrived. It is not unpickled or logged again by every poll,
    and the first purchases serve it (a restart's choice, whatever ``value_refresh_seconds``)."""
    db, keys = deployment
    last = _without_purchases(db)
    with (
        caplog.at_level("WARNING", logger="valuerec.serve"),
        _client(db, keys, sync_seconds=0, value_refresh_seconds=refresh) as c,
    ):
        svc = service(c)
        res = call(c, "GET", f"/users/{USER}/value")
        assert res.status_code == 503, res.text
        assert "no purchase events to predict value from" in res.json()["message"]
        loads: list[str] = []
        real_load = svc.models.arts.load
        monkeypatch.setattr(
            svc.models.arts, "load", lambda a, v=None: loads.append(a) or real_load(a, v)
        )
        assert svc.models.follow_current() == []
        assert svc.models.follow_current() == []
        assert loads == [], "a data failure was unpickled again by a follow poll"
        error = _models(c)["value-naive"]["error"]
        assert error is not None and "no purchase events" in error, error
        _buy(c, last)
        svc.wait_value_refresh(60)
        assert _value(c) == ("naive", "v0001")
        assert loads == [], "the model waiting for purchases was unpickled again"
        assert _models(c)["value-naive"]["error"] is None
        newbie = call(c, "GET", "/users/newbie/value")
        assert newbie.status_code == 200 and newbie.json()["ltv"] > 0, newbie.text
    logged = [r.getMessage() for r in caplog.records if "no purchase events" in r.getMessage()]
    assert len(logged) == 1, logged
    with _client(db, keys) as fresh:  # what a restart serves
        assert _value(fresh) == ("naive", "v0001")


def test_a_broken_value_model_is_not_retried_when_purchases_are_stored(deployment, caplog):
    """Only the store's failure waits for purchases: an unpickling failure stays remembered."""
    db, keys = deployment
    last = _without_purchases(db)
    _truncate(ArtifactStore(default_root(db)).root / "value-naive" / "v0001" / "model.pkl")
    with caplog.at_level("WARNING", logger="valuerec.serve"), _client(db, keys) as c:
        svc = service(c)
        _buy(c, last)
        svc.wait_value_refresh(60)
        assert svc.models.follow_current() == []
        res = call(c, "GET", f"/users/{USER}/value")
        assert res.status_code == 503 and "UnpicklingError" in res.json()["message"], res.text
    logged = [r.getMessage() for r in caplog.records if "UnpicklingError" in r.getMessage()]
    assert len(logged) == 1, logged


def test_promoting_the_preferred_value_model_through_the_api_serves_it(deployment):
    """Without value_model, bgnbd was served because ensemble's current version is broken;
    promoting a good ensemble version through this server moved the pointer but kept bgnbd
    (for ever with sync_seconds=0), though a restart serves ensemble."""
    db, keys = deployment
    arts = ArtifactStore(default_root(db))
    model = _naive(db)
    arts.save("value-bgnbd", model, {"model": "bgnbd"})
    arts.save("value-ensemble", model, {"model": "ensemble"})
    _truncate(arts.root / "value-ensemble" / "v0001" / "model.pkl")
    arts.save("value-ensemble", model, {"model": "ensemble"}, promote=False)
    arts.save("value-pareto", model, {"model": "pareto"}, promote=False)  # a shadow
    with _client(db, keys, sync_seconds=0) as c:
        assert _value(c) == ("bgnbd", "v0001")
        res = call(c, "POST", "/models/pareto/promote", "admin", json={"version": "v0001"})
        assert res.status_code == 200, res.text
        assert _value(c) == ("pareto", "v0001")
        res = call(c, "POST", "/models/ensemble/promote", "admin", json={"version": "v0002"})
        assert res.status_code == 200, res.text
        assert _value(c) == ("ensemble", "v0002")
        res = call(c, "POST", "/models/bgnbd/promote", "admin", json={"version": "v0001"})
        assert res.status_code == 200, res.text  # a later one only moves its pointer
        assert _value(c) == ("ensemble", "v0002")
        models = _models(c)
        assert models["value-ensemble"]["serving_version"] == "v0002"
        assert models["value-ensemble"]["error"] is None
    with _client(db, keys) as fresh:
        assert _value(fresh) == ("ensemble", "v0002")


def test_an_explicit_value_model_is_not_replaced_by_a_preferred_promotion(deployment):
    db, keys = deployment
    arts = ArtifactStore(default_root(db))
    arts.save("value-ensemble", _naive(db), {"model": "ensemble"}, promote=False)
    with _client(db, keys, sync_seconds=0, value_model="naive") as c:
        res = call(c, "POST", "/models/ensemble/promote", "admin", json={"version": "v0001"})
        assert res.status_code == 200, res.text
        assert _value(c) == ("naive", "v0001")
