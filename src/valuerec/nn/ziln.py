"""Zero-inflated lognormal (ZILN) distribution of future spend.

Wang, Liu & Miao (2019), "A Deep Probabilistic Model for Customer Lifetime Value Prediction":
spend is 0 with probability 1 - p and lognormal(mu, sigma) otherwise. One network output of
three numbers (logit p, mu, raw sigma) gives the expected value, the churn probability
(1 - p) and every quantile, which is where per-customer prediction intervals come from.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm


def ziln_params(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logit p, mu, sigma) from the three raw outputs; sigma is kept positive and sane."""
    logit, mu, raw = out.unbind(-1)
    sigma = F.softplus(raw) + 1e-3
    return logit, mu, sigma


def ziln_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of spend ``y`` (>= 0) under the ZILN outputs ``out``."""
    logit, mu, sigma = ziln_params(out)
    positive = y > 0
    bce = F.binary_cross_entropy_with_logits(logit, positive.float(), reduction="none")
    log_y = torch.log(torch.where(positive, y, torch.ones_like(y)))
    nll = (
        log_y + torch.log(sigma) + 0.5 * math.log(2 * math.pi) + (log_y - mu) ** 2 / (2 * sigma**2)
    )
    return (bce + positive.float() * nll).mean()


def ziln_mean(p: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """E[spend] = p * exp(mu + sigma^2 / 2)."""
    return p * np.exp(mu + 0.5 * sigma**2)


def ziln_quantile(level: np.ndarray | float, p: np.ndarray, mu: np.ndarray,
                  sigma: np.ndarray) -> np.ndarray:  # fmt: skip
    """Quantile of the ZILN at ``level``: 0 inside the atom, lognormal quantile above it."""
    level = np.broadcast_to(np.asarray(level, float), p.shape)
    inside = level <= 1 - p
    u = np.clip((level - (1 - p)) / np.maximum(p, 1e-12), 1e-9, 1 - 1e-9)
    return np.where(inside, 0.0, np.exp(mu + sigma * norm.ppf(u)))


#: the lower end of an interval that leaves 0 out, and both ends of an empty one: a positive
#: number no real spend hits (callers that rescale intervals keep it as it is)
EXCLUDES_ZERO = 1e-6


def ziln_interval(
    coverage: float, p: np.ndarray, mu: np.ndarray, sigma: np.ndarray, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Central prediction interval via the randomised PIT, with ``u ~ U(0,1)`` per customer.

    A deterministic interval cannot cover exactly ``coverage`` when the atom at zero holds
    more than that (most customers of a shop never come back): it either contains 0 and
    over-covers or leaves it out and under-covers. As for any discrete predictive
    distribution (Czado, Gneiting & Held 2009), the atom is given a randomised PIT ``u*(1-p)``
    and 0 belongs to the interval when that falls in the central band. Returns (low, high);
    ``low`` is a tiny positive number (1e-6) when the interval excludes 0, and an interval
    with nothing in it (0 excluded, no positive spend in the band) is ``(1e-6, 1e-6)``.
    """
    lo_level, hi_level = (1 - coverage) / 2, (1 + coverage) / 2
    zero_mass = 1 - p
    pit0 = u * zero_mass
    zero_in = (pit0 >= lo_level) & (pit0 <= hi_level)
    high = ziln_quantile(hi_level, p, mu, sigma)
    low_pos = ziln_quantile(np.maximum(lo_level, zero_mass + 1e-12), p, mu, sigma)
    low = np.where(zero_in, 0.0, np.maximum(low_pos, EXCLUDES_ZERO))
    # an interval that lies entirely inside the atom but excludes 0 holds no plausible spend:
    # it is returned as the point (EXCLUDES_ZERO, EXCLUDES_ZERO), which no real spend hits and
    # keeps low <= high
    empty = ~zero_in & (hi_level <= zero_mass)
    high = np.where(empty, EXCLUDES_ZERO, high)
    low = np.where(empty, EXCLUDES_ZERO, low)
    return low, high
