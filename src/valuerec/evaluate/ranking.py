"""Evaluation of recommendation models: the one ranking evaluator every model goes through.

Recommenders are only comparable when they are split, masked, ranked and scored the same way;
a model that gets its own little evaluation loop gets its own little definition of NDCG. This
module therefore owns the whole protocol:

* :class:`Interactions` -- user and item vocabularies, a binary users x items CSR matrix and
  the per-interaction frame the splits cut.
* Splits that keep the *same* vocabularies in every part, so a score matrix fitted on train
  indexes valid and test directly: :func:`random_split` (RecBole's per-user random 80/10/10,
  "RS"), :func:`leave_one_out` (RecBole's "LS" by time) and :func:`temporal_split` (global
  time cuts, the protocol closest to production).
* :func:`evaluate_scores` -- full ranking over the whole catalogue (no sampled negatives, which
  are known to reorder models), with the user's already-seen items masked, top-k accuracy
  metrics with RecBole's definitions and beyond-accuracy metrics (coverage, novelty,
  popularity, exposure Gini, intra-list diversity) from the same top-k lists.

Metric definitions follow RecBole 1.x (``recbole/evaluator/metrics.py``) so figures can be set
beside published RecBole tables:

* ``recall@k`` = hits in the top k / number of target items;
* ``precision@k`` = hits / k (k, not the list length, even if fewer than k could be ranked);
* ``hit@k`` = 1 if any target is in the top k;
* ``mrr@k`` = 1 / rank of the first hit within the top k, 0 without one;
* ``ndcg@k`` = binary-relevance DCG with ``1 / log2(rank + 1)`` over the ideal DCG of
  ``min(|targets|, k)`` hits at the top;
* ``map@k`` = sum of precision@j over the hit positions j <= k, divided by
  ``min(|targets|, k)`` (RecBole's normalisation: a user with more targets than slots is not
  punished for what could not fit);
* ``coverage@k`` (RecBole's ItemCoverage), ``avg_popularity@k`` (AveragePopularity: train
  interactions of each recommended item) and ``exposure_gini@k`` (GiniIndex over the
  recommendation counts of *all* catalogue items, never-recommended items counting 0).

Every metric is averaged over the evaluated users: users with no target item in the stage are
skipped, as RecBole does. Ties between scores are broken towards the lower item index, so a
model with many ties (popularity) gets the same figure on every run and machine -- a
partition-based top-k would otherwise decide ties by the internals of the selection algorithm.

Everything is numpy / scipy and vectorised over batches of users; nothing here fits anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import sparse

from valuerec.data.ingest import parse_timestamp_texts
from valuerec.data.schema import as_frame, event_type_list
from valuerec.data.store import Store
from valuerec.features.split import TimeLike, to_timestamp

__all__ = [
    "ACCURACY_METRICS",
    "ALL_EVENT_TYPES",
    "PROTOCOLS",
    "Interactions",
    "RankingReport",
    "ScoreFn",
    "Split",
    "evaluate_scores",
    "exposure_gini",
    "has_targets",
    "interest_types",
    "leave_one_out",
    "protocol_split",
    "random_split",
    "ratio_counts",
    "temporal_split",
    "to_datetimes",
    "top_k",
]

ScoreFn = Callable[[np.ndarray], ArrayLike]
"""A model's scorer: user indices (1-D int array) -> scores of shape (len(users), n_items)."""

ACCURACY_METRICS = ("recall", "precision", "hit", "mrr", "ndcg", "map")
BEYOND_METRICS = ("coverage", "novelty", "avg_popularity", "exposure_gini")
FRAME_COLUMNS = ("user", "item", "timestamp")
STAGES = ("valid", "test")

#: ``Interactions.from_store(store, event_types=ALL_EVENT_TYPES)`` reads every event type,
#: exposures and dislikes included (the default reads the interest types only)
ALL_EVENT_TYPES = "*"

# Users are scored in batches of at most this many score cells (users x items), which bounds
# the memory of the few batch-sized arrays (scores, masks, targets) whatever the catalogue.
_BATCH_CELLS = 1 << 23


# ------------------------------------------------------------------------- interactions


def interest_types(store: Store) -> list[str]:
    """The store's event types that the default serving roles call interest: what
    recommenders learn from and are scored on unless told otherwise (``recommend fit`` and
    ``evaluate``, ``train``, the report, :meth:`Interactions.from_store`): every type but
    exposures, which the server logs as what a user was shown, and dislikes."""
    # the roles are defined once, with the server's settings; imported here, where they are
    # used, so that the evaluator does not load the serving package at import
    from valuerec.serve.config import EventRoles

    stored = store.query("SELECT DISTINCT event_type FROM events ORDER BY 1")["event_type"]
    return EventRoles().positive_types(stored)


def _binary_csr(
    user: np.ndarray, item: np.ndarray, n_users: int, n_items: int
) -> sparse.csr_matrix:
    """Users x items CSR with a 1 wherever a pair occurs; repeats collapse to a single 1.

    Implicit feedback only says *that* a user met an item, and every split and metric below
    counts distinct items, so repeats must not weigh more. float32 is what models multiply.
    """
    data = np.ones(user.size, dtype=np.float32)
    mat = sparse.csr_matrix((data, (user, item)), shape=(n_users, n_items), dtype=np.float32)
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def _times(values: pd.Series) -> np.ndarray:
    """Timestamps as numbers (float) when they are numbers, else as ``datetime64[ns]``.

    Numbers are epoch seconds or, with ``time_col=None``, the row order; anything else (text,
    dates, datetimes) is a datetime, converted like everywhere else in valuerec.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float)
    return _utc_naive(values).to_numpy(dtype="datetime64[ns]")


def _in_nanosecond_range(series: pd.Series, parsed: pd.Series) -> pd.Series:
    """``parsed`` (naive times read from ``series``) as ``datetime64[ns]``, the unit the
    splits and models compute in; a time it cannot hold is an error naming it and its row.

    The store and ingest keep years 1 to 9999 (microseconds), nanoseconds only 1677-09-21 to
    2262-04-11: a cast wrapped 9999-12-31 (a common "no end" sentinel) round into 1816 and
    1500 into 2084, silently, and NaT would have dropped the rows as undated.
    """
    far = (parsed < pd.Timestamp.min) | (parsed > pd.Timestamp.max)
    if far.any():
        value = series[far].iloc[0]
        shown = repr(value) if isinstance(value, str) else str(value)  # text as given
        raise ValueError(
            f"cannot read the timestamp column as times: {shown} (row {series[far].index[0]}) is "
            f"outside the times a model's frame holds ({pd.Timestamp.min:%Y-%m-%d} to "
            f"{pd.Timestamp.max:%Y-%m-%d}, nanoseconds); {int(far.sum())} such value(s): "
            "fix or drop such events before handing them to a model"
        )
    return parsed.astype("datetime64[ns]")


def _utc_naive(values: pd.Series) -> pd.Series:
    """Datetimes or text as naive UTC ``datetime64[ns]``, the store's convention: offsets
    (mixed ones too, a local log across a daylight-saving change) are converted, naive times
    kept. ``pd.to_datetime`` alone refused mixed offsets with its own error, naming no column.
    A time outside nanoseconds' range (1677 to 2262) is an error naming it."""
    series = pd.Series(values)
    present = series.dropna()
    if len(present) and present.map(lambda v: isinstance(v, str)).all():
        # text: by ingest's own rule, so a frame handed to a model reads as its file would
        # be stored. pandas guessed one format from the first value ("...10:00:00Z" then
        # "...10:00:00.250Z" failed, as did a date beside date-times) and read other text
        # than ingest does (zone names, "2024-01-01t10:00")
        parsed = parse_timestamp_texts(series)
        bad = parsed.isna() & series.notna()
        if bad.any():
            raise ValueError(
                f"cannot read the timestamp column as times: {series[bad].iloc[0]!r} is no "
                "time ingest reads (ISO 8601, with an optional offset or zone name; YYYYMMDD; "
                f"epoch seconds); {int(bad.sum())} such value(s)"
            )
        return _in_nanosecond_range(series, parsed)
    try:
        parsed = pd.to_datetime(series, utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"cannot read the timestamp column as times: {exc}") from None
    return _in_nanosecond_range(series, parsed.dt.tz_localize(None))


def to_datetimes(values: pd.Series) -> pd.Series:
    """Event times as datetimes, read as :func:`_times` reads them: numbers are epoch seconds
    (``pd.to_datetime`` alone would take them for nanoseconds and put every event in the first
    second of 1970), anything else is converted as everywhere else in valuerec."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        series = pd.Series(values)
        try:
            parsed = pd.to_datetime(series, unit="s")
        except (ValueError, OverflowError) as exc:  # beyond even microseconds' range
            raise ValueError(f"cannot read the timestamp column as epoch seconds: {exc}") from None
        # as for text: 1.6e12 (milliseconds given as seconds) is year 52671, which a cast
        # to nanoseconds wrapped into 1815, silently
        return _in_nanosecond_range(series, parsed)
    return _utc_naive(values)


def has_targets(split: Split, stage: str) -> bool:
    """Whether any user has an item at ``stage`` they did not have before it: what
    :func:`evaluate_scores` ranks (with ``exclude_seen``) and raises without. A temporal
    window holding only repeat interactions has none, so early stopping has nothing to watch.
    """
    full, seen = _stage_matrices(split, stage)
    return _new_items(full, seen).nnz > 0


def _stage_matrices(split: Split, stage: str) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """(the stage's interactions, what each user had before it as 0/1): train, and for test
    the validation items too."""
    full = (split.test if stage == "test" else split.valid).matrix
    seen = split.train.matrix
    if stage == "test":
        seen = seen + split.valid.matrix
    return full, (seen > 0).astype(np.float32).tocsr()


def _new_items(full: sparse.csr_matrix, seen: sparse.csr_matrix) -> sparse.csr_matrix:
    """The stage's interactions with items their user had not had before it."""
    targets = (full - full.multiply(seen)).tocsr()
    targets.eliminate_zeros()
    return targets


def _time_key(values: pd.Series) -> np.ndarray:
    """Timestamps as a sortable number: int64 nanoseconds for datetimes, float otherwise."""
    times = _times(values)
    return times.astype(np.int64) if times.dtype.kind == "M" else times


@dataclass(frozen=True, eq=False)
class Interactions:
    """Who interacted with what: vocabularies, a binary CSR matrix and the raw interactions.

    ``matrix[u, i]`` is 1 when user ``user_ids[u]`` interacted with item ``item_ids[i]`` at
    least once. ``frame`` keeps every interaction (``user``, ``item`` as integer indices into
    the vocabularies, and ``timestamp``; ``value`` too when the events carry one) because
    splits by time, popularity counts and value-aware models need the individual events, not
    just the distinct pairs.

    The parts of a :class:`Split` share the vocabularies of the whole, so a model trained on
    ``split.train`` scores exactly the rows and columns :func:`evaluate_scores` ranks.
    """

    user_ids: pd.Index
    item_ids: pd.Index
    matrix: sparse.csr_matrix
    frame: pd.DataFrame

    def __post_init__(self) -> None:
        shape = (len(self.user_ids), len(self.item_ids))
        if self.matrix.shape != shape:
            raise ValueError(f"matrix shape {self.matrix.shape} != vocabularies {shape}")
        missing = [c for c in FRAME_COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"frame lacks column(s) {', '.join(missing)}")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def nnz(self) -> int:
        """Number of distinct (user, item) pairs."""
        return int(self.matrix.nnz)

    def __len__(self) -> int:
        """Number of interactions (rows of ``frame``), repeats included."""
        return len(self.frame)

    def __repr__(self) -> str:
        return (
            f"Interactions(users={self.n_users}, items={self.n_items}, pairs={self.nnz}, "
            f"interactions={len(self)})"
        )

    def item_counts(self) -> np.ndarray:
        """Interactions per item, repeats included: RecBole's item popularity."""
        return np.bincount(self.frame["item"].to_numpy(), minlength=self.n_items)

    def item_users(self) -> np.ndarray:
        """Distinct users per item (column counts of the binary matrix)."""
        return np.bincount(self.matrix.indices, minlength=self.n_items)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        user_col: str = "user_id",
        item_col: str = "item_id",
        time_col: str | None = "timestamp",
        *,
        user_ids: pd.Index | None = None,
        item_ids: pd.Index | None = None,
    ) -> Interactions:
        """Interactions from a frame of events, one row per interaction.

        Rows without a user or an item are dropped: an event with no item (a purchase total,
        a visit) is not an interaction with anything. Vocabularies are the sorted distinct ids
        unless ``user_ids`` / ``item_ids`` are given (to build parts over a shared
        vocabulary); then an id outside them is an error rather than a silently lost row.
        ``time_col=None`` uses the row order as time (for data without timestamps); otherwise
        a missing timestamp is an error, since a split by time could not place the row.
        """
        frame = as_frame(frame)  # an Arrow table too
        for col in (user_col, item_col) + ((time_col,) if time_col else ()):
            if col not in frame.columns:
                raise ValueError(f"frame lacks column {col!r}")
        keep = frame[user_col].notna() & frame[item_col].notna()
        df = frame.loc[keep]
        if time_col is None:
            ts: pd.Series = pd.Series(np.arange(len(df)), index=df.index)
        else:
            ts = df[time_col]
            if ts.isna().any():
                raise ValueError(f"column {time_col!r} has {int(ts.isna().sum())} missing value(s)")
        users, user_vocab = _codes(df[user_col], user_ids, "user")
        items, item_vocab = _codes(df[item_col], item_ids, "item")
        out = pd.DataFrame({"user": users, "item": items, "timestamp": ts.to_numpy()}, index=None)
        value = pd.to_numeric(df["value"], errors="coerce") if "value" in df else None
        if value is not None and value.notna().any():  # value-aware models (sasrec-mt) read it
            out["value"] = value.to_numpy(dtype=float)
        mat = _binary_csr(users, items, len(user_vocab), len(item_vocab))
        return cls(user_vocab, item_vocab, mat, out)

    @classmethod
    def from_store(
        cls, store: Store, event_types: Sequence[str] | str | None = None
    ) -> Interactions:
        """Interactions from the store's events of ``event_types``.

        By default (None) the interest types (:func:`interest_types`), as ``valuerec
        recommend fit`` and ``evaluate`` read them: a dislike or a logged exposure is not
        interest, and a model that learned from them served a user who disliked an item as
        its fan. :data:`ALL_EVENT_TYPES` (``"*"``) reads every type; one type or a list of
        types reads those only.

        Events are ordered by user, time and item id first, so that equal timestamps (MovieLens
        users rate many films in the same second) are broken the same way on every run:
        :func:`leave_one_out` depends on that order (rows equal in all three, then by value).

        Only the columns an interaction has are read, in that order, by the store's engine:
        every column then a pandas sort took 8.4 s and +2.5 GB on 5.6M events.
        """
        where, params = ["item_id IS NOT NULL"], []
        if event_types is None:
            event_types = interest_types(store)
        if not (isinstance(event_types, str) and event_types.strip() == ALL_EVENT_TYPES):
            where.append("event_type IN (SELECT unnest(?::VARCHAR[]))")
            params.append(event_type_list(event_types))
        events = store.query(
            f"SELECT user_id, item_id, timestamp, value FROM events WHERE {' AND '.join(where)} "
            "ORDER BY user_id, timestamp, item_id, value",
            params,
        )
        return cls.from_frame(events)

    def _subset(self, rows: np.ndarray) -> Interactions:
        """The interactions at boolean ``rows`` of ``frame``, over the same vocabularies."""
        part = self.frame.loc[rows].reset_index(drop=True)
        mat = _binary_csr(
            part["user"].to_numpy(), part["item"].to_numpy(), self.n_users, self.n_items
        )
        return Interactions(self.user_ids, self.item_ids, mat, part)


def _codes(values: pd.Series, vocab: pd.Index | None, name: str) -> tuple[np.ndarray, pd.Index]:
    if vocab is None:
        codes, uniques = pd.factorize(values, sort=True)
        return codes.astype(np.int64), pd.Index(uniques, name=f"{name}_id")
    codes = vocab.get_indexer(values)
    unknown = int((codes < 0).sum())
    if unknown:
        raise ValueError(f"{unknown} row(s) have a {name} id outside the given vocabulary")
    return codes.astype(np.int64), vocab


@dataclass(frozen=True, eq=False)
class Split:
    """Train, validation and test interactions over one shared user and item vocabulary."""

    train: Interactions
    valid: Interactions
    test: Interactions

    def __post_init__(self) -> None:
        for part in (self.valid, self.test):
            if not (
                part.user_ids.equals(self.train.user_ids)
                and part.item_ids.equals(self.train.item_ids)
            ):
                raise ValueError("split parts must share the user and item vocabularies")

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items

    def sizes(self) -> dict[str, int]:
        """Distinct pairs per part: what a split summary prints."""
        return {"train": self.train.nnz, "valid": self.valid.nnz, "test": self.test.nnz}


# ------------------------------------------------------------------------------- splits


def _pair_index(inter: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(user of each distinct pair, pair index of each frame row).

    Pairs are numbered in CSR order (user, then item), which does not depend on the order of
    the rows, so a seeded random split is the same however the input was sorted.
    """
    m = inter.matrix
    pair_user = np.repeat(np.arange(inter.n_users), np.diff(m.indptr))
    pair_key = pair_user * np.int64(inter.n_items) + m.indices
    f = inter.frame
    row_key = f["user"].to_numpy(np.int64) * inter.n_items + f["item"].to_numpy(np.int64)
    return pair_user, np.searchsorted(pair_key, row_key)


def _split_pairs(inter: Interactions, pair_part: np.ndarray, row_pair: np.ndarray) -> Split:
    """Split rows by the part (0 train, 1 valid, 2 test) of their (user, item) pair.

    All interactions of one pair go to one part, so the parts are disjoint in pairs: an item
    a user had in train can never be their test target as well.
    """
    row_part = pair_part[row_pair]
    return Split(*(inter._subset(row_part == p) for p in range(3)))


def ratio_counts(
    totals: ArrayLike, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> np.ndarray:
    """How many of each user's ``totals`` distinct items go to train, valid and test.

    RecBole's ``_calcu_split_ids``: fractions are normalised to sum 1; valid and test get
    ``int(fraction * n)`` (rounded down) and train the rest; then, while train keeps more than
    one item, a part whose exact share is between 0 and 1 item gets one item from train (test
    first, then valid), so small users still have a target. With (0.8, 0.1, 0.1):

    ===========  =======  =====  ====
    items n      train    valid  test
    ===========  =======  =====  ====
    1 or 2       all      0      0
    3            1        1      1
    4 .. 19      n - 2    1      1
    20 .. 29     n - 4    2      2
    ===========  =======  =====  ====

    One deliberate difference from RecBole: users with fewer than 3 items keep everything in
    train (RecBole would send one of 2 items to test and leave 1 to train), because a user who
    cannot be in all three parts says nothing reliable about a model and would be scored on a
    one-item profile.
    """
    tot = np.asarray(totals, dtype=np.int64)
    ratios = _fractions(fractions)
    cnt = [np.floor(r * tot).astype(np.int64) for r in ratios]
    cnt[0] = tot - cnt[1] - cnt[2]
    for part in (2, 1):  # RecBole walks the parts from the last one back
        share = ratios[part] * tot
        bump = ((cnt[0] > 1) & (share > 0) & (share < 1)).astype(np.int64)
        cnt[part] += bump
        cnt[0] -= bump
    small = tot < 3
    cnt[0] = np.where(small, tot, cnt[0])
    cnt[1] = np.where(small, 0, cnt[1])
    cnt[2] = np.where(small, 0, cnt[2])
    return np.stack(cnt, axis=-1)


def _fractions(fractions: Sequence[float]) -> list[float]:
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, valid, test), got {fractions!r}")
    values = [float(f) for f in fractions]
    if any(not math.isfinite(f) or f < 0 for f in values) or values[0] <= 0:
        raise ValueError(f"fractions must be non-negative with a positive train share: {fractions}")
    total = sum(values)
    return [f / total for f in values]


def random_split(
    inter: Interactions,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """Per-user random split of each user's distinct items (RecBole "RS", group by user).

    Each user's distinct items are shuffled and cut into train / valid / test with the counts
    of :func:`ratio_counts`; every interaction of a (user, item) pair follows its pair. Per-user
    cuts keep every user in every part (a global random cut would leave light users without
    targets), which is the protocol behind RecBole's published MovieLens tables. The same
    ``seed`` gives the same split whatever the row order of the input.
    """
    pair_user, row_pair = _pair_index(inter)
    counts = ratio_counts(np.diff(inter.matrix.indptr), fractions)
    key = np.random.default_rng(seed).random(pair_user.size)
    order = np.lexsort((key, pair_user))  # a random permutation inside each user
    starts = inter.matrix.indptr[:-1]
    pos = np.empty(pair_user.size, dtype=np.int64)
    pos[order] = np.arange(pair_user.size) - starts[pair_user[order]]
    n_train = counts[pair_user, 0]
    n_valid = counts[pair_user, 1]
    part = np.where(pos < n_train, 0, np.where(pos < n_train + n_valid, 1, 2))
    return _split_pairs(inter, part, row_pair)


def leave_one_out(inter: Interactions) -> Split:
    """Per user by time: the last distinct item is test, the one before valid, the rest train.

    RecBole "LS" with time ordering. An item's time is its *last* interaction, so every train
    interaction happens no later than the valid item, and the valid item no later than the test
    item: the model never trains on what happened after its target. Equal timestamps keep the
    frame's row order (later row = later), as RecBole's stable sort does;
    :meth:`Interactions.from_store` orders such ties by item id. Users with fewer than 3
    distinct items keep everything in train.
    """
    pair_user, row_pair = _pair_index(inter)
    n = len(inter.frame)
    t = _time_key(inter.frame["timestamp"])
    time_rank = np.empty(n, dtype=np.int64)
    time_rank[np.lexsort((np.arange(n), t))] = np.arange(n)
    pair_rank = np.full(pair_user.size, -1, dtype=np.int64)
    np.maximum.at(pair_rank, row_pair, time_rank)
    order = np.lexsort((pair_rank, pair_user))
    counts = np.diff(inter.matrix.indptr)
    from_end = np.empty(pair_user.size, dtype=np.int64)
    starts = inter.matrix.indptr[:-1]
    from_end[order] = (
        counts[pair_user[order]] - 1 - (np.arange(pair_user.size) - starts[pair_user[order]])
    )
    big = counts[pair_user] >= 3
    part = np.where(big & (from_end == 0), 2, np.where(big & (from_end == 1), 1, 0))
    return _split_pairs(inter, part, row_pair)


def temporal_split(
    inter: Interactions, valid_start: TimeLike | float, test_start: TimeLike | float
) -> Split:
    """Global time cuts: before ``valid_start`` train, then valid, from ``test_start`` test.

    The protocol closest to deployment: the model sees only the past of everyone. Unlike the
    per-user splits, a (user, item) pair can fall in several parts (a repeat purchase); with
    ``exclude_seen`` :func:`evaluate_scores` drops such already-seen pairs from the targets.
    Cuts are compared with the timestamps as they are: plain numbers (epoch seconds, the row
    order of ``time_col=None``) with numbers, datetimes with datetimes (text, dates and
    datetimes, as cuts or as timestamps, are converted like everywhere else in valuerec). A
    number cut on datetime timestamps is epoch seconds, as a number timestamp is (pandas
    alone read it as nanoseconds: a cut in January 1970 put every row in test); a time cut
    on number timestamps is an error naming the cut.
    """
    values = _times(inter.frame["timestamp"])
    if values.dtype.kind == "M":
        v, s = (
            _ns_cut(_epoch_cut(cut, name))
            if isinstance(cut, int | float | np.number) and not isinstance(cut, bool)
            else _ns_cut(to_timestamp(cut, name))
            for cut, name in ((valid_start, "valid_start"), (test_start, "test_start"))
        )
    else:
        v, s = (
            _number_cut(cut, name)
            for cut, name in ((valid_start, "valid_start"), (test_start, "test_start"))
        )
    if v > s:
        raise ValueError(f"valid_start {valid_start!r} is after test_start {test_start!r}")
    return Split(
        inter._subset(values < v),
        inter._subset((values >= v) & (values < s)),
        inter._subset(values >= s),
    )


def _epoch_cut(cut: float, name: str) -> pd.Timestamp:
    """A number cut on datetime timestamps: epoch seconds, as a number timestamp is."""
    try:
        if not math.isfinite(cut):
            raise ValueError(cut)
        return pd.Timestamp(cut, unit="s")
    except (ValueError, OverflowError):  # NaN, or beyond any datetime
        raise ValueError(
            f"{name} {cut!r} is no time: as epoch seconds it is beyond the years 1 to 9999"
        ) from None


def _ns_cut(when: datetime | pd.Timestamp) -> np.datetime64:
    """A cut as nanoseconds, the unit of the timestamps it is compared with. A cut beyond
    their range (1500-01-01, 9999-12-31: the store's years 1 to 9999) is put at its edge, which
    splits every timestamp alike; numpy's cast wrapped 1500 round into 2084 silently."""
    ts = min(max(pd.Timestamp(when), pd.Timestamp.min), pd.Timestamp.max)
    return ts.as_unit("ns").to_datetime64()  # exact (np.datetime64 of the edges wraps too)


def _number_cut(cut: Any, name: str) -> float:
    """A cut on number timestamps (epoch seconds or row order) must be a number too."""
    try:
        return float(cut)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} {cut!r} is no number, but the timestamps are numbers (epoch seconds or "
            "row order): give the cut as a number of the same kind"
        ) from None


PROTOCOLS = ("random-split", "leave-one-out", "temporal")


def protocol_split(inter: Interactions, protocol: str) -> Split:
    """The split a named protocol makes (what ``valuerec recommend evaluate --protocol`` and
    the report use): per-user random 80/10/10 (seed 0), leave-one-out by time, or global time
    cuts at the 80% and 90% quantiles of the timestamps.

    The temporal cuts are an error when they leave training empty: when 80% or more of the
    interactions share the earliest timestamp (a one-day export), both quantiles are that time
    and nothing is before them. Every model then failed on its own with "no interactions to
    learn from", blaming a store full of them; the error names the cuts and the cause.
    """
    if protocol == "random-split":
        return random_split(inter, seed=0)
    if protocol == "leave-one-out":
        return leave_one_out(inter)
    if protocol == "temporal":
        # cuts of the timestamps' own kind: numbers stay numbers (temporal_split compares
        # number timestamps with number cuts only)
        times = pd.Series(_times(inter.frame["timestamp"]))
        valid_start, test_start = times.quantile(0.8), times.quantile(0.9)
        split = temporal_split(inter, valid_start, test_start)
        if len(split.train) == 0 and len(inter):
            first = times.min()
            raise ValueError(
                f"the temporal protocol's cuts (80%/90% quantiles) at {_time_text(valid_start)} "
                f"and {_time_text(test_start)} leave no training interaction: "
                f"{int((times == first).sum())} of {len(times)} interactions are at the "
                f"earliest time, {_time_text(first)}, and training takes only those before the "
                "first cut; use the random-split or leave-one-out protocol"
            )
        return split
    raise ValueError(f"unknown protocol {protocol!r}: {', '.join(PROTOCOLS)}")


def _time_text(value: Any) -> str:
    """A cut or timestamp as a message shows it: ``2024-01-01`` for a midnight, ``0`` for a
    number (not ``0.0`` or ``2024-01-01 00:00:00``)."""
    if isinstance(value, pd.Timestamp | np.datetime64):
        stamp = pd.Timestamp(value)
        return str(stamp.date()) if stamp == stamp.normalize() else str(stamp)
    # epoch seconds in full, without a quantile's float noise (0.15000000000000213)
    return np.format_float_positional(float(f"{float(value):.12g}"), trim="-")


# ------------------------------------------------------------------------------ ranking


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores of each row, best first; ties to the lower index.

    ``np.argpartition`` finds the k-th largest score per row in linear time; items strictly
    above it are all in, and of the items equal to it the lowest indices fill the remaining
    slots, which makes ties deterministic. Only the k winners are then sorted. Positions whose
    score is ``-inf`` (masked, or refused by the model) or NaN (no score at all) hold -1:
    nothing is recommended there.
    """
    n_rows, n_items = scores.shape
    k = min(int(k), n_items)
    if k <= 0:
        return np.empty((n_rows, 0), dtype=np.int64)
    if n_rows == 1:
        return _top_k_row(scores[0], k)[None, :]
    neg = _negated(scores)
    if k < n_items:
        kth = np.take_along_axis(neg, np.argpartition(neg, k - 1, axis=1)[:, k - 1 : k], axis=1)
        above = neg < kth
        tied = neg == kth
        room = k - above.sum(axis=1, keepdims=True)
        take = above | (tied & (np.cumsum(tied, axis=1) <= room))
        idx = np.nonzero(take)[1].reshape(n_rows, k)  # row-major: ascending index per row
    else:
        idx = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    order = np.argsort(np.take_along_axis(neg, idx, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1).astype(np.int64)
    idx[~(np.take_along_axis(scores, idx, axis=1) > -np.inf)] = -1  # -inf and NaN
    return idx


def _negated(scores: np.ndarray) -> np.ndarray:
    """``-scores`` with NaN as ``+inf`` (a score of ``-inf``): a NaN compares unequal to
    everything, so left as it is a NaN k-th score let no item in at all."""
    neg = -scores
    nan = np.isnan(neg)
    if nan.any():
        neg[nan] = np.inf
    return neg


def _top_k_row(scores: np.ndarray, k: int) -> np.ndarray:
    """:func:`top_k` of one row (``0 < k <= len(scores)``), by the same rule.

    The server asks for one user per request: on one row the 2-D form's
    ``take_along_axis`` calls and masks over the whole row cost more than the ranking, 43%
    of a recommendation's time on MovieLens-100K (170 us a request); this form does the same
    steps with 1-D indexing. On a long row it first narrows the row to the few items that can
    be in the top k (:func:`_top_candidates`), because ``argpartition`` over the whole row
    was then still most of the ranking (22 of 33 us on 1,682 items).
    """
    if k < scores.size:
        cand = _top_candidates(scores, k)
        if cand is not None:  # every item of the top k is among them, in index order
            idx = cand[np.argsort(-scores[cand], kind="stable")[:k]].astype(np.int64)
            idx[scores[idx] == -np.inf] = -1
            return idx
    neg = _negated(scores)
    if k < neg.size:
        kth = neg[np.argpartition(neg, k - 1)[k - 1]]
        take = neg < kth
        tied = np.flatnonzero(neg == kth)  # ascending: the lowest indices fill the room
        take[tied[: k - int(take.sum())]] = True
        idx = np.flatnonzero(take)
    else:
        idx = np.arange(neg.size)
    idx = idx[np.argsort(neg[idx], kind="stable")].astype(np.int64)
    idx[~(scores[idx] > -np.inf)] = -1  # -inf and NaN
    return idx


#: items per block of :func:`_top_candidates` (a row needs ``_BLOCK * k`` items for it)
_BLOCK = 32


def _top_candidates(scores: np.ndarray, k: int) -> np.ndarray | None:
    """The indices (ascending) of a superset of one row's top ``k``, or None to rank it whole.

    Hand-written because NumPy has no partial top-k cheaper than ``argpartition`` (an
    introselect over the whole row, about 13 ns an item): the maxima of disjoint blocks of
    :data:`_BLOCK` items are taken in one vectorised pass, and the ``k``-th largest of them,
    ``t``, is a lower bound of the row's ``k``-th largest score, since ``k`` different items
    reach ``t``. Every item of the top k therefore scores ``>= t``, and the items that do are
    a few times ``k``. NaN scores are never recommended, as in :func:`top_k`: they reach no
    bound, so the bound is trusted only when at least ``k`` items reach it; otherwise (and
    for a row shorter than ``k`` blocks) the row is ranked whole.
    """
    blocks = scores.size // _BLOCK
    if blocks < k:
        return None
    maxima = scores[: blocks * _BLOCK].reshape(blocks, _BLOCK).max(axis=1)
    bound = np.partition(maxima, blocks - k)[blocks - k]
    cand = np.flatnonzero(scores >= bound)  # none when the bound is NaN
    return cand if cand.size >= k else None


@dataclass
class _Accuracy:
    """Per-user sums of the top-k accuracy metrics, for users scored so far."""

    ks: tuple[int, ...]
    sums: dict[str, float] = field(default_factory=dict)
    users: int = 0

    def add(self, top: np.ndarray, targets: sparse.csr_matrix) -> None:
        """Add users' top lists (rows of ``top``) scored against their rows of ``targets``."""
        n_tgt = np.diff(targets.indptr).astype(float)
        dense = targets.toarray() > 0
        hits = np.take_along_axis(dense, np.maximum(top, 0), axis=1) & (top >= 0)
        depth = top.shape[1]
        ranks = np.arange(1, depth + 1, dtype=float)
        discount = 1.0 / np.log2(ranks + 1.0)
        h = hits.astype(float)
        cum = np.cumsum(h, axis=1)
        dcg = np.cumsum(h * discount, axis=1)
        idcg = np.cumsum(discount)
        ap = np.cumsum(cum / ranks * h, axis=1)
        first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1.0, np.inf)
        for k in self.ks:
            col = min(k, depth) - 1
            ideal = np.minimum(n_tgt, k)
            values = {
                "recall": cum[:, col] / n_tgt,
                "precision": cum[:, col] / k,
                "hit": (cum[:, col] > 0).astype(float),
                "mrr": np.where(first <= k, 1.0 / first, 0.0),
                "ndcg": dcg[:, col] / idcg[np.minimum(ideal, depth).astype(np.int64) - 1],
                "map": ap[:, col] / ideal,
            }
            for name, v in values.items():
                key = f"{name}@{k}"
                self.sums[key] = self.sums.get(key, 0.0) + float(np.sum(v))
        self.users += len(top)

    def means(self, suffix: str = "") -> dict[str, float]:
        out = {}
        for name in ACCURACY_METRICS:
            for k in self.ks:
                total = self.sums.get(f"{name}@{k}", math.nan)
                out[f"{name}@{k}{suffix}"] = total / self.users if self.users else math.nan
        return out


@dataclass
class _Beyond:
    """Recommendation counts and list statistics for the beyond-accuracy metrics."""

    ks: tuple[int, ...]
    self_info: np.ndarray  # -log2 of each item's share of train users
    popularity: np.ndarray  # train interactions per item
    unit: np.ndarray | None  # L2-normalised item embeddings, zero rows stay zero
    counts: np.ndarray = field(init=False)
    entries: np.ndarray = field(init=False)
    info_sum: np.ndarray = field(init=False)
    pop_sum: np.ndarray = field(init=False)
    ild_sum: np.ndarray = field(init=False)
    ild_users: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n, n_items = len(self.ks), self.self_info.size
        self.counts = np.zeros((n, n_items), dtype=np.int64)
        self.entries, self.ild_users = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.info_sum, self.pop_sum, self.ild_sum = np.zeros(n), np.zeros(n), np.zeros(n)

    def add(self, top: np.ndarray) -> None:
        n_items = self.self_info.size
        for j, k in enumerate(self.ks):
            lists = top[:, :k]
            valid = lists >= 0
            rec = lists[valid]
            self.counts[j] += np.bincount(rec, minlength=n_items)
            self.entries[j] += rec.size
            self.info_sum[j] += float(self.self_info[rec].sum())
            self.pop_sum[j] += float(self.popularity[rec].sum())
            if self.unit is not None:
                vec = self.unit[np.maximum(lists, 0)] * valid[..., None]
                total = vec.sum(axis=1)
                # sum over ordered pairs i != j of cos(i, j) = |sum e|^2 - sum |e|^2
                off = np.einsum("bd,bd->b", total, total) - np.einsum("bkd,bkd->b", vec, vec)
                n_valid = valid.sum(axis=1)
                ok = n_valid >= 2
                pairs = n_valid[ok] * (n_valid[ok] - 1.0)
                self.ild_sum[j] += float(np.sum(1.0 - off[ok] / pairs))
                self.ild_users[j] += int(ok.sum())

    def means(self) -> dict[str, float]:
        out: dict[str, float] = {}
        n_items = self.self_info.size

        def ratio(num: float, den: float) -> float:
            return float(num / den) if den else math.nan

        for j, k in enumerate(self.ks):
            out[f"coverage@{k}"] = float(np.count_nonzero(self.counts[j])) / n_items
            out[f"novelty@{k}"] = ratio(self.info_sum[j], self.entries[j])
            out[f"avg_popularity@{k}"] = ratio(self.pop_sum[j], self.entries[j])
            out[f"exposure_gini@{k}"] = exposure_gini(self.counts[j])
            if self.unit is not None:
                out[f"ild@{k}"] = ratio(self.ild_sum[j], self.ild_users[j])
        return out


def exposure_gini(counts: ArrayLike) -> float:
    """Gini coefficient of how often each catalogue item was recommended (0 = equal exposure).

    RecBole's GiniIndex: with counts sorted ascending over all ``n`` items (items never
    recommended count 0), ``sum_i (2 i - n - 1) c_i / (n sum_i c_i)``. 0 when every item is
    shown equally often, ``1 - 1/n`` when one item takes every slot; NaN with no
    recommendation at all.
    """
    c = np.sort(np.asarray(counts, dtype=float))
    n, total = c.size, c.sum()
    if n == 0 or total <= 0:
        return math.nan
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * c) / (n * total))


@dataclass
class RankingReport:
    """What :func:`evaluate_scores` measured, and the top-k lists it measured it on.

    ``metrics`` maps names like ``"ndcg@10"`` / ``"coverage@20"`` (and ``"ndcg@10_unmasked"``
    when asked for) to floats, plus ``users`` (evaluated users) and ``items`` (catalogue size).
    ``users`` holds the evaluated users' indices and ``top_items`` their ranked lists
    (``len(users)`` x ``max(ks)`` item indices, best first, -1 where nothing could be
    recommended), for popularity and diversity plots without re-scoring.
    """

    metrics: dict[str, float]
    ks: tuple[int, ...]
    stage: str
    users: np.ndarray
    top_items: np.ndarray

    def to_dict(self, *, include_top_items: bool = False) -> dict[str, Any]:
        """A JSON-safe copy: plain numbers, None for NaN; top-k lists only when asked for."""

        def clean(value: float) -> float | None:
            value = float(value)
            return value if math.isfinite(value) else None

        out: dict[str, Any] = {
            "stage": self.stage,
            "ks": list(self.ks),
            "metrics": {str(k): clean(v) for k, v in self.metrics.items()},
        }
        if include_top_items:
            out["users"] = self.users.tolist()
            out["top_items"] = self.top_items.tolist()
        return out


def _score_batch(scores: np.ndarray | ScoreFn, users: np.ndarray, n_items: int) -> np.ndarray:
    """A fresh float64 copy of the users' score rows (masking must not touch the caller's)."""
    raw = scores[users] if isinstance(scores, np.ndarray) else scores(users)
    batch = np.array(raw, dtype=np.float64)  # always a copy
    if batch.shape != (users.size, n_items):
        raise ValueError(
            f"scores for {users.size} users must have shape {(users.size, n_items)}, "
            f"got {batch.shape}"
        )
    if np.isnan(batch).any():
        raise ValueError("scores contain NaN; use -inf for items that must not be recommended")
    return batch


def _mask(batch: np.ndarray, seen: sparse.csr_matrix) -> None:
    """Set the seen (row, item) cells of ``batch`` to -inf, in place."""
    rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
    batch[rows, seen.indices] = -np.inf


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    values = sorted({int(k) for k in ks})
    if not values or values[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    return tuple(values)


def _unit_rows(embeddings: ArrayLike, n_items: int) -> np.ndarray:
    emb = np.asarray(embeddings, dtype=float)
    if emb.ndim != 2 or emb.shape[0] != n_items:
        raise ValueError(f"item_embeddings must have shape ({n_items}, d), got {emb.shape}")
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return np.divide(emb, norm, out=np.zeros_like(emb), where=norm > 0)


def evaluate_scores(
    scores: np.ndarray | ScoreFn,
    split: Split,
    *,
    stage: str = "test",
    ks: Sequence[int] = (10, 20),
    exclude_seen: bool = True,
    unmasked: bool = False,
    item_embeddings: ArrayLike | None = None,
    batch_size: int = 1024,
) -> RankingReport:
    """Rank the whole catalogue for every user with a target and score the top-k lists.

    Args:
        scores: an ``n_users x n_items`` array over the split's vocabularies, or a callable
            ``scores(user_indices) -> (len(user_indices), n_items)`` so that a model never has
            to hold the full matrix. Higher is better; ``-inf`` means "never recommend";
            NaN is an error.
        split: the split the model was fitted on (its ``train`` part, or train + valid).
        stage: ``"test"`` (targets: test items) or ``"valid"`` (targets: valid items).
        ks: list lengths to report.
        exclude_seen: mask what the user already has -- train items for ``valid``, train and
            valid items for ``test`` -- to ``-inf`` before ranking, and drop such items from
            the targets (they could never be hit). This is RecBole's full-sort protocol; the
            figure is about recommending *new* items.
        unmasked: also rank *without* masking and add the accuracy metrics with the suffix
            ``_unmasked`` (targets: every item of the stage). Printed beside the masked figure
            for leave-one-out, it shows how much of a score comes from re-ranking items the
            user already has. Ignored when ``exclude_seen`` is False (the main figures are
            then the unmasked ones).
        item_embeddings: ``n_items x d`` vectors; when given, ``ild@k`` is the mean over users
            of the mean pairwise cosine distance ``1 - cos`` within their top-k list (users
            with fewer than two recommended items are left out of it; a zero vector has
            similarity 0 to everything).
        batch_size: users scored at once (capped so a batch holds about 8 M score cells).

    Beyond-accuracy metrics come from the masked lists and always use *train* popularity:
    ``novelty@k`` is the mean self-information ``-log2(users_i / users)`` of the recommended
    items, where ``users_i`` counts the train users who interacted with item i (at least 1,
    so an item unseen in train is as novel as one seen by a single user) and ``users`` the
    users with any train interaction; ``avg_popularity@k`` is the mean number of train
    interactions of the recommended items. Users with no target in the stage are skipped;
    with none at all there is nothing to evaluate and a ValueError says so.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    ks_t = _check_ks(ks)
    n_users, n_items = split.n_users, split.n_items
    if not callable(scores) and not isinstance(scores, np.ndarray):
        scores = np.asarray(scores)  # a DataFrame, nested lists (batches are copied as float64)
    if isinstance(scores, np.ndarray) and scores.shape != (n_users, n_items):
        raise ValueError(f"scores must have shape {(n_users, n_items)}, got {scores.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")

    full, seen = _stage_matrices(split, stage)
    targets = _new_items(full, seen) if exclude_seen else full
    with_unmasked = unmasked and exclude_seen

    has_target = np.diff(targets.indptr) > 0
    has_full = np.diff(full.indptr) > 0 if with_unmasked else np.zeros(n_users, dtype=bool)
    to_score = np.flatnonzero(has_target | has_full)
    if not has_target.any():
        raise ValueError(f"no user has a {stage} item to rank against")

    train = split.train
    train_users = int(np.count_nonzero(np.diff(train.matrix.indptr)))
    user_share = np.maximum(train.item_users(), 1) / max(train_users, 1)
    beyond = _Beyond(
        ks_t,
        self_info=-np.log2(user_share),
        popularity=train.item_counts().astype(float),
        unit=None if item_embeddings is None else _unit_rows(item_embeddings, n_items),
    )
    main, raw_acc = _Accuracy(ks_t), _Accuracy(ks_t)
    depth = min(ks_t[-1], n_items)
    rows = max(1, min(batch_size, _BATCH_CELLS // max(n_items, 1)))
    tops: list[np.ndarray] = []

    for start in range(0, to_score.size, rows):
        users = to_score[start : start + rows]
        batch = _score_batch(scores, users, n_items)
        if with_unmasked:
            keep = has_full[users]
            raw_acc.add(top_k(batch[keep], depth), full[users[keep]])
        if exclude_seen:
            _mask(batch, seen[users])
        keep = has_target[users]
        top = top_k(batch[keep], depth)
        main.add(top, targets[users[keep]])
        beyond.add(top)
        tops.append(top)

    metrics = main.means()
    metrics.update(beyond.means())
    if with_unmasked:
        metrics.update(raw_acc.means("_unmasked"))
        metrics["users_unmasked"] = float(raw_acc.users)
    metrics["users"] = float(main.users)
    metrics["items"] = float(n_items)
    return RankingReport(
        metrics=metrics,
        ks=ks_t,
        stage=stage,
        users=np.flatnonzero(has_target),
        top_items=np.concatenate(tops) if tops else np.empty((0, depth), dtype=np.int64),
    )
