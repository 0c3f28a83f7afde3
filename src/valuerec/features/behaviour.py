"""Per-customer behaviour features for supervised value models, computed in DuckDB SQL.

One row per customer with a purchase before ``calibration_end``; only events before it are
read, so appending later events changes nothing. Times are in days. The RFM core follows the
conventions of :mod:`valuerec.features.rfm` (same-day purchases are one occasion), extended
with what gradient boosting and the sequence model can use: first-purchase size, inter-purchase
time, recent activity windows, the annual phase of purchase days (for seasonal habits),
breadth of items and categories, browsing and rating behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from valuerec.data.schema import event_type_list
from valuerec.data.store import Store
from valuerec.features.split import TimeLike, to_timestamp

WINDOWS_WEEKS = (4, 13, 26)
DAYS_PER_YEAR = 365.25
#: the annual Fourier moments of the purchase days (see :func:`_annual_sql`)
ANNUAL_FEATURES = ("annual_cos", "annual_sin")

# $1 purchase event types, $2 calibration end (exclusive), $3 last calibration day
_SQL = """
WITH ev AS (SELECT * FROM events WHERE timestamp < $2::TIMESTAMP),
purchases AS (SELECT * FROM ev WHERE event_type IN (SELECT unnest($1::VARCHAR[]))),
days AS (  -- occasion: not refunds (negative values) alone, as in valuerec.features.rfm
    SELECT user_id, CAST(timestamp AS DATE) AS day, sum(value) AS spend,
        coalesce(sum(quantity), 0) AS qty,
        count(*) FILTER (WHERE value IS NULL OR value >= 0) AS orders,
        bool_or(value IS NULL OR value >= 0) AS occasion
    FROM purchases GROUP BY ALL),
numbered AS (
    SELECT *, row_number() OVER w AS k, date_diff('day', lag(day) OVER w, day) AS gap
    FROM days WINDOW w AS (PARTITION BY user_id, occasion ORDER BY day)),
rfm AS (
    SELECT user_id,
        count(*) FILTER (WHERE occasion) - 1 AS frequency,
        date_diff('day', min(day) FILTER (WHERE occasion), max(day) FILTER (WHERE occasion))
            AS recency_days,
        date_diff('day', min(day) FILTER (WHERE occasion), $3::DATE) AS age_days,
        date_diff('day', max(day) FILTER (WHERE occasion), $3::DATE) AS days_since_last,
        -- a day without any value is left out of the mean (rfm's convention), not a 0
        coalesce(avg(spend) FILTER (WHERE occasion AND k > 1), 0) AS monetary_repeat,
        coalesce(sum(spend), 0) AS total_spend,  -- net of every refund
        coalesce(max(spend) FILTER (WHERE occasion), 0) AS max_day_spend,
        any_value(spend) FILTER (WHERE occasion AND k = 1) AS first_spend,
        any_value(qty) FILTER (WHERE occasion AND k = 1) AS first_quantity,
        sum(qty) AS total_quantity,
        sum(orders) AS orders,
        coalesce(avg(gap) FILTER (WHERE occasion), 0) AS ipt_mean_days,
        coalesce(stddev_samp(gap) FILTER (WHERE occasion), 0) AS ipt_std_days,
        {windows},
        {annual}
    FROM numbered GROUP BY user_id HAVING bool_or(occasion)),
breadth AS (
    SELECT p.user_id, count(DISTINCT p.item_id) AS n_items,
        count(DISTINCT split_part(i.category, '|', 1)) AS n_categories
    FROM purchases p LEFT JOIN items i USING (item_id) GROUP BY p.user_id),
activity AS (
    SELECT user_id, count(*) AS n_events,
        count(*) FILTER (WHERE event_type = 'view') AS n_views,
        count(*) FILTER (WHERE event_type = 'cart') AS n_carts,
        count(*) FILTER (WHERE event_type = 'click') AS n_clicks,
        count(rating) AS n_ratings, coalesce(avg(rating), 0) AS rating_mean,
        date_diff('day', CAST(max(timestamp) AS DATE), $3::DATE) AS days_since_last_event
    FROM ev WHERE user_id IN (SELECT user_id FROM rfm) GROUP BY user_id)
SELECT * FROM rfm LEFT JOIN breadth USING (user_id) LEFT JOIN activity USING (user_id)
ORDER BY user_id
"""


def _window_sql() -> str:
    parts = []
    for w in WINDOWS_WEEKS:
        cond = f"day > $3::DATE - INTERVAL {7 * w} DAY"
        parts.append(f"count(*) FILTER (WHERE occasion AND {cond}) AS purchase_days_{w}w")
        parts.append(f"coalesce(sum(spend) FILTER (WHERE {cond}), 0) AS spend_{w}w")
    return ",\n        ".join(parts)


def _annual_sql() -> str:
    """The first annual Fourier moment of the purchase days, by their age at the cut-off.

    Where customers keep personal seasons (a peak at the same time each year), whether the
    window after the cut-off holds a peak shows in when last year's purchases fell; counts and
    recency cannot say so. For a purchase rate ``1 + A sin(2 pi t / year + phase)``, the
    likelihood's score at ``A = 0`` is linear in ``sum(cos)`` and ``sum(sin)`` of the purchase
    days' annual angles, so these two carry the evidence about the phase; the position of any
    window ahead is a rotation of them, which a model learns. On the ``annual-habits``
    synthetic log they lift LightGBM by +0.015 normalized Gini; on CDNOW (nine months of
    history) they change its Gini by under 0.001.
    """
    angle = f"2 * pi() * date_diff('day', day, $3::DATE) / {DAYS_PER_YEAR}"
    cos, sin = ANNUAL_FEATURES
    return (
        f"coalesce(sum(cos({angle})) FILTER (WHERE occasion), 0) AS {cos},\n"
        f"        coalesce(sum(sin({angle})) FILTER (WHERE occasion), 0) AS {sin}"
    )


def behaviour_features(
    store: Store,
    calibration_end: TimeLike,
    *,
    event_types: Sequence[str] = ("purchase",),
) -> pd.DataFrame:
    """Features per customer (index ``user_id``), all numeric, no missing values.

    Customers are those with at least one ``event_types`` event before ``calibration_end``
    that is not a refund (a negative value): a day of refunds alone is no purchase occasion
    (:mod:`valuerec.features.rfm`'s rules); refunds net into ``total_spend`` and the spend
    windows.
    """
    end = to_timestamp(calibration_end, "calibration_end")
    last_day = (pd.Timestamp(end) - pd.Timedelta(microseconds=1)).date()
    types = event_type_list(event_types)  # as stored (and as rfm_summary reads them)
    if not types:
        raise ValueError("event_types must name at least one event type")
    frame = store.query(
        _SQL.format(windows=_window_sql(), annual=_annual_sql()), [types, end, last_day]
    )
    frame = frame.set_index("user_id")
    return frame.astype(np.float64).fillna(0.0)
