"""Per-user event sequences for sequence models, built once in DuckDB and shared.

Each user's last ``max_len`` events before a cut-off become a right-aligned (most recent
last) set of padded arrays: item, category and event-type ids for embeddings, and numeric
token features (log value, log quantity, rating, log gap since the previous event, log age
before the cut-off). The value Transformer reads them to predict future spend; the
recommendation issue's next-item model reads the same arrays, so both learn from one
representation of behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from valuerec.data.schema import event_type_list
from valuerec.data.store import Store
from valuerec.features.split import TimeLike, to_timestamp

PAD, UNKNOWN = 0, 1  # reserved ids in every vocabulary
NUMERIC = ("log_value", "log_quantity", "rating", "log_gap_days", "log_age_days")

# $1 cut-off (exclusive), $2 max_len, $3 event types or NULL
_SQL = """
WITH ev AS (
    SELECT user_id, item_id, event_type, timestamp, value, quantity, rating FROM events
    WHERE timestamp < $1::TIMESTAMP
      AND ($3::VARCHAR[] IS NULL OR event_type IN (SELECT unnest($3::VARCHAR[])))),
tokens AS ({tokens}),
numbered AS (
    SELECT *, date_diff('second', lag(ts) OVER w, ts) / 86400.0 AS gap_days,
        row_number() OVER (PARTITION BY user_id ORDER BY {newest_first}) AS rn
    FROM tokens WINDOW w AS (PARTITION BY user_id ORDER BY {oldest_first}))
SELECT n.user_id, n.rn, n.item_id, split_part(i.category, '|', 1) AS category, n.event_type,
    n.value, n.quantity, n.rating, n.gap_days,
    date_diff('second', n.ts, $1::TIMESTAMP) / 86400.0 AS age_days
FROM numbered n LEFT JOIN items i USING (item_id)
WHERE n.rn <= $2
"""
# One chronological order for the gaps (lag) and for keeping the newest max_len (row_number),
# exact reverses of each other, down to tokens of one instant (a day's tokens in daily mode),
# and total: rows that tie on every key are identical, so any order of them is the same.
_ORDER_KEYS = ("ts", "event_type", "item_id", "value", "quantity", "rating")
_OLDEST_FIRST = ", ".join(f"{k} ASC NULLS LAST" for k in _ORDER_KEYS)
_NEWEST_FIRST = ", ".join(f"{k} DESC NULLS FIRST" for k in _ORDER_KEYS)
_EVENT_TOKENS = (
    "SELECT user_id, item_id, event_type, timestamp AS ts, value, quantity, rating FROM ev"
)
# One token per user, day and event type: a basket split over orders is one decision. Its
# item is the day's most valuable one; ties (a day of views, all without value) go to the
# latest, then the greatest id, so the token does not depend on DuckDB's parallel scan.
_DAILY_TOKENS = """SELECT user_id,
    arg_max(item_id, (coalesce(value, 0), timestamp, item_id)) AS item_id, event_type,
    CAST(CAST(timestamp AS DATE) AS TIMESTAMP) AS ts, sum(value) AS value,
    sum(quantity) AS quantity, avg(rating) AS rating
    FROM ev GROUP BY user_id, CAST(timestamp AS DATE), event_type"""


@dataclass
class Sequences:
    """Padded, right-aligned token arrays for a set of users (row i is ``users[i]``)."""

    users: pd.Index
    item: np.ndarray  # int64 (n, L)
    category: np.ndarray  # int64 (n, L)
    event_type: np.ndarray  # int64 (n, L)
    numeric: np.ndarray  # float32 (n, L, len(NUMERIC))
    mask: np.ndarray  # bool (n, L): True where there is a token
    vocab: dict[str, dict[str, int]] = field(repr=False)

    @property
    def max_len(self) -> int:
        return self.item.shape[1]

    def take(self, rows: np.ndarray) -> Sequences:
        return Sequences(self.users[rows], self.item[rows], self.category[rows],
                         self.event_type[rows], self.numeric[rows], self.mask[rows],
                         self.vocab)  # fmt: skip

    @classmethod
    def concat(cls, parts: Sequence[Sequences]) -> Sequences:
        """Rows of ``parts`` one after the other; they must share one vocabulary and length."""
        if any(p.vocab != parts[0].vocab for p in parts):
            raise ValueError("sequences built with different vocabularies cannot be stacked")
        if len({p.max_len for p in parts}) > 1:
            raise ValueError("sequences of different max_len cannot be stacked")
        arrays = {
            f: np.concatenate([getattr(p, f) for p in parts])
            for f in ("item", "category", "event_type", "numeric", "mask")
        }
        users = parts[0].users.append([p.users for p in parts[1:]])
        return cls(users, **arrays, vocab=parts[0].vocab)


def _vocab(values: pd.Series) -> dict[str, int]:
    """Ids for the distinct non-null values, starting after the reserved PAD and UNKNOWN."""
    uniq = sorted(values.dropna().astype(str).unique())
    return {v: k + 2 for k, v in enumerate(uniq)}


def _encode(values: pd.Series, vocab: dict[str, int]) -> np.ndarray:
    mapped = values.astype(object).map(vocab)
    return mapped.fillna(UNKNOWN).astype(np.int64).to_numpy()


def build_sequences(
    store: Store,
    before: TimeLike,
    *,
    max_len: int = 50,
    users: Sequence[str] | pd.Index | None = None,
    event_types: Sequence[str] | None = None,
    daily: bool = False,
    vocab: dict[str, dict[str, int]] | None = None,
) -> Sequences:
    """The last ``max_len`` tokens of each user before ``before`` (exclusive).

    ``users``: rows in this order (users without events get an all-padding row); default:
    every user with an event. ``daily``: merge a user's events of one type on one day into a
    token (spend and quantity summed), the purchase-occasion view BTYD models use.
    ``vocab``: reuse the id maps of a training set so ids mean the same at prediction time;
    unseen values map to ``UNKNOWN``.
    """
    if max_len < 1:
        raise ValueError("max_len must be at least 1")
    cut = to_timestamp(before, "before")
    types = None if event_types is None else event_type_list(event_types)
    sql = _SQL.format(
        tokens=_DAILY_TOKENS if daily else _EVENT_TOKENS,
        oldest_first=_OLDEST_FIRST,
        newest_first=_NEWEST_FIRST,
    )
    rows = store.query(sql, [cut, int(max_len), types])
    index = pd.Index(sorted(rows["user_id"].unique()) if users is None else list(users))
    if vocab is None:
        vocab = {
            "item": _vocab(rows["item_id"]),
            "category": _vocab(rows["category"]),
            "event_type": _vocab(rows["event_type"]),
        }
    n, L = len(index), int(max_len)
    item = np.zeros((n, L), np.int64)
    category = np.zeros((n, L), np.int64)
    etype = np.zeros((n, L), np.int64)
    numeric = np.zeros((n, L, len(NUMERIC)), np.float32)
    mask = np.zeros((n, L), bool)
    pos = pd.Series(np.arange(n), index=index)
    r = pos.reindex(rows["user_id"]).to_numpy()
    keep = ~np.isnan(r)
    rows = rows[keep]
    r = r[keep].astype(np.int64)
    c = L - rows["rn"].to_numpy(np.int64)  # most recent token in the last column
    item[r, c] = _encode(rows["item_id"], vocab["item"])
    category[r, c] = _encode(rows["category"], vocab["category"])
    etype[r, c] = _encode(rows["event_type"], vocab["event_type"])
    feats = np.column_stack(
        [
            np.log1p(np.clip(rows["value"].fillna(0).to_numpy(float), 0, None)),
            np.log1p(np.clip(rows["quantity"].fillna(0).to_numpy(float), 0, None)),
            rows["rating"].fillna(0).to_numpy(float) / 5.0,
            np.log1p(np.clip(rows["gap_days"].fillna(0).to_numpy(float), 0, None)),
            np.log1p(np.clip(rows["age_days"].to_numpy(float), 0, None)),
        ]
    )
    numeric[r, c] = feats.astype(np.float32)
    mask[r, c] = True
    return Sequences(index, item, category, etype, numeric, mask, vocab)
