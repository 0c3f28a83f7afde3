"""Buy-Till-You-Die models of repeat purchasing, a spend model, and customer lifetime value.

A customer's future value is how often they will buy times how much they spend when they do.
The transaction models here (BG/NBD and Pareto/NBD) explain a non-contractual purchase
history from three numbers, the RFM summary of :func:`valuerec.features.rfm.rfm_summary`:
``frequency`` *x* (repeat purchases), ``recency`` *t_x* (time of the last one) and age *T*.
While alive a customer buys as a Poisson process whose rate varies across customers (gamma);
at some unobserved moment they "die" (drop out for good). Pooling across customers, this
tells apart the customer who has not bought for a while because they buy rarely from the one
who has gone. The Gamma-Gamma model adds how much each customer spends per purchase.

The code follows the papers: the same parameter names, the same likelihood and expectation
formulas written as vectorised log-likelihoods, so that a formula can be checked against the
equation it implements. Each model is fitted by maximum likelihood on log-parameters (they
must be positive) with scipy, in the scikit-learn style: the constructor takes
hyper-parameters only, :meth:`fit` returns ``self`` and learned values end in ``_``.

Inputs of the prediction methods may be scalars, arrays or pandas Series (a Series keeps its
index in the result), in the time unit of the summary the model was fitted on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import ClassVar, Protocol, TypeVar

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaincc, betaincinv, betaln, expit, gammaln, hyp2f1, roots_legendre

from valuerec.value.counts import count_quantile

ArrayLike = float | np.ndarray | pd.Series
Result = float | np.ndarray | pd.Series

_F = TypeVar("_F", bound="_Fitter")


class ConvergenceWarning(RuntimeWarning):
    """The optimiser stopped without reporting convergence; check ``params_``."""


def _as_array(value: ArrayLike) -> np.ndarray:
    return np.asarray(value, dtype=float)


def _wrap(values: np.ndarray, *inputs: ArrayLike) -> Result:
    """Give results the shape of the inputs: a Series for Series, a float for scalars."""
    for v in inputs:
        if isinstance(v, pd.Series):
            return pd.Series(np.broadcast_to(values, v.shape), index=v.index)
    return float(values) if np.ndim(values) == 0 else values


def _summary_columns(summary: pd.DataFrame, names: tuple[str, ...]) -> list[np.ndarray]:
    missing = [n for n in names if n not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks column(s) {', '.join(missing)}; use rfm_summary()")
    cols = [summary[n].to_numpy(dtype=float) for n in names]
    if not all(np.isfinite(c).all() for c in cols):
        raise ValueError(f"summary columns {', '.join(names)} must be finite")
    return cols


def _spend_days(summary: pd.DataFrame) -> str:
    """The column counting the purchases ``monetary_value`` averages: ``monetary_days`` (an
    :func:`~valuerec.features.rfm.rfm_summary` leaves out days without a value), or
    ``frequency`` for a summary without it (``lifetimes``' convention)."""
    return "monetary_days" if "monetary_days" in summary.columns else "frequency"


def _check_rft(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> None:
    if (x < 0).any() or (t_x < 0).any() or (t_x > T + 1e-9).any():
        raise ValueError("need frequency >= 0 and 0 <= recency <= T for every customer")
    if len(x) == 0:
        raise ValueError("cannot fit on an empty summary")


def _compress(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Identical customers contribute identical likelihood terms: evaluate each once, weighted.

    Summaries have many repeated rows (every one-off buyer of a given week is the same row),
    so this cuts the work per likelihood evaluation several fold.
    """
    rows, counts = np.unique(np.column_stack(cols), axis=0, return_counts=True)
    return [rows[:, i] for i in range(rows.shape[1])], counts.astype(float)


class _Fitter:
    """Maximum likelihood on log-parameters shared by the models below.

    ``penalizer`` adds ``penalizer * sum(params ** 2)`` to the mean negative log-likelihood
    (the ``penalizer_coef`` of the ``lifetimes`` package); 0 gives the plain maximum
    likelihood estimates of the papers.

    Every parameter is also kept inside a wide box (:meth:`_log_bounds`): shape parameters in
    [1e-4, 1e4], scale parameters within 1e-6..1e6 times the data's own scale. The box never
    binds on a real customer base (CDNOW's estimates sit orders of magnitude inside it), but a
    few weeks of history often cannot tell a parameter apart from infinity: nobody has had
    time to drop out, so BG/NBD's a, b or Pareto/NBD's s, beta run off along a ridge
    (a -> 0, or a, b -> infinity with a / (a + b) fixed) where the likelihood is flat and
    the special functions overflow. Stopping at the box edge is the limit the data point to
    (no dropout, or one common dropout probability), with finite predictions; the names of
    the parameters that ended on an edge are kept in ``at_bound_``.
    """

    param_names: ClassVar[tuple[str, ...]] = ()
    #: parameters that set the model's time or money scale (bounded relative to the data)
    scale_params: ClassVar[tuple[str, ...]] = ()
    #: loosest and tightest values of a shape parameter (and, times the data scale, of a
    #: scale parameter); see the class docstring
    shape_bounds: ClassVar[tuple[float, float]] = (1e-4, 1e4)
    scale_bounds: ClassVar[tuple[float, float]] = (1e-6, 1e6)

    def _log_bounds(self, scale: float) -> list[tuple[float, float]]:
        """Box for ``log(params)``: shapes absolute, scales relative to ``scale``."""
        out = []
        for name in self.param_names:
            lo, hi = self.scale_bounds if name in self.scale_params else self.shape_bounds
            factor = scale if name in self.scale_params else 1.0
            out.append((float(np.log(lo * factor)), float(np.log(hi * factor))))
        return out

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def __repr__(self) -> str:
        fitted = getattr(self, "params_", None)
        inner = (
            ", ".join(f"{k}={v:.4g}" for k, v in fitted.items())
            if fitted
            else f"penalizer={self.penalizer!r}"
        )
        return f"{type(self).__name__}({inner})"

    def _params(self) -> tuple[float, ...]:
        if not hasattr(self, "params_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit() first")
        return tuple(self.params_[n] for n in self.param_names)

    def _maximise(
        self: _F,
        loglik: Callable[[np.ndarray], np.ndarray],
        weights: np.ndarray,
        start: np.ndarray,
        bounds: list[tuple[float, float]],
    ) -> _F:
        """Maximise the weighted mean log-likelihood over ``log(params)``; sets ``params_``.

        Working on log-parameters keeps every parameter positive without constraints.
        L-BFGS-B finds the basin quickly; Nelder-Mead then polishes from there, because the
        likelihoods involve ``hyp2f1``, whose values can become non-finite far from the
        optimum, which gradient steps handle badly. Nelder-Mead alone from the default start
        can drift into a degenerate corner (BG/NBD on half of CDNOW: a -> 0, b -> inf, after
        40,000 evaluations); the two-stage search converges in a fraction of a second. The
        polish is capped at 4,000 evaluations: where the likelihood has a ridge to infinity
        (Pareto/NBD's s, beta on some synthetic logs) more steps only crawl along it.
        """
        if self.penalizer < 0:
            raise ValueError(f"penalizer must be >= 0, got {self.penalizer!r}")
        total = weights.sum()

        def objective(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            with np.errstate(all="ignore"):
                value = -(weights @ loglik(params)) / total
            value += self.penalizer * float(params @ params)
            return float(value) if np.isfinite(value) else np.inf

        lo, hi = np.array(bounds).T
        x0 = np.clip(np.log(start), lo, hi)
        if not np.isfinite(objective(x0)):
            # the start itself is impossible (e.g. hyp2f1 overflows there): no basin to find
            raise ValueError(
                f"{type(self).__name__}: the likelihood is not finite at the starting values; "
                "the summary is too degenerate to fit"
            )
        first = minimize(objective, x0, method="L-BFGS-B", bounds=bounds)
        if np.isfinite(first.fun) and first.fun <= objective(x0):
            x0 = first.x
        res = minimize(
            objective,
            x0,
            method="Nelder-Mead",
            bounds=bounds,
            options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 20_000, "maxfev": 4_000,
                     "adaptive": True},
        )  # fmt: skip
        best = res.x if np.isfinite(res.fun) and res.fun <= objective(x0) else x0
        if not res.success or not np.isfinite(res.fun):
            warnings.warn(
                f"{type(self).__name__}: optimisation did not converge ({res.message})",
                ConvergenceWarning,
                stacklevel=3,
            )
        edge = 1e-6 * (hi - lo)
        on_edge = (best <= lo + edge) | (best >= hi - edge)
        self.at_bound_ = [n for n, e in zip(self.param_names, on_edge, strict=True) if e]
        params = np.exp(best)
        self.params_ = dict(zip(self.param_names, (float(p) for p in params), strict=True))
        with np.errstate(all="ignore"):
            self.log_likelihood_ = float(weights @ loglik(params))
        self.n_customers_ = int(total)
        return self


def _spread(t: ArrayLike, *cols: ArrayLike) -> list[np.ndarray]:
    return list(np.broadcast_arrays(*(_as_array(c) for c in (t, *cols))))


def _gauss_01(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    u, w = roots_legendre(n)
    return (u + 1) / 2, w / 2


_GAUSS_01 = _gauss_01(128)
_GAUSS_64 = _gauss_01(64)


def _nbd_sf(k: np.ndarray, m: np.ndarray, q: np.ndarray) -> np.ndarray:
    """P(N > m) for N negative binomial with k successes and success probability q.

    P(N <= m) is the regularised incomplete beta I_q(k, m + 1) (Abramowitz & Stegun 26.5.26),
    so no sum over 0..m is needed; ``betaincc`` is its complement without cancellation.
    """
    return betaincc(k, np.maximum(m, 0) + 1, q)


# --------------------------------------------------------------------------------------------
# Transaction models (BG/NBD, Pareto/NBD)
# --------------------------------------------------------------------------------------------
class _TransactionFitter(_Fitter):
    """Shared by BG/NBD and Pareto/NBD: a forecast is P(alive) times growth-if-alive.

    Both papers' conditional expectations factor this way (BG/NBD equation (10): its
    denominator is 1 / P(alive)); each model supplies ``conditional_probability_alive`` and
    ``_growth(t, x, T)``, the expected purchases in ``(T, T + t]`` of a customer alive at T.
    """

    def conditional_probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        raise NotImplementedError

    def _growth(self, t: np.ndarray, x: np.ndarray, age: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def conditional_expected_number_of_purchases_up_to_time(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """E[purchases in (T, T + t] | x, t_x, T] = P(alive) x growth-if-alive."""
        tt, x, t_x, age = _spread(t, frequency, recency, T)
        alive = _as_array(self.conditional_probability_alive(x, t_x, age))
        return _wrap(self._growth(tt, x, age) * alive, t, frequency, recency, T)

    def expected_number_of_purchases_up_to_time(self, t: ArrayLike) -> Result:
        """E[X(t)] for a customer just acquired at time 0 (the papers' unconditional mean)."""
        tt = _as_array(t)
        zero = np.zeros_like(tt)
        return _wrap(self._growth(tt, zero, zero), t)

    def conditional_probability_of_n_purchases_up_to_time(
        self, n: ArrayLike, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """P(exactly n purchases in (T, T + t] | x, t_x, T); each model derives its own."""
        raise NotImplementedError

    def conditional_purchase_quantile(
        self,
        level: float,
        t: ArrayLike,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        max_n: int = 10_000,
    ) -> np.ndarray:
        """Smallest n with P(purchases in (T, T + t] <= n | x, t_x, T) >= ``level``.

        ``level=0.5`` is the conditional median, the point forecast that minimises the mean
        absolute error (Gneiting 2011, "Making and evaluating point forecasts"): for the many
        customers more likely gone than back it is 0, where the expectation is a fraction.
        """
        tt, x, t_x, age = (c.ravel() for c in _spread(t, frequency, recency, T))

        def pmf(n: int, rows: np.ndarray) -> np.ndarray:
            return _as_array(
                self.conditional_probability_of_n_purchases_up_to_time(
                    n, tt[rows], x[rows], t_x[rows], age[rows]
                )
            )

        return count_quantile(pmf, len(x), level, max_n)


class BetaGeoFitter(_TransactionFitter):
    """BG/NBD: Poisson purchasing, and a chance to drop out right after each purchase.

    Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting Your Customers" the Easy
    Way: An Alternative to the Pareto/NBD Model. *Marketing Science* 24(2), 275-284.

    While active, customer purchases follow a Poisson process with rate lambda ~
    Gamma(``r``, ``alpha``); after every purchase the customer becomes inactive with
    probability p ~ Beta(``a``, ``b``). Dropping out only at purchases (rather than at any
    time, as in Pareto/NBD) gives a closed-form likelihood without hypergeometric functions
    and fits the same data about as well, which is why the paper proposed it.
    """

    param_names: ClassVar[tuple[str, ...]] = ("r", "alpha", "a", "b")
    scale_params: ClassVar[tuple[str, ...]] = ("alpha",)

    @staticmethod
    def _log_likelihood(
        params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """The paper's likelihood L(r, alpha, a, b | x, t_x, T), in logs, per customer."""
        r, alpha, a, b = params
        has = x > 0
        x1 = np.where(has, x, 1.0)  # keeps betaln(a + 1, b + x - 1) defined where x == 0
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
        a3 = betaln(a + 1, b + x1 - 1) - betaln(a, b) - (r + x) * np.log(alpha + t_x)
        return a1 + np.logaddexp(a2, np.where(has, a3, -np.inf))

    def fit(self, summary: pd.DataFrame) -> BetaGeoFitter:
        """Estimate r, alpha, a, b from ``frequency``, ``recency`` and ``T`` of ``summary``."""
        x, t_x, T = _summary_columns(summary, ("frequency", "recency", "T"))
        _check_rft(x, t_x, T)
        (x, t_x, T), w = _compress(x, t_x, T)
        # Start from a purchase rate of 1 / mean(T) (so alpha scales with the time unit).
        scale = max(float(np.average(T, weights=w)), 1e-3)
        start = np.array([1.0, scale, 1.0, 1.0])
        return self._maximise(
            lambda p: self._log_likelihood(p, x, t_x, T), w, start, self._log_bounds(scale)
        )

    def conditional_probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """P(still active | x, t_x, T): 1 / (1 + a / (b + x - 1) ((alpha+T) / (alpha+t_x))^(r+x)).

        A customer who never bought again (x = 0) is certainly alive: under BG/NBD dropping
        out can only happen right after a purchase.
        """
        r, alpha, a, b = self._params()
        x, t_x, age = np.broadcast_arrays(_as_array(frequency), _as_array(recency), _as_array(T))
        has = x > 0
        x1 = np.where(has, x, 1.0)
        # odds of dead vs alive: a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)
        log_odds = (
            np.log(a) - np.log(b + x1 - 1) + (r + x) * (np.log(alpha + age) - np.log(alpha + t_x))
        )
        return _wrap(np.where(has, expit(-log_odds), 1.0), frequency, recency, T)

    def _growth(self, t: np.ndarray, x: np.ndarray, age: np.ndarray) -> np.ndarray:
        """Numerator of equation (10): expected purchases in (T, T + t] if still alive.

        (a + b + x - 1) / (a - 1) * [1 - ((alpha + T) / (alpha + T + t)) ** (r + x)
        * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))].
        Euler's transformation 2F1(A, B; C; z) = (1 - z) ** (C - A - B) 2F1(C - A, C - B; C; z)
        turns the product into (1 - z) ** (a - 1) * 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z):
        the same value, but a series that converges faster as x grows instead of one whose
        terms and prefactor overflow and underflow against each other for heavy buyers.
        """
        r, alpha, a, b = self._params()
        t, x, age = np.broadcast_arrays(t, x, age)
        z = t / (alpha + age + t)
        with np.errstate(all="ignore"):
            term = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
            closed = (a + b + x - 1) / (a - 1) * (1 - term)
        # hyp2f1 loses accuracy and overflows for the extreme a, b that short histories give
        # (see _Fitter), and the closed form is 0 / 0 at a = 1: integrate over p there instead
        extreme = not (1e-2 < a < 1e2 and 1e-2 < b < 1e2) or abs(a - 1) < 1e-6
        bad = ~np.isfinite(closed) | (closed < 0) | extreme
        if bad.any():
            closed = np.where(bad, 0.0, closed)
            closed[bad] = self._growth_by_quadrature(t[bad], x[bad], age[bad])
        return closed

    def _growth_by_quadrature(self, t: np.ndarray, x: np.ndarray, age: np.ndarray) -> np.ndarray:
        """Expected purchases in (T, T + t] if alive at T, by integrating over p.

        Alive at T after x purchases, the dropout probability is Beta(a, b + x) and the rate
        Gamma(r + x, alpha + T); a customer with (lambda, p) makes (1 - e^(-lambda p t)) / p
        purchases in expectation, which over lambda is
        g(p) = (1 - ((alpha + T) / (alpha + T + p t)) ** (r + x)) / p, bounded by
        (r + x) t / (alpha + T) as p -> 0. Gauss-Legendre over the quantile u of p
        (p = F^-1(u)) integrates this bounded function of u for any a, b > 0, where the
        closed form's 2F1 does not converge in floating point. Agrees with equation (10) to
        about 1e-5 where both work (tested).
        """
        r, alpha, a, b = self._params()
        u, wts = _GAUSS_01
        out = np.empty(len(x))
        for xv in np.unique(x):  # the posterior of p depends on x only: few distinct values
            rows = x == xv
            p = betaincinv(a, b + xv, u)[None, :]
            A = (alpha + age[rows])[:, None]
            k = r + xv
            tt = t[rows][:, None]
            with np.errstate(all="ignore"):
                g = -np.expm1(-k * np.log1p(p * tt / A)) / p
            g = np.where(p > 0, g, k * tt / A)
            out[rows] = g @ wts
        return out

    def conditional_probability_of_n_purchases_up_to_time(
        self, n: ArrayLike, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """P(exactly n purchases in (T, T + t] | x, t_x, T), vectorised over customers and n.

        Fader, Hardie & Lee's note "Deriving the conditional PMF of the BG/NBD model" (the
        formula ``lifetimes`` implements): dead at T gives 0; alive, with p ~ Beta(a, b + x)
        and lambda ~ Gamma(r + x, alpha + T), n purchases are either n Poisson events all
        survived, E[(1-p)^n] NBD(n), or a dropout at the n-th of at least n events,
        E[p (1-p)^(n-1)] P(NBD >= n):

            P(n) = 1{n = 0} (1 - P(alive))
                   + P(alive) [B(a, b+x+n) / B(a, b+x) NBD(n)
                               + 1{n > 0} B(a+1, b+x+n-1) / B(a, b+x) (1 - NBDcdf(n - 1))]

        with NBD(n) the negative binomial of r + x, success probability
        (alpha + T) / (alpha + T + t). Beta and gamma functions in logs, so heavy buyers
        stay finite.
        """
        r, alpha, a, b = self._params()
        nn, tt, x, t_x, age = _spread(n, t, frequency, recency, T)
        alive = _as_array(self.conditional_probability_alive(x, t_x, age))
        k, q = r + x, (alpha + age) / (alpha + age + tt)
        with np.errstate(all="ignore"):
            log_nbd = (
                gammaln(k + nn) - gammaln(k) - gammaln(nn + 1) + k * np.log(q)
                + nn * np.log1p(-q)
            )  # fmt: skip
            survived = np.exp(betaln(a, b + x + nn) - betaln(a, b + x) + log_nbd)
            sf = np.where(nn > 0, _nbd_sf(k, nn - 1, q), 0.0)
            dropped = np.exp(betaln(a + 1, b + x + nn - 1) - betaln(a, b + x)) * sf
        dropped = np.where(nn > 0, dropped, 0.0)
        pmf = alive * (survived + dropped) + np.where(nn == 0, 1.0 - alive, 0.0)
        return _wrap(np.clip(pmf, 0.0, 1.0), n, t, frequency, recency, T)


# --------------------------------------------------------------------------------------------
# Pareto/NBD
# --------------------------------------------------------------------------------------------
class ParetoNBDFitter(_TransactionFitter):
    """Pareto/NBD: Poisson purchasing and an exponential lifetime, both gamma-heterogeneous.

    Schmittlein, D. C., Morrison, D. G. & Colombo, R. (1987). Counting Your Customers: Who
    Are They and What Will They Do Next? *Management Science* 33(1), 1-24. Likelihood,
    P(alive) and conditional expectation as derived in Fader, P. S. & Hardie, B. G. S.
    (2005), "A Note on Deriving the Pareto/NBD Model and Related Expressions".

    Purchase rate lambda ~ Gamma(``r``, ``alpha``), dropout rate mu ~ Gamma(``s``, ``beta``):
    customers can leave at any moment, not only after a purchase. The original BTYD model,
    kept as the reference the others are compared with.
    """

    param_names: ClassVar[tuple[str, ...]] = ("r", "alpha", "s", "beta")
    scale_params: ClassVar[tuple[str, ...]] = ("alpha", "beta")

    @staticmethod
    def _log_a0(
        params: tuple[float, ...] | np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """log A0 of the note's likelihood; -inf where t_x == T (A0 is then 0).

        A0 = 2F1(r+s+x, s+1; r+s+x+1; (alpha-beta)/(alpha+t_x)) / (alpha+t_x)^(r+s+x)
             - 2F1(r+s+x, s+1; r+s+x+1; (alpha-beta)/(alpha+T)) / (alpha+T)^(r+s+x)
        when alpha >= beta, and the same with (beta, r+x) in place of (alpha, s+1) otherwise,
        so that the argument z of 2F1 is always in [0, 1). Two things keep it stable:
        Euler's transformation rewrites 2F1(r+s+x, B; r+s+x+1; z) as
        (1-z)^(1-B) 2F1(1, r+s+x+1-B; r+s+x+1; z), a series of positive terms that does not
        blow up as z -> 1 for large x; and the difference of the two terms is taken in logs
        (log a - log(1 - b/a)), since both can be far below the smallest double.
        """
        r, alpha, s, beta = params
        rsx = r + s + x
        if alpha >= beta:
            big, small, B = alpha, beta, s + 1
        else:
            big, small, B = beta, alpha, r + x

        def log_term(u: np.ndarray) -> np.ndarray:
            z = (big - small) / (big + u)
            # log[(1 - z)^(1 - B)] with 1 - z = (small + u) / (big + u), then / (big + u)^rsx
            return (
                (1 - B) * (np.log(small + u) - np.log(big + u))
                + np.log(hyp2f1(1.0, rsx + 1 - B, rsx + 1, z))
                - rsx * np.log(big + u)
            )

        l1, l2 = log_term(t_x), log_term(T)
        with np.errstate(divide="ignore"):
            return l1 + np.log(-np.expm1(np.minimum(l2 - l1, 0.0)))

    @classmethod
    def _log_likelihood(
        cls, params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """The note's likelihood, in logs, per customer.

        L = Gamma(r+x) alpha^r beta^s / Gamma(r)
            * [1 / ((alpha+T)^(r+x) (beta+T)^s) + s / (r+s+x) * A0]
        """
        r, alpha, s, beta = params
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        alive_to_T = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
        died_before = np.log(s) - np.log(r + s + x) + cls._log_a0(params, x, t_x, T)
        return a1 + np.logaddexp(alive_to_T, died_before)

    def fit(self, summary: pd.DataFrame) -> ParetoNBDFitter:
        """Estimate r, alpha, s, beta from ``frequency``, ``recency`` and ``T`` of ``summary``."""
        x, t_x, T = _summary_columns(summary, ("frequency", "recency", "T"))
        _check_rft(x, t_x, T)
        (x, t_x, T), w = _compress(x, t_x, T)
        scale = max(float(np.average(T, weights=w)), 1e-3)
        start = np.array([1.0, scale, 1.0, scale])
        return self._maximise(
            lambda p: self._log_likelihood(p, x, t_x, T), w, start, self._log_bounds(scale)
        )

    def conditional_probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """P(alive | x, t_x, T) = 1 / (1 + s / (r+s+x) (alpha+T)^(r+x) (beta+T)^s A0).

        It is 1 when t_x == T: a customer seen buying just now
        cannot have left.
        """
        r, alpha, s, beta = params = self._params()
        x, t_x, age = np.broadcast_arrays(_as_array(frequency), _as_array(recency), _as_array(T))
        log_odds = (
            np.log(s) - np.log(r + s + x) + (r + x) * np.log(alpha + age)
            + s * np.log(beta + age) + self._log_a0(params, x, t_x, age)
        )  # fmt: skip
        return _wrap(expit(-log_odds), frequency, recency, T)

    def _growth(self, t: np.ndarray, x: np.ndarray, age: np.ndarray) -> np.ndarray:
        """(r+x)(beta+T) / ((alpha+T)(s-1)) * [1 - ((beta+T) / (beta+T+t))^(s-1)].

        Expected purchases in (T, T + t] given alive at T. Written as
        -expm1(-(s-1) u) / (s-1) with u = log(1 + t / (beta+T)) so that it stays exact near
        s = 1, where it tends to u.
        """
        r, alpha, s, beta = self._params()
        u = np.log1p(t / (beta + age))
        k = s - 1
        ratio = u if k == 0 else -np.expm1(-k * u) / k
        return (r + x) * (beta + age) / (alpha + age) * ratio

    def conditional_probability_of_n_purchases_up_to_time(
        self, n: ArrayLike, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result:
        """P(exactly n purchases in (T, T + t] | x, t_x, T), by one-dimensional quadrature.

        Alive at T, the rates are independent, lambda ~ Gamma(r + x, alpha + T) and
        mu ~ Gamma(s, beta + T) (Fader & Hardie's note), so the remaining lifetime tau is
        Lomax(s, beta + T) and the count is NBD(r + x) over min(tau, t):

            P(n | alive) = S(t) NBD(n; t) + integral_0^t f(tau) NBD(n; tau) dtau

        with S the Lomax survival ((beta+T) / (beta+T+t))^s. Fader & Hardie's closed form of
        this PMF needs 2F1 sums that are fragile in floating point; instead the integral is
        taken over the Lomax probability v = F(tau) in [0, F(t)] by Gauss-Legendre (the
        integrand is a bounded, smooth NBD probability), which is exact to ~1e-8 here
        (tested: the PMF sums to 1 and its mean is the closed-form expectation).
        """
        r, alpha, s, beta = self._params()
        nn, tt, x, t_x, age = _spread(n, t, frequency, recency, T)
        alive = _as_array(self.conditional_probability_alive(x, t_x, age))
        A, B, k = alpha + age, beta + age, r + x

        def nbd(span: np.ndarray, nb: np.ndarray, kb: np.ndarray, ab: np.ndarray) -> np.ndarray:
            q = ab / (ab + span)
            with np.errstate(all="ignore"):
                log = (
                    gammaln(kb + nb) - gammaln(kb) - gammaln(nb + 1) + kb * np.log(q)
                    + nb * np.log1p(-q)
                )  # fmt: skip
            return np.where(span > 0, np.exp(log), (nb == 0).astype(float))

        survive = np.exp(-s * np.log1p(tt / B))
        u, w = _GAUSS_64
        died = (1.0 - survive)[..., None] * u  # Lomax probabilities of dying before t
        tau = B[..., None] * np.expm1(-np.log1p(-died) / s)
        inner = nbd(tau, nn[..., None], k[..., None], A[..., None]) @ w
        given_alive = survive * nbd(tt, nn, k, A) + (1.0 - survive) * inner
        pmf = alive * given_alive + np.where(nn == 0, 1.0 - alive, 0.0)
        return _wrap(np.clip(pmf, 0.0, 1.0), n, t, frequency, recency, T)


# --------------------------------------------------------------------------------------------
# Gamma-Gamma spend model
# --------------------------------------------------------------------------------------------
class GammaGammaFitter(_Fitter):
    """Gamma-Gamma: how much a customer spends per purchase, shrunk towards the population.

    Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). RFM and CLV: Using Iso-Value Curves
    for Customer Base Analysis. *Journal of Marketing Research* 42(4), 415-430.

    Each purchase amount is Gamma(``p``, nu) around the customer's own mean p / nu, and
    nu ~ Gamma(``q``, ``gamma``) across customers. ``params_["gamma"]`` is the paper's gamma
    (called ``v`` by ``lifetimes``). The model assumes spend is independent of purchase
    frequency, so it is fitted on repeat buyers only and combined with a transaction model.
    """

    param_names: ClassVar[tuple[str, ...]] = ("p", "q", "gamma")
    scale_params: ClassVar[tuple[str, ...]] = ("gamma",)

    def _log_bounds(self, scale: float) -> list[tuple[float, float]]:
        """The common box, with q > 1.01: the population mean spend p gamma / (q - 1), which a
        customer without repeat purchases is given, exists only for q > 1."""
        bounds = super()._log_bounds(scale)
        bounds[1] = (float(np.log(1.01)), bounds[1][1])
        return bounds

    @staticmethod
    def _log_likelihood(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Log density of the mean spend m over x purchases, per customer."""
        p, q, gamma = params
        px = p * x
        return (
            gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma)
            + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(gamma + x * m)
        )  # fmt: skip

    def fit(self, summary: pd.DataFrame) -> GammaGammaFitter:
        """Estimate p, q, gamma from customers with ``frequency > 0`` and positive spend.

        ``monetary_value`` must be the mean spend per *repeat* purchase (as produced by
        :func:`~valuerec.features.rfm.rfm_summary`), over ``monetary_days`` of them when the
        summary has that column (the repeat days with a value), else over ``frequency``;
        customers with no repeat purchase, or no positive spend, carry no information about
        spend per purchase and are skipped.
        """
        x, m = _summary_columns(summary, (_spend_days(summary), "monetary_value"))
        keep = (x > 0) & (m > 0)
        if not keep.any():
            raise ValueError("no customer with frequency > 0 and monetary_value > 0 to fit on")
        (x, m), w = _compress(x[keep], m[keep])
        # Start where the population mean spend p * gamma / (q - 1) equals the sample mean.
        scale = float(np.average(m, weights=w))
        start = np.array([1.0, 2.0, scale])
        return self._maximise(
            lambda p: self._log_likelihood(p, x, m), w, start, self._log_bounds(scale)
        )

    def conditional_expected_average_profit(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> Result:
        """E[spend per purchase | x, mean spend m] = p (gamma + x m) / (p x + q - 1).

        As in the paper, a weighted average of the population mean
        p gamma / (q - 1) and the customer's own mean m, the weight on m growing with x.
        For x = 0 it is the population mean (finite only when q > 1). A negative mean (refunds
        netting out purchase days) counts as 0, as the value layer floors spend labels: the
        customer's own evidence then pulls the forecast towards nothing, never below it.
        """
        p, q, gamma = self._params()
        x, m = np.broadcast_arrays(_as_array(frequency), _as_array(monetary_value))
        m = np.where(x > 0, np.maximum(m, 0.0), 0.0)
        return _wrap(p * (gamma + x * m) / (p * x + q - 1), frequency, monetary_value)


# --------------------------------------------------------------------------------------------
# Lifetime value
# --------------------------------------------------------------------------------------------
class TransactionModel(Protocol):
    """What :func:`customer_lifetime_value` needs from a fitted transaction model."""

    def conditional_expected_number_of_purchases_up_to_time(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Result: ...


def customer_lifetime_value(
    transaction_model: TransactionModel,
    gg_model: GammaGammaFitter,
    summary: pd.DataFrame,
    horizon_periods: int,
    period_days: float = 30.0,
    discount_rate: float = 0.01,
    time_unit_days: float = 7.0,
) -> pd.Series:
    """Discounted expected spend of each customer over the next ``horizon_periods`` periods.

    LTV = sum over t = 1..H of (E[N(t_end)] - E[N(t_start)]) * E[spend] / (1 + d)^t: the
    expected purchases falling in period t (from the transaction model's conditional
    expectation), times the Gamma-Gamma expected spend per purchase, discounted per period
    at ``discount_rate``. Periods are ``period_days`` long; ``time_unit_days`` must be the
    time unit the summary (and the models) use, weeks by default. The discounted sum per
    period, rather than a continuous-time formula, is what ``lifetimes`` computes, and lets a
    business state its discount rate per month.
    """
    if horizon_periods < 1:
        raise ValueError(f"horizon_periods must be at least 1, got {horizon_periods!r}")
    if period_days <= 0 or time_unit_days <= 0:
        raise ValueError("period_days and time_unit_days must be positive")
    x, t_x, T, m = _summary_columns(summary, ("frequency", "recency", "T", "monetary_value"))
    (valued,) = _summary_columns(summary, (_spend_days(summary),))
    spend = _as_array(gg_model.conditional_expected_average_profit(valued, m))
    expected = transaction_model.conditional_expected_number_of_purchases_up_to_time
    value = np.zeros(len(summary))
    previous = np.zeros(len(summary))
    for period in range(1, int(horizon_periods) + 1):
        cumulative = _as_array(expected(period * period_days / time_unit_days, x, t_x, T))
        value += (cumulative - previous) / (1 + discount_rate) ** period
        previous = cumulative
    return pd.Series(value * spend, index=summary.index, name="clv")
