"""Customer segments from past behaviour (RFM) and predicted value and churn.

Marketing acts on groups, not on 100,000 individual predictions, and a group name has to say
what to do: keep champions happy, win back valuable customers who are slipping away, let the
lost go. The labels are therefore simple, documented rules over columns a person can check,
not clusters that change meaning with every refit. Rules are evaluated in this order and the
first that matches wins, so every customer gets exactly one label:

1. ``champions``: in the top 20 % of predicted LTV and ``p_alive >= 0.6``;
2. ``loyal``: ``frequency >= 2`` (three or more purchase days) and ``p_alive >= 0.5``;
3. ``promising new``: ``frequency == 0`` (one purchase day), first purchase at most 90 days
   ago (``age_days <= 90``) and ``p_alive >= 0.3``;
4. ``at-risk high value``: in the top 30 % of historic spend (``total_spend``) but
   ``p_alive < 0.4``: the win-back list, placed before the two churn labels so that valuable
   customers are not buried among the hibernating and the lost;
5. ``hibernating``: ``0.1 <= p_alive < 0.4``;
6. ``lost``: ``p_alive < 0.1``;
7. ``needs attention``: everyone else (e.g. a two-time buyer with ``p_alive`` 0.45).

"Top x %" thresholds are quantiles of the population passed in (so a segment means the same
share of customers whatever the currency or the horizon): a customer is in the top x % of a
column when their value is at least its ``1 - x`` quantile (linear interpolation) *and*
positive, because a zero LTV or spend is never "top" even when most customers share it. Ties
at the threshold all get in.

``p_alive`` is whatever the model calls it: the probability of being alive for BTYD models,
the probability of buying again within the horizon for supervised ones.
"""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pandas as pd

from valuerec.features.split import TimeLike, to_timestamp

__all__ = [
    "SEGMENTS",
    "SEGMENT_COLUMNS",
    "SUMMARY_COLUMNS",
    "relabel",
    "segment_summary",
    "segment_users",
    "target_list",
]

#: labels in rule order (precedence)
SEGMENTS = (
    "champions",
    "loyal",
    "promising new",
    "at-risk high value",
    "hibernating",
    "lost",
    "needs attention",
)
SEGMENT_COLUMNS = (
    "user_id", "segment", "ltv", "p_alive", "pred_spend", "recency_days", "frequency",
    "days_since_last", "last_purchase", "total_spend",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "segment", "users", "share_users", "predicted_value", "share_value",
    "median_recency_days", "median_frequency",
)  # fmt: skip
TARGET_COLUMNS = (
    "user_id", "ltv", "p_alive", "last_purchase", "days_since_last", "frequency", "total_spend",
)  # fmt: skip

# thresholds of the rules above
CHAMPION_LTV_SHARE = 0.20
CHAMPION_P_ALIVE = 0.6
LOYAL_FREQUENCY = 2
LOYAL_P_ALIVE = 0.5
NEW_MAX_AGE_DAYS = 90
NEW_P_ALIVE = 0.3
AT_RISK_SPEND_SHARE = 0.30
AT_RISK_P_ALIVE = 0.4
LOST_P_ALIVE = 0.1

_PRED_NEEDED = ("user_id", "ltv", "p_alive", "pred_spend")
_FEATURES_NEEDED = ("frequency", "recency_days", "days_since_last", "age_days", "total_spend")


def slug(name: str) -> str:
    """``At-Risk high_value`` and ``at-risk high value`` name the same segment."""
    return re.sub(r"[\s_-]+", "-", name.strip().lower())


def segment_name(name: str, names: tuple[str, ...] = SEGMENTS) -> str | None:
    """The segment of ``names`` that ``name`` spells (spaces, hyphens, underscores and case
    aside: the API, the CLI and the dashboard take either spelling), or None."""
    wanted = slug(name)
    return next((s for s in names if slug(s) == wanted), None)


def _top(values: np.ndarray, share: float) -> np.ndarray:
    """Members of the top ``share`` of ``values``: at least the quantile, and positive."""
    if values.size == 0:
        return np.zeros(0, dtype=bool)
    threshold = float(np.quantile(values, 1.0 - share))
    return (values >= threshold) & (values > 0)


def _labels(
    ltv: np.ndarray, p: np.ndarray, freq: np.ndarray, age: np.ndarray, spend: np.ndarray
) -> np.ndarray:
    """The rules of the module docstring, in order, over one population's arrays."""
    conditions = [
        _top(ltv, CHAMPION_LTV_SHARE) & (p >= CHAMPION_P_ALIVE),
        (freq >= LOYAL_FREQUENCY) & (p >= LOYAL_P_ALIVE),
        (freq == 0) & (age <= NEW_MAX_AGE_DAYS) & (p >= NEW_P_ALIVE),
        _top(spend, AT_RISK_SPEND_SHARE) & (p < AT_RISK_P_ALIVE),
        (p >= LOST_P_ALIVE) & (p < AT_RISK_P_ALIVE),
        p < LOST_P_ALIVE,
    ]
    return np.select(conditions, list(SEGMENTS[:-1]), default=SEGMENTS[-1])


def relabel(seg: pd.DataFrame) -> pd.DataFrame:
    """``seg`` (:func:`segment_users`' rows plus ``age_days``) with every label computed again
    for the customers it holds now.

    The "top x %" rules are quantiles of the population: when customers leave it (a deleted
    user), others cross the thresholds, and a server that only dropped the row disagreed with
    a restarted one.
    """
    labels = _labels(
        *(seg[c].to_numpy(dtype=float) for c in ("ltv", "p_alive", "frequency", "age_days")),
        seg["total_spend"].to_numpy(dtype=float),
    )
    return seg.assign(segment=pd.Categorical(labels, categories=SEGMENTS))


def segment_users(
    pred: pd.DataFrame, features: pd.DataFrame, *, as_of: TimeLike | None = None
) -> pd.DataFrame:
    """One segment per customer in ``pred``, with the columns the rules read.

    ``pred`` holds a value model's predictions (``PRED_COLUMNS``); ``features`` the behaviour
    features (:func:`valuerec.features.behaviour.behaviour_features`, index ``user_id``) for
    the same cut-off. ``as_of`` is that cut-off (exclusive), used to turn ``days_since_last``
    into a ``last_purchase`` date; without it ``last_purchase`` is missing (NaT).

    Returns :data:`SEGMENT_COLUMNS` in the order of ``pred``: ``recency_days`` is the BTYD
    recency (days from first to last purchase), ``days_since_last`` the days since the last
    purchase, ``total_spend`` the historic spend the at-risk rule reads.
    """
    missing = [c for c in _PRED_NEEDED if c not in pred.columns]
    if missing:
        raise ValueError(f"pred lacks column(s) {', '.join(missing)}")
    missing = [c for c in _FEATURES_NEEDED if c not in features.columns]
    if missing:
        raise ValueError(f"features lack column(s) {', '.join(missing)}")
    dup = int(pred["user_id"].duplicated().sum())
    if dup:
        raise ValueError(f"pred has {dup} duplicated user_id(s)")
    users = pd.Index(pred["user_id"])
    unknown = users.difference(features.index)
    if len(unknown):
        raise ValueError(
            f"{len(unknown)} predicted users have no features (e.g. {list(unknown[:3])})"
        )
    f = features.loc[users]
    ltv = pred["ltv"].to_numpy(dtype=float)
    p = pred["p_alive"].to_numpy(dtype=float)
    freq = f["frequency"].to_numpy(dtype=float)
    spend = f["total_spend"].to_numpy(dtype=float)
    if not (np.isfinite(ltv).all() and np.isfinite(p).all()):
        raise ValueError("pred has NaN or infinite ltv / p_alive")
    segment = _labels(ltv, p, freq, f["age_days"].to_numpy(dtype=float), spend)

    days_since = f["days_since_last"].to_numpy(dtype=float)
    if as_of is not None:
        end: datetime = to_timestamp(as_of, "as_of")
        last_day = (pd.Timestamp(end) - pd.Timedelta(microseconds=1)).normalize()
        last_purchase = pd.Series(last_day - pd.to_timedelta(days_since, unit="D"))
    else:
        last_purchase = pd.Series(pd.NaT, index=range(len(users)), dtype="datetime64[ns]")
    return pd.DataFrame(
        {
            "user_id": users.to_numpy(),
            "segment": pd.Categorical(segment, categories=SEGMENTS),
            "ltv": ltv,
            "p_alive": p,
            "pred_spend": pred["pred_spend"].to_numpy(dtype=float),
            "recency_days": f["recency_days"].to_numpy(dtype=float),
            "frequency": freq,
            "days_since_last": days_since,
            "last_purchase": last_purchase.to_numpy(),
            "total_spend": spend,
        }
    )[list(SEGMENT_COLUMNS)]


def segment_summary(seg: pd.DataFrame) -> pd.DataFrame:
    """Size, predicted value and typical behaviour per segment, every segment in rule order.

    Empty segments are kept (0 users, NaN medians) so that a report always has the same rows
    and "no champions" is visible rather than silently missing. ``predicted_value`` is the
    summed LTV; ``share_value`` its share of the total (NaN if the total is 0).
    ``median_recency_days`` is recency in the marketing sense: the median number of days since
    the last purchase.
    """
    labels = pd.Categorical(seg["segment"], categories=SEGMENTS)
    grouped = seg.assign(segment=labels).groupby("segment", observed=False)
    users = grouped.size().reindex(list(SEGMENTS), fill_value=0)
    value = grouped["ltv"].sum().reindex(list(SEGMENTS), fill_value=0.0)
    n, total = int(users.sum()), float(value.sum())
    return pd.DataFrame(
        {
            "segment": list(SEGMENTS),
            "users": users.to_numpy(dtype=int),
            "share_users": users.to_numpy(dtype=float) / n if n else np.nan,
            "predicted_value": value.to_numpy(dtype=float),
            "share_value": value.to_numpy(dtype=float) / total if total else np.nan,
            "median_recency_days": grouped["days_since_last"].median().reindex(list(SEGMENTS))
            .to_numpy(dtype=float),
            "median_frequency": grouped["frequency"].median().reindex(list(SEGMENTS))
            .to_numpy(dtype=float),
        }
    )[list(SUMMARY_COLUMNS)]  # fmt: skip


def target_list(
    seg: pd.DataFrame, segment: str = "at-risk high value", top: int = 100
) -> pd.DataFrame:
    """The ``top`` customers of one segment by LTV (highest first; ties by user_id).

    The export a campaign tool takes: who to contact first, with the numbers that justify it.
    """
    if segment not in SEGMENTS:
        raise ValueError(f"unknown segment {segment!r}: choose from {', '.join(SEGMENTS)}")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    rows = seg[seg["segment"] == segment]
    rows = rows.sort_values(["ltv", "user_id"], ascending=[False, True], kind="stable")
    return rows.head(top)[list(TARGET_COLUMNS)].reset_index(drop=True)
