"""Request and response models of the API: they validate input and they are the docs.

Identifiers accept JSON numbers too (``"user_id": 196`` is user ``"196"``), because many
platforms use numeric ids and the canonical schema stores every id as text; a user or item
id written here holds no "/" and is not "." or ".." (it is addressed as one path segment).
Timestamps are read as file ingest reads them (``valuerec.data.ingest``): ISO 8601 (an offset
is converted to UTC; no offset means UTC), ``YYYYMMDD`` (exactly eight digits: a date, as
text or as a number) or epoch seconds (at most eleven integer digits, so milliseconds are
refused, not misread); a time the store keeps may be at most a day ahead of the server's
clock.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from valuerec.data.ingest import EPOCH_SECONDS_RE, YYYYMMDD_RE, parse_timestamp_text

__all__ = [
    "MAX_BATCH_USERS",
    "MAX_EVENTS",
    "MAX_K",
    "MAX_VALUE_WEIGHT",
    "VALUE_WEIGHT_HELP",
    "EventIn",
    "ItemIn",
    "ItemPatch",
    "UserIn",
    "UserPatch",
]

MAX_K = 200
MAX_BATCH_USERS = 1000
MAX_EVENTS = 10_000
MAX_SESSION_EVENTS = 1000
MAX_PAGE = 1000


def _storable(value: str) -> str:
    """Refuse what no store can hold as text: the NUL character (PostgreSQL text cannot: a
    500 there, stored as is on DuckDB, so an answer would depend on the backend) and a lone
    UTF-16 surrogate such as the JSON escape ``\\ud800`` (Python's JSON parser takes it, but
    it is no Unicode text: DuckDB refused the write with a 500, and PostgreSQL stored it and
    then every page that held it failed to serialise)."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(value[exc.start])
        raise ValueError(
            f"must be Unicode text: \\u{bad:04x} is half of a UTF-16 surrogate pair"
        ) from None
    return value


Id = Annotated[
    str,
    # the pattern (a non-space character) tells clients what stripping implies: " " is no id
    StringConstraints(strip_whitespace=True, min_length=1, max_length=256, pattern=r"\S"),
    AfterValidator(_storable),
]


def _one_path_segment(value: str) -> str:
    """Refuse an id that no URL can address as one path segment: ``/users/{user_id}`` and
    ``/items/{item_id}`` take the id as one segment, and ``%2F`` is decoded before routing, so
    an id with a "/" could be written but never read, edited or deleted. The segments ``.``
    and ``..`` are removed by every URL client (browsers, so the dashboard, curl, requests,
    httpx) before sending: ``/users/./value`` is sent as ``/users/value``, another user's
    record. (File ingest still takes any id.)
    """
    where = " (/users/{user_id}, /items/{item_id}), so such an id could never be read or deleted"
    if "/" in value:
        raise ValueError("must not contain '/': ids are addressed as one URL path segment" + where)
    if value in (".", ".."):
        raise ValueError(
            f"must not be '.' or '..' (got {value!r}): ids are addressed as one URL path"
            " segment, and URL clients remove these two as dot segments" + where
        )
    return value


#: a user or item id written through the API: an :data:`Id` that can be addressed in a path
PathId = Annotated[Id, AfterValidator(_one_path_segment)]
PATH_ID_HELP = "No '/', not '.' or '..': ids are addressed as one path segment."
EventType = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, min_length=1, max_length=64, pattern=r"^[\w.:-]+$"
    ),
]
Text = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_storable)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


#: the deepest nesting of objects and arrays ``properties`` may hold
MAX_JSON_DEPTH = 64


def _plain_json(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse what standard JSON cannot say: NaN and Infinity (Python's parser takes them;
    DuckDB then dropped them to null, PostgreSQL's json type refused them with a 500), and
    in any key or string what no store holds as text (:func:`_storable`)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError("must hold no NaN or Infinity (not JSON numbers)") from None

    def walk(node: Any, depth: int) -> None:
        if depth > MAX_JSON_DEPTH and isinstance(node, dict | list):
            # stored, a deeper object failed every later read of its record (the response's
            # serialiser stops at a depth): GET /users and /items pages answered 500
            raise ValueError(f"must nest at most {MAX_JSON_DEPTH} objects or arrays deep")
        if isinstance(node, str):
            _storable(node)
        elif isinstance(node, dict):
            for key, child in node.items():
                _storable(str(key))
                walk(child, depth + 1)
        elif isinstance(node, list):
            for child in node:
                walk(child, depth + 1)

    walk(value, 1)
    return value


#: free-form attributes of an event, user or item: a JSON object, standard JSON only
Properties = Annotated[dict[str, Any], AfterValidator(_plain_json)]


#: ingest's rules for digits (one definition, ``valuerec.data.ingest``): eight are a date, up
#: to eleven (with an optional fraction) epoch seconds; any other number is refused
_YYYYMMDD = re.compile(YYYYMMDD_RE)
_EPOCH_SECONDS = re.compile(EPOCH_SECONDS_RE)
_NUMERIC = re.compile(r"-?[0-9]+(\.[0-9]*)?")
_EPOCH = datetime(1970, 1, 1)


def _like_ingest(value: Any) -> Any:
    """Numbers and text as ingest reads them; datetimes are left to pydantic.

    Pydantic alone reads ``20240101`` as epoch seconds (1970-08-23) and ``1700000000123`` as
    milliseconds, where ingest reads a date and quarantines the row: an event would get a
    different time depending on how it arrived. A number is read through its text, as ingest
    reads a numeric column, so ``20240101.0`` (a date held as a float) is a date there and
    here. Other text goes through ingest's own rule (:func:`parse_timestamp_text`): pydantic
    refused zone names, seconds offsets and ``2024-1-1``, which a file may hold, and took
    ``2024-01-01t10:00``, which a file may not.
    """
    if isinstance(value, bool):
        return value  # pydantic's own "not a datetime"
    if isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _NUMERIC.fullmatch(text):
            parsed = parse_timestamp_text(text)
            if parsed is None:
                raise ValueError(
                    f"cannot parse a timestamp from {text!r}: ISO 8601 (an offset or a zone "
                    "name is converted to UTC), YYYYMMDD or epoch seconds"
                )
            return parsed
    else:
        return value
    if _YYYYMMDD.fullmatch(text):
        try:
            return datetime.strptime(text[:8], "%Y%m%d")
        except ValueError:
            raise ValueError(f"eight digits are a YYYYMMDD date, and {text} is none") from None
    if _EPOCH_SECONDS.fullmatch(text):
        try:
            return _EPOCH + timedelta(seconds=float(text))
        except OverflowError:
            raise ValueError("epoch seconds out of range") from None
    raise ValueError(
        "a number is epoch seconds, at most 11 digits (not milliseconds), or a YYYYMMDD date"
    )


def _utc_naive(value: datetime | None) -> datetime | None:
    """The store keeps naive UTC: convert an aware time, take a naive one as UTC."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("timestamp out of range once converted to UTC") from None


Timestamp = Annotated[datetime, BeforeValidator(_like_ingest), AfterValidator(_utc_naive)]

#: how far ahead of the server's clock a stored time may be: producers' clocks and time zones
#: (the tolerance ``valuerec.features.split.future_events`` allows too)
CLOCK_SKEW = timedelta(days=1)
FUTURE_HELP = " At most a day ahead of the server's clock (skew tolerance); later is refused."


def _not_future(value: datetime) -> datetime:
    """Refuse a time after now + :data:`CLOCK_SKEW` (``value`` is naive UTC by now).

    A log cannot hold tomorrow's events, and one that did moved every default "now" (the
    value snapshot's as-of is the end of the log) past the real data, or overflowed it
    (``9999-12-31``), so that no value model loaded at the next start.
    """
    limit = datetime.now(UTC).replace(tzinfo=None) + CLOCK_SKEW
    if value > limit:
        raise ValueError(
            f"{value:%Y-%m-%dT%H:%M:%S} is in the future: at most a day after the server's"
            f" clock is accepted (now {limit - CLOCK_SKEW:%Y-%m-%dT%H:%M:%S} UTC)"
        )
    return value


#: a time the store keeps (an event's, a signup's): never more than a day in the future
PastTimestamp = Annotated[Timestamp, AfterValidator(_not_future)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


# -- events ------------------------------------------------------------------------------------
class EventIn(_In):
    """One event in the canonical schema (see ``valuerec.data.schema``)."""

    event_id: Id | None = Field(
        None,
        description="Producer's id: the dedupe key when given (otherwise the content is, and"
        " that needs a timestamp: see ``timestamp``).",
    )
    user_id: PathId = Field(
        description="Who acted (no '/', not '.' or '..': ids are path segments).",
    )
    item_id: PathId | None = Field(
        None, description="What they acted on (no '/', not '.' or '..'); null for item-less events."
    )
    event_type: EventType = Field(description="view, click, cart, purchase, rating, ...")
    timestamp: PastTimestamp | None = Field(
        None,
        description="When (ISO 8601, YYYYMMDD or epoch seconds); default: when the server got"
        " it, so a retry of an event with neither timestamp nor event_id is a new event."
        + FUTURE_HELP,
    )
    value: Finite | None = Field(None, description="Money amount (e.g. order value).")
    quantity: Finite | None = None
    rating: Finite | None = None
    properties: Properties | None = Field(None, description="Anything else, as an object.")


class EventBatchIn(BaseModel):
    """A batch of events; each is validated on its own (see ``EventIn``)."""

    # an unknown option ("dry_run", a misspelling) is refused as in every other body, not
    # ignored while the events are stored; not :class:`_In`: ``events`` holds raw JSON
    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(min_length=1, max_length=MAX_EVENTS)


class EventError(BaseModel):
    index: int = Field(description="Position of the event in the posted list (0-based).")
    field: str
    reason: str


class EventsOut(BaseModel):
    received: int
    accepted: int = Field(description="Events that passed validation.")
    stored: int = Field(description="Accepted events that were new.")
    duplicates: int = Field(description="Accepted events already in the store (not stored again).")
    rejected: int
    errors: list[EventError]


# -- recommendations ---------------------------------------------------------------------------
class RecItem(BaseModel):
    rank: int
    item_id: str
    score: float
    title: str | None
    reason: str


class UserRecommendations(BaseModel):
    user_id: str
    model: str
    version: str
    cold_start: bool = Field(description="True when the user has no history the model knows.")
    items: list[RecItem]


#: the largest value_weight accepted (the blend standardises both terms: beyond a few units
#: relevance no longer matters at all)
MAX_VALUE_WEIGHT = 100.0
VALUE_WEIGHT_HELP = (
    "Re-rank for long-term value: 0 is pure relevance; w > 0 orders the best relevance"
    " candidates by z(relevance) + w' z(P(purchase) x price), with w' = w x (1 - churn risk"
    " x LTV percentile) so at-risk valuable users keep the slate most likely to bring them"
    " back (valuerec.recommend.rerank.value_rerank; the policy benchmark's tuned value is 3)."
)


class _RecOptions(_In):
    k: int = Field(10, ge=1, le=MAX_K)
    model: Id | None = Field(None, description="Recommender; default: the server's default.")
    exclude_seen: bool = True
    category: Id | None = Field(None, description="Only items in this category.")
    value_weight: float = Field(
        0.0, ge=0.0, le=MAX_VALUE_WEIGHT, allow_inf_nan=False, description=VALUE_WEIGHT_HELP
    )


class BatchIn(_RecOptions):
    # path-segment ids: with write_back their exposures are stored, and a user with a '/'
    # could then never be read or deleted through /users/{user_id}
    user_ids: list[PathId] = Field(min_length=1, max_length=MAX_BATCH_USERS)
    write_back: bool = Field(False, description="Record the returned items as exposure events.")


class BatchOut(BaseModel):
    model: str
    version: str
    results: list[UserRecommendations]


class SessionEvent(_In):
    item_id: Id
    event_type: EventType = "view"
    timestamp: Timestamp | None = None


class SessionIn(_RecOptions):
    events: list[SessionEvent] = Field(
        max_length=MAX_SESSION_EVENTS, description="The visitor's events so far, any order."
    )


class SessionOut(BaseModel):
    model: str
    version: str
    cold_start: bool
    items: list[RecItem]


class SimilarItem(BaseModel):
    rank: int
    item_id: str
    score: float
    title: str | None


class SimilarOut(BaseModel):
    item_id: str
    model: str
    version: str
    items: list[SimilarItem]


# -- value and segments ------------------------------------------------------------------------
class ValueOut(BaseModel):
    user_id: str
    model: str
    version: str
    as_of: datetime = Field(
        description="Predictions use the events before this time: the end of the log when "
        "they were computed (at start-up, promotion, and again within value_refresh_seconds "
        "of new purchases)."
    )
    horizon_days: float
    pred_transactions: float
    pred_spend: float
    p_alive: float
    churn_probability: float = Field(description="1 - p_alive.")
    ltv: float
    ltv_low: float = Field(description="80% interval, lower end.")
    ltv_high: float = Field(description="80% interval, upper end.")
    segment: str


class SegmentOut(BaseModel):
    segment: str
    users: int
    share_users: float | None
    predicted_value: float
    share_value: float | None
    median_recency_days: float | None
    median_frequency: float | None


class SegmentsOut(BaseModel):
    model: str
    version: str
    as_of: datetime
    segments: list[SegmentOut]


class SegmentUser(BaseModel):
    user_id: str
    ltv: float
    p_alive: float
    pred_spend: float
    frequency: float
    days_since_last: float
    total_spend: float


class SegmentUsersOut(BaseModel):
    segment: str
    items: list[SegmentUser]
    next_cursor: str | None


# -- users and items ---------------------------------------------------------------------------
class UserIn(_In):
    user_id: PathId = Field(description=PATH_ID_HELP)
    signup_time: PastTimestamp | None = Field(
        None, description="When they signed up." + FUTURE_HELP
    )
    properties: Properties | None = None


class UserPatch(_In):
    signup_time: PastTimestamp | None = Field(
        None, description="When they signed up." + FUTURE_HELP
    )
    properties: Properties | None = None


class UserOut(BaseModel):
    user_id: str
    signup_time: datetime | None
    properties: dict[str, Any] | None
    events: int = Field(description="Events stored for this user.")


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class ItemIn(_In):
    item_id: PathId = Field(description=PATH_ID_HELP)
    title: Text | None = None
    text: Text | None = None
    category: Text | None = Field(None, description="One or several, separated by '|'.")
    price: Finite | None = None
    properties: Properties | None = None
    hidden: bool = False


class ItemPatch(_In):
    title: Text | None = None
    text: Text | None = None
    category: Text | None = None
    price: Finite | None = None
    properties: Properties | None = None
    hidden: bool | None = Field(None, description="true: never recommend it, from now on.")


class ItemOut(BaseModel):
    item_id: str
    title: str | None
    text: str | None
    category: str | None
    price: float | None
    properties: dict[str, Any] | None
    hidden: bool


class ItemPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None


# -- models and service ------------------------------------------------------------------------
class VersionInfo(BaseModel):
    version: str
    created_at: str | None
    fit_seconds: float | None
    data_fingerprint: str | None
    metrics: dict[str, Any] | None
    error: str | None = Field(
        None,
        description="Why this version's metadata cannot be read or shown whole (the file "
        "named); null when it can.",
    )


class ModelInfo(BaseModel):
    name: str = Field(description="Artifact name: rec-<model> or value-<model>.")
    kind: str
    current_version: str | None = Field(
        description="The version the CURRENT pointer names; null when CURRENT is missing, "
        "unreadable or names a version that does not exist (`error` says which)."
    )
    serving_version: str | None = Field(
        description="The version this server answers with (null: none); it differs from "
        "current_version for up to sync_seconds after a promotion elsewhere, or while the "
        "current version cannot be loaded (`error` says why)."
    )
    versions: list[VersionInfo]
    error: str | None = Field(
        None,
        description="Why current_version is null, or why the current version is not the one "
        "served (it failed to load: the exception, and what is served instead); null "
        "otherwise.",
    )


class ModelsOut(BaseModel):
    models: list[ModelInfo]


class PromoteIn(_In):
    version: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class SwapOut(BaseModel):
    name: str
    version: str
    previous_version: str | None


class HealthOut(BaseModel):
    status: str
    recommenders: dict[str, str] = Field(description="Loaded recommenders and their versions.")
    value_model: str | None
    users_in_memory: int


class ErrorDetail(BaseModel):
    location: str | None = None
    field: str
    reason: str
    index: int | None = None


class ErrorOut(BaseModel):
    error: str
    message: str
    details: list[ErrorDetail] | None = None


class UserDeleted(BaseModel):
    user_id: str
    events_deleted: int


class ItemDeleted(BaseModel):
    item_id: str
    hidden: bool = Field(True, description="A deleted item is never recommended again.")
