"""Item-kNN: score an item by its similarity to what the user already consumed.

Cosine similarity between item columns with a shrinkage term in the denominator
(``co / (|a| |b| + shrink)``), which discounts similarities resting on few common users —
the classic neighbourhood model, and a strong baseline on MovieLens.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from valuerec.recommend.base import Recommender


class ItemKNNRecommender(Recommender):
    """Item-item cosine with shrinkage, keeping each item's ``k`` nearest neighbours."""

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 10.0) -> None:
        self.k = k
        self.shrink = shrink

    def _fit(self, matrix: sp.csr_matrix) -> None:
        co = (matrix.T @ matrix).toarray().astype(np.float32)
        norms = np.sqrt(np.diag(co)).astype(np.float32)
        sim = co / (norms[:, None] * norms[None, :] + self.shrink + 1e-9)
        np.fill_diagonal(sim, 0.0)
        if self.k < sim.shape[0]:
            # keep each item's k strongest neighbours (columns: "items similar to j")
            drop = np.argpartition(-sim, self.k, axis=0)[self.k :, :]
            np.put_along_axis(sim, drop, 0.0, axis=0)
        self.similarity_ = sim

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray(rows @ self.similarity_)

    def _item_similarity(self, j: int) -> np.ndarray:
        """Column ``j``: item ``j``'s kept neighbours, and what each item ``h`` of a history
        adds to ``j``'s score (``score_j = sum_h x_h sim[h, j]``). The pruning per column
        makes the matrix asymmetric, so row ``j`` would name other items than the scoring
        used."""
        return self.similarity_[:, j].astype(float)

    def _similarity_block(self, items: np.ndarray, history: np.ndarray) -> np.ndarray:
        # the same columns as _item_similarity, cut to the history in one fancy index
        return self.similarity_[history[:, None], np.asarray(items, dtype=np.int64)[None, :]].T
