"""The canonical data model of valuerec: events, items and users.

Every layer (ingest, store, features, models, API) speaks these three tables and nothing
else, so this module is the single place where a column, its type and its meaning are defined.
Field kinds drive validation and coercion in :mod:`valuerec.data.ingest` and the DDL in
:mod:`valuerec.data.store`; adding a column here is all it takes to carry it end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
