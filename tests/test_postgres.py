"""The PostgreSQL backend: same answers as DuckDB, shared by many clients, safe to point at.

The ingest, store, crash-safety and API tests already run on both backends; these cover what
only a server has: other clients writing, concurrent ingests, URLs, and the analytic mirror.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner

from pg_cluster import Cluster, schema_name
from valuerec.artifacts import default_root
from valuerec.cli import app
from valuerec.data.ingest import ingest
from valuerec.data.postgres import PostgresStore, pg_type, to_pg_sql
from valuerec.data.store import Store, StoreError, deployment_path, redact, store_exists
from valuerec.data.synth import generate
from valuerec.features.behaviour import behaviour_features
from valuerec.features.rfm import rfm_summary
from valuerec.recommend.rerank import ItemValues
from valuerec.serve.keys import default_keys_path


@pytest.fixture
def url(pg_cluster: Cluster) -> str:
    return pg_cluster.create_schema("pgt")


@pytest.fixture(scope="module")
def shop() -> object:
    return generate(users=60, items=25, days=120, holdout_days=10, seed=11)


# -- no server needed ----------------------------------------------------------------------------
def test_portable_sql_becomes_psycopg_sql():
    assert to_pg_sql("SELECT ? WHERE a LIKE 'x%?' AND b = ?") == (
        "SELECT %s WHERE a LIKE 'x%%?' AND b = %s"
    )
    assert to_pg_sql('SELECT "odd?name" FROM t WHERE x = ?') == (
        'SELECT "odd?name" FROM t WHERE x = %s'
    )
    assert pg_type("VARCHAR") == 'VARCHAR COLLATE "C"'
    assert pg_type("DOUBLE") == "DOUBLE PRECISION"
    assert pg_type("BOOLEAN NOT NULL") == "BOOLEAN NOT NULL"


def test_urls_get_a_local_home_and_lose_their_password(monkeypatch, tmp_path):
    monkeypatch.setenv("VALUEREC_HOME", str(tmp_path))
    url = "postgresql://shop:s3cret@db.internal:5432/prod"
    assert redact(url) == "postgresql://shop:***@db.internal:5432/prod"
    assert redact("postgresql://shop@h/db?password=s3cret&sslmode=require") == (
        "postgresql://shop@h/db?password=***&sslmode=require"
    )
    assert deployment_path(url) == str(tmp_path / "prod@db.internal")
    assert default_root(url) == tmp_path / "prod@db.internal.models"
    assert default_keys_path(url) == tmp_path / "prod@db.internal.keys.json"
    assert deployment_path("shop.duckdb") == "shop.duckdb"
    # two servers on one host are two deployments: the port is in the name
    monkeypatch.delenv("PGPORT", raising=False)
    assert deployment_path("postgresql://shop@db.internal:5433/prod") == str(
        tmp_path / "prod@db.internal_5433"
    )
    assert deployment_path("postgresql://u@/shop?host=/tmp/pg&port=5434") == str(
        tmp_path / "shop@_tmp_pg_5434"
    )
    assert deployment_path("postgresql://u@/shop?host=/tmp/pg&port=5432") == str(
        tmp_path / "shop@_tmp_pg"
    )
    monkeypatch.setenv("PGPORT", "6000")
    assert deployment_path("postgresql://u@h/shop") == str(tmp_path / "shop@h_6000")
    # a deployment named before the port was part of the name keeps its keys and models
    (tmp_path / "shop@h.keys.json").write_text("{}")
    with pytest.warns(UserWarning, match="named without the port 6000"):
        assert deployment_path("postgresql://u@h/shop") == str(tmp_path / "shop@h")
    (tmp_path / "shop@h_6000.models").mkdir()
    assert deployment_path("postgresql://u@h/shop") == str(tmp_path / "shop@h_6000")


def test_a_schema_spelt_in_another_case_is_one_deployment(monkeypatch, tmp_path):
    """PostgreSQL folds an unquoted search_path name: Shop and shop are one schema, which had
    two key files and two model folders (a key made through one spelling was refused through
    the other). A quoted name keeps its case, as it does on the server, and loses its quotes:
    "shop" is shop (review R8: it was a second deployment, _shop)."""
    monkeypatch.setenv("VALUEREC_HOME", str(tmp_path))
    monkeypatch.delenv("PGPORT", raising=False)
    url = "postgresql://u@h/db?options=-c%20search_path%3D{}"
    assert deployment_path(url.format("Shop_A")) == str(tmp_path / "db@h.shop_a")
    assert deployment_path(url.format("shop_a")) == str(tmp_path / "db@h.shop_a")
    assert deployment_path(url.format("%22shop_a%22")) == str(tmp_path / "db@h.shop_a")
    # quoted: another schema, whose name keeps its case; a space is escaped, not "_"
    assert deployment_path(url.format("%22Shop_A%22")) == str(tmp_path / "db@h.Shop_A")
    assert deployment_path(url.format("%22My%20Shop%22,public")) == str(tmp_path / "db@h.My@20Shop")
    assert deployment_path(url.format("Shop_A,public")) == str(tmp_path / "db@h.shop_a")
    # $user: the schema named as the user who connects, one per user
    assert deployment_path(url.format("$user")) == str(tmp_path / "db@h.u")
    assert deployment_path(url.format("$user").replace("u@h", "Ann@h")) == str(
        tmp_path / "db@h.Ann"
    )
    # files named by the unquoted spelling, before folding, are now the quoted "Shop_B"'s
    # name: never taken for shop_b's (another schema's keys), but said
    (tmp_path / "db@h.Shop_B.keys.json").write_text("{}")
    assert deployment_path(url.format("%22Shop_B%22")) == str(tmp_path / "db@h.Shop_B")
    with pytest.warns(UserWarning, match="not using .*db@h.Shop_B.*rename them to db@h.shop_b"):
        assert deployment_path(url.format("Shop_B")) == str(tmp_path / "db@h.shop_b")


def test_a_url_of_another_scheme_is_refused_not_taken_for_a_file(tmp_path, monkeypatch):
    """postgresql+psycopg:// (SQLAlchemy's spelling) became a DuckDB file in folders named
    after the URL, password included."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path.parent / f"{tmp_path.name}-e.csv"
    data.write_text("user_id,timestamp,event_type\nu1,2024-01-01,view\n")
    for url in ("postgresql+psycopg://alice:s3cret@h:1/shop", "POSTGRESQL://alice:s3cret@h/x"):
        with pytest.raises(StoreError, match="is no store URL here") as exc:
            Store(url)
        assert "s3cret" not in str(exc.value)
        res = CliRunner().invoke(app, ["ingest", str(data), "--db", url])
        assert res.exit_code == 2 and "is no store URL here" in " ".join(res.stderr.split())
        assert "s3cret" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_is_a_store_error_without_the_password(tmp_path):
    with pytest.raises(StoreError, match="cannot open store") as exc:
        Store(f"postgresql://u:s3cret@/nope?host={tmp_path}&connect_timeout=2")
    assert "s3cret" not in str(exc.value)


# -- one store class -----------------------------------------------------------------------------
def test_a_url_opens_the_postgres_backend_of_the_same_class(url, monkeypatch):
    with Store(url) as store:
        assert isinstance(store, Store) and isinstance(store, PostgresStore)
        assert store.count("events") == 0
    monkeypatch.setenv("VALUEREC_DB", url)
    with Store() as store:
        assert isinstance(store, PostgresStore)


def test_a_whole_database_works_too(pg_cluster: Cluster, shop):
    """Tests use one schema each; a URL naming a database (tables in ``public``) is the same."""
    with Store(pg_cluster.create_database("whole")) as store:
        assert ingest(store, shop.events).stored == len(shop.events)
        assert store.count("events") == len(shop.events)


def test_every_read_and_feature_query_agrees_with_duckdb(url, tmp_path, shop):
    """Same input, both backends: the read methods and the feature SQL give identical frames."""
    bad = shop.events.head(20).assign(timestamp="not a time")
    results = {}
    for db in (str(tmp_path / "same.duckdb"), url):
        with Store(db) as store:
            ingest(store, shop.items, "items")
            ingest(store, shop.users, "users")
            ingest(store, pd.concat([shop.events, bad]), source_name="events")
            ingest(store, shop.events, source_name="events")  # all duplicates
            end = shop.events["timestamp"].max()
            stats = store.stats()
            stats.pop("db")
            results[db] = {
                "events": store.events(),
                "some": store.events(["u1", "u2"], event_types=["purchase"], since="2020-01-01"),
                "items": store.items(),
                "users": store.users(),
                "quarantine": store.quarantine().drop(columns="quarantined_at"),
                "stats": stats,
                "rfm": rfm_summary(store, end),
                "behaviour": behaviour_features(store, end),
                "item_values": ItemValues.from_store(store),
            }
    duck, pg = results.values()
    assert duck["stats"] == pg["stats"]
    assert duck["stats"]["quarantined"] == 20
    for field in ("price", "p_purchase", "embedding"):  # aggregated on the server
        a, b = (getattr(r["item_values"], field) for r in (duck, pg))
        np.testing.assert_array_equal(a, b, err_msg=field)
    assert duck["item_values"].item_ids.equals(pg["item_values"].item_ids)
    for name in duck:
        if name not in ("stats", "item_values"):
            pd.testing.assert_frame_equal(duck[name], pg[name], check_exact=True, obj=name)
    assert len(duck["events"]) == len(shop.events)


def test_floats_text_and_json_survive_the_round_trip_exactly(url):
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "event_type": "purchase",
            "timestamp": ["2024-01-01 10:00:00.123456", "2024-01-01", "2024-01-02"],
            "value": [0.1 + 0.2, 1 / 3, 1e-300],
            "item_id": ["i1", "i2", "nul\x00byte"],
            "note": ['quote " comma , newline \n end', "ünïcödé €", "nul\x00byte"],
        }
    )
    with Store(url) as store:
        assert ingest(store, frame).stored == 3
        ev = store.events().set_index("user_id")
        assert list(ev["value"]) == [0.1 + 0.2, 1 / 3, 1e-300]
        assert ev.loc["a", "timestamp"] == pd.Timestamp("2024-01-01 10:00:00.123456")
        assert json.loads(ev.loc["a", "properties"])["note"] == 'quote " comma , newline \n end'
        assert json.loads(ev.loc["b", "properties"])["note"] == "ünïcödé €"
        # PostgreSQL text (and jsonb) cannot hold NUL: in an id and in properties it becomes
        # U+FFFD, the same way on every ingest
        assert json.loads(ev.loc["c", "properties"])["note"] == "nul\ufffdbyte"
        assert ev.loc["c", "item_id"] == "nul\ufffdbyte"
        assert ingest(store, frame).stored == 0  # and compare equal to themselves on the server


def test_a_nul_in_properties_never_fails_the_merge_of_an_item(url, tmp_path):
    r"""jsonb refuses the escape \u0000, so a second file, whose merge reads both objects as
    jsonb, failed whole. The escape becomes U+FFFD; the text backslash-u0000 is kept."""
    first = tmp_path / "a.csv"
    first.write_text(
        r'item_id,title,properties' '\n'
        r'i1,a,"{""a"": 1}"' '\n'
        r'i2,b,"{""a"": ""x\u0000y"", ""b"": ""p\\u0000q""}"' '\n'
    )  # fmt: skip
    second = tmp_path / "b.csv"
    second.write_text(
        r'item_id,title,properties' '\n'
        r'i1,a2,"{""a"": ""m\u0000n""}"' '\n'
        r'i2,b2,"{""c"": 2}"' '\n'
    )  # fmt: skip
    with Store(url) as store:
        assert ingest(store, first, "items").stored == 2
        assert ingest(store, second, "items").stored == 2
        items = store.items().set_index("item_id")
        assert json.loads(items.loc["i1", "properties"]) == {"a": "m\ufffdn"}
        assert json.loads(items.loc["i2", "properties"]) == {
            "a": "x\ufffdy",
            "b": r"p\u0000q",
            "c": 2,
        }
        assert ingest(store, second, "items").stored == 0


def test_merged_properties_are_the_same_text_on_both_backends(url, tmp_path):
    """An upsert's merge writes what DuckDB writes: the stored keys the new object leaves
    alone, then the new keys, compactly. jsonb's merge wrote its own key order and spacing,
    and models that read properties in key order (als-side) then ranked differently."""
    first = pd.DataFrame(
        {"user_id": ["u1", "u2"], "region": ["north", "south"], "vip": ["no", "yes"]}
    )
    second = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "properties": ['{"favourite_category": "games", "region": "east"}', '{"b": [1, 2]}'],
        }
    )
    reordered = pd.DataFrame(  # the same values in another order: the text moves, as on DuckDB
        {"user_id": ["u1"], "properties": ['{"region": "east", "favourite_category": "games"}']}
    )
    stored, texts = {}, {}
    for db in (str(tmp_path / "m.duckdb"), url):
        with Store(db) as store:
            stored[db] = [ingest(store, f, "users").stored for f in (first, second, second)]
            stored[db].append(ingest(store, reordered, "users").stored)
            texts[db] = store.users().set_index("user_id")["properties"].to_dict()
    duck, pg = texts.values()
    assert duck == pg
    assert pg["u1"] == '{"vip":"no","region":"east","favourite_category":"games"}'
    assert pg["u2"] == '{"region":"south","vip":"yes","b":[1,2]}'
    assert stored[str(tmp_path / "m.duckdb")] == stored[url] == [2, 2, 0, 1]


def test_read_only_needs_an_existing_store_and_writes_nothing(url, shop):
    with pytest.raises(StoreError, match="holds no valuerec store"):
        Store(url, read_only=True)
    with Store(url) as store:
        ingest(store, shop.events.head(10))
    with Store(url, read_only=True) as store:
        assert len(store.events()) == 10
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            ingest(store, shop.events.head(20))
        assert store.count("events") == 10


# -- many clients ----------------------------------------------------------------------------------
def test_the_analytic_copy_follows_writes_from_other_clients(url, shop):
    with Store(url) as reader, Store(url) as writer:
        assert len(reader.query("SELECT * FROM events")) == 0
        ingest(writer, shop.events.head(100))
        assert reader.query("SELECT count(*) AS n FROM events")["n"][0] == 100
        # a client that is not valuerec at all
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("DELETE FROM events WHERE user_id = %s", [shop.events["user_id"][0]])
        gone = int((shop.events.head(100)["user_id"] == shop.events["user_id"][0]).sum())
        assert reader.query("SELECT count(*) AS n FROM events")["n"][0] == 100 - gone
        assert reader.con.execute("SELECT count(*) FROM events").fetchone()[0] == 100 - gone


def test_the_analytic_connection_refuses_writes(url):
    with Store(url) as store:
        with pytest.raises(StoreError, match="read-only"):
            store.con.execute("DELETE FROM events")
        with pytest.raises(StoreError, match="read-only"):
            store.query("SELECT 1; DROP TABLE events")
        assert store.count("events") == 0


def test_concurrent_ingests_of_the_same_events_store_them_once(url, shop):
    """Two clients (e.g. two API workers) posting the same batch: the server keeps one copy."""
    errors: list[BaseException] = []
    stored: list[int] = []

    def run() -> None:
        try:
            with Store(url) as store:
                stored.append(ingest(store, shop.events, batch_size=500).stored)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(stored) == [0, 0, len(shop.events)]
    with Store(url) as store:
        assert store.count("events") == len(shop.events)
        assert store.count("ingest_runs") == 3


def test_a_failed_batch_leaves_nothing_half_written(url, shop, monkeypatch):
    real = PostgresStore.append_quarantine

    def boom(self, con, select):
        real(self, con, select)
        raise RuntimeError("disk full")

    with Store(url) as store:
        monkeypatch.setattr(PostgresStore, "append_quarantine", boom)
        for rows in (50, 200):  # the first failure also rolls back the session's staging tables
            frame = shop.events.head(rows).astype({"value": object})
            frame.loc[::2, "value"] = "x"  # half good rows (written first), half quarantined
            with pytest.raises(RuntimeError, match="disk full"):
                ingest(store, frame)
            assert store.count("events") == 0 and store.count("quarantine") == 0
        monkeypatch.undo()
        assert ingest(store, shop.events.head(50)).stored == 50
        assert ingest(store, shop.events.head(200)).stored == 150
        assert store.count("ingest_runs") == 2


# -- the command line ------------------------------------------------------------------------------
def test_cli_ingest_stats_and_quarantine_take_a_url(url, tmp_path: Path):
    path = tmp_path / "e.csv"
    path.write_text("user_id,timestamp,event_type\nu1,2024-01-01,view\nu2,never,view\n")
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(path), "--db", url, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["stored"] == 1
    st = json.loads(runner.invoke(app, ["stats", "--json"], env={"VALUEREC_DB": url}).stdout)
    assert st["events"] == 1 and st["quarantined"] == 1 and st["db"] == url
    rows = json.loads(runner.invoke(app, ["quarantine", "--db", url, "--json"]).stdout)
    assert rows[0]["field"] == "timestamp"


def _tables(pg_cluster: Cluster, url: str) -> list[str]:
    schema = schema_name(url)
    rows = pg_cluster.admin.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", [schema]
    ).fetchall()
    return [r[0] for r in rows]


def test_reading_a_database_without_a_store_is_no_store_and_creates_nothing(
    pg_cluster: Cluster, url, tmp_path: Path
):
    """As for a mistyped DuckDB path: a read names the missing store (exit 2) instead of
    writing valuerec's tables into what may be another application's database, and a failed
    first ingest leaves nothing behind."""
    assert not store_exists(url)
    runner = CliRunner()
    for args in (["stats"], ["quarantine"], ["value", "fit"], ["recommend", "fit"]):
        res = runner.invoke(app, [*args, "--db", url])
        assert res.exit_code == 2, (args, res.output)
        assert "no store at" in res.stderr and "ingest data first" in res.stderr
    res = runner.invoke(app, ["ingest", str(tmp_path / "missing.csv"), "--db", url])
    assert res.exit_code == 2, res.output
    assert _tables(pg_cluster, url) == []
    functions = pg_cluster.admin.execute(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s",
        [schema_name(url)],
    ).fetchone()
    assert functions == (0,)
    path = tmp_path / "e.csv"
    path.write_text("user_id,timestamp,event_type\nu1,2024-01-01,view\n")
    assert runner.invoke(app, ["ingest", str(path), "--db", url]).exit_code == 0
    assert store_exists(url) and "events" in _tables(pg_cluster, url)
    # a failing command on a store that holds data drops nothing
    res = runner.invoke(app, ["ingest", str(tmp_path / "missing.csv"), "--db", url])
    assert res.exit_code == 2 and "events" in _tables(pg_cluster, url)


def test_a_search_path_schema_that_does_not_exist_is_a_clear_store_error(
    pg_cluster: Cluster, tmp_path: Path
):
    url = pg_cluster.url("postgres", "no_such_schema")
    with pytest.raises(StoreError, match="search_path must exist") as exc:
        Store(url)
    assert "CREATE SCHEMA" in str(exc.value)
    path = tmp_path / "e.csv"
    path.write_text("user_id,timestamp,event_type\nu1,2024-01-01,view\n")
    res = CliRunner().invoke(app, ["ingest", str(path), "--db", url])
    assert res.exit_code == 2, res.output
    assert "cannot open store" in res.stderr and "Traceback" not in res.output


def test_the_report_names_each_database_of_one_server_apart(pg_cluster: Cluster, shop, tmp_path):
    urls = [pg_cluster.create_schema("rep_a"), pg_cluster.create_schema("rep_b")]
    for u in urls:
        with Store(u) as store:
            ingest(store, shop.events)
    out = tmp_path / "r.html"
    args = ["report", "--out", str(out), "--rec-models", "popularity"]
    res = CliRunner().invoke(app, [*args, *(a for u in urls for a in ("--db", u))])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    for u in urls:
        assert f"<h2>{Path(deployment_path(u)).name}</h2>" in html


def test_different_schemas_never_share_a_deployment_and_one_schema_has_one(monkeypatch, tmp_path):
    """Review R8 bug 4: "shop" (quoted) and shop are one schema but were two deployments
    (._shop and .shop); "Shop Data", "Shop_Data" and "Shop,Data" (and "a""b", "a_b") are
    different schemas that shared one (characters outside [A-Za-z0-9_.@-] all became "_"),
    and with it API keys and model folders."""
    monkeypatch.setenv("VALUEREC_HOME", str(tmp_path))
    monkeypatch.delenv("PGPORT", raising=False)
    url = "postgresql://alice@db.example/app?options={}"

    def name(option: str) -> str:
        return Path(deployment_path(url.format(quote("-c search_path=" + option)))).name

    assert name('"shop"') == name("shop") == name("SHOP") == "app@db.example.shop"
    spellings = ['"Shop Data"', '"Shop_Data"', '"Shop,Data"', '"a""b"', '"a_b"', '"a@b"',
                 '"a@40b"', '"shop_"', '"Ünï"', "a$b"]  # fmt: skip
    names = [name(s) for s in spellings]
    assert names == [
        "app@db.example.Shop@20Data", "app@db.example.Shop_Data", "app@db.example.Shop@2CData",
        "app@db.example.a@22b", "app@db.example.a_b", "app@db.example.a@40b",
        "app@db.example.a@4040b", "app@db.example.shop_", "app@db.example.@C3@9Cn@C3@AF",
        "app@db.example.a@24b",
    ]  # fmt: skip
    assert len(set(names)) == len(names)


def test_an_old_deployment_name_is_used_only_when_no_other_schema_had_it(monkeypatch, tmp_path):
    """Deployments named the old ways keep their keys and models (with a warning), unless
    another schema's deployment could have had that name: "Shop Data"'s old _Shop_Data was
    also "Shop,Data"'s and "Shop_Data"'s, _shop was "shop"'s and is now _shop's."""
    monkeypatch.setenv("VALUEREC_HOME", str(tmp_path))
    monkeypatch.delenv("PGPORT", raising=False)
    url = "postgresql://u@h:{}/db?options={}"

    def path(option: str, port: int = 5432) -> str:
        return deployment_path(url.format(port, quote("-c search_path=" + option)))

    for old in ("db@h._Shop_Data", "db@h._shop"):
        (tmp_path / f"{old}.keys.json").write_text("{}")
    # ambiguous: not used, but said (this deployment's keys may be there)
    with pytest.warns(UserWarning, match="not using .*db@h._Shop_Data"):
        assert path('"Shop Data"') == str(tmp_path / "db@h.Shop@20Data")
    with pytest.warns(UserWarning, match="not using .*db@h._shop"):
        assert path('"shop"') == str(tmp_path / "db@h.shop")
    # a trailing "_" was dropped: shop_'s old name is shop's
    (tmp_path / "db@h.shop.keys.json").write_text("{}")
    with pytest.warns(UserWarning, match="not using .*db@h.shop"):
        assert path('"shop_"') == str(tmp_path / "db@h.shop_")
    # unambiguous: the name before the port was part of it, the same schema's however spelt
    for spelling in ("Shop", '"shop"'):
        with pytest.warns(UserWarning, match="using .*db@h.shop.models"):
            assert path(spelling, 6000) == str(tmp_path / "db@h.shop")
    # and the deployment's own name, once it exists, is used without a word
    (tmp_path / "db@h.Shop@20Data.models").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert path('"Shop Data"') == str(tmp_path / "db@h.Shop@20Data")
