"""The Bayes-optimal forecast of a synthetic log: what the data can tell, at best.

A model scored against a synthetic log's true expected spend can never reach a normalized
Gini of 1: a customer's latent rate, dropout, trend and bursts are only partly revealed by a
year of purchases. The best any model can do with the log is the posterior mean of the
holdout spend under the generator itself, its population parameters known. This module
computes it, so a benchmark can say how much of a gap between two models is attainable at
all (the "ceiling" of a known drift multiplier is not: no model observes it). Ranking by the
posterior mean maximises the expected Gini of the ranking (given the data, the Gini sum is
linear in the true values, with weights that fall with rank), so no model fitted on the log
beats it on average; normalizing by the perfect order's Gini changes that only slightly.

Given a customer's calibration purchases -- the first at signup ``b``, then ``x`` more at
``tau_1..tau_x < D`` -- and their drift ``theta`` (trend slope, season phase, bursts; the
rate is ``lambda f_theta(t)``), the log's likelihood is the non-homogeneous Poisson process
times the dropout after each purchase (:mod:`valuerec.data.synth`)::

    alive at D:         lambda^x prod f(tau_j) exp(-lambda F(b, D))        (1-p)^(x+1)
    left after tau_x:   lambda^x prod f(tau_j) exp(-lambda F(b, tau_x))    (1-p)^x p

with ``F`` the integral of ``f``, times what the browsing says: browse-only sessions are a
Poisson process (rate ``c``) while the customer is active, so the first case also has
``exp(-c (D - b))`` and the second ``exp(-c (tau_x - b))``, or 0 if a session was seen after
``tau_x`` (a customer seen browsing after their last purchase has not left). Leaving that out
would throw away what every model with event counts reads.

The Gamma prior of ``lambda`` and the Beta prior of ``p`` integrate out in closed form (the
BG/NBD algebra), so only ``theta`` is sampled: ``draws`` draws per customer from its prior,
weighted by the marginal likelihood (importance sampling). Given ``theta`` and alive,
``lambda ~ Gamma(r+x, alpha+F(b, D))`` and ``p ~ Beta(a, b+x+1)``, and the expected holdout
purchases ``E[(1 - exp(-p lambda H))/p]`` (``H`` the window's integral of ``f``) is
``E_p[(1 - ((alpha+F)/(alpha+F+pH))^(r+x)) / p]``, a one-dimensional integral done by
Gauss-Jacobi quadrature. Order values are Gamma-Gamma: the posterior mean of the mean order is
``p_gg (gamma + sum z) / (q + n p_gg - 1)`` over the ``n`` observed orders.

Written by hand: no library computes the posterior of this particular generator; the pieces
(``betaln``, ``logsumexp``, ``roots_jacobi``) are scipy's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.special import betaln, logsumexp, roots_jacobi, roots_legendre
from scipy.stats import beta as beta_dist

from valuerec.data.synth import SynthConfig, SynthData, _Drift

__all__ = ["posterior_forecast"]

#: Gauss-Jacobi nodes of the dropout integral: the integrand is smooth in p, 32 nodes agree
#: with 64 to 1e-9 relative on the test histories
_NODES = 32
#: (customer, draw, purchase) triples per chunk: bounds the memory of the burst checks
_CHUNK_PAIRS = 2_000_000
#: longest browse session (its views fall within 20 minutes of its start)
_SESSION_DAYS = 20.0 / 1440.0


def posterior_forecast(
    data: SynthData,
    draws: int = 2_000,
    seed: int = 0,
    users: Sequence[str] | None = None,
    min_ess: float = 100.0,
    redraw: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Posterior mean of each customer's holdout purchases and spend from the calibration log.

    ``draws``: prior draws of each customer's drift (ignored when the log does not drift: the
    posterior is then exact); customers whose weights leave an effective sample size below
    ``min_ess`` (those whose purchases pin their drift down, a burst say) are drawn again with
    ``redraw`` times as many; ``progress(done, total)`` is called after each chunk of customers
    (the redrawn ones count again). Returns ``user_id``, ``p_alive`` (at the cut-off),
    ``expected_holdout_transactions``, ``expected_holdout_spend`` and ``ess`` (the effective
    sample size of the customer's weights: at most the draws they got; 1 without drift), in
    ``users`` order (every user of the log by default).
    """
    cfg = data.config
    if draws < 1:
        raise ValueError("draws must be at least 1")
    start = pd.Timestamp(cfg.start)
    day = pd.Timedelta(days=1)
    table = data.users.set_index("user_id")
    ids = table.index if users is None else pd.Index(users)
    missing = ids.difference(table.index)
    if len(missing):
        raise KeyError(f"{len(missing)} users not in the log, e.g. {missing[0]!r}")
    birth = ((table.loc[ids, "signup_time"] - start) / day).to_numpy(dtype=float)
    mine = data.events[data.events["user_id"].isin(ids)]
    buys = mine[mine["event_type"] == "purchase"]
    last_seen = np.full(len(ids), -np.inf)
    seen_pos = ids.get_indexer(mine["user_id"])
    np.maximum.at(last_seen, seen_pos, ((mine["timestamp"] - start) / day).to_numpy(float))
    pos = ids.get_indexer(buys["user_id"])
    times = ((buys["timestamp"] - start) / day).to_numpy(dtype=float)
    order = np.lexsort((times, pos))
    pos, times = pos[order], times[order]
    values = buys["value"].to_numpy(dtype=float)[order]
    n = len(ids)
    orders = np.bincount(pos, minlength=n)
    spent = np.bincount(pos, weights=values, minlength=n)
    # repeat purchases: everything after the first (at signup)
    first = np.r_[True, pos[1:] != pos[:-1]] if len(pos) else np.zeros(0, bool)
    rep_pos, rep_t = pos[~first], times[~first]
    x = np.bincount(rep_pos, minlength=n)
    t_last = birth.copy()
    if len(rep_pos):
        t_last[rep_pos] = rep_t  # sorted: the last write per user is their latest purchase
    p_alive = np.empty(n)
    tx = np.empty(n)
    ess = np.empty(n)
    rng = np.random.default_rng(seed)
    starts = np.r_[0, np.cumsum(x)]
    # browsing after the last purchase: a session (views up to 20 minutes long) that started
    # after it -- a view within 20 minutes of the purchase may belong to a session begun before
    seen_after = last_seen > t_last + _SESSION_DAYS
    todo, m = np.arange(n), draws if cfg.drifts else 1
    done, total = 0, n
    for _ in range(2 if cfg.drifts and redraw > 1 else 1):
        by_x = todo[np.argsort(x[todo], kind="stable")]  # chunks of similar x pad little
        lo = 0
        while lo < len(by_x):
            hi = min(len(by_x), lo + max(1, _CHUNK_PAIRS // (max(1, int(x[by_x[lo]])) * m)))
            while hi > lo + 1 and max(1, int(x[by_x[hi - 1]])) * m * (hi - lo) > _CHUNK_PAIRS:
                hi = lo + max(1, (hi - lo) // 2)
            sel = by_x[lo:hi]
            rep = [rep_t[starts[i] : starts[i + 1]] for i in sel]
            p_alive[sel], tx[sel], ess[sel] = _chunk(
                cfg, birth[sel], t_last[sel], seen_after[sel], rep, m, rng
            )
            done += len(sel)
            if progress:
                progress(done, total)
            lo = hi
        todo, m = np.flatnonzero(ess < min_ess), m * redraw
        total += len(todo)
    mean_order = cfg.p_gg * (cfg.gamma + spent) / (cfg.q + orders * cfg.p_gg - 1.0)
    return pd.DataFrame(
        {
            "user_id": ids.to_numpy(),
            "p_alive": p_alive,
            "expected_holdout_transactions": tx,
            "expected_holdout_spend": tx * mean_order,
            "ess": ess,
        }
    )


def _chunk(
    cfg: SynthConfig,
    birth: np.ndarray,
    t_last: np.ndarray,
    seen_after: np.ndarray,
    repeats: list[np.ndarray],
    m: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``p_alive``, expected holdout purchases and ESS of ``len(birth)`` customers, each with
    ``m`` prior draws of their drift (rows ``i * m .. i * m + m - 1``)."""
    c = len(birth)
    D, H = float(cfg.days), float(cfg.holdout_days)
    b_rows = np.repeat(birth, m)
    if cfg.drifts:
        drift = _Drift.draw(cfg, b_rows, rng)
    else:  # f = 1: one exact "draw"
        none = np.empty((c * m, 0))
        drift = _Drift(b_rows, np.zeros(c * m), 0.0, np.zeros(c * m), 1.0, none, none)
    x = np.array([len(r) for r in repeats])
    x_rows = np.repeat(x, m).astype(float)
    f_cal = drift.integral(b_rows, D)
    f_last = drift.integral(b_rows, np.repeat(t_last, m))
    f_hold = drift.integral(D, D + H)
    # log prod f(tau_j) per row: every row of a customer sees that customer's purchases
    log_f = np.zeros(c * m)
    if x.sum():
        row_of = np.repeat(np.arange(c * m), np.repeat(x, m))
        t_of = np.concatenate([np.tile(r, m) for r in repeats])
        log_f = np.bincount(row_of, weights=np.log(drift.factor(row_of, t_of)), minlength=c * m)
    r, alpha, a, b = cfg.r, cfg.alpha, cfg.a, cfg.b
    browse = cfg.browse_sessions_per_day
    log_alive = (
        -(r + x_rows) * np.log(alpha + f_cal) + betaln(a, b + x_rows + 1) - browse * (D - b_rows)
    )
    log_left = np.where(
        np.repeat(seen_after, m),
        -np.inf,
        -(r + x_rows) * np.log(alpha + f_last)
        + betaln(a + 1, b + x_rows)
        - browse * (np.repeat(t_last, m) - b_rows),
    )
    log_lik = log_f + np.logaddexp(log_alive, log_left)  # common factors of a customer cancel
    log_lik = log_lik.reshape(c, m)
    log_w = log_lik - logsumexp(log_lik, axis=1, keepdims=True)
    w = np.exp(log_w)
    alive = np.exp(log_alive - np.logaddexp(log_alive, log_left)).reshape(c, m)
    future = _expected_purchases_given_alive(cfg, x_rows, f_cal, f_hold).reshape(c, m)
    p_alive = (w * alive).sum(axis=1)
    tx = (w * alive * future).sum(axis=1)
    ess = 1.0 / (w**2).sum(axis=1)
    return p_alive, tx, ess


def _beta_rule(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) of a quadrature rule for ``E[g(p)]``, ``p ~ Beta(a, b)``.

    Gauss-Jacobi: the weight ``(1-z)^(b-1) (1+z)^(a-1)`` on ``[-1, 1]`` is ``Beta(a, b)`` in
    ``p = (1+z)/2``. SciPy scales its weights by ``2^(a+b-1) B(a, b)``, which overflows once
    ``b`` passes ~1,000 (a customer with that many repeat purchases: a heavy buyer over two
    years of bursts), leaving infinite weights and a NaN forecast. The Beta is then so narrow
    that Gauss-Legendre nodes in its quantile scale, ``E[g(p)] = int_0^1 g(F^-1(u)) du``,
    integrate it as well.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow is handled below
        z, w = roots_jacobi(_NODES, b - 1.0, a - 1.0)
    if np.isfinite(w).all() and w.sum() > 0:
        return (1.0 + z) / 2.0, w / w.sum()
    u, w = roots_legendre(_NODES)
    return beta_dist.ppf((1.0 + u) / 2.0, a, b), w / w.sum()


def _expected_purchases_given_alive(
    cfg: SynthConfig, x: np.ndarray, f_cal: np.ndarray, f_hold: np.ndarray
) -> np.ndarray:
    """``E_p[(1 - ((alpha+F)/(alpha+F+pH))^(r+x)) / p]`` with ``p ~ Beta(a, b+x+1)``: Gauss-
    Jacobi quadrature, one rule per distinct ``x`` (the Beta's second shape)."""
    out = np.empty(len(x))
    scale = cfg.alpha + f_cal
    for xv in np.unique(x):
        rows = np.flatnonzero(x == xv)
        p, wz = _beta_rule(cfg.a, cfg.b + xv + 1.0)
        s = scale[rows, None]
        kept = -np.expm1((cfg.r + xv) * (np.log(s) - np.log(s + p[None, :] * f_hold[rows, None])))
        out[rows] = (kept / p[None, :]) @ wz
    return out
