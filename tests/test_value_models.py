"""Every value model behind one interface: the prediction frame's contract, horizons and
discounting, later cut-offs, pickling, ranking and interval quality on synthetic customers
whose truth is known, and bad input."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import gammaln

from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.evaluate.value import interval_coverage, normalized_gini
from valuerec.features.rfm import rfm_summary
from valuerec.features.sequences import UNKNOWN, build_sequences
from valuerec.features.split import SplitError, TemporalSplit, log_end
from valuerec.nn.ziln import EXCLUDES_ZERO
from valuerec.value.base import (
    PRED_COLUMNS,
    ValueData,
    ValueModel,
    discount_factors,
    snapshot_data,
    value_data,
)
from valuerec.value.counts import count_quantile, scaled_quantile
from valuerec.value.ensemble import EnsembleValueModel
from valuerec.value.gbm import LightGBMValueModel
from valuerec.value.models import BTYDValueModel, NaiveValueModel
from valuerec.value.registry import make_model
from valuerec.value.transformer import TransformerValueModel, _customer_folds

START = pd.Timestamp("2024-01-01")
DAYS, HOLDOUT = 300, 60
CAL = START + pd.Timedelta(days=DAYS)  # the synth truth's cut-off
LATER = CAL + pd.Timedelta(days=30)
NEW_ITEM = "brand-new-item"


def tiny_transformer(**options: Any) -> TransformerValueModel:
    # Tiny but trained: 8 epochs of 64-customer batches (~110 steps). With 3 epochs of 256
    # (~12 steps) the network is still at its initialisation and ranks at random.
    return TransformerValueModel(
        **{
            "d_model": 16,
            "n_heads": 2,
            "n_layers": 1,
            "epochs": 8,
            "batch_size": 64,
            "lr": 5e-3,
            "n_models": 1,
            "max_len": 8,
            **options,
        }
    )


FACTORIES: dict[str, Callable[[], ValueModel]] = {
    "naive": NaiveValueModel,
    "bgnbd": lambda: BTYDValueModel("bgnbd"),
    "pareto": lambda: BTYDValueModel("pareto"),
    "lightgbm": lambda: LightGBMValueModel(n_estimators=50),
    "transformer": tiny_transformer,
    "ensemble": lambda: EnsembleValueModel(
        members=[LightGBMValueModel(n_estimators=50), tiny_transformer()]
    ),
}
ALL = list(FACTORIES)
POINT = ["naive", "bgnbd", "pareto", "lightgbm"]  # no predictive distribution
DISTRIBUTIONAL = ["transformer", "ensemble"]
NUMERIC_COLUMNS = [c for c in PRED_COLUMNS if c != "user_id"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # one intra-op thread: on a 2-core machine shared with LightGBM (or anything else) the
    # default spins and makes the tiny network 5-10x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def new_store(path: Path, *frames: pd.DataFrame, items: pd.DataFrame | None = None) -> Store:
    store = Store(path)
    for frame in frames:
        result = ingest(store, frame, "events")
        assert result.quarantined == 0
    if items is not None:
        ingest(store, items, "items")
    return store


@dataclass
class World:
    store: Store  # the synthetic log and its holdout window
    future: Store  # the same, plus events after the calibration end
    train: list[str]
    test: list[str]
    truth: pd.DataFrame  # indexed by user_id
    customers: set[str]
    later_buyers: list[str]  # bought the new item between CAL and LATER


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # seed 4: Pareto/NBD converges in well under a second (on seeds 0, 1 and 3 the train
    # customers put its optimum on the s, beta -> inf ridge and Nelder-Mead crawls for ~20 s)
    data = generate(users=1500, items=80, days=DAYS, holdout_days=HOLDOUT, seed=4)
    tmp = tmp_path_factory.mktemp("value")
    events = pd.concat([data.events, data.holdout_events], ignore_index=True)
    store = new_store(tmp / "synth.duckdb", events, items=data.items)
    users = np.sort(data.truth["user_id"].to_numpy())
    perm = np.random.default_rng(0).permutation(users)
    train, test = sorted(perm[:1000]), sorted(perm[1000:])
    # after the calibration end: an item and an event type never seen before, a far-future
    # purchase of an existing customer and a customer who only appears in the future
    later_buyers = test[:40]
    extra = pd.DataFrame(
        {
            "user_id": later_buyers * 2 + [test[0], "future-only-user"],
            "item_id": [NEW_ITEM] * 80 + [NEW_ITEM, NEW_ITEM],
            "event_type": ["purchase"] * 40 + ["wishlist"] * 40 + ["purchase", "purchase"],
            "timestamp": [CAL + pd.Timedelta(days=3, hours=i % 17) for i in range(80)]
            + [pd.Timestamp("2030-06-01"), pd.Timestamp("2030-06-02")],
            "value": [500.0] * 40 + [None] * 40 + [1000.0, 1000.0],
        }
    )
    future = new_store(tmp / "future.duckdb", events, extra, items=data.items)
    customers = set(rfm_summary(store, CAL).index)
    yield World(
        store, future, train, test, data.truth.set_index("user_id"), customers, later_buyers
    )
    store.close()
    future.close()


@pytest.fixture(scope="module")
def fitted(world: World) -> dict[str, ValueModel]:
    return {
        name: make().fit(world.store, CAL, holdout_days=HOLDOUT, users=world.train)
        for name, make in FACTORIES.items()
    }


@pytest.fixture(scope="module")
def preds(fitted: dict[str, ValueModel]) -> dict[str, pd.DataFrame]:
    """Every model's predictions for every customer at the calibration end."""
    return {name: model.predict() for name, model in fitted.items()}


# ---------------------------------------------------------------------- the prediction frame


@pytest.mark.parametrize("name", ALL)
def test_prediction_frame_contract(name, world, fitted, preds):
    pred = preds[name]
    assert list(pred.columns) == list(PRED_COLUMNS)
    assert pred["user_id"].is_unique
    assert set(pred["user_id"]) == world.customers and len(pred) == 1500
    values = pred[NUMERIC_COLUMNS].to_numpy(float)
    assert np.isfinite(values).all()
    assert (values >= 0).all()  # counts, money and probabilities are never negative
    assert pred["p_alive"].between(0, 1).all() and pred["p_return"].between(0, 1).all()
    assert (pred["ltv"] >= 0).all() and (pred["ltv"] <= pred["pred_spend"] + 1e-9).all()
    # (not ltv_low <= ltv: a mean need not lie in a central interval, see value/base.py)
    assert pred["pred_spend"].gt(0).any() and pred["pred_transactions"].gt(0).any()
    # users= picks and orders rows
    some = pred["user_id"].iloc[[7, 3, 11]].tolist()
    sub = fitted[name].predict(users=some)
    assert sub["user_id"].tolist() == some
    # (float32 networks: the batch a customer is scored in moves the 7th digit)
    pd.testing.assert_frame_equal(
        sub.set_index("user_id"),
        pred.set_index("user_id").loc[some],
        check_exact=False,
        rtol=1e-5,
    )


@pytest.mark.parametrize("name", ["bgnbd", "pareto"])
def test_btyd_p_return_is_buying_in_the_horizon_not_being_alive(name, world, fitted, preds):
    """BG/NBD's p_alive is 1 for every one-time buyer (only a purchase can be followed by
    death), but such a customer may well not buy in the next 60 days: p_return is
    1 - P(no purchase in the horizon) from the model's own count distribution, and it follows
    the horizon."""
    pred = preds[name].set_index("user_id")
    rfm = rfm_summary(world.store, CAL).loc[pred.index]
    once = (rfm["frequency"] == 0).to_numpy()
    assert once.sum() > 100
    if name == "bgnbd":
        np.testing.assert_allclose(pred["p_alive"][once], 1.0)
    tm = fitted[name].transaction_model_
    none = tm.conditional_probability_of_n_purchases_up_to_time(
        0, HOLDOUT / 7.0, rfm["frequency"], rfm["recency"], rfm["T"]
    )
    np.testing.assert_allclose(pred["p_return"], 1.0 - np.asarray(none, float), rtol=1e-9)
    assert pred["p_return"][once].max() < 0.9
    assert (pred["p_return"] <= pred["p_alive"] + 1e-12).all()  # buying needs being alive
    longer = fitted[name].predict(horizon_days=4 * HOLDOUT).set_index("user_id")
    assert (longer["p_return"] > pred["p_return"]).all()


@pytest.mark.parametrize("name", ["lightgbm", "transformer", "ensemble", "naive"])
def test_p_return_of_other_models_is_their_p_alive(name, preds):
    """Supervised models' p_alive already is P(buy within the trained horizon) (their count
    distribution's 1 - P(0)); naive has no distribution and says 1 or 0, which a customer
    expected to buy less than once cannot reach (P(N >= 1) <= E[N])."""
    pred = preds[name]
    expected = pred["p_alive"]
    if name == "naive":
        expected = np.minimum(expected, pred["pred_transactions"])
        assert (expected < pred["p_alive"]).any()
    np.testing.assert_allclose(pred["p_return"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_no_count_is_positive_more_often_than_its_mean(name, fitted, world):
    """P(N >= 1) <= E[N] for any count, and the count distribution's mean is the reported
    expectation. LightGBM's classifier and count booster disagree on short horizons (p > mu):
    its hurdle then had the mean p, and p_return exceeded pred_transactions."""
    model = fitted[name]
    for horizon in (HOLDOUT, 7):
        pred = model.predict(horizon_days=horizon)
        assert (pred["p_return"] <= pred["pred_transactions"] + 1e-9).all(), horizon
    data = _test_data(world, model)
    found = model._count_pmf(data, HOLDOUT)
    if found is not None:
        pmf, _ = found
        rows = np.arange(len(data.users))
        mean = sum(n * pmf(n, rows) for n in range(300))
        expected = model.predict_data(data)["pred_transactions"].to_numpy()
        np.testing.assert_allclose(mean, expected, rtol=1e-4, atol=1e-9)


def test_lightgbm_on_a_short_horizon_keeps_its_count_mean(world):
    """Trained on 14 days, LightGBM's classifier says p > mu for many customers; the hurdle
    then caps p at mu (returners buy once) instead of reporting a mean of p."""
    model = LightGBMValueModel(n_estimators=50, n_models=1).fit(
        world.store, CAL, holdout_days=14, users=world.train
    )
    data = value_data(world.store, CAL, 14, users=world.test)
    pred = model.predict_data(data)
    x = model._features(data)
    assert (model._p_return(x) > model.count_.predict(x)).sum() > 20  # the disagreement
    assert (pred["p_return"] <= pred["pred_transactions"] + 1e-9).all()
    np.testing.assert_allclose(pred["p_alive"], pred["p_return"], rtol=1e-6, atol=1e-9)
    pmf, _ = model._count_pmf(data, 14)
    rows = np.arange(len(data.users))
    mean = sum(n * pmf(n, rows) for n in range(300))
    np.testing.assert_allclose(mean, pred["pred_transactions"], rtol=1e-4, atol=1e-9)


def test_users_given_as_numbers_or_one_id_alone(tmp_path, small_log):
    """The store keeps ids as text: predict([19]) said customer 19 had no purchase, and
    predict("u0") failed inside pandas."""
    numbered = small_log.assign(user_id=small_log["user_id"].str.extract(r"(\d+)$")[0].astype(int))
    store = new_store(tmp_path / "numbered.duckdb", numbered)
    model = NaiveValueModel().fit(store, log_end(store) - pd.Timedelta(days=30))
    everyone = model.predict()
    first = int(everyone["user_id"].iloc[0])
    expected = everyone.iloc[[0]].reset_index(drop=True)
    for users in ([first], [float(first)], first, str(first), np.int64(first)):
        pd.testing.assert_frame_equal(model.predict(users), expected)
    with pytest.raises(ValueError, match="missing id"):
        model.predict([first, None])
    store.close()


def test_a_transformer_fitted_on_few_customers_spends_at_their_level(tmp_path):
    """Too few out-of-fold customers for the calibration map (500) left the raw lognormal
    mean exp(mu + sigma^2 / 2): on a 60-customer log, 20-60 times any spend seen. Its
    level is now corrected on them: out of fold, predicted and actual totals agree."""
    data = generate(users=150, items=20, days=DAYS, holdout_days=HOLDOUT, seed=2)
    store = new_store(tmp_path / "few.duckdb", data.events, data.holdout_events)
    model = tiny_transformer(n_models=2).fit(store, CAL, holdout_days=HOLDOUT)
    oof = model.oof_spend_
    assert 20 <= len(oof) < 500
    actual = value_data(store, CAL, HOLDOUT).labels.loc[oof.index, "holdout_spend"]
    assert oof.sum() == pytest.approx(actual.sum(), rel=1e-6)
    assert len(model.mean_calibration_.log_pred) == 2  # the level map, not the identity
    store.close()


def test_an_unfitted_value_model_says_so():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="BTYDValueModel is not fitted yet"):
        BTYDValueModel().predict()


def test_a_user_listed_twice_is_a_clear_error(world, fitted):
    users = [world.test[0], world.test[1], world.test[0]]
    with pytest.raises(ValueError, match="1 users are listed more than once"):
        fitted["lightgbm"].predict(users=users)


def test_a_user_without_a_purchase_before_a_cut_inside_a_day_is_told_the_time(tmp_path):
    """The message said "no purchase before 2021-06-01" for a cut at noon (read as midnight)
    to a customer who had bought at 15:00 that day."""
    rows = [("am", "2021-05-01 09:00"), ("am", "2021-06-01 09:00"), ("pm", "2021-06-01 15:00")]
    events = pd.DataFrame(rows, columns=["user_id", "timestamp"]).assign(
        event_type="purchase", value=10.0
    )
    with new_store(tmp_path / "noon.duckdb", events) as store:
        model = NaiveValueModel().fit(store, "2021-06-01 12:00", holdout_days=10)
        with pytest.raises(ValueError, match=r"no purchase before 2021-06-01 12:00:00 .*'pm'"):
            model.predict(users=["am", "pm"], store=store)


def test_a_context_column_constant_in_training_keeps_its_own_scale(monkeypatch):
    """n_clicks was 0 for every training customer (a purchase log): divided by its std
    (+1e-6), one click later read 690,000 standard deviations out and every customer with
    one got the same prediction. A constant column keeps scale 1; others are standardised."""
    model = TransformerValueModel()
    model.context_columns_ = ["n_clicks", "orders"]
    model.context_mean_ = np.array([0.0, 1.0])
    model.context_std_ = np.array([0.0 + 1e-6, 0.5 + 1e-6])  # as fitted: std + 1e-6
    table = pd.DataFrame({"n_clicks": [0.0, 1.0, 3.0], "orders": [np.e - 1] * 3})
    monkeypatch.setattr(model, "_context_table", lambda data: table)
    ctx = model._context(None)
    np.testing.assert_allclose(ctx[:, 0], np.log1p([0.0, 1.0, 3.0]), rtol=1e-6)
    np.testing.assert_allclose(ctx[:, 1], (1.0 - 1.0) / (0.5 + 1e-6), atol=1e-6)


def test_repeat_days_without_a_value_say_nothing_about_spend(tmp_path):
    """A customer whose repeat purchases carry no value has no evidence about their spend:
    Gamma-Gamma weighed their mean of 0 by all 11 repeat days and forecast 4.81 a purchase,
    against a population mean of 69."""
    rng = np.random.default_rng(3)
    rows = []
    for c in range(12):  # valued repeat buyers: the population Gamma-Gamma learns from
        for d in range(1 + c % 5):
            rows.append((f"v{c}", f"2021-01-{1 + 3 * d:02d}", float(rng.gamma(4.0, 15.0))))
    for d in range(12):  # the same 12 days; only the first purchase has a value
        rows.append(("nullval", f"2021-01-{1 + 2 * d:02d}", 30.0 if d == 0 else None))
        rows.append(("valued", f"2021-01-{1 + 2 * d:02d}", 50.0))
    rows.append(("v0", "2021-03-01", 20.0))  # the log goes on past the cut
    events = pd.DataFrame(rows, columns=["user_id", "timestamp", "value"]).assign(
        event_type="purchase"
    )
    with new_store(tmp_path / "novalue.duckdb", events) as store:
        model = BTYDValueModel().fit(store, "2021-02-01", holdout_days=30)
        rfm = rfm_summary(store, "2021-02-01")
        assert rfm.loc[["nullval", "valued"], "monetary_days"].tolist() == [0, 11]
        pred = model.predict(users=["nullval", "valued"], store=store).set_index("user_id")
    per_purchase = pred["pred_spend"] / pred["pred_transactions"]
    gg = model.spend_model_
    population = gg.conditional_expected_average_profit(0, 0.0)
    assert per_purchase["nullval"] == pytest.approx(population)
    assert per_purchase["valued"] == pytest.approx(gg.conditional_expected_average_profit(11, 50.0))


@pytest.mark.parametrize("name", ["lightgbm", "transformer", "ensemble"])
def test_p_return_of_supervised_models_follows_the_horizon(name, fitted, preds):
    """Their count distribution is for the trained horizon; at another one the same
    constant-rate assumption that rescales their counts gives P(none) = P0 ** scale, and no
    count is positive more often than its mean (P(N >= 1) <= E[N])."""
    at = preds[name]
    day = fitted[name].predict(horizon_days=1)
    year = fitted[name].predict(horizon_days=6 * HOLDOUT)
    assert (day["p_return"] <= day["pred_transactions"] + 1e-12).all()
    assert (day["p_return"] < at["p_return"]).all() and (at["p_return"] < year["p_return"]).all()
    scaled = 1.0 - (1.0 - at["p_return"]) ** 6
    np.testing.assert_allclose(
        year["p_return"], np.minimum(scaled, year["pred_transactions"]), rtol=1e-6, atol=1e-9
    )
    np.testing.assert_array_equal(day["p_alive"], at["p_alive"])  # p_alive: trained horizon


@pytest.mark.parametrize("name", POINT)
def test_point_models_return_degenerate_intervals(name, preds):
    pred = preds[name]
    for low, high, point in (
        ("spend_low", "spend_high", "pred_spend"),
        ("spend_low50", "spend_high50", "pred_spend"),
        ("ltv_low", "ltv_high", "ltv"),
    ):
        np.testing.assert_array_equal(pred[low], pred[point])
        np.testing.assert_array_equal(pred[high], pred[point])


@pytest.mark.parametrize("name", DISTRIBUTIONAL)
def test_distributional_intervals(name, preds):
    pred = preds[name]
    assert (pred["spend_high"] > pred["spend_low"]).any()  # real intervals, not points
    assert (pred["spend_low"] <= pred["spend_high"]).all()
    # ziln_interval's documented empty interval (0 excluded, no positive spend in the band)
    nonempty = ~((pred["spend_low"] == EXCLUDES_ZERO) & (pred["spend_high"] == EXCLUDES_ZERO))
    # the 50% interval lies inside the 80% one (same per-user draw u, lower level)
    both = nonempty & ~(
        (pred["spend_low50"] == EXCLUDES_ZERO) & (pred["spend_high50"] == EXCLUDES_ZERO)
    )
    assert (pred.loc[both, "spend_low"] <= pred.loc[both, "spend_low50"]).all()
    assert (pred.loc[both, "spend_high50"] <= pred.loc[both, "spend_high"]).all()
    # LTV bounds are the spend bounds discounted with the same per-customer ratio as the LTV
    np.testing.assert_allclose(
        pred["ltv_high"] * pred["pred_spend"], pred["ltv"] * pred["spend_high"], rtol=1e-9
    )
    np.testing.assert_allclose(
        pred["ltv_low"] * pred["pred_spend"], pred["ltv"] * pred["spend_low"], rtol=1e-9
    )


@pytest.mark.parametrize("name", DISTRIBUTIONAL)
def test_intervals_are_ordered(name, preds):
    pred = preds[name]
    assert (pred["spend_low"] <= pred["spend_high"]).all()
    assert (pred["spend_low50"] <= pred["spend_high50"]).all()
    assert (pred["ltv_low"] <= pred["ltv_high"]).all()


_CALIBRATION = {"transformer": "mean_calibration_", "ensemble": "spend_calibration_"}


@pytest.mark.parametrize("name", DISTRIBUTIONAL)
def test_intervals_belong_to_the_distribution_of_the_reported_mean(name, world, fitted):
    """The intervals are quantiles of one distribution whose mean is ``pred_spend``, so a
    calibration that halves the mean halves every interval end too (a change of scale); only
    ziln_interval's markers (EXCLUDES_ZERO: 0 excluded, empty interval) stay. Before, the
    Transformer calibrated its mean and left its intervals where they were, above the mean."""
    model = pickle.loads(pickle.dumps(fitted[name]))
    before = model.predict(users=world.test, store=world.store)
    calibration = getattr(model, _CALIBRATION[name])
    setattr(model, _CALIBRATION[name], lambda spend: calibration(spend) / 2)
    after = model.predict(users=world.test, store=world.store)
    np.testing.assert_allclose(after["pred_spend"], before["pred_spend"] / 2, rtol=1e-9)
    spend_ends = ("spend_low", "spend_high", "spend_low50", "spend_high50")
    ends = {**{c: c for c in spend_ends}, "ltv_low": "spend_low", "ltv_high": "spend_high"}
    for col, spend_end in ends.items():
        moved = before[spend_end].to_numpy() > 2 * EXCLUDES_ZERO
        assert moved.sum() > 20  # a real check, not one on markers alone
        np.testing.assert_allclose(after[col][moved], before[col][moved] / 2, rtol=1e-6)
        np.testing.assert_array_equal(after[col][~moved], before[col][~moved])


# ------------------------------------------------------------------ horizons and discounting


@pytest.mark.parametrize("name", ["bgnbd", "pareto"])
def test_btyd_longer_horizon_more_spend(name, fitted):
    short = fitted[name].predict(horizon_days=60)
    long = fitted[name].predict(horizon_days=120)
    assert (long["pred_spend"] > short["pred_spend"]).all()
    assert (long["pred_transactions"] > short["pred_transactions"]).all()
    # but less than twice as much: some customers drop out in the meantime
    assert (long["pred_spend"] < 2 * short["pred_spend"]).all()
    np.testing.assert_array_equal(long["p_alive"], short["p_alive"])


@pytest.mark.parametrize("name", ["naive", "lightgbm", "transformer", "ensemble"])
def test_supervised_horizon_rescales_linearly(name, fitted):
    base = fitted[name].predict(horizon_days=HOLDOUT)
    double = fitted[name].predict(horizon_days=2 * HOLDOUT)
    for col in ("pred_spend", "pred_transactions"):
        np.testing.assert_allclose(double[col], 2 * base[col], rtol=1e-9)
    np.testing.assert_array_equal(double["p_alive"], base["p_alive"])


@pytest.mark.parametrize("name", ALL)
def test_higher_discount_rate_lowers_ltv(name, fitted, preds):
    model = fitted[name]
    low_rate = preds[name]
    assert model.discount_rate == 0.01
    model.discount_rate = 0.25
    try:
        high_rate = model.predict()
    finally:
        model.discount_rate = 0.01
    np.testing.assert_array_equal(high_rate["pred_spend"], low_rate["pred_spend"])
    spends = low_rate["pred_spend"] > 0
    assert (high_rate.loc[spends, "ltv"] < low_rate.loc[spends, "ltv"]).all()
    assert (high_rate["ltv"] <= low_rate["ltv"]).all()


def test_naive_ltv_is_spend_times_mean_discount(preds, fitted):
    pred = preds["naive"]
    disc = [1 / 1.01, 1 / 1.01**2]  # two 30-day periods in 60 days
    np.testing.assert_allclose(discount_factors(60, 0.01), disc, rtol=1e-15)
    np.testing.assert_allclose(pred["ltv"], pred["pred_spend"] * np.mean(disc), rtol=1e-12)
    # 31 days: 30 days at 1/1.01 and one at 1/1.01^2 (not half and half)
    short = fitted["naive"].predict(horizon_days=31)
    weights = (30 / 31) / 1.01 + (1 / 31) / 1.01**2
    np.testing.assert_allclose(short["ltv"], short["pred_spend"] * weights, rtol=1e-12)


@pytest.mark.parametrize("horizon", [0, -30, float("nan"), float("inf"), 1e308, 36_526])
def test_a_horizon_that_is_not_a_positive_number_is_refused(horizon, fitted):
    # (a century at most: LTV sums a term per 30-day period, 1e308 days would not fit)
    with pytest.raises(ValueError, match=r"horizon_days must be a number of days in \(0, 36525\]"):
        fitted["naive"].predict(horizon_days=horizon)


@pytest.mark.parametrize("name", ["bgnbd", "pareto"])
@pytest.mark.parametrize("horizon", [45, 60])
def test_btyd_ltv_discounts_its_own_purchase_curve(name, horizon, fitted):
    """LTV over 2 periods = spend of days 0-30 / 1.01 + spend of days 30-horizon / 1.01^2."""
    model = fitted[name]
    first = model.predict(horizon_days=30)["pred_spend"]
    total = model.predict(horizon_days=horizon)
    expected = first / 1.01 + (total["pred_spend"] - first) / 1.01**2
    np.testing.assert_allclose(total["ltv"], expected, rtol=1e-9)


# ------------------------------------------------------------------ later cut-offs, pickling


@pytest.mark.parametrize("name", ["transformer", "lightgbm", "ensemble"])
def test_predict_at_a_later_cutoff(name, world, fitted, preds):
    model = fitted[name]
    vocab = pickle.loads(pickle.dumps(getattr(model, "vocab_", None)))
    later = model.predict(store=world.future, as_of=LATER)
    assert list(later.columns) == list(PRED_COLUMNS)
    assert set(later["user_id"]) == set(rfm_summary(world.future, LATER).index)
    assert np.isfinite(later[NUMERIC_COLUMNS].to_numpy(float)).all()
    assert model.split_.calibration_end == CAL  # predicting does not move the model
    assert getattr(model, "vocab_", None) == vocab
    # the customers who bought in between have new features, hence new predictions
    now = preds[name].set_index("user_id").loc[world.later_buyers, "pred_spend"]
    then = later.set_index("user_id").loc[world.later_buyers, "pred_spend"]
    assert (now != then).mean() > 0.9


def test_later_cutoff_reuses_the_transformer_vocabulary(world, fitted):
    model = fitted["transformer"]
    data = value_data(world.future, LATER, HOLDOUT, labels=False, **model._data_options())
    seq = data.sequences
    assert seq.vocab is model.vocab_
    assert NEW_ITEM not in model.vocab_["item"] and "wishlist" not in model.vocab_["event_type"]
    # ids as a vocabulary built at the later cut-off would give them
    fresh = build_sequences(world.future, LATER, max_len=8, users=seq.users, daily=True)
    np.testing.assert_array_equal(fresh.mask, seq.mask)
    rows = seq.users.get_indexer(world.later_buyers)
    new_item = fresh.item == fresh.vocab["item"][NEW_ITEM]
    new_type = fresh.event_type == fresh.vocab["event_type"]["wishlist"]
    assert new_item[rows].any(axis=1).mean() > 0.8  # (very active buyers pushed it out)
    assert new_type[rows].any(axis=1).mean() > 0.8
    # the new item and the new event type are read as UNKNOWN, never as an id out of range
    assert (seq.item[new_item] == UNKNOWN).all()
    assert (seq.event_type[new_type] == UNKNOWN).all()
    # ... and every other token keeps the id the model was trained with
    names = {i: v for v, i in fresh.vocab["item"].items()}
    known = seq.mask & (seq.item != UNKNOWN)
    trained = {i: v for v, i in model.vocab_["item"].items()}
    assert all(
        trained[a] == names[b] for a, b in zip(seq.item[known], fresh.item[known], strict=True)
    )
    assert seq.item.max() < len(model.vocab_["item"]) + 2
    assert seq.event_type.max() < len(model.vocab_["event_type"]) + 2


@pytest.mark.parametrize("name", ALL)
def test_future_events_never_change_predictions(name, world, fitted, preds):
    model = fitted[name]
    with_future = model.predict(store=world.future, as_of=CAL)
    pd.testing.assert_frame_equal(with_future, preds[name])
    if name in ("naive", "bgnbd", "pareto"):  # unsupervised: refitting reads only the past
        refit = FACTORIES[name]().fit(world.future, CAL, holdout_days=HOLDOUT, users=world.train)
        pd.testing.assert_frame_equal(refit.predict(), preds[name])


@pytest.mark.parametrize("name", ALL)
def test_pickle_round_trip(name, world, fitted, preds):
    model = fitted[name]
    data = value_data(world.store, CAL, HOLDOUT, labels=False, **model._data_options())
    before = model.predict_data(data)
    loaded = pickle.loads(pickle.dumps(model))
    assert not hasattr(loaded, "_store")  # the database handle is not pickled
    pd.testing.assert_frame_equal(loaded.predict_data(data), before)
    pd.testing.assert_frame_equal(before, preds[name])
    with pytest.raises(ValueError, match="predict needs a store"):
        loaded.predict()
    pd.testing.assert_frame_equal(loaded.predict(store=world.store), preds[name])


# ------------------------------------------------------------- quality on held-out customers


def test_models_beat_naive_on_held_out_customers(world, fitted):
    truth = world.truth.loc[world.test, "expected_holdout_spend"].to_numpy()

    def gini(name: str) -> float:
        pred = fitted[name].predict(users=world.test)
        return normalized_gini(truth, pred["pred_spend"].to_numpy())

    naive = gini("naive")
    assert 0.3 < naive < 0.95  # a sane baseline: the comparison means something
    for name in ("lightgbm", "transformer", "ensemble"):
        assert gini(name) > naive, name


def test_transformer_intervals_cover_held_out_customers(world, fitted):
    pred = fitted["transformer"].predict(users=world.test)
    actual = world.truth.loc[world.test, "holdout_spend"].to_numpy()
    cover80 = interval_coverage(actual, pred["spend_low"], pred["spend_high"])
    cover50 = interval_coverage(actual, pred["spend_low50"], pred["spend_high50"])
    assert 0.6 <= cover80 <= 0.95
    assert 0.3 <= cover50 <= 0.7
    assert cover50 < cover80


def test_ensemble_from_fitted_members_reuses_them_without_refitting(world, fitted):
    members = [fitted["lightgbm"], fitted["transformer"]]
    nets = list(fitted["transformer"].nets_)
    train = value_data(world.store, CAL, HOLDOUT, users=world.train)
    ens = EnsembleValueModel.from_fitted(members, train)
    assert ens.members_[1].nets_ == nets  # the very same networks: nothing was retrained
    data = value_data(
        world.store, CAL, HOLDOUT, users=world.test, labels=False, **ens._data_options()
    )
    pred = ens.predict_data(data)
    parts = [m.predict_data(data) for m in members]
    for col in ("pred_transactions", "p_alive"):
        expected = (parts[0][col] + parts[1][col]).to_numpy() / 2
        np.testing.assert_allclose(pred[col].to_numpy(), expected, rtol=1e-9)
    # the Transformer's interval, rescaled from its mean to the ensemble's
    ratio = pred["pred_spend"] / parts[1]["pred_spend"]
    high = parts[1]["spend_high"]
    rescaled = np.where(high > EXCLUDES_ZERO, high * ratio, high)
    np.testing.assert_allclose(pred["spend_high"], rescaled)


def test_transaction_median_beats_the_mean_on_absolute_error(world, fitted):
    model = fitted["transformer"]
    data = value_data(
        world.store,
        CAL,
        HOLDOUT,
        users=world.test,
        sequences=True,
        vocab=model.vocab_,
        max_len=model.max_len,
    )
    median = model.transaction_quantile(data, 0.5)
    raw = model._raw(data)
    # 0 exactly for customers more likely to stay away than to return, >= 1 otherwise
    np.testing.assert_array_equal(median == 0, raw["p_return"] <= 0.5)
    assert set(np.unique(median)) <= set(range(0, 200))
    # a higher level never gives a smaller count
    assert (model.transaction_quantile(data, 0.9) >= median).all()
    actual = world.truth.loc[world.test, "holdout_transactions"].to_numpy()
    mean = model.predict_data(data)["pred_transactions"].to_numpy()
    assert np.abs(median - actual).mean() < np.abs(mean - actual).mean()


# ------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def small_log() -> pd.DataFrame:
    data = generate(users=300, items=30, days=DAYS, holdout_days=HOLDOUT, seed=1)
    return pd.concat([data.events, data.holdout_events], ignore_index=True)


@pytest.mark.parametrize("name", ALL)
def test_no_purchases_is_a_clear_error(name, small_log, tmp_path):
    store = new_store(tmp_path / "views.duckdb", small_log[small_log["event_type"] == "view"])
    with pytest.raises(SplitError, match=r"no purchase events \(its event types: view \("):
        FACTORIES[name]().fit(store, CAL, holdout_days=HOLDOUT)
    store.close()


def test_a_one_day_log_names_times_not_one_date_twice(tmp_path):
    """'calibration_end 2023-03-01 is before the first purchase event (2023-03-01)' read as
    a contradiction: on one day, the times tell them apart; and a scoring cut-off is called
    one, not calibration_end."""
    times = ["2023-03-01 09:00", "2023-03-01 12:30", "2023-03-01 18:00"]
    day = pd.DataFrame(
        {"user_id": ["a", "b", "a"], "event_type": "purchase", "value": 5.0, "timestamp": times}
    )
    store = new_store(tmp_path / "day.duckdb", day)
    with pytest.raises(SplitError) as exc:
        NaiveValueModel().fit(store, "2023-03-01", holdout_days=1)
    assert str(exc.value) == (
        "the cut-off 2023-03-01 is not after the first purchase event (2023-03-01 "
        "09:00:00): the calibration period would be empty; the purchase events run from "
        "2023-03-01 09:00:00 to 2023-03-01 18:00:00"
    )
    fitted = NaiveValueModel().fit(store, "2023-03-01 12:00", holdout_days=1)
    with pytest.raises(SplitError, match=r"^the cut-off 2023-02-01 is not after the first"):
        fitted.predict(as_of="2023-02-01")
    store.close()


def test_calibration_end_outside_the_data(small_log, tmp_path, world, fitted):
    store = new_store(tmp_path / "log.duckdb", small_log)
    buys = small_log[small_log["event_type"] == "purchase"]["timestamp"]
    first, last = buys.min().strftime("%Y-%m-%d"), buys.max().strftime("%Y-%m-%d")
    with pytest.raises(
        SplitError, match=f"cut-off 2023-06-01 is not after the first purchase event .{first}"
    ):
        NaiveValueModel().fit(store, "2023-06-01", holdout_days=HOLDOUT)
    with pytest.raises(SplitError, match=f"2026-01-01 is after the last purchase event .{last}"):
        LightGBMValueModel().fit(store, "2026-01-01", holdout_days=HOLDOUT)
    # a model without labels needs no holdout, but still a cut-off within the log
    with pytest.raises(SplitError, match=f"2026-01-01 is after the end of the log .{last}"):
        BTYDValueModel().fit(store, "2026-01-01", holdout_days=HOLDOUT)
    with pytest.raises(SplitError, match="not a valid time"):
        NaiveValueModel().fit(store, "not-a-date", holdout_days=HOLDOUT)
    with pytest.raises(SplitError, match="holdout_days must be from 1 to 36,525 days"):
        NaiveValueModel().fit(store, CAL, holdout_days=0)
    # predicting as of a date after the log fails too
    with pytest.raises(SplitError, match="cut-off 2027-03-04 is after the end of the log"):
        fitted["lightgbm"].predict(as_of="2027-03-04")
    store.close()


def test_scoring_as_of_the_log_end_after_trailing_views(small_log, tmp_path, fitted):
    """A log that ends with views (as real ones do) is scored as of its end, not refused."""
    buys = small_log[small_log["event_type"] == "purchase"]
    last = buys["timestamp"].max()
    view = buys.iloc[[0]].assign(
        event_type="view", value=None, timestamp=last + pd.Timedelta(days=5)
    )
    store = new_store(tmp_path / "views-last.duckdb", pd.concat([small_log, view]))
    end = log_end(store)
    assert end == (last + pd.Timedelta(days=6)).normalize()
    pred = fitted["naive"].predict(store=store, as_of=end)
    assert set(pred["user_id"]) == set(buys["user_id"])
    assert not pred.drop(columns="user_id").isna().any().any()
    # a model that learns from the calibration period alone may be fitted there, on
    # everything known; one that learns from holdout labels cannot: nothing is held out
    for model in (NaiveValueModel(), BTYDValueModel("bgnbd")):
        pred_end = model.fit(store, end, holdout_days=HOLDOUT).predict()
        assert set(pred_end["user_id"]) == set(buys["user_id"])
        assert np.isfinite(pred_end.drop(columns="user_id").to_numpy(float)).all()
    bgnbd = BTYDValueModel("bgnbd").fit(store, end, holdout_days=HOLDOUT)
    earlier = BTYDValueModel("bgnbd").fit(store, end - pd.Timedelta(days=HOLDOUT))
    assert bgnbd.split_.calibration_end == end
    # fitted on more purchases, its parameters differ from a fit at an earlier cut-off
    assert bgnbd.transaction_model_.params_ != earlier.transaction_model_.params_
    for model in (
        LightGBMValueModel(),
        EnsembleValueModel([NaiveValueModel(), LightGBMValueModel()]),
    ):
        with pytest.raises(SplitError, match="after the last purchase event"):
            model.fit(store, end, holdout_days=HOLDOUT)
    with pytest.raises(SplitError, match="after the end of the log"):
        fitted["naive"].predict(store=store, as_of=end + pd.Timedelta(days=1))
    store.close()


def test_lightgbm_when_every_training_customer_returned(tmp_path):
    """One class in the return labels: P(returns) is ~1, not the empty class's ~0."""
    start = pd.Timestamp("2024-01-01")
    rows = [
        {"user_id": f"u{u}", "item_id": f"i{k % 7}", "event_type": "purchase",
         "timestamp": start + pd.Timedelta(days=k), "value": 10.0 + u}
        for u in range(30) for k in range(0, 130, 5 + u % 4)
    ]  # fmt: skip
    store = new_store(tmp_path / "loyal.duckdb", pd.DataFrame(rows))
    model = LightGBMValueModel(n_estimators=20, n_models=1).fit(
        store, "2024-04-10", holdout_days=30
    )
    assert list(model.classifier_.classes_) == [True]
    pred = model.predict()
    assert (pred["p_alive"] > 0.99).all()
    assert (pred["pred_transactions_median"] >= 1).all()  # the hurdle knows they all return
    store.close()


def _single_customer_store(small_log: pd.DataFrame, path: Path) -> Store:
    buys = small_log[small_log["event_type"] == "purchase"]
    best = buys["user_id"].value_counts().index[0]  # a repeat buyer
    return new_store(path, small_log[small_log["user_id"] == best])


@pytest.mark.parametrize("name", ["bgnbd", "pareto"])
def test_single_customer_btyd_clear_error(name, small_log, tmp_path):
    store = _single_customer_store(small_log, tmp_path / "one.duckdb")
    with pytest.raises(ValueError, match="Gamma-Gamma needs at least 3 customers"):
        FACTORIES[name]().fit(store, CAL, holdout_days=HOLDOUT)
    store.close()


@pytest.mark.parametrize(
    "name",
    [
        "naive",
        "lightgbm",
        "transformer",
    ],
)
def test_single_customer_other_models(name, small_log, tmp_path):
    store = _single_customer_store(small_log, tmp_path / "one.duckdb")
    try:
        pred = FACTORIES[name]().fit(store, CAL, holdout_days=HOLDOUT).predict()
    except ValueError as exc:  # a clear refusal is fine; a crash or NaN is not
        assert str(exc)
    else:
        assert len(pred) == 1
        assert np.isfinite(pred[NUMERIC_COLUMNS].to_numpy(float)).all()
    finally:
        store.close()


@pytest.mark.parametrize("name", ["lightgbm", "transformer"])
def test_a_holdout_without_any_purchase_is_nothing_to_learn(name, small_log, tmp_path):
    """A cut-off at the end of the last purchase day leaves a holdout where nobody buys: a
    supervised model must refuse rather than learn that every customer is gone. The split's
    own check says so first (it let a cut up to a day after the last purchase through, to
    fail later with a vaguer message)."""
    store = new_store(tmp_path / "log.duckdb", small_log)
    buys = small_log[small_log["event_type"] == "purchase"]["timestamp"]
    cut = buys.max().normalize() + pd.Timedelta(days=1)
    with pytest.raises(ValueError, match=r"after the last purchase event.*nothing to hold out"):
        FACTORIES[name]().fit(store, cut, holdout_days=HOLDOUT)
    store.close()


@pytest.fixture
def zero_value_store(small_log: pd.DataFrame, tmp_path: Path) -> Iterator[Store]:
    log = small_log.copy()
    log.loc[log["value"].notna(), "value"] = 0.0
    store = new_store(tmp_path / "zero.duckdb", log)
    yield store
    store.close()


def test_all_zero_values_naive_predicts_zero_spend(zero_value_store):
    pred = NaiveValueModel().fit(zero_value_store, CAL, holdout_days=HOLDOUT).predict()
    assert np.isfinite(pred[NUMERIC_COLUMNS].to_numpy(float)).all()
    for col in ("pred_spend", "ltv", "ltv_low", "ltv_high", "spend_low", "spend_high"):
        assert (pred[col] == 0).all(), col
    assert pred["pred_transactions"].gt(0).any()  # purchases still happen, they are free


@pytest.mark.parametrize("name", ["bgnbd", "pareto"])
def test_all_zero_values_btyd_clear_error(name, zero_value_store):
    # no customer has a positive repeat spend for Gamma-Gamma to fit
    with pytest.raises(ValueError, match="Gamma-Gamma needs at least 3 customers"):
        FACTORIES[name]().fit(zero_value_store, CAL, holdout_days=HOLDOUT)


@pytest.mark.parametrize("name", ["naive", "bgnbd", "lightgbm"])
def test_refunds_netting_below_zero_give_no_negative_value(name, small_log, tmp_path):
    """Negative values (refunds) are kept, but a customer is worth at least nothing."""
    buys = small_log[(small_log["event_type"] == "purchase") & (small_log["timestamp"] < CAL)]
    top = buys["user_id"].value_counts().index[:2]  # repeat buyers
    refunds = pd.DataFrame(
        {
            "user_id": top,
            "item_id": buys["item_id"].iloc[0],
            "event_type": "purchase",
            # one refund in calibration, on the customer's last purchase day (a repeat day,
            # whose spend nets below 0: a refund alone on a day is no purchase occasion), one
            # in the holdout
            "timestamp": [
                buys.loc[buys["user_id"] == top[0], "timestamp"].max() + pd.Timedelta(minutes=1),
                CAL + pd.Timedelta(days=2),
            ],
            "value": -100_000.0,
        }
    )
    store = new_store(tmp_path / "refunds.duckdb", small_log, refunds)
    data = value_data(store, CAL, HOLDOUT)
    assert data.rfm.loc[top[0], "monetary_value"] < 0
    assert data.labels.loc[top[1], "holdout_spend"] == 0.0  # net negative, floored
    model = FACTORIES[name]().fit(store, CAL, holdout_days=HOLDOUT)
    pred = model.predict()
    assert (pred[["pred_spend", "ltv", "ltv_low", "ltv_high"]] >= 0).all().all()
    if name == "bgnbd":  # a negative mean spend counts as 0: shrunk towards nothing
        gg = model.spend_model_
        zero = gg.conditional_expected_average_profit(3, 0.0)
        assert gg.conditional_expected_average_profit(3, -5.0) == pytest.approx(zero)
        assert 0 < zero < gg.conditional_expected_average_profit(0, 0.0)
    store.close()


def test_all_zero_values_lightgbm_clear_error(zero_value_store):
    with pytest.raises(ValueError, match="no customer spent anything in the holdout window"):
        LightGBMValueModel(n_estimators=50).fit(zero_value_store, CAL, holdout_days=HOLDOUT)


def test_all_zero_values_transformer_predicts_no_spend(zero_value_store):
    """Nobody ever spent anything: the forecast spend, LTV and its intervals are 0 (a ZILN
    mean is never exactly 0 by itself: it forecast 60 over 300 customers nobody spent)."""
    pred = tiny_transformer().fit(zero_value_store, CAL, holdout_days=HOLDOUT).predict()
    assert np.isfinite(pred[NUMERIC_COLUMNS].to_numpy(float)).all()
    assert (pred[NUMERIC_COLUMNS].to_numpy(float) >= 0).all()
    assert (pred[["pred_spend", "ltv", "ltv_low", "ltv_high"]] == 0).all().all()


def test_all_zero_values_transformer_still_counts_purchases(zero_value_store):
    model = tiny_transformer().fit(zero_value_store, CAL, holdout_days=HOLDOUT)
    pred = model.predict()
    data = value_data(zero_value_store, CAL, HOLDOUT)
    actual = data.labels["holdout_transactions"].sum()
    assert actual > 50
    assert 0.5 < pred["pred_transactions"].sum() / actual < 2.0


# ------------------------------------------------------------------ median count forecasts


def _test_data(world: World, model: ValueModel):
    return value_data(world.store, CAL, HOLDOUT, users=world.test, **model._data_options())


@pytest.mark.parametrize("name", [n for n in ALL if n != "naive"])
def test_count_distribution_sums_to_one_around_the_predicted_mean(name, world, fitted):
    model = fitted[name]
    data = _test_data(world, model)
    pmf, scale = model._count_pmf(data, HOLDOUT)
    assert scale == 1.0  # at the trained horizon
    rows = np.arange(len(data.users))
    probs = np.stack([pmf(n, rows) for n in range(200)])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-6)
    mean = model.predict_data(data)["pred_transactions"].to_numpy()
    np.testing.assert_allclose((np.arange(200)[:, None] * probs).sum(axis=0), mean, rtol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_median_forecast_beats_the_mean_on_absolute_error(name, world, preds):
    pred = preds[name].set_index("user_id").loc[world.test]
    median, mean = pred["pred_transactions_median"], pred["pred_transactions"]
    if name == "naive":  # no distribution: its point forecast stands for both
        np.testing.assert_array_equal(median, mean)
        return
    assert (median == np.round(median)).all() and (median >= 0).all()
    assert (median == 0).mean() > 0.5  # most customers are more likely away than back
    actual = world.truth.loc[world.test, "holdout_transactions"].to_numpy()
    assert np.abs(median - actual).mean() < np.abs(mean - actual).mean()


def test_the_median_at_another_horizon_stretches_the_learnt_distribution(world, fitted):
    """Twice the horizon: P(none) squares (a constant hazard) and the positive part stretches
    to keep the mean doubled; the median is that distribution's (scaled_quantile), not twice
    the learnt median, which had said 0 for customers more likely back than not."""
    model = fitted["lightgbm"]
    data = _test_data(world, model)
    base = model.transaction_quantile(data, 0.5)
    twice = model.transaction_quantile(data, 0.5, HOLDOUT * 2)
    pred = model.predict_data(data, HOLDOUT * 2)
    np.testing.assert_array_equal(twice, pred["pred_transactions_median"])
    np.testing.assert_array_equal(twice == 0, pred["p_return"].to_numpy() <= 0.5)
    assert (twice >= base).all() and twice.sum() > base.sum()
    assert ((base == 0) & (twice > 0)).any()  # more customers likely back over a longer time
    assert (model.transaction_quantile(data, 0.9) >= base).all()


def test_zero_truncated_rate_inverts_the_truncated_mean():
    from valuerec.value.counts import hurdle_pmf, zero_truncated_rate

    m = np.array([1.0, 1.01, 1.5, 3.0, 40.0])
    lam = zero_truncated_rate(m)
    np.testing.assert_allclose(lam / -np.expm1(-lam), np.maximum(m, 1 + 1e-9), rtol=1e-6)
    pmf = hurdle_pmf(np.full(5, 0.3), lam)
    rows = np.arange(5)
    probs = np.stack([pmf(n, rows) for n in range(400)])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-9)
    np.testing.assert_allclose((np.arange(400)[:, None] * probs).sum(0), 0.3 * m, rtol=1e-5)


def test_mixture_of_count_distributions_has_the_weighted_mean_and_its_own_median():
    from valuerec.value.counts import count_quantile, hurdle_pmf, mixture_pmf

    # customer 0: a sure returner buying ~9 times, or (weight 3/4) one who never returns
    rows = np.arange(2)
    back = hurdle_pmf(np.array([1.0, 0.5]), np.array([9.0, 2.0]))
    gone = hurdle_pmf(np.array([1e-9, 0.5]), np.array([1.0, 2.0]))
    mix = mixture_pmf([back, gone], [0.25, 0.75])
    probs = np.stack([mix(n, rows) for n in range(200)])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-9)
    means = [(np.arange(200)[:, None] * np.stack([f(n, rows) for n in range(200)])).sum(0)
             for f in (back, gone)]  # fmt: skip
    np.testing.assert_allclose(
        (np.arange(200)[:, None] * probs).sum(0), 0.25 * means[0] + 0.75 * means[1], rtol=1e-9
    )
    # the mixture's median is 0 for customer 0 (75% never return), where the weighted mean
    # of the two medians would be about 0.25 * 9; identical parts leave customer 1 as it was
    median = count_quantile(mix, 2)
    assert median[0] == 0
    assert median[1] == count_quantile(back, 2)[1]


def test_ensemble_applies_its_own_spend_calibration(world, fitted):
    # a mean of calibrated members is not calibrated; the ensemble learns a map from the
    # members' out-of-fold spend and must apply it (it once fitted the map and dropped it)
    from valuerec.value.calibration import SpendCalibration

    members = [fitted["lightgbm"], fitted["transformer"]]
    train = value_data(world.store, CAL, HOLDOUT, users=world.train)
    ens = EnsembleValueModel.from_fitted(members, train)
    ens.spend_calibration_ = SpendCalibration(np.log([5.0, 50.0]), np.log([10.0, 60.0]))
    data = value_data(
        world.store, CAL, HOLDOUT, users=world.test, labels=False, **ens._data_options()
    )
    avg = sum(m.predict_data(data)["pred_spend"].to_numpy() for m in members) / 2
    pred = ens.predict_data(data)["pred_spend"].to_numpy()
    np.testing.assert_allclose(pred, ens.spend_calibration_(avg), rtol=1e-9)
    assert not np.allclose(pred, avg)
    longer = ens.predict_data(data, HOLDOUT * 2)["pred_spend"].to_numpy()
    np.testing.assert_allclose(longer, 2 * pred, rtol=1e-9)  # calibrated at the trained horizon


def test_ensemble_spends_at_its_first_members_level(world, fitted):
    # the ensemble's map carries the distribution of its members' averaged out-of-fold spend
    # onto the first member's: the mean's ranking at LightGBM's level of spend
    lgb, tf = fitted["lightgbm"], fitted["transformer"]
    train = value_data(world.store, CAL, HOLDOUT, users=world.train)
    ens = EnsembleValueModel.from_fitted([lgb, tf], train)
    common = lgb.oof_spend_.index.intersection(tf.oof_spend_.index)
    first = lgb.oof_spend_.loc[common].to_numpy()
    avg = (first + tf.oof_spend_.loc[common].to_numpy()) / 2
    q = np.linspace(0.1, 0.9, 9)
    assert np.abs(np.quantile(avg, q) / np.quantile(first, q) - 1).max() > 0.05  # a real map
    np.testing.assert_allclose(
        np.quantile(ens.spend_calibration_(avg), q), np.quantile(first, q), rtol=0.02
    )


def test_lightgbm_bag_averages_models_with_consecutive_seeds(world):
    # n_models=2 must be the mean of the models seeds 7 and 8 fit alone, each with its own
    # calibration (a bag of one seed twice would equal one of them instead)
    train = value_data(world.store, CAL, HOLDOUT, users=world.train)
    test = value_data(world.store, CAL, HOLDOUT, users=world.test, labels=False)
    bag = LightGBMValueModel(n_estimators=50, n_models=2, seed=7).fit_data(train)
    alone = [
        LightGBMValueModel(n_estimators=50, n_models=1, seed=s).fit_data(train) for s in (7, 8)
    ]
    preds = [m.predict_data(test) for m in alone]
    got = bag.predict_data(test)
    assert not np.allclose(preds[0]["pred_spend"], preds[1]["pred_spend"])  # seeds differ
    for col in ("pred_spend", "p_alive", "pred_transactions", "ltv"):
        np.testing.assert_allclose(got[col], (preds[0][col] + preds[1][col]) / 2, rtol=1e-9)
    # what an ensemble calibrates on: the members' calibrated out-of-fold spend, averaged
    np.testing.assert_allclose(bag.oof_spend_, (alone[0].oof_spend_ + alone[1].oof_spend_) / 2)
    # the median count comes from the mixture of the two hurdles: between the members' medians
    lo = np.minimum(preds[0]["pred_transactions_median"], preds[1]["pred_transactions_median"])
    hi = np.maximum(preds[0]["pred_transactions_median"], preds[1]["pred_transactions_median"])
    assert got["pred_transactions_median"].between(lo, hi).all()


# ------------------------------------------------------------------ rolling-origin snapshots


def _snapshots(store: Store, train: list[str], shifts: list[int]) -> ValueData:
    return snapshot_data(store, CAL, HOLDOUT, shifts, users=train, sequences=True, max_len=8)


def test_snapshot_data_adds_training_customers_at_earlier_cutoffs(world):
    data = _snapshots(world.store, world.train, [30, 90])
    main = value_data(world.store, CAL, HOLDOUT, users=world.train, sequences=True, max_len=8)
    n = len(main.users)
    assert list(data.users[:n]) == list(main.users)
    pd.testing.assert_frame_equal(data.features.iloc[:n], main.features)
    early = value_data(
        world.store, CAL - pd.Timedelta(days=90), HOLDOUT, sequences=True, max_len=8,
        vocab=main.sequences.vocab,
    )  # fmt: skip
    who = early.users.intersection(pd.Index(world.train), sort=False)
    keys = [f"{u}@-90d" for u in who]
    assert 0 < len(who) < len(early.users)  # test customers bought before too, and are left out
    np.testing.assert_array_equal(data.features.loc[keys].to_numpy(), early.features.loc[who])
    np.testing.assert_array_equal(data.labels.loc[keys].to_numpy(), early.labels.loc[who])
    # the earlier window's label is another quantity than the main one (not a copy)
    assert not np.array_equal(data.labels.loc[keys].to_numpy(), main.labels.loc[who].to_numpy())
    rows = pd.Series(np.arange(len(data.users)), index=data.users)[keys].to_numpy()
    early_rows = pd.Series(np.arange(len(early.users)), index=early.users)[who].to_numpy()
    np.testing.assert_array_equal(data.sequences.item[rows], early.sequences.item[early_rows])
    assert list(data.sequences.users) == list(data.users)
    base = {u.split("@")[0] for u in data.users}
    assert base <= set(world.train)
    n30 = sum(u.endswith("@-30d") for u in data.users)
    assert len(data.users) == n + n30 + len(who)
    assert data.at_cutoff.sum() == n and not data.at_cutoff[n:].any()
    assert (data.subset(keys).shift_days == 90).all()


def test_snapshot_data_reads_nothing_a_fit_at_the_cutoff_would_not(world):
    # the future store adds purchases after the cut-off for test customers and far-future
    # events: the pooled training data of the training customers must not change
    plain = _snapshots(world.store, world.train, [45, 120])
    future = _snapshots(world.future, world.train, [45, 120])
    pd.testing.assert_frame_equal(plain.features, future.features)
    pd.testing.assert_frame_equal(plain.labels, future.labels)
    np.testing.assert_array_equal(plain.sequences.item, future.sequences.item)


def test_snapshot_data_rejects_bad_shifts_and_duplicate_keys(world):
    with pytest.raises(ValueError, match="positive"):
        snapshot_data(world.store, CAL, HOLDOUT, [0], users=world.train)
    main = value_data(world.store, CAL, HOLDOUT, users=world.train[:20])
    with pytest.raises(ValueError, match="more than one part"):
        ValueData.concat([main, main])
    # a shift before the first purchase adds nothing rather than failing
    far = snapshot_data(world.store, CAL, HOLDOUT, [DAYS + 30], users=world.train)
    assert list(far.users) == list(value_data(world.store, CAL, HOLDOUT, users=world.train).users)


def test_transformer_with_snapshots_trains_on_the_pooled_customers(world):
    model = tiny_transformer()
    model.snapshots, model.snapshot_step_days = 2, 60
    pooled = model.training_data(world.store, CAL, HOLDOUT, world.train)
    assert len(pooled.users) > len(world.train)
    assert sum("@-120d" in u for u in pooled.users) > 0
    model.fit(world.store, CAL, holdout_days=HOLDOUT, users=world.train)
    # spend calibration and interval levels are fitted on the held-out rows at the cut-off
    # only (snapshot windows have other spend levels): the out-of-fold frame has no snapshot
    assert len(model.oof_spend_) > 0
    assert set(model.oof_spend_.index) <= set(world.train)
    pred = model.predict(world.test)
    assert list(pred["user_id"]) == list(world.test)
    assert np.isfinite(pred[NUMERIC_COLUMNS].to_numpy()).all()
    truth = world.truth.loc[world.test, "holdout_spend"].to_numpy()
    assert normalized_gini(truth, pred["pred_spend"].to_numpy()) > 0.3


def test_cross_fitting_holds_each_customer_out_with_all_their_snapshots(world):
    """A customer's earlier snapshot rows have label windows overlapping their holdout: the
    network that predicts them out of fold must not have trained on any of their rows."""
    pooled = _snapshots(world.store, world.train, [30, 90])
    customers = pooled.customers
    assert set(customers) == set(world.train) and len(customers) > len(world.train)
    assert customers[list(pooled.users).index(f"{world.train[0]}@-30d")] == world.train[0]
    folds = _customer_folds(customers, 3, seed=0)
    assert sorted(np.concatenate(folds)) == list(range(len(customers)))
    for k, held in enumerate(folds):
        trained = np.setdiff1d(np.arange(len(customers)), held)
        assert not set(customers[held]) & set(customers[trained]), k
    # one row per customer: the plain random split of rows, as before snapshots
    plain = np.array(world.train)
    expected = np.array_split(np.random.default_rng(0).permutation(len(plain)), 3)
    assert all((a == b).all() for a, b in zip(_customer_folds(plain, 3, 0), expected, strict=True))


def test_the_median_count_is_read_from_the_mixture_of_the_networks(world):
    """pred_transactions averages the networks' means; the distribution its median comes from
    must have that mean (one hurdle of averaged parameters has another)."""
    model = tiny_transformer(n_models=3).fit(world.store, CAL, holdout_days=HOLDOUT)
    data = value_data(world.store, CAL, HOLDOUT, labels=False, **model._data_options())
    raw = model._raw(data)
    pmf, rows = model._raw_pmf(raw), np.arange(len(data.users))
    mean = sum(n * pmf(n, rows) for n in range(400))
    np.testing.assert_allclose(mean, raw["rate"], rtol=1e-6, atol=1e-9)


def test_an_ensemble_of_sequence_models_needing_different_data_is_refused():
    both = EnsembleValueModel(members=[tiny_transformer(), tiny_transformer(max_len=16)])
    with pytest.raises(ValueError, match="need different 'max_len'"):
        both._data_options()


def test_periodic_pool_transformer_learns_and_round_trips(world, fitted):
    """The Transformer with the periodic sum pool (``periodic_pool=True``) trains, ranks held-out
    customers better than the naive forecast and survives a pickle round trip."""
    model = tiny_transformer(periodic_pool=True).fit(
        world.store, CAL, holdout_days=HOLDOUT, users=world.train
    )
    assert model.nets_[0].pool is not None
    truth = world.truth.loc[world.test, "expected_holdout_spend"].to_numpy()
    pred = model.predict(users=world.test)
    assert np.isfinite(pred[NUMERIC_COLUMNS].to_numpy(float)).all()
    naive = fitted["naive"].predict(users=world.test)["pred_spend"].to_numpy()
    assert normalized_gini(truth, pred["pred_spend"].to_numpy()) > normalized_gini(truth, naive)
    loaded = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(loaded.predict(users=world.test, store=world.store), pred)


def test_transformer_saved_before_the_pool_still_predicts(world, fitted):
    """An artifact pickled before ``periodic_pool`` existed (no attribute on the model, no
    ``pool`` on its networks) loads and predicts as before."""
    model = fitted["transformer"]
    before = model.predict(users=world.test[:50])
    old = pickle.loads(pickle.dumps(model))
    del old.__dict__["periodic_pool"]
    for net in old.nets_:
        del net.__dict__["pool"]
    old = pickle.loads(pickle.dumps(old))
    pd.testing.assert_frame_equal(old.predict(users=world.test[:50], store=world.store), before)


def test_transformer_context_keeps_the_sign_of_signed_features(world, fitted):
    # the annual moments of the purchase days are signed: a clip at 0 (the old log1p) made
    # every customer whose purchases fell in the opposite half-year look alike
    model = fitted["transformer"]
    data = _test_data(world, model)
    col = model.context_columns_.index("annual_cos")
    raw = data.features["annual_cos"].to_numpy()
    assert (raw < -0.5).any() and (raw > 0.5).any()
    ctx = model._context(data)[:, col]
    z = (np.sign(raw) * np.log1p(np.abs(raw)) - model.context_mean_[col]) / model.context_std_[col]
    np.testing.assert_allclose(ctx, z, rtol=1e-5, atol=1e-5)
    # increasing in the raw value, and negatives are told apart rather than merged at 0
    order = np.argsort(raw)
    assert np.all(np.diff(ctx[order]) >= -1e-6)
    assert len(np.unique(np.round(ctx[raw < 0], 5))) > 1


def test_ensemble_fits_each_member_on_its_own_rows(world, transformer_fit_rows):
    """Fitted from the store, an ensemble's snapshot Transformer trains on its earlier
    cut-offs too, as it would alone (one pooled frame for every member would drop them)."""
    sequence = tiny_transformer()
    sequence.snapshots, sequence.snapshot_step_days = 2, 60
    alone = len(sequence.training_data(world.store, CAL, HOLDOUT, world.train).users)
    assert alone > len(world.train)
    ensemble = EnsembleValueModel(members=[LightGBMValueModel(n_estimators=50), sequence])
    ensemble.fit(world.store, CAL, holdout_days=HOLDOUT, users=world.train)
    assert transformer_fit_rows == [alone]
    assert ensemble.split_.calibration_end == CAL
    pred = ensemble.predict(world.test)
    assert list(pred["user_id"]) == list(world.test)
    assert np.isfinite(pred[NUMERIC_COLUMNS].to_numpy(float)).all()


# ------------------------------------------------------ one count distribution, within limits
@pytest.mark.parametrize("name", ["lightgbm", "transformer", "ensemble"])
def test_median_and_p_return_come_from_one_distribution_at_every_horizon(name, fitted, preds):
    """A median count of 0 means P(none) >= 1/2, so p_return <= 1/2, at any horizon. The median
    was scaled linearly while p_return took a constant hazard: at 6x the trained horizon
    customers had a median of 0 beside a return probability above one half."""
    for pred in (preds[name], fitted[name].predict(horizon_days=6 * HOLDOUT)):
        zero = pred["pred_transactions_median"].to_numpy() == 0
        p_return = pred["p_return"].to_numpy()
        assert (p_return[zero] <= 0.5 + 1e-9).all()
        assert (p_return[~zero] >= 0.5 - 1e-9).all()
    year = fitted[name].predict(horizon_days=6 * HOLDOUT)
    assert (year["p_return"] > 0.5).any() and (year["pred_transactions_median"] > 0).any()


def test_scaled_quantile_is_the_quantile_of_the_stretched_distribution():
    # a hurdle: P(0) = 0.6, else 1, 2 or 3 purchases with probabilities .5, .3, .2
    probs = np.array([0.6, 0.2, 0.12, 0.08])
    pmf = lambda n, rows: np.full(len(rows), probs[n] if n < len(probs) else 0.0)  # noqa: E731
    np.testing.assert_array_equal(scaled_quantile(pmf, 2, 1.0, np.full(2, 0.6)), [0.0, 0.0])
    np.testing.assert_array_equal(scaled_quantile(pmf, 1, 1.0, np.array([0.6]), 0.7), [1.0])
    np.testing.assert_array_equal(count_quantile(pmf, 1, 0.9), [2.0])
    # twice the horizon, P(none) = 0.36: the level 1/2 is (0.5 - 0.36) / 0.64 = 0.21875 of the
    # positive part, i.e. 0.6 + 0.21875 * 0.4 = 0.6875 learnt: 1 purchase, stretched by
    # 2 * 0.4 / 0.64 = 1.25 so that the mean doubles
    np.testing.assert_allclose(scaled_quantile(pmf, 1, 2.0, np.array([0.36])), [1.25])
    # counts past 10,000 (a century of purchase days): a Poisson(20,000) has median 20,000
    lam = 20_000.0
    poisson = lambda n, rows: np.full(len(rows), np.exp(n * np.log(lam) - lam - gammaln(n + 1)))  # noqa: E731
    assert count_quantile(poisson, 1)[0] == 20_000


def test_a_holdout_longer_than_a_century_is_refused_before_fitting(world):
    with pytest.raises(SplitError, match="from 1 to 36,525 days"):
        make_model("naive").fit(world.store, CAL, holdout_days=1_000_000)
    with pytest.raises(SplitError, match="from 1 to 36,525 days"):
        TemporalSplit.last_days(world.store, 800_000)
    with pytest.raises(SplitError, match="past the last date"):
        TemporalSplit("9999-12-01", 365)  # not an OverflowError traceback


@pytest.mark.parametrize("rate", [-1.0, -2.0, float("nan"), float("inf"), "high"])
def test_a_discount_rate_that_is_no_rate_is_refused_at_fit(rate, world):
    with pytest.raises(ValueError, match="discount_rate must be a finite number above -1"):
        BTYDValueModel(discount_rate=rate).fit(world.store, CAL, holdout_days=HOLDOUT)


def test_a_trained_horizon_past_the_limit_is_named_in_the_error(world, fitted):
    model = pickle.loads(pickle.dumps(fitted["naive"]))
    model.horizon_days_ = 40_000.0  # e.g. an artifact from before the limit
    with pytest.raises(ValueError, match="got 40000, the holdout the model was fitted on"):
        model.predict(store=world.store)
