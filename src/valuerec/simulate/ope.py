"""Off-policy evaluation on simulator logs, checked against the simulated truth.

A log of an exploring (epsilon-greedy) policy is replayed day by day through a fresh copy of
the platform as it was when logging began, which rebuilds exactly the contexts the logger
served; each target policy is asked for its probability of every logged (item, position)
(:meth:`~valuerec.recommend.policies.Policy.propensity`). The estimators are
:mod:`valuerec.evaluate.offpolicy`'s, with one round per shown position (reward: the revenue
the item earned), the purchase model as the doubly robust reward model.

The truth is the same quantity computed exactly: a copy of the true state is replayed
alongside, and for every logged context the target's slate is scored with the world's true
click and purchase probabilities. Estimates and truth are per-visit revenue (k positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from valuerec.evaluate import offpolicy
from valuerec.recommend.policies import Policy
from valuerec.simulate.env import Simulator
from valuerec.simulate.log import SimLog
from valuerec.simulate.platform import Platform, candidate_positions


@dataclass
class OPEResult:
    """Per target: estimates (``ips``, ``snips``, ``dr``) and the true value, per visit."""

    estimates: dict[str, dict[str, offpolicy.Estimate]] = field(default_factory=dict)
    truth: dict[str, float] = field(default_factory=dict)
    logged_value: float = 0.0  # the logging policy's own mean revenue per visit
    rounds: int = 0

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for name, ests in self.estimates.items():
            row: dict[str, Any] = {"policy": name, "truth": self.truth[name]}
            for est_name, e in ests.items():
                row[est_name] = e.estimate
                row[f"{est_name}_low"] = e.low
                row[f"{est_name}_high"] = e.high
                row[f"{est_name}_covers"] = e.covers(self.truth[name])
            out.append(row)
        return out


def _scaled(e: offpolicy.Estimate, k: int) -> offpolicy.Estimate:
    return offpolicy.Estimate(
        e.estimator, e.estimate * k, e.low * k, e.high * k, e.n, e.se * k, e.interval, e.level
    )


def evaluate_log(
    log: SimLog,
    platform: Platform,
    state: Simulator,
    targets: dict[str, Policy],
    reward_model: Any | None = None,
    level: float = 0.95,
    cluster: str | None = "visit",
) -> OPEResult:
    """IPS / SNIPS / DR of each deterministic target from ``log``, and its true value.

    ``platform`` and ``state``: the platform and the true state as they were when the log
    began (copies are replayed, the arguments are left alone). ``reward_model``: a
    :class:`~valuerec.simulate.fitting.PurchaseModel` fitted on other data; without it, no DR.

    ``cluster``: the unit the intervals treat as independent.

    * ``"visit"`` (default): the k positions of one logged slate. They share one exploration
      draw, so for a target their weights are all near ``1 / (1 - epsilon)`` or all near 0:
      counted as k independent rounds, the 95% intervals covered the truth in only 87% of 200
      simulated logs (88% of 100 longer ones); clustered by visit, in 96.5% (97%).
    * ``"user"``: all of a user's visits, for a claim about the population of users rather
      than about these contexts (the truth here is the target's value on these very
      contexts, so it is wider than needed: 98-100% in the same logs).
    * ``None``: every position on its own (the too-narrow intervals above).

    A limit, measured: for a target whose value is revenue concentrated on rare expensive
    matches (``RevenueGreedyPolicy`` from an epsilon-greedy relevance log), the weighted terms
    are so right-skewed (cluster skewness ~14) that every miss lies below the truth. Over
    400 fresh logs the 95% intervals (clustered by visit) covered it in 86.5% (IPS), 86%
    (SNIPS) and 89% (DR) of logs. Tried: an empirical-likelihood interval (87-89%, not kept),
    a percentile cluster bootstrap (86-88%) and a studentized one (IPS 94%, SNIPS 94.5% at
    twice the width; DR 87%). Read such intervals as too narrow by about a third.
    """
    if cluster not in ("visit", "user", None):
        raise ValueError("cluster must be 'visit', 'user' or None")
    plat, truth_state = platform.copy(), state.copy()
    price = plat.price
    rewards, behaviour, q_logged, who, visit = [], [], [], [], []
    visits = 0  # slates logged so far: the next one's id
    target_p: dict[str, list[np.ndarray]] = {n: [] for n in targets}
    q_target: dict[str, list[np.ndarray]] = {n: [] for n in targets}
    true_val: dict[str, list[np.ndarray]] = {n: [] for n in targets}
    for d in log.slate_days():
        assert d.items is not None and d.paid is not None and d.propensity is not None
        assert d.buy is not None
        ctx = plat.context(d.users, d.day)
        k = d.items.shape[1]
        pos = candidate_positions(ctx.candidates, d.items)
        rewards.append(d.paid.ravel())
        who.append(np.repeat(d.users, k))
        visit.append(np.repeat(np.arange(visits, visits + len(d.users)), k))
        visits += len(d.users)
        behaviour.append(d.propensity.ravel())
        slot = np.arange(1, k + 1)[None, :]
        if reward_model is not None:
            feats = np.take_along_axis(ctx.features, pos[:, :, None], axis=1)
            q_logged.append((reward_model.predict(feats, slot) * price[d.items]).ravel())
        for name, policy in targets.items():
            target_p[name].append(policy.propensity(ctx, pos).ravel())
            rank = policy.rank(ctx)
            items = np.take_along_axis(ctx.candidates, rank, axis=1)
            true_val[name].append(truth_state.expected_revenue(d.users, items).ravel())
            if reward_model is not None:
                feats = np.take_along_axis(ctx.features, rank[:, :, None], axis=1)
                q_target[name].append((reward_model.predict(feats, slot) * price[items]).ravel())
        truth_state.advance(d.users, d.items, d.buy)
        plat.update(d)
    r, b = np.concatenate(rewards), np.concatenate(behaviour)
    k = platform.k
    out = OPEResult(logged_value=float(r.mean() * k), rounds=len(r))
    unit = {"user": who, "visit": visit}.get(cluster or "")
    groups = np.concatenate(unit) if unit else None
    for name in targets:
        tp = np.concatenate(target_p[name])
        ests = offpolicy.evaluate(
            r,
            b,
            tp,
            np.concatenate(q_logged) if reward_model is not None else None,
            np.concatenate(q_target[name]) if reward_model is not None else None,
            level=level,
            groups=groups,
        )
        out.estimates[name] = {key: _scaled(e, k) for key, e in ests.items()}
        out.truth[name] = float(np.concatenate(true_val[name]).mean() * k)
    return out
