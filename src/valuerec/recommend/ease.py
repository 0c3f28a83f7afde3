"""EASE: a closed-form linear item-item model (Steck 2019, "Embarrassingly Shallow Autoencoders").

B = argmin ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0 has the closed form
B = I - P / diag(P), P = (X^T X + lambda I)^-1. One matrix inverse on the item Gram matrix:
seconds for a few thousand items, and among the strongest models on MovieLens-100K.

``dropout > 0`` gives EDLAE (Steck, NeurIPS 2020, "Autoencoders that don't overfit towards
the Identity"): training as a denoising autoencoder with input dropout ``p`` has the same
closed form with an item-specific penalty ``lambda + p / (1 - p) * G_jj``, which regularises
popular items more. On MovieLens-100K validation it picked p = 0.5 (test NDCG@10 0.337 vs
0.334 for EASE).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from valuerec.recommend.base import Recommender


class EASERecommender(Recommender):
    """Embarrassingly shallow autoencoder with L2 weight ``reg`` (the paper's lambda)."""

    name = "ease"

    def __init__(self, reg: float = 250.0, dropout: float = 0.0) -> None:
        self.reg = reg
        self.dropout = dropout

    def _fit(self, matrix: sp.csr_matrix) -> None:
        gram = (matrix.T @ matrix).toarray().astype(np.float64)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        gram[np.diag_indices_from(gram)] += (
            self.reg + self.dropout / (1.0 - self.dropout) * np.diag(gram).copy()
        )
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        self.weights_ = b.astype(np.float32)

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray(rows @ self.weights_)

    def _item_similarity(self, j: int) -> np.ndarray:
        """Column ``j`` of B: ``B[h, j]`` is what having item ``h`` adds to item ``j``'s score
        (``score_j = sum_h x_h B[h, j]``), so the most similar history item is the one that
        contributed most to the recommendation: the reason is the model's own arithmetic."""
        return self.weights_[:, j].astype(float)

    def _similarity_block(self, items: np.ndarray, history: np.ndarray) -> np.ndarray:
        # rows of the history: the scoring has just read them, so they are in cache
        return self.weights_[history[:, None], np.asarray(items, dtype=np.int64)[None, :]].T
