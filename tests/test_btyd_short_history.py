"""BTYD models on tiny and short-history stores: finite, sensible predictions instead of the
NaN that parameters running off to infinity used to give; and the conditional purchase
distribution (PMF, median) that the median forecast of every BTYD model rests on."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.value.btyd import BetaGeoFitter, ParetoNBDFitter
from valuerec.value.models import BTYDValueModel

START = pd.Timestamp("2024-01-01")
HOLDOUT = 14
NUMERIC = ["pred_transactions", "pred_spend", "p_alive", "ltv", "ltv_low", "ltv_high"]


def fitted(cls, params):
    model = cls()
    model.params_ = dict(params)
    return model


def tiny_store(users: int, days: int, seed: int) -> Store:
    """``users`` customers buying about weekly (alpha=5 days) for ``days`` days."""
    data = generate(users=users, items=20, days=days, holdout_days=HOLDOUT, seed=seed, alpha=5.0)
    store = Store(":memory:")
    ingest(store, pd.concat([data.events, data.holdout_events], ignore_index=True), "events")
    return store


# (users, days, seed): each of these made BG/NBD + Gamma-Gamma predict NaN before the
# parameters were bounded (a, b -> 1e6 with a / (a + b) fixed: no dropout seen yet)
SHORT = [(50, 14, 0), (30, 14, 3), (40, 21, 4), (60, 28, 2)]


@pytest.mark.parametrize("transactions", ["bgnbd", "pareto"])
@pytest.mark.parametrize(("users", "days", "seed"), SHORT)
def test_short_histories_give_finite_sensible_predictions(transactions, users, days, seed):
    with tiny_store(users, days, seed) as store:
        cal = START + pd.Timedelta(days=days)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            model = BTYDValueModel(transactions).fit(store, cal, holdout_days=HOLDOUT)
            pred = model.predict()
    values = pred[[*NUMERIC, "pred_transactions_median"]].to_numpy(float)
    assert np.isfinite(values).all()
    assert (values >= 0).all()
    assert pred["p_alive"].le(1).all()
    # about a purchase a week: two weeks ahead, nobody is forecast more than a few dozen
    assert pred["pred_transactions"].max() < 30
    assert pred["pred_transactions"].sum() > 0
    # a customer who just bought: the more purchases so far, the more to come
    tm = model.transaction_model_
    x = np.arange(0.0, 8.0)
    age = days / 7.0
    grows = tm.conditional_expected_number_of_purchases_up_to_time(2.0, x, age, age)
    assert np.all(np.diff(grows) > 0)
    assert pred["pred_transactions_median"].eq(np.round(pred["pred_transactions_median"])).all()


def test_simulator_short_log_fits_bgnbd_without_falling_back():
    # the simulator's 7-day pre-period of seed 0 made BG/NBD predict NaN, so the simulator
    # fell back to the naive model with a warning
    from valuerec.simulate import Platform, SimConfig, Simulator, World
    from valuerec.simulate.fitting import fit_value

    world = World.draw(SimConfig(seed=0, users=2000, items=1000, slate_size=10))
    sim = Simulator(world)
    events = sim.organic(7, Platform(world.items, world.n_users, 10, 50)).events()
    as_of = sim.start + np.timedelta64(7, "D")
    ltv, risk = fit_value(events, world.user_ids, as_of, "bgnbd", fallback=None)
    assert np.isfinite(ltv).all() and np.isfinite(risk).all()
    assert (ltv >= 0).all() and ltv.max() > 0
    assert ((risk >= 0) & (risk <= 1)).all()


def test_parameters_stay_inside_the_box_and_say_so():
    # nobody has had time to drop out: the dropout parameters end on the box edge
    with tiny_store(30, 14, 3) as store:
        model = BTYDValueModel("bgnbd").fit(store, START + pd.Timedelta(days=14), holdout_days=14)
    tm = model.transaction_model_
    assert tm.at_bound_  # some parameter could not be pinned down
    assert all(1e-4 * 0.999 <= tm.params_[n] <= 1e4 * 1.001 for n in ("r", "a", "b"))
    assert model.spend_model_.params_["q"] > 1.0  # the population mean spend exists


@pytest.mark.parametrize(
    "params",
    [
        {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},  # CDNOW (published)
        {"r": 1.0, "alpha": 2.0, "a": 3.0, "b": 10.0},
        {"r": 1.0, "alpha": 2.0, "a": 0.1, "b": 0.5},
    ],
)
def test_bgnbd_quadrature_agrees_with_equation_10(params):
    model = fitted(BetaGeoFitter, params)
    t = np.array([1.0, 10.0, 39.0, 39.0, 39.0])
    x = np.array([0.0, 1.0, 3.0, 20.0, 0.0])
    age = np.array([30.0, 1.0, 30.0, 39.0, 0.0])
    closed = model._growth(t, x, age)
    np.testing.assert_allclose(model._growth_by_quadrature(t, x, age), closed, rtol=2e-5)


def test_bgnbd_extreme_parameters_are_finite():
    model = fitted(BetaGeoFitter, {"r": 2.9, "alpha": 2.75, "a": 4.4e4, "b": 2.6e6})
    x, t_x, T = np.array([0.0, 1.0, 5.0]), np.array([0.0, 1.0, 3.0]), np.array([4.0, 4.0, 4.0])
    n = model.conditional_expected_number_of_purchases_up_to_time(13.0, x, t_x, T)
    assert np.isfinite(n).all() and (n > 0).all()
    # the limit of no heterogeneity in dropout: p is almost surely a / (a + b) = 0.0166
    p = 4.4e4 / (4.4e4 + 2.6e6)
    lam_t = (2.9 + x) / (2.75 + T) * 13.0  # posterior mean rate x horizon
    alive = np.asarray(model.conditional_probability_alive(x, t_x, T))
    np.testing.assert_allclose(n, alive * -np.expm1(-p * lam_t) / p, rtol=0.05)


MODELS = {
    "bgnbd": (BetaGeoFitter, {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}),
    "pareto": (ParetoNBDFitter, {"r": 0.55, "alpha": 10.58, "s": 0.61, "beta": 11.67}),
}
X = np.array([0.0, 1.0, 3.0, 10.0, 30.0])
TX = np.array([0.0, 5.0, 20.0, 30.0, 38.0])
T = np.full(5, 39.0)


@pytest.mark.parametrize("name", list(MODELS))
def test_purchase_pmf_sums_to_one_and_has_the_expected_mean(name):
    model = fitted(*MODELS[name])
    n = np.arange(0, 300)[:, None]
    pmf = model.conditional_probability_of_n_purchases_up_to_time(n, 39.0, X, TX, T)
    assert (pmf >= 0).all()
    np.testing.assert_allclose(pmf.sum(axis=0), 1.0, atol=1e-7)
    mean = model.conditional_expected_number_of_purchases_up_to_time(39.0, X, TX, T)
    np.testing.assert_allclose((n * pmf).sum(axis=0), mean, rtol=1e-6)
    # nothing at n = 0 beyond P(dead) + P(alive and no purchase): dead mass sits at 0 only
    alive = np.asarray(model.conditional_probability_alive(X, TX, T))
    assert (pmf[0] >= 1 - alive - 1e-12).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_purchase_median_is_the_distribution_median(name):
    model = fitted(*MODELS[name])
    median = model.conditional_purchase_quantile(0.5, 39.0, X, TX, T)
    n = np.arange(0, 300)[:, None]
    cdf = np.cumsum(model.conditional_probability_of_n_purchases_up_to_time(n, 39.0, X, TX, T), 0)
    np.testing.assert_array_equal(median, np.argmax(cdf >= 0.5, axis=0))
    assert median[0] == 0 and median[-1] > 10  # one-off buyer vs heavy recent buyer
    assert np.all(np.diff(median) >= 0)
    assert (model.conditional_purchase_quantile(0.9, 39.0, X, TX, T) >= median).all()
    with pytest.raises(ValueError, match="level"):
        model.conditional_purchase_quantile(1.0, 39.0, X, TX, T)


def test_simulator_value_fit_samples_only_customers_seen_before_the_cut():
    # a customer whose only purchase comes after the cut is unknown to the model: sampling
    # them into the fit used to fail with "users have no purchase before ..."
    from valuerec.simulate import Platform, SimConfig, Simulator, World
    from valuerec.simulate.fitting import fit_value

    world = World.draw(SimConfig(seed=0, users=2000, items=1000, slate_size=10))
    sim = Simulator(world)
    events = sim.organic(7, Platform(world.items, world.n_users, 10, 50)).events()
    as_of = sim.start + np.timedelta64(7, "D")
    buys = events[events["event_type"] == "purchase"]
    seen = buys.loc[pd.to_datetime(buys["timestamp"]) < pd.Timestamp(as_of), "user_id"].unique()
    newcomer = next(u for u in world.user_ids if u not in set(buys["user_id"]))
    late = buys.iloc[[0]].assign(
        user_id=newcomer, timestamp=pd.Timestamp(as_of) + pd.Timedelta(1, "h")
    )
    events = pd.concat([events, late], ignore_index=True)
    ltv, risk = fit_value(
        events, world.user_ids, as_of, "bgnbd", fit_users=len(seen), fallback=None
    )
    assert np.isfinite(ltv).all() and np.isfinite(risk).all()
    assert ltv[list(world.user_ids).index(newcomer)] == 0.0  # no purchase before the cut
