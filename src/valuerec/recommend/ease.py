"""EASE: a closed-form linear item-item model (Steck 2019, "Embarrassingly Shallow Autoencoders").

B = argmin ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0 has the closed form
B = I - P / diag(P), P = (X^T X + lambda I)^-1. One matrix inverse on the item Gram matrix:
seconds for a few thousand items, and among the strongest models on MovieLens-100K.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from valuerec.recommend.base import Recommender


class EASERecommender(Recommender):
    """Embarrassingly shallow autoencoder with L2 weight ``reg`` (the paper's lambda)."""

    name = "ease"

    def __init__(self, reg: float = 250.0) -> None:
        self.reg = reg

    def _fit(self, matrix: sp.csr_matrix) -> None:
        gram = (matrix.T @ matrix).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.reg
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        self.weights_ = b.astype(np.float32)

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray(rows @ self.weights_)

    def _item_similarity(self, j: int) -> np.ndarray:
        return self.weights_[j].astype(float)
