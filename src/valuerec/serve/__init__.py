"""The serving layer: a REST API over the store and the model artifacts (``valuerec serve``).

Modules: ``app`` (factory), ``routes`` (endpoints), ``service`` (what endpoints do),
``state`` (in-memory histories and catalogue), ``registry`` (loaded models, hot swap),
``repository`` (all SQL), ``keys`` and ``auth`` (API keys, roles, the check), ``schemas``
(pydantic models), ``config`` (settings), ``metrics`` (Prometheus), ``exposures``
(write-back), ``paging`` (cursors), ``errors`` (JSON errors).

``create_app`` is imported on first use, so that ``valuerec keys ...`` and other commands
that only need keys or settings do not pay for importing the web framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from valuerec.serve.config import ServeSettings, load_settings

if TYPE_CHECKING:
    from valuerec.serve.app import create_app

__all__ = ["ServeSettings", "create_app", "load_settings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from valuerec.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'valuerec.serve' has no attribute {name!r}")
