"""Customer-value evaluation: hand-computed values, tie handling, the bootstrap, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from valuerec.evaluate.value import (
    DECILE_COLUMNS,
    ValueReport,
    decile_mape,
    decile_mape_floor,
    decile_table,
    evaluate_value,
    interval_coverage,
    normalized_gini,
    paired_bootstrap,
    top_share,
)


def lorenz_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Textbook (Kaggle) Gini, no tie handling: sum of cumulative share minus the diagonal."""
    order = np.argsort(-predicted, kind="stable")
    cum = np.cumsum(actual[order]) / actual.sum()
    return float((cum - np.arange(1, actual.size + 1) / actual.size).sum())


# Four customers used by several tests: A spends 4, B 1, C 0, D 3 (total 8). The model ranks
# A first, then B and C tied, then D.
ACTUAL = np.array([4.0, 1.0, 0.0, 3.0])
TIED = np.array([0.9, 0.5, 0.5, 0.2])


# ------------------------------------------------------------------------------ Gini


def test_gini_perfect_constant_reversed() -> None:
    rng = np.random.default_rng(0)
    actual = rng.gamma(0.5, 100.0, 200)
    assert normalized_gini(actual, actual) == 1.0
    assert normalized_gini(actual, 3 * actual + 7) == 1.0
    assert normalized_gini(actual, np.full(200, 42.0)) == 0.0
    assert normalized_gini(actual, np.zeros(200)) == 0.0
    # Distinct actual values: the reversed order is exactly as bad as the perfect one is good.
    assert normalized_gini(actual, -actual) == pytest.approx(-1.0, abs=1e-12)


def test_gini_hand_example_with_tie() -> None:
    # Sorted by prediction: A=4, then B, C tied (each gets the group mean 0.5), then D=3.
    # Cumulative share: 4/8, 4.5/8, 5/8, 8/8 = .5, .5625, .625, 1
    # minus the diagonal .25, .5, .75, 1 -> .25 + .0625 - .125 + 0 = 0.1875.
    # Perfect order 4, 3, 1, 0: .5, .875, 1, 1 minus diagonal -> .25 + .375 + .25 + 0 = 0.875.
    # Normalised: 0.1875 / 0.875 = 3/14.
    assert normalized_gini(ACTUAL, TIED) == pytest.approx(3 / 14, abs=1e-15)
    # Tie-aware = the mean of the two tie-breaks: B first gives 2/7, C first 1/7.
    b_first = normalized_gini(ACTUAL, [0.9, 0.6, 0.5, 0.2])
    c_first = normalized_gini(ACTUAL, [0.9, 0.5, 0.6, 0.2])
    assert b_first == pytest.approx(2 / 7, abs=1e-15)
    assert c_first == pytest.approx(1 / 7, abs=1e-15)
    assert normalized_gini(ACTUAL, TIED) == pytest.approx((b_first + c_first) / 2, abs=1e-15)


def test_gini_hand_example_five_customers() -> None:
    # actual 0, 10, 5, 2, 3 (total 20); predictions rank them 10, 2, 5, 0, 3.
    # Cum share .5, .6, .85, .85, 1 minus .2, .4, .6, .8, 1 -> .3 + .2 + .25 + .05 + 0 = 0.8.
    # Perfect 10, 5, 3, 2, 0: .5, .75, .9, 1, 1 -> .3 + .35 + .3 + .2 + 0 = 1.15. Ratio 16/23.
    actual = np.array([0.0, 10.0, 5.0, 2.0, 3.0])
    predicted = np.array([2.0, 9.0, 5.0, 6.0, 1.0])
    assert normalized_gini(actual, predicted) == pytest.approx(16 / 23, abs=1e-15)


def test_gini_matches_textbook_without_ties_and_is_rank_invariant() -> None:
    rng = np.random.default_rng(1)
    actual = rng.gamma(0.5, 100.0, 1000) * (rng.random(1000) < 0.6)
    predicted = actual + rng.normal(0.0, 60.0, 1000)
    expected = lorenz_gini(actual, predicted) / lorenz_gini(actual, actual)
    assert normalized_gini(actual, predicted) == pytest.approx(expected, abs=1e-12)
    g = normalized_gini(actual, predicted)
    assert normalized_gini(actual, np.exp(predicted / 50.0)) == g
    assert normalized_gini(actual, 2.0 * predicted - 5.0) == g
    assert normalized_gini(pd.Series(actual), pd.Series(predicted)) == g


def test_gini_ties_do_not_depend_on_row_order() -> None:
    rng = np.random.default_rng(2)
    actual = rng.gamma(0.5, 100.0, 300)
    predicted = np.round(actual + rng.normal(0.0, 80.0, 300), -2)  # many ties
    perm = rng.permutation(300)
    assert normalized_gini(actual[perm], predicted[perm]) == pytest.approx(
        normalized_gini(actual, predicted), abs=1e-12
    )


def test_gini_degenerate_inputs() -> None:
    assert normalized_gini([0.0, 0.0, 0.0], [1.0, 2.0, 3.0]) == 0.0
    assert normalized_gini([5.0, 5.0], [1.0, 2.0]) == 0.0
    assert normalized_gini([5.0], [1.0]) == 0.0
    assert normalized_gini([], []) == 0.0
    with pytest.raises(ValueError, match="predicted"):
        normalized_gini([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(ValueError, match="length"):
        normalized_gini([1.0, 2.0], [1.0])


# ------------------------------------------------------------------------------ top share


def test_top_share_hand_example() -> None:
    # Top 1 of 4 (25 %): A = 4 of 8 -> 0.5.
    assert top_share(ACTUAL, TIED, 0.25) == 0.5
    # Top 2 (50 %): A plus half of the tied group {B, C} (sum 1) -> 4.5 / 8.
    assert top_share(ACTUAL, TIED, 0.5) == pytest.approx(4.5 / 8, abs=1e-15)
    # Top 1.5 customers: A plus a quarter of the group -> 4.25 / 8.
    assert top_share(ACTUAL, TIED, 0.375) == pytest.approx(4.25 / 8, abs=1e-15)
    assert top_share(ACTUAL, TIED, 0.75) == pytest.approx(5 / 8, abs=1e-15)
    assert top_share(ACTUAL, TIED, 1.0) == 1.0
    assert top_share(ACTUAL, TIED, 0.0) == 0.0
    # A constant prediction captures exactly the fraction, whatever the spend.
    assert top_share(ACTUAL, np.ones(4), 0.25) == pytest.approx(0.25, abs=1e-15)
    assert math.isnan(top_share([0.0, 0.0], [1.0, 2.0], 0.5))
    with pytest.raises(ValueError, match="fraction"):
        top_share(ACTUAL, TIED, 1.5)


# ------------------------------------------------------------------------------ deciles


def test_decile_table_sums_and_order() -> None:
    rng = np.random.default_rng(3)
    actual = rng.gamma(0.5, 100.0, 1003)
    predicted = actual + rng.normal(0.0, 30.0, 1003)
    table = decile_table(actual, predicted)
    assert tuple(table.columns) == DECILE_COLUMNS
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["customers"].tolist() == [101, 101, 101] + [100] * 7  # np.array_split sizes
    assert table["predicted_sum"].sum() == pytest.approx(predicted.sum(), rel=1e-12)
    assert table["actual_sum"].sum() == pytest.approx(actual.sum(), rel=1e-12)
    top = np.sort(predicted)[::-1][:101]
    assert table.loc[0, "predicted_sum"] == pytest.approx(top.sum(), rel=1e-12)
    assert table["predicted_mean"].is_monotonic_decreasing
    assert table.loc[0, "predicted_mean"] == pytest.approx(top.mean(), rel=1e-12)


def test_decile_table_hand_example_and_stable_ties() -> None:
    # Sorted by prediction: [8 -> 10, 6 -> 0] and [2 -> 5, 1 -> 5].
    table = decile_table([10.0, 0.0, 5.0, 5.0], [8.0, 6.0, 2.0, 1.0], n_bins=2)
    assert table["predicted_sum"].tolist() == [14.0, 3.0]
    assert table["actual_sum"].tolist() == [10.0, 10.0]
    assert table["abs_pct_error"].tolist() == pytest.approx([0.4, 0.7])
    # Ties keep input order: the first two rows (actual 1, 2) form decile 1.
    tied = decile_table([1.0, 2.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0], n_bins=2)
    assert tied["actual_sum"].tolist() == [3.0, 3.0]
    zero = decile_table([0.0, 1.0], [2.0, 1.0], n_bins=2)
    assert math.isnan(zero.loc[0, "abs_pct_error"])
    # Fewer customers than bins: one bin each, none empty.
    assert decile_table([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])["customers"].tolist() == [1, 1, 1]


def test_decile_mape_hand_example() -> None:
    # Deciles (2 bins): |14 - 10| / 10 = 0.4 and |3 - 10| / 10 = 0.7 -> mean 0.55.
    assert decile_mape([10.0, 0.0, 5.0, 5.0], [8.0, 6.0, 2.0, 1.0], n_bins=2) == pytest.approx(
        0.55, abs=1e-15
    )
    # A bin with zero actual spend is skipped: only |1 - 1| / 1 = 0 and |3 - 0| skipped.
    assert decile_mape([0.0, 1.0], [3.0, 1.0], n_bins=2) == 0.0
    assert decile_mape(np.arange(20.0), np.arange(20.0)) == 0.0


def _spend(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zero-inflated lognormal spend, like a holdout: 20 % buy, heavy-tailed baskets."""
    return (rng.random(n) < 0.2) * rng.lognormal(3.5, 1.0, n)


def test_decile_mape_floor_matches_sampling_from_the_truth() -> None:
    # Predictions carry no information, so each decile is a random tenth of one population
    # whose expected decile sum is known: n_k x E[spend]. The floor estimated from one sample
    # must agree with the MAPE of those known expectations over fresh samples.
    rng = np.random.default_rng(0)
    n = 5_000
    mean = 0.2 * math.exp(3.5 + 0.5)
    direct = []
    for _ in range(400):
        sums = _spend(rng, n).reshape(10, n // 10).sum(axis=1)
        direct.append(np.mean(np.abs(n // 10 * mean - sums) / sums))
    floor = decile_mape_floor(_spend(rng, n), rng.random(n), n_boot=400, seed=1)
    assert floor["mean"] == pytest.approx(np.mean(direct), rel=0.15)
    assert floor["low"] < floor["mean"] < floor["high"]


def test_decile_mape_floor_shrinks_with_sample_size_and_is_zero_without_noise() -> None:
    rng = np.random.default_rng(3)
    small = decile_mape_floor(_spend(rng, 4_000), rng.random(4_000), seed=2)["mean"]
    large = decile_mape_floor(_spend(rng, 64_000), rng.random(64_000), seed=2)["mean"]
    assert large / small == pytest.approx(0.25, rel=0.2)  # sampling error goes as 1/sqrt(n)
    # spend constant within each decile: nothing to sample, a perfect model scores 0
    actual = np.repeat(np.arange(10.0, 0.0, -1.0), 50)
    assert decile_mape_floor(actual, actual)["mean"] == 0.0
    # a decile with no spend is skipped, as decile_mape skips it
    assert decile_mape_floor([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], n_bins=2)["mean"] == 0.0
    with pytest.raises(ValueError, match="n_boot"):
        decile_mape_floor(actual, actual, n_boot=0)


def test_decile_mape_floor_leaves_out_resamples_without_any_spend() -> None:
    """One buyer among ten: a third of the resamples of ten customers draw no spend at all
    and have no decile MAPE; the floor is read on the others instead of turning NaN."""
    actual, predicted = [0.0] * 9 + [100.0], np.linspace(1.0, 0.1, 10)
    floor = decile_mape_floor(actual, predicted, n_bins=2, n_boot=400, seed=1)
    assert all(math.isfinite(v) for v in floor.values())
    # the buyer's bin (5 customers, mean 20) sums 20 x its draws of the buyer: 100 k over
    # k ~ Binomial(5, 1/5) given k > 0 -> |100 - 100 k| / (100 k), a mean well above 0
    assert 0.2 < floor["mean"] < 1.0 and floor["low"] <= floor["mean"] <= floor["high"]
    assert math.isnan(decile_mape_floor([0.0] * 4, [1.0, 2.0, 3.0, 4.0])["mean"])


def test_interval_coverage() -> None:
    actual = [1.0, 2.0, 3.0, 4.0, 10.0]
    low = [0.0, 2.0, 3.5, 0.0, 0.0]
    high = [2.0, 2.0, 5.0, 3.9, 10.0]
    # Covered: 1 in [0, 2], 2 in [2, 2] (bounds included), 10 in [0, 10]; not 3, not 4.
    assert interval_coverage(actual, low, high) == pytest.approx(0.6, abs=1e-15)
    with pytest.raises(ValueError, match="low"):
        interval_coverage(actual, low[:4], high)


# ------------------------------------------------------------------------------ bootstrap


def test_bootstrap_identical_models_are_exactly_equal() -> None:
    rng = np.random.default_rng(4)
    actual = rng.gamma(0.5, 100.0, 500)
    predicted = np.round(actual + rng.normal(0.0, 50.0, 500), -1)
    result = paired_bootstrap(actual, predicted, predicted.copy(), n_boot=200)
    assert result == {"diff": 0.0, "low": 0.0, "high": 0.0, "p_better": 0.0}


def test_bootstrap_detects_a_clearly_better_model() -> None:
    rng = np.random.default_rng(5)
    n = 2000
    actual = rng.gamma(0.4, 100.0, n) * (rng.random(n) < 0.5)
    good = actual + rng.normal(0.0, 40.0, n)
    noise = rng.gamma(1.0, 1.0, n)
    result = paired_bootstrap(actual, good, noise, n_boot=300, seed=1)
    assert result["diff"] == pytest.approx(
        normalized_gini(actual, good) - normalized_gini(actual, noise), abs=1e-15
    )
    assert 0.0 < result["low"] < result["diff"] < result["high"]
    assert result["p_better"] == 1.0
    flipped = paired_bootstrap(actual, noise, good, n_boot=300, seed=1)
    assert flipped["high"] < 0.0
    assert flipped["p_better"] == 0.0


def test_bootstrap_vectorised_gini_equals_the_generic_loop() -> None:
    # Any callable other than normalized_gini takes the per-resample loop on the same draws.
    rng = np.random.default_rng(6)
    actual = rng.gamma(0.5, 100.0, 300) * (rng.random(300) < 0.7)
    pred_a = np.round(actual + rng.normal(0.0, 60.0, 300), -2)  # heavy ties
    pred_b = np.round(rng.gamma(1.0, 50.0, 300), -1)
    fast = paired_bootstrap(actual, pred_a, pred_b, n_boot=150, seed=7)
    slow = paired_bootstrap(
        actual, pred_a, pred_b, metric=lambda a, p: normalized_gini(a, p), n_boot=150, seed=7
    )
    assert fast == pytest.approx(slow, abs=1e-12)
    assert fast != paired_bootstrap(actual, pred_a, pred_b, n_boot=150, seed=8)


def test_bootstrap_lower_is_better_metric() -> None:
    rng = np.random.default_rng(9)
    actual = rng.gamma(2.0, 50.0, 400)
    calibrated = actual * rng.uniform(0.9, 1.1, 400)
    biased = 2.0 * actual
    result = paired_bootstrap(
        actual, calibrated, biased, metric=decile_mape, n_boot=100, higher_is_better=False
    )
    assert result["diff"] < 0.0
    assert result["high"] < 0.0
    assert result["p_better"] == 1.0


def test_bootstrap_on_12k_customers_separates_a_good_from_a_random_model() -> None:
    # the size of the CDNOW evaluation half; speed is measured in benchmarks/ltv_cdnow.py
    rng = np.random.default_rng(10)
    n = 12_000
    actual = rng.gamma(0.3, 100.0, n) * (rng.random(n) < 0.5)
    result = paired_bootstrap(actual, actual + rng.normal(0, 80, n), rng.gamma(1.0, 1.0, n))
    assert result["low"] > 0.3 and result["p_better"] == 1.0


# ------------------------------------------------------------------------------ evaluate_value


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    truth = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "holdout_transactions": [2, 0, 1, 3],
            "holdout_spend": [100.0, 0.0, 50.0, 150.0],
        }
    )
    # Shuffled rows and an extra user (u5) that is not in truth, to exercise the join.
    pred = pd.DataFrame(
        {
            "user_id": ["u3", "u5", "u1", "u4", "u2"],
            "pred_transactions": [1.0, 9.0, 1.5, 2.0, 0.5],
            "pred_spend": [90.0, 999.0, 80.0, 130.0, 20.0],
            "p_alive": [0.6, 1.0, 0.9, 0.3, 0.4],
        }
    )
    return truth, pred


def test_integer_user_ids_match_the_text_ids_a_model_predicts_for() -> None:
    """The store keeps ids as text: a truth frame with integer ids was "missing" them all."""
    truth, pred = frames()
    numbered = {u: i for i, u in enumerate(sorted(set(pred["user_id"])))}
    truth_int = truth.assign(user_id=truth["user_id"].map(numbered))
    pred_text = pred.assign(user_id=pred["user_id"].map(numbered).astype(str))
    expected = evaluate_value(truth, pred).metrics
    got = evaluate_value(truth_int, pred_text).metrics
    assert got == pytest.approx(expected, nan_ok=True)


def test_predictions_for_users_outside_truth_are_ignored_even_when_bad() -> None:
    """As documented: a NaN or a repeated row for a user nobody scores refused the whole
    evaluation. The scored users' rows are still checked."""
    truth, pred = frames()
    expected = evaluate_value(truth, pred).metrics
    extra = pd.DataFrame(
        {"user_id": ["zz", "zz"], "pred_transactions": [np.nan, 1.0], "pred_spend": [1.0, 2.0],
         "p_alive": [0.5, 0.5]}
    )  # fmt: skip
    got = evaluate_value(truth, pd.concat([pred, extra])).metrics
    assert got == pytest.approx(expected, nan_ok=True)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_value(truth, pred.assign(pred_spend=[np.nan, 1, 1, 1, 1]))


def test_evaluate_value_hand_checked() -> None:
    truth, pred = frames()
    m = evaluate_value(truth, pred).metrics
    # Transactions (u1..u4): errors -0.5, +0.5, 0, -1 -> MAE 2/4, RMSE sqrt(1.5/4).
    assert m["mae_transactions"] == pytest.approx(0.5)
    assert m["rmse_transactions"] == pytest.approx(math.sqrt(0.375))
    # Spend: errors -20, +20, +40, -20 -> MAE 25, RMSE sqrt((400+400+1600+400)/4).
    assert m["mae_spend"] == pytest.approx(25.0)
    assert m["rmse_spend"] == pytest.approx(math.sqrt(700.0))
    # Totals: spend 320 predicted vs 300 actual; transactions 5 vs 6.
    assert m["aggregate_error_pct"] == pytest.approx(100 * 20 / 300)
    assert m["aggregate_tx_error_pct"] == pytest.approx(-100 / 6)
    # Spend ranks (actual vs pred): u1 3/2, u2 1/1, u3 2/3, u4 4/4 -> 1 - 6*2/(4*15) = 0.8.
    assert m["spearman_spend"] == pytest.approx(0.8)
    actual, predicted = [100.0, 0.0, 50.0, 150.0], [80.0, 20.0, 90.0, 130.0]
    assert m["normalized_gini"] == normalized_gini(actual, predicted)
    # Top 10 % of 4 = 0.4 customers of u4 (spend 150 of 300): 0.4 * 150 / 300 = 0.2.
    assert m["top10_share"] == pytest.approx(0.2)
    assert m["top20_share"] == pytest.approx(0.4)
    assert m["decile_mape"] == decile_mape(actual, predicted)
    # one customer per decile: nothing to resample, the floor is unknown
    keys = ("decile_mape_floor", "decile_mape_floor_low", "decile_mape_floor_high")
    assert all(math.isnan(m[k]) for k in keys)
    # Returned: u1, u3, u4. p_alive .9, .6, .3 against u2's .4 -> 2 of 3 pairs ordered.
    assert m["auc_return"] == pytest.approx(2 / 3)
    # Flagged at 0.5: u1, u3, both returned -> precision 1, recall 2/3, F1 0.8.
    assert m["precision_return"] == 1.0
    assert m["recall_return"] == pytest.approx(2 / 3)
    assert m["f1_return"] == pytest.approx(0.8)
    assert m["customers"] == 4.0
    assert "coverage80" not in m and "coverage50" not in m


def test_evaluate_value_threshold_is_inclusive() -> None:
    truth, pred = frames()
    m = evaluate_value(truth, pred, threshold=0.9).metrics
    # Only u1 (p_alive == 0.9) is flagged.
    assert m["precision_return"] == 1.0
    assert m["recall_return"] == pytest.approx(1 / 3)


def test_returning_is_scored_on_p_return_when_the_model_gives_it() -> None:
    """A BG/NBD p_alive is 1 for every one-time buyer; whether a customer buys in the holdout
    is what p_return says, so auc_return and the flags read it when it is there."""
    truth, pred = frames()
    # u1, u3, u4 returned; p_alive says the opposite, p_return says it right
    pred["p_alive"] = [0.1, 1.0, 0.1, 0.1, 1.0]  # u3 u5 u1 u4 u2
    pred["p_return"] = [0.7, 0.5, 0.8, 0.6, 0.2]
    m = evaluate_value(truth, pred).metrics
    assert m["auc_return"] == 1.0
    assert (m["precision_return"], m["recall_return"], m["f1_return"]) == (1.0, 1.0, 1.0)
    assert evaluate_value(truth, pred.drop(columns="p_return")).metrics["auc_return"] == 0.0


def test_evaluate_value_classification_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(11)
    n = 60
    truth = pd.DataFrame(
        {
            "user_id": np.arange(n),
            "holdout_transactions": rng.poisson(0.8, n),
            "holdout_spend": rng.gamma(1.0, 20.0, n),
        }
    )
    pred = pd.DataFrame(
        {
            "user_id": np.arange(n)[::-1],
            "pred_transactions": rng.gamma(1.0, 1.0, n),
            "pred_spend": rng.gamma(1.0, 20.0, n),
            "p_alive": np.round(rng.random(n), 1),  # ties, as real p_alive values have
        }
    )
    m = evaluate_value(truth, pred, threshold=0.4).metrics
    joined = truth.merge(pred, on="user_id")
    y = joined["holdout_transactions"] > 0
    flagged = joined["p_alive"] >= 0.4
    assert m["auc_return"] == pytest.approx(metrics.roc_auc_score(y, joined["p_alive"]))
    assert m["precision_return"] == pytest.approx(metrics.precision_score(y, flagged))
    assert m["recall_return"] == pytest.approx(metrics.recall_score(y, flagged))
    assert m["f1_return"] == pytest.approx(metrics.f1_score(y, flagged))


def test_evaluate_value_coverage_and_degenerate_classes() -> None:
    truth, pred = frames()
    # By user: u3 actual 50, u5 -, u1 100, u4 150, u2 0.
    pred["spend_low"] = [40.0, 0.0, 0.0, 151.0, 0.0]  # covers u3, u1, u2; not u4
    pred["spend_high"] = [60.0, 0.0, 100.0, 200.0, 1.0]
    pred["spend_low50"] = [55.0, 0.0, 90.0, 140.0, 0.0]  # covers u1, u4, u2; not u3
    pred["spend_high50"] = [60.0, 0.0, 110.0, 150.0, 0.0]
    m = evaluate_value(truth, pred).metrics
    assert m["coverage80"] == pytest.approx(0.75)
    assert m["coverage50"] == pytest.approx(0.75)
    everyone = truth.assign(holdout_transactions=1)
    assert math.isnan(evaluate_value(everyone, pred).metrics["auc_return"])
    flat = pred.assign(pred_spend=10.0)
    m = evaluate_value(truth, flat).metrics
    assert m["spearman_spend"] == 0.0
    assert m["normalized_gini"] == 0.0


def test_a_model_without_intervals_has_no_coverage() -> None:
    """Point models give their forecast as both ends (value.base): no interval, no coverage
    (it would be the share of exact hits, 0 or the zero-spend share, read as a coverage)."""
    truth, pred = frames()
    for low, high in (("spend_low", "spend_high"), ("spend_low50", "spend_high50")):
        pred[low] = pred[high] = pred["pred_spend"]
    m = evaluate_value(truth, pred).metrics
    assert "coverage80" not in m and "coverage50" not in m
    pred.loc[0, "spend_high"] += 1.0  # one real interval: the model has a distribution
    assert evaluate_value(truth, pred).metrics["coverage80"] == 0.0


def test_evaluate_value_refuses_missing_users_and_nan() -> None:
    truth, pred = frames()
    with pytest.raises(ValueError, match="2 of 4 truth users are missing"):
        evaluate_value(truth, pred[~pred["user_id"].isin(["u1", "u2"])])
    bad = pred.copy()
    bad.loc[0, "pred_spend"] = np.nan
    with pytest.raises(ValueError, match="pred_spend"):
        evaluate_value(truth, bad)
    bad = pred.assign(spend_low=0.0, spend_high=np.nan)
    with pytest.raises(ValueError, match="spend_high"):
        evaluate_value(truth, bad)
    with pytest.raises(ValueError, match="p_alive"):
        evaluate_value(truth, pred.drop(columns="p_alive"))
    with pytest.raises(ValueError, match="duplicated"):
        evaluate_value(truth, pd.concat([pred, pred.iloc[:1]]))


def test_value_report_to_dict_is_json_safe() -> None:
    truth, pred = frames()
    report = evaluate_value(truth, pred)
    assert isinstance(report, ValueReport)
    assert report.deciles["customers"].sum() == 4
    assert report.deciles["actual_sum"].sum() == pytest.approx(300.0)
    data = report.to_dict()
    # u2's bin has zero actual spend: its NaN error must come out as null, not NaN.
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert back["metrics"]["mae_spend"] == pytest.approx(25.0)
    assert len(back["deciles"]) == 4
    assert None in [row["abs_pct_error"] for row in back["deciles"]]


def test_median_count_forecast_gets_its_own_mae() -> None:
    truth, pred = frames()
    assert "mae_transactions_median" not in evaluate_value(truth, pred).metrics
    # truth transactions u1..u4 are 2, 0, 1, 3 (errors above: -0.5, +0.5, 0, -1)
    pred["pred_transactions_median"] = pred["user_id"].map(
        {"u1": 2.0, "u2": 0.0, "u3": 0.0, "u4": 3.0, "u5": 9.0}
    )
    m = evaluate_value(truth, pred).metrics
    assert m["mae_transactions_median"] == pytest.approx(0.25)  # only u3 is off, by 1
    assert m["mae_transactions"] == pytest.approx(0.5)  # the mean's MAE is unchanged
    pred.loc[0, "pred_transactions_median"] = np.nan
    with pytest.raises(ValueError, match="pred_transactions_median"):
        evaluate_value(truth, pred)


def test_decile_mape_floor_is_unknown_with_too_few_customers_per_decile() -> None:
    """Ten customers, one per decile: resampling one of one never moves a decile's sum, so
    the floor read 0.0% ("perfect calibration would score 0") when it is merely unknown."""
    rng = np.random.default_rng(0)
    spend = rng.gamma(0.5, 40.0, 49)
    assert all(math.isnan(v) for v in decile_mape_floor(spend[:10], spend[:10]).values())
    assert all(math.isnan(v) for v in decile_mape_floor(spend[:19], spend[:19]).values())
    assert decile_mape_floor(spend[:20], spend[:20])["mean"] > 0  # two per decile


def test_deciles_share_a_tied_groups_spend_whatever_the_row_order():
    """Which of a group of tied predictions fell on either side of a bin's edge followed the
    rows' order: renaming customers changed a naive model's decile MAPE (0.846 -> 0.835)."""
    predicted = np.array([3.0, 2.0, 2.0, 2.0, 1.0])
    actual = np.array([10.0, 0.0, 6.0, 0.0, 5.0])
    table = decile_table(actual, predicted, n_bins=5)
    # the tied three spend 6 in all: 2 at each of their positions
    np.testing.assert_allclose(table["actual_sum"], [10.0, 2.0, 2.0, 2.0, 5.0])
    assert decile_mape(actual, predicted, n_bins=5) == pytest.approx((0.7 + 0.0 + 0.8) / 5)
    rng = np.random.default_rng(0)
    big_p = rng.integers(0, 4, 400).astype(float)  # four huge tie groups across the deciles
    big_a = rng.gamma(0.5, 20.0, 400)
    perm = rng.permutation(400)
    assert decile_mape(big_a[perm], big_p[perm]) == pytest.approx(decile_mape(big_a, big_p))
    pd.testing.assert_frame_equal(
        decile_table(big_a[perm], big_p[perm]), decile_table(big_a, big_p)
    )
    assert decile_mape_floor(big_a[perm], big_p[perm]) == decile_mape_floor(big_a, big_p)


# -- review R2 (session 24) -------------------------------------------------------------------
def test_bootstrap_of_a_metric_undefined_on_some_resamples_uses_the_defined_ones() -> None:
    """One spender among 12 customers: a resample that misses them has no top share (0/0).
    Such resamples gave NaN bounds and counted as losses in ``p_better``; they are left out
    when few, and many of them are an error rather than an interval."""
    actual = np.zeros(12)
    actual[0] = 100.0
    rng = np.random.default_rng(0)
    pa, pb = rng.random(12), rng.random(12)
    pa[0], pb[0] = 2.0, -1.0  # A ranks the spender first, B last
    top = lambda a, p: top_share(a, p, 0.1)  # noqa: E731
    # (11/12)^12 = 35% of resamples miss the spender: far beyond the 5% allowed
    with pytest.raises(ValueError, match=r"resamples have no estimate"):
        paired_bootstrap(actual, pa, pb, metric=top, n_boot=400)
    # 60 customers, 6 spenders: a resample missing all of them is rare (0.9^60 = 0.2%)
    actual = np.r_[np.full(6, 100.0), np.zeros(54)]
    pa = np.r_[np.full(6, 2.0), rng.random(54)]
    pb = np.r_[np.full(6, -1.0), rng.random(54)]
    res = paired_bootstrap(actual, pa, pb, metric=top, n_boot=400)
    assert np.isfinite(res["low"]) and np.isfinite(res["high"])
    assert res["p_better"] == 1.0  # A wins on every resample that has spenders


def test_truth_ids_written_two_ways_are_one_duplicated_user() -> None:
    truth, pred = frames()
    truth["user_id"] = [1, "1", 3, 4]
    pred["user_id"] = ["3", "u5", "1", "4", "2"]
    with pytest.raises(ValueError, match="truth has 1 duplicated user_id"):
        evaluate_value(truth, pred)


def test_coverage_is_scored_only_when_the_scored_users_have_intervals() -> None:
    """A user outside truth is ignored, also in deciding whether the model has intervals."""
    truth, pred = frames()
    pred["spend_low"] = pred["spend_high"] = pred["pred_spend"]
    pred.loc[pred["user_id"] == "u5", "spend_high"] += 1.0  # u5 is not scored
    assert "coverage80" not in evaluate_value(truth, pred).metrics
