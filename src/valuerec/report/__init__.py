"""``valuerec report``: one self-contained HTML file with the figures analysts look at.

Data summary, customer-value model comparison and charts, recommendation model comparison on
both protocols and example users, built from a store and its saved model artifacts. The
modules: :mod:`.summary`, :mod:`.value` and :mod:`.recs` compute, :mod:`.sections` arranges,
:mod:`.charts` draws (matplotlib, SVG), :mod:`.html` renders, :mod:`.build` ties them together
and :mod:`.cli` is the command.

The names below are imported on first use, so that ``valuerec --help`` does not pay for
matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["OutPathError", "ReportError", "ReportOptions", "build_report", "write_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("valuerec.report.build"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
