"""benchmarks/ltv_cdnow.py's protocol on a small synthetic log: every row of its table, the
paired bootstrap against the best baseline and every target line, so a change that breaks the
script (which CI does not run: it takes minutes on CDNOW) fails here."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmark_script import load
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.value.base import value_data
from valuerec.value.ensemble import EnsembleValueModel
from valuerec.value.gbm import LightGBMValueModel
from valuerec.value.models import BTYDValueModel, NaiveValueModel
from valuerec.value.transformer import TransformerValueModel


def test_the_cdnow_protocol_runs_end_to_end_on_a_small_log(tmp_path, monkeypatch, capsys):
    bench = load("ltv_cdnow")
    tiny = {"d_model": 16, "n_heads": 2, "n_layers": 1, "epochs": 3, "n_models": 1, "max_len": 8}
    monkeypatch.setattr(
        bench,
        "models",
        lambda: [
            NaiveValueModel(),
            BTYDValueModel("bgnbd"),
            BTYDValueModel("pareto"),
            LightGBMValueModel(n_estimators=30),
            TransformerValueModel(**tiny),
            EnsembleValueModel(),
        ],
    )
    log = generate(users=800, items=40, days=300, holdout_days=60, seed=4)
    with Store(tmp_path / "log.duckdb") as store:
        ingest(store, pd.concat([log.events, log.holdout_events], ignore_index=True), "events")
        start = pd.Timestamp(log.events["timestamp"].min()).normalize()
        data = value_data(store, start + pd.Timedelta(days=300), 60, sequences=True)
    a, b = bench.halves(data.users)
    assert len(a) + len(b) == len(data.users) and not set(a) & set(b)
    results = bench.run_orientation(data, a, b)
    assert list(results) == ["naive", "bgnbd+gg", "pareto+gg", "lightgbm", "transformer",
                             "ensemble"]  # fmt: skip
    bench.print_table("smoke", results)
    boot = bench.compare(data, b, results)
    assert set(boot) == set(bench.OURS)
    metrics = {k: v["metrics"] for k, v in results.items()}
    # BG/NBD's p_alive is 1 for one-time buyers; its AUC of returning reads p_return
    assert metrics["bgnbd+gg"]["auc_return"] > 0.6
    summary = {"cdnow": {label: {"metrics": metrics, "bootstrap": boot}
                         for label in ("standard", "swapped")}}  # fmt: skip
    bench.targets(summary)
    said = capsys.readouterr().out
    assert said.count("decile MAPE <= 0.10") == 4  # 2 halves x our 2 models
    assert "of the expected count" in said and "best baseline's" in said
    mae = metrics["ensemble"]["mae_transactions_median"]
    assert f"MAE tx (median forecast) <= 0.78: {'met' if mae <= 0.78 else 'MISSED'}" in said
    assert pytest.approx(metrics["ensemble"]["customers"]) == len(b)
