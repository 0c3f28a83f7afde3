"""Campaign targeting, tested the way it would be in production: a randomised A/B test.

Who should get an incentive (a discount for a few weeks)? The customers most valuable or most
at risk are the obvious answer, but the money is made on those whose behaviour *changes*: a
loyal big spender who would buy anyway only gets cheaper. This module

1. picks the eligible segment from the platform's value model (``at-risk-high-value``: above
   median predicted LTV and above median churn risk; or ``all`` customers);
2. randomises it into treatment and control and simulates ``days`` days (default 90: the
   A/B test), estimating the uplift in revenue per user with a Welch t interval;
3. simulates the same days with everyone treated and with nobody treated (same random
   numbers): since users do not interact, each user's two outcomes are their potential
   outcomes, so the true average uplift and every user's true uplift are known;
4. gives the sample size per arm that would detect an uplift of that size with the requested
   power (two-sided z test on means, scipy);
5. fits a T-learner (two LightGBM regressors, treated and control, cross-fitted over two
   folds) on the A/B data and compares the true uplift captured by targeting its top users
   with targeting the top users by predicted LTV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from valuerec.recommend.policies import RelevancePolicy
from valuerec.simulate.env import Incentive, Simulator
from valuerec.simulate.fitting import attach_models
from valuerec.simulate.platform import Platform
from valuerec.simulate.world import SimConfig, World
from valuerec.value.segments import segment_name

SEGMENTS = ("at-risk-high-value", "all")
USER_FEATURES = (
    "visits",
    "exposures",
    "clicks",
    "buys",
    "revenue",
    "ltv",
    "churn_risk",
    "ltv_rank",
    "mean_log_price",
)


@dataclass
class CampaignConfig:
    """The population, the incentive and the test's statistics settings."""

    users: int = 4_000
    items: int = 1_000
    seed: int = 0
    pre_days: int = 60
    days: int = 90
    segment: str = "at-risk-high-value"
    treat_share: float = 0.5
    discount: float = 0.2
    campaign_days: int = 30
    goodwill: float = 0.5
    target_share: float = 0.2  # who a targeted roll-out would reach (top share of the segment)
    power: float = 0.8
    alpha: float = 0.05
    world: dict[str, Any] = field(default_factory=dict)

    def problem(self) -> tuple[str, str] | None:
        """The first setting the campaign cannot use, as (field, what is wrong), or None.

        Checked before anything is simulated: out of range, ``power`` or ``alpha`` make the
        sample size's normal quantile infinite (an OverflowError after the whole run) and
        ``discount`` or ``goodwill`` turn the simulated behaviour into silent nonsense. The
        CLI names the field as its option; :meth:`check` raises it for Python callers.
        """
        if segment_name(self.segment, SEGMENTS) is None:
            return "segment", f"must be one of {', '.join(SEGMENTS)}, got {self.segment!r}"
        open_unit = {"power": self.power, "alpha": self.alpha, "treat_share": self.treat_share}
        for name, value in open_unit.items():
            if not 0.0 < value < 1.0:
                return name, f"must be strictly between 0 and 1, got {value}"
        if not 0.0 <= self.discount < 1.0:
            return "discount", f"must be in [0, 1), got {self.discount}"
        if not 0.0 <= self.goodwill <= 1.0:
            return "goodwill", f"must be in [0, 1], got {self.goodwill}"
        if not 0.0 < self.target_share <= 1.0:
            return "target_share", f"must be in (0, 1], got {self.target_share}"
        return None

    def check(self) -> None:
        """Raise ValueError naming the first setting the campaign cannot use."""
        if (found := self.problem()) is not None:
            raise ValueError(f"{found[0]} {found[1]}")


@dataclass
class CampaignResult:
    eligible: int
    treated: int
    uplift: float  # estimated revenue uplift per treated user (A/B difference in means)
    low: float
    high: float
    p_value: float
    true_uplift: float  # mean true individual uplift over the eligible users
    sample_size_per_arm: int
    targeting: pd.DataFrame  # ranking -> true uplift captured by its top users
    details: dict[str, float]

    @property
    def covers(self) -> bool:
        return self.low <= self.true_uplift <= self.high


def user_features(platform: Platform, users: np.ndarray) -> np.ndarray:
    """What the platform knows about each user before the campaign (its logs and models)."""
    p = platform
    mean_lp = np.where(p.buys > 0, p.logp_buy / np.maximum(p.buys, 1), 0.0)
    cols = [
        p.visits,
        p.exposures,
        p.clicks,
        p.buys,
        p.revenue,
        p.ltv,
        p.churn_risk,
        p.ltv_rank,
        mean_lp,
    ]
    return np.column_stack([c[users] for c in cols])


def sample_size(sd: float, effect: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """Users per arm for a two-sided z test of a difference ``effect`` in means (equal arms,
    common sd): ``2 (z_{1-alpha/2} + z_power)^2 sd^2 / effect^2``."""
    # at 0 or 1 a quantile is infinite and the size an OverflowError: say which input it was
    if not 0.0 < power < 1.0 or not 0.0 < alpha < 1.0:
        raise ValueError(f"power and alpha must be strictly between 0 and 1: {power}, {alpha}")
    if effect == 0:
        return 0
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return int(np.ceil(2 * (z * sd / effect) ** 2))


def t_learner(
    x: np.ndarray, treated: np.ndarray, y: np.ndarray, seed: int = 0, folds: int = 2
) -> np.ndarray:
    """Cross-fitted T-learner uplift: ``mu_1(x) - mu_0(x)``, each user predicted by models
    that did not see them (LightGBM regressors per arm)."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    fold = rng.integers(0, folds, len(y))
    out = np.zeros(len(y))
    for f in range(folds):
        train, test = fold != f, fold == f
        preds = []
        for arm in (True, False):
            sel = train & (treated == arm)
            model = lgb.LGBMRegressor(
                n_estimators=200,
                learning_rate=0.05,
                num_leaves=15,
                min_child_samples=30,
                subsample=0.8,
                subsample_freq=1,
                random_state=seed,
                n_jobs=1,
                verbose=-1,
            )
            model.fit(x[sel], y[sel])
            preds.append(model.predict(x[test]))
        out[test] = preds[0] - preds[1]
    return out


def eligible_users(platform: Platform, segment: str) -> np.ndarray:
    """Customers (a purchase logged) in the segment, by the platform's value model."""
    named = segment_name(segment, SEGMENTS)  # "at-risk high value" too, as value segments
    if named is None:
        raise ValueError(f"unknown segment {segment!r}; choose from {', '.join(SEGMENTS)}")
    segment = named
    customers = platform.buys > 0
    if segment == "all":
        return np.flatnonzero(customers)
    ltv, risk = platform.ltv, platform.churn_risk
    hv = ltv >= np.median(ltv[customers])
    at_risk = risk >= np.median(risk[customers])
    return np.flatnonzero(customers & hv & at_risk)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (no true uplift at all, e.g. a
    0% discount without goodwill), where numpy divides by a zero spread and warns."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def run_campaign(cfg: CampaignConfig, progress: Any | None = None) -> CampaignResult:
    cfg.check()  # before the simulation, not after it
    say = progress or (lambda _: None)
    world = World.draw(
        SimConfig(users=cfg.users, items=cfg.items, seed=cfg.seed).with_(**cfg.world)
    )
    sim = Simulator(world)
    platform = Platform(world.items, world.n_users)
    say("pre-period")
    pre = sim.organic(cfg.pre_days, platform)
    attach_models(
        platform,
        pre.events(),
        world.user_ids,
        world.items["item_id"].to_numpy(),
        sim.start + np.timedelta64(cfg.pre_days, "D"),
    )
    users = eligible_users(platform, cfg.segment)
    if len(users) < 20:
        raise ValueError(  # named as the CLI's option (CampaignConfig.users in Python)
            f"only {len(users)} users in segment {cfg.segment!r}, at least 20 are needed: "
            "simulate more users (raise --users)"
        )
    rng = np.random.default_rng([cfg.seed, 99])
    assign = rng.random(len(users)) < cfg.treat_share
    policy = RelevancePolicy()

    def outcome(treated_users: np.ndarray, label: str) -> np.ndarray:
        say(label)
        mask = np.zeros(world.n_users, dtype=bool)
        mask[treated_users] = True
        incentive = Incentive(mask, cfg.discount, cfg.campaign_days, cfg.goodwill)
        run = sim.copy(seed=cfg.seed + 30_000).run(
            policy, platform.copy(), cfg.days, keep_log=False, ndcg=False, incentive=incentive
        )
        return run.user_revenue[users]

    y = outcome(users[assign], "A/B test")
    y1 = outcome(users, "everyone treated (truth)")
    y0 = outcome(users[:0], "nobody treated (truth)")
    tau = y1 - y0
    test = stats.ttest_ind(y[assign], y[~assign], equal_var=False)
    ci = test.confidence_interval(1 - cfg.alpha)
    uplift = float(y[assign].mean() - y[~assign].mean())
    sd = float(np.sqrt((y[assign].var(ddof=1) + y[~assign].var(ddof=1)) / 2))
    say("uplift model")
    x = user_features(platform, users)
    tau_hat = t_learner(x, assign, y, seed=cfg.seed)
    top = max(1, round(cfg.target_share * len(users)))
    rankings = {
        "uplift model (T-learner)": tau_hat,
        "predicted LTV": platform.ltv[users],
        "churn risk x LTV": platform.churn_risk[users] * platform.ltv_rank[users],
        "oracle (true uplift)": tau,
    }
    rows = []
    for name, score in rankings.items():
        chosen = np.argsort(-score, kind="stable")[:top]
        rows.append(
            {
                "ranking": name,
                "targeted": top,
                "true_uplift_total": float(tau[chosen].sum()),
                "true_uplift_per_user": float(tau[chosen].mean()),
            }
        )
    rows.append(
        {
            "ranking": "random",
            "targeted": top,
            "true_uplift_total": float(tau.mean() * top),
            "true_uplift_per_user": float(tau.mean()),
        }
    )
    return CampaignResult(
        eligible=len(users),
        treated=int(assign.sum()),
        uplift=uplift,
        low=float(ci.low),
        high=float(ci.high),
        p_value=float(test.pvalue),
        true_uplift=float(tau.mean()),
        sample_size_per_arm=sample_size(sd, uplift, cfg.power, cfg.alpha),
        targeting=pd.DataFrame(rows),
        details={
            "control_mean": float(y[~assign].mean()),
            "treated_mean": float(y[assign].mean()),
            "sd": sd,
            "uplift_model_corr": _corr(tau_hat, tau),
        },
    )
