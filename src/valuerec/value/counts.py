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


def count_quantile(pmf: CountPMF, n_customers: int, level: float = 0.5,
                   max_n: int = 10_000) -> np.ndarray:  # fmt: skip
    """Smallest n with P(count <= n) >= ``level``, per customer, from a count PMF.

    Probabilities are accumulated n = 0, 1, ... only for customers still below ``level``,
    so the cost follows the largest quantile rather than a fixed grid of counts.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    cdf = np.zeros(n_customers)
    out = np.zeros(n_customers)
    todo = np.arange(n_customers)
    n = 0
    while todo.size and n <= max_n:
        cdf[todo] += np.nan_to_num(np.asarray(pmf(n, todo), dtype=float))
        done = cdf[todo] >= level - 1e-12
        out[todo[done]] = n
        todo = todo[~done]
        n += 1
    out[todo] = n - 1  # mass lost to rounding: the largest count tried
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
