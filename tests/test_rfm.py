"""RFM summaries: exact values on a hand-computed log, the CDNOW conventions, no leakage."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
import pytest

from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.features.behaviour import behaviour_features
from valuerec.features.rfm import holdout_summary, rfm_summary
from valuerec.features.split import SplitError, TemporalSplit, future_events, log_end

network = pytest.mark.network

CAL_END = "2020-02-01"  # exclusive: the last calibration day is 2020-01-31

# Hand-computed log. Same-day purchases are one purchase day; T runs to 2020-01-31.
EVENTS = [
    # a: days 01-01 ($15), 01-08 ($20), 01-15 ($40) -> x=2, t_x=14 d, T=30 d, m=(20+40)/2
    ("a", "purchase", "2020-01-01 10:00", 10.0),
    ("a", "purchase", "2020-01-01 15:00", 5.0),
    ("a", "view", "2020-01-03 12:00", None),
    ("a", "purchase", "2020-01-08 08:00", 20.0),
    ("a", "purchase", "2020-01-15 09:00", 30.0),
    ("a", "purchase", "2020-01-15 18:00", 10.0),
    # b: one purchase -> x=0, t_x=0, T=2 d, m=0; the later view is not a purchase
    ("b", "purchase", "2020-01-29 12:00", 7.0),
    ("b", "view", "2020-01-30 12:00", None),
    # c: only buys at calibration_end itself, which is excluded -> not a customer yet
    ("c", "purchase", "2020-02-01 00:00", 99.0),
    # d: last purchase one minute before the end -> x=1, t_x=T=21 d, m=12.5
    ("d", "purchase", "2020-01-10 07:00", 3.0),
    ("d", "purchase", "2020-01-31 23:59", 12.5),
    # e: a repeat day without a value is counted as a purchase but not in the mean spend
    ("e", "purchase", "2020-01-05 00:00", 5.0),
    ("e", "purchase", "2020-01-06 00:00", None),
    ("e", "purchase", "2020-01-07 00:00", 9.0),
    # f: only views -> never a customer
    ("f", "view", "2020-01-02 00:00", None),
]

EXPECTED = pd.DataFrame(
    {
        "frequency": [2, 0, 1, 2],
        "recency": [14 / 7, 0.0, 21 / 7, 2 / 7],
        "T": [30 / 7, 2 / 7, 21 / 7, 26 / 7],
        "monetary_value": [30.0, 0.0, 12.5, 9.0],
        "monetary_days": [2, 0, 1, 1],  # e's 01-06 has no value
    },
    index=pd.Index(["a", "b", "d", "e"], name="user_id"),
)


def frame(rows: list[tuple[str, str, str, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "event_type", "timestamp", "value"])


@pytest.fixture
def log(store: Store) -> Store:
    assert ingest(store, frame(EVENTS), "events").stored == len(EVENTS)
    return store


def test_hand_computed_summary(log):
    pd.testing.assert_frame_equal(rfm_summary(log, CAL_END), EXPECTED)


def test_time_unit_days(log):
    daily = rfm_summary(log, CAL_END, time_unit_days=1.0)
    assert daily.loc["a", ["recency", "T"]].tolist() == [14.0, 30.0]
    assert daily["frequency"].tolist() == EXPECTED["frequency"].tolist()


def test_same_day_purchases_merge(store):
    rows = [("u", "purchase", f"2021-03-0{d} {h:02d}:00", 1.0) for d in (1, 2) for h in (1, 9, 23)]
    ingest(store, frame(rows), "events")
    row = rfm_summary(store, "2021-03-05").loc["u"]
    assert row["frequency"] == 1  # six orders on two days: one repeat purchase day
    assert row["monetary_value"] == 3.0  # the three orders of day two, summed
    assert row["recency"] == pytest.approx(1 / 7)


def test_calibration_end_types_agree(log):
    as_text = rfm_summary(log, CAL_END)
    for end in (
        date(2020, 2, 1),
        datetime(2020, 2, 1),
        pd.Timestamp("2020-02-01"),
        datetime(2020, 2, 1, 1, 0, tzinfo=timezone(pd.Timedelta(hours=1))),  # 00:00 UTC
    ):
        pd.testing.assert_frame_equal(rfm_summary(log, end), as_text)


def test_events_after_calibration_end_change_nothing(log):
    before = rfm_summary(log, CAL_END)
    later = [
        ("a", "purchase", "2020-02-01 00:00", 1000.0),
        ("b", "purchase", "2020-02-02 00:00", 5.0),
        ("new", "purchase", "2020-03-01 00:00", 5.0),
        ("d", "purchase", "2021-01-01 00:00", 5.0),
    ]
    ingest(log, frame(later), "events")
    pd.testing.assert_frame_equal(rfm_summary(log, CAL_END), before)


def test_observation_start_keeps_customers_first_seen_in_the_window(log):
    summary = rfm_summary(log, CAL_END, observation_start="2020-01-06")
    assert summary.index.tolist() == ["b", "d"]  # a and e were already customers before
    pd.testing.assert_frame_equal(summary, EXPECTED.loc[["b", "d"]])


def test_other_event_types(log):
    views = rfm_summary(log, CAL_END, event_types=("VIEW",))
    assert views.index.tolist() == ["a", "b", "f"]
    assert views["frequency"].tolist() == [0, 0, 0]
    assert views["monetary_value"].tolist() == [0.0, 0.0, 0.0]


def test_empty_store(store):
    summary = rfm_summary(store, CAL_END)
    assert summary.empty
    assert summary.columns.tolist() == [
        "frequency", "recency", "T", "monetary_value", "monetary_days"
    ]  # fmt: skip
    assert holdout_summary(store, CAL_END, "2020-03-01").empty


def test_bad_arguments(log):
    with pytest.raises(ValueError, match="time_unit_days"):
        rfm_summary(log, CAL_END, time_unit_days=0)
    with pytest.raises(ValueError, match="calibration_end"):
        rfm_summary(log, "not a date")
    with pytest.raises(ValueError, match="observation_start"):
        rfm_summary(log, CAL_END, observation_start="2020-03-01")
    with pytest.raises(ValueError, match="holdout_end"):
        holdout_summary(log, CAL_END, CAL_END)


def test_holdout_summary(log):
    later = [
        ("a", "purchase", "2020-02-01 00:00", 4.0),  # first holdout instant is included
        ("a", "purchase", "2020-02-10 08:00", 1.0),
        ("a", "purchase", "2020-02-10 20:00", 2.0),  # same day: merged
        ("a", "view", "2020-02-11 20:00", None),
        ("d", "purchase", "2020-02-20 10:00", None),  # a purchase day without a value
        ("d", "purchase", "2020-02-29 23:00", 6.0),
        ("d", "purchase", "2020-03-01 00:00", 50.0),  # holdout_end is exclusive
        ("new", "purchase", "2020-02-05 00:00", 5.0),  # not a calibration customer
    ]
    ingest(log, frame(later), "events")
    hold = holdout_summary(log, CAL_END, "2020-03-01")
    assert hold.index.tolist() == EXPECTED.index.tolist()
    assert hold["frequency_holdout"].tolist() == [2, 0, 2, 0]
    assert hold["spend_holdout"].tolist() == [7.0, 0.0, 6.0, 0.0]
    # d's day without a value is left out of the mean, as in rfm_summary's monetary_value
    assert hold["monetary_value_holdout"].tolist() == [3.5, 0.0, 6.0, 0.0]
    assert (hold["duration_holdout"] == 29 / 7).all()  # 2020-01-31 .. 2020-02-29


def test_log_end_and_holdout_purchases(log):
    # the last event is c's purchase at 2020-02-01 00:00
    assert log_end(log) == datetime(2020, 2, 2)  # midnight after the last event's day
    assert TemporalSplit.last_days(log, 10) == TemporalSplit("2020-01-23", 10)
    # purchase events (not days) in [2020-01-15, 2020-02-01): a's two of 01-15, b's of 01-29
    # and d's of 01-31 (b's view does not count; c's purchase at 2020-02-01 00:00 is at the
    # exclusive end)
    assert TemporalSplit("2020-01-15", 17).holdout_purchases(log) == 4
    assert TemporalSplit("2020-02-02", 30).holdout_purchases(log) == 0


def test_exposures_written_back_today_do_not_move_the_end_of_the_log(log):
    """A server with write_back stamps exposures with today's date; "now" stays the end of
    what users did, or every refit after serving would find no purchase in its holdout."""
    shown = pd.DataFrame({"user_id": ["a", "b"], "item_id": "i1", "event_type": "exposure",
                          "timestamp": ["2026-11-25 10:00", "2026-11-25 11:00"]})  # fmt: skip
    ingest(log, shown, "events")
    assert log_end(log) == datetime(2020, 2, 2)
    assert TemporalSplit.last_days(log, 10) == TemporalSplit("2020-01-23", 10)


def test_log_end_of_an_empty_store(store):
    with pytest.raises(SplitError, match="no events"):
        log_end(store)
    with pytest.raises(SplitError, match="no events"):
        TemporalSplit.last_days(store, 30)


def test_future_dated_events_are_named_with_their_count_and_latest_day(log):
    # the log's events run from 2020-01-01 to 2020-02-01 00:00
    assert future_events(log) is None  # against the wall clock
    assert future_events(log, now=datetime(2020, 1, 31)) is None  # a day of slack
    said = future_events(log, now=datetime(2020, 1, 29))
    assert said is not None and said.startswith(
        "3 events are dated after today (latest 2020-02-01)"
    )
    assert said.endswith("fix or delete them, or give the cut-off explicitly "
                         "(--calibration-end / --as-of)")  # fmt: skip
    # the report has no cut-off option to point to: it says only what to fix
    bare = future_events(log, now=datetime(2020, 1, 29), advice="")
    assert bare is not None and bare.endswith("moves past them; fix or delete them")


def test_holdout_day_split_by_calibration_end_counts_once(log):
    # 12:00 splits a's 2020-01-15 purchases (09:00 and 18:00): the day is in calibration
    cal = rfm_summary(log, "2020-01-15 12:00")
    hold = holdout_summary(log, "2020-01-15 12:00", "2020-02-01")
    assert cal.loc["a", "frequency"] == 2
    assert cal.loc["a", "T"] == pytest.approx(14 / 7)  # the last calibration day is 01-15
    assert hold.loc["a", "frequency_holdout"] == 0
    assert hold.loc["d", "frequency_holdout"] == 1
    # the 18:00 purchase ($10) is holdout spend: it was counted nowhere (the day went whole)
    assert hold.loc["a", "spend_holdout"] == 10.0


def test_a_refund_is_no_purchase_occasion(store):
    """A refund (negative value) on a day of its own counted as a repeat purchase: returning
    one's only purchase made a one-time buyer a repeat buyer, with a later last purchase and a
    holdout 'transaction'. It nets into spend and is no occasion."""
    rows = [
        ("kept", "purchase", "2020-01-05", 50.0),
        ("returned", "purchase", "2020-01-05", 50.0),
        ("returned", "purchase", "2020-01-09", -50.0),  # the refund, a day of its own
        ("twice", "purchase", "2020-01-05", 10.0),
        ("twice", "purchase", "2020-01-09", 30.0),
        ("twice", "purchase", "2020-01-09", -5.0),  # a refund on a purchase day nets into it
        ("only-refunds", "purchase", "2020-01-07", -20.0),
        # holdout: returned buys and returns again on other days, twice returns on its own
        ("returned", "purchase", "2020-02-10", 30.0),
        ("returned", "purchase", "2020-02-12", -30.0),
        ("twice", "purchase", "2020-02-11", -25.0),
    ]
    ingest(store, frame(rows), "events")
    cal = rfm_summary(store, CAL_END)
    assert list(cal.index) == ["kept", "returned", "twice"]  # refunds alone: no customer
    assert cal.loc["returned"].to_dict() == cal.loc["kept"].to_dict()
    assert cal.loc["twice", "frequency"] == 1 and cal.loc["twice", "monetary_value"] == 25.0
    hold = holdout_summary(store, CAL_END, "2020-03-01")
    assert hold.loc["returned", ["frequency_holdout", "spend_holdout"]].tolist() == [1, 0.0]
    assert hold.loc["twice", ["frequency_holdout", "spend_holdout"]].tolist() == [0, -25.0]
    assert hold.loc["kept", ["frequency_holdout", "spend_holdout"]].tolist() == [0, 0.0]
    feats = behaviour_features(store, CAL_END)
    assert list(feats.index) == ["kept", "returned", "twice"]
    returned, kept = feats.loc["returned"], feats.loc["kept"]
    assert (returned["frequency"], returned["days_since_last"]) == (0, kept["days_since_last"])
    assert (returned["orders"], returned["total_spend"], kept["total_spend"]) == (1, 0.0, 50.0)
    assert feats.loc["twice", ["frequency", "total_spend", "orders"]].tolist() == [1, 35.0, 2]


# -- the real CDNOW sample -------------------------------------------------------------------


@network
def test_cdnow_sample_summary(cdnow):
    summary = rfm_summary(cdnow, "1997-10-01", observation_start="1997-01-01")
    assert len(summary) == 2_357
    # Fader, Hardie & Lee's 39-week calibration: 2,457 repeat purchase days, T from
    # 272 / 7 = 38.86 weeks (first purchase 1997-01-01) down to 27 weeks (1997-03-25).
    assert summary["frequency"].sum() == 2_457
    assert summary["T"].max() == pytest.approx(272 / 7)
    assert summary["T"].min() == pytest.approx(27.0)
    assert (summary["recency"] <= summary["T"]).all()
    assert (summary.loc[summary["frequency"] == 0, ["recency", "monetary_value"]] == 0).all().all()
    repeat = summary[summary["frequency"] > 0]
    assert len(repeat) == 946
    assert (repeat["monetary_value"] > 0).all()
    # customer 00004 (ID 1 of the sample): 1997-01-01, 01-18 ($29.73), 08-02 ($14.96)
    assert summary.loc["00004", "frequency"] == 2
    assert summary.loc["00004", "recency"] == pytest.approx(213 / 7)
    assert summary.loc["00004", "monetary_value"] == pytest.approx((29.73 + 14.96) / 2)


@network
def test_cdnow_sample_holdout(cdnow):
    hold = holdout_summary(cdnow, "1997-10-01", "1998-07-01")
    assert len(hold) == 2_357
    assert (hold["duration_holdout"] == 39.0).all()  # weeks 40..78
    assert hold["frequency_holdout"].sum() == 1_882  # 1,959 orders on 1,882 customer-days
    assert (hold["frequency_holdout"] > 0).sum() == 684  # customers who bought again
