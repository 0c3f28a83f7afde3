"""Side information as 0/1 feature matrices: who a user is, when they were active, what an item is.

Collaborative models see only who consumed what. The store also knows the users' and items'
attributes (MovieLens: age, gender and occupation; genres and release year) and when each
interaction happened. :func:`entity_features` turns an entity table (the store's ``users`` or
``items``, with their JSON ``properties`` expanded) into one-hot columns aligned with a model's
vocabulary, and :func:`activity_periods` marks the calendar periods in which each user was
active: the time signal a per-user random split hides (a film released in 1998 is only ever
watched by users active in 1998).

The encoding rules are generic, not MovieLens-specific:

* text fields with a ``|`` (multi-valued categories such as ``Action|Comedy``) give one column
  per value;
* other text fields give one column per value, and are skipped when they have more than
  ``max_levels`` distinct values or at least half as many distinct values as entities that
  have one (titles, zip codes: they name the entity rather than a trait it shares with many
  others; a brand shared by pairs of items is skipped too);
* numeric fields (and datetimes) are cut into ``bins`` quantile bins, one column each;
  a missing value sets no column.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from valuerec.data.schema import as_frame, id_text
from valuerec.evaluate.ranking import to_datetimes

#: free-text columns the content model embeds; one-hot columns of them would be identifiers
TEXT_COLUMNS = ("title", "text")


def expand_properties(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its JSON ``properties`` column spread into one column per key.

    The key columns come in sorted order, not in the order keys first appear: that order is
    the stored text's (an upsert's merge moves keys), and models whose result depends on
    column order must not change with it.
    """
    if "properties" not in table.columns:
        return table
    parsed = [json.loads(p) if isinstance(p, str) and p else {} for p in table["properties"]]
    props = pd.DataFrame.from_records(parsed, index=table.index)
    props = props.reindex(columns=sorted(props.columns, key=str))
    rest = table.drop(columns="properties")
    return pd.concat([rest, props.drop(columns=[c for c in props if c in rest])], axis=1)


def _labels(value: object) -> list[str]:
    """The labels of one multi-valued attribute: ``a|b`` text or a JSON array of scalars,
    each trimmed and case-folded, as the server reads categories (``Action | comedy`` and
    ``action|Comedy`` are the same two labels, not four)."""
    if isinstance(value, str):
        parts: list[object] = value.split("|")
    elif isinstance(value, list):
        parts = [v for v in value if not isinstance(v, dict | list)]
    else:
        return []
    return [t for t in (str(p).strip().lower() for p in parts if p is not None) if t]


def _multi_hot(values: pd.Series) -> pd.DataFrame:
    """One 0/1 column per label of a multi-valued attribute (:func:`_labels`)."""
    labels = values.map(_labels).explode().dropna()
    if labels.empty:
        return pd.DataFrame(index=values.index, dtype=np.float32)
    hot = pd.crosstab(labels.index, labels.to_numpy()).clip(upper=1)
    return hot.reindex(values.index, fill_value=0).astype(np.float32)


def _numeric_bins(values: pd.Series, bins: int) -> pd.DataFrame:
    """One column per quantile bin of a numeric or datetime field, named by its range."""
    if values.dtype.kind == "M":
        x = pd.Series(values.to_numpy("datetime64[ns]").astype("int64"), index=values.index)
        x = x.where(values.notna())
    else:
        x = pd.to_numeric(values, errors="coerce").astype(float)
    edges = np.unique(np.nanquantile(x.dropna(), np.linspace(0, 1, bins + 1)[1:-1]))
    bounds = ["-inf", *(f"{e:g}" for e in edges), "inf"]
    labels = [f"[{lo},{hi})" for lo, hi in itertools.pairwise(bounds)]
    codes = pd.Series(np.digitize(x.fillna(0.0), edges), index=values.index)
    named = codes.map(dict(enumerate(labels))).where(x.notna())
    return pd.get_dummies(named, dtype=np.float32)


def entity_features(
    table: pd.DataFrame | None,
    id_column: str,
    ids: pd.Index,
    *,
    bins: int = 6,
    max_levels: int = 50,
    exclude: tuple[str, ...] = TEXT_COLUMNS,
) -> tuple[np.ndarray, list[str]]:
    """(len(ids) x F one-hot matrix, column names) of the attributes of ``ids`` in ``table``.

    Ids missing from the table get an all-zero row (nothing known about them); a missing or
    empty table gives zero columns.
    """
    table = as_frame(table)  # an Arrow table, as fit() takes one
    if table is None or table.empty:
        return np.zeros((len(ids), 0), np.float32), []
    frame = expand_properties(table)
    frame = frame.assign(**{id_column: id_text(frame[id_column])})
    # encoded over the whole table (bins, levels and the identifier test describe the
    # population), then aligned with ``ids``
    frame = frame.drop_duplicates(id_column).set_index(id_column)
    blocks: list[pd.DataFrame] = []
    for col in frame.columns:
        if col in exclude:
            continue
        values = frame[col]
        present = values.dropna()
        if present.empty or any(isinstance(v, dict) for v in present):
            continue  # a JSON object is no attribute level (it crashed the level count)
        if any(isinstance(v, list) for v in present):  # JSON arrays: tags, genres
            blocks.append(_multi_hot(values).add_prefix(f"{col}="))
            continue
        numeric = values.dtype.kind in "iufM" or all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in present
        )  # JSON numbers; numeric-looking strings (zip codes) stay categories
        if numeric:
            block = _numeric_bins(values, bins) if present.nunique() > bins else None
            if block is None:  # few numeric levels: each is a category
                block = pd.get_dummies(values.astype("string"), dtype=np.float32)
        else:
            text = values.astype("string")
            if text.str.contains("|", regex=False).any():
                block = _multi_hot(values)
            else:
                levels = present.nunique()
                if levels > max_levels or levels >= 0.5 * len(present):
                    continue
                block = pd.get_dummies(text, dtype=np.float32)
        blocks.append(block.add_prefix(f"{col}="))
    if not blocks:
        return np.zeros((len(ids), 0), np.float32), []
    out = pd.concat(blocks, axis=1).reindex(id_text(ids)).fillna(0.0)
    return out.to_numpy(np.float32), [str(c) for c in out.columns]


def _frame(interactions: Any) -> pd.DataFrame:
    """The events of the evaluator's ``Interactions`` (its ``frame``) or of a DataFrame."""
    return interactions if isinstance(interactions, pd.DataFrame) else interactions.frame


def _codes(interactions: Any, kind: str, ids: pd.Index) -> np.ndarray:
    """Row positions in ``ids`` of each event's ``kind`` ("user" or "item"), -1 if unknown:
    the codes ``Interactions`` already carry, or ``{kind}_id`` looked up in a DataFrame."""
    frame = _frame(interactions)
    if kind in frame.columns and not isinstance(interactions, pd.DataFrame):
        return frame[kind].to_numpy(np.int64)
    return ids.get_indexer(id_text(frame[f"{kind}_id"]))


def activity_periods(
    interactions: Any, user_ids: pd.Index, freq: str = "M"
) -> tuple[np.ndarray, list[str]]:
    """(len(user_ids) x P 0/1 matrix, period names): the calendar periods (``freq``: pandas
    period alias, default months) in which each user has an interaction.

    Accepts the evaluator's ``Interactions`` (``frame`` with ``user`` codes and ``timestamp``)
    or a DataFrame with ``user_id`` and ``timestamp``; without timestamps, zero columns.
    """
    frame = _frame(interactions)
    if "timestamp" not in frame.columns or frame.empty:
        return np.zeros((len(user_ids), 0), np.float32), []
    rows = _codes(interactions, "user", user_ids)
    stamps = to_datetimes(frame["timestamp"])
    ok = (rows >= 0) & stamps.notna().to_numpy()
    stamps = stamps[ok]
    if stamps.dt.tz is not None:  # periods are calendar periods of the wall clock
        stamps = stamps.dt.tz_localize(None)
    periods = stamps.dt.to_period(freq)
    codes, names = pd.factorize(periods, sort=True)
    out = np.zeros((len(user_ids), len(names)), np.float32)
    out[rows[ok], codes] = 1.0
    return out, [str(p) for p in names]


def sequence_windows(
    interactions: Any, user_ids: pd.Index, item_ids: pd.Index, window: int
) -> sp.csr_matrix:
    """(W x len(item_ids) 0/1 matrix): one row per window of ``window`` consecutive items of
    a user's time-ordered history (stride ``window // 2``, so each item sits in about
    ``window / stride`` windows: two for an even window; a user's first ``stride`` items in
    one).

    Why: a user's whole history says what they like; what they consumed *around the same time*
    says more about what belongs together (a session, a binge, the order a catalogue page
    showed things). As extra rows of the matrix a collaborative model factorises, each window is
    a pseudo-user, so items that are consumed close together in time gain co-consumption --
    the sequence signal without a sequence model, and one a per-user random split keeps (test
    items are interleaved in time with the training ones). Windows of fewer than two items carry
    no co-consumption and are dropped; without timestamps, zero rows.
    """
    frame = _frame(interactions)
    if window < 2 or "timestamp" not in frame.columns or frame.empty:
        return sp.csr_matrix((0, len(item_ids)), dtype=np.float32)
    users = _codes(interactions, "user", user_ids)
    items = _codes(interactions, "item", item_ids)
    stamps = to_datetimes(frame["timestamp"]).to_numpy("datetime64[ns]")
    ok = (users >= 0) & (items >= 0) & ~np.isnat(stamps)
    users, items, stamps = users[ok], items[ok], stamps[ok]
    order = np.lexsort((stamps, users))  # by user, then time (stable for ties)
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    position = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    stride = max(1, window // 2)
    rows, cols = [], []
    for back in range(-(-window // stride)):  # every window a position falls in
        k = position // stride - back
        inside = (k >= 0) & (position < k * stride + window)
        rows.append(np.stack([users[inside], k[inside]], axis=1))
        cols.append(items[inside])
    keys, codes = np.unique(np.concatenate(rows), axis=0, return_inverse=True)
    out = sp.csr_matrix(
        (np.ones(len(codes), np.float32), (codes.ravel(), np.concatenate(cols))),
        shape=(len(keys), len(item_ids)),
    )
    out.data[:] = 1.0  # an item repeated within a window counts once
    return out[np.flatnonzero(np.diff(out.indptr) >= 2)]


@dataclass
class SideInformation:
    """What a model knows about users and items besides who consumed what, as the blocks
    that augment the interaction matrix (collective factorisation).

    ``profile_weight`` scales the users' attribute columns, ``time_weight`` their activity
    periods (``period``: a pandas period alias), ``item_weight`` the item-attribute rows and
    ``sequence_weight`` the rows of :func:`sequence_windows` (``window`` items long; weight 0
    leaves them out). :meth:`build` encodes them for a model's vocabularies; :meth:`augment`
    returns ``[[X, user], [item^T, 0], [windows, 0]]``: users gain input columns, each item
    attribute becomes a pseudo-user who consumed every item that has it, and so does each
    window of consecutive items.
    """

    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    profile_weight: float = 1.0
    time_weight: float = 1.0
    item_weight: float = 1.0
    period: str = "M"
    sequence_weight: float = 0.0
    window: int = 20
    user: sp.csr_matrix = field(init=False, repr=False)  # users x side columns
    item: sp.csr_matrix = field(init=False, repr=False)  # items x attributes
    windows: sp.csr_matrix = field(init=False, repr=False)  # windows x items
    names: dict[str, list[str]] = field(init=False, repr=False)

    def build(self, interactions: Any, user_ids: pd.Index, item_ids: pd.Index) -> SideInformation:
        profile, profile_names = entity_features(self.users, "user_id", user_ids)
        active, period_names = activity_periods(interactions, user_ids, self.period)
        attributes, attribute_names = entity_features(self.items, "item_id", item_ids)
        # sparse: a user has one column per attribute and a few active months, whatever the
        # number of columns, so a large store's users x columns block stays small
        self.user = sp.hstack(
            [
                sp.csr_matrix(self.profile_weight * profile),
                sp.csr_matrix(self.time_weight * active),
            ],
            format="csr",
            dtype=np.float32,
        )
        self.item = sp.csr_matrix(self.item_weight * attributes, dtype=np.float32)
        self.windows = sp.csr_matrix((0, len(item_ids)), dtype=np.float32)
        if self.sequence_weight > 0:
            windows = sequence_windows(interactions, user_ids, item_ids, self.window)
            self.windows = (self.sequence_weight * windows).astype(np.float32)
        self.names = {"user": profile_names + period_names, "item": attribute_names}
        return self

    def augment(self, matrix: sp.spmatrix) -> sp.csr_matrix:
        """The interaction matrix with the user columns, item-attribute rows and window rows
        attached."""
        top = sp.hstack([matrix, self.user])
        pseudo = sp.vstack([self.item.T, self.windows])
        bottom = sp.hstack([pseudo, sp.csr_matrix((pseudo.shape[0], self.user.shape[1]))])
        out = sp.vstack([top, bottom]).tocsr()
        out.eliminate_zeros()
        return out


class SideInformed:
    """Mixin of the recommenders that read side information (``ease-side``, ``als-side``):
    the one place their side hyper-parameters become a built :class:`SideInformation`."""

    items: pd.DataFrame | None
    users: pd.DataFrame | None
    profile_weight: float
    time_weight: float
    item_weight: float
    period: str
    sequence_weight: float
    window: int

    def _set_side(
        self,
        items: pd.DataFrame | None,
        users: pd.DataFrame | None,
        profile_weight: float,
        time_weight: float,
        item_weight: float,
        period: str,
        sequence_weight: float = 0.0,
        window: int = 20,
    ) -> None:
        self.items, self.users, self.period = items, users, period
        self.profile_weight, self.time_weight = profile_weight, time_weight
        self.item_weight = item_weight
        self.sequence_weight, self.window = sequence_weight, window

    def _build_side(self) -> SideInformation:
        """Encode the side information for the vocabularies being fitted (call from ``_fit``:
        it reads the interactions' timestamps); keeps ``user_side_`` and ``side_names_``."""
        model: Any = self
        side = SideInformation(
            self.items, self.users, self.profile_weight, self.time_weight, self.item_weight,
            self.period, self.sequence_weight, self.window,
        ).build(model._interactions, model.user_ids_, model.item_ids_)  # fmt: skip
        model.user_side_, model.side_names_ = side.user, side.names
        return side
