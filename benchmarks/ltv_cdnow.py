"""Customer value on real data: CDNOW master, the classical baselines beside our models.

Protocol (issue 3): calibration 1997-01-01..1997-09-30, holdout the next 39 weeks (to
1998-06-30); repeat purchases, same-day purchases merged. Customers are split 50/50 at random
(seed 42); supervised models train on one half and every model is scored on the other, then
the halves are swapped. One table per orientation, with fit times, a paired bootstrap 95%
interval of the normalized-Gini difference between our models and the best baseline, the
decile MAPE a perfectly calibrated model would score from the scored half's sampling alone
(spend is heavy-tailed, so the target of 0.10 sits near that floor), and the targets checked
in the same run. ``--resplits N`` repeats the protocol on N more random splits and prints each
model's mean over all orientations: one half's decile MAPE is a noisy draw. A second part
generates synthetic logs with drifting purchase rates (trend, seasonality, bursts; truth
known) and compares the sequence model (as fitted at the cut-off; trained on the training half
at 8 earlier monthly cut-offs too: rolling origins; the same with 128 tokens and the periodic
pool; and the ensembles of LightGBM with each of the last two) with LightGBM (with and without
the annual moments of the purchase days among its features) and BG/NBD against the true
expected future spend, beside two references: the Bayes posterior mean under the generator
itself (its priors known; the most any model can attain from the log, so the part of the
+0.03 target that is attainable at all), the same posterior assuming no drift (what
drift-awareness alone adds), and LightGBM given each customer's true (unobservable) drift
multiplier over the holdout window.

    python benchmarks/ltv_cdnow.py [--skip-synthetic | --skip-cdnow] [--resplits N]
        [--synthetic-preset personal-seasons | annual-habits] [--synthetic-users N]
        [--json results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from valuerec.cli_common import strict_json
from valuerec.data import datasets
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import PRESETS as SYNTH_PRESETS
from valuerec.data.synth import generate
from valuerec.data.synth_posterior import posterior_forecast
from valuerec.evaluate.value import evaluate_value, normalized_gini, paired_bootstrap
from valuerec.features.behaviour import ANNUAL_FEATURES
from valuerec.value.base import ValueData, ValueModel, value_data
from valuerec.value.ensemble import EnsembleValueModel
from valuerec.value.gbm import LightGBMValueModel
from valuerec.value.models import BTYDValueModel, NaiveValueModel
from valuerec.value.transformer import TransformerValueModel

BASELINES = ("naive", "bgnbd+gg", "pareto+gg", "lightgbm")
OURS = ("transformer", "ensemble")
console = Console(width=176)


def models() -> list[ValueModel]:
    return [
        NaiveValueModel(),
        BTYDValueModel("bgnbd"),
        BTYDValueModel("pareto"),
        LightGBMValueModel(),
        TransformerValueModel(),
        # stands for EnsembleValueModel.from_fitted over the two above (see run_orientation)
        EnsembleValueModel(),
    ]


#: the benchmark's named split (the issue's protocol)
SPLIT_SEED = 42


def halves(users: pd.Index, seed: int = SPLIT_SEED) -> tuple[pd.Index, pd.Index]:
    order = np.random.default_rng(seed).permutation(len(users))
    half = len(users) // 2
    return users[np.sort(order[:half])], users[np.sort(order[half:])]


def run_orientation(data: ValueData, train: pd.Index, test: pd.Index) -> dict[str, dict]:
    """Fit every model on ``train`` and evaluate it on ``test``."""
    truth = data.labels.loc[test].reset_index()
    train_data, test_data = data.subset(train), data.subset(test)
    results: dict[str, dict] = {}
    fitted: dict[str, ValueModel] = {}
    for model in models():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(model, EnsembleValueModel):
                # the two members were already fitted on the same half: combine, don't refit
                model = EnsembleValueModel.from_fitted(
                    [fitted["lightgbm"], fitted["transformer"]], train_data
                )
                fit_s = results["lightgbm"]["fit_s"] + results["transformer"]["fit_s"]
            else:
                model.fit_data(train_data)
                fit_s = time.perf_counter() - start
            pred = model.predict_data(test_data)
        fitted[model.name] = model
        report = evaluate_value(truth, pred)
        results[model.name] = {"fit_s": fit_s, "metrics": report.metrics, "pred": pred}
        console.print(
            f"  {model.name}: fitted in {fit_s:.1f}s, gini {report.metrics['normalized_gini']:.3f}"
        )
    return results


def print_table(title: str, results: dict[str, dict]) -> None:
    table = Table(title=title)
    cols = (
        "model",
        "gini",
        "decile MAPE",
        "floor",
        "MAE tx",
        "MAE tx mean",
        "RMSE tx",
        "MAE spend",
        "agg err %",
        "top10%",
        "top20%",
        "AUC",
        "F1",
        "cover80",
        "cover50",
        "fit s",
    )
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right")
    for name, r in results.items():
        m = r["metrics"]
        has_interval = name in OURS
        table.add_row(
            name + (" (baseline)" if name in BASELINES else ""),
            f"{m['normalized_gini']:.3f}",
            f"{m['decile_mape']:.3f}",
            f"{m['decile_mape_floor']:.3f}",
            f"{m['mae_transactions_median']:.3f}",
            f"{m['mae_transactions']:.3f}",
            f"{m['rmse_transactions']:.3f}",
            f"{m['mae_spend']:.2f}",
            f"{m['aggregate_error_pct']:+.1f}",
            f"{m['top10_share']:.3f}",
            f"{m['top20_share']:.3f}",
            f"{m['auc_return']:.3f}",
            f"{m['f1_return']:.3f}",
            f"{m['coverage80']:.3f}" if has_interval else "—",
            f"{m['coverage50']:.3f}" if has_interval else "—",
            f"{r['fit_s']:.1f}",
        )
    console.print(table)
    console.print(
        "  floor: the decile MAPE a perfectly calibrated model with the same ranking scores from "
        "this half's sampling alone. MAE tx: absolute error of each model's median count "
        "forecast (pred_transactions_median; the forecast MAE rewards, Gneiting 2011); MAE tx "
        "mean: of the expected count"
    )


def compare(data: ValueData, test: pd.Index, results: dict[str, dict]) -> dict[str, dict]:
    """Paired bootstrap of the Gini difference between each of ours and the best baseline."""
    actual = data.labels.loc[test, "holdout_spend"].to_numpy()
    best = max(BASELINES, key=lambda b: results[b]["metrics"]["normalized_gini"])
    out = {}
    for name in OURS:
        boot = paired_bootstrap(
            actual,
            results[name]["pred"]["pred_spend"].to_numpy(),
            results[best]["pred"]["pred_spend"].to_numpy(),
            n_boot=1000,
            seed=0,
        )
        out[name] = {"vs": best, **boot}
        console.print(
            f"  {name} - {best}: gini difference {boot['diff']:+.4f} "
            f"[95% {boot['low']:+.4f}, {boot['high']:+.4f}], better in {boot['p_better']:.0%} "
            "of resamples"
        )
    return out


def cdnow(cache: Path, resplits: int = 0) -> dict:
    db = cache / "cdnow.duckdb"
    if not db.exists():
        with Store(db) as store:
            datasets.load("cdnow", store)
    with Store(db, read_only=True) as store:
        data = value_data(store, "1997-10-01", 273, sequences=True)
    a, b = halves(data.users)
    console.print(f"CDNOW master: {len(data.users):,} customers; halves {len(a):,} / {len(b):,}")
    summary: dict = {}
    for label, train, test in (("standard", a, b), ("swapped", b, a)):
        console.rule(f"CDNOW, {label} halves: train on {len(train):,}, score {len(test):,}")
        res = run_orientation(data, train, test)
        print_table(f"CDNOW holdout (39 weeks), {label} split", res)
        boot = compare(data, test, res)
        summary[label] = {
            "metrics": {k: v["metrics"] for k, v in res.items()},
            "fit_s": {k: v["fit_s"] for k, v in res.items()},
            "bootstrap": boot,
        }
    if resplits:
        summary["resplits"] = other_splits(data, resplits, summary)
    return summary


def other_splits(data: ValueData, n: int, summary: dict) -> dict[str, dict]:
    """The protocol again on ``n`` more random 50/50 splits (seeds 1..n), both orientations.

    Decile MAPE on one half rides on that half's few large baskets and on the ones the
    models were calibrated on: one split's pass or miss of 0.10 says little. This prints each
    model's mean over every orientation (the benchmark's two included) beside the mean floor.
    """
    per: dict[str, list[dict]] = {}
    for label in ("standard", "swapped"):
        for name, m in summary[label]["metrics"].items():
            per.setdefault(name, []).append(m)
    seeds = [s for s in range(1, n + 2) if s != SPLIT_SEED][:n]  # never the benchmark's own
    for seed in seeds:
        a, b = halves(data.users, seed)
        for label, train, test in ((f"seed {seed}", a, b), (f"seed {seed}, swapped", b, a)):
            console.rule(f"CDNOW, {label}: train on {len(train):,}, score {len(test):,}")
            for name, r in run_orientation(data, train, test).items():
                per[name].append(r["metrics"])
    skipped = f" but {SPLIT_SEED}" if n >= SPLIT_SEED else ""
    table = Table(
        title=f"CDNOW over {2 * (n + 1)} orientations (seed {SPLIT_SEED} and {n} more: "
        f"{seeds[0]}-{seeds[-1]}{skipped}; both halves)"
    )
    for c in ("model", "gini", "- lightgbm", "decile MAPE", "max", "<= 0.10", "floor"):
        table.add_column(c, justify="left" if c == "model" else "right")
    out = {}
    base = [m["normalized_gini"] for m in per["lightgbm"]]
    for name, ms in per.items():
        gini = np.array([m["normalized_gini"] for m in ms])
        mape = np.array([m["decile_mape"] for m in ms])
        floor = np.array([m["decile_mape_floor"] for m in ms])
        out[name] = {
            "gini_mean": float(gini.mean()),
            "gini_minus_lightgbm_mean": float((gini - base).mean()),
            "decile_mape_mean": float(mape.mean()),
            "decile_mape_max": float(mape.max()),
            "decile_mape_met": int((mape <= 0.10).sum()),
            "decile_mape_floor_mean": float(floor.mean()),
            "orientations": len(ms),
            "per_orientation": {"gini": gini.tolist(), "decile_mape": mape.tolist()},
        }
        o = out[name]
        table.add_row(
            name,
            f"{o['gini_mean']:.4f}",
            f"{o['gini_minus_lightgbm_mean']:+.4f}",
            f"{o['decile_mape_mean']:.3f}",
            f"{o['decile_mape_max']:.3f}",
            f"{o['decile_mape_met']}/{len(ms)}",
            f"{o['decile_mape_floor_mean']:.3f}",
        )
    console.print(table)
    return out


#: earlier monthly cut-offs the snapshot Transformer also trains on (rolling origins)
SNAPSHOTS = 8
SNAPSHOT_ROW = f"transformer, {SNAPSHOTS} snapshots"
#: the strongest sequence variant on drifting rates: 128 tokens (a year back for the customers
#: who hold most of the future spend, where 32 reach a median 309 days) and the periodic pool
LONG_TOKENS = 128
POOL_ROW = f"transformer, {SNAPSHOTS} snapshots, {LONG_TOKENS} tokens + periodic pool"
ENSEMBLE_ROW = f"ensemble, lightgbm + {POOL_ROW}"
ENSEMBLE_SNAPSHOT_ROW = f"ensemble, lightgbm + {SNAPSHOT_ROW}"
NO_ANNUAL_ROW = "lightgbm, no annual moments"
#: The synthetic part keeps the LightGBM its published figures were measured with: one model,
#: not the bag of 5 that is now the default (measured on CDNOW's decile calibration)
SYNTH_LGB = {"n_models": 1}
BAYES_ROW = "bayes posterior (knows the generator)"
BAYES_STATIONARY_ROW = "bayes posterior, no-drift prior"

#: synthetic settings: shared seasons (the default) or each customer's own annual season
PRESETS = {name: make for name, make in SYNTH_PRESETS.items() if name != "stationary"}


def synthetic(users: int = 20_000, preset: str = "drifting") -> dict:
    """Drifting purchase rates: does reading the sequence pay off where RFM goes stale?"""
    # a year of history unless the preset asks for more (annual-habits: two)
    cfg = PRESETS[preset](users=users, items=500, holdout_days=90, seed=11)
    data_syn = generate(cfg)
    snapshots = TransformerValueModel(snapshots=SNAPSHOTS)
    pooled_long = TransformerValueModel(
        snapshots=SNAPSHOTS, max_len=LONG_TOKENS, periodic_pool=True
    )
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "syn.duckdb") as store:
        ingest(store, data_syn.items, "items")
        ingest(store, data_syn.events, "events")
        ingest(store, data_syn.holdout_events, "events")  # the future the labels come from
        end = pd.Timestamp(cfg.start) + pd.Timedelta(days=cfg.days)
        data = value_data(store, end, cfg.holdout_days, sequences=True)
        a, b = halves(data.users)
        # the training half again at monthly earlier cut-offs (what fit(store, ...) reads)
        pooled = snapshots.training_data(store, end, cfg.holdout_days, users=a)
        # token ids must mean the same in training and scoring (both built before `end`)
        assert pooled.sequences.vocab == data.sequences.vocab
        # the same, with 128 tokens per customer
        data_long = value_data(store, end, cfg.holdout_days, sequences=True, max_len=LONG_TOKENS)
        pooled_long_data = pooled_long.training_data(store, end, cfg.holdout_days, users=a)
        assert pooled_long_data.sequences.vocab == data_long.sequences.vocab
    truth = data_syn.truth.set_index("user_id").loc[data.users]
    expected = truth.loc[b, "expected_holdout_spend"].to_numpy()
    realised = truth.loc[b, "holdout_spend"].to_numpy()

    def scored(model: ValueModel, data: ValueData, train: ValueData | None = None) -> dict:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit_data(data.subset(a) if train is None else train)
            pred = model.predict_data(data.subset(b))["pred_spend"].to_numpy()
        return row(pred, time.perf_counter() - start, model)

    def row(pred: np.ndarray, fit_s: float, model: ValueModel | None = None) -> dict:
        return {
            "gini_expected": normalized_gini(expected, pred),
            "gini_realised": normalized_gini(realised, pred),
            "fit_s": fit_s,
            "pred": pred,
            "model": model,
        }

    rows = {
        m.name: scored(m, data)
        for m in (
            BTYDValueModel("bgnbd"),
            LightGBMValueModel(**SYNTH_LGB),
            TransformerValueModel(),
        )
    }
    # the baseline as first specified: LightGBM on the behaviour features without the
    # annual moments of the purchase days, which were added for logs like these
    rfm_only = dataclasses.replace(data, features=data.features.drop(columns=list(ANNUAL_FEATURES)))
    rows[NO_ANNUAL_ROW] = scored(LightGBMValueModel(**SYNTH_LGB), rfm_only)
    rows[SNAPSHOT_ROW] = scored(snapshots, data, pooled)
    rows[POOL_ROW] = scored(pooled_long, data_long, pooled_long_data)
    # the product's ensemble with each snapshot Transformer as its sequence member (no refit;
    # each member reads its own tokens, the ensemble its members' predictions)
    for name, member, member_row, tokens in (
        (ENSEMBLE_ROW, pooled_long, POOL_ROW, data_long),
        (ENSEMBLE_SNAPSHOT_ROW, snapshots, SNAPSHOT_ROW, data),
    ):
        ensemble = EnsembleValueModel.from_fitted(
            [rows["lightgbm"]["model"], member], tokens.subset(a)
        )
        rows[name] = row(
            ensemble.predict_data(tokens.subset(b))["pred_spend"].to_numpy(),
            rows["lightgbm"]["fit_s"] + rows[member_row]["fit_s"],
        )
    # The ceiling of what knowing the drift can add: LightGBM given each customer's true drift
    # multiplier over the holdout window (the rate's integral there / the base rate's), which
    # no model can observe. The sequence model's margin over LightGBM can only be a part of it.
    multiplier = truth["holdout_intensity"] / (truth["purchase_rate_per_day"] * cfg.holdout_days)
    oracle_data = dataclasses.replace(
        data, features=data.features.assign(true_log_drift=np.log(multiplier).to_numpy())
    )
    rows["lightgbm + true drift (ceiling)"] = scored(LightGBMValueModel(**SYNTH_LGB), oracle_data)
    # The attainable: the posterior mean under the generator (priors known, drift sampled);
    # ranking by it maximises the expected Gini sum, so no model fitted on the log beats it on
    # average. The same posterior with a stationary prior shows what reading the drift adds.
    for name, log in (
        (BAYES_ROW, data_syn),
        (BAYES_STATIONARY_ROW, dataclasses.replace(data_syn, config=cfg.without_drift())),
    ):
        start = time.perf_counter()
        pred = posterior_forecast(log, draws=1_000, users=list(b))["expected_holdout_spend"]
        rows[name] = row(pred.to_numpy(), time.perf_counter() - start)
    table = Table(
        title=f"synthetic drifting rates, {preset} ({users:,} users, truth known): normalized "
        "Gini against the true expected and the realised 90-day spend"
    )
    for c in ("model", "gini vs expected", "gini vs realised", "fit s"):
        table.add_column(c, justify="left" if c == "model" else "right")
    for name, r in rows.items():
        table.add_row(
            name, f"{r['gini_expected']:.3f}", f"{r['gini_realised']:.3f}", f"{r['fit_s']:.1f}"
        )
    console.print(table)

    def versus(name: str, base: str, label: str = "", note: str = "") -> dict:
        """Paired-bootstrap Gini difference ``name - base`` against the truth, printed."""
        boot = paired_bootstrap(
            expected, rows[name]["pred"], rows[base]["pred"], n_boot=500, seed=0
        )
        console.print(
            f"  {label}{name} - {base}: {boot['diff']:+.4f} "
            f"[95% {boot['low']:+.4f}, {boot['high']:+.4f}]{note}"
        )
        return boot

    ceiling = versus(
        "lightgbm + true drift (ceiling)", "lightgbm", "headroom: ",
        " (what perfect knowledge of the drift adds)",
    )  # fmt: skip
    attainable = {
        name: versus(name, "lightgbm", "attainable: ") for name in (BAYES_ROW, BAYES_STATIONARY_ROW)
    }
    out = {
        ours: {
            base: versus(ours, base, note=" (target >= +0.03)")
            for base in ("bgnbd+gg", "lightgbm", NO_ANNUAL_ROW)
        }
        for ours in ("transformer", SNAPSHOT_ROW, POOL_ROW, ENSEMBLE_SNAPSHOT_ROW, ENSEMBLE_ROW)
    }
    versus("lightgbm", NO_ANNUAL_ROW, "the annual moments: ")
    return {
        "gini": {
            k: {kk: vv for kk, vv in v.items() if kk not in ("pred", "model")}
            for k, v in rows.items()
        },
        "ours_minus": out,
        "ceiling_minus_lightgbm": ceiling,
        "bayes_minus_lightgbm": attainable,
    }


def targets(summary: dict) -> None:
    console.rule("targets")
    for label in ("standard", "swapped") if "cdnow" in summary else ():
        s = summary["cdnow"][label]
        m = s["metrics"]
        best = max(BASELINES, key=lambda b: m[b]["normalized_gini"])
        for ours in OURS:
            mo = m[ours]
            checks = {
                f"gini >= best baseline ({best} {m[best]['normalized_gini']:.3f})": mo[
                    "normalized_gini"
                ]
                >= m[best]["normalized_gini"],
                "decile MAPE <= 0.10": mo["decile_mape"] <= 0.10,
                "MAE tx (median forecast) <= 0.78": mo["mae_transactions_median"] <= 0.78,
                "80% interval covers 77-83%": 0.77 <= mo["coverage80"] <= 0.83,
                "50% interval covers 47-53%": 0.47 <= mo["coverage50"] <= 0.53,
            }
            # the reference MAEs (BG/NBD 0.819, Pareto/NBD 0.795) are of the expected
            # count; absolute error is minimised by the median, so the target is read on the
            # median forecast and the expectation's figure is printed beside it, with the
            # baselines' own, rather than left out
            mean_base = min(BASELINES, key=lambda b: m[b]["mae_transactions"])
            notes = {
                "decile MAPE <= 0.10": f" ({mo['decile_mape']:.3f}; sampling floor of this half "
                f"{mo['decile_mape_floor']:.3f} [{mo['decile_mape_floor_low']:.3f}, "
                f"{mo['decile_mape_floor_high']:.3f}])",
                "MAE tx (median forecast) <= 0.78": f" ({mo['mae_transactions_median']:.3f}; "
                f"of the expected count {mo['mae_transactions']:.3f}, best baseline's "
                f"{mean_base} {m[mean_base]['mae_transactions']:.3f})",
            }
            for what, ok in checks.items():
                # markup off: rich would read "[standard]" as a style tag and drop it
                console.print(
                    f"  [{label}] {ours}: {what}: {'met' if ok else 'MISSED'}{notes.get(what, '')}",
                    markup=False,
                )
    if "synthetic" in summary:
        syn = summary["synthetic"]
        best = syn["bayes_minus_lightgbm"][BAYES_ROW]
        for ours, against in syn["ours_minus"].items():
            for base, boot in against.items():
                ok = boot["diff"] >= 0.03
                most = (
                    f"; attainable over lightgbm {best['diff']:+.3f}" if base == "lightgbm" else ""
                )
                console.print(
                    f"  [synthetic] {ours} beats {base} by >= 0.03 gini: "
                    f"{'met' if ok else 'MISSED'} ({boot['diff']:+.3f}{most})",
                    markup=False,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-cdnow", action="store_true", help="the synthetic part only")
    parser.add_argument("--synthetic-users", type=int, default=20_000)
    parser.add_argument("--synthetic-preset", choices=sorted(PRESETS), default="drifting")
    parser.add_argument("--cache", type=Path, default=Path("bench-data"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--resplits",
        type=int,
        default=0,
        metavar="N",
        help="also run the CDNOW protocol on N more random splits and print means over all",
    )
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    summary = {} if args.skip_cdnow else {"cdnow": cdnow(args.cache, args.resplits)}
    if not args.skip_synthetic:
        console.rule("synthetic data with drifting purchase rates")
        summary["synthetic"] = synthetic(args.synthetic_users, args.synthetic_preset)
    targets(summary)
    if args.json:
        args.json.write_text(strict_json(summary), encoding="utf-8")


if __name__ == "__main__":
    main()
