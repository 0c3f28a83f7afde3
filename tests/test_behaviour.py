"""Behaviour features: hand-computed values on the RFM tests' log."""

from __future__ import annotations

import math

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
