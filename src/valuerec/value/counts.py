"""Distributions of a customer's purchase count, and their quantiles.

Every value model predicts the *expected* number of purchases, which adds up over customers
and feeds LTV. Absolute error, though, is minimised by the *median* of the predictive
distribution (Gneiting 2011, "Making and evaluating point forecasts"), and for the typical
customer, more likely gone than back, the median is 0 while the mean is a fraction. So each
model also exposes its count distribution as a PMF, and the median is read off it here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import gammaln

#: ``pmf(n, rows)``: P(exactly n purchases in the horizon) of the customers at ``rows``
CountPMF = Callable[[int, np.ndarray], np.ndarray]


def mixture_pmf(parts: Sequence[CountPMF], weights: Sequence[float] | None = None) -> CountPMF:
    """The weighted mixture of several models' count distributions (equal weights if None).

    An average of models (an ensemble, a bag) predicts the weighted mean count; the mixture is
    the distribution with that mean, so its median is the average's median forecast (a mean
    of the models' medians would not be the median of anything).
    """
    w = [1.0 / len(parts)] * len(parts) if weights is None else list(weights)

    def pmf(n: int, rows: np.ndarray) -> np.ndarray:
        return sum(wk * part(n, rows) for wk, part in zip(w, parts, strict=True))

    return pmf


def count_quantile(
    pmf: CountPMF, n_customers: int, level: float | np.ndarray = 0.5, max_n: int = 100_000
) -> np.ndarray:
    """Smallest n with P(count <= n) >= ``level``, per customer, from a count PMF.

    ``level``: one for all, or one per customer. Probabilities are accumulated n = 0, 1, ...
    only for customers still below their level, so the cost follows the largest quantile
    rather than a fixed grid of counts. ``max_n`` is far above any count a horizon of at
    most a century holds (one purchase day per day: 36,526); a cap of 10,000 had reported
    itself as the median of customers buying every other day over a century.
    """
    levels = np.broadcast_to(np.asarray(level, dtype=float), (n_customers,))
    if levels.size and not (np.all(levels > 0.0) and np.all(levels < 1.0)):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    cdf = np.zeros(n_customers)
    out = np.zeros(n_customers)
    todo = np.arange(n_customers)
    n = 0
    while todo.size and n <= max_n:
        cdf[todo] += np.nan_to_num(np.asarray(pmf(n, todo), dtype=float))
        done = cdf[todo] >= levels[todo] - 1e-12
        out[todo[done]] = n
        todo = todo[~done]
        n += 1
    out[todo] = n - 1  # mass lost to rounding: the largest count tried
    return out


def scaled_quantile(
    pmf: CountPMF, n_customers: int, scale: float, p_zero: np.ndarray, level: float = 0.5
) -> np.ndarray:
    """Quantile ``level`` of the count over ``scale`` times the horizon ``pmf`` is for, given
    each customer's P(no purchase) over that longer (or shorter) horizon, ``p_zero``.

    Supervised models learn one horizon's distribution and rescale to another by a constant
    rate: the mean ``scale`` times, and P(none) from a constant hazard (``P0 ** scale``, capped
    so that P(N >= 1) <= E[N]: :meth:`ValueModel._return_probability`). Scaling the median
    by ``scale`` instead had contradicted that P(none): a median of 0 beside a return
    probability above one half. Here one distribution gives both: 0 with probability
    ``p_zero``, else the learnt positive part stretched by the factor that keeps the mean
    (``scale (1 - P0) / (1 - p_zero)``). The quantile is 0 where ``p_zero >= level``, else
    the positive part's quantile at the matching level. At ``scale`` 1 it is
    :func:`count_quantile` of ``pmf`` (whose P(none) ``p_zero`` then is).
    """
    if scale == 1.0:  # the horizon the distribution is for: its own quantile, a whole count
        return count_quantile(pmf, n_customers, level)
    rows = np.arange(n_customers)
    p0 = np.clip(np.nan_to_num(np.asarray(pmf(0, rows), dtype=float)), 0.0, 1.0)
    z = np.clip(np.asarray(p_zero, dtype=float), 0.0, 1.0)
    out = np.zeros(n_customers)
    pos = np.flatnonzero((z < level) & (p0 < 1.0))
    if pos.size == 0:
        return out
    within = (level - z[pos]) / (1.0 - z[pos])  # the level among positive counts
    learnt = p0[pos] + within * (1.0 - p0[pos])  # the same level in the learnt distribution
    quantile = count_quantile(
        lambda n, r: pmf(n, pos[r]), pos.size, np.clip(learnt, 1e-12, 1.0 - 1e-12)
    )
    out[pos] = quantile * scale * (1.0 - p0[pos]) / (1.0 - z[pos])
    return out


def hurdle_pmf(p_return: np.ndarray, lam: np.ndarray) -> CountPMF:
    """PMF of a hurdle count: 0 with probability 1 - p, else a zero-truncated Poisson(lam).

    P(0) = 1 - p; P(k >= 1) = p * lam^k e^-lam / (k! (1 - e^-lam)), in logs so that large
    counts stay finite.
    """
    p = np.clip(np.asarray(p_return, float), 0.0, 1.0)
    lam = np.maximum(np.asarray(lam, float), 1e-12)

    def pmf(n: int, rows: np.ndarray) -> np.ndarray:
        if n == 0:
            return 1.0 - p[rows]
        lr = lam[rows]
        log = n * np.log(lr) - lr - gammaln(n + 1.0) - np.log(-np.expm1(-lr))
        return p[rows] * np.exp(log)

    return pmf


def zero_truncated_rate(mean_if_positive: np.ndarray, iterations: int = 60) -> np.ndarray:
    """The Poisson rate lam whose zero-truncated mean lam / (1 - e^-lam) is the given value.

    Solves f(lam) = lam - m (1 - e^-lam) = 0 by Newton's method from lam = m: f is convex
    and increasing past its root, so the steps fall monotonically onto it. A mean of 1 or
    less (every returning customer buys exactly once) gives a rate near 0.
    """
    m = np.maximum(np.asarray(mean_if_positive, float), 1.0 + 1e-9)
    lam = m.copy()
    for _ in range(iterations):
        f = lam - m * -np.expm1(-lam)
        grad = 1.0 - m * np.exp(-lam)
        step = np.where(grad > 1e-12, f / np.maximum(grad, 1e-12), 0.0)
        lam = np.maximum(lam - step, 1e-12)
    return lam
