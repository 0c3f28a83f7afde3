"""``valuerec value ...``: fit / predict / evaluate / segments on a small synthetic store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from valuerec.artifacts import ArtifactStore, default_root
from valuerec.cli_value import holdout_customers, value_app
from valuerec.data import synth
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.value.base import PRED_COLUMNS, ValueData
from valuerec.value.models import NaiveValueModel
from valuerec.value.registry import (
    MODELS,
    ModelUnavailableError,
    _lazy,
    make_model,
    use_snapshots,
)
from valuerec.value.segments import SEGMENTS

runner = CliRunner()
FITTED = ("naive", "bgnbd", "lightgbm")


@dataclass
class Fitted:
    db: str
    calibration_end: str
    customers: int  # users with a purchase anywhere in the log
    fit: Any  # the CliRunner result of `fit --json`


def _run(*args: str) -> Any:
    return runner.invoke(value_app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fitted]:
    """One store, fitted once: the commands below read its artifacts."""
    data = synth.generate(users=1500, items=100, days=300, holdout_days=60, seed=1)
    db = str(tmp_path_factory.mktemp("value") / "shop.duckdb")
    with Store(db) as store:
        for kind in ("items", "users", "events"):
            ingest(store, getattr(data, kind), kind)
        (customers,) = store.con.execute(
            "SELECT count(DISTINCT user_id) FROM events WHERE event_type = 'purchase'"
        ).fetchone()
    first_day = pd.Timestamp(data.events["timestamp"].min()).normalize()
    cal_end = f"{first_day + pd.Timedelta(days=240):%Y-%m-%d}"
    # (LightGBM runs one thread by default: its spin-waiting OpenMP threads would make a
    # one-second fit take minutes on a busy two-core CI box)
    res = _run(
        "fit", "--db", db, "--models", ",".join(FITTED), "--holdout-days", "60",
        "--calibration-end", cal_end, "--json",
    )  # fmt: skip
    yield Fitted(db, cal_end, int(customers), res)


def test_fit_saves_every_model_and_compares_them(fitted: Fitted) -> None:
    assert fitted.fit.exit_code == 0, fitted.fit.output
    report = json.loads(fitted.fit.stdout)
    assert report["calibration_end"].startswith(fitted.calibration_end)
    assert report["holdout_days"] == 60 and report["holdout_complete"] is True
    assert report["train_customers"] + report["test_customers"] == fitted.customers
    assert 0.1 < report["test_customers"] / fitted.customers < 0.3
    gini = {name: report["models"][name]["metrics"]["normalized_gini"] for name in FITTED}
    assert all(isinstance(g, float) for g in gini.values()), gini
    assert gini["lightgbm"] > gini["naive"], gini

    arts = ArtifactStore(default_root(fitted.db))
    assert arts.names() == [f"value-{n}" for n in sorted(FITTED)]
    for name in FITTED:
        assert arts.current(f"value-{name}") == report["models"][name]["version"] == "v0001"
        meta = arts.meta(f"value-{name}")
        assert meta["model"] == name and meta["holdout_days"] == 60
        assert meta["calibration_end"].startswith(fitted.calibration_end)
        assert meta["fit_seconds"] > 0 and meta["data_fingerprint"] == report["data_fingerprint"]
        assert meta["metrics"]["normalized_gini"] == pytest.approx(gini[name])
        assert len(meta["deciles"]) == 10


def test_fit_prints_a_comparison_table(fitted: Fitted, tmp_path: Path) -> None:
    res = _run(
        "fit", "--db", fitted.db, "--models", "naive", "--holdout-days", "60",
        "--calibration-end", fitted.calibration_end, "--artifacts", str(tmp_path / "arts"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for text in ("model", "gini", "decile MAPE", "MAE tx", "AUC", "fit s", "naive", "v0001"):
        assert text in res.stdout
    assert "would score decile MAPE" in res.stdout and "from sampling alone" in res.stdout
    assert ArtifactStore(tmp_path / "arts").versions("value-naive") == ["v0001"]


def test_predict_writes_one_row_per_customer(fitted: Fitted, tmp_path: Path) -> None:
    path = tmp_path / "pred.csv"
    res = _run("predict", "--db", fitted.db, "--out", str(path))
    assert res.exit_code == 0, res.output
    pred = pd.read_csv(path)
    assert list(pred.columns) == list(PRED_COLUMNS)
    assert len(pred) == fitted.customers and pred["user_id"].is_unique
    assert not pred.isna().any().any()
    assert (pred["ltv"] >= 0).all()

    res = _run("predict", "--db", fitted.db, "--model", "naive", "--horizon-days", "30")
    assert res.exit_code == 0, res.output
    assert "top 20 of" in res.stdout and "30-day horizon" in res.stdout


def test_evaluate_rescores_the_saved_models(fitted: Fitted) -> None:
    res = _run("evaluate", "--db", fitted.db, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["models"]
    fit = json.loads(fitted.fit.stdout)["models"]
    assert sorted(report) == sorted(FITTED)
    for name in FITTED:  # same artifact, customers and window: the same score
        assert report[name]["metrics"]["normalized_gini"] == pytest.approx(
            fit[name]["metrics"]["normalized_gini"]
        )
        assert report[name]["scope"] == "held-out customers"


def test_predict_json_gives_totals_and_the_top_customers(fitted: Fitted, tmp_path: Path) -> None:
    path = tmp_path / "pred.parquet"
    res = _run("predict", "--db", fitted.db, "--model", "bgnbd", "--json", "--out", str(path))
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    every = pd.read_parquet(path)
    assert list(every.columns) == list(PRED_COLUMNS) and len(every) == fitted.customers
    assert report["model"] == "bgnbd" and report["version"] == "v0001"
    assert report["customers"] == fitted.customers and report["out"] == str(path)
    assert report["total_ltv"] == pytest.approx(every["ltv"].sum())
    top = pd.DataFrame(report["top"])
    assert list(top.columns) == list(PRED_COLUMNS) and len(top) == 20
    expected = every.sort_values(["ltv", "user_id"], ascending=[False, True]).head(20)
    assert top["user_id"].tolist() == expected["user_id"].tolist()


def test_evaluate_gives_the_decile_table(fitted: Fitted) -> None:
    res = _run("evaluate", "--db", fitted.db, "--models", "lightgbm", "--json")
    deciles = json.loads(res.stdout)["models"]["lightgbm"]["deciles"]
    fit = json.loads(fitted.fit.stdout)["models"]["lightgbm"]
    assert deciles == fit["deciles"] and [d["decile"] for d in deciles] == list(range(1, 11))
    assert sum(d["customers"] for d in deciles) == json.loads(fitted.fit.stdout)["test_customers"]
    errors = [d["abs_pct_error"] for d in deciles if d["abs_pct_error"] is not None]
    assert sum(errors) / len(errors) == pytest.approx(fit["metrics"]["decile_mape"])
    table = _run("evaluate", "--db", fitted.db, "--models", "lightgbm")
    assert "lightgbm: spend by decile of prediction" in table.stdout
    top = deciles[-1]
    assert f"{top['actual_sum']:,.2f}" in table.stdout


def test_a_later_window_scores_every_customer(fitted: Fitted, tmp_path: Path) -> None:
    """A window after the artifact's training labels holds nothing it learned from: every
    customer is scored, not only the held-out ones."""
    db = str(tmp_path / "later.duckdb")
    shutil.copy(fitted.db, db)
    shutil.copytree(default_root(fitted.db), default_root(db))
    later_log = synth.generate(users=1500, items=100, days=300, holdout_days=60, seed=1)
    with Store(db) as store:  # the 60 days after the fixture's log
        ingest(store, later_log.holdout_events, "events")
    later = f"{pd.Timestamp(fitted.calibration_end) + pd.Timedelta(days=60):%Y-%m-%d}"
    res = _run("evaluate", "--db", db, "--models", "naive", "--calibration-end", later,
               "--holdout-days", "30", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["models"]["naive"]
    assert report["scope"] == "all customers (window after the training labels)"
    assert report["holdout_days"] == 30 and report["calibration_end"].startswith(later)
    with Store(db, read_only=True) as store:
        (customers,) = store.con.execute(
            "SELECT count(DISTINCT user_id) FROM events WHERE event_type = 'purchase' "
            "AND timestamp < ?",
            [later],
        ).fetchone()
    assert report["customers"] == customers and report["metrics"]["customers"] == customers


def test_a_holdout_past_the_end_of_the_log_is_warned_about(fitted: Fitted, tmp_path: Path) -> None:
    late = f"{pd.Timestamp(fitted.calibration_end) + pd.Timedelta(days=40):%Y-%m-%d}"
    res = _run("fit", "--db", fitted.db, "--models", "naive", "--holdout-days", "60",
               "--calibration-end", late, "--artifacts", str(tmp_path / "a"))  # fmt: skip
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "warning:" in said and "after the log's last day" in said
    assert "learn the spend of 40 days they cannot see as zero" in said


def test_segments_json_and_a_parquet_target_list(fitted: Fitted, tmp_path: Path) -> None:
    path = tmp_path / "targets.parquet"
    res = _run("segments", "--db", fitted.db, "--model", "bgnbd", "--segment", "champions",
               "--top", "7", "--out", str(path), "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    sizes = {s["segment"]: s["users"] for s in report["segments"]}
    assert set(sizes) <= set(SEGMENTS) and sum(sizes.values()) == fitted.customers
    targets = pd.read_parquet(path)
    assert len(targets) == min(7, sizes.get("champions", 0)) > 0
    assert targets["ltv"].is_monotonic_decreasing


def test_a_horizon_that_is_no_number_of_days_is_a_usage_error(fitted: Fitted) -> None:
    for bad in ("nan", "inf", "1e308", "-5"):
        for command in ("predict", "segments"):
            res = _run(command, "--db", fitted.db, "--model", "naive", "--horizon-days", bad)
            assert res.exit_code == 2, (command, bad, res.output)
            assert "--horizon-days must be in (0, 36525] days" in res.output


def test_evaluate_warns_about_a_window_past_the_end_of_the_log(fitted: Fitted) -> None:
    late = f"{pd.Timestamp(fitted.calibration_end) + pd.Timedelta(days=30):%Y-%m-%d}"
    res = _run("evaluate", "--db", fitted.db, "--models", "naive", "--calibration-end", late,
               "--holdout-days", "60", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    said = " ".join(res.stderr.split())
    assert "naive: the holdout window ends" in said and "its last 30 days are unseen" in said
    report = json.loads(res.stdout)["models"]["naive"]
    assert report["holdout_complete"] is False
    res = _run("evaluate", "--db", fitted.db, "--models", "naive", "--json")
    assert json.loads(res.stdout)["models"]["naive"]["holdout_complete"] is True
    assert "warning" not in res.stderr


def test_evaluate_refuses_a_holdout_of_zero_days(fitted: Fitted) -> None:
    # 0 was read as "not given" and silently became the fit's window
    res = _run("evaluate", "--db", fitted.db, "--models", "naive", "--holdout-days", "0")
    assert res.exit_code == 2 and "Invalid value for '--holdout-days'" in res.output


def test_a_holdout_past_a_century_is_a_usage_error_before_any_fit(fitted: Fitted) -> None:
    # it overflowed the date arithmetic (a traceback), or was refused after every fit
    for command in ("fit", "evaluate"):
        res = _run(command, "--db", fitted.db, "--models", "naive", "--holdout-days", "800000")
        assert res.exit_code == 2, res.output
        assert "Invalid value for '--holdout-days'" in res.output
        assert "36525" in " ".join(res.output.split()) and "Traceback" not in res.output


def test_held_out_customers_are_stable() -> None:
    users = [f"u{i}" for i in range(2000)]
    mask = holdout_customers(users, 0.2, "salt")
    assert 0.17 < mask.mean() < 0.23
    assert (holdout_customers(users[::-1], 0.2, "salt") == mask[::-1]).all()
    assert not holdout_customers(users, 0.0, "salt").any()


def test_segments_prints_every_segment_and_exports_a_target_list(
    fitted: Fitted, tmp_path: Path
) -> None:
    path = tmp_path / "targets.csv"
    res = _run("segments", "--db", fitted.db, "--out", str(path), "--top", "25")
    assert res.exit_code == 0, res.output
    for name in SEGMENTS:
        assert name in res.stdout
    targets = pd.read_csv(path)
    assert 0 < len(targets) <= 25
    assert targets["ltv"].is_monotonic_decreasing
    assert {"user_id", "ltv", "p_alive", "last_purchase"} <= set(targets.columns)
    # the API's spelling names the same segment (it was "unknown segment" here)
    slugged = tmp_path / "slug.csv"
    res = _run("segments", "--db", fitted.db, "--out", str(slugged), "--top", "25",
               "--segment", "At-Risk-High-Value")  # fmt: skip
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_csv(slugged), targets)


def test_user_errors_exit_2_with_a_message(fitted: Fitted, tmp_path: Path) -> None:
    res = _run("fit", "--db", fitted.db, "--models", "naive,nope")
    assert res.exit_code == 2 and "unknown value model 'nope'" in res.output
    assert "lightgbm" in res.output  # the message lists the names
    res = _run("predict", "--db", fitted.db, "--model", "nope")
    assert res.exit_code == 2 and "unknown value model 'nope'" in res.output
    res = _run("predict", "--db", fitted.db, "--model", "pareto")
    assert res.exit_code == 2 and "no artifact named 'value-pareto'" in res.output
    res = _run("fit", "--db", fitted.db, "--models", "naive", "--calibration-end", "2031-01-01")
    assert res.exit_code == 2 and "after the last purchase event" in res.output
    res = _run("segments", "--db", fitted.db, "--segment", "vip")
    assert res.exit_code == 2 and "unknown segment 'vip'" in res.output
    res = _run("predict", "--db", str(tmp_path / "missing.duckdb"))
    assert res.exit_code == 2 and "no store at" in res.output
    assert not (tmp_path / "missing.duckdb").exists()


def test_a_future_dated_event_is_warned_about_when_the_cut_off_is_a_default(
    fitted: Fitted, tmp_path: Path
) -> None:
    db = tmp_path / "future.duckdb"
    shutil.copy(fitted.db, db)
    with Store(str(db)) as store:
        buyer = store.con.execute(
            "SELECT user_id, item_id FROM events WHERE event_type = 'purchase' LIMIT 1"
        ).fetchone()
        row = {"user_id": buyer[0], "item_id": buyer[1], "event_type": "purchase"}
        ingest(store, pd.DataFrame([{**row, "timestamp": "2030-06-01", "value": 20.0}]), "events")
    said = "1 event is dated after today (latest 2030-06-01)"
    res = _run("fit", "--db", str(db), "--models", "naive", "--holdout-days", "60")
    assert "warning:" in res.output and said in res.output
    res = _run("predict", "--db", str(db), "--model", "naive", "--out", str(tmp_path / "p.csv"))
    assert res.exit_code == 0 and said in res.output
    # an explicit cut-off is the user's choice: nothing to warn about
    res = _run(
        "fit", "--db", str(db), "--models", "naive", "--holdout-days", "60",
        "--calibration-end", fitted.calibration_end,
    )  # fmt: skip
    assert res.exit_code == 0 and "warning:" not in res.output


def test_registry_builds_models_and_names_unavailable_ones(monkeypatch) -> None:
    assert make_model("naive").name == "naive"
    assert make_model(" BGNBD ").name == "bgnbd+gg"
    assert make_model("lightgbm").name == "lightgbm"
    assert {"naive", "bgnbd", "pareto", "lightgbm", "transformer", "ensemble"} <= set(MODELS)
    with pytest.raises(ValueError, match=r"unknown value model 'x'.*naive, bgnbd"):
        make_model("x")
    monkeypatch.setitem(MODELS, "transformer", _lazy("valuerec.value.not_there", "Model"))
    with pytest.raises(ModelUnavailableError, match=r"'transformer' is unavailable.*not_there"):
        make_model("transformer")
    res = _run("fit", "--models", "naive,transformer")
    assert res.exit_code == 2 and "'transformer' is unavailable" in res.output


def test_fit_reports_a_failing_model_and_keeps_the_others(
    fitted: Fitted, tmp_path: Path, monkeypatch
) -> None:
    class Broken(NaiveValueModel):
        def _fit(self, data: ValueData) -> None:
            raise RuntimeError("boom")

    monkeypatch.setitem(MODELS, "pareto", Broken)
    arts = tmp_path / "arts"
    res = _run(
        "fit", "--db", fitted.db, "--models", "pareto,naive", "--holdout-days", "60",
        "--calibration-end", fitted.calibration_end, "--artifacts", str(arts), "--json",
    )  # fmt: skip
    assert res.exit_code == 1
    report = json.loads(res.stdout)["models"]
    assert report["pareto"]["error"] == "RuntimeError: boom" and report["pareto"]["version"] is None
    assert report["naive"]["version"] == "v0001"
    assert ArtifactStore(arts).names() == ["value-naive"]


def test_fit_on_every_customer_is_not_scored(fitted: Fitted, tmp_path: Path) -> None:
    res = _run(
        "fit", "--db", fitted.db, "--models", "naive", "--holdout-days", "60",
        "--test-fraction", "0", "--artifacts", str(tmp_path / "arts"), "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["test_customers"] == 0 and report["train_customers"] == fitted.customers
    assert report["models"]["naive"]["metrics"] is None and "not scored" in report["note"]
    # default calibration end: the holdout is the last 60 days of the log
    assert report["holdout_complete"] is True


def test_snapshots_go_to_the_models_that_learn_from_them() -> None:
    ensemble = make_model("ensemble")
    assert use_snapshots(ensemble, 8)
    lgb, sequence = ensemble.members
    assert sequence.snapshots == 8 and sequence._snapshot_shifts()[-1] == 8 * 30
    assert not hasattr(lgb, "snapshots") and lgb._snapshot_shifts() == []
    assert use_snapshots(make_model("transformer"), 2)
    assert not use_snapshots(make_model("lightgbm"), 2)
    assert not use_snapshots(make_model("bgnbd"), 2)
    with pytest.raises(ValueError, match="snapshots must be >= 0"):
        use_snapshots(make_model("transformer"), -1)


def test_fit_with_snapshots_trains_the_transformer_on_earlier_cutoffs(
    fitted: Fitted, tmp_path: Path, monkeypatch, transformer_fit_rows: list[int]
) -> None:
    from valuerec.value.transformer import TransformerValueModel

    monkeypatch.setitem(
        MODELS,
        "transformer",
        lambda: TransformerValueModel(
            d_model=8, n_heads=1, n_layers=1, epochs=1, n_models=1, max_len=4
        ),
    )
    arts = tmp_path / "arts"
    args = ("--db", fitted.db, "--holdout-days", "60", "--calibration-end", fitted.calibration_end)
    res = _run("fit", *args, "--models", "naive,transformer", "--snapshots", "2",
               "--artifacts", str(arts), "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["snapshots"] == 2 and report["models"]["transformer"]["version"] == "v0001"
    # the training customers again as seen 30 and 60 days earlier: more rows than customers
    assert len(transformer_fit_rows) == 1
    assert transformer_fit_rows[0] > report["train_customers"]
    model, meta = ArtifactStore(arts).load("value-transformer")
    assert model.snapshots == 2 and meta["snapshots"] == 2
    res = _run("fit", *args, "--models", "naive,lightgbm", "--snapshots", "2")
    assert res.exit_code == 2 and "--snapshots applies to transformer and ensemble" in res.output
    res = _run("fit", *args, "--models", "transformer", "--snapshots", "-1")
    assert res.exit_code == 2 and "--snapshots must be >= 0" in res.output


def test_a_log_shorter_than_the_default_holdout_says_what_to_give(tmp_path):
    """The default split holds out the last 273 days: on a 200-day log it left no
    calibration period, and the error did not say that a shorter --holdout-days fixes it.
    A successful fit writes nothing on stderr (no progress bar off a terminal)."""
    data = synth.generate(users=80, items=10, days=200, seed=1)
    db = tmp_path / "short.duckdb"
    with Store(db) as store:
        ingest(store, data.events, "events")
    res = runner.invoke(value_app, ["fit", "--db", str(db), "--models", "naive"])
    assert res.exit_code == 2
    assert "no more than the 273-day holdout: give a shorter --holdout-days (e.g. " in " ".join(
        res.output.split()
    )
    res = runner.invoke(value_app, ["fit", "--db", str(db), "--models", "naive",
                                    "--holdout-days", "60", "--json"])  # fmt: skip
    assert res.exit_code == 0 and res.stderr == ""


def test_a_damaged_or_foreign_artifact_is_one_error_line_naming_it(
    fitted: Fitted, tmp_path: Path
) -> None:
    """A recommender's pickle in a value model's folder was an AttributeError traceback; a
    truncated pickle's error named neither the version nor the folder; a broken CURRENT was
    answered with "run `valuerec value fit` first", and a version without meta.json was
    called "missing"."""
    db = str(tmp_path / "copy.duckdb")
    shutil.copy(fitted.db, db)
    shutil.copytree(default_root(fitted.db), default_root(db))
    arts = ArtifactStore(default_root(db))
    version = arts.current("value-naive")
    folder = arts.root / "value-naive" / version

    def error(model: str) -> str:
        res = _run("predict", "--db", db, "--model", model, "--out", str(tmp_path / "p.csv"))
        assert res.exit_code == 2, res.output
        return "".join(res.output.split())  # rich wraps long paths anywhere

    pickled = (folder / "model.pkl").read_bytes()
    (folder / "model.pkl").write_bytes(pickled[:100])
    assert f"cannotloadvalue-naive{version}({folder}):UnpicklingError" in error("naive")
    (folder / "model.pkl").write_bytes(pickled)
    new = arts.save("value-naive", {"a recommender": "or anything else"})
    assert f"value-naive{new}({folder.parent / new})holdsadict,notavaluemodel" in error("naive")
    (arts.root / "value-bgnbd" / "CURRENT").write_text("garbage\n")
    out = error("bgnbd")
    assert f"{arts.root}/value-bgnbd/CURRENT:notaversion:'garbage'" in out
    assert "valuefit" not in out  # re-fitting is no advice for a broken pointer
    arts.promote("value-naive", version)
    (folder / "meta.json").unlink()
    assert f"value-naive'scurrentversion{version}isincomplete({folder}/meta.jsonismissing)" in (
        error("naive")
    )


def test_an_explicit_cut_off_works_in_a_log_with_a_placeholder_date(tmp_path: Path) -> None:
    """An event dated 9999-12-31 leaves the log no end; the error for a default cut-off says
    to give one, and given, `fit` and `evaluate` had still died on the "holdout past the log"
    warning's check (a SplitError traceback)."""
    data = synth.generate(users=300, items=30, days=200, holdout_days=30, seed=3)
    db = str(tmp_path / "far.duckdb")
    far = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "event_type": ["view"],
                        "timestamp": [pd.Timestamp("9999-12-31")]})  # fmt: skip
    with Store(db) as store:
        ingest(store, data.events, "events")
        ingest(store, far, "events")
    first = pd.Timestamp(data.events["timestamp"].min()).normalize()
    cut = f"{first + pd.Timedelta(days=150):%Y-%m-%d}"
    for command in ("fit", "evaluate"):
        args = ["--db", db, "--models", "naive", "--calibration-end", cut, "--holdout-days", "30"]
        res = runner.invoke(value_app, [command, *args])
        assert res.exit_code == 0, res.output
