"""The simulator: reproducible, sensitive to what is shown, logs that ingest, known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score

from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.recommend.policies import EpsilonGreedy, RelevancePolicy
from valuerec.simulate import Platform, SimConfig, Simulator, World, slate_ndcg
from valuerec.simulate.campaign import CampaignConfig, run_campaign, sample_size

SMALL = {"users": 400, "items": 200, "slate_size": 5}


def _setup(seed: int = 0, oracle: bool = True, candidates: int = 200, **world: object):
    w = World.draw(SimConfig(seed=seed, **SMALL).with_(**world))
    sim = Simulator(w)
    plat = Platform(w.items, w.n_users, slate_size=5, candidates=candidates)
    sim.organic(10, plat)
    if oracle:  # the platform's relevance is the users' true relevance
        plat.set_relevance(w.relevance(np.arange(w.n_users)))
    return w, sim, plat


def _run(sim: Simulator, plat: Platform, policy, days: int = 30, **kw):
    return sim.copy(seed=5).run(policy, plat.copy(), days, **kw)


def test_same_seed_same_log_other_seed_other_log() -> None:
    logs = []
    for seed in (3, 3, 4):
        _, sim, plat = _setup(seed)
        res = sim.run(EpsilonGreedy(RelevancePolicy(), 0.5), plat, 10)
        logs.append(res.log.events())
    pd.testing.assert_frame_equal(logs[0], logs[1])
    assert not logs[0]["user_id"].equals(logs[2]["user_id"]) or len(logs[0]) != len(logs[2])


def test_organic_views_are_stamped_in_order_on_their_own_day() -> None:
    """A visit's views are 30 s apart in the order they were drawn, and every event falls on
    its simulated day (the stamp once ran past midnight and out of order)."""
    w = World.draw(SimConfig(seed=0, users=3000, items=100))
    log = Simulator(w).organic(3)
    ev = log.events()
    day = pd.Timestamp(str(log.start)) + pd.to_timedelta(ev["day"], unit="D")
    assert (pd.to_datetime(ev["timestamp"]).dt.normalize() == day).all()
    d = log.days[0]
    views = ev[(ev["day"] == d.day) & (ev["event_type"] == "view")]
    assert len(views) == len(d.view_user)
    for u, rows in list(views.groupby("user_id", sort=False))[:300]:
        drawn = log.item_ids[d.view_item[log.user_ids[d.users[d.view_user]] == u]]
        assert list(rows["item_id"]) == list(drawn), u  # time order is the drawn order
        gaps = pd.to_datetime(rows["timestamp"]).diff().dt.total_seconds().iloc[1:]
        assert (gaps == 30).all() or rows["timestamp"].iloc[-1].hour == 23, u


def test_matched_slates_get_more_clicks_and_keep_more_users() -> None:
    _, sim, plat = _setup()
    good = _run(sim, plat, RelevancePolicy())
    rand = _run(sim, plat, EpsilonGreedy(RelevancePolicy(), 1.0, name="random"))
    assert good.clicks > 1.3 * rand.clicks
    assert good.ndcg > rand.ndcg
    # satisfaction lowers the dropout hazard: the matched policy keeps more users active
    assert good.active_end > rand.active_end
    assert good.active_start == rand.active_start


def test_without_satisfaction_effect_ranking_does_not_change_who_stays() -> None:
    _, sim, plat = _setup(satisfaction_effect=0.0, price_aversion=0.0)
    good = _run(sim, plat, RelevancePolicy())
    rand = _run(sim, plat, EpsilonGreedy(RelevancePolicy(), 1.0, name="random"))
    # same random numbers and a hazard blind to the slate: exactly the same users leave
    np.testing.assert_array_equal(good.active, rand.active)


def test_logged_events_ingest_cleanly_and_match_the_totals() -> None:
    w, sim, plat = _setup(oracle=False, candidates=50)
    pre_log = sim.organic(5, plat)
    plat.set_relevance(w.relevance(np.arange(w.n_users)))
    res = sim.run(EpsilonGreedy(RelevancePolicy(), 0.3), plat, 5)
    events = pd.concat([pre_log.events(), res.log.events()], ignore_index=True)
    assert set(events["event_type"]) == {"view", "purchase", "exposure", "click"}
    with Store(":memory:") as store:
        result = ingest(store, events, "events")
        assert result.quarantined == 0
        assert result.stored == len(events)
        props = store.query(
            "SELECT properties->>'position' AS pos, properties->>'propensity' AS prop "
            "FROM events WHERE event_type = 'exposure' LIMIT 5"
        )
    assert props["pos"].notna().all() and props["prop"].notna().all()
    slate = res.log.events()
    paid = slate.loc[slate["event_type"] == "purchase", "value"].sum()
    assert paid == pytest.approx(res.revenue, rel=1e-6, abs=0.05)
    assert (slate["event_type"] == "exposure").sum() == res.impressions
    assert (slate["event_type"] == "click").sum() == res.clicks
    truth = w.truth()
    assert {"price_sensitivity", "base_hazard", "taste_0", "visit_prob"} <= set(truth.columns)
    assert len(truth) == w.n_users


def test_slate_ndcg_is_sklearns_ndcg() -> None:
    w = World.draw(SimConfig(seed=1, **SMALL))
    users = np.arange(20)
    rng = np.random.default_rng(0)
    items = np.stack([rng.choice(w.n_items, 5, replace=False) for _ in users])
    ours = slate_ndcg(w, users, items)
    gains = w.relevance(users)
    scores = np.zeros_like(gains)
    np.put_along_axis(scores, items, np.arange(5, 0, -1)[None, :].astype(float), axis=1)
    theirs = [ndcg_score(gains[i : i + 1], scores[i : i + 1], k=5) for i in range(len(users))]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_campaign_interval_covers_the_true_uplift() -> None:
    cfg = CampaignConfig(
        users=1_200, items=200, pre_days=30, days=40, campaign_days=20, segment="all", seed=1
    )
    res = run_campaign(cfg)
    assert res.low < res.uplift < res.high
    assert res.covers, (res.low, res.true_uplift, res.high)
    assert set(res.targeting["ranking"]) >= {"uplift model (T-learner)", "predicted LTV"}
    assert res.sample_size_per_arm > 0


def test_sample_size_formula() -> None:
    # the textbook case: sd 1, effect 0.5, 80% power, 5% two-sided: 63 per arm
    assert sample_size(1.0, 0.5) == 63


def test_cli_simulate_writes_ingestable_events(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from valuerec.cli import app

    out = tmp_path / "sim"
    args = ["simulate", "--out", str(out), "--users", "200", "--items", "100", "--pre-days",
            "5", "--days", "3", "--db", str(tmp_path / "s.duckdb"), "--json"]  # fmt: skip
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["ingested"]["quarantined"] == 0
    events = pd.read_csv(out / "events.csv")
    assert summary["ingested"]["stored"] == len(events)
    assert {"exposure", "click", "view"} <= set(events["event_type"])
    assert (out / "truth.csv").exists()
