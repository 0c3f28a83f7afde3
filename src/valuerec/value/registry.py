"""Value models by name: the one table the CLI, the benchmark and the serving layer share.

A name maps to a zero-argument factory so that every caller builds the same configuration of a
model (``"bgnbd"`` is always BG/NBD + Gamma-Gamma with the default penalty), and so that a
model's dependencies are imported only when it is asked for: LightGBM is not a core
dependency, and the sequence Transformer pulls in torch, which would make every
``valuerec`` command slow to start. :func:`make_model` turns a missing dependency into a
clear :class:`ValueError` that names the model and the reason.

A new model plugs in by adding one entry here; nothing else needs to know its class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from valuerec.value.base import ValueModel
from valuerec.value.models import BTYDValueModel, NaiveValueModel

__all__ = ["MODELS", "ModelUnavailableError", "make_model", "model_names", "use_snapshots"]


class ModelUnavailableError(ValueError):
    """A registered model whose module cannot be imported here (missing dependency...)."""


def _lazy(module: str, attr: str) -> Callable[[], ValueModel]:
    """A factory that imports ``module.attr`` on first call and builds it with defaults."""

    def make() -> ValueModel:
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelUnavailableError(
                f"cannot import {attr} from {module}: {type(exc).__name__}: {exc}"
            ) from exc
        return cls()

    make.__qualname__ = make.__name__ = f"make_{attr}"
    make.__doc__ = f"Build {module}.{attr} with its default parameters."
    return make


MODELS: dict[str, Callable[[], ValueModel]] = {
    "naive": NaiveValueModel,
    "bgnbd": lambda: BTYDValueModel("bgnbd"),
    "pareto": lambda: BTYDValueModel("pareto"),
    "lightgbm": _lazy("valuerec.value.gbm", "LightGBMValueModel"),
    "transformer": _lazy("valuerec.value.transformer", "TransformerValueModel"),
    "ensemble": _lazy("valuerec.value.ensemble", "EnsembleValueModel"),
}


def model_names() -> list[str]:
    """Registered model names, in registry order (cheapest first)."""
    return list(MODELS)


def make_model(name: str) -> ValueModel:
    """A fresh, unfitted model for ``name`` (case-insensitive).

    Raises:
        ValueError: ``name`` is not registered (the message lists the names), or its module
            cannot be imported (:class:`ModelUnavailableError`, a ``ValueError``).
    """
    key = str(name).strip().lower()
    if key not in MODELS:
        raise ValueError(f"unknown value model {name!r}: choose from {', '.join(MODELS)}")
    try:
        return MODELS[key]()
    except ModelUnavailableError as exc:
        raise ModelUnavailableError(f"value model {key!r} is unavailable: {exc}") from exc


def use_snapshots(model: ValueModel, snapshots: int) -> bool:
    """Have ``model`` also train on ``snapshots`` earlier monthly cut-offs where it can.

    Rolling origins (``value.base.snapshot_data``) are what lets the sequence Transformer read
    drifting purchase rates; LightGBM and the BTYD models gain nothing from them and take none.
    An ensemble passes them to its members that take them. Returns whether any part of
    ``model`` will use them, so a caller can say so rather than drop the request silently.
    """
    if snapshots < 0:
        raise ValueError(f"snapshots must be >= 0, got {snapshots}")
    members = getattr(model, "_members", None)
    if callable(members):  # an ensemble: its members, built now if they are the defaults
        model.members = members()  # type: ignore[attr-defined]
        used = [use_snapshots(m, snapshots) for m in model.members]  # type: ignore[attr-defined]
        return any(used)
    if hasattr(model, "snapshots"):
        model.snapshots = snapshots  # type: ignore[attr-defined]
        return True
    return False
