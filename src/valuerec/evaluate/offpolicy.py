"""Off-policy evaluation: the value of a target policy estimated from another policy's logs.

A log holds rounds ``(x_i, a_i, r_i)`` in which a behaviour policy π_b chose action a_i with a
known probability (the propensity ``π_b(a_i | x_i)``) and reward r_i was observed. The value of
a target policy π_e, ``V = E_x E_{a~π_e}[r]``, is then estimated without deploying it:

* **IPS** (inverse propensity scoring) weights each reward by ``w_i = π_e(a_i|x_i) /
  π_b(a_i|x_i)``: unbiased whenever π_b > 0 wherever π_e > 0, but its variance grows with the
  weights.
* **SNIPS** (self-normalised IPS; Swaminathan & Joachims, "The Self-Normalized Estimator for
  Counterfactual Learning", NeurIPS 2015) divides by the sum of the weights instead of n:
  slightly biased, but bounded by the reward range and far less variable when the weights are
  uneven; it equals IPS when the weights average one.
* **DR** (doubly robust; Dudík, Langford & Li, "Doubly Robust Policy Evaluation and Learning",
  ICML 2011) adds a reward model q̂(x, a) as a control variate: ``q̂(x_i, π_e) + w_i (r_i -
  q̂(x_i, a_i))``. It stays unbiased when the propensities are right whatever q̂ is, and its
  variance shrinks the better q̂ is. q̂ must not be fitted on the rounds it is applied to (that
  overfitting biases DR), hence the cross-fitting in :func:`fit_reward_model`.

The estimators work on plain numpy arrays, one entry per round, so the same code serves the
simulator's logs and real logs. Slates (several positions per impression) are handled as obp
does: each (impression, position) is its own round, with position-specific probabilities;
:func:`action_probs` and :func:`expected_reward` look those up from a position-wise
distribution and :func:`fit_reward_model` fits one reward model per position.

Intervals: IPS and DR are means of per-round terms, so the default interval is the normal
(central-limit) one, mean ± z·sd/√n; with ``groups`` the standard error is cluster-robust,
for rounds that are not independent (the positions of one slate, one user's visits). SNIPS
is a ratio of means; its normal interval uses the
delta method (influence terms ``w_i (r_i - V̂) / w̄``). ``interval="bootstrap"`` gives the
percentile bootstrap (rounds resampled with replacement, :func:`scipy.stats.bootstrap`)
instead, for every estimator; prefer it when rewards are rare and weights heavy-tailed (for
SNIPS, a resample with no round of target weight has no estimate: see :func:`snips`).
:func:`simultaneous` widens a family of normal intervals (Bonferroni) so that they hold their
true values all together, for claims about several policies at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from scipy import special, stats
from sklearn.base import clone, is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from valuerec.evaluate.resampling import defined_resamples

Interval = Literal["normal", "bootstrap"]
ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate with its confidence interval.

    ``interval`` says how ``low``/``high`` were obtained: ``normal`` (central limit on the
    per-round terms), ``delta`` (normal, delta method; SNIPS) or ``bootstrap`` (percentile).
    ``se`` is the standard error behind the normal interval, or the bootstrap standard
    deviation.
    """

    estimator: str
    estimate: float
    low: float
    high: float
    n: int
    se: float
    interval: str
    level: float = 0.95

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- input checks ------------------------------------------------------------------------------
def _array(name: str, values: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one entry per round), got {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but rewards has {n}: lengths must match")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite; entry {bad} is {arr[bad]}")
    return arr


def _probabilities(name: str, values: Any, n: int, *, positive: bool) -> np.ndarray:
    arr = _array(name, values, n)
    bad = (arr <= 0) | (arr > 1) if positive else (arr < 0) | (arr > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        need = "in (0, 1]" if positive else "in [0, 1]"
        raise ValueError(f"{name} must be probabilities {need}; entry {i} is {arr[i]}")
    return arr


def _weights(rewards: Any, propensities: Any, target_probs: Any) -> tuple[np.ndarray, np.ndarray]:
    r = _array("rewards", rewards)
    if r.size < 2:
        raise ValueError(f"rewards needs at least 2 rounds for an interval, got {r.size}")
    b = _probabilities("propensities", propensities, r.size, positive=True)
    p = _probabilities("target_probs", target_probs, r.size, positive=False)
    return r, p / b


# -- intervals ---------------------------------------------------------------------------------
def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(special.ndtri(0.5 + level / 2))


def _normal(
    name: str,
    value: float,
    influence: np.ndarray,
    level: float,
    kind: str,
    groups: np.ndarray | None = None,
) -> Estimate:
    """Normal interval from per-round influence terms; with ``groups``, the cluster-robust
    standard error (Liang & Zeger 1986): rounds of one group (the positions of one slate, the
    visits of one user) share an exploration draw and a user, so their terms are correlated
    and the i.i.d. formula understates the variance."""
    n = influence.size
    if groups is None:
        se = float(influence.std(ddof=1) / np.sqrt(n))
    else:
        _, codes = np.unique(groups, return_inverse=True)
        g = int(codes.max()) + 1
        if g < 2:
            raise ValueError("a clustered interval needs at least 2 groups")
        sums = np.bincount(codes, weights=influence - influence.mean(), minlength=g)
        se = float(np.sqrt((sums**2).sum() * g / (g - 1)) / n)
        kind = f"{kind}, clustered"
    half = _z(level) * se
    return Estimate(name, float(value), float(value - half), float(value + half),
                    int(n), se, kind, level)  # fmt: skip


def _bootstrap(
    name: str,
    value: float,
    data: tuple[np.ndarray, ...],
    statistic: Any,
    level: float,
    n_boot: int,
    seed: int,
    why_undefined: str = "",
) -> Estimate:
    """Percentile bootstrap; ``statistic`` returns NaN for a resample with no estimate.

    The interval and standard error are then taken over the resamples that have one, when
    they are at least ``1 - MAX_UNDEFINED_SHARE`` of all; otherwise a ValueError says so
    (``why_undefined`` explains the cause to the caller): :mod:`.resampling`'s rule.
    """
    _z(level)  # validates level
    with warnings.catch_warnings():
        # scipy warns when a NaN resample makes its interval NaN; those are handled below
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            data,
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=n_boot,
            batch=max(1, min(n_boot, 2_000_000 // max(1, data[0].size))),  # bounded memory
            confidence_level=level,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    low, high = res.confidence_interval
    se = res.standard_error
    dist = np.asarray(res.bootstrap_distribution)
    defined = defined_resamples(dist, name, why_undefined)
    if defined.size < dist.size:
        alpha = (1 - level) / 2
        low, high = stats.quantile(defined, [alpha, 1 - alpha])  # as scipy's percentile
        se = defined.std(ddof=1)
    return Estimate(name, float(value), float(low), float(high), int(data[0].size),
                    float(se), "bootstrap", level)  # fmt: skip


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis)


def _ratio(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    """mean(num) / mean(den), NaN (without a warning) where every ``den`` is 0: the resample
    holds no round with target weight and has no SNIPS estimate."""
    top, bottom = num.mean(axis=axis), den.mean(axis=axis)
    return np.divide(top, bottom, out=np.full_like(top, np.nan), where=bottom != 0)


# -- estimators --------------------------------------------------------------------------------
def ips(
    rewards: Any,
    propensities: Any,
    target_probs: Any,
    *,
    level: float = 0.95,
    interval: Interval = "normal",
    n_boot: int = 2000,
    seed: int = 0,
    groups: Any | None = None,
) -> Estimate:
    """Inverse propensity scoring: mean of ``w_i r_i`` with ``w_i = target / propensity``.

    ``rewards``: the logged rewards; ``propensities``: the behaviour policy's probability of
    each logged action (in (0, 1]); ``target_probs``: the target policy's probability of the
    same action in the same context (in [0, 1]).
    """
    r, w = _weights(rewards, propensities, target_probs)
    terms = w * r
    if _check_interval(interval, groups, r.size) == "bootstrap":
        return _bootstrap("ips", terms.mean(), (terms,), _mean, level, n_boot, seed)
    return _normal("ips", terms.mean(), terms, level, "normal", groups)


def snips(
    rewards: Any,
    propensities: Any,
    target_probs: Any,
    *,
    level: float = 0.95,
    interval: Interval = "normal",
    n_boot: int = 2000,
    seed: int = 0,
    groups: Any | None = None,
) -> Estimate:
    """Self-normalised IPS: ``Σ w_i r_i / Σ w_i`` (Swaminathan & Joachims 2015).

    The normal interval comes from the delta method: the ratio's influence function is
    ``w_i (r_i - V̂) / mean(w)``. A bootstrap resample that holds no round with target weight
    has no SNIPS estimate (0/0): the bootstrap interval is the percentile interval over the
    resamples that have one, i.e. conditional on the target matching some logged round, and
    a ValueError is raised when more than 5% of the resamples have none (too few rounds carry
    target weight; the delta-method interval still applies).
    """
    r, w = _weights(rewards, propensities, target_probs)
    if w.sum() <= 0:
        raise ValueError("target_probs are zero on every logged action: SNIPS is undefined")
    value = float((w * r).sum() / w.sum())
    if _check_interval(interval, groups, r.size) == "bootstrap":
        why = (
            f"only {int((w > 0).sum())} of {r.size} rounds carry target weight (a resample "
            "without any of them has no SNIPS estimate): too few for a bootstrap interval; "
            "use interval='normal' (the delta method)"
        )
        return _bootstrap("snips", value, (w * r, w), _ratio, level, n_boot, seed, why)
    return _normal("snips", value, w * (r - value) / w.mean(), level, "delta", groups)


def dr(
    rewards: Any,
    propensities: Any,
    target_probs: Any,
    q_hat_logged: Any,
    q_hat_target: Any,
    *,
    level: float = 0.95,
    interval: Interval = "normal",
    n_boot: int = 2000,
    seed: int = 0,
    groups: Any | None = None,
) -> Estimate:
    """Doubly robust: mean of ``q̂(x_i, π_e) + w_i (r_i - q̂(x_i, a_i))`` (Dudík et al. 2011).

    ``q_hat_logged``: the reward model's prediction for the logged action; ``q_hat_target``:
    its expectation under the target policy, ``Σ_a π_e(a|x_i) q̂(x_i, a)`` (see
    :func:`expected_reward`). Use predictions from a model that did not see round i
    (:func:`fit_reward_model` cross-fits).
    """
    r, w = _weights(rewards, propensities, target_probs)
    q_logged = _array("q_hat_logged", q_hat_logged, r.size)
    q_target = _array("q_hat_target", q_hat_target, r.size)
    terms = q_target + w * (r - q_logged)
    if _check_interval(interval, groups, r.size) == "bootstrap":
        return _bootstrap("dr", terms.mean(), (terms,), _mean, level, n_boot, seed)
    return _normal("dr", terms.mean(), terms, level, "normal", groups)


def evaluate(
    rewards: Any,
    propensities: Any,
    target_probs: Any,
    q_hat_logged: Any | None = None,
    q_hat_target: Any | None = None,
    **options: Any,
) -> dict[str, Estimate]:
    """IPS, SNIPS and (when reward-model predictions are given) DR, keyed by name.

    ``options`` (``level``, ``interval``, ``n_boot``, ``seed``, ``groups``) go to every
    estimator; ``groups`` (one label per round: the slate, or the user) makes the normal
    intervals cluster-robust.
    """
    out = {
        "ips": ips(rewards, propensities, target_probs, **options),
        "snips": snips(rewards, propensities, target_probs, **options),
    }
    if (q_hat_logged is None) != (q_hat_target is None):
        raise ValueError("DR needs both q_hat_logged and q_hat_target (or neither)")
    if q_hat_logged is not None:
        out["dr"] = dr(rewards, propensities, target_probs, q_hat_logged, q_hat_target, **options)
    return out


def simultaneous(estimates: Sequence[Estimate], level: float = 0.95) -> list[Estimate]:
    """The same estimates with Bonferroni intervals, each at ``1 - (1 - level) / K``, so that
    all ``K`` hold their true values together with probability at least ``level``.

    Each 95% interval misses its truth one time in twenty by design, so among 20 of them one
    miss is the expected count. A claim about all of them at once -- every candidate policy's
    value is inside its interval, or the best of K policies is picked from their intervals --
    needs the family to hold together. Bonferroni assumes nothing about how the estimates
    depend on one another (estimates from one log share its rounds). Normal and delta-method
    intervals only: they are rebuilt from the standard error each keeps, while a bootstrap
    interval would need its resamples again.
    """
    estimates = list(estimates)
    if not estimates:
        raise ValueError("simultaneous needs at least one estimate")
    _z(level)  # validates level
    if any(e.interval == "bootstrap" for e in estimates):
        raise ValueError("simultaneous intervals need normal (or delta) intervals, not bootstrap")
    k = len(estimates)
    each = 1.0 - (1.0 - level) / k
    z = _z(each)
    kind = f"Bonferroni over {k}"
    return [
        replace(
            e,
            low=e.estimate - z * e.se,
            high=e.estimate + z * e.se,
            interval=f"{e.interval}, {kind}",
            level=each,
        )
        for e in estimates
    ]


def _check_interval(interval: str, groups: Any | None = None, n: int = 0) -> str:
    if interval not in ("normal", "bootstrap"):
        raise ValueError(f"interval must be 'normal' or 'bootstrap', got {interval!r}")
    if groups is not None:
        if interval == "bootstrap":
            raise ValueError("groups (a clustered interval) work with interval='normal' only")
        if np.shape(groups) != (n,):
            raise ValueError(f"groups must have one entry per round ({n}), got {np.shape(groups)}")
    return interval


# -- position-wise lookups ----------------------------------------------------------------------
def _dist(action_dist: Any, n: int, positions: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """``action_dist`` as an (n_rounds or 1, n_actions, n_positions) array, and the positions."""
    dist = np.asarray(action_dist, dtype=float)
    if dist.ndim == 1:
        dist = dist[None, :, None]  # context-free, one position
    elif dist.ndim == 2:
        dist = dist[:, :, None]  # per round, one position
    if dist.ndim != 3 or dist.shape[0] not in (1, n):
        raise ValueError(
            "action_dist must be (n_actions,), (n_rounds, n_actions) or "
            f"(n_rounds or 1, n_actions, n_positions) with n_rounds={n}; got {dist.shape}"
        )
    if not np.isfinite(dist).all() or (dist < 0).any():
        raise ValueError("action_dist must hold finite, non-negative probabilities")
    if not np.allclose(dist.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("action_dist must sum to one over actions (axis 1) at every position")
    pos = np.zeros(n, dtype=np.int64) if positions is None else np.asarray(positions)
    if pos.shape != (n,):
        raise ValueError(f"positions must have one entry per round ({n}), got {pos.shape}")
    if pos.size and (pos.min() < 0 or pos.max() >= dist.shape[2]):
        raise ValueError(f"positions must be in 0..{dist.shape[2] - 1}")
    return dist, pos.astype(np.int64)


def action_probs(action_dist: Any, actions: Any, positions: Any | None = None) -> np.ndarray:
    """π(a_i | x_i, position_i) for each logged round: the ``target_probs`` argument.

    ``action_dist``: ``(n_actions,)`` for a context-free policy, ``(n_rounds, n_actions)``
    per round, or with slate positions ``(n_rounds, n_actions, n_positions)`` — first axis of
    length 1 for a context-free slate policy; ``positions``: each round's 0-based position
    (None: position 0).
    """
    a = np.asarray(actions, dtype=np.int64)
    dist, pos = _dist(action_dist, a.size, positions)
    if a.size and (a.min() < 0 or a.max() >= dist.shape[1]):
        raise ValueError(f"actions must be in 0..{dist.shape[1] - 1}")
    rows = np.arange(a.size) if dist.shape[0] > 1 else np.zeros(a.size, dtype=np.int64)
    return dist[rows, a, pos]


def expected_reward(q_hat: Any, action_dist: Any, positions: Any | None = None) -> np.ndarray:
    """``Σ_a π(a | x_i, position_i) q̂(x_i, a)``: the ``q_hat_target`` argument of :func:`dr`.

    ``q_hat`` is ``(n_rounds, n_actions)``: the reward model at each round's own position, as
    returned by :func:`fit_reward_model`.
    """
    q = np.asarray(q_hat, dtype=float)
    if q.ndim != 2:
        raise ValueError(f"q_hat must be (n_rounds, n_actions), got shape {q.shape}")
    dist, pos = _dist(action_dist, q.shape[0], positions)
    if dist.shape[1] != q.shape[1]:
        raise ValueError(f"q_hat has {q.shape[1]} actions but action_dist {dist.shape[1]}")
    if dist.shape[0] == 1:
        return (q * dist[0][:, pos].T).sum(axis=1)
    return (q * dist[np.arange(q.shape[0]), :, pos]).sum(axis=1)


# -- reward model --------------------------------------------------------------------------------
def fit_reward_model(
    context: Any,
    actions: Any,
    rewards: Any,
    n_actions: int,
    *,
    positions: Any | None = None,
    model: Any | None = None,
    n_folds: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted reward model q̂(x_i, a, position_i) for every round i and every action a.

    Features are the context followed by a one-hot of the action; with ``positions``, one
    model per position (as obp's ``RegressionModel`` does, so rewards may depend on the slot
    in any way). Rounds are split into ``n_folds`` shuffled folds and each fold is predicted
    by models fitted on the others, so no round's prediction has seen its own reward — the
    cross-fitting that keeps DR unbiased with flexible models (Chernozhukov et al. 2018;
    ``n_folds=1`` fits and predicts on everything). ``model`` is any scikit-learn regressor,
    or a classifier for rewards with a few whole-number values, whose q̂ is the expected
    reward ``Σ_c c·P(r = c)`` (for 0/1 rewards, P(r = 1)); default a logistic regression,
    which takes 0/1 rewards only: pass a regressor for revenue or counts. A training fold
    with a single reward value predicts that value, and one without a round at a position
    the training folds' mean reward. Returns
    ``(n_rounds, n_actions)``; pass ``q[np.arange(n), actions]`` as ``q_hat_logged`` and
    :func:`expected_reward` of it as ``q_hat_target``.
    """
    x = np.asarray(context, dtype=float)
    r = _array("rewards", rewards)
    if x.ndim != 2 or x.shape[0] != r.size:
        raise ValueError(f"context must be (n_rounds={r.size}, n_features), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("context must be finite")
    a = np.asarray(actions, dtype=np.int64)
    if a.shape != r.shape or a.min() < 0 or a.max() >= n_actions:
        raise ValueError(f"actions must be {r.size} integers in 0..{n_actions - 1}")
    pos = np.zeros(r.size, dtype=np.int64) if positions is None else np.asarray(positions)
    if pos.shape != r.shape:
        raise ValueError(f"positions must have one entry per round ({r.size}), got {pos.shape}")
    _check_reward_model(model, r)
    base = model if model is not None else LogisticRegression(max_iter=1000)
    eye = np.eye(n_actions)
    q = np.zeros((r.size, n_actions))
    folds = (
        [(np.arange(r.size), np.arange(r.size))]
        if n_folds == 1
        else KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x)
    )
    for train, test in folds:
        for k in np.unique(pos):
            tr, te = train[pos[train] == k], test[pos[test] == k]
            if te.size == 0:
                continue
            fitted = _fit(base, np.c_[x[tr], eye[a[tr]]], r[tr]) if tr.size else None
            # a position the training folds never logged: the folds' mean reward, not 0
            seen = r[tr] if tr.size else r[train]
            for action in range(n_actions):
                features = np.c_[x[te], np.broadcast_to(eye[action], (te.size, n_actions))]
                q[te, action] = _predict(fitted, features, seen)
    return q


def _check_reward_model(model: Any | None, r: np.ndarray) -> None:
    """A classifier learns reward *classes*: the default (binary logistic) one is a model of
    P(r = 1) and means nothing for revenue or counts, and no classifier takes continuous
    rewards; a regressor models E[r] directly."""
    values = np.unique(r)
    if model is None and not np.isin(values, (0.0, 1.0)).all():
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise ValueError(
            "the default reward model (a logistic regression) needs 0/1 rewards; got rewards "
            f"with {values.size} values ({shown}): pass a regressor as model= "
            "(e.g. sklearn.linear_model.Ridge()) for revenue or counts"
        )
    if model is not None and is_classifier(model) and (values != np.round(values)).any():
        bad = float(values[values != np.round(values)][0])
        raise ValueError(
            f"model= is a classifier, but rewards are not whole numbers (e.g. {bad:g}): "
            "pass a regressor as model= for continuous rewards"
        )


def _fit(base: Any, features: np.ndarray, target: np.ndarray) -> Any | None:
    if np.unique(target).size < 2:
        return None  # one reward value only: predict it (a classifier cannot be fitted)
    return clone(base).fit(features, target)


def _predict(fitted: Any | None, features: np.ndarray, target: np.ndarray) -> np.ndarray:
    if fitted is None:
        return np.full(features.shape[0], target.mean() if target.size else 0.0)
    if is_classifier(fitted):
        # the expected reward over the classes, not P(r = 1): the two differ for counts
        return fitted.predict_proba(features) @ np.asarray(fitted.classes_, dtype=float)
    return fitted.predict(features)
