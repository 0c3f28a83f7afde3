"""What the simulator logs: per-day arrays while it runs, canonical events when asked.

Slates are kept as ``(visitors, k)`` arrays (cheap to append, what off-policy evaluation
reads); :meth:`SimLog.events` turns them into the canonical event table
(:mod:`valuerec.data.schema`) that :func:`valuerec.data.ingest.ingest` accepts: every shown
item is an ``exposure`` (position, propensity, policy and day land in ``properties``), then
``click`` and ``purchase`` events with the price paid as ``value``. The organic pre-period
logs ``view`` and ``purchase`` events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

_SECOND = np.timedelta64(1_000_000, "us")
_DAY_SECONDS = 86_400


@dataclass
class DayLog:
    """One simulated day. Slate days fill the 2-D arrays; organic days the flat ``view_*``."""

    day: int
    users: np.ndarray  # (v,) visiting user indices
    visit_second: np.ndarray  # (v,) second of the day the visit starts
    items: np.ndarray | None = None  # (v, k) shown item indices, position order
    propensity: np.ndarray | None = None  # (v, k) P(item at that position) under the policy
    click: np.ndarray | None = None  # (v, k) bool
    buy: np.ndarray | None = None  # (v, k) bool
    paid: np.ndarray | None = None  # (v, k) money paid (0 without a purchase)
    view_user: np.ndarray | None = None  # organic: row into users per view
    view_item: np.ndarray | None = None
    view_buy: np.ndarray | None = None
    view_paid: np.ndarray | None = None
    features: np.ndarray | None = None  # (v, k, F) the platform's features of shown items

    @property
    def is_slate(self) -> bool:
        return self.items is not None


@dataclass
class SimLog:
    """The days of one run, in order, and what is needed to name users and items."""

    policy: str
    start: np.datetime64
    user_ids: np.ndarray = field(repr=False)
    item_ids: np.ndarray = field(repr=False)
    days: list[DayLog] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.days)

    @classmethod
    def concat(cls, logs: Sequence[SimLog]) -> SimLog:
        """Consecutive runs' logs as one (days are the simulator's own count, so they line up)."""
        if not logs:
            raise ValueError("no logs to join")
        first = logs[0]
        days = [d for log in logs for d in log.days]
        return cls(first.policy, first.start, first.user_ids, first.item_ids, days)

    def slate_days(self) -> list[DayLog]:
        return [d for d in self.days if d.is_slate]

    def events(self) -> pd.DataFrame:
        """The log in the canonical event schema, in time order."""
        parts = [
            self._slate_events(d) if d.is_slate else self._organic_events(d) for d in self.days
        ]
        parts = [p for p in parts if len(p)]
        if not parts:
            return pd.DataFrame(
                columns=["user_id", "item_id", "event_type", "timestamp", "value", "quantity"]
            )
        return pd.concat(parts, ignore_index=True)

    def _stamp(self, day: int, seconds: np.ndarray) -> np.ndarray:
        base = self.start + np.timedelta64(day, "D").astype("timedelta64[us]")
        return base + (np.round(seconds).astype(np.int64) * _SECOND)

    def _slate_events(self, d: DayLog) -> pd.DataFrame:
        assert d.items is not None and d.click is not None and d.buy is not None
        v, k = d.items.shape
        user = np.repeat(d.users, k)
        pos = np.tile(np.arange(1, k + 1), v)
        sec = np.repeat(d.visit_second, k).astype(float)
        item = d.items.ravel()
        click = d.click.ravel()
        buy = d.buy.ravel()
        paid = d.paid.ravel() if d.paid is not None else np.zeros(len(item))
        prop = d.propensity.ravel() if d.propensity is not None else np.ones(len(item))
        exp = pd.DataFrame(
            {
                "user_id": self.user_ids[user],
                "item_id": self.item_ids[item],
                "event_type": "exposure",
                "timestamp": self._stamp(d.day, sec + pos * 0.1),
                "value": np.nan,
                "quantity": np.nan,
                "position": pos,
                "propensity": prop,
                "policy": self.policy,
                "day": d.day,
            }
        )
        clk = pd.DataFrame(
            {
                "user_id": self.user_ids[user[click]],
                "item_id": self.item_ids[item[click]],
                "event_type": "click",
                "timestamp": self._stamp(d.day, sec[click] + 5 + pos[click] * 10),
                "value": np.nan,
                "quantity": np.nan,
                "position": pos[click],
                "day": d.day,
            }
        )
        pur = pd.DataFrame(
            {
                "user_id": self.user_ids[user[buy]],
                "item_id": self.item_ids[item[buy]],
                "event_type": "purchase",
                "timestamp": self._stamp(d.day, sec[buy] + 300 + pos[buy] * 10),
                "value": np.round(paid[buy], 2),
                "quantity": 1.0,
                "position": pos[buy],
                "day": d.day,
            }
        )
        return pd.concat([exp, clk, pur], ignore_index=True).sort_values(
            "timestamp", kind="stable", ignore_index=True
        )

    def _organic_events(self, d: DayLog) -> pd.DataFrame:
        assert d.view_user is not None and d.view_item is not None and d.view_buy is not None
        user = d.users[d.view_user]
        # a visit's views 30 s apart in their order (view_user is sorted by visit), and all on
        # the visit's own day: the purchase after the last view too
        rank = np.arange(len(user)) - np.searchsorted(d.view_user, d.view_user)
        sec = np.minimum(d.visit_second[d.view_user] + 30.0 * rank, _DAY_SECONDS - 21)
        buy = d.view_buy
        paid = d.view_paid if d.view_paid is not None else np.zeros(len(user))
        views = pd.DataFrame(
            {
                "user_id": self.user_ids[user],
                "item_id": self.item_ids[d.view_item],
                "event_type": "view",
                "timestamp": self._stamp(d.day, sec),
                "value": np.nan,
                "quantity": np.nan,
                "day": d.day,
            }
        )
        pur = pd.DataFrame(
            {
                "user_id": self.user_ids[user[buy]],
                "item_id": self.item_ids[d.view_item[buy]],
                "event_type": "purchase",
                "timestamp": self._stamp(d.day, sec[buy] + 20),
                "value": np.round(paid[buy], 2),
                "quantity": 1.0,
                "day": d.day,
            }
        )
        return pd.concat([views, pur], ignore_index=True).sort_values(
            "timestamp", kind="stable", ignore_index=True
        )
