"""Review 25: `recommend for` reads the serving settings' event roles, and a few exposures
no longer make every item a sure purchase in value-aware re-ranking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from valuerec.cli import app
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.recommend.rerank import ItemValues, look_types

runner = CliRunner()
T0 = pd.Timestamp("2024-01-01")


def _events(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """``(user, item, type)`` rows a minute apart; purchases worth 5."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type"])
    frame["timestamp"] = T0 + pd.to_timedelta(np.arange(len(frame)), "min")
    frame["value"] = np.where(frame["event_type"] == "purchase", 5.0, np.nan)
    return frame


def _run(*args: str):
    return runner.invoke(app, ["recommend", *args], catch_exceptions=False)


@pytest.fixture()
def impression_store(tmp_path: Path) -> tuple[str, Path]:
    """Item ``i<j>`` is bought by ``20 - 2j`` users (strict popularity order i0 > ... > i7);
    u0 bought i7 and was shown i0, i1 and i2 through the server's ``impression`` type."""
    rows = [(f"b{n}", f"i{j}", "purchase") for j in range(8) for n in range(20 - 2 * j)]
    rows += [("u0", "i7", "purchase")]
    rows += [("u0", item, "impression") for item in ("i0", "i1", "i2")]
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(8)], "price": 10.0})
    db = str(tmp_path / "shop.duckdb")
    with Store(db) as store:
        ingest(store, items, "items")
        ingest(store, _events(rows), "events")
    config = tmp_path / "serve.toml"
    config.write_text('[events]\nexposure = ["impression"]\n', encoding="utf-8")
    res = _run("fit", "--db", db, "--models", "popularity", "--event-types", "purchase")
    assert res.exit_code == 0, res.output
    return db, config


def _cli_items(db: str, *extra: str) -> list[str]:
    res = _run("for", "u0", "--db", db, "--model", "popularity", "-k", "4", "--json", *extra)
    assert res.exit_code == 0, res.output
    return [r["item_id"] for r in json.loads(res.stdout)]


def test_recommend_for_reads_the_serving_settings_roles_as_the_server(
    impression_store: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``exposure = ["impression"]`` the server does not count what u0 was shown as
    their history; the CLI did (it always used the default roles), so it dropped the three
    most popular items as "seen"."""
    from fastapi.testclient import TestClient

    from valuerec.serve.app import create_app
    from valuerec.serve.config import load_settings
    from valuerec.serve.keys import KeyStore, default_keys_path

    db, config = impression_store
    monkeypatch.delenv("VALUEREC_SERVE_CONFIG", raising=False)
    # the default roles read impressions as interest: seen, so left out
    assert _cli_items(db) == ["i3", "i4", "i5", "i6"]
    with_config = _cli_items(db, "--config", str(config))
    assert with_config == ["i0", "i1", "i2", "i3"], with_config
    monkeypatch.setenv("VALUEREC_SERVE_CONFIG", str(config))  # as `train` and `serve` read it
    assert _cli_items(db) == with_config
    monkeypatch.delenv("VALUEREC_SERVE_CONFIG")
    key = KeyStore(default_keys_path(db)).create("read", name="t")[0]
    with TestClient(create_app(db, settings=load_settings(config))) as client:
        served = client.get(
            "/users/u0/recommendations", params={"k": 4, "model": "popularity"},
            headers={"X-API-Key": key},
        ).json()["items"]  # fmt: skip
    assert [r["item_id"] for r in served] == with_config


def test_recommend_for_defaults_to_the_settings_default_model(impression_store, tmp_path):
    """Without --model it recommends with the model the server serves to a request that
    names none: the settings' default_model (it always used ease)."""
    db, config = impression_store
    chosen = tmp_path / "popular.toml"
    chosen.write_text('default_model = "Popularity"\n' + config.read_text())
    res = _run("for", "u0", "--db", db, "-k", "4", "--json", "--config", str(chosen))
    assert res.exit_code == 0, res.output
    assert [r["item_id"] for r in json.loads(res.stdout)] == ["i0", "i1", "i2", "i3"]
    res = _run("for", "u0", "--db", db, "-k", "4", "--config", str(config))  # ease: not fitted
    assert res.exit_code != 0 and "ease" in res.output


def test_recommend_for_refuses_a_padded_user_id(impression_store) -> None:
    """Ids are stored trimmed: " u0" was served cold as a new user (the API refuses it)."""
    db, _ = impression_store
    for padded in (" u0", "u0 ", "  "):
        res = runner.invoke(app, ["recommend", "for", padded, "--db", db, "--model", "popularity"])
        assert res.exit_code == 2, (padded, res.output)
        assert "must not be blank or start or end with whitespace" in res.output
    assert _cli_items(db) == ["i3", "i4", "i5", "i6"]  # the trimmed id still works


def test_recommend_for_names_a_bad_settings_file(impression_store, tmp_path) -> None:
    db, _ = impression_store
    bad = tmp_path / "bad.toml"
    bad.write_text('[events]\nexposure = ["purchase"]\npositive = ["purchase"]\n')
    res = runner.invoke(app, ["recommend", "for", "u0", "--db", db, "--config", str(bad)])
    assert res.exit_code == 2
    assert "bad.toml" in res.output and "events" in res.output, res.output


def _looked_store(store: Store) -> None:
    """Impressions on a (10), b (20), c (5); purchases a 2, b 1, c 6, e 3 (e never shown);
    10 carts on a (interest, not a look); d is in the catalogue only."""
    rows = [(f"s{n}", "a", "impression") for n in range(10)]
    rows += [(f"s{n}", "b", "impression") for n in range(20)]
    rows += [(f"s{n}", "c", "impression") for n in range(5)]
    rows += [(f"c{n}", "a", "cart") for n in range(10)]
    for item, n_buys in (("a", 2), ("b", 1), ("c", 6), ("e", 3)):
        rows += [(f"p{item}{n}", item, "purchase") for n in range(n_buys)]
    items = pd.DataFrame({"item_id": list("abcde"), "price": [1.0, 2.0, 3.0, 4.0, 5.0]})
    ingest(store, items, "items")
    ingest(store, _events(rows), "events")


def test_purchase_rates_are_purchases_per_configured_look_smoothed() -> None:
    """Looks are the configured exposure type (and views), never carts. c was bought more
    often than shown: a purchase is at least one look, so c has 6 looks. The pooled rate
    comes from the looked items alone, 9 / 36; e (bought, never shown) and d get it."""
    with Store(":memory:") as store:
        _looked_store(store)
        iv = ItemValues.from_store(store, prior_looks=20.0, look_types=look_types(["impression"]))
    prior = 9 / 36
    assert list(iv.item_ids) == list("abcde")
    np.testing.assert_allclose(
        iv.p_purchase,
        [(2 + 20 * prior) / 30, (1 + 20 * prior) / 40, (6 + 20 * prior) / 26, prior, prior],
    )
    assert iv.default_p == pytest.approx(prior)


def test_a_few_exposures_leave_unlooked_items_at_their_buyer_share() -> None:
    """150 purchases of 12 items, then 6 exposures on 6 of them (what write_back logs):
    every item's P(purchase) became 1.0. Looks that cover few of the purchases cannot give
    purchases per look, so every item keeps its share of buyers."""
    rng = np.random.default_rng(5)
    names = [f"i{j}" for j in range(12)]
    buys = [(f"u{u}", str(rng.choice(names)), "purchase") for u in range(30) for _ in range(5)]
    shown = [("u0", item, "exposure") for item in names[:6]]
    items = pd.DataFrame({"item_id": names, "price": 10.0})
    with Store(":memory:") as store:
        ingest(store, items, "items")
        ingest(store, _events(buys), "events")
        before = ItemValues.from_store(store)
        ingest(store, _events(shown), "events")
        after = ItemValues.from_store(store)
    frame = pd.DataFrame(buys, columns=["user_id", "item_id", "event_type"])
    share = frame.groupby("item_id")["user_id"].nunique().reindex(after.item_ids) / 30
    assert share.notna().all() and list(before.item_ids) == list(after.item_ids)
    np.testing.assert_allclose(before.p_purchase, share.to_numpy())
    np.testing.assert_allclose(after.p_purchase, share.to_numpy())
    assert after.p_purchase.max() < 1.0


def test_value_reranking_counts_the_configured_exposures_as_looks(tmp_path: Path) -> None:
    """`recommend for --value-weight` and the server read the configured exposure type as
    looks: a's rate is its purchases per impression, not per impression-or-cart."""
    from fastapi.testclient import TestClient

    from valuerec.serve.app import create_app
    from valuerec.serve.config import ServeSettings

    db = str(tmp_path / "shop.duckdb")
    with Store(db) as store:
        _looked_store(store)
    config = tmp_path / "serve.toml"
    config.write_text('[events]\nexposure = ["impression"]\n', encoding="utf-8")
    res = _run("fit", "--db", db, "--models", "popularity", "--event-types", "purchase")
    assert res.exit_code == 0, res.output
    res = _run("for", "newcomer", "--db", db, "--model", "popularity", "--json",
               "--value-weight", "1", "--config", str(config))  # fmt: skip
    assert res.exit_code == 0, res.output
    got = {r["item_id"]: r["p_purchase"] for r in json.loads(res.stdout)}
    prior = 9 / 36
    want = {"a": (2 + 20 * prior) / 30, "b": (1 + 20 * prior) / 40,
            "c": (6 + 20 * prior) / 26, "e": prior}  # fmt: skip
    assert got == pytest.approx(want)
    settings = ServeSettings.model_validate({"events": {"exposure": ["impression"]}})
    with TestClient(create_app(db, settings=settings)) as client:
        served = client.app.state.service.item_values()
    np.testing.assert_allclose(served.take(list("abce")).p_purchase, list(want.values()))
