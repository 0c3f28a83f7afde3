"""Sum pooling of behaviour tokens over learnable periodic encodings of their age.

A Transformer's summary token reads the sequence through softmax attention, which is a
weighted *mean*: it tells what share of a customer's tokens look a certain way, not how many
there are. Forecasting purchases needs counts -- how many purchases fell in the same part of
the year as the window being predicted, how many in the last month -- and, for habits that
repeat, the phase of each token's age within a week, a month or a year. This module gives the
value heads both: every token is mapped, from its event type, its numeric features and a
Time2Vec encoding of its age (``sin`` / ``cos`` of ``omega * age + phi``, the frequencies
learnable and started at a week, a month, a quarter, half a year, a year and two years;
Kazemi et al. 2019, "Time2Vec: Learning a Vector Representation of Time"), through a small
MLP, and the results are *summed* over the tokens (DeepSets), then squashed by a signed log.

Written by hand: PyTorch has no Time2Vec or DeepSets layer, and the few lines here are the
whole of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

#: starting periods of the age encodings, in days: week, month, quarter, half year, year, two
DEFAULT_PERIODS = (7.0, 30.44, 91.31, 182.62, 365.25, 730.5)


class PeriodicSumPool(nn.Module):
    """``(B, L)`` tokens -> ``(B, width)``: a signed-log sum of per-token embeddings."""

    def __init__(
        self,
        n_event_types: int,
        n_numeric: int,
        age_column: int,
        *,
        periods: Sequence[float] = DEFAULT_PERIODS,
        width: int = 32,
        event_dim: int = 8,
    ) -> None:
        super().__init__()
        self.age_column = age_column
        self.frequency = nn.Parameter(torch.tensor([2 * math.pi / p for p in periods]))
        self.phase = nn.Parameter(torch.zeros(len(periods)))
        self.event_type = nn.Embedding(max(n_event_types, 2), event_dim, padding_idx=0)
        self.token = nn.Sequential(
            nn.Linear(2 * len(periods) + event_dim + n_numeric, width),
            nn.GELU(),
            nn.Linear(width, width),
        )
        self.width = width

    def forward(
        self, event_type: torch.Tensor, numeric: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        # the sequences store log1p(age in days); the periodic encodings need days
        age = torch.expm1(numeric[..., self.age_column : self.age_column + 1])
        angle = age * self.frequency + self.phase
        z = torch.cat(
            [torch.sin(angle), torch.cos(angle), self.event_type(event_type), numeric], dim=-1
        )
        total = (self.token(z) * mask[..., None]).sum(dim=1)
        return torch.sign(total) * torch.log1p(total.abs())
