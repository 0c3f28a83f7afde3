"""Early stopping on a validation score: keep the best weights, stop when they stop improving.

Every network valuerec trains (SASRec, Mult-VAE, the value Transformer) chooses its number
of epochs this way, on validation data only, so "trained to convergence" means the same thing
for each of them.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Tracks a higher-is-better validation score across checks.

    A loss (lower is better) is checked as ``-loss``. ``check(score, net, epoch)`` remembers a
    copy of ``net``'s weights whenever the score beats the best by more than ``min_delta`` and
    returns True once ``patience`` checks in a row brought no improvement; ``restore(net)``
    loads the best weights back (a no-op when nothing was checked).
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.min_delta = min_delta  # an improvement must beat the best by more than this
        self.best = float("-inf")
        self.best_epoch: int | None = None
        self.bad = 0
        self._state: dict[str, Any] | None = None

    def check(self, score: float, net: nn.Module, epoch: int) -> bool:
        """Record one validation score; True when training should stop."""
        if score > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad = score, epoch, 0
            self._state = copy.deepcopy(net.state_dict())
        else:
            self.bad += 1
        return self.bad >= self.patience

    def restore(self, net: nn.Module) -> None:
        """Load the best weights seen (if any check was made)."""
        if self._state is not None:
            net.load_state_dict(self._state)
