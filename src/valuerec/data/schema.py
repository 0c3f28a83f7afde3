"""The canonical data model of valuerec: events, items and users.

Every layer (ingest, store, features, models, API) speaks these three tables and nothing
else, so this module is the single place where a column, its type and its meaning are defined.
Field kinds drive validation and coercion in :mod:`valuerec.data.ingest` and the DDL in
:mod:`valuerec.data.store`; adding a column here is all it takes to carry it end to end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa


class Kind(StrEnum):
    """How a field is parsed and validated on the way in."""

    ID = "id"  # non-empty string identifier, whitespace trimmed
    STRING = "string"  # free text, may be null
    LABEL = "label"  # short lowercase token (event types): trimmed, lower-cased
    TIMESTAMP = "timestamp"  # ISO 8601, YYYYMMDD or epoch seconds; stored as naive UTC
    FLOAT = "float"  # finite float
    JSON = "json"  # leftover columns, kept as a JSON object


@dataclass(frozen=True)
class Field:
    """One column of a canonical table."""

    name: str
    kind: Kind
    required: bool = False
    doc: str = ""

    @property
    def sql_type(self) -> str:
        return {
            Kind.ID: "VARCHAR",
            Kind.STRING: "VARCHAR",
            Kind.LABEL: "VARCHAR",
            Kind.TIMESTAMP: "TIMESTAMP",
            Kind.FLOAT: "DOUBLE",
            Kind.JSON: "JSON",
        }[self.kind]


@dataclass(frozen=True)
class Table:
    """A canonical table: its fields and the column that identifies a row."""

    name: str
    fields: tuple[Field, ...]
    key: str  # items/users: the entity id; events: event_id (content when it is missing)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def required(self) -> list[str]:
        return [f.name for f in self.fields if f.required]

    @property
    def input_fields(self) -> list[Field]:
        """Fields a user's file may supply (``properties`` is built from leftover columns)."""
        return [f for f in self.fields if f.kind is not Kind.JSON]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


#: Event types valuerec knows the meaning of. Others are accepted and stored as given
#: (lower-cased), so a platform can add its own (``wishlist``, ``share``, ...).
KNOWN_EVENT_TYPES = ("view", "click", "cart", "purchase", "rating", "exposure")

EVENTS = Table(
    name="events",
    key="event_id",
    fields=(
        Field("event_id", Kind.ID, doc="Producer's id of the event; dedupe key when present."),
        Field("user_id", Kind.ID, required=True, doc="Who acted."),
        Field("item_id", Kind.ID, doc="What they acted on; null for item-less events."),
        Field("event_type", Kind.LABEL, required=True, doc="view, click, cart, purchase, ..."),
        Field("timestamp", Kind.TIMESTAMP, required=True, doc="When, in UTC."),
        Field("value", Kind.FLOAT, doc="Money amount of the event (e.g. order value)."),
        Field("quantity", Kind.FLOAT, doc="Units (e.g. number of CDs)."),
        Field("rating", Kind.FLOAT, doc="Explicit rating, when the event is one."),
        Field("properties", Kind.JSON, doc="Every other input column, as a JSON object."),
    ),
)

ITEMS = Table(
    name="items",
    key="item_id",
    fields=(
        Field("item_id", Kind.ID, required=True),
        Field("title", Kind.STRING),
        Field("text", Kind.STRING, doc="Description used by content models."),
        Field("category", Kind.STRING, doc="One or several categories separated by '|'."),
        Field("price", Kind.FLOAT),
        Field("properties", Kind.JSON),
    ),
)

USERS = Table(
    name="users",
    key="user_id",
    fields=(
        Field("user_id", Kind.ID, required=True),
        Field("signup_time", Kind.TIMESTAMP),
        Field("properties", Kind.JSON, doc="age, gender, region, ..."),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (EVENTS, ITEMS, USERS)}

#: Columns of the quarantine table, where rows that failed validation are kept with the reason.
QUARANTINE_COLUMNS = (
    ("quarantine_key", "UUID"),  # makes re-ingesting a bad file idempotent too
    ("run_id", "BIGINT"),
    ("kind", "VARCHAR"),
    ("source", "VARCHAR"),
    ("line", "BIGINT"),  # physical line in a text file (header = line 1); null for tables
    ("row", "BIGINT"),  # 1-based record number in the source
    ("field", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("raw", "VARCHAR"),
    ("quarantined_at", "TIMESTAMP"),
)


def table(kind: str) -> Table:
    """The canonical table for ``kind`` (events, items or users), with a clear error otherwise."""
    try:
        return TABLES[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(TABLES)}") from None


# -- ids ---------------------------------------------------------------------------------------
# One rule for ids everywhere a caller hands them in (a DataFrame to fit, a list to predict or
# recommend for, a store lookup): the text the store keeps, whatever their type in the input.


def id_text(values: Any) -> pd.Index:
    """Ids as the store keeps them: text, an integral float written as an integer.

    pandas turns an integer id column holding a missing value into floats; ingest stores
    such ids as ``"10"``, not ``"10.0"`` (:func:`valuerec.data.ingest._coerce`), so a model's
    vocabulary built from such a frame must too, or every lookup by the stored id misses.
    """
    idx = pd.Index(values)
    if isinstance(idx.dtype, pd.CategoricalDtype):  # the rule applies to its categories' type
        floats = pd.api.types.is_float_dtype(idx.dtype.categories.dtype)
        idx = pd.Index(idx.astype(float if floats else object))  # object: ints with a NaN
    if not pd.api.types.is_float_dtype(idx.dtype):
        return idx.astype(str)
    num = idx.to_numpy(dtype=float)
    whole = np.isfinite(num) & (num == np.trunc(num)) & (np.abs(num) < 2.0**53)
    text = idx.astype(str).to_numpy(dtype=object)
    text[whole] = num[whole].astype(np.int64).astype(str)
    return pd.Index(text, dtype=object)


def event_type_list(values: str | Iterable[str]) -> list[str]:
    """Event types handed in by a caller, as the store keeps them (trimmed, lower-cased).

    One type given as a string is a list of one: iterating ``"purchase"`` would ask for the
    types ``p``, ``u``, ... and find nothing, silently.
    """
    raw = [values] if isinstance(values, str) else list(values)
    return [str(e).strip().lower() for e in raw]


def one_id(value: Any) -> str:
    """One id as :func:`id_text` writes it (a lookup by ``10`` or ``10.0`` finds ``"10"``)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def id_list(values: Any, name: str = "ids") -> list[str]:
    """Ids handed in by a caller, as the store keeps them (:func:`one_id`), in their order.

    One id (a string, a number) is a list of one: ``recommend("u1")`` is for user ``u1``,
    not for users ``u`` and ``1``, as iterating the string would make it. A missing id
    (None, NaN) is an error naming ``name``: as text it would be the id ``"nan"``.
    """
    if isinstance(values, np.ndarray) and values.ndim == 0:
        values = values.item()
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        values = [values]
    out = []
    for v in values:
        if v is None or (np.ndim(v) == 0 and not isinstance(v, str | bytes) and pd.isna(v)):
            raise ValueError(f"{name} holds a missing id (None, NaN or NaT)")
        out.append(one_id(v))
    return out


def as_frame(table: Any) -> Any:
    """An Arrow table or record batch as a pandas DataFrame; anything else unchanged.

    The Python API takes pandas or Arrow wherever it takes a table of events (ingest reads
    both natively); models that read columns work on pandas.
    """
    if isinstance(table, pa.Table | pa.RecordBatch):
        return table.to_pandas()
    return table
