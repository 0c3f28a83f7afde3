"""Behaviour features: hand-computed values on the RFM tests' log."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from test_rfm import CAL_END, EVENTS, frame
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.features.behaviour import DAYS_PER_YEAR, behaviour_features


@pytest.fixture
def feats(store: Store):
    ingest(store, frame(EVENTS), "events")
    return behaviour_features(store, CAL_END)


def _annual(ages: list[int]) -> tuple[float, float]:
    angles = [2 * math.pi * a / DAYS_PER_YEAR for a in ages]
    return sum(map(math.cos, angles)), sum(map(math.sin, angles))


def test_customers_and_windows(feats):
    # c buys only at the cut-off, f only views: neither is a customer yet
    assert feats.index.tolist() == ["a", "b", "d", "e"]
    # a's purchase days are 30, 23 and 16 days before the last calibration day (01-31)
    assert feats.loc["a", ["frequency", "total_spend", "days_since_last"]].tolist() == [2, 75, 16]
    assert feats.loc["a", ["purchase_days_4w", "spend_4w", "purchase_days_13w"]].tolist() == [
        2,
        60,
        3,
    ]
    assert feats.loc["a", "n_views"] == 1


@pytest.mark.parametrize(
    ("user", "ages"), [("a", [30, 23, 16]), ("b", [2]), ("d", [21, 0]), ("e", [26, 25, 24])]
)
def test_annual_moments_are_sums_over_purchase_days(feats, user, ages):
    # one term per purchase *day* (a's two purchases on 01-01 count once), by age in days
    cos, sin = _annual(ages)
    assert feats.loc[user, "annual_cos"] == pytest.approx(cos, abs=1e-12)
    assert feats.loc[user, "annual_sin"] == pytest.approx(sin, abs=1e-12)


def test_repeat_spend_follows_rfm_on_days_without_a_value(feats, store):
    """e's repeat days: 01-06 without a value, 01-07 at $9. Like rfm's monetary_value, the
    mean leaves the day without a value out instead of counting it as $0."""
    from valuerec.features.rfm import rfm_summary

    assert feats.loc["e", "monetary_repeat"] == 9.0
    assert rfm_summary(store, CAL_END).loc["e", "monetary_value"] == 9.0
    assert feats.loc["e", ["total_spend", "first_spend"]].tolist() == [14.0, 5.0]
    assert not feats.isna().any().any()


def test_event_types_are_read_as_stored(feats, store):
    spelled = behaviour_features(store, CAL_END, event_types=(" Purchase",))
    assert spelled.index.tolist() == feats.index.tolist()
    with pytest.raises(ValueError, match="at least one event type"):
        behaviour_features(store, CAL_END, event_types=())


def _z_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    """One customer z with items, categories (first part of "A|x"), quantities and ratings."""
    items = pd.DataFrame({"item_id": ["i1", "i2", "i3"], "category": ["A|x", "A|y", "B"]})
    rows = [
        ("z", "i1", "purchase", "2020-01-01 10:00", 10.0, 2, None),
        ("z", "i2", "purchase", "2020-01-01 12:00", 5.0, 1, None),  # same day: quantity 3
        ("z", "i3", "purchase", "2020-01-11 10:00", 7.0, None, None),
        ("z", "i1", "purchase", "2020-01-31 10:00", 3.0, 4, None),
        ("z", "i2", "rating", "2020-01-20 10:00", None, None, 4.0),
        ("z", "i3", "rating", "2020-01-21 10:00", None, None, 2.0),
        ("z", "i3", "view", "2020-01-22 10:00", None, None, None),
    ]
    cols = ["user_id", "item_id", "event_type", "timestamp", "value", "quantity", "rating"]
    return items, pd.DataFrame(rows, columns=cols)


def test_timing_breadth_quantity_and_ratings_by_hand(store):
    items, events = _z_log()
    ingest(store, items, "items")
    ingest(store, events, "events")
    z = behaviour_features(store, CAL_END).loc["z"]
    # purchase days 01-01, 01-11, 01-31; the last calibration day is 01-31
    assert (z["recency_days"], z["age_days"], z["days_since_last"]) == (30, 30, 0)
    assert z["ipt_mean_days"] == 15.0  # gaps of 10 and 20 days
    assert z["ipt_std_days"] == pytest.approx(math.sqrt(50.0))  # sample std of (10, 20)
    assert (z["first_spend"], z["first_quantity"]) == (15.0, 3.0)
    assert (z["purchase_days_26w"], z["spend_26w"]) == (3, 25.0)
    assert (z["n_items"], z["n_categories"]) == (3, 2)  # categories A and B
    assert (z["n_ratings"], z["rating_mean"], z["n_views"]) == (2, 3.0, 1)


def test_events_after_the_cut_off_change_no_feature(store):
    items, events = _z_log()
    ingest(store, items, "items")
    ingest(store, events, "events")
    before = behaviour_features(store, CAL_END)
    later = pd.DataFrame(
        [
            ("z", "i2", "purchase", "2020-02-01 00:00", 100.0, 9, None),  # at the cut-off
            ("z", "i9", "purchase", "2020-03-01 10:00", 50.0, 1, None),
            ("z", "i1", "rating", "2020-02-02 10:00", None, None, 5.0),
            ("z", "i1", "view", "2020-02-03 10:00", None, None, None),
            ("newcomer", "i1", "purchase", "2020-02-05 10:00", 20.0, 1, None),
        ],
        columns=events.columns,
    )
    ingest(store, later, "events")
    ingest(store, pd.DataFrame({"item_id": ["i9"], "category": ["C"]}), "items")
    pd.testing.assert_frame_equal(behaviour_features(store, CAL_END), before)
