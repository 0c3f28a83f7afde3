"""The command line: summaries, JSON output, exit codes and messages."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from valuerec.cli import app
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import SynthConfig, generate
from valuerec.data.synth_posterior import posterior_forecast
from valuerec.evaluate.value import normalized_gini
from valuerec.serve import create_app
from valuerec.serve.keys import KeyStore, default_keys_path

runner = CliRunner()

EVENTS = """customer,when,what,amount
c1,2024-01-01,purchase,10
c1,2024-01-01,purchase,10
c2,2024-01-02,view,
c3,garbage,view,
"""


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_ingest_prints_a_summary_and_json(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text(EVENTS)
    db = str(tmp_path / "s.duckdb")
    args = [
        "ingest",
        str(path),
        "--db",
        db,
        "--map",
        "customer=user_id",
        "--map",
        "when=timestamp",
        "--map",
        "what=event_type",
        "--map",
        "amount=value",
    ]
    res = _run(*args, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert {k: summary[k] for k in ("rows_read", "stored", "duplicates", "quarantined")} == {
        "rows_read": 4,
        "stored": 3,
        "duplicates": 0,
        "quarantined": 1,
    }
    again = _run(*args)
    assert again.exit_code == 0 and "ingest" in again.stdout
    assert json.loads(_run(*args, "--json").stdout)["duplicates"] == 3


def test_quarantine_and_stats_as_json(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("user_id,timestamp,event_type\nu1,2024-01-01,view\nu2,never,view\n")
    db = str(tmp_path / "s.duckdb")
    assert _run("ingest", str(path), "--db", db).exit_code == 0
    rows = json.loads(_run("quarantine", "--db", db, "--json").stdout)
    assert len(rows) == 1
    assert rows[0]["line"] == 3 and rows[0]["field"] == "timestamp"
    assert rows[0]["source"] == str(path)
    st = json.loads(_run("stats", "--db", db, "--json").stdout)
    assert st["events"] == 1 and st["quarantined"] == 1
    table = _run("quarantine", "--db", db)
    assert "timestamp" in table.stdout and "never" in table.stdout


def test_db_comes_from_the_environment(tmp_path, monkeypatch):
    db = tmp_path / "env.duckdb"
    Store(db).close()
    monkeypatch.setenv("VALUEREC_DB", str(db))
    res = runner.invoke(app, ["stats", "--json"], env={"VALUEREC_DB": str(db)})
    assert res.exit_code == 0 and json.loads(res.stdout)["db"] == str(db)


@pytest.mark.parametrize("command", ["stats", "quarantine"])
def test_reading_a_mistyped_store_path_creates_nothing(tmp_path, command):
    db = tmp_path / "typo" / "tpyo.duckdb"
    res = runner.invoke(app, [command, "--db", str(db)])
    assert res.exit_code == 2 and f"no store at {db}" in " ".join(res.output.split())
    assert not db.parent.exists()


def test_data_text_with_brackets_is_printed_as_is(tmp_path):
    """What the CLI prints is data: "[/x]" is an event type, not a closing style tag."""
    db = tmp_path / "shop[v2].duckdb"
    with Store(db) as store:
        events = pd.DataFrame(
            {"user_id": ["u"], "event_type": ["[/x]"], "timestamp": ["2024-01-01"]}
        )
        ingest(store, events, "events")
    res = runner.invoke(app, ["stats", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "events: [/x]" in res.output and "shop[v2].duckdb" in res.output
    res = runner.invoke(app, ["load", "[/bold]", "--db", str(db)])
    assert res.exit_code == 2 and "[/bold]" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "nope.csv"], "no such file"),
        (["ingest", "x.csv", "--map", "oops"], "--map expects KEY=VALUE"),
        (["ingest", "x.csv", "--kind", "orders"], "unknown kind"),
        (["ingest", "x.csv", "--set", "timestamp=yesterday"], "--set timestamp=yesterday"),
        (["quarantine", "--limit", "-1"], "--limit"),
        (["datasets", "synth", "--users", "5", "--out", "x.csv"], "is a file, expected a folder"),
    ],
)
def test_errors_exit_non_zero_with_a_message(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").write_text("user_id,timestamp,event_type\nu,2024-01-01,view\n")
    db = [] if args[0] == "datasets" else ["--db", str(tmp_path / "s.duckdb")]
    res = runner.invoke(app, [*args, *db])
    assert res.exit_code == 2
    assert message in res.output
    with Store(tmp_path / "s.duckdb") as store:
        assert store.count("events") == 0


def test_synth_writes_the_tables(tmp_path):
    res = _run(
        "datasets",
        "synth",
        "--users",
        "200",
        "--items",
        "50",
        "--days",
        "60",
        "--out",
        str(tmp_path / "syn"),
        "--seed",
        "1",
    )
    assert res.exit_code == 0, res.output
    for name in ("events", "items", "users", "truth", "holdout_events"):
        assert (tmp_path / "syn" / f"{name}.csv").stat().st_size > 0
    assert not (tmp_path / "syn" / "posterior.csv").exists()
    db = str(tmp_path / "s.duckdb")
    assert _run("ingest", str(tmp_path / "syn" / "events.csv"), "--db", db).exit_code == 0


def test_synth_preset_and_bayes_forecast(tmp_path):
    """A drifting log with its Bayes forecast: the file is the library's forecast, and it
    ranks users against the truth better than their past spend does."""
    common = ("--users", "300", "--items", "30", "--seed", "2", "--out", str(tmp_path / "syn"))
    res = _run("datasets", "synth", *common, "--preset", "drifting", "--posterior")
    assert res.exit_code == 0, res.output
    written = pd.read_csv(tmp_path / "syn" / "posterior.csv")
    expected = posterior_forecast(generate(SynthConfig.drifting(users=300, items=30, seed=2)))
    pd.testing.assert_frame_equal(written, expected, check_dtype=False, rtol=1e-9)
    truth = pd.read_csv(tmp_path / "syn" / "truth.csv").set_index("user_id")
    assert truth["rate_trend_per_year"].std() > 0.5  # the drifting preset, not the default
    events = pd.read_csv(tmp_path / "syn" / "events.csv")
    past = events.groupby("user_id")["value"].sum().reindex(truth.index, fill_value=0.0)
    target = truth["expected_holdout_spend"].to_numpy()
    ours = written.set_index("user_id").loc[truth.index, "expected_holdout_spend"].to_numpy()
    assert normalized_gini(target, ours) > normalized_gini(target, past.to_numpy()) + 0.05
    res = _run("datasets", "synth", *common, "--preset", "wobbly")
    assert res.exit_code != 0 and "unknown preset 'wobbly'" in res.output


def test_synth_days_default_to_the_presets_history(tmp_path):
    """--days left out: annual-habits logs its two years; given, it wins over the preset."""
    common = ("--users", "200", "--items", "20", "--seed", "1", "--preset", "annual-habits")

    def span(folder: str, *extra: str) -> float:
        res = _run("datasets", "synth", *common, "--out", str(tmp_path / folder), *extra)
        assert res.exit_code == 0, res.output
        stamps = pd.to_datetime(pd.read_csv(tmp_path / folder / "events.csv")["timestamp"])
        return (stamps.max() - pd.Timestamp(SynthConfig().start)).days

    assert 547 < span("habits") < 730  # the preset's two years, not SynthConfig's one
    assert span("short", "--days", "100") < 100
    # and --help says so (square brackets would be eaten as rich markup)
    shown = "".join(c for c in _run("datasets", "synth", "--help").output if c not in " │\n")
    assert "(default:thepreset's;365,or730forannual-habits)" in shown


@pytest.mark.network
def test_demo_loads_both_real_data_sets(tmp_path):
    res = _run(
        "demo",
        "--dir",
        str(tmp_path / "demo"),
        "--value-models",
        "naive,bgnbd,lightgbm",
        "--rec-models",
        "popularity,ease",
        "--policy-users",
        "300",
    )
    assert res.exit_code == 0, res.output
    with Store(tmp_path / "demo" / "cdnow.duckdb", read_only=True) as s:
        assert s.count("events") == 69_659
    with Store(tmp_path / "demo" / "movielens-100k.duckdb", read_only=True) as s:
        assert s.count("events") == 100_000
    assert "69,659" in res.stdout and "100,000" in res.stdout
    # the value models were fitted, scored and saved, and the target list exported
    assert (tmp_path / "demo" / "cdnow.duckdb.models" / "value-lightgbm" / "CURRENT").exists()
    assert (tmp_path / "demo" / "at-risk-high-value.csv").stat().st_size > 0
    assert "lightgbm" in res.stdout
    # recommendations: the evaluation table, a saved model and users' lists with reasons
    assert (tmp_path / "demo" / "movielens-100k.duckdb.models" / "rec-ease" / "CURRENT").exists()
    assert "similar to" in res.stdout and "cold start" in res.stdout
    report = (tmp_path / "demo" / "report.html").read_text()
    assert str(tmp_path / "demo" / "report.html") in res.stdout.replace("\n", "")
    assert "CDNOW" in report or "cdnow" in report
    assert report.count("<img") >= 6 and "http://" not in report and "https://" not in report
    # the policy comparison in the simulator: its table, the blend's gain, and a report section
    assert "value-aware vs relevance: revenue" in res.stdout and "revenue-greedy" in res.stdout
    assert "learned vs value-aware: revenue" in res.stdout
    assert 'data-kind="policies"' in report and (tmp_path / "demo" / "policy.json").exists()
    # it ends with how to serve that store; the server loads the saved EASE and answers a key
    assert "valuerec serve --db" in res.stdout and "keys create --role read" in res.stdout
    assert "/users/196/recommendations" in res.stdout
    ml = tmp_path / "demo" / "movielens-100k.duckdb"
    key = KeyStore(default_keys_path(ml)).create("read")[0]
    with TestClient(create_app(ml)) as client:
        answer = client.get("/users/196/recommendations?k=5", headers={"X-API-Key": key})
    assert answer.status_code == 200 and len(answer.json()["items"]) == 5


def test_version():
    assert _run("--version").stdout.startswith("valuerec ")


def test_policy_evaluate_json_with_and_without_recommender_refits():
    """`valuerec policy evaluate --json`: the policy table, the OPE rows and how many truths
    the simultaneous intervals hold; over 20 days (one refit, on day 15) refitting the
    recommender changes what even the relevance policy earns."""
    args = ["policy", "evaluate", "--users", "200", "--seeds", "1", "--days", "20",
            "--policies", "relevance,value-aware", "--json"]  # fmt: skip
    records = {}
    for flag in ("--refit-recommender", "--no-refit-recommender"):
        res = runner.invoke(app, [*args, flag])
        assert res.exit_code == 0, res.output
        records[flag] = json.loads(res.output)
    rec = records["--refit-recommender"]
    assert [p["policy"] for p in rec["policies"]] == ["relevance", "value-aware"]
    assert list(rec["ope_simultaneous"]) == ["ips", "snips", "dr"]
    for est, held in rec["ope_simultaneous"].items():
        alone = sum(r[f"{est}_covers"] for r in rec["ope"])
        assert held.endswith("/2") and int(held.split("/")[0]) >= alone
    revenue = {f: r["policies"][0]["revenue"] for f, r in records.items()}
    assert revenue["--refit-recommender"] != revenue["--no-refit-recommender"]


@pytest.mark.parametrize(
    "args",
    [
        ["policy", "evaluate", "--seeds", "0"],  # crashed on an empty list of results
        ["policy", "evaluate", "--days", "0"],
        ["value", "campaign", "--users", "0"],
        ["simulate", "--out", "x", "--users", "0"],
    ],
)
def test_simulator_sizes_below_one_are_usage_errors(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "greater than or equal to 1" in res.output


@pytest.mark.parametrize(
    "args", [["ingest", "missing.csv"], ["load", "no-such-data"], ["ingest", "bad.csv"]]
)
def test_a_failed_command_leaves_no_empty_store_behind(tmp_path, monkeypatch, args):
    """A new store that a failing command created holds nothing; left behind, `stats` would
    show 0 events instead of "no store at"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text("nothing,useful\n1,2\n")  # no required column
    db = tmp_path / "new.duckdb"
    res = runner.invoke(app, [*args, "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert not db.exists()
    # an existing store is never removed, even empty
    Store(tmp_path / "old.duckdb").close()
    res = runner.invoke(app, [*args, "--db", str(tmp_path / "old.duckdb")])
    assert res.exit_code == 2 and (tmp_path / "old.duckdb").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "99999"], "less than or equal to 65535"),
        (["serve", "--log-level", "bogus"], "--log-level must be one of"),
        (["recommend", "for", "u1", "--value-weight", "nan"], "must be numbers >= 0"),
        (["recommend", "for", "u1", "--diversity", "inf"], "must be numbers >= 0"),
    ],
)
def test_option_values_are_checked_before_anything_runs(tmp_path, args, message):
    res = runner.invoke(app, [*args, "--db", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())


def test_help_shows_whole_paragraphs_and_whole_defaults():
    """Typer kept every source line break of a docstring paragraph (rich then wrapped each
    source line on its own, breaking sentences), and rich cut a comma-list default at the
    panel's edge ("popularity,itemknn,ease,ease-sid..."). The entry point tidies both."""
    import typer
    from click.testing import CliRunner as ClickRunner

    from valuerec.cli import _reflow, tidy_help

    doc = """First line.

        A paragraph written over
        two source lines.

        - a list item
        - kept as written
        """
    assert _reflow(doc) == (
        "First line.\n\nA paragraph written over two source lines.\n\n"
        "- a list item\n- kept as written"
    )
    command = tidy_help(typer.main.get_command(app))
    demo = command.commands["demo"]  # type: ignore[attr-defined]
    models = next(p for p in demo.params if p.name == "value_models")
    assert models.default == "naive, bgnbd, pareto, lightgbm, transformer, ensemble"
    assert "\n" not in demo.help.split("\n\n")[1]
    res = ClickRunner().invoke(command, ["demo", "--help"], env={"COLUMNS": "80"})
    flat = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 0 and "transformer, ensemble" in flat
    # not in parentheses, as a text show_default is printed (it read like a tuple)
    assert "[default: naive, bgnbd" in flat and "(naive" not in flat


def test_quarantine_table_of_rows_from_a_data_frame(tmp_path):
    """Rows quarantined from a DataFrame (every `valuerec load` data set) have no text line:
    the table view crashed on the nullable column's missing value (pd.NA)."""
    db = str(tmp_path / "s.duckdb")
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "event_type": "view",
                          "timestamp": ["2024-01-01", "never"]})  # fmt: skip
    with Store(db) as store:
        ingest(store, frame, "events", source_name="frame")
    table = _run("quarantine", "--db", db)
    assert table.exit_code == 0 and "never" in table.stdout and "frame" in table.stdout


def test_python_dash_m_valuerec_is_the_command():
    import subprocess
    import sys

    from valuerec import __version__

    res = subprocess.run(
        [sys.executable, "-m", "valuerec", "--version"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and res.stdout.strip() == f"valuerec {__version__}"


def _strict_json(text: str):
    """Parse as JavaScript's JSON.parse does: NaN and Infinity are errors, not numbers."""

    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_turns_non_finite_numbers_into_null(capsys):
    """json.dumps wrote NaN and Infinity as bare tokens, which strict parsers refuse."""
    import numpy as np

    from valuerec.cli_common import print_json

    print_json({"a": float("nan"), "b": [np.float64("inf"), 1.5], "c": np.int64(3), "d": "x"})
    assert _strict_json(capsys.readouterr().out) == {"a": None, "b": [None, 1.5], "c": 3, "d": "x"}


@pytest.mark.filterwarnings("ignore:no purchase between")  # six users rarely buy
def test_policy_evaluate_json_of_a_tiny_population_with_one_seed(tmp_path):
    """Six users for two days: the relevance baseline earns 0, and the paired ratio divided by
    it (ZeroDivisionError, the run thrown away); one seed gave zero-width intervals [m, m];
    no slate shown gave NDCG NaN, printed as a bare NaN. Now: the seed is left out of the
    ratio and counted, undefined figures are null, and the report still reads the record."""
    from valuerec.report.policy import policy_part, read_policy

    args = ["policy", "evaluate", "--users", "6", "--seeds", "1", "--days", "2",
            "--policies", "relevance,value-aware", "--no-ope", "--json"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rec = _strict_json(res.stdout)
    relevance = rec["policies"][0]
    assert relevance["policy"] == "relevance" and relevance["revenue"] == 0.0
    assert relevance["revenue_low"] is None and relevance["revenue_high"] is None
    pair = rec["paired"]["value-aware vs relevance"]
    assert pair["revenue"] == [None, None, None] and pair["seeds_left_out"]["revenue"] == 1
    path = tmp_path / "policy.json"
    path.write_text(res.stdout, encoding="utf-8")
    part = policy_part(read_policy(path), str(path))
    tables = [getattr(b, "id", None) for b in part.sections[0].blocks]
    assert tables[:2] == ["policy-table", "policy-paired"]
    help_text = " ".join(runner.invoke(app, ["policy", "evaluate", "--help"]).output.split())
    assert "the 95% intervals need 2 or more" in help_text.replace("│ ", "")


def test_an_ingest_that_loses_the_database_says_what_is_stored(tmp_path, monkeypatch):
    """A PostgreSQL restart mid-ingest was a 40-line psycopg traceback."""
    import psycopg

    import valuerec.cli as cli

    def lost(*args, **kwargs):
        raise psycopg.OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(cli, "ingest", lost)
    path = tmp_path / "events.csv"
    path.write_text("user_id,event_type,timestamp\nu1,view,2024-01-01\n")
    res = CliRunner().invoke(cli.app, ["ingest", str(path), "--db", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 2
    said = " ".join(res.output.split())
    assert "lost the database during the ingest" in said and "run the same ingest again" in said
