"""What a report is made of, independent of how it is drawn: sections, tables, charts, notes.

The computations (:mod:`.summary`, :mod:`.value`, :mod:`.recs`) produce numbers, the section
builders (:mod:`.sections`) arrange them into these objects, and :mod:`.html` renders them.
Keeping the document a plain data structure means the HTML can change without touching a
figure, and tests can check a figure against its source without scraping formatted text:
every numeric :class:`Cell` keeps the exact value it was formatted from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Cell", "Chart", "Section", "StorePart", "Table", "fmt_number", "num", "text"]


def fmt_number(value: Any, *, digits: int = 3, pct: bool = False, thousands: bool = True) -> str:
    """How the report prints a number: ``-`` for missing or non-finite, ``12.3%`` for shares."""
    if value is None:
        return "-"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "-"
    if pct:
        return f"{100.0 * x:.{max(digits - 2, 1)}f}%"
    return f"{x:,.{digits}f}" if thousands else f"{x:.{digits}f}"


@dataclass(frozen=True)
class Cell:
    """One table cell: the text shown and, for a number, the exact value behind it."""

    text: str
    value: float | None = None
    key: str | None = None  # what the number is (a metric name), for machine readers

    @property
    def numeric(self) -> bool:
        return self.value is not None


def num(
    value: Any, key: str | None = None, *, digits: int = 3, pct: bool = False, integer: bool = False
) -> Cell:
    """A numeric cell; NaN / None show as ``-`` and carry no value."""
    if value is None:
        return Cell("-", None, key)
    x = float(value)
    if not math.isfinite(x):
        return Cell("-", None, key)
    shown = f"{round(x):,d}" if integer else fmt_number(x, digits=digits, pct=pct)
    return Cell(shown, x, key)


def text(value: Any) -> Cell:
    """A text cell (``-`` for a missing value)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return Cell("-")
    return Cell(str(value))


@dataclass
class Table:
    """A titled table; ``row_keys`` name each row (a model, a segment) for machine readers."""

    id: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    row_keys: list[str] = field(default_factory=list)


@dataclass
class Chart:
    """A rendered chart: an SVG image, its title, axis labels and a one-line reading guide."""

    id: str
    title: str
    xlabel: str
    ylabel: str
    caption: str
    svg: bytes


@dataclass
class Section:
    """A heading with paragraphs, notes (what is missing or estimated), tables and charts.

    ``kind`` says what the section is about (``data``, ``value``, ``recommendations``) so that
    a reader of the HTML can find it whatever its title; ``children`` nest sub-sections.
    """

    id: str
    kind: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: list[Table | Chart] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)
    available: bool = True


@dataclass
class StorePart:
    """The sections of one store (a report may cover several: CDNOW and MovieLens)."""

    id: str
    label: str
    path: str
    sections: list[Section]
