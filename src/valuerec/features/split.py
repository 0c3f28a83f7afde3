"""Temporal calibration/holdout splits: the one place that says where "now" is in a backtest.

Every feature is computed from events strictly before ``calibration_end``; every label from
``[calibration_end, holdout_end)``. Keeping the cut in one object means a feature can't quietly
peek past it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd

from valuerec.data.store import Store

TimeLike = str | date | datetime | pd.Timestamp


class SplitError(ValueError):
    """A split that does not fit the data (calibration end outside it, empty period...)."""


#: what the server logs when it shows a slate (``write_back``; the serving settings' default
#: exposure type): what a user was shown, not something they did
EXPOSURE_EVENT_TYPES = ("exposure",)


def log_end(store: Store, exposures: Sequence[str] = EXPOSURE_EVENT_TYPES) -> datetime:
    """The day after the last event: "now" when scoring today's customers.

    Midnight after the last event's day, so a window ending here holds that whole day.
    Exposures (events of the types ``exposures``; a server passes those of its settings) are
    not read: a server writing them back stamps them with today's date, which would move
    "now" past every purchase of a log that ended before (no refit could then find a
    holdout, and every prediction would be as of a year without data).
    """
    (last,) = store.con.execute(
        "SELECT max(timestamp) FROM events WHERE event_type NOT IN (SELECT unnest(?))",
        [list(exposures)],
    ).fetchone()
    if last is None:
        raise SplitError("the store has no events (besides exposures)")
    ts = pd.Timestamp(last)
    if ts.date() == date.max:  # no day follows it: midnight after it would be year 10000
        raise SplitError(
            f"the last event is dated {ts:%Y-%m-%d %H:%M:%S}, the last day a time can name: "
            "the log has no end to score as of; fix or delete such events, or give the "
            "cut-off explicitly (--calibration-end / --as-of)"
        )
    return (ts.normalize() + pd.Timedelta(days=1)).to_pydatetime()


def log_end_or_none(
    store: Store, exposures: Sequence[str] = EXPOSURE_EVENT_TYPES
) -> datetime | None:
    """:func:`log_end`, or None when the log has no end (an event dated 9999-12-31) or no
    events: for checks against an end that a given cut-off does not need."""
    try:
        return log_end(store, exposures)
    except SplitError:
        return None


#: what :func:`future_events` tells a command that takes a cut-off to do
CUT_OFF_ADVICE = "or give the cut-off explicitly (--calibration-end / --as-of)"


def future_events(
    store: Store, now: datetime | None = None, advice: str = CUT_OFF_ADVICE
) -> str | None:
    """A warning when events are dated after ``now`` (default: the wall clock, UTC), else None.

    ``advice`` ends it: what the caller's user can do besides fixing the data (the options
    of the value commands by default; the report, whose cut-off comes from the saved models,
    has none, and passes "").

    A log cannot hold tomorrow's events, so they are data errors (a wrong year, milliseconds
    read as seconds). They are kept, not dropped, but they move every default "now"
    (:func:`log_end`, :meth:`TemporalSplit.last_days`) past the real data: one purchase dated
    2030 puts a default holdout in 2030, where nothing can be scored. Callers that choose a
    default split say so. A day of slack covers producers' clocks and time zones.
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    n, latest = store.con.execute(
        "SELECT count(*), max(timestamp) FROM events WHERE timestamp > ?::TIMESTAMP",
        [now + timedelta(days=1)],
    ).fetchone()
    if not n:
        return None
    return (
        f"{n} event{'s are' if n > 1 else ' is'} dated after today (latest {latest:%Y-%m-%d}): "
        "a default cut-off is the end of the log, so it moves past them; fix or delete them"
        + (f", {advice}" if advice else "")
    )


def to_timestamp(when: TimeLike, name: str = "time") -> datetime:
    """A naive-UTC ``datetime`` (the store's convention) from text, a date or a datetime."""
    try:
        ts = pd.Timestamp(when)
    except (TypeError, ValueError) as exc:
        raise SplitError(f"{name} is not a valid time: {when!r} ({exc})") from None
    if pd.isna(ts):
        raise SplitError(f"{name} is not a valid time: {when!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    # pandas holds year 0 and negative years (its non-nanosecond units), and a zone can move
    # a time past 9999 in UTC: Python's datetime, the store's times, holds years 1 to 9999
    # only, and to_pydatetime() raised a bare "year 0 is out of range"
    if not 1 <= ts.year <= 9999:
        raise SplitError(
            f"{name} is not a valid time: {when!r} (year {ts.year} in UTC; times run from "
            "year 1 to 9999)"
        )
    # the store keeps microseconds: a cut with nanoseconds (a quantile of times) is floored
    # to them, as pandas would, without its "discarding nanoseconds" warning
    return ts.floor("us").to_pydatetime()


def when_text(ts: datetime) -> str:
    """A time for a message: the date, with the time of day when there is one (two times
    on one day must not read as the same)."""
    ts = pd.Timestamp(ts)
    # not strftime's %Y: glibc does not pad years below 1000 ("1-01-01" for year 1)
    day = f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}"
    return day if ts == ts.normalize() else f"{day} {ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}"


def check_within_log(
    store: Store,
    when: datetime,
    name: str = "the cut-off",
    exposures: Sequence[str] = EXPOSURE_EVENT_TYPES,
) -> None:
    """Raise :class:`SplitError`, naming ``name`` (the option the caller was given, e.g.
    ``--as-of``), when ``when`` is after the end of the log: there is nothing to score as of it.

    Checked before the split is built, so that a cut-off such as 9999-12-31 is refused for
    this, its real cause, rather than for its holdout running past the last date a time holds.
    A log without an end (no events, or one dated 9999-12-31) has no such limit.
    """
    end = log_end_or_none(store, exposures)
    if end is not None and when > end:
        raise SplitError(
            f"{name} {when_text(when)} is after the end of the log "
            f"({when_text(end - timedelta(days=1))}): there is nothing to score it on"
        )


#: the longest holdout, and prediction horizon, there is (a century): LTV sums one
#: discounted term per 30-day period, and no customer's value is forecast further than that
MAX_HORIZON_DAYS = 36_525.0


def _check_holdout_days(holdout_days: int) -> None:
    """Raise :class:`SplitError` unless the holdout is 1 day to a century.

    Also the limit of every prediction's horizon, which defaults to the holdout: a longer one
    overflowed the date arithmetic with a traceback, or was refused only after every model
    had been fitted.
    """
    if not 1 <= int(holdout_days) <= MAX_HORIZON_DAYS:
        raise SplitError(
            f"holdout_days must be from 1 to {MAX_HORIZON_DAYS:,.0f} days (a century), "
            f"got {holdout_days!r}"
        )


@dataclass(frozen=True)
class TemporalSplit:
    """Calibration ends at ``calibration_end`` (exclusive); the holdout lasts ``holdout_days``."""

    calibration_end: datetime
    holdout_days: int

    def __init__(self, calibration_end: TimeLike, holdout_days: int) -> None:
        _check_holdout_days(holdout_days)
        end = to_timestamp(calibration_end, "calibration_end")
        try:
            end + timedelta(days=int(holdout_days))
        except (OverflowError, ValueError):
            # "the cut-off": a fit's calibration_end, or the time scored as of (--as-of,
            # which callers check against the end of the log first: check_within_log)
            raise SplitError(
                f"the cut-off {when_text(end)} + {int(holdout_days)} days (the holdout) is past "
                "the last date a timestamp can hold (9999-12-31)"
            ) from None
        object.__setattr__(self, "calibration_end", end)
        object.__setattr__(self, "holdout_days", int(holdout_days))

    @property
    def holdout_end(self) -> datetime:
        return self.calibration_end + timedelta(days=self.holdout_days)

    def check(
        self, store: Store, event_types: tuple[str, ...] = ("purchase",), *, labels: bool = True
    ) -> None:
        """Raise :class:`SplitError` unless calibration has events and the end lies in the data.

        ``labels``: the holdout must start before the last such event (something to hold
        out). Without labels (scoring customers as of the cut) the cut may lie anywhere up to
        the end of the log, e.g. after the views that follow the last purchase.
        """
        first, last, n = store.con.execute(
            "SELECT min(timestamp), max(timestamp), count(*) FROM events "
            "WHERE event_type IN (SELECT unnest(?::VARCHAR[]))",
            [list(event_types)],
        ).fetchone()
        kinds = "/".join(event_types)
        if not n:
            found = list(store.event_type_counts().items())[:8]
            have = ", ".join(f"{t} ({c:,})" for t, c in found) or "none"
            raise SplitError(
                f"the store has no {kinds} events (its event types: {have}); value models "
                f"read events of type {kinds}: ingest purchases under that type"
            )
        span = f"the {kinds} events run from {when_text(first)} to {when_text(last)}"
        if self.calibration_end <= first:
            raise SplitError(
                # "the cut-off": a fit's calibration end, or the time scored as of (--as-of)
                f"the cut-off {when_text(self.calibration_end)} is not after the first "
                f"{kinds} event ({when_text(first)}): the calibration period would be empty; "
                f"{span}"
            )
        if not labels:
            check_within_log(store, self.calibration_end)
        elif self.calibration_end > last:
            raise SplitError(
                f"calibration_end {when_text(self.calibration_end)} is after the last {kinds} "
                f"event ({when_text(last)}): there is nothing to hold out; {span}"
            )

    def holdout_purchases(self, store: Store) -> int:
        """Purchase events in the holdout window: 0 means there is nothing to score against."""
        (n,) = store.con.execute(
            "SELECT count(*) FROM events WHERE event_type = 'purchase' "
            "AND timestamp >= ?::TIMESTAMP AND timestamp < ?::TIMESTAMP",
            [self.calibration_end, self.holdout_end],
        ).fetchone()
        return int(n)

    @classmethod
    def last_days(cls, store: Store, holdout_days: int) -> TemporalSplit:
        """The split whose holdout is the last ``holdout_days`` of the log (for production fits)."""
        _check_holdout_days(holdout_days)  # before the date arithmetic below
        return cls(log_end(store) - timedelta(days=int(holdout_days)), holdout_days)
