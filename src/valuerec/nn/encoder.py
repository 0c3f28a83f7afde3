"""The behaviour-sequence Transformer encoder shared by value and recommendation models.

Tokens are the arrays of :class:`valuerec.features.sequences.Sequences`: item, category and
event-type embeddings plus a projection of numeric token features, with a learned position
embedding counted from the most recent token. An optional *context* vector (static customer
features) becomes a leading summary token that attends over the sequence; its output is the
customer representation that value heads read. With ``causal=True`` each position only sees
the past, which is what a next-item head needs (SASRec-style); the value model uses the
bidirectional form.
"""

from __future__ import annotations

import torch
from torch import nn


class SequenceEncoder(nn.Module):
    """Embeds a behaviour sequence and encodes it with a Transformer."""

    def __init__(
        self,
        n_items: int,
        n_categories: int,
        n_event_types: int,
        n_numeric: int,
        *,
        n_context: int = 0,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        max_len: int = 50,
        dropout: float = 0.1,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.item = nn.Embedding(max(n_items, 2), d_model, padding_idx=0)
        self.category = nn.Embedding(max(n_categories, 2), d_model, padding_idx=0)
        self.event_type = nn.Embedding(max(n_event_types, 2), d_model, padding_idx=0)
        self.numeric = nn.Linear(n_numeric, d_model)
        self.position = nn.Embedding(max_len + 1, d_model)
        self.context = (
            nn.Sequential(nn.Linear(n_context, d_model), nn.GELU(), nn.Linear(d_model, d_model))
            if n_context
            else None
        )
        self.summary = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=2 * d_model, dropout=dropout, batch_first=True,
            norm_first=True, activation="gelu",
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.d_model = d_model

    def forward(
        self,
        item: torch.Tensor,
        category: torch.Tensor,
        event_type: torch.Tensor,
        numeric: torch.Tensor,
        mask: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (token states ``(B, L, d)``, summary state ``(B, d)``)."""
        batch, length = item.shape
        # positions counted back from the most recent token (right-aligned sequences)
        pos = torch.arange(length - 1, -1, -1, device=item.device).clamp(
            max=self.position.num_embeddings - 2
        )
        x = (
            self.item(item)
            + self.category(category)
            + self.event_type(event_type)
            + self.numeric(numeric)
            + self.position(pos + 1)[None]
        )
        x = x * mask[..., None]
        head = self.summary.expand(batch, 1, -1)
        if self.context is not None and context is not None:
            head = head + self.context(context)[:, None, :]
        x = self.drop(torch.cat([head, x], dim=1))
        pad = torch.cat([torch.zeros(batch, 1, dtype=torch.bool, device=mask.device), ~mask], 1)
        attn = None
        if self.causal:
            attn = torch.triu(
                torch.ones(length + 1, length + 1, dtype=torch.bool, device=item.device), 1
            )
        h = self.norm(self.encoder(x, mask=attn, src_key_padding_mask=pad))
        return h[:, 1:], h[:, 0]
