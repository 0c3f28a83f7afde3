"""Render a report document to one self-contained HTML file.

Self-contained means it opens from an e-mail attachment or a laptop with no network: the
style sheet (``report.css``) is inlined by the template (``report.html.j2``), every chart is
an SVG embedded as a ``data:`` URI (an ``<img>``, not inline ``<svg>``, so one chart's ids and
styles cannot leak into another or into the page), and nothing is loaded from anywhere.
Jinja2 with autoescaping keeps item titles and user ids from the data from being read as
markup.

For machines (tests, the later browser tests), every section carries ``data-kind``, every
table row ``data-key`` and every numeric cell ``data-key`` (the metric) and ``data-value``
(the exact number, ``repr`` of the float); every chart is a ``<figure class="chart">`` with
its title and axis labels as data attributes.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from importlib import resources

import jinja2
import markupsafe

from valuerec import __version__

from .document import Chart, StorePart, Table

__all__ = ["render"]

_RESOURCES = resources.files("valuerec.report")
_CODE = re.compile(r"`([^`]+)`")


def _code(value: str) -> markupsafe.Markup:
    """Escape text, then show `backticked` commands as code (how the sections write them)."""
    return markupsafe.Markup(_CODE.sub(r"<code>\1</code>", str(markupsafe.escape(value))))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    env.filters["code"] = _code
    env.filters["repr"] = lambda value: repr(float(value))
    env.tests["chart"] = lambda block: isinstance(block, Chart)
    env.tests["table"] = lambda block: isinstance(block, Table)
    return env


def render(title: str, parts: list[StorePart], generated: datetime) -> str:
    """The report as one HTML document."""
    template = _environment().from_string(
        _RESOURCES.joinpath("report.html.j2").read_text(encoding="utf-8")
    )
    return template.render(
        title=title,
        parts=parts,
        generated=f"{generated:%Y-%m-%d %H:%M} UTC",
        version=__version__,
        css=_RESOURCES.joinpath("report.css").read_text(encoding="utf-8"),
    )
