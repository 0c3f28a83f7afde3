"""Customer segments: each rule, their precedence, the summary and the target list."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuerec.value.segments import (
    SEGMENT_COLUMNS,
    SEGMENTS,
    SUMMARY_COLUMNS,
    segment_summary,
    segment_users,
    target_list,
)

# Ten customers, built so that each rule (and each tie-break between rules) is hit once.
# LTV top 20 % (0.8 quantile = 58): u0, u1. Historic spend top 30 % (0.7 quantile = 265):
# u3, u4, u5.
CASES = [
    # user, ltv, p_alive, frequency, age_days, total_spend, expected, why
    ("u0", 100.0, 0.60, 5, 300, 250.0, "champions", "top LTV, p_alive at the 0.6 bound"),
    ("u1", 90.0, 0.55, 3, 300, 200.0, "loyal", "top LTV but p_alive < 0.6"),
    ("u2", 50.0, 0.70, 2, 300, 150.0, "loyal", "frequency at the bound 2"),
    ("u3", 40.0, 0.35, 0, 90, 500.0, "promising new", "beats at-risk and hibernating"),
    ("u4", 30.0, 0.30, 4, 300, 400.0, "at-risk high value", "beats hibernating"),
    ("u5", 20.0, 0.05, 1, 300, 300.0, "at-risk high value", "beats lost"),
    ("u6", 10.0, 0.20, 1, 300, 10.0, "hibernating", ""),
    ("u7", 5.0, 0.10, 0, 200, 5.0, "hibernating", "p_alive at the 0.1 bound"),
    ("u8", 1.0, 0.09, 0, 200, 4.0, "lost", ""),
    ("u9", 2.0, 0.45, 1, 300, 20.0, "needs attention", "no rule matches"),
]


def frames(cases=CASES) -> tuple[pd.DataFrame, pd.DataFrame]:
    users = [c[0] for c in cases]
    ltv = np.array([c[1] for c in cases])
    pred = pd.DataFrame(
        {
            "user_id": users,
            "pred_transactions": ltv / 30.0,
            "pred_spend": ltv * 1.01,
            "p_alive": [c[2] for c in cases],
            "ltv": ltv,
        }
    )
    freq = np.array([c[3] for c in cases], dtype=float)
    features = pd.DataFrame(
        {
            "frequency": freq,
            "recency_days": freq * 20.0,
            "days_since_last": np.arange(len(cases), dtype=float) * 10.0,
            "age_days": [float(c[4]) for c in cases],
            "total_spend": [c[5] for c in cases],
            "n_views": 3.0,  # extra feature columns are ignored
        },
        index=pd.Index(users, name="user_id"),
    )
    return pred, features


def test_each_rule_and_its_precedence() -> None:
    pred, features = frames()
    seg = segment_users(pred, features)
    assert list(seg.columns) == list(SEGMENT_COLUMNS)
    got = dict(zip(seg["user_id"], seg["segment"].astype(str), strict=True))
    expected = {c[0]: c[6] for c in CASES}
    assert got == expected, {u: (got[u], expected[u]) for u in got if got[u] != expected[u]}


def test_every_user_gets_exactly_one_label_in_pred_order() -> None:
    pred, features = frames()
    pred = pred.iloc[::-1].reset_index(drop=True)
    features = features.sample(frac=1.0, random_state=0)  # order of features does not matter
    seg = segment_users(pred, features)
    assert list(seg["user_id"]) == list(pred["user_id"])
    assert seg["segment"].notna().all() and set(seg["segment"]) <= set(SEGMENTS)
    np.testing.assert_array_equal(seg["ltv"], pred["ltv"])
    np.testing.assert_array_equal(seg["frequency"], features.loc[pred["user_id"], "frequency"])


def test_top_shares_never_include_zero_values() -> None:
    """Most customers share a zero LTV: the 80 % quantile is 0, yet zero is not 'top'."""
    cases = [(f"z{i}", 0.0, 0.9, 0, 300, 0.0, "", "") for i in range(9)]
    cases.append(("rich", 10.0, 0.9, 0, 300, 100.0, "", ""))
    seg = segment_users(*frames(cases))
    labels = dict(zip(seg["user_id"], seg["segment"].astype(str), strict=True))
    assert labels["rich"] == "champions"
    assert {labels[f"z{i}"] for i in range(9)} == {"needs attention"}


def test_last_purchase_date_from_as_of() -> None:
    pred, features = frames()
    seg = segment_users(pred, features, as_of="2024-03-01")  # last day: 2024-02-29
    assert seg.loc[0, "last_purchase"] == pd.Timestamp("2024-02-29")
    assert seg.loc[3, "last_purchase"] == pd.Timestamp("2024-01-30")  # 30 days before
    assert segment_users(pred, features)["last_purchase"].isna().all()


def test_summary_has_every_segment_and_shares_sum_to_one() -> None:
    seg = segment_users(*frames())
    summary = segment_summary(seg)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert list(summary["segment"]) == list(SEGMENTS)
    by = summary.set_index("segment")
    assert by["users"].to_dict() == {
        "champions": 1, "loyal": 2, "promising new": 1, "at-risk high value": 2,
        "hibernating": 2, "lost": 1, "needs attention": 1,
    }  # fmt: skip
    assert by["share_users"].sum() == pytest.approx(1.0)
    assert by["share_value"].sum() == pytest.approx(1.0)
    assert by.loc["loyal", "predicted_value"] == pytest.approx(140.0)
    assert by.loc["loyal", "share_value"] == pytest.approx(140.0 / 348.0)
    assert by.loc["at-risk high value", "median_recency_days"] == pytest.approx(45.0)
    assert by.loc["loyal", "median_frequency"] == pytest.approx(2.5)


def test_summary_keeps_empty_segments() -> None:
    seg = segment_users(*frames(CASES[6:9]))  # nobody is likely enough to buy: no champions
    by = segment_summary(seg).set_index("segment")
    assert by.loc["champions", "users"] == 0 and by.loc["champions", "share_users"] == 0.0
    assert np.isnan(by.loc["champions", "median_frequency"])
    assert by["share_users"].sum() == pytest.approx(1.0)


def test_target_list_is_sorted_by_ltv() -> None:
    seg = segment_users(*frames(), as_of="2024-03-01")
    at_risk = target_list(seg)
    assert list(at_risk["user_id"]) == ["u4", "u5"]
    assert list(at_risk.columns[:4]) == ["user_id", "ltv", "p_alive", "last_purchase"]
    assert list(target_list(seg, "at-risk high value", top=1)["user_id"]) == ["u4"]
    assert list(target_list(seg, "hibernating")["user_id"]) == ["u6", "u7"]
    assert target_list(seg, "champions", top=5)["ltv"].tolist() == [100.0]
    # ties on LTV are broken by user_id, so exports are reproducible
    tied = seg.assign(ltv=1.0)
    assert list(target_list(tied, "at-risk high value")["user_id"]) == ["u4", "u5"]


def test_bad_inputs_are_clear_errors() -> None:
    pred, features = frames()
    with pytest.raises(ValueError, match="unknown segment 'vip'"):
        target_list(segment_users(pred, features), "vip")
    with pytest.raises(ValueError, match="top must be at least 1"):
        target_list(segment_users(pred, features), top=0)
    with pytest.raises(ValueError, match="pred lacks column"):
        segment_users(pred.drop(columns="p_alive"), features)
    with pytest.raises(ValueError, match="features lack column"):
        segment_users(pred, features.drop(columns="total_spend"))
    with pytest.raises(ValueError, match="1 predicted users have no features"):
        segment_users(pred, features.drop(index="u3"))
    with pytest.raises(ValueError, match="duplicated"):
        segment_users(pd.concat([pred, pred.iloc[:1]]), features)


def test_a_segment_is_named_by_either_spelling() -> None:
    """The CLI took only "at-risk high value", the campaign only "at-risk-high-value"; the
    API took both."""
    from valuerec.simulate.campaign import SEGMENTS as CAMPAIGN_SEGMENTS
    from valuerec.value.segments import segment_name

    for text in ("at-risk high value", "At-Risk-High-Value", " at_risk_high value "):
        assert segment_name(text) == "at-risk high value"
        assert segment_name(text, CAMPAIGN_SEGMENTS) == "at-risk-high-value"
    assert segment_name("vip") is None and segment_name("all", CAMPAIGN_SEGMENTS) == "all"
