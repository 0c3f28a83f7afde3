"""Opaque cursors for paged lists: keyset positions, not offsets.

A cursor encodes the list it belongs to and the sort key of the last row returned
(``{"list": "users", "after": "u42"}``, or ``{"list": "segment:champions", "ltv": 12.5,
"after": "u42"}`` for lists ordered by value): a cursor passed to another list is refused,
not read as a position there (which gave a wrong, empty last page). Keyset paging, unlike an
offset, neither skips nor repeats rows when rows are added or deleted between two pages, and
costs the same on page 1,000 as on page 1. The cursor is URL-safe base64 JSON: opaque to
clients (they pass back ``next_cursor`` as given), easy to debug for us.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from typing import Any

from valuerec.serve.errors import ApiError
from valuerec.serve.schemas import _storable

__all__ = ["decode_cursor", "encode_cursor", "keyset_page"]


def encode_cursor(position: dict[str, Any], list_name: str) -> str:
    """The cursor of ``position`` in the list ``list_name``."""
    raw = json.dumps({**position, "list": list_name}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _finite_number(x: Any) -> bool:
    try:  # an integer of 400 digits overflows a float
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    except OverflowError:
        return False


def _storable_text(x: Any) -> bool:
    """Text a store can compare with its ids (a lone surrogate failed in DuckDB: a 500)."""
    if not isinstance(x, str):
        return False
    try:
        _storable(x)
    except ValueError:
        return False
    return True


#: what each key of a position must hold: the id of the last row is text, a value a finite
#: number (JSON allows neither NaN nor a list there, but a hand-made cursor may hold anything)
_KEY_CHECKS: dict[str, Callable[[Any], bool]] = {
    "after": _storable_text,
    "ltv": _finite_number,
}


def decode_cursor(
    cursor: str | None, list_name: str, keys: tuple[str, ...] = ("after",)
) -> dict[str, Any] | None:
    """The position in ``cursor`` (None for the first page); a 422 naming ``cursor`` if bad.

    Bad is anything :func:`encode_cursor` would not have written for the list ``list_name``:
    not base64 JSON, another list's cursor, other keys, or a key holding the wrong type
    (which would otherwise reach a SQL comparison or a numpy mask).
    """
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        position = None
    if (
        not isinstance(position, dict)
        or position.pop("list", None) != list_name
        or set(position) != set(keys)
        or not all(_KEY_CHECKS[k](position[k]) for k in keys)
    ):
        raise ApiError(
            422,
            "invalid cursor: pass back the next_cursor of the previous page unchanged",
            [{"location": "query", "field": "cursor", "reason": "not a cursor of this list"}],
        )
    return position


def keyset_page(
    fetch: Callable[[Any, int], list[dict[str, Any]]],
    key: str,
    limit: int,
    cursor: str | None,
    list_name: str,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a list ordered by ``key``, and the cursor of the next (None on the last).

    ``fetch(after, n)`` returns up to ``n`` rows whose ``key`` is greater than ``after`` (all
    from the start when ``after`` is None). One row more than the page is asked for: whether it
    exists says if there is a next page, without a count query.
    """
    pos = decode_cursor(cursor, list_name)
    rows = fetch(pos["after"] if pos else None, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor({"after": rows[-1][key]}, list_name) if more else None
