"""BTYD models: published CDNOW fits, parameter recovery on simulated customers, sanity of
probabilities and expectations, and lifetime value."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import gammaln, hyp2f1

from valuerec.data.store import Store
from valuerec.features.rfm import holdout_summary, rfm_summary
from valuerec.value.btyd import (
    BetaGeoFitter,
    GammaGammaFitter,
    ParetoNBDFitter,
    customer_lifetime_value,
)

network = pytest.mark.network

# Published maximum likelihood estimates on the CDNOW 1/10 sample, 39-week calibration, weeks.
BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # Fader, Hardie & Lee 2005
PARETO = {"r": 0.55, "alpha": 10.58, "s": 0.61, "beta": 11.67}  # Fader, Hardie & Lee 2005
GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}  # Fader, Hardie & Lee 2005 (RFM and CLV)

T_GRID = np.array([0.0, 0.5, 1.0, 4.0, 13.0, 39.0, 104.0])


# -- simulated customers ---------------------------------------------------------------------
def simulate_bgnbd(n: int, r: float, alpha: float, a: float, b: float, seed: int) -> pd.DataFrame:
    """Customers acquired at 0 and observed for T in [26, 52] weeks, per the BG/NBD story."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(26, 52, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i], t_x[i] = x[i] + 1, t
            if rng.random() < p[i]:  # drops out right after this purchase
                break
    return pd.DataFrame({"frequency": x, "recency": t_x, "T": T})


def simulate_pareto(n: int, r: float, alpha: float, s: float, beta: float, seed: int):
    """Customers with Poisson purchases until an exponential lifetime, per Pareto/NBD."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    mu = rng.gamma(s, 1 / beta, n)
    T = rng.uniform(26, 52, n)
    active = np.minimum(rng.exponential(1 / mu), T)
    x = rng.poisson(lam * active)
    t_x = np.array([active[i] * rng.random(k).max() if k else 0.0 for i, k in enumerate(x)])
    return pd.DataFrame({"frequency": x.astype(float), "recency": t_x, "T": T})


def simulate_spend(n: int, p: float, q: float, gamma: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 10, n)
    nu = rng.gamma(q, 1 / gamma, n)
    m = np.array([rng.gamma(p, 1 / nu[i], k).mean() for i, k in enumerate(x)])
    return pd.DataFrame({"frequency": x.astype(float), "monetary_value": m})


def assert_close(fitted: dict[str, float], truth: dict[str, float], rel: float) -> None:
    assert fitted.keys() == truth.keys()
    for name, value in truth.items():
        assert fitted[name] == pytest.approx(value, rel=rel), (name, fitted)


def test_bgnbd_recovers_simulated_parameters():
    truth = {"r": 0.5, "alpha": 6.0, "a": 0.8, "b": 2.5}
    model = BetaGeoFitter().fit(simulate_bgnbd(6_000, **truth, seed=1))
    assert_close(model.params_, truth, rel=0.25)


def test_pareto_recovers_simulated_parameters():
    truth = {"r": 0.6, "alpha": 8.0, "s": 0.8, "beta": 12.0}
    model = ParetoNBDFitter().fit(simulate_pareto(6_000, **truth, seed=2))
    assert_close(model.params_, truth, rel=0.25)


def test_gamma_gamma_recovers_simulated_parameters():
    truth = {"p": 6.0, "q": 4.0, "gamma": 15.0}
    model = GammaGammaFitter().fit(simulate_spend(3_000, **truth, seed=3))
    assert_close(model.params_, truth, rel=0.2)


# -- formulas against their textbook form ----------------------------------------------------
CASES = [(2, 30.43, 38.86), (0, 0.0, 38.86), (10, 20.0, 30.0), (1, 38.86, 38.86)]


def fitted(cls, params):
    model = cls()
    model.params_ = dict(params)
    return model


@pytest.mark.parametrize(("x", "t_x", "T"), CASES)
def test_bgnbd_conditional_expectation_is_equation_10(x, t_x, T):
    """The Euler-transformed implementation equals the paper's equation (10) as printed."""
    r, alpha, a, b = BGNBD.values()
    t = 39.0
    z = t / (alpha + T + t)
    growth = (
        (a + b + x - 1)
        / (a - 1)
        * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z))
    )
    paper = growth / (1 + (x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))
    model = fitted(BetaGeoFitter, BGNBD)
    got = model.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)
    assert got == pytest.approx(paper, rel=1e-10)


@pytest.mark.parametrize(
    "params",
    [
        PARETO,
        {"r": 0.55, "alpha": 13.0, "s": 0.61, "beta": 11.67},
        {"r": 2.0, "alpha": 3.0, "s": 1.0, "beta": 3.0},
    ],
)
@pytest.mark.parametrize(("x", "t_x", "T"), CASES)
def test_pareto_likelihood_and_p_alive_by_integration(params, x, t_x, T):
    """Both hypergeometric branches (alpha < beta, alpha >= beta) and s = 1 agree with the
    integral that A0 stands for: s / (r+s+x) A0 = int_{t_x}^T s (alpha+u)^-(r+x)
    (beta+u)^-(s+1) du."""
    r, alpha, s, beta = params.values()
    died = quad(
        lambda u: s * (alpha + u) ** -(r + x) * (beta + u) ** -(s + 1),
        t_x,
        T,
        epsabs=0,
        epsrel=1e-12,
    )[0]
    alive = (alpha + T) ** -(r + x) * (beta + T) ** -s
    log_l = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    log_l += np.log(alive + died)
    got = ParetoNBDFitter._log_likelihood(
        np.array([r, alpha, s, beta]), np.array([float(x)]), np.array([t_x]), np.array([T])
    )
    assert got[0] == pytest.approx(log_l, rel=1e-9)
    p_alive = fitted(ParetoNBDFitter, params).conditional_probability_alive(x, t_x, T)
    assert p_alive == pytest.approx(alive / (alive + died), rel=1e-9)


def test_heavy_buyers_stay_finite():
    x = np.array([300.0, 2_000.0, 5_000.0])
    t_x, T = np.array([50.0, 99.0, 100.0]), np.array([52.0, 100.0, 100.0])
    for model in (fitted(BetaGeoFitter, BGNBD), fitted(ParetoNBDFitter, PARETO)):
        alive = model.conditional_probability_alive(x, t_x, T)
        expected = model.conditional_expected_number_of_purchases_up_to_time(10.0, x, t_x, T)
        assert np.isfinite(alive).all() and np.isfinite(expected).all()
        assert (expected >= 0).all()


def test_unconditional_expectation_is_the_new_customer_case():
    for model in (fitted(BetaGeoFitter, BGNBD), fitted(ParetoNBDFitter, PARETO)):
        new = model.conditional_expected_number_of_purchases_up_to_time(T_GRID, 0, 0.0, 0.0)
        np.testing.assert_allclose(model.expected_number_of_purchases_up_to_time(T_GRID), new)
    r, alpha, a, b = BGNBD.values()
    t = 39.0
    paper = (
        (a + b - 1)
        / (a - 1)
        * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t)))
    )
    model = fitted(BetaGeoFitter, BGNBD)
    assert model.expected_number_of_purchases_up_to_time(t) == pytest.approx(paper, rel=1e-10)


def test_gamma_gamma_expected_spend_shrinks_towards_the_population_mean():
    model = fitted(GammaGammaFitter, GAMMA_GAMMA)
    p, q, gamma = GAMMA_GAMMA.values()
    population = p * gamma / (q - 1)
    assert model.conditional_expected_average_profit(0, 123.0) == pytest.approx(population)
    own = np.array([10.0, 100.0])
    for x in (1, 5, 50):
        spend = model.conditional_expected_average_profit(np.full(2, x), own)
        assert own[0] < spend[0] < population < spend[1] < own[1]
    heavy = model.conditional_expected_average_profit(10_000, 100.0)
    assert heavy == pytest.approx(100.0, rel=1e-3)


def test_unfitted_and_bad_input():
    with pytest.raises(RuntimeError, match="not fitted"):
        BetaGeoFitter().conditional_probability_alive(1, 1.0, 2.0)
    with pytest.raises(ValueError, match="recency"):
        BetaGeoFitter().fit(pd.DataFrame({"frequency": [1], "T": [2.0]}))
    with pytest.raises(ValueError, match="recency <= T"):
        ParetoNBDFitter().fit(pd.DataFrame({"frequency": [1], "recency": [3.0], "T": [2.0]}))
    with pytest.raises(ValueError, match="frequency > 0"):
        GammaGammaFitter().fit(pd.DataFrame({"frequency": [0], "monetary_value": [0.0]}))


def test_series_in_series_out():
    summary = pd.DataFrame(
        {"frequency": [0, 3], "recency": [0.0, 10.0], "T": [20.0, 20.0]},
        index=pd.Index(["u1", "u2"], name="user_id"),
    )
    model = fitted(BetaGeoFitter, BGNBD)
    alive = model.conditional_probability_alive(
        summary["frequency"], summary["recency"], summary["T"]
    )
    assert isinstance(alive, pd.Series) and alive.index.equals(summary.index)
    assert isinstance(model.conditional_probability_alive(3, 10.0, 20.0), float)


def test_penalizer_shrinks_parameters():
    data = simulate_bgnbd(1_000, 0.5, 6.0, 0.8, 2.5, seed=4)
    plain = BetaGeoFitter().fit(data).params_
    shrunk = BetaGeoFitter(penalizer=0.01).fit(data).params_
    assert sum(v * v for v in shrunk.values()) < sum(v * v for v in plain.values())


# -- the real CDNOW sample -------------------------------------------------------------------


@pytest.fixture(scope="module")
def summary(cdnow: Store) -> pd.DataFrame:
    return rfm_summary(cdnow, "1997-10-01", observation_start="1997-01-01")


@pytest.fixture(scope="module")
def models(summary: pd.DataFrame) -> dict[str, object]:
    fits, seconds = {}, {}
    for name, cls in (
        ("bgnbd", BetaGeoFitter),
        ("pareto", ParetoNBDFitter),
        ("gg", GammaGammaFitter),
    ):
        started = time.perf_counter()
        fits[name] = cls().fit(summary)
        seconds[name] = time.perf_counter() - started
    print("fit seconds:", {k: round(v, 2) for k, v in seconds.items()})
    return fits


@network
@pytest.mark.parametrize(
    ("name", "published"), [("bgnbd", BGNBD), ("pareto", PARETO), ("gg", GAMMA_GAMMA)]
)
def test_published_cdnow_fits(models, name, published):
    print(name, models[name].params_)
    assert_close(models[name].params_, published, rel=0.02)


@network
def test_published_log_likelihoods(models):
    assert models["bgnbd"].log_likelihood_ == pytest.approx(-9582.4, abs=0.1)
    assert models["pareto"].log_likelihood_ == pytest.approx(-9595.0, abs=0.1)
    assert models["gg"].n_customers_ == 946


@network
def test_probability_alive(models, summary):
    x, t_x, T = summary["frequency"], summary["recency"], summary["T"]
    for name in ("bgnbd", "pareto"):
        alive = models[name].conditional_probability_alive(x, t_x, T)
        assert ((alive >= 0) & (alive <= 1)).all()
        assert alive[(x > 0) & (t_x < T - 10)].max() < alive[(x > 0) & (t_x == T)].min()
    pareto_alive = models["pareto"].conditional_probability_alive(x, t_x, T)
    assert (pareto_alive[t_x == T] == 1.0).all()  # just seen buying: cannot have left
    bg_alive = models["bgnbd"].conditional_probability_alive(x, t_x, T)
    assert (bg_alive[x == 0] == 1.0).all()  # BG/NBD drops out only after a purchase
    assert (bg_alive[x > 0] < 1.0).all()  # ... possibly the last one seen


@network
def test_conditional_expectations_grow_with_t(models, summary):
    x, t_x, T = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    for name in ("bgnbd", "pareto"):
        model = models[name]
        curves = np.array(
            [
                model.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)
                for t in T_GRID
            ]
        )
        assert np.isfinite(curves).all()
        assert (curves[0] == 0).all() and (curves >= 0).all()
        assert (np.diff(curves, axis=0) > 0).all()
        uncond = model.expected_number_of_purchases_up_to_time(T_GRID)
        assert uncond[0] == 0 and (np.diff(uncond) > 0).all()


@network
def test_holdout_aggregate(cdnow, models, summary):
    """Weeks 40-78: 1,882 actual repeat purchase days against the models' forecasts.

    Fitted on weeks 1-39 only, BG/NBD predicts about 1,653 and Pareto/NBD about 1,666
    (12% under): CDNOW's aggregate sales had not settled into the models' steady decline.
    """
    hold = holdout_summary(cdnow, "1997-10-01", "1998-07-01", observation_start="1997-01-01")
    assert hold.index.equals(summary.index)
    actual = hold["frequency_holdout"].sum()
    for name in ("bgnbd", "pareto"):
        predicted = models[name].conditional_expected_number_of_purchases_up_to_time(
            hold["duration_holdout"], summary["frequency"], summary["recency"], summary["T"]
        )
        print(f"{name}: holdout predicted {predicted.sum():.0f}, actual {actual}")
        assert predicted.sum() == pytest.approx(actual, rel=0.15)
        # the ranking matters more than the total: who buys again is predicted well
        corr = np.corrcoef(predicted, hold["frequency_holdout"])[0, 1]
        assert corr > 0.6


@network
def test_customer_lifetime_value(models, summary):
    bg, gg = models["bgnbd"], models["gg"]
    year = customer_lifetime_value(bg, gg, summary, 12)
    assert year.index.equals(summary.index) and year.name == "clv"
    assert (year >= 0).all() and np.isfinite(year).all()
    assert (customer_lifetime_value(bg, gg, summary, 24) > year).all()
    assert (customer_lifetime_value(bg, gg, summary, 12, discount_rate=0.05) < year).all()
    # undiscounted, one period: expected purchases in 30 days times expected spend
    one = customer_lifetime_value(bg, gg, summary, 1, discount_rate=0.0)
    purchases = bg.conditional_expected_number_of_purchases_up_to_time(
        30 / 7, summary["frequency"], summary["recency"], summary["T"]
    )
    spend = gg.conditional_expected_average_profit(summary["frequency"], summary["monetary_value"])
    pd.testing.assert_series_equal(one, purchases * spend, check_names=False)
    pareto = customer_lifetime_value(models["pareto"], gg, summary, 12)
    assert np.corrcoef(year, pareto)[0, 1] > 0.9
