"""Serving settings: what each event type means, limits, which models to serve.

Settings are data, not code, so that a platform with its own event vocabulary (``wishlist``,
``skip``, ``thumbs_down``) can say what counts as interest without a patch: a TOML or JSON file
passed as ``valuerec serve --config PATH`` (or named by ``$VALUEREC_SERVE_CONFIG``). Every key is
optional; for example::

    default_model = "ease"
    history_limit = 500

    [events]
    positive = ["view", "cart", "purchase", "wishlist"]
    exposure = ["exposure"]
    negative = ["thumbs_down"]
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from valuerec.features.split import EXPOSURE_EVENT_TYPES
from valuerec.value.base import MAX_HORIZON_DAYS

__all__ = ["ANY", "ConfigError", "EventRoles", "ServeSettings", "load_settings"]

#: in ``positive``: every event type not listed as exposure or negative
ANY = "*"
CONFIG_ENV = "VALUEREC_SERVE_CONFIG"


class ConfigError(ValueError):
    """A settings file that cannot be read or does not validate."""


def _labels(values: tuple[str, ...]) -> tuple[str, ...]:
    # event types are stored lower-cased and trimmed (see data.schema Kind.LABEL)
    return tuple(dict.fromkeys(v.strip().lower() for v in values if v.strip()))


def model_name(value: str, prefix: str) -> str:
    """A configured model name as a request's ``?model=`` is read: trimmed, lower-cased,
    without its artifact prefix (``rec-`` / ``value-``, see :mod:`valuerec.serve.registry`,
    which imports this module), so ``Popularity`` and ``rec-popularity`` name ``popularity``."""
    name = value.strip().lower().removeprefix(prefix)
    if not name:
        raise ValueError("needs a model name")
    return name


class EventRoles(BaseModel):
    """Which event types are interest (positive), impressions (exposure) or disinterest.

    * positive events form a user's history: they change the next recommendation and their
      items count as seen; ``"*"`` means every type not listed below (the default, so that a
      new type such as ``wishlist`` counts without a settings change);
    * exposure events are what the server itself writes when ``write_back=true`` (the first
      exposure type is used) and never count as interest;
    * a negative event (``dislike``) keeps its item out of that user's recommendations.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    positive: tuple[str, ...] = (ANY,)
    exposure: tuple[str, ...] = EXPOSURE_EVENT_TYPES
    negative: tuple[str, ...] = ("dislike", "not_interested")

    @field_validator("positive", "exposure", "negative")
    @classmethod
    def _normalise(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _labels(values)

    @model_validator(mode="after")
    def _disjoint(self) -> EventRoles:
        if not self.exposure:
            raise ValueError("events.exposure needs at least one type (write_back uses the first)")
        if ANY in self.exposure or ANY in self.negative:
            raise ValueError(f"{ANY!r} is allowed in events.positive only")
        if ANY in self.positive and len(self.positive) > 1:
            raise ValueError(f"events.positive: {ANY!r} already means every other type")
        for a, b in (("positive", "exposure"), ("positive", "negative"), ("exposure", "negative")):
            both = set(getattr(self, a)) & set(getattr(self, b))
            if both:
                raise ValueError(f"event type(s) {sorted(both)} are both {a} and {b}")
        return self

    @property
    def any_positive(self) -> bool:
        return ANY in self.positive

    @property
    def write_back_type(self) -> str:
        return self.exposure[0]

    def positive_types(self, event_types: Iterable[str]) -> list[str]:
        """The given event types that mean interest: what recommenders learn from (``train``,
        ``recommend fit`` and ``evaluate``, the report), never the exposures the server logs."""
        return [t for t in event_types if self.role(t) == "positive"]

    def role(self, event_type: str) -> str | None:
        """``positive``, ``exposure``, ``negative`` or None (an event that means nothing here)."""
        t = event_type.strip().lower()
        if t in self.exposure:
            return "exposure"
        if t in self.negative:
            return "negative"
        if self.any_positive or t in self.positive:
            return "positive"
        return None


class ServeSettings(BaseModel):
    """Everything ``valuerec serve`` can be told besides where the store is."""

    model_config = ConfigDict(extra="forbid")

    events: EventRoles = EventRoles()
    default_model: str = Field(
        "ease", description="Recommender served when a request names none (if it is loaded)."
    )
    value_model: str | None = Field(
        None,
        description="Value model to serve; default: the first of the preference order whose "
        "current version loads.",
    )
    value_horizon_days: float | None = Field(
        None,
        gt=0,
        le=MAX_HORIZON_DAYS,
        allow_inf_nan=False,
        description="Horizon of value predictions, in days (at most a century); default: the "
        "model's holdout.",
    )
    history_limit: int = Field(
        1000,
        ge=1,
        description="Most recent positive events kept in order per user for scoring (what "
        "sequence models read); items seen only before them are kept once each, so they stay "
        "masked and in order-blind models' history.",
    )
    exposure_flush_seconds: float = Field(
        1.0,
        gt=0,
        # finite and at most a day: the writer thread waits this long between flushes, and a
        # wait past threading.TIMEOUT_MAX (inf, 1e12) kills it, leaving exposures unwritten
        le=86_400,
        allow_inf_nan=False,
        description="How often buffered write-back exposures are written, in seconds (at "
        "most a day).",
    )

    value_refresh_seconds: float = Field(
        60.0,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="After new purchases, the served value model predicts every customer "
        "again (LTV, churn, segments; new buyers get a prediction) at most this often, in "
        "seconds, in the background; 0: only at start-up and promotion.",
    )

    sync_seconds: float = Field(
        1.0,
        ge=0,
        # well inside the feed's retention (serve/follow.py): a follower that reads less
        # often than every half hour reloads everything each time
        le=600,
        allow_inf_nan=False,
        description="How often the server follows other processes, in seconds: the models' "
        "CURRENT versions (promotions elsewhere) and, on a PostgreSQL store, the change feed "
        "of what other servers and `valuerec ingest` wrote (histories, the catalogue, hidden "
        "items, deleted users); at most 600; 0: never (this server's own writes and "
        "promotions only).",
    )

    @field_validator("default_model")
    @classmethod
    def _recommender_name(cls, value: str) -> str:
        return model_name(value, "rec-")

    @field_validator("value_model")
    @classmethod
    def _value_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return model_name(value, "value-")
        except ValueError:
            raise ValueError("needs a model name (leave it out for the best one)") from None


def load_settings(path: str | os.PathLike[str] | None = None) -> ServeSettings:
    """Settings from a TOML or JSON file (default: ``$VALUEREC_SERVE_CONFIG``, else defaults)."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return ServeSettings()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte order mark is ignored, as ingest does
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read settings {p}: {exc}") from None
    try:
        return ServeSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings in {p}: {problems}") from None
