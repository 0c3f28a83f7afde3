"""The synthetic generator: seeded, shaped like the BTYD story it simulates, ingestable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuerec.data.ingest import ingest
from valuerec.data.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def data():
    return generate(users=4_000, items=300, days=200, holdout_days=60, seed=3)


def test_same_seed_same_log(data):
    again = generate(users=4_000, items=300, days=200, holdout_days=60, seed=3)
    pd.testing.assert_frame_equal(data.events, again.events)
    other = generate(users=4_000, items=300, days=200, holdout_days=60, seed=4)
    assert not data.events["timestamp"].equals(other.events["timestamp"])


def test_events_stay_in_the_calibration_window(data):
    start = pd.Timestamp("2024-01-01")
    assert data.events["timestamp"].min() >= start
    assert data.events["timestamp"].max() < start + pd.Timedelta(days=200)
    assert data.holdout_events["timestamp"].min() >= start + pd.Timedelta(days=200)
    assert set(data.events["event_type"]) == {"view", "cart", "purchase"}


def test_every_purchase_follows_a_cart_of_the_same_item(data):
    ev = data.events
    buys = ev[ev.event_type == "purchase"]
    carts = ev[ev.event_type == "cart"]
    assert len(buys) == len(carts)
    assert (buys["value"] > 0).all() and buys["quantity"].ge(1).all()
    assert carts["value"].isna().all()


def test_truth_matches_the_simulated_holdout(data):
    truth = data.truth.set_index("user_id")
    hold = data.holdout_events[data.holdout_events.event_type == "purchase"]
    spend = hold.groupby("user_id")["value"].sum()
    assert truth["holdout_spend"].sum() == pytest.approx(spend.sum(), rel=1e-6)
    # the analytic expectation agrees with the realised counts on average
    expected = truth["expected_holdout_transactions"].sum()
    assert expected == pytest.approx(truth["holdout_transactions"].sum(), rel=0.08)
    # dead users buy nothing; the expectation is 0 for them
    dead = ~truth["alive_at_cutoff"]
    assert (truth.loc[dead, "holdout_transactions"] == 0).all()
    assert (truth.loc[dead, "expected_holdout_transactions"] == 0).all()


def test_population_parameters_shape_the_log():
    cfg = SynthConfig(users=6_000, items=200, days=300, seed=1)
    truth = generate(cfg).truth
    lam = truth["purchase_rate_per_day"]
    assert lam.mean() == pytest.approx(cfg.r / cfg.alpha, rel=0.06)
    assert truth["dropout_probability"].mean() == pytest.approx(cfg.a / (cfg.a + cfg.b), rel=0.06)


def test_item_popularity_is_skewed(data):
    counts = data.events["item_id"].value_counts().to_numpy()
    top_share = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_share > 0.3  # Zipf: the top 10% of items get far more than 10% of events


def test_generated_tables_ingest_cleanly(data, store, tmp_path):
    paths = data.write(tmp_path / "synth", "parquet")
    assert ingest(store, paths["items"], "items").stored == 300
    assert ingest(store, paths["users"], "users").stored == 4_000
    r = ingest(store, paths["events"])
    # nothing is lost and nothing quarantined; identical rows (if any) are kept as repeats
    assert (r.stored, r.duplicates, r.quarantined) == (len(data.events), 0, 0)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        generate(users=0)
    with pytest.raises(TypeError):
        generate(colour="blue")


def test_event_ids_option():
    ev = generate(users=50, items=20, days=30, seed=0, event_ids=True).events
    assert ev["event_id"].is_unique and np.all(ev["event_id"].str.startswith("e"))


def test_drift_off_is_the_stationary_log(data):
    # every drift option explicitly off (burst shape options are inert without bursts)
    off = generate(
        users=4_000, items=300, days=200, holdout_days=60, seed=3, trend_mean=0.0, trend_sd=0.0,
        seasonality=0.0, season_phase=2.0, bursts_per_year=0.0, burst_days_min=1.0,
        burst_days_max=3.0, burst_multiplier=9.0,
    )  # fmt: skip
    assert not data.config.drifts
    for name in ("events", "holdout_events", "users", "truth"):
        pd.testing.assert_frame_equal(getattr(data, name), getattr(off, name), check_exact=True)
    truth = data.truth
    lam = truth["purchase_rate_per_day"]
    assert (truth["holdout_intensity"] == lam * 60).all()
    assert (truth["purchase_rate_at_cutoff"] == lam).all()
    assert (truth["rate_trend_per_year"] == 0).all() and not truth["in_burst_at_cutoff"].any()
