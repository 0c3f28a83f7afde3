"""Spend calibration maps: what they fit, and that they never change a ranking."""

from __future__ import annotations

import numpy as np
import pytest

from valuerec.value.calibration import PowerCalibration, SpendCalibration


def _spend(n: int, scale: float, power: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and spend whose mean is ``scale * pred ** power``: zero for most, gamma
    amounts for the rest (the shape of customer spend, not of a Poisson count)."""
    rng = np.random.default_rng(seed)
    pred = np.exp(rng.normal(2.0, 1.0, n))
    mean = scale * pred**power
    buys = rng.random(n) < 0.3
    return pred, np.where(buys, rng.gamma(2.0, mean / (2.0 * 0.3)), 0.0)


def test_power_calibration_recovers_level_and_slope():
    pred, actual = _spend(200_000, scale=2.0, power=0.7)
    cal = PowerCalibration.fit(pred, actual)
    assert cal.power == pytest.approx(0.7, abs=0.01)
    assert np.exp(cal.log_scale) == pytest.approx(2.0, rel=0.03)


def test_power_calibration_matches_the_total_and_keeps_the_order():
    pred, actual = _spend(5_000, scale=0.5, power=1.3, seed=1)
    cal = PowerCalibration.fit(pred, actual)
    out = cal(pred)
    # the Poisson score equation for the intercept: fitted total = actual total
    assert out.sum() == pytest.approx(actual.sum(), rel=1e-4)
    order = np.argsort(pred)
    assert (np.diff(out[order]) >= 0).all() and (np.diff(out[order]) > 0).any()
    assert cal(np.array([0.0]))[0] == 0.0  # no prediction, no spend


def test_power_calibration_without_ranking_corrects_the_level_only():
    rng = np.random.default_rng(2)
    pred = np.exp(rng.normal(0.0, 1.0, 2_000))
    actual = 3.0 / pred  # anti-ranked: a decreasing map would be needed, which is not allowed
    cal = PowerCalibration.fit(pred, actual)
    assert cal.power == 1.0
    assert cal(pred).sum() == pytest.approx(actual.sum(), rel=1e-9)


def test_power_calibration_needs_enough_customers():
    pred, actual = _spend(100, scale=2.0, power=0.7)
    assert PowerCalibration.fit(pred, actual) == PowerCalibration()
    np.testing.assert_array_equal(PowerCalibration()(pred), pred)


def test_quantile_matching_carries_one_distribution_onto_another():
    rng = np.random.default_rng(3)
    source = np.exp(rng.normal(1.0, 0.5, 20_000))
    target = np.exp(rng.normal(3.0, 1.5, 20_000))
    cal = SpendCalibration.match_quantiles(source, target)
    q = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(np.quantile(cal(source), q), np.quantile(target, q), rtol=0.01)
    # a fixed map: each value maps alike whoever else is mapped with it
    np.testing.assert_allclose(cal(source[:3]), cal(source)[:3], rtol=1e-12)
    grid = np.exp(np.linspace(-3.0, 5.0, 500))  # beyond the knots too
    assert (np.diff(cal(grid)) > 0).all()


def test_quantile_matching_of_degenerate_samples_is_the_identity():
    x = np.array([0.5, 2.0, 4.0])
    np.testing.assert_array_equal(SpendCalibration.match_quantiles(np.full(50, 3.0), x)(x), x)
    np.testing.assert_array_equal(SpendCalibration.match_quantiles(x, np.zeros(3))(x), x)


def test_level_calibration_scales_every_prediction_by_one_ratio():
    pred = np.array([1.0, 2.0, 50.0, 0.0] + [4.0] * 20)
    actual = np.array([3.0, 1.0, 10.0, 2.0] + [1.0] * 20)
    cal = SpendCalibration.level(pred, actual)
    ratio = (10 + 1 + 3 + 20) / (1 + 2 + 50 + 80)  # customers predicted above 0 only
    np.testing.assert_allclose(cal(pred), np.where(pred > 0, pred * ratio, 0.0))
    np.testing.assert_allclose(cal(np.array([1e-3, 1e6])), np.array([1e-3, 1e6]) * ratio)
    # too few customers, or no spend: the identity
    assert len(SpendCalibration.level(pred[:10], actual[:10]).log_pred) == 0
    assert len(SpendCalibration.level(pred, np.zeros_like(actual)).log_pred) == 0
