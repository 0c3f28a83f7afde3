"""Zero-inflated lognormal: mean, quantiles, randomised-PIT intervals, loss and its gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import lognorm

from valuerec.nn.ziln import ziln_interval, ziln_loss, ziln_mean, ziln_params, ziln_quantile


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_params_transform():
    out = torch.tensor([[0.3, 1.5, -200.0], [-2.0, 0.0, 0.7]], dtype=torch.float64)
    logit, mu, sigma = ziln_params(out)
    assert logit.tolist() == [0.3, -2.0]
    assert mu.tolist() == [1.5, 0.0]
    # sigma = softplus(raw) + 1e-3: positive even for a hugely negative raw output
    assert sigma[0].item() == pytest.approx(1e-3, abs=1e-12)
    assert sigma[1].item() == pytest.approx(softplus(0.7) + 1e-3, rel=1e-12)


def test_mean_formula_and_simulation():
    p = np.array([0.3, 1.0, 0.0, 0.8])
    mu = np.array([1.0, 0.0, 5.0, -1.0])
    sigma = np.array([0.5, 1.0, 2.0, 0.1])
    expected = [0.3 * math.exp(1.125), math.exp(0.5), 0.0, 0.8 * math.exp(-0.995)]
    np.testing.assert_allclose(ziln_mean(p, mu, sigma), expected, rtol=1e-12)
    # the formula is the mean of the distribution it claims to describe
    rng = np.random.default_rng(0)
    n = 400_000
    y = np.where(rng.random(n) < 0.3, rng.lognormal(1.0, 0.5, n), 0.0)
    assert y.mean() == pytest.approx(ziln_mean(np.array(0.3), 1.0, 0.5), rel=0.01)


def test_quantile_zero_inside_the_atom_lognormal_above():
    p = np.full(7, 0.3)
    mu = np.full(7, 2.0)
    sigma = np.full(7, 0.8)
    levels = np.array([0.0, 0.1, 0.5, 0.7, 0.71, 0.85, 0.99])
    q = ziln_quantile(levels, p, mu, sigma)
    assert (q[:4] == 0).all()  # levels up to the zero mass 0.7 fall in the atom
    above = levels[4:]
    expected = lognorm.ppf((above - 0.7) / 0.3, s=0.8, scale=math.exp(2.0))
    np.testing.assert_allclose(q[4:], expected, rtol=1e-9)
    # the median of the positive part at level 1 - p/2; strictly increasing above the atom
    assert ziln_quantile(0.85, p[:1], mu[:1], sigma[:1])[0] == pytest.approx(math.exp(2.0))
    assert (np.diff(q[3:]) > 0).all()


def test_quantile_is_the_inverse_cdf():
    rng = np.random.default_rng(1)
    p, mu, sigma = rng.uniform(0.05, 0.95, 50), rng.normal(2, 1, 50), rng.uniform(0.2, 2, 50)
    level = rng.uniform(0, 1, 50)
    q = ziln_quantile(level, p, mu, sigma)
    cdf = (1 - p) + p * lognorm.cdf(q, s=sigma, scale=np.exp(mu))  # F(q) for q >= 0
    positive = q > 0
    np.testing.assert_allclose(cdf[positive], level[positive], atol=1e-9)
    assert (level[~positive] <= 1 - p[~positive]).all()


@pytest.mark.parametrize("p", [0.02, 0.1, 0.19, 0.35, 0.6, 0.95])
@pytest.mark.parametrize("coverage", [0.8, 0.5])
def test_randomised_pit_interval_coverage(p, coverage):
    """Customers drawn from the ZILN itself are covered at the nominal rate, even when the
    atom at zero holds more than ``coverage`` (p < 0.2 for 80%) so that no deterministic
    interval can."""
    rng = np.random.default_rng(int(p * 1000) + int(coverage * 10))
    n = 200_000
    mu = rng.normal(3.0, 0.7, n)
    sigma = rng.uniform(0.3, 1.5, n)
    pp = np.full(n, p)
    y = np.where(rng.random(n) < p, rng.lognormal(mu, sigma), 0.0)
    u = rng.random(n)  # independent of y, as a per-user hash is
    low, high = ziln_interval(coverage, pp, mu, sigma, u)
    covered = (y >= low) & (y <= high)
    assert covered.mean() == pytest.approx(coverage, abs=0.01)
    # how the coverage splits between the atom and the positive part is exact too
    zero_mass = 1 - p
    lo_level, hi_level = (1 - coverage) / 2, (1 + coverage) / 2
    zero_share = max(0.0, min(zero_mass, hi_level) - lo_level) / zero_mass if p < 1 else 0.0
    assert covered[y == 0].mean() == pytest.approx(zero_share, abs=0.01)
    assert (low >= 0).all() and np.isfinite(high).all()
    # a zero is covered exactly when the interval starts at 0
    np.testing.assert_array_equal(covered[y == 0], low[y == 0] == 0)


def test_interval_mixed_population_coverage():
    rng = np.random.default_rng(7)
    n = 200_000
    p = rng.choice([0.03, 0.15, 0.3, 0.7, 0.97], n)
    mu = rng.normal(2.0, 1.0, n)
    sigma = rng.uniform(0.2, 2.0, n)
    y = np.where(rng.random(n) < p, rng.lognormal(mu, sigma), 0.0)
    u = rng.random(n)
    for coverage in (0.8, 0.5):
        low, high = ziln_interval(coverage, p, mu, sigma, u)
        assert np.mean((y >= low) & (y <= high)) == pytest.approx(coverage, abs=0.01)
    # a deterministic choice of u (always 0: the atom's bottom) misses the target when the
    # atom dominates, which is why the PIT is randomised
    low, high = ziln_interval(0.8, p, mu, sigma, np.zeros(n))
    small = p < 0.2
    assert np.mean(((y >= low) & (y <= high))[small]) < 0.2


def test_interval_shapes_for_known_cases():
    mu, sigma = np.array([2.0]), np.array([0.5])
    # p = 0.05: the 80% interval lies inside the atom; with u = 0.5 it is exactly {0}
    low, high = ziln_interval(0.8, np.array([0.05]), mu, sigma, np.array([0.5]))
    assert (low[0], high[0]) == (0.0, 0.0)
    # ... with u = 0.01 (PIT 0.0095 < 0.1) it excludes 0 and is empty: the point (1e-6, 1e-6)
    low, high = ziln_interval(0.8, np.array([0.05]), mu, sigma, np.array([0.01]))
    assert low[0] == high[0] == 1e-6  # empty: no plausible spend, and low <= high
    # p = 0.95: zero mass 0.05 < 0.1, so 0 is never inside; bounds are lognormal quantiles
    low, high = ziln_interval(0.8, np.array([0.95]), mu, sigma, np.array([0.5]))
    np.testing.assert_allclose(
        [low[0], high[0]],
        lognorm.ppf([0.05 / 0.95, 0.85 / 0.95], s=0.5, scale=math.exp(2.0)),
        rtol=1e-9,
    )
    # p = 0.5, u = 0.5: PIT 0.25 is inside [0.1, 0.9]: [0, 80% quantile of the positive part]
    low, high = ziln_interval(0.8, np.array([0.5]), mu, sigma, np.array([0.5]))
    assert low[0] == 0.0
    assert high[0] == pytest.approx(lognorm.ppf(0.8, s=0.5, scale=math.exp(2.0)), rel=1e-9)


def test_loss_matches_hand_computation():
    out = torch.tensor([[0.4, 1.0, 0.2], [-0.3, 1.2, -0.5]], dtype=torch.float64)
    y = torch.tensor([0.0, 3.5], dtype=torch.float64)
    p1 = 1 / (1 + math.exp(-0.4))
    p2 = 1 / (1 + math.exp(0.3))
    s2 = softplus(-0.5) + 1e-3
    nll1 = -math.log(1 - p1)  # a zero: only the atom
    # a positive: log p + the lognormal log-density of 3.5
    log_pdf = -math.log(3.5 * s2 * math.sqrt(2 * math.pi)) - (math.log(3.5) - 1.2) ** 2 / (
        2 * s2**2
    )
    assert log_pdf == pytest.approx(lognorm.logpdf(3.5, s=s2, scale=math.exp(1.2)), rel=1e-12)
    nll2 = -math.log(p2) - log_pdf
    # (the atom's cross-entropy is computed against a float32 target: float32 precision)
    assert ziln_loss(out, y).item() == pytest.approx((nll1 + nll2) / 2, rel=1e-6)
    # the zero sample does not depend on mu or sigma
    moved = out.clone()
    moved[0, 1:] = torch.tensor([-7.0, 4.0])
    assert ziln_loss(moved, y).item() == pytest.approx(ziln_loss(out, y).item(), rel=1e-12)


def test_loss_gradient_moves_p_to_the_zero_share_and_fits_the_mle():
    rng = np.random.default_rng(3)
    n, n_pos = 200, 60  # 70% zeros
    y_pos = rng.lognormal(2.0, 0.6, n_pos)
    y = torch.tensor(np.concatenate([np.zeros(n - n_pos), y_pos]), dtype=torch.float64)
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # p = 0.5 to start

    def loss() -> torch.Tensor:
        return ziln_loss(theta.expand(n, 3), y)

    loss().backward()
    # d loss / d logit = mean(sigmoid(logit) - 1[y > 0]) = 0.5 - 0.3
    assert theta.grad[0].item() == pytest.approx(0.2, rel=1e-6)
    opt = torch.optim.Adam([theta], lr=0.05)
    history = []
    for _ in range(600):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        history.append(value.item())
    assert history[-1] < history[0]
    logit, mu, sigma = (x.item() for x in ziln_params(theta.detach()[None]))
    # maximum likelihood: p = share of positives, mu / sigma = mean / sd of log y
    assert 1 / (1 + math.exp(-logit)) == pytest.approx(0.3, abs=1e-3)
    assert mu == pytest.approx(np.log(y_pos).mean(), abs=1e-3)
    assert sigma == pytest.approx(np.log(y_pos).std(), abs=1e-3)


def test_loss_is_finite_for_extreme_inputs():
    out = torch.tensor([[30.0, 0.0, -30.0], [-30.0, 10.0, 30.0]], dtype=torch.float64)
    y = torch.tensor([1e-6, 1e6], dtype=torch.float64)
    assert math.isfinite(ziln_loss(out, y).item())
    assert math.isfinite(ziln_loss(out, torch.zeros(2, dtype=torch.float64)).item())
