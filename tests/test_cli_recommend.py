"""``valuerec recommend``: evaluate, fit, recommend for a user, similar items, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from valuerec.cli import app
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.recommend.rerank import ItemValues

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    data = generate(users=300, items=60, days=120, holdout_days=10, seed=2)
    path = tmp_path_factory.mktemp("rec") / "shop.duckdb"
    with Store(path) as store:
        ingest(store, data.items, "items")
        ingest(store, data.events, "events")
    return str(path)


def _run(*args: str):
    return runner.invoke(app, ["recommend", *args], catch_exceptions=False)


def test_evaluate_reports_every_model(db):
    res = _run("evaluate", "--db", db, "--models", "popularity,itemknn,ease", "--json")
    assert res.exit_code == 0, res.output
    models = json.loads(res.stdout)["models"]
    assert set(models) == {"popularity", "itemknn", "ease"}
    assert all(0 <= m["ndcg@10"] <= 1 for m in models.values())
    loo = _run("evaluate", "--db", db, "--models", "ease", "--protocol", "leave-one-out", "--json")
    assert "ndcg@10_unmasked" in json.loads(loo.stdout)["models"]["ease"]


def test_fit_then_recommend_with_titles_and_reasons(db):
    assert _run("fit", "--db", db, "--models", "ease").exit_code == 0
    with Store(db, read_only=True) as store:
        user = store.query("SELECT user_id FROM events LIMIT 1")["user_id"][0]
        seen = set(store.events([user])["item_id"])
        titles = set(store.items()["title"])
    res = _run("for", user, "--db", db, "--model", "ease", "-k", "5", "--json")
    rows = json.loads(res.stdout)
    assert len(rows) == 5 and not any(r["cold_start"] for r in rows)
    assert not {r["item_id"] for r in rows} & seen
    assert all(r["title"] in titles for r in rows)
    assert all(r["reason"].startswith("similar to ") for r in rows)
    cold = json.loads(_run("for", "nobody", "--db", db, "--model", "ease", "--json").stdout)
    assert all(r["cold_start"] for r in cold)
    sim = json.loads(
        _run(
            "similar", rows[0]["item_id"], "--db", db, "--model", "ease", "-k", "3", "--json"
        ).stdout
    )
    assert len(sim) == 3 and rows[0]["item_id"] not in {s["similar_item_id"] for s in sim}


def test_value_weight_reranks_relevance_candidates_by_expected_revenue(db):
    assert _run("fit", "--db", db, "--models", "ease").exit_code == 0
    with Store(db, read_only=True) as store:
        user = store.query("SELECT user_id FROM events LIMIT 1")["user_id"][0]
    plain = json.loads(_run("for", user, "--db", db, "-k", "10", "--json").stdout)
    zero = json.loads(
        _run("for", user, "--db", db, "-k", "10", "--value-weight", "0", "--json").stdout
    )
    assert [r["item_id"] for r in zero] == [r["item_id"] for r in plain]
    blended = json.loads(
        _run(
            "for",
            user,
            "--db",
            db,
            "-k",
            "10",
            "--value-weight",
            "5",
            "--candidates",
            "40",
            "--json",
        ).stdout
    )
    assert len(blended) == 10 and [r["rank"] for r in blended] == list(range(1, 11))
    # the blend pulls in candidates from below the relevance top 10, worth more than the
    # relevance top 10 by the store's own price and purchase rates
    assert max(r["relevance_rank"] for r in blended) > 10
    with Store(db, read_only=True) as store:
        values = ItemValues.from_store(store)
    top = values.take([r["item_id"] for r in plain])
    assert np.mean([r["price"] * r["p_purchase"] for r in blended]) > np.mean(
        top.price * top.p_purchase
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--models", "nope"], "unknown recommender"),
        (["for", "u1", "--model", "als"], "recommend fit --models als"),
        (["evaluate", "--protocol", "sideways"], "unknown protocol"),
        (["similar", "no-such-item"], "unknown item"),
        # a known item with a bad k is a bad k, not an unknown item
        (["similar", "KNOWN", "-k", "0"], "greater than or equal to 1"),
        (["for", "u1", "-k", "0"], "greater than or equal to 1"),
        (["evaluate", "-k", "0"], "greater than or equal to 1"),  # before fitting anything
        (["fit", "--event-types", "nope"], "cart (591), purchase (591)"),
    ],
)
def test_errors_exit_2_with_a_message(db, args, message):
    if args[0] == "similar":
        _run("fit", "--db", db, "--models", "ease")
    if "KNOWN" in args:
        with Store(db, read_only=True) as store:
            known = store.query("SELECT item_id FROM events WHERE item_id IS NOT NULL LIMIT 1")[
                "item_id"
            ][0]
        args = [known if a == "KNOWN" else a for a in args]
    res = runner.invoke(app, ["recommend", *args, "--db", db])
    assert res.exit_code == 2 and message in res.output


@pytest.fixture(scope="module")
def promo_db(tmp_path_factory) -> str:
    """Purchases of a0..a5 (no titles for a0) and a 'promo' item every user was only shown."""
    rows = [(f"u{u}", f"a{(u + j) % 6}", "purchase", f"2024-01-{1 + j:02d}")
            for u in range(12) for j in range(3)]  # fmt: skip
    rows += [(f"u{u}", "promo", "exposure", "2024-01-05") for u in range(12)] * 2
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    titles = [None] + [f"Album {j}" for j in range(1, 6)] + ["Promo"]
    items = pd.DataFrame({"item_id": [f"a{j}" for j in range(6)] + ["promo"], "title": titles})
    path = tmp_path_factory.mktemp("promo") / "shop.duckdb"
    with Store(path) as store:
        ingest(store, items, "items")
        ingest(store, events, "events")
    return str(path)


def test_exposures_are_what_a_user_was_shown_not_what_they_chose(promo_db):
    """fit and evaluate learn from the interest event types, as `valuerec train` does: a
    logged exposure is neither a training interaction nor a test target."""
    assert _run("fit", "--db", promo_db, "--models", "popularity").exit_code == 0
    rows = json.loads(_run("for", "newcomer", "--db", promo_db, "--model", "popularity",
                           "--json").stdout)  # fmt: skip
    assert "promo" not in {r["item_id"] for r in rows}
    assert _run("fit", "--db", promo_db, "--models", "popularity",
                "--event-types", "purchase,exposure").exit_code == 0  # fmt: skip
    rows = json.loads(_run("for", "newcomer", "--db", promo_db, "--model", "popularity",
                           "--json").stdout)  # fmt: skip
    assert rows[0]["item_id"] == "promo"  # shown to all 12 users: the most "popular"
    with Store(promo_db, read_only=True) as store:
        from valuerec.cli_recommend import _interactions

        assert "promo" not in set(_interactions(store, None).item_ids)
        assert "promo" in set(_interactions(store, "purchase, Exposure").item_ids)


def test_an_item_without_a_title_is_named_by_its_id(promo_db):
    assert _run("fit", "--db", promo_db, "--models", "itemknn").exit_code == 0
    rows = json.loads(_run("for", "u1", "--db", promo_db, "--model", "itemknn", "-k", "3",
                           "--json").stdout)  # fmt: skip
    reasons = " ".join(r["reason"] for r in rows)
    assert "nan" not in reasons and "nan" not in {str(r["title"]) for r in rows}
    # u1 bought a1, a2, a3; a0 has no title, so a reason that names it names its id
    untitled = [r for r in rows if r["item_id"] == "a0"]
    assert untitled and untitled[0]["title"] is None
    table = _run("for", "u1", "--db", promo_db, "--model", "itemknn", "-k", "3")
    assert table.exit_code == 0 and "nan" not in table.stdout
    similar = _run("similar", "a0", "--db", promo_db, "--model", "itemknn")
    title = similar.stdout.splitlines()[0].strip()  # no empty "()" for an untitled item
    assert similar.exit_code == 0 and title == "itemknn: items similar to a0"


def test_a_model_that_cannot_use_the_data_is_a_clear_error(tmp_path):
    path = tmp_path / "no-items.duckdb"
    events = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"],
                           "event_type": ["view", "view"],
                           "timestamp": ["2024-01-01", "2024-01-02"]})  # fmt: skip
    with Store(path) as store:
        ingest(store, events, "events")
    for command in ("evaluate", "fit"):
        res = runner.invoke(app, ["recommend", command, "--db", str(path), "--models", "content"])
        assert res.exit_code == 1, res.output
        assert "content: " in res.output and "Traceback" not in res.output


def _three_viewers(path) -> None:
    """A store of three users' views of four items, without an items table."""
    events = pd.DataFrame(
        {
            "user_id": list("aaaabbbbcccc"),
            "item_id": list("wxyzxyzwyzwx"),
            "event_type": "view",
            "timestamp": pd.date_range("2024-01-01", periods=12, freq="D"),
        }
    )
    with Store(path) as store:
        ingest(store, events, "events")


def test_one_model_that_fails_costs_the_others_nothing(tmp_path):
    """`--models popularity,content` on a store without items: content fails. Evaluate threw
    away popularity's figures; fit had saved and made current what came before it, while
    printing nothing but the error. Both now report every model and exit 1."""
    path = tmp_path / "no-items.duckdb"
    _three_viewers(path)
    both = ["--db", str(path), "--json", "--models", "popularity,content"]
    res = runner.invoke(app, ["recommend", "evaluate", *both, "--protocol", "leave-one-out"])
    assert res.exit_code == 1, res.output
    body = json.loads(res.stdout)["models"]
    assert set(body) == {"popularity", "content"} and "ndcg@10" in body["popularity"]
    assert "items table" in body["content"]["error"]
    res = runner.invoke(app, ["recommend", "fit", *both])
    assert res.exit_code == 1 and json.loads(res.stdout) == {"popularity": "v0001"}
    assert "content: " in res.stderr


def test_a_value_weight_that_cannot_change_anything_says_so(tmp_path):
    """Views only, no prices: every candidate gets one price and one propensity, so the
    blend silently returned the relevance order; it now says why."""
    path = str(tmp_path / "views.duckdb")
    rng = np.random.default_rng(1)
    events = pd.DataFrame(
        {
            "user_id": [f"u{i % 12}" for i in range(120)],
            "item_id": [f"i{j}" for j in rng.integers(0, 15, 120)],
            "event_type": "view",
            "timestamp": pd.date_range("2024-01-01", periods=120, freq="h"),
        }
    )
    with Store(path) as store:
        ingest(store, events, "events")
    assert _run("fit", "--db", path, "--models", "ease").exit_code == 0
    res = _run("for", "u1", "--db", path, "--model", "ease", "--value-weight", "3")
    assert res.exit_code == 0 and "the value weight changes nothing here" in res.stderr
    plain = _run("for", "u1", "--db", path, "--model", "ease")
    assert "changes nothing" not in plain.stderr


def test_a_value_weight_for_a_user_without_candidates_is_an_empty_list(tmp_path):
    """A user who has seen every item has no candidates: the value-weight path crashed on
    the empty arrays (the same command without a weight printed an empty table)."""
    path = str(tmp_path / "all-seen.duckdb")
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["a", "b", "a"],
            "event_type": "view",
            "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03"],
        }
    )
    with Store(path) as store:
        ingest(store, events, "events")
    assert _run("fit", "--db", path, "--models", "popularity").exit_code == 0
    res = _run("for", "u1", "--db", path, "--model", "popularity", "--value-weight", "1", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == []
    # one candidate: nothing to say about a weight that has nothing to reorder
    one = _run("for", "u2", "--db", path, "--model", "popularity", "--value-weight", "1")
    assert one.exit_code == 0 and "changes nothing" not in one.stderr


def test_recommend_for_leaves_out_what_the_user_disliked(tmp_path):
    """A dislike keeps its item out of that user's list, as the server does: models learn
    from interest only, so without the store's negative events the CLI served the item the
    user had just refused (with and without a value weight, and to a user served cold)."""
    path = str(tmp_path / "dislikes.duckdb")
    views = [("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "b"), ("u3", "c")]
    events = pd.DataFrame(views, columns=["user_id", "item_id"]).assign(
        event_type="view", timestamp="2024-01-01"
    )
    no = pd.DataFrame(
        {
            "user_id": ["u1", "cold", "u2"],
            "item_id": ["b", "a", "a"],  # u2 dislikes an item it has viewed: seen anyway
            "event_type": ["dislike", "not_interested", "dislike"],
            "timestamp": "2024-01-02",
        }
    )
    with Store(path) as store:
        ingest(store, pd.concat([events, no]), "events")
    assert _run("fit", "--db", path, "--models", "popularity").exit_code == 0

    def items(user: str, *extra: str) -> list[str]:
        res = _run("for", user, "--db", path, "--model", "popularity", "-k", "2", "--json", *extra)
        assert res.exit_code == 0, res.output
        rows = json.loads(res.stdout)
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        return [r["item_id"] for r in rows]

    # popularity: a (3 users) > b (2) > c (1); u1 has seen a and refused b
    assert items("u1") == ["c"]
    assert items("u1", "--value-weight", "1") == ["c"]
    assert items("cold") == ["b", "c"]
    assert items("u3") == []


def test_a_damaged_or_foreign_artifact_is_one_error_line_naming_it(tmp_path):
    """A truncated pickle, or a value model's pickle in a recommender's folder, was a
    traceback (UnpicklingError, AttributeError: no attribute 'recommend'); now one line
    names the artifact, its version and folder."""
    from valuerec.artifacts import ArtifactStore, default_root

    data = generate(users=60, items=20, days=60, holdout_days=10, seed=3)
    db = str(tmp_path / "shop.duckdb")
    with Store(db) as store:
        ingest(store, data.events, "events")
    assert _run("fit", "--db", db, "--models", "popularity").exit_code == 0
    arts = ArtifactStore(default_root(db))
    folder = arts.root / "rec-popularity" / "v0001"

    def error(*args: str) -> str:
        res = runner.invoke(app, ["recommend", *args, "--db", db, "--model", "popularity"])
        assert res.exit_code == 2, res.output  # a traceback exits 1
        return "".join(res.output.split())  # rich wraps long paths anywhere

    item = str(data.events["item_id"].dropna().iloc[0])
    pickled = (folder / "model.pkl").read_bytes()
    (folder / "model.pkl").write_bytes(pickled[:100])
    for args in (("for", "u1"), ("similar", item)):
        assert f"cannotloadrec-popularityv0001({folder}):UnpicklingError" in error(*args)
    (folder / "model.pkl").write_bytes(pickled)
    arts.save("rec-popularity", {"a value model": "or anything else"})
    v2 = arts.root / "rec-popularity" / "v0002"
    assert f"rec-popularityv0002({v2})holdsadict,notarecommender" in error("for", "u1")
    (arts.root / "rec-popularity" / "CURRENT").write_text("garbage")
    out = error("for", "u1")
    assert f"{arts.root}/rec-popularity/CURRENT:notaversion:'garbage'" in out
    assert "recommendfit" not in out  # re-fitting is no advice for a broken pointer


def test_a_model_that_fails_with_a_bug_costs_the_others_nothing_either(tmp_path, monkeypatch):
    """Only a ValueError was caught per model: ease-side's TypeError on a JSON object in
    properties printed a traceback, and the models listed after it were never fitted."""
    from valuerec.recommend.popularity import PopularityRecommender

    path = tmp_path / "bug.duckdb"
    _three_viewers(path)

    def broken_fit(self, interactions):
        raise TypeError("unhashable type: 'dict'")

    monkeypatch.setattr(PopularityRecommender, "fit", broken_fit)
    both = ["--db", str(path), "--json", "--models", "popularity,ease"]
    res = runner.invoke(app, ["recommend", "fit", *both])
    assert res.exit_code == 1 and json.loads(res.stdout) == {"ease": "v0001"}
    assert "popularity: failed with TypeError: unhashable type" in res.stderr
    res = runner.invoke(app, ["recommend", "evaluate", *both, "--protocol", "leave-one-out"])
    body = json.loads(res.stdout)["models"]
    assert res.exit_code == 1 and "ndcg@10" in body["ease"]
    assert body["popularity"]["error"].startswith("failed with TypeError")


def test_recommend_for_and_similar_serve_what_the_server_serves(tmp_path):
    """The CLI scored a user from the model's training data: an item bought after the fit
    was recommended again, a new user with views was served cold, and an item hidden through
    the API was listed by `for` and `similar`. Now both read the store as the server does,
    and agree with it."""
    from fastapi.testclient import TestClient

    from valuerec.serve.app import create_app
    from valuerec.serve.keys import KeyStore, default_keys_path
    from valuerec.serve.repository import Repository

    data = generate(users=80, items=20, days=90, holdout_days=10, seed=4)
    db = str(tmp_path / "shop.duckdb")
    with Store(db) as store:
        ingest(store, data.events, "events")
        ingest(store, data.items, "items")
    assert _run("fit", "--db", db, "--models", "ease").exit_code == 0

    def cli(user: str) -> list[str]:
        res = _run("for", user, "--db", db, "--model", "ease", "-k", "5", "--json")
        assert res.exit_code == 0, res.output
        return [r["item_id"] for r in json.loads(res.stdout)]

    user = "u1"
    top = cli(user)[0]
    later = pd.DataFrame(
        {
            "user_id": [user, "newcomer", "newcomer"],
            "item_id": [top, "i1", "i2"],
            "event_type": ["purchase", "view", "view"],
            "timestamp": "2030-01-01",
        }
    )
    with Store(db) as store:
        ingest(store, later, "events")
        repo = Repository(store)
        repo.ensure_schema()
        hidden = cli("newcomer")[0]
        repo.set_hidden(hidden, True)
    assert top not in cli(user)
    assert hidden not in cli("newcomer") and not {"i1", "i2"} & set(cli("newcomer"))
    res = _run("for", "newcomer", "--db", db, "--model", "ease", "--json")
    assert not any(r["cold_start"] for r in json.loads(res.stdout))
    res = _run("similar", "i1", "--db", db, "--model", "ease", "-k", "19", "--json")
    assert res.exit_code == 0, res.output
    similar = [r["similar_item_id"] for r in json.loads(res.stdout)]
    assert hidden not in similar and len(similar) == 18  # every other item but the hidden one
    key = KeyStore(default_keys_path(db)).create("read", name="t")[0]
    with TestClient(create_app(db)) as client:
        for who in (user, "newcomer"):
            served = client.get(
                f"/users/{who}/recommendations", params={"k": 5, "model": "ease"},
                headers={"X-API-Key": key},
            ).json()["items"]  # fmt: skip
            assert [r["item_id"] for r in served] == cli(who)


def test_ties_reasons_pools_and_model_names_agree_between_cli_and_api(tmp_path):
    """Review U: the API let an arbitrary one of the items tied at the k-th score in (its top
    10 was not the first 10 of its top 15, nor the CLI's); the CLI said "similar to X" for
    popularity; its blend re-ranked 50 candidates where the server re-ranks max(50, 5k); and
    it refused ?model= spellings the API takes (EASE, rec-ease)."""
    from fastapi.testclient import TestClient

    from valuerec.serve.app import create_app
    from valuerec.serve.keys import KeyStore, default_keys_path

    # 30 items, each viewed by exactly two users: every popularity score ties
    rows = [(f"u{(2 * j + r) % 40}", f"i{j:02d}") for j in range(30) for r in range(2)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(
        event_type="view", timestamp="2024-01-01"
    )
    purchases = events.iloc[::3].assign(event_type="purchase", value=5.0, timestamp="2024-01-02")
    db = str(tmp_path / "ties.duckdb")
    with Store(db) as store:
        ingest(store, pd.concat([events, purchases]), "events")
    assert _run("fit", "--db", db, "--models", "popularity,ease").exit_code == 0
    key = KeyStore(default_keys_path(db)).create("read", name="t")[0]

    def cli(model: str, k: int, *extra: str) -> list[dict]:
        res = _run("for", "u1", "--db", db, "--model", model, "-k", str(k), "--json", *extra)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    with TestClient(create_app(db)) as client:

        def api(model: str, k: int, **params: object) -> list[dict]:
            res = client.get("/users/u1/recommendations", headers={"X-API-Key": key},
                             params={"k": k, "model": model, **params})  # fmt: skip
            assert res.status_code == 200, res.text
            return res.json()["items"]

        ten, fifteen = api("popularity", 10), api("popularity", 15)
        assert [r["item_id"] for r in ten] == [r["item_id"] for r in fifteen][:10]
        assert [r["item_id"] for r in ten] == [r["item_id"] for r in cli("popularity", 10)]
        assert {r["reason"] for r in cli("popularity", 10)} == {r["reason"] for r in ten}
        blended = [r["item_id"] for r in api("ease", 12, value_weight=2)]
        assert [r["item_id"] for r in cli("ease", 12, "--value-weight", "2")] == blended
    for spelling in ("EASE", "rec-ease", " ease"):
        assert [r["item_id"] for r in cli(spelling, 5)] == [r["item_id"] for r in cli("ease", 5)]


def test_temporal_cuts_that_leave_no_training_data_are_one_clear_error(tmp_path):
    """A one-day export under `--protocol temporal`: the quantile cuts equal the only
    timestamp, so training is empty. Every model failed with "no interactions to learn from"
    (exit 1) on a store of 40 purchases; now the split itself is refused, naming the cuts."""
    path = tmp_path / "sameday.duckdb"
    events = pd.DataFrame({"user_id": [f"u{i % 8}" for i in range(40)],
                           "item_id": [f"i{i % 5}" for i in range(40)],
                           "event_type": "purchase", "timestamp": "2024-01-01"})  # fmt: skip
    with Store(path) as store:
        ingest(store, events, "events")
    res = _run("evaluate", "--db", str(path), "--protocol", "temporal",
               "--models", "popularity,ease")  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "no interactions to learn from" not in res.output
    assert "no training interaction" in res.output and "2024-01-01" in res.output


def test_similar_for_a_known_item_with_no_other_item_is_an_empty_list(tmp_path):
    """A store of one item: the model knows it but has nothing to compare it with.
    `similar` called it "unknown" (exit 2), unlike the API, which answers an empty list."""
    path = tmp_path / "single.duckdb"
    events = pd.DataFrame({"user_id": [f"u{i}" for i in range(6)], "item_id": "only",
                           "event_type": "purchase",
                           "timestamp": [f"2024-01-0{i + 1}" for i in range(6)]})  # fmt: skip
    with Store(path) as store:
        ingest(store, events, "events")
    assert _run("fit", "--db", str(path), "--models", "ease").exit_code == 0
    res = _run("similar", "only", "--db", str(path), "--model", "ease", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == []
    table = _run("similar", "only", "--db", str(path), "--model", "ease")
    assert table.exit_code == 0, table.output
    assert "unknown" not in table.output and "no other item" in table.output
    unknown = runner.invoke(app, ["recommend", "similar", "nope", "--db", str(path)])
    assert unknown.exit_code == 2 and "unknown item 'nope'" in unknown.output


def test_content_serves_a_history_of_items_without_text_cold(tmp_path, monkeypatch):
    """`for` a user whose only item has no text: the content model scored every item 0 and
    listed index order, "similar to" that item; it is served the popularity fallback, flagged
    cold and told so. `similar` of that item lists nothing (it has no content)."""
    from valuerec.recommend import content

    def two_words(texts: list[str]) -> np.ndarray:  # the sentence model's stand-in
        vec = np.array([[t.count("space") + 0.1, t.count("pig")] for t in texts], np.float32)
        return vec / np.linalg.norm(vec, axis=1, keepdims=True)

    monkeypatch.setattr(content, "minilm_embed", two_words)
    path = str(tmp_path / "mute.duckdb")
    items = pd.DataFrame({"item_id": ["a", "b", "c", "mute"],
                          "title": ["space one", "space two", "pig", None]})  # fmt: skip
    bought = [("u1", "c"), ("u2", "c"), ("u3", "c"), ("u1", "b"), ("u2", "b"), ("u1", "a"),
              ("m", "mute")]  # fmt: skip
    events = pd.DataFrame(bought, columns=["user_id", "item_id"]).assign(
        event_type="purchase", timestamp="2024-01-01"
    )
    with Store(path) as store:
        ingest(store, items, "items")
        ingest(store, events, "events")
    assert _run("fit", "--db", path, "--models", "content").exit_code == 0
    rows = json.loads(_run("for", "m", "--db", path, "--model", "content", "--json").stdout)
    assert [r["item_id"] for r in rows] == ["c", "b", "a"]  # by popularity, mute left out
    assert all(r["cold_start"] for r in rows)
    assert {r["reason"] for r in rows} == {"popular with everyone (new user)"}
    res = _run("similar", "mute", "--db", path, "--model", "content", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == []
