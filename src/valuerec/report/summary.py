"""The data summary: what is in a store, so that every figure after it can be put in context.

A model figure means little without knowing how many customers, items and months stand behind
it, and how many rows never made it into the store (the quarantine). Everything here is one
query over the store; nothing is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from valuerec.data.store import Store

__all__ = ["DataSummary", "summarise"]

#: the most months the summary fills in (empty ones as zeros): fifty years
MAX_MONTHS = 600


@dataclass
class DataSummary:
    """``stats``: :meth:`Store.stats`; ``by_month``: months x event types, event counts, with
    every month between the first and the last (0 where a month has no events)."""

    stats: dict[str, Any]
    by_month: pd.DataFrame
    purchasers: int
    interactions_with_items: int

    @property
    def has_purchases(self) -> bool:
        return self.stats["events_by_type"].get("purchase", 0) > 0

    @property
    def has_items(self) -> bool:
        return self.interactions_with_items > 0


def summarise(store: Store) -> DataSummary:
    """Counts, date range, events by type and by month, quarantined rows."""
    stats = store.stats()
    monthly = store.query(
        "SELECT date_trunc('month', timestamp) AS month, event_type, count(*) AS n "
        "FROM events GROUP BY 1, 2 ORDER BY 1, 2"
    )
    if monthly.empty:
        by_month = pd.DataFrame()
    else:
        by_month = monthly.pivot_table(
            index="month", columns="event_type", values="n", aggfunc="sum", fill_value=0
        ).astype(int)
        order = list(stats["events_by_type"])  # most frequent type first, as `stats` prints
        by_month = by_month[[c for c in order if c in by_month.columns]]
        by_month.index = pd.to_datetime(by_month.index)
        # every month from first to last, a month without events as a row of zeros: a gap in
        # the log (an outage, a lost file) is what the table and the chart must show. Not
        # past MAX_MONTHS: one event dated 9999-12-31 (a placeholder) made 96,036 rows and a
        # 72 MB report; such a log keeps its months with events (the summary warns of
        # future-dated events)
        every = pd.date_range(by_month.index.min(), by_month.index.max(), freq="MS")
        if len(every) <= MAX_MONTHS:
            by_month = by_month.reindex(every, fill_value=0)
        by_month = by_month.rename_axis("month")
    (purchasers,) = store.con.execute(
        "SELECT count(DISTINCT user_id) FROM events WHERE event_type = 'purchase'"
    ).fetchone()
    (with_items,) = store.con.execute(
        "SELECT count(*) FROM events WHERE item_id IS NOT NULL"
    ).fetchone()
    return DataSummary(stats, by_month, int(purchasers), int(with_items))
