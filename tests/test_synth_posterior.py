"""The Bayes forecast of a synthetic log equals brute-force integration of its posterior, and
reading the drift makes it better than the stationary posterior."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import gammaln

from valuerec.data.synth import SynthConfig, SynthData, generate
from valuerec.data.synth_posterior import _expected_purchases_given_alive, posterior_forecast

START = pd.Timestamp("2024-01-01")

#: (signup day, repeat purchase days, order values of all purchases, browse-view days)
HISTORIES = {
    "once": (40.0, [], [25.0], []),
    "steady": (10.0, [60.0, 150.0, 260.0], [30.0, 20.0, 35.0, 28.0], [100.0]),
    "recent run": (100.0, [300.0, 320.0, 333.0, 350.0, 358.0], [10.0, 12, 9, 11, 10, 13], []),
    "gone quiet": (5.0, [20.0, 31.0, 44.0], [60.0, 55.0, 70.0, 65.0], []),
    "still browsing": (5.0, [20.0, 31.0, 44.0], [60.0, 55.0, 70.0, 65.0], [30.0, 200.0]),
}


def _log(cfg: SynthConfig) -> SynthData:
    """A hand-made log with the four histories above."""
    rows, users = [], []
    for user, (born, repeats, values, views) in HISTORIES.items():
        users.append((user, START + pd.Timedelta(days=born)))
        for t, v in zip([born, *repeats], values, strict=True):
            rows.append((user, "i0", "purchase", START + pd.Timedelta(days=t), v, 1.0))
        for t in views:
            rows.append((user, "i0", "view", START + pd.Timedelta(days=t), np.nan, np.nan))
    events = pd.DataFrame(
        rows, columns=["user_id", "item_id", "event_type", "timestamp", "value", "quantity"]
    )
    table = pd.DataFrame(users, columns=["user_id", "signup_time"])
    empty = events.iloc[:0]
    return SynthData(events, pd.DataFrame(), table, pd.DataFrame(), empty, cfg)


def _brute_force(
    cfg: SynthConfig, born: float, repeats: list[float], views: list[float]
) -> tuple[float, float]:
    """P(alive at the cut-off) and E[holdout purchases] by a fine grid over (log lambda,
    logit p) of prior x likelihood, the rate factor integrated numerically: none of the
    closed forms of the module. Browsing is a Poisson process while active: a view after the
    last purchase rules leaving out."""
    D, H = float(cfg.days), float(cfg.holdout_days)
    beta, amp, phase = cfg.trend_mean / 365.0, cfg.seasonality, cfg.season_phase

    def f(t: float) -> float:
        return np.exp(beta * (t - born)) * (1 + amp * np.sin(2 * np.pi * t / 365 + phase))

    def integral(lo: float, hi: float) -> float:
        return quad(f, lo, hi, limit=200)[0] if hi > lo else 0.0

    x = len(repeats)
    f_cal, f_hold = integral(born, D), integral(D, D + H)
    t_last = repeats[-1] if repeats else born
    f_last = integral(born, t_last)
    c = cfg.browse_sessions_per_day
    log_prod = float(sum(np.log(f(t)) for t in repeats))
    s = np.linspace(-25.0, 4.0, 3001)[:, None]  # log lambda
    w = np.linspace(-30.0, 20.0, 3001)[None, :]  # logit p
    lam, p = np.exp(s), 1.0 / (1.0 + np.exp(-w))
    # prior densities in the transformed coordinates (Jacobians lam and p (1-p))
    log_prior = (
        cfg.r * np.log(cfg.alpha) - gammaln(cfg.r) + cfg.r * s - cfg.alpha * lam
        + gammaln(cfg.a + cfg.b) - gammaln(cfg.a) - gammaln(cfg.b)
        + cfg.a * np.log(p) + cfg.b * np.log1p(-p)
    )  # fmt: skip
    base = log_prior + x * s + log_prod
    alive = np.exp(base - lam * f_cal + (x + 1) * np.log1p(-p) - c * (D - born))
    left = np.exp(base - lam * f_last + x * np.log1p(-p) + np.log(p) - c * (t_last - born))
    if any(v > t_last for v in views):
        left = np.zeros_like(left)
    future = -np.expm1(-p * lam * f_hold) / p
    total = (alive + left).sum()
    return float(alive.sum() / total), float((alive * future).sum() / total)


@pytest.mark.parametrize(
    "cfg",
    [
        SynthConfig(),
        # a drift with no randomness: every prior draw is the same known trend and season
        SynthConfig(trend_mean=0.8, seasonality=0.4, season_phase=1.0),
    ],
    ids=["stationary", "known drift"],
)
def test_posterior_equals_brute_force_integration(cfg: SynthConfig) -> None:
    got = posterior_forecast(_log(cfg), draws=3).set_index("user_id")
    for user, (born, repeats, values, views) in HISTORIES.items():
        p_alive, tx = _brute_force(cfg, born, repeats, views)
        assert got.loc[user, "p_alive"] == pytest.approx(p_alive, rel=1e-4)
        assert got.loc[user, "expected_holdout_transactions"] == pytest.approx(tx, rel=1e-4)
        # Gamma-Gamma: E[p / nu | orders] on a grid over log nu of prior x likelihood
        z = np.array(values)
        log_nu = np.linspace(-12.0, 6.0, 20_001)
        nu = np.exp(log_nu)
        log_post = cfg.q * log_nu - cfg.gamma * nu + len(z) * cfg.p_gg * log_nu - nu * z.sum()
        weight = np.exp(log_post - log_post.max())
        mean_order = float((weight * cfg.p_gg / nu).sum() / weight.sum())
        assert got.loc[user, "expected_holdout_spend"] == pytest.approx(tx * mean_order, rel=1e-4)
    # the histories order as they should: a recent run of purchases expects the most
    tx = got["expected_holdout_transactions"]
    assert tx["recent run"] > tx["steady"] > tx["gone quiet"]
    assert got["p_alive"]["gone quiet"] < got["p_alive"]["steady"]
    assert got["p_alive"]["still browsing"] == pytest.approx(1.0)


def test_reading_the_drift_beats_the_stationary_posterior() -> None:
    """On a drifting log the posterior that knows drift exists forecasts the true expected
    purchases better than the BG/NBD-style posterior that assumes none, and both are unbiased
    in aggregate (a posterior mean's errors average out)."""
    data = generate(SynthConfig.drifting(users=1_500, items=50, seed=4))
    truth = data.truth.set_index("user_id")
    flat = dataclasses.replace(data, config=data.config.without_drift())
    assert not flat.config.drifts and flat.config.users == 1_500 and data.config.drifts
    drift = posterior_forecast(data, draws=300, min_ess=30, seed=1).set_index("user_id")
    still = posterior_forecast(flat).set_index("user_id")
    target = truth.loc[drift.index, "expected_holdout_transactions"]
    mse_drift = float(((drift["expected_holdout_transactions"] - target) ** 2).mean())
    mse_still = float(((still["expected_holdout_transactions"] - target) ** 2).mean())
    assert mse_drift < 0.8 * mse_still
    assert drift["expected_holdout_transactions"].mean() == pytest.approx(target.mean(), rel=0.08)
    assert drift["p_alive"].mean() == pytest.approx(truth["alive_at_cutoff"].mean(), abs=0.03)
    assert (drift["ess"] >= 1).all() and (drift["ess"] <= 3_000).all()


def test_bad_arguments() -> None:
    data = _log(SynthConfig())
    with pytest.raises(KeyError, match="nobody"):
        posterior_forecast(data, users=["once", "nobody"])
    with pytest.raises(ValueError, match="draws"):
        posterior_forecast(data, draws=0)
    calls: list[tuple[int, int]] = []
    one = posterior_forecast(data, users=["steady"], progress=lambda *a: calls.append(a))
    assert one["user_id"].tolist() == ["steady"]
    assert calls == [(1, 1)]


def test_heavy_buyers_get_a_finite_forecast() -> None:
    """A customer with 1,500 repeat purchases (two years of bursts; seen in a 20,000-user
    annual-habits log) overflowed SciPy's Gauss-Jacobi weights and got a NaN forecast. The
    expectation over the churn probability must match Monte Carlo for light and heavy
    buyers alike."""
    cfg = SynthConfig()
    x = np.array([3.0, 1500.0])
    f_cal, f_hold = np.array([300.0, 700.0]), np.array([90.0, 90.0])
    got = _expected_purchases_given_alive(cfg, x, f_cal, f_hold)
    rng = np.random.default_rng(0)
    for i in range(len(x)):
        p = rng.beta(cfg.a, cfg.b + x[i] + 1, 400_000)
        s = cfg.alpha + f_cal[i]
        kept = -np.expm1((cfg.r + x[i]) * (np.log(s) - np.log(s + p * f_hold[i])))
        assert got[i] == pytest.approx(np.mean(kept / p), rel=5e-3)
