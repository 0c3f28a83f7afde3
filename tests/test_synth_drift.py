"""Drifting purchase rates: trends, seasons and bursts, with the holdout truth kept exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import gammainc

from valuerec.data.synth import SynthConfig, _Drift, _expected_purchases, drifting, generate

# Views and browsing are drawn after the purchases, so leaving them out changes no purchase.
FAST = {"items": 100, "views_per_purchase": 0.0, "browse_sessions_per_day": 0.0}
USERS = 20_000
CONFIGS = {
    "trend": {"trend_sd": 1.0},
    "season": {"seasonality": 0.3},
    "bursts": {"bursts_per_year": 2.0, "burst_multiplier": 6.0},
    "preset": {},
}


def _make(name: str, seed: int) -> object:
    if name == "preset":
        return generate(drifting(users=USERS, seed=seed, **FAST))
    return generate(users=USERS, seed=seed, **CONFIGS[name], **FAST)


@pytest.fixture(scope="module")
def logs() -> dict[str, object]:
    return {name: _make(name, seed) for seed, name in enumerate(CONFIGS, start=11)}


def _purchases(data) -> pd.DataFrame:
    """Every purchase (calibration and holdout) as user and day since the start."""
    ev = pd.concat([data.events, data.holdout_events])
    ev = ev[ev["event_type"] == "purchase"]
    day = (ev["timestamp"] - pd.Timestamp(data.config.start)).dt.total_seconds() / 86_400
    return pd.DataFrame({"user_id": ev["user_id"].to_numpy(), "t": day.to_numpy()})


def test_preset_is_the_drifting_benchmark_setting():
    cfg = drifting(users=123)
    assert (cfg.trend_sd, cfg.seasonality, cfg.bursts_per_year, cfg.burst_multiplier) == (
        1.0, 0.3, 2.0, 6.0,
    )  # fmt: skip
    assert cfg.users == 123 and cfg.drifts and not SynthConfig().drifts
    assert SynthConfig.drifting(seed=4) == drifting(seed=4)
    with pytest.raises(TypeError):
        drifting(colour="blue")


@pytest.mark.parametrize(
    "bad",
    [{"seasonality": 1.0}, {"trend_sd": -1.0}, {"bursts_per_year": 1.0, "burst_days_min": 30.0}],
)
def test_bad_drift_options_are_rejected(bad):
    with pytest.raises(ValueError):
        generate(users=10, items=5, days=30, **bad)


def test_same_seed_same_drifting_log():
    a = generate(drifting(users=800, items=50, days=120, seed=5))
    b = generate(drifting(users=800, items=50, days=120, seed=5))
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.holdout_events, b.holdout_events)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    c = generate(drifting(users=800, items=50, days=120, seed=6))
    assert not a.events["timestamp"].equals(c.events["timestamp"])


def _assert_exact_intensity_and_bound(drift: _Drift, n: int, rng: np.random.Generator) -> None:
    """The closed-form intensity over a 90-day window equals numerical quadrature of the rate
    factor for each of ``n`` users, and the thinning bound is never exceeded in a window."""
    lo, hi = 365.0, 455.0
    exact = drift.integral(lo, hi)
    for i in range(n):
        edges = np.concatenate([drift.b_start[i], drift.b_end[i]])
        edges = edges[(edges > lo) & (edges < hi)]

        def f(t: float, i: int = i) -> float:
            return drift.factor(np.array([i]), np.array([t]))[0]

        numeric = quad(f, lo, hi, points=edges if len(edges) else None, limit=200)[0]
        assert exact[i] == pytest.approx(numeric, rel=1e-9)
    # the thinning bound holds: f never exceeds it anywhere in the window
    t0 = rng.uniform(0, 420, n)
    t = t0[:, None] + np.linspace(0, 30, 301)[None, :]
    users = np.repeat(np.arange(n), t.shape[1])
    f = drift.factor(users, t.ravel()).reshape(t.shape)
    assert (f <= drift.bound(np.arange(n), t0, t0 + 30)[:, None] * (1 + 1e-12)).all()


def test_the_intensity_is_the_integral_of_the_rate():
    cfg = drifting(bursts_per_year=8.0, season_phase=1.3)  # many overlapping bursts
    rng = np.random.default_rng(0)
    birth = rng.uniform(0.05, 270, 40)
    drift = _Drift.draw(cfg, birth, rng)
    overlapping = drift.b_start[:, 1:] < drift.b_end[:, :-1]
    assert overlapping.any()  # the union of overlapping bursts is exercised
    _assert_exact_intensity_and_bound(drift, len(birth), rng)


def test_the_intensity_over_per_user_windows():
    """One window per user (what the Bayes forecast integrates: signup to each last purchase)
    gives each user what a call with that user's window alone gives."""
    cfg = drifting(bursts_per_year=6.0)
    rng = np.random.default_rng(3)
    birth = rng.uniform(0.05, 270, 30)
    drift = _Drift.draw(cfg, birth, rng)
    hi = birth + rng.uniform(0, 200, 30)
    per_user = drift.integral(birth, hi)
    for i in range(30):
        one = _Drift(
            birth[[i]], drift.slope[[i]], drift.season, drift.phase[[i]], drift.mult,
            drift.b_start[[i]], drift.b_end[[i]],
        )  # fmt: skip
        assert per_user[i] == pytest.approx(one.integral(birth[i], hi[i])[0], rel=1e-12)
        assert one.integral(birth[i], birth[i])[0] == 0.0
    assert (drift.integral(birth, hi + 10.0) > per_user).all()


def test_expected_purchases_with_large_intensities():
    # the closed form (1 - exp(-p L)) / p where the 400-term series would be truncated
    intensity = np.array([0.5, 40.0, 150.0, 300.0, 900.0, 2500.0])
    p = np.array([0.3, 0.001, 0.05, 0.002, 0.0005, 1e-4])
    k = np.arange(1, 8001, dtype=float)
    series = ((1 - p[:, None]) ** (k - 1) * gammainc(k, intensity[:, None])).sum(axis=1)
    np.testing.assert_allclose(_expected_purchases(intensity, p), series, rtol=1e-12)
    no_dropout = _expected_purchases(np.array([7.0, 900.0]), np.array([0.0, 0.0]))
    np.testing.assert_allclose(no_dropout, [7.0, 900.0], rtol=1e-14)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_expected_holdout_purchases_match_the_realised(logs, name):
    truth = logs[name].truth
    alive = truth["alive_at_cutoff"]
    realised, expected = truth["holdout_transactions"].sum(), truth["expected_holdout_transactions"]
    # sd of this ratio is about 0.9% at 20k users (exact variance of N, checked over seeds)
    assert realised == pytest.approx(expected.sum(), rel=0.03)
    assert truth["holdout_spend"].sum() == pytest.approx(
        truth["expected_holdout_spend"].sum(), rel=0.04
    )
    assert (expected[~alive] == 0).all() and (truth.loc[~alive, "holdout_transactions"] == 0).all()
    # the drift is real: the intensity is not lambda * H
    cfg = logs[name].config
    gain = truth["holdout_intensity"] / (truth["purchase_rate_per_day"] * cfg.holdout_days)
    if name == "season":  # shared by everyone: the mean of 1 + A sin(...) over the window
        t = np.linspace(cfg.days, cfg.days + cfg.holdout_days, 100_001)
        cycle = np.trapezoid(1 + cfg.seasonality * np.sin(2 * np.pi * t / 365), t)
        np.testing.assert_allclose(gain, cycle / cfg.holdout_days, rtol=1e-9)
    else:
        assert gain.std() > 0.3


def test_rising_rates_buy_later_in_life(logs):
    data = logs["trend"]
    buys = _purchases(data).sort_values(["user_id", "t"])
    by_user = buys.groupby("user_id")["t"]
    first, last = by_user.transform("min"), by_user.transform("max")
    # Given the last arrival, the purchases between signup and it are i.i.d. with density
    # proportional to the rate, so the share in the second half is 1/2 for a flat rate.
    inner = (buys["t"] > first) & (buys["t"] < last)
    late = (buys["t"] > (first + last) / 2)[inner].groupby(buys["user_id"][inner]).mean()
    slope = data.truth.set_index("user_id")["rate_trend_per_year"].reindex(late.index)
    assert late[slope > 0.5].mean() > 0.55
    assert late[slope < -0.5].mean() < 0.45
    assert late[slope.abs() < 0.2].mean() == pytest.approx(0.5, abs=0.025)


def test_the_seasonal_cycle_shows_in_monthly_purchases(logs):
    seasonal = logs["season"]
    # the same users (no drift draws for a season) buying at a constant rate
    flat = generate(users=USERS, seed=seasonal.config.seed, **FAST)
    pd.testing.assert_series_equal(
        seasonal.truth["purchase_rate_per_day"], flat.truth["purchase_rate_per_day"]
    )
    month = 365 / 12
    n_months = int((seasonal.config.days + seasonal.config.holdout_days) // month)

    def monthly(data) -> np.ndarray:
        buys = _purchases(data)
        buys = buys[buys["t"] > buys.groupby("user_id")["t"].transform("min")]  # not signups
        return np.bincount((buys["t"] // month).astype(int), minlength=n_months)[:n_months]

    ratio = monthly(seasonal) / monthly(flat)
    cycle = np.sin(2 * np.pi * (np.arange(n_months) + 0.5) * month / 365)
    assert np.corrcoef(ratio, cycle)[0, 1] > 0.8
    assert ratio[2] > 1.1 > 0.9 > ratio[8]  # spring peak, autumn trough (phase 0)


def test_a_burst_at_the_cutoff_raises_the_holdout(logs):
    data = logs["bursts"]
    truth = data.truth[data.truth["alive_at_cutoff"]]
    hot = truth["in_burst_at_cutoff"]
    assert 500 < hot.sum() < 2_000

    def ratio(col: str) -> float:
        return truth.loc[hot, col].mean() / truth.loc[~hot, col].mean()

    rate = truth["purchase_rate_at_cutoff"] / truth["purchase_rate_per_day"]
    assert np.allclose(rate[hot], 6.0) and np.allclose(rate[~hot], 1.0)
    assert ratio("expected_holdout_spend") > 1.2
    assert ratio("expected_holdout_transactions") > 1.2
    assert ratio("holdout_spend") > 1.1
    # the expectation stays right inside the group, burst included
    assert truth.loc[hot, "holdout_transactions"].sum() == pytest.approx(
        truth.loc[hot, "expected_holdout_transactions"].sum(), rel=0.1
    )
    # and the recent sequence shows the burst: purchases in the last 14 days of the log
    buys = _purchases(data)
    recent = buys[buys["t"].between(data.config.days - 14, data.config.days, inclusive="left")]
    per_user = recent.groupby("user_id").size()
    hot_recent = per_user.reindex(truth.loc[hot, "user_id"], fill_value=0).mean()
    cold_recent = per_user.reindex(truth.loc[~hot, "user_id"], fill_value=0).mean()
    assert hot_recent > 2 * cold_recent


def test_personal_seasons_keep_the_intensity_exact():
    cfg = SynthConfig.personal_seasons(bursts_per_year=4.0)
    assert (cfg.seasonality, cfg.season_phase_spread, cfg.trend_sd) == (0.6, 1.0, 1.0)
    rng = np.random.default_rng(1)
    birth = rng.uniform(0.05, 270, 30)
    drift = _Drift.draw(cfg, birth, rng)
    assert drift.phase.std() > 1.0  # phases spread over the year, not one shared season
    _assert_exact_intensity_and_bound(drift, len(birth), rng)
    with pytest.raises(ValueError, match="season_phase_spread"):
        generate(users=10, items=5, days=30, seasonality=0.3, season_phase_spread=2.0)


def test_personal_seasons_truth_matches_the_realised():
    data = generate(SynthConfig.personal_seasons(users=USERS, seed=21, **FAST))
    truth = data.truth
    assert truth["holdout_transactions"].sum() == pytest.approx(
        truth["expected_holdout_transactions"].sum(), rel=0.03
    )


def test_annual_habits_last_years_timing_tells_the_coming_season():
    """The annual-habits preset: two years of long-lived customers with strong seasons of
    their own, so *when* a customer bought last year says how much the next 90 days hold."""
    cfg = SynthConfig.annual_habits(users=4_000, seed=5, **FAST)
    assert (cfg.days, cfg.seasonality, cfg.season_phase_spread, cfg.b) == (730, 0.95, 1.0, 12.0)
    assert SynthConfig.annual_habits(days=365).days == 365  # overrides still win
    data = generate(cfg)
    truth = data.truth.set_index("user_id")
    assert truth["dropout_probability"].mean() == pytest.approx(0.8 / 12.8, rel=0.1)
    buys = _purchases(data)
    past = buys[buys["t"] < cfg.days]
    # how close each past purchase fell to the coming window's season (its middle is 45 days
    # after the cut-off, a year on), averaged per customer
    age = cfg.days - past["t"]
    past = past.assign(aligned=np.cos(2 * np.pi * (age + cfg.holdout_days / 2) / 365.25))
    per_user = past.groupby("user_id")["aligned"].agg(["mean", "size"])
    keep = per_user.index[(per_user["size"] >= 4) & truth.loc[per_user.index, "alive_at_cutoff"]]
    assert len(keep) > 300
    season = truth.loc[keep, "holdout_intensity"] / (
        truth.loc[keep, "purchase_rate_per_day"] * cfg.holdout_days
    )  # the drift's multiplier of the holdout rate, which no model observes
    rho = pd.Series(per_user.loc[keep, "mean"]).corr(season, method="spearman")
    assert rho > 0.2
    # the cycle (with trends and bursts) moves the coming window's rate many-fold
    assert season.quantile(0.9) / season.quantile(0.1) > 10
