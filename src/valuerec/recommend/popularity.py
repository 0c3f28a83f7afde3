"""Popularity: the baseline every recommender must beat, all-time or time-decayed."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from valuerec.recommend.base import Recommender


class PopularityRecommender(Recommender):
    """Everyone gets the most-consumed items (the same list for all users)."""

    name = "popularity"

    def _fit(self, matrix: sp.csr_matrix) -> None:
        self.item_scores_ = self.popularity_.astype(np.float32)

    def _score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(users), len(self.item_scores_))).copy()
