"""The report's defaults, read from the commands that own them rather than copied.

A report that chose its own holdout window, test share or recommender list would show figures
nobody else can reproduce: ``valuerec value fit`` and ``valuerec recommend evaluate`` would
print different numbers for "the same" evaluation. The defaults are therefore read from those
commands' signatures, so changing a command's default changes the report with it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from valuerec import cli_recommend, cli_serve, cli_value

__all__ = [
    "REC_K",
    "REC_MODELS",
    "TRAIN_MAX_HOLDOUT_DAYS",
    "VALUE_FALLBACK_MODELS",
    "VALUE_FEATURED_MODEL",
    "VALUE_HOLDOUT_DAYS",
    "VALUE_TEST_FRACTION",
]


def _default(command: Callable[..., Any], parameter: str) -> Any:
    """The default value of ``parameter`` in a Typer command function's signature."""
    value = inspect.signature(command).parameters[parameter].default
    if value is inspect.Parameter.empty:  # pragma: no cover - a command lost its default
        raise LookupError(f"{command.__name__} has no default for {parameter!r}")
    return value


#: label window of ``valuerec value fit`` (days)
VALUE_HOLDOUT_DAYS: int = _default(cli_value.fit, "holdout_days")
#: the longest label window ``valuerec train`` gives by default (half the log, at most this)
TRAIN_MAX_HOLDOUT_DAYS: int = cli_serve.MAX_HOLDOUT_DAYS
#: share of customers ``valuerec value fit`` holds out for scoring
VALUE_TEST_FRACTION: float = _default(cli_value.fit, "test_fraction")
#: the model ``valuerec value segments`` uses when none is named
VALUE_FEATURED_MODEL: str = _default(cli_value.segments, "model")
#: models fitted on the fly when a store has no scored value artifacts: the cheap baselines
VALUE_FALLBACK_MODELS: tuple[str, ...] = ("naive", "bgnbd", "pareto")
#: recommenders ``valuerec recommend fit`` saves by default: the baseline and the main model
REC_MODELS: str = _default(cli_recommend.fit, "models")
#: list length of ``valuerec recommend evaluate``
REC_K: int = _default(cli_recommend.evaluate, "k")
