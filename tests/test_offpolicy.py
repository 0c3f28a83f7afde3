"""Off-policy estimators on a synthetic contextual bandit whose target-policy value is known."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
from scipy.special import expit, softmax

from valuerec.evaluate import offpolicy as ope

K, D = 5, 3  # actions, context dimensions


@dataclass
class Bandit:
    """Bernoulli rewards with mean sigmoid(theta_a . x + bias_a), a softmax logging policy
    mixed with uniform (so every propensity is >= 0.3 / K) and a sharper target policy."""

    theta: np.ndarray
    bias: np.ndarray
    w_behaviour: np.ndarray

    @classmethod
    def make(cls) -> Bandit:
        rng = np.random.default_rng(1234)
        return cls(rng.normal(0, 1, (K, D)), rng.normal(-1, 0.5, K), rng.normal(0, 1, (D, K)))

    def mu(self, x: np.ndarray) -> np.ndarray:
        return expit(x @ self.theta.T + self.bias)

    def behaviour(self, x: np.ndarray) -> np.ndarray:
        return 0.7 * softmax(x @ self.w_behaviour, axis=1) + 0.3 / K

    def target(self, x: np.ndarray) -> np.ndarray:
        return 0.9 * softmax(3 * (x @ self.theta.T + self.bias), axis=1) + 0.1 / K

    def log(self, n: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, D))
        pb = self.behaviour(x)
        a = (pb.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
        mu = self.mu(x)
        r = (rng.random(n) < mu[np.arange(n), a]).astype(float)
        return {"x": x, "a": a, "r": r, "pb": pb, "pe": self.target(x), "mu": mu}


BANDIT = Bandit.make()


@cache
def truth() -> float:
    """E_x sum_a pi_e(a|x) mu(x, a) by Monte Carlo on 400,000 contexts (error ~3e-4, a
    thirtieth of the estimators' standard error)."""
    x = np.random.default_rng(99).normal(size=(400_000, D))
    return float((BANDIT.target(x) * BANDIT.mu(x)).sum(axis=1).mean())


def args(log: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = np.arange(log["r"].size)
    return log["r"], log["pb"][i, log["a"]], log["pe"][i, log["a"]]


def dr_args(log: dict[str, np.ndarray], q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return q[np.arange(q.shape[0]), log["a"]], ope.expected_reward(q, log["pe"])


@cache
def repetitions(reps: int = 200, n: int = 2000) -> dict[str, list[ope.Estimate]]:
    """Every estimator on ``reps`` independent logs; DR with a deliberately wrong model (it
    must stay unbiased) and with the true mean reward (it must be tighter than IPS)."""
    out: dict[str, list[ope.Estimate]] = {"ips": [], "snips": [], "dr": [], "dr-perfect": []}
    for seed in range(reps):
        log = BANDIT.log(n, seed)
        wrong = 0.5 * log["mu"] + 0.2  # biased, but fixed: no cross-fitting needed
        got = ope.evaluate(*args(log), *dr_args(log, wrong))
        for name in ("ips", "snips", "dr"):
            out[name].append(got[name])
        out["dr-perfect"].append(ope.dr(*args(log), *dr_args(log, log["mu"])))
    return out


@pytest.mark.parametrize("name", ["ips", "snips", "dr", "dr-perfect"])
def test_estimates_are_centred_on_the_truth_and_intervals_cover_it(name):
    estimates = repetitions()[name]
    values = np.array([e.estimate for e in estimates])
    v = truth()
    # unbiased (SNIPS: bias O(1/n), far below this tolerance)
    assert abs(values.mean() - v) < 3 * values.std() / np.sqrt(values.size)
    coverage = np.mean([e.covers(v) for e in estimates])
    assert 0.9 <= coverage <= 0.99, coverage
    # the reported standard error matches the spread over repetitions
    assert np.mean([e.se for e in estimates]) == pytest.approx(values.std(), rel=0.15)
    assert all(e.n == 2000 and e.level == 0.95 and e.low < e.estimate < e.high for e in estimates)


def test_dr_with_a_perfect_reward_model_beats_ips_on_variance():
    reps = repetitions()
    sd = {k: np.std([e.estimate for e in reps[k]]) for k in ("ips", "dr-perfect")}
    assert sd["dr-perfect"] < 0.7 * sd["ips"]
    assert all(d.se < i.se for d, i in zip(reps["dr-perfect"], reps["ips"], strict=True))


def test_snips_equals_ips_when_the_weights_average_one():
    log = BANDIT.log(3000, 7)
    r, pb, pe = args(log)
    w = pe / pb
    pe_unit = pb * w / w.mean()  # same shape of weights, mean exactly one
    assert (pe_unit <= 1).all()
    a, b = ope.ips(r, pb, pe_unit), ope.snips(r, pb, pe_unit)
    assert a.estimate == pytest.approx(b.estimate, rel=1e-12)
    assert (a.interval, b.interval) == ("normal", "delta")


def test_ips_of_the_behaviour_policy_is_the_mean_reward():
    log = BANDIT.log(1000, 3)
    r, pb, _ = args(log)
    got = ope.ips(r, pb, pb)
    assert got.estimate == pytest.approx(r.mean())
    half = 1.959964 * r.std(ddof=1) / np.sqrt(r.size)
    assert (got.low, got.high) == pytest.approx((r.mean() - half, r.mean() + half))
    assert ope.snips(r, pb, pb).estimate == pytest.approx(r.mean())


def test_bootstrap_intervals_agree_with_the_normal_ones():
    log = BANDIT.log(4000, 11)
    q = log["mu"] * 0.8
    normal = ope.evaluate(*args(log), *dr_args(log, q))
    boot = ope.evaluate(*args(log), *dr_args(log, q), interval="bootstrap", n_boot=400, seed=1)
    for name, est in boot.items():
        assert est.interval == "bootstrap" and est.estimate == normal[name].estimate
        width, ref = est.high - est.low, normal[name].high - normal[name].low
        assert width == pytest.approx(ref, rel=0.2), name
        assert est.se == pytest.approx(normal[name].se, rel=0.2), name


def test_cross_fitted_reward_model_gives_an_accurate_dr():
    log = BANDIT.log(20_000, 5)
    q = ope.fit_reward_model(log["x"], log["a"], log["r"], K, n_folds=3, seed=0)
    assert q.shape == (20_000, K) and ((q > 0) & (q < 1)).all()
    est = ope.dr(*args(log), *dr_args(log, q))
    assert abs(est.estimate - truth()) < 3 * est.se
    assert est.se < ope.ips(*args(log)).se  # a decent model already tightens the interval


def test_slate_positions_are_separate_rounds_with_their_own_probabilities():
    rng = np.random.default_rng(0)
    n, n_actions = 12_000, 4
    positions = rng.integers(0, 3, n)
    actions = rng.integers(0, n_actions, n)  # uniform logging: propensity 1/4
    ctr = np.array([[0.10, 0.05, 0.02], [0.30, 0.15, 0.06], [0.05, 0.02, 0.01], [0.2, 0.1, 0.04]])
    rewards = (rng.random(n) < ctr[actions, positions]).astype(float)
    dist = np.array([[0.1, 0.2, 0.3], [0.7, 0.3, 0.2], [0.1, 0.2, 0.3], [0.1, 0.3, 0.2]])
    v = np.mean([(dist[:, k] * ctr[:, k]).sum() for k in range(3)])  # positions equally likely
    target = ope.action_probs(dist[None], actions, positions)
    assert target[:3] == pytest.approx(dist[actions[:3], positions[:3]])
    q = ope.fit_reward_model(np.zeros((n, 1)), actions, rewards, n_actions, positions=positions)
    # one model per position recovers each (action, position) click rate
    assert q[np.arange(n), actions] == pytest.approx(ctr[actions, positions], abs=0.04)
    q_target = ope.expected_reward(q, dist[None], positions)
    assert q_target[:3] == pytest.approx((dist[:, positions[:3]].T * q[:3]).sum(axis=1))
    got = ope.evaluate(rewards, np.full(n, 0.25), target, q[np.arange(n), actions], q_target)
    assert all(e.covers(v) for e in got.values()), (v, got)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"propensities": [0.5, 0.0, 0.5]}, r"propensities must be probabilities in \(0, 1\]"),
        ({"propensities": [0.5, 1.5, 0.5]}, r"propensities .* entry 1 is 1\.5"),
        ({"target_probs": [0.5, -0.1, 0.5]}, r"target_probs must be probabilities in \[0, 1\]"),
        ({"target_probs": [0.5, 0.5]}, r"target_probs has 2 entries but rewards has 3"),
        ({"rewards": [1.0, np.nan, 0.0]}, r"rewards must be finite; entry 1 is nan"),
        ({"propensities": [0.5, np.nan, 0.5]}, r"propensities must be finite"),
        ({"rewards": [1.0]}, r"rewards needs at least 2 rounds"),
        ({"rewards": [[1.0, 0.0, 1.0]]}, r"rewards must be one-dimensional"),
        ({"q_hat_logged": [0.1, np.nan, 0.1]}, r"q_hat_logged must be finite"),
        ({"q_hat_target": [0.1, 0.1]}, r"q_hat_target has 2 entries"),
        ({"interval": "exact"}, r"interval must be 'normal' or 'bootstrap'"),
        ({"level": 95}, r"level must be in \(0, 1\)"),
    ],
)
def test_bad_input_is_a_clear_error_naming_the_argument(kwargs, message):
    good = {
        "rewards": [1.0, 0.0, 1.0],
        "propensities": [0.5, 0.5, 0.5],
        "target_probs": [0.2, 0.9, 0.4],
        "q_hat_logged": [0.1, 0.1, 0.1],
        "q_hat_target": [0.2, 0.2, 0.2],
    }
    with pytest.raises(ValueError, match=message):
        ope.dr(**(good | kwargs))


def test_bad_distributions_and_reward_model_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="sum to one over actions"):
        ope.action_probs(np.array([0.5, 0.6]), [0, 1])
    with pytest.raises(ValueError, match=r"actions must be in 0\.\.1"):
        ope.action_probs(np.array([0.5, 0.5]), [0, 2])
    with pytest.raises(ValueError, match=r"positions must be in 0\.\.2"):
        ope.action_probs(np.full((1, 2, 3), 0.5), [0, 1], [0, 3])
    with pytest.raises(ValueError, match="action_dist must be"):
        ope.action_probs(np.full((4, 2, 1), 0.5), [0, 1])  # 4 rounds of probabilities for 2
    with pytest.raises(ValueError, match="SNIPS is undefined"):
        ope.snips([1.0, 0.0], [0.5, 0.5], [0.0, 0.0])
    with pytest.raises(ValueError, match="DR needs both"):
        ope.evaluate([1.0, 0.0], [0.5, 0.5], [0.5, 0.5], q_hat_logged=[0.1, 0.1])
    with pytest.raises(ValueError, match=r"context must be \(n_rounds=2"):
        ope.fit_reward_model(np.zeros((3, 1)), [0, 1], [1.0, 0.0], 2)


def test_clustered_interval_widens_for_correlated_rounds_only():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(400), 10)  # 400 slates of 10 positions
    shared = np.repeat(rng.normal(size=400), 10)  # one draw per slate moves all its rounds
    r = shared + 0.1 * rng.normal(size=groups.size)
    b = np.full(groups.size, 0.5)
    plain = ope.ips(r, b, b)
    clustered = ope.ips(r, b, b, groups=groups)
    assert clustered.estimate == plain.estimate and clustered.interval == "normal, clustered"
    # the slate means are the independent units: sd(shared) / sqrt(400), not / sqrt(4000)
    assert clustered.se == pytest.approx(np.std(r.reshape(400, 10).mean(axis=1)) / 20, rel=0.01)
    assert clustered.se > 2.5 * plain.se
    independent = rng.normal(size=groups.size)
    ratio = ope.ips(independent, b, b, groups=groups).se / ope.ips(independent, b, b).se
    assert 0.85 < ratio < 1.15
    with pytest.raises(ValueError, match="normal"):
        ope.ips(r, b, b, groups=groups, interval="bootstrap")
    with pytest.raises(ValueError, match="one entry per round"):
        ope.snips(r, b, b, groups=groups[:-1])


def test_simultaneous_intervals_hold_a_whole_family_of_estimates_together():
    """Families of 10 independent DR estimates: 95% intervals all hold the truth together
    only about 0.95^10 = 60% of the time; Bonferroni intervals about 95% of the time."""
    v = truth()
    estimates = repetitions()["dr"]
    families = [estimates[i : i + 10] for i in range(0, len(estimates), 10)]
    each_alone = sum(all(e.covers(v) for e in fam) for fam in families)
    together = [ope.simultaneous(fam) for fam in families]
    held = sum(all(e.covers(v) for e in fam) for fam in together)
    assert held >= 18 and each_alone <= 14, (held, each_alone)
    wide, plain = together[0][0], families[0][0]
    assert wide.estimate == plain.estimate and wide.se == plain.se
    assert wide.level == pytest.approx(0.995)
    # the half-width grows from z(0.975) to z(0.9975)
    ratio = (wide.high - wide.low) / (plain.high - plain.low)
    assert ratio == pytest.approx(2.807 / 1.960, rel=1e-3)
    assert ope.simultaneous(families[0][:1])[0].low == pytest.approx(plain.low)  # K = 1: as is


def test_simultaneous_needs_normal_intervals_and_a_family():
    log = BANDIT.log(300, 0)
    boot = ope.ips(*args(log), interval="bootstrap", n_boot=200)
    with pytest.raises(ValueError, match="bootstrap"):
        ope.simultaneous([boot])
    with pytest.raises(ValueError, match="at least one"):
        ope.simultaneous([])
    with pytest.raises(ValueError, match="level"):
        ope.simultaneous([ope.ips(*args(log))], level=1.5)


def _few_matches(matched: int, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform logging over 20 actions and a deterministic target that matches ``matched`` of
    the ``n`` logged rounds: the rare-match case where some bootstrap resamples hold none."""
    rng = np.random.default_rng(0)
    rewards = rng.binomial(1, 0.3, n).astype(float)
    target = np.zeros(n)
    target[rng.choice(n, matched, replace=False)] = 1.0
    return rewards, np.full(n, 1 / 20), target


def test_snips_bootstrap_is_over_the_resamples_that_have_an_estimate():
    import warnings

    from scipy import stats

    r, pb, tp = _few_matches(5)
    w = tp / pb
    # scipy's own resamples (same seed): a few of them hold no matched round, SNIPS 0/0 there
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = stats.bootstrap(
            (w * r, w), lambda a, b, axis=-1: a.mean(axis) / b.mean(axis), paired=True,
            vectorized=True, n_resamples=2000, method="percentile",
            random_state=np.random.default_rng(0),
        ).bootstrap_distribution  # fmt: skip
    defined = ref[np.isfinite(ref)]
    assert 0 < ref.size - defined.size <= 0.05 * ref.size  # the case under test
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning, no DegenerateDataWarning
        got = ope.snips(r, pb, tp, interval="bootstrap", n_boot=2000, seed=0)
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(defined, [0.025, 0.975])))
    assert got.se == pytest.approx(defined.std(ddof=1))
    assert 0 <= got.low <= got.estimate <= got.high <= 1


@pytest.mark.parametrize("matched", [1, 2])
def test_snips_bootstrap_refuses_when_few_rounds_carry_target_weight(matched):
    r, pb, tp = _few_matches(matched)
    for call in (ope.snips, ope.evaluate):
        with pytest.raises(ValueError, match=rf"only {matched} of 60 rounds.*interval='normal'"):
            call(r, pb, tp, interval="bootstrap", n_boot=500, seed=0)
    # the delta-method interval is still there
    assert np.isfinite(ope.snips(r, pb, tp).high)


def test_default_reward_model_refuses_rewards_that_are_not_0_1():
    rng = np.random.default_rng(0)
    x, a = rng.normal(size=(60, 2)), rng.integers(0, 3, 60)
    for r in (rng.choice([0.0, 1.0, 2.0], 60), rng.choice([0.0, 5.0, 10.0], 60)):
        with pytest.raises(ValueError, match=r"0/1 rewards; got rewards with 3 values.*model="):
            ope.fit_reward_model(x, a, r, 3)


def test_a_classifier_reward_model_predicts_the_expected_reward():
    from sklearn.dummy import DummyClassifier

    rng = np.random.default_rng(0)
    x, a = rng.normal(size=(60, 2)), rng.integers(0, 3, 60)
    r = np.where(rng.random(60) < 0.5, 2.0, 0.0)
    r[:5] = 1.0  # counts, mostly 0 and 2: E[r] is far from P(r = 1)
    q = ope.fit_reward_model(x, a, r, 3, model=DummyClassifier(strategy="prior"), n_folds=1)
    assert q == pytest.approx(np.full((60, 3), r.mean()))
    with pytest.raises(ValueError, match=r"model= is a classifier.*not whole numbers.*regressor"):
        ope.fit_reward_model(x, a, rng.exponential(size=60), 3, model=DummyClassifier())


def test_a_position_the_training_folds_never_logged_gets_their_mean_reward():
    """q-hat was 0 at a position absent from a fold's training part (any reward scale)."""
    x = np.random.default_rng(0).random((9, 2))
    a = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0])
    r = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1.0])
    pos = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1])  # position 1 logged once
    q = ope.fit_reward_model(x, a, r, 2, positions=pos, n_folds=3)
    # the round at position 1 is in one test fold; the other 6 rounds trained that fold
    assert q[8, 0] == q[8, 1] and 0.5 <= q[8, 0] <= 5 / 6
