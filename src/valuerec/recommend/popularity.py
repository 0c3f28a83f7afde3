"""Popularity: the baseline every recommender must beat, all-time or recent.

``half_life_days`` turns it into *recent* popularity: each user's vote for an item (one per
user and item, as all-time popularity counts users) weighs ``0.5 ** (age / half_life)``, the
age of their latest interaction with it measured back from the newest interaction, so what is
popular now outranks what was popular once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from valuerec.data.schema import as_frame, id_text
from valuerec.evaluate.ranking import to_datetimes
from valuerec.recommend.base import Recommender


class PopularityRecommender(Recommender):
    """Everyone gets the most-consumed items (the same list for all users)."""

    name = "popularity"

    def __init__(self, half_life_days: float | None = None) -> None:
        self.half_life_days = half_life_days

    def fit(self, interactions: Any) -> PopularityRecommender:
        interactions = as_frame(interactions)
        self._frame = getattr(interactions, "frame", None)
        if isinstance(interactions, pd.DataFrame) and "timestamp" in interactions:
            self._frame = interactions
        try:
            super().fit(interactions)
        finally:
            self._frame = None  # only needed while fitting; keeps the model small
        return self

    def _fit(self, matrix: sp.csr_matrix) -> None:
        scores = self.popularity_.astype(np.float64)
        frame = self._frame
        if self.half_life_days is not None:
            if frame is None or "timestamp" not in frame:
                raise ValueError("recent popularity needs interaction timestamps")
            if "item" in frame:  # Interactions: codes over the same vocabulary
                users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
            else:
                users = self.user_ids_.get_indexer(id_text(frame["user_id"]))
                items = self.item_ids_.get_indexer(id_text(frame["item_id"]))
            keep = (users >= 0) & (items >= 0)  # the rows the model learns from
            ts = to_datetimes(frame["timestamp"]).to_numpy()[keep]
            if pd.isna(ts).any():  # an undated interaction has no age: its item would be NaN
                raise ValueError(
                    f"recent popularity needs a timestamp on every interaction: "
                    f"{int(pd.isna(ts).sum())} of {len(ts)} have none"
                )
            # one vote per user and item, as all-time popularity counts (a repeat buyer must
            # not outweigh two customers), aged by the user's latest interaction with it
            latest = (
                pd.DataFrame({"u": users[keep], "i": items[keep], "t": ts})
                .groupby(["u", "i"], sort=False)["t"]
                .max()
            )
            age_days = (latest.max() - latest).dt.total_seconds().to_numpy() / 86_400
            weight = 0.5 ** (age_days / self.half_life_days)
            scores = np.bincount(
                latest.index.get_level_values("i").to_numpy(),
                weights=weight,
                minlength=len(self.item_ids_),
            )
        self.item_scores_ = scores.astype(np.float32)

    def cold_start_scores(self) -> np.ndarray:
        return self.item_scores_.astype(float)

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (rows.shape[0], len(self.item_scores_))).copy()
