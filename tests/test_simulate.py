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


# -- edge cases: empty days, small catalogues, option errors -----------------------------------


def _no_simulation(monkeypatch) -> None:
    """Fail the test if anything is simulated: option errors must come before the work."""

    def boom(*args, **kwargs):
        raise AssertionError("simulated before the options were checked")

    monkeypatch.setattr(Simulator, "organic", boom)
    monkeypatch.setattr(Simulator, "run", boom)


def _cli(*args: str):
    from typer.testing import CliRunner

    from valuerec.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _said(res) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(res.stderr.split())


def test_a_day_without_visitors_shows_no_slates_and_earns_nothing() -> None:
    """Once every user has left nobody visits: the context is empty and the days go by with
    no slates and no revenue (the candidates' relevance floor was a nanmin over nothing)."""
    _, sim, plat = _setup(candidates=50)
    ctx = plat.context(np.zeros(0, dtype=np.int64), 0)
    assert ctx.candidates.shape == (0, 50)
    sim.alive[:] = False
    for policy in (RelevancePolicy(), EpsilonGreedy(RelevancePolicy(), 0.3)):
        res = sim.copy().run(policy, plat.copy(), 3)
        assert res.revenue == 0.0 and res.clicks == 0 and res.impressions == 0
        assert res.daily["visitors"].tolist() == [0, 0, 0]
        assert res.daily["revenue"].tolist() == [0.0, 0.0, 0.0]
        assert res.active_end == 0
        assert len(res.log.days) == 3
        assert all(d.items.shape == (0, 5) for d in res.log.days)
        assert len(res.log.events()) == 0


def test_cli_simulate_a_tiny_population_with_empty_days(tmp_path) -> None:
    """Three users for 20 days: most days nobody visits, and the run still finishes."""
    import json

    out = tmp_path / "sim"
    res = _cli("simulate", "--out", str(out), "--users", "3", "--items", "60", "--days", "20",
               "--pre-days", "10", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["active_end"] <= 3
    events = pd.read_csv(out / "events.csv")
    assert summary["events"] == len(events)


def test_organic_visits_never_view_more_items_than_the_catalogue_has() -> None:
    """A visit drawing more views than there are items views each item once (it indexed past
    the catalogue), and the simulation goes on to serve slates of all ten items."""
    w = World.draw(SimConfig(seed=1, users=50, items=10))
    sim = Simulator(w)
    plat = Platform(w.items, w.n_users, slate_size=10, candidates=10)
    log = sim.organic(2, plat, views_mean=30.0)  # nearly every visit draws more than 10 views
    for d in log.days:
        per_visit = np.bincount(d.view_user, minlength=len(d.users))
        assert per_visit.max() == 10 and per_visit.min() >= 1
        for v in range(len(d.users)):
            assert len(set(d.view_item[d.view_user == v])) == per_visit[v]  # no repeats
    res = sim.run(RelevancePolicy(), plat, 2)
    assert res.days == 2
    assert res.impressions == 10 * int(res.daily["visitors"].sum()) > 0


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--epsilon", "2"], "--epsilon"),
        (["--policy", "relevance", "--epsilon", "-0.5"], "--epsilon"),
        (["--pre-days", "0"], "--pre-days"),
        (["--pre-days", "-3"], "--pre-days"),
    ],
)
def test_cli_simulate_option_errors_are_usage_errors(tmp_path, monkeypatch, args, option) -> None:
    _no_simulation(monkeypatch)
    res = _cli("simulate", "--out", str(tmp_path / "sim"), "--users", "20", *args)
    assert res.exit_code == 2, res.output
    assert option in _said(res)
    assert "Traceback" not in res.output


def test_cli_simulate_out_naming_a_file_fails_before_simulating(tmp_path, monkeypatch) -> None:
    _no_simulation(monkeypatch)
    target = tmp_path / "afile"
    target.write_text("keep me")
    res = _cli("simulate", "--out", str(target), "--users", "20", "--items", "60")
    assert res.exit_code == 2, res.output
    assert "error: --out" in _said(res) and "cannot make the output folder" in _said(res)
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--power", "0"], "--power"),
        (["--power", "1"], "--power"),
        (["--discount", "1.5"], "--discount"),
        (["--discount", "-0.5"], "--discount"),
        (["--target-share", "0"], "--target-share"),
        (["--target-share", "1.5"], "--target-share"),
        (["--goodwill", "2"], "--goodwill"),
    ],
)
def test_cli_campaign_option_errors_are_usage_errors(monkeypatch, args, option) -> None:
    _no_simulation(monkeypatch)
    res = _cli("value", "campaign", "--users", "50", "--days", "5", "--campaign-days", "3", *args)
    assert res.exit_code == 2, res.output
    assert f"error: {option} must be" in _said(res)


@pytest.mark.parametrize(
    ("field_", "value"),
    [("power", 0.0), ("power", 1.0), ("discount", 1.5), ("discount", -0.5),
     ("target_share", 0.0), ("alpha", 1.0), ("segment", "vip")],
)  # fmt: skip
def test_run_campaign_refuses_bad_settings_before_simulating(monkeypatch, field_, value) -> None:
    _no_simulation(monkeypatch)
    cfg = CampaignConfig(users=50, **{field_: value})
    with pytest.raises(ValueError, match=field_):
        run_campaign(cfg)


def test_incentive_and_sample_size_refuse_out_of_range_inputs() -> None:
    from valuerec.simulate.env import Incentive

    treated = np.ones(3, dtype=bool)
    for bad in (1.0, 1.5, -0.5):
        with pytest.raises(ValueError, match="discount"):
            Incentive(treated, discount=bad)
    with pytest.raises(ValueError, match="goodwill"):
        Incentive(treated, goodwill=1.5)
    for power in (0.0, 1.0):
        with pytest.raises(ValueError, match="power"):
            sample_size(1.0, 0.5, power=power)


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ("", "--policies is empty"),
        (" , ", "--policies is empty"),
        ("relevance,bogus", "--policies: unknown 'bogus'"),
    ],
)
def test_cli_policy_evaluate_refuses_bad_policy_lists_up_front(
    monkeypatch, policies, message
) -> None:
    import valuerec.simulate.experiment as experiment

    _no_simulation(monkeypatch)

    def boom(*args, **kwargs):
        raise AssertionError("a seed ran before the policy list was checked")

    monkeypatch.setattr(experiment, "run_seed", boom)
    res = _cli("policy", "evaluate", "--users", "30", "--seeds", "1", "--days", "1",
               "--policies", policies, "--no-ope", "--json")  # fmt: skip
    assert res.exit_code == 2, res.output
    assert message in _said(res)
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    ("option", "value"),
    [("--value-weight", "nan"), ("--value-weight", "-1"), ("--diversity", "inf"),
     ("--conservatism", "-1"), ("--objective", "bogus")],
)  # fmt: skip
def test_cli_policy_evaluate_checks_the_policies_settings_up_front(
    monkeypatch, option, value
) -> None:
    """They were checked (by the policies, in library words) only after the pre-period, and
    NaN passed every check."""
    import valuerec.simulate.experiment as experiment

    _no_simulation(monkeypatch)

    def boom(*args, **kwargs):
        raise AssertionError("a seed ran before the options were checked")

    monkeypatch.setattr(experiment, "run_seed", boom)
    res = _cli("policy", "evaluate", "--users", "30", "--seeds", "1", "--days", "1",
               option, value, "--no-ope", "--json")  # fmt: skip
    assert res.exit_code == 2, res.output
    assert f"{option} must be" in _said(res)


def test_a_tiny_policy_experiment_runs_every_policy(recwarn) -> None:
    """Ten users and 30 items: nobody buys in the last pre-days, so the value-aware policy's
    value model (which refuses a cut-off past its purchases' end) is fitted as of the day
    after the last purchase, with a warning; days without visitors give the revenue-greedy
    policy's purchase model no rows (LightGBM refused an empty matrix). Both crashed."""
    from valuerec.simulate.experiment import ExperimentConfig, run_seed

    cfg = ExperimentConfig(users=10, items=30, seeds=(0,), days=1, ope=False,
                           policies=("relevance", "revenue-greedy", "value-aware"))  # fmt: skip
    result = run_seed(cfg, 0)
    assert set(result.runs) == {"relevance", "revenue-greedy", "value-aware"}
    assert all(r.days == 1 for r in result.runs.values())
    assert any("the value model is fitted as of" in str(w.message) for w in recwarn)


def _strict_json(text: str) -> object:
    """Parse as a strict parser (JavaScript's JSON.parse) does: NaN and Infinity are errors."""
    import json

    def refuse(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_cli_simulate_with_a_pre_period_nobody_visits_names_the_options(tmp_path) -> None:
    """Two users for three organic days browse nothing: the recommender had nothing to fit and
    the command ended in a traceback (ValueError: no interactions to learn from)."""
    res = _cli("simulate", "--out", str(tmp_path / "sim"), "--users", "2", "--items", "10",
               "--pre-days", "3", "--days", "5")  # fmt: skip
    assert res.exit_code == 2, res.output
    said = _said(res)
    assert "the 3 organic day(s) of 2 user(s) gave too little to fit the recommender" in said
    assert "raise --users or --pre-days" in said


def test_cli_policy_evaluate_on_too_few_users_names_the_option(recwarn) -> None:
    """Two users: nobody visits during the logging run, so the purchase model had no rows;
    the error was LightGBM's "Found array with 0 sample(s)", naming no option."""
    res = _cli("policy", "evaluate", "--users", "2", "--seeds", "1", "--days", "1",
               "--policies", "relevance", "--no-ope")  # fmt: skip
    assert res.exit_code == 2, res.output
    said = _said(res)
    assert said.startswith("error: seed 0: the 30-day logging run: no slate was shown")
    assert said.endswith("raise --users")


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--out", "never", "--users", "50", "--items", "20", "--seed", "-1"],
        ["value", "campaign", "--users", "50", "--seed", "-1"],
    ],
)
def test_cli_a_negative_seed_is_a_usage_error_naming_the_option(monkeypatch, args) -> None:
    """numpy's "expected non-negative integer" named no option."""
    _no_simulation(monkeypatch)
    res = _cli(*args)
    assert res.exit_code == 2, res.output
    flat = " ".join(res.output.split())
    assert "'--seed'" in flat and "greater than or equal to 0" in flat


def test_cli_simulate_items_below_the_slate_size_names_the_limit(tmp_path, monkeypatch) -> None:
    """The slate size is no option: "items >= slate_size" named neither the option nor 10."""
    _no_simulation(monkeypatch)
    res = _cli("simulate", "--out", str(tmp_path / "sim"), "--users", "50", "--items", "9")
    assert res.exit_code == 2, res.output
    assert _said(res) == "error: --items must be at least 10 (the slate size), got 9"
    assert not (tmp_path / "sim").exists()
    with pytest.raises(ValueError, match=r"items must be at least 5 \(the slate size\), got 4"):
        World.draw(SimConfig(users=3, items=4, slate_size=5))


def test_cli_campaign_json_without_any_true_uplift_is_strict_json(recwarn) -> None:
    """A 0% discount without goodwill changes nothing: the true uplift is 0 for everyone, its
    correlation with the model's undefined. It was printed as the bare token NaN (which
    JSON.parse refuses), after numpy's divide-by-zero warnings."""
    res = _cli("value", "campaign", "--json", "--users", "200", "--discount", "0",
               "--goodwill", "0", "--days", "10")  # fmt: skip
    assert res.exit_code == 0, res.output
    data = _strict_json(res.stdout)
    assert isinstance(data, dict)
    assert data["true_uplift"] == 0.0 and data["uplift_model_corr"] is None
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_cli_campaign_help_names_the_revenue_window_as_days() -> None:
    said = " ".join(_cli("value", "campaign", "--help").stdout.split())
    assert "90-day" not in said  # --days sets the window; 90 is only its default
    assert "revenue per user over the --days days" in said
