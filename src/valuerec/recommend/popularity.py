"""Popularity: the baseline every recommender must beat, all-time or recent.

``half_life_days`` turns it into *recent* popularity: each interaction counts
``0.5 ** (age / half_life)``, its age measured back from the newest interaction, so what is
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
            ts = to_datetimes(frame["timestamp"])
            if ts.isna().any():  # an undated interaction has no age: its item would score NaN
                raise ValueError(
                    f"recent popularity needs a timestamp on every interaction: "
                    f"{int(ts.isna().sum())} of {len(ts)} have none"
                )
            age_days = (ts.max() - ts).dt.total_seconds().to_numpy() / 86_400
            weight = 0.5 ** (age_days / self.half_life_days)
            items = frame["item"] if "item" in frame else id_text(frame["item_id"])
            cols = items.to_numpy() if "item" in frame else self.item_ids_.get_indexer(items)
            keep = cols >= 0
            scores = np.bincount(cols[keep], weights=weight[keep], minlength=len(self.item_ids_))
        self.item_scores_ = scores.astype(np.float32)

    def cold_start_scores(self) -> np.ndarray:
        return self.item_scores_.astype(float)

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (rows.shape[0], len(self.item_scores_))).copy()
