"""Recency-frequency-monetary summaries of purchase histories, the input of BTYD value models.

Buy-Till-You-Die models (:mod:`valuerec.value.btyd`) do not see individual transactions, only
each customer's *frequency* (repeat purchases), *recency* (when the last one happened), age
*T* and average repeat spend. The conventions below are those of Fader, Hardie & Lee's CDNOW
analyses and of the ``lifetimes`` package (``summary_data_from_transaction_data``), so that
published parameter estimates can be reproduced:

* time is counted in whole calendar days (UTC) and expressed in units of ``time_unit_days``
  (weeks by default);
* purchases on the same day are one purchase occasion: a basket split over several orders is
  not several decisions to come back;
* a customer is born at their first purchase day, which is not a *repeat* purchase: it counts
  in neither ``frequency`` nor ``monetary_value``;
* a refund (a purchase event with a negative value) is no purchase occasion: a day holding
  refunds alone is not a day the customer came back to buy (returning one's only purchase
  made a one-time buyer a repeat buyer, worth more than one who kept it), and a customer with
  refunds alone is no customer. A refund on a purchase day nets into that day's spend; one on
  a day of its own nets into the holdout's spend, not into the mean spend per occasion;
* a cut-off inside a day leaves that day's purchase occasion in calibration, and its
  purchases after the cut in the holdout's spend (not as a new occasion);
* the calibration period ends on the last day before ``calibration_end`` (which is exclusive),
  and ``T`` runs from the first purchase day to that day. For CDNOW's 39-week calibration
  (``calibration_end = 1997-10-01``) a customer whose first purchase is on 1997-01-01 has
  ``T = 272 / 7 = 38.86`` weeks, exactly as in the published data.

Everything is computed by DuckDB inside the store; only one row per customer comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import pandas as pd

from valuerec.data.schema import event_type_list
from valuerec.data.store import Store
from valuerec.features.split import TimeLike, to_timestamp

RFM_COLUMNS = ("frequency", "recency", "T", "monetary_value", "monetary_days")
HOLDOUT_COLUMNS = (
    "frequency_holdout", "spend_holdout", "monetary_value_holdout", "duration_holdout",
)  # fmt: skip


def _last_day(end: datetime) -> date:
    """The last calendar day that starts before the exclusive bound ``end``."""
    return (end - timedelta(microseconds=1)).date()


# Parameters shared by both queries: $1 event types, $2 calibration end (exclusive),
# $3 observation start (or NULL).
_CALIBRATION_DAYS = """
purchases AS (
    SELECT user_id, timestamp, value FROM events
    WHERE event_type IN (SELECT unnest($1::VARCHAR[])) AND timestamp < $2::TIMESTAMP
),
cohort AS (
    SELECT user_id FROM purchases GROUP BY user_id
    HAVING bool_or(value IS NULL OR value >= 0) AND ($3::TIMESTAMP IS NULL
        OR min(timestamp) FILTER (WHERE value IS NULL OR value >= 0) >= $3::TIMESTAMP)
),
days AS (
    SELECT user_id, CAST(timestamp AS DATE) AS day, sum(value) AS spend
    FROM purchases SEMI JOIN cohort USING (user_id)
    GROUP BY user_id, day
    HAVING bool_or(value IS NULL OR value >= 0)
)"""

# $4: days per time unit, $5: last calibration day.
_RFM_SQL = f"""
WITH {_CALIBRATION_DAYS},
numbered AS (
    SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY day) AS n FROM days
)
SELECT
    user_id,
    count(*) - 1 AS frequency,
    date_diff('day', min(day), max(day)) / $4::DOUBLE AS recency,
    date_diff('day', min(day), $5::DATE) / $4::DOUBLE AS T,
    coalesce(avg(spend) FILTER (WHERE n > 1), 0.0) AS monetary_value,
    count(spend) FILTER (WHERE n > 1) AS monetary_days
FROM numbered
GROUP BY user_id
ORDER BY user_id
"""

# $4: end of the holdout period (exclusive).
_HOLDOUT_SQL = f"""
WITH {_CALIBRATION_DAYS},
holdout AS (
    SELECT user_id, CAST(timestamp AS DATE) AS day, sum(value ORDER BY timestamp, value) AS spend,
        bool_or(value IS NULL OR value >= 0) AS occasion
    FROM events SEMI JOIN cohort USING (user_id)
    WHERE event_type IN (SELECT unnest($1::VARCHAR[]))
      AND timestamp >= $2::TIMESTAMP AND timestamp < $4::TIMESTAMP
    GROUP BY user_id, day
),
counted AS (  -- new occasions: not a refund alone, nor the calibration's last day again
    SELECT h.*, h.occasion AND d.day IS NULL AS new
    FROM holdout h LEFT JOIN days d USING (user_id, day)
)
SELECT user_id, count(*) FILTER (WHERE new) AS frequency_holdout,
       -- summed in day order: a float sum in the order rows arrive from parallel threads
       -- differed in its last digits between two runs of the same query
       coalesce(sum(spend ORDER BY day), 0.0) AS spend_holdout,
       coalesce(avg(spend ORDER BY day) FILTER (WHERE new), 0.0) AS monetary_value_holdout
FROM counted
GROUP BY user_id
"""


def _params(
    calibration_end: TimeLike,
    observation_start: TimeLike | None,
    time_unit_days: float,
    event_types: Sequence[str],
) -> list[object]:
    if not time_unit_days > 0:
        raise ValueError(f"time_unit_days must be positive, got {time_unit_days!r}")
    types = event_type_list(event_types)
    if not types:
        raise ValueError("event_types must name at least one event type")
    end = to_timestamp(calibration_end, "calibration_end")
    start = (
        None if observation_start is None else to_timestamp(observation_start, "observation_start")
    )
    if start is not None and start >= end:
        raise ValueError(f"observation_start {start} is not before calibration_end {end}")
    return [types, end, start, float(time_unit_days), _last_day(end)]


def rfm_summary(
    store: Store,
    calibration_end: TimeLike,
    *,
    observation_start: TimeLike | None = None,
    time_unit_days: float = 7.0,
    event_types: Sequence[str] = ("purchase",),
) -> pd.DataFrame:
    """One row per customer: ``frequency``, ``recency``, ``T``, ``monetary_value`` and
    ``monetary_days``.

    Only events of ``event_types`` with ``timestamp < calibration_end`` are read, so events
    logged later never change a feature (no leakage from the future into a backtest).

    * ``frequency``: repeat purchase days, i.e. distinct purchase days minus one;
    * ``recency``: time from the first to the last purchase day;
    * ``T``: time from the first purchase day to the last day of the calibration period;
    * ``monetary_value``: mean spend (``value``) per repeat purchase day, the first day
      excluded; 0 when ``frequency`` is 0. Days whose purchases carry no value are left out
      of the mean rather than counted as zero spend;
    * ``monetary_days``: the repeat purchase days that mean is over (``frequency`` less those
      without a value): Gamma-Gamma weighs a customer's own mean by it, and a customer whose
      repeat days carry no value has no evidence about their spend (weighing their 0 by
      ``frequency`` pulled them to almost nothing).

    ``observation_start`` (inclusive), when given, keeps only customers whose first purchase
    is on or after it: BTYD models need to see a customer from their first purchase, and a
    customer already active before the window would look younger than they are.

    Returns a frame indexed by ``user_id`` (sorted), empty when no customer qualifies.
    """
    params = _params(calibration_end, observation_start, time_unit_days, event_types)
    frame = store.query(_RFM_SQL, params)
    frame = frame.astype({"frequency": "int64", "recency": "float64", "T": "float64",
                          "monetary_value": "float64", "monetary_days": "int64"})  # fmt: skip
    return frame.set_index("user_id")[list(RFM_COLUMNS)]


def holdout_summary(
    store: Store,
    calibration_end: TimeLike,
    holdout_end: TimeLike,
    *,
    observation_start: TimeLike | None = None,
    time_unit_days: float = 7.0,
    event_types: Sequence[str] = ("purchase",),
) -> pd.DataFrame:
    """What each calibration customer bought in ``[calibration_end, holdout_end)``.

    The rows are exactly those of :func:`rfm_summary` with the same arguments (0 for
    customers who bought nothing), so predictions made from the calibration summary can be
    compared row by row with what happened next. Columns:

    * ``frequency_holdout``: purchase days in the holdout period (all of them are repeat
      purchases, the customer having been acquired in calibration), same-day purchases merged,
      days of refunds alone not counted;
    * ``spend_holdout``: total spend in the holdout period, net of refunds;
    * ``monetary_value_holdout``: mean spend per holdout purchase day (0 when there is none),
      days whose purchases carry no value left out, as ``rfm_summary``'s ``monetary_value``;
    * ``duration_holdout``: length of the holdout in time units, from the last calibration
      day to the last holdout day (the ``t`` to pass to conditional expectations).

    When ``calibration_end`` is not midnight, a day split by it counts once, in calibration,
    and its spend after the cut is holdout spend (it was counted nowhere before).
    """
    params = _params(calibration_end, observation_start, time_unit_days, event_types)
    end = params[1]
    stop = to_timestamp(holdout_end, "holdout_end")
    if stop <= end:
        raise ValueError(f"holdout_end {stop} is not after calibration_end {end}")
    users = store.query(_RFM_SQL, params).set_index("user_id").index
    counts = store.query(_HOLDOUT_SQL, [*params[:3], stop]).set_index("user_id")
    out = counts.reindex(users, fill_value=0)
    out = out.astype({"frequency_holdout": "int64", "spend_holdout": "float64",
                      "monetary_value_holdout": "float64"})  # fmt: skip
    out["duration_holdout"] = (_last_day(stop) - _last_day(end)).days / float(time_unit_days)
    out.index.name = "user_id"
    return out[list(HOLDOUT_COLUMNS)]
