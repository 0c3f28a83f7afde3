"""Ranking policies: propensities, the blend's limits, MMR, and a policy that learns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from valuerec.evaluate.offpolicy import Estimate
from valuerec.recommend.longterm import LongTermPolicy
from valuerec.recommend.policies import (
    EpsilonGreedy,
    RelevancePolicy,
    RevenueGreedyPolicy,
    SlateContext,
    ValueAwarePolicy,
    mmr_rank,
)
from valuerec.simulate.experiment import (
    ExperimentConfig,
    PreparedSeed,
    Refitted,
    SeedResult,
    fit_learned,
    logged_slates,
    ope_simultaneous,
    prepare_seed,
    run_seed,
)
from valuerec.simulate.ope import OPEResult


def _ctx(n: int = 6, m: int = 12, k: int = 4, seed: int = 0) -> SlateContext:
    rng = np.random.default_rng(seed)
    rel = np.sort(rng.normal(size=(n, m)), axis=1)[:, ::-1]
    cats = rng.integers(0, 3, m)
    return SlateContext(
        np.arange(n),
        np.tile(np.arange(m), (n, 1)),
        rel,
        k,
        price=rng.uniform(5, 100, (n, m)),
        margin_rate=rng.uniform(0.1, 0.5, (n, m)),
        ltv=rng.uniform(0, 500, n),
        churn_risk=rng.uniform(0, 1, n),
        ltv_rank=rng.uniform(0, 1, n),
        item_embedding=np.eye(3)[cats],
        p_purchase=rng.uniform(0.01, 0.2, (n, m)),
    )


def test_epsilon_greedy_propensities_are_exact() -> None:
    ctx = _ctx()
    pol = EpsilonGreedy(RelevancePolicy(), 0.4)
    probs = pol.position_probabilities(ctx)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0)  # each (user, position) sums to one
    rng = np.random.default_rng(1)
    draws = 20_000
    counts = np.zeros_like(probs)
    for _ in range(draws // 500):
        many = SlateContext(
            np.zeros(500, int),
            np.tile(ctx.candidates[:1], (500, 1)),
            np.tile(ctx.relevance[:1], (500, 1)),
            ctx.k,
        )
        slate = pol.slate(many, rng)
        # the logged propensity is the marginal probability of that item at that position
        np.testing.assert_allclose(
            slate.propensity,
            np.take_along_axis(
                pol.position_probabilities(many), slate.positions[:, :, None], axis=2
            )[..., 0],
        )
        for p in range(ctx.k):
            counts[0, p] += np.bincount(slate.positions[:, p], minlength=ctx.n_candidates)
    np.testing.assert_allclose(counts[0] / draws, probs[0], atol=0.015)
    assert pol.propensity(ctx, pol.rank(ctx)) == pytest.approx(0.6 + 0.4 / 12)
    uniform = EpsilonGreedy(RelevancePolicy(), 1.0)
    assert np.allclose(uniform.propensity(ctx, pol.rank(ctx)), 1 / 12)


def test_deterministic_propensity_is_one_on_its_slate_only() -> None:
    ctx = _ctx()
    pol = RevenueGreedyPolicy()
    own = pol.rank(ctx)
    assert (pol.propensity(ctx, own) == 1).all()
    other = RelevancePolicy().rank(ctx)
    assert ((pol.propensity(ctx, other) == 1) == (own == other)).all()


def test_value_weight_zero_is_relevance_ranking() -> None:
    ctx = _ctx(n=50, m=30, k=10)
    rel = RelevancePolicy().rank(ctx)
    np.testing.assert_array_equal(ValueAwarePolicy(value_weight=0.0).rank(ctx), rel)
    moved = ValueAwarePolicy(value_weight=2.0).rank(ctx)
    assert (moved != rel).any()
    # protected users (churn risk x LTV rank = 1) get no value weight at all
    blend = ValueAwarePolicy(value_weight=1.0)
    ctx.churn_risk[:], ctx.ltv_rank[:] = 1.0, 1.0
    np.testing.assert_array_equal(blend.rank(ctx), rel)


def test_mmr_spreads_categories() -> None:
    scores = np.array([[5.0, 4.9, 4.8, 1.0, 0.9]])
    emb = np.eye(2)[[0, 0, 0, 1, 1]][None]
    assert mmr_rank(scores, emb, 3, 0.0).tolist() == [[0, 1, 2]]
    assert mmr_rank(scores, emb, 3, 10.0).tolist() == [[0, 3, 1]]


def test_learned_policy_beats_its_logging_policy() -> None:
    torch.set_num_threads(1)
    cfg = ExperimentConfig(
        users=900,
        items=300,
        seeds=(0,),
        pre_days=30,
        log_days=30,
        days=40,
        candidates=30,
        policies=("logging", "learned"),
        ope=False,
        learned_epochs=6,
    )
    res = run_seed(cfg, 0)
    assert res.runs["learned"].revenue > 1.05 * res.runs["logging"].revenue


def _small_seed(**options: Any) -> PreparedSeed:
    """Seed 0 of a small experiment, prepared; refits only where a test asks (``Refitted``)."""
    torch.set_num_threads(1)
    cfg = ExperimentConfig(
        users=300, items=200, seeds=(0,), pre_days=20, log_days=10, days=12, candidates=20,
        refit_days=None, **options,
    )  # fmt: skip
    return prepare_seed(cfg, 0)


def test_refitting_the_purchase_model_changes_only_what_reads_it() -> None:
    prep = _small_seed(refit_recommender=False)
    blend = ValueAwarePolicy(3.0, 1.0)
    once = prep.run(blend)
    # chunks of a run draw the same random numbers as one run: only the refits differ
    chunked = prep.run(Refitted(blend, 12))
    assert chunked.revenue == once.revenue and chunked.clicks == once.clicks
    refitted = prep.run(Refitted(blend, 4))
    assert refitted.days == 12 and len(refitted.daily) == 12
    assert refitted.revenue == pytest.approx(refitted.daily["revenue"].sum())
    assert refitted.revenue != once.revenue  # fresher purchase estimates change the slates
    relevance = RelevancePolicy()
    assert not relevance.reads_purchase_model
    assert prep.run(Refitted(relevance, 4)).revenue == prep.run(relevance).revenue


def test_the_learned_policy_is_retrained_on_the_log_like_the_purchase_model(monkeypatch) -> None:
    """A learned policy retrains on everything logged so far at each refit (the blend's
    purchase model does too); the prepared policy itself is never changed."""
    prep = _small_seed(learned_epochs=2)
    learned = fit_learned(prep)
    before = {k: v.clone() for k, v in learned.net_.state_dict().items()}
    sizes = []
    fit = LongTermPolicy.fit

    def spy(self, data):
        sizes.append(len(data))
        return fit(self, data)

    monkeypatch.setattr(LongTermPolicy, "fit", spy)
    once = prep.run(learned)
    assert sizes == []  # no refits asked for: served as trained
    refitted = prep.run(Refitted(learned, 4))
    # retrained after days 4 and 8, each time on the training log plus all it served since
    assert len(sizes) == 2 and sizes[0] > len(logged_slates(prep.train_log, prep.platform,
                                                            prep.visit_rate))  # fmt: skip
    assert sizes[1] > sizes[0]
    assert refitted.revenue != once.revenue
    after = learned.net_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original is untouched


def test_refitting_the_recommender_reaches_every_policy_and_only_when_asked() -> None:
    """With ``refit_recommender`` the platform refits its recommender on the pre-period plus
    everything logged so far at each refit: even the relevance policy then shows other
    slates, while a run with no refit inside it is unchanged."""
    prep = _small_seed(refit_recommender=True)
    relevance = RelevancePolicy()
    once = prep.run(relevance)
    assert prep.run(Refitted(relevance, 12)).revenue == once.revenue  # no refit inside 12 days
    refitted = prep.run(Refitted(relevance, 4))
    assert refitted.clicks != once.clicks and refitted.revenue != once.revenue
    # the refit sees the served days: the refitted scores differ from the pre-period fit
    platform = prep.log_platform.copy()
    prep.refit_recommender(platform, [prep.train_log])
    assert not np.allclose(platform.relevance_scores, prep.log_platform.relevance_scores)
    # the same refit from the pre-period alone reproduces the platform's own recommender
    prep.refit_recommender(platform, [])
    np.testing.assert_allclose(platform.relevance_scores, prep.log_platform.relevance_scores)


def test_ope_intervals_made_simultaneous_over_every_seed_and_policy() -> None:
    """Four cells (2 seeds x 2 policies): an error of 2.3 standard errors is outside a 95%
    interval but inside the Bonferroni one over 4 (z = 2.50); 3.5 is outside both."""

    def result(seed: int, errors: dict[str, float]) -> SeedResult:
        def cell(err: float) -> Estimate:
            return Estimate("ips", 10 + err, 10 + err - 1.96, 10 + err + 1.96, 100, 1.0, "normal")

        est = {name: {"ips": cell(err)} for name, err in errors.items()}
        return SeedResult(seed, {}, OPEResult(est, {name: 10.0 for name in errors}), {})

    results = [
        result(0, {"blend": 2.3, "learned": 0.1}),
        result(1, {"blend": -0.5, "learned": 3.5}),
    ]
    table = ope_simultaneous(results)
    assert list(table["family"].unique()) == [4] and set(table["estimator"]) == {"ips"}
    covers = {(r.seed, r.policy): r.covers for r in table.itertuples()}
    assert covers == {(0, "blend"): True, (0, "learned"): True, (1, "blend"): True,
                      (1, "learned"): False}  # fmt: skip
    half = (table["high"] - table["low"]) / 2
    np.testing.assert_allclose(half, 2.4977, rtol=1e-3)  # z(1 - 0.05 / 8)


def test_ope_intervals_treat_a_logged_slate_as_one_unit() -> None:
    """The k positions of one logged slate share one exploration draw: a target's weights
    there are all about 1 / (1 - epsilon) or all about 0, so counting them as k independent
    rounds made the 95% intervals too narrow (87% coverage over 200 simulated logs; 96.5%
    clustered by visit). The default clusters by visit; the estimates are the same."""
    from valuerec.simulate import Platform, SimConfig, Simulator, World
    from valuerec.simulate.fitting import fit_relevance
    from valuerec.simulate.ope import evaluate_log

    world = World.draw(SimConfig(users=300, items=200, seed=0))
    sim = Simulator(world)
    plat = Platform(world.items, world.n_users, 10, 30)
    pre = sim.organic(10, plat)
    items = world.items["item_id"].to_numpy()
    plat.set_relevance(fit_relevance(pre.events(), world.user_ids, items))
    logger = EpsilonGreedy(RelevancePolicy(), 0.5, name="logging")
    run = sim.copy(seed=7).run(logger, plat.copy(), 3, ndcg=False)
    assert run.log is not None
    targets = {"relevance": RelevancePolicy()}
    by = {c: evaluate_log(run.log, plat, sim, targets, cluster=c) for c in ("visit", None, "user")}
    default = evaluate_log(run.log, plat, sim, targets)
    visits = sum(len(d.users) for d in run.log.slate_days())
    assert default.rounds == by[None].rounds == 10 * visits
    for est in ("ips", "snips"):
        e = {c: r.estimates["relevance"][est] for c, r in by.items()}
        assert default.estimates["relevance"][est] == e["visit"]
        assert e["visit"].estimate == pytest.approx(e[None].estimate, rel=1e-12)
        assert e["visit"].se > 1.1 * e[None].se  # ten positions, one exploration draw
        assert e["user"].estimate == pytest.approx(e[None].estimate, rel=1e-12)
    with pytest.raises(ValueError, match="cluster must be 'visit', 'user' or None"):
        evaluate_log(run.log, plat, sim, targets, cluster="day")


def test_a_small_population_with_days_without_visitors_still_runs_every_policy() -> None:
    """A day nobody visits logs an empty slate block; fitting the purchase model on such
    logs failed to reshape it (30 users, one day)."""
    torch.set_num_threads(1)
    cfg = ExperimentConfig(
        users=30,
        seeds=(0,),
        days=1,
        policies=("relevance", "revenue-greedy", "value-aware"),
        ope=False,
    )
    res = run_seed(cfg, 0)
    assert set(res.runs) == {"relevance", "revenue-greedy", "value-aware"}
    assert all(np.isfinite(r.revenue) and r.revenue >= 0 for r in res.runs.values())
