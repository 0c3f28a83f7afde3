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

    #: a similarity up to this size is kept dense for scoring: a history's sparse row times a
    #: dense matrix is 3-7x faster than times a sparse one (0.11 ms against 0.56 ms for one
    #: user at 14,310 items), and 512 MB holds about 11,000 items
    dense_limit_bytes = 512 * 2**20

    def _fit(self, matrix: sp.csr_matrix) -> None:
        # checked here, as scikit-learn does: k = 0 scored every item 0, and a negative k
        # kept all but the weakest neighbours (argpartition's slice from the other end)
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ValueError(f"k must be a whole number of neighbours >= 1, not {self.k!r}")
        if not np.isfinite(self.shrink) or self.shrink < 0:
            raise ValueError(f"shrink must be a number >= 0, not {self.shrink!r}")
        sim = self._neighbours(matrix)
        n = sim.shape[0]
        self.similarity_ = sim.toarray() if n * n * 4 <= self.dense_limit_bytes else sim

    def _neighbours(self, matrix: sp.csr_matrix, block: int = 1024) -> sp.csr_matrix:
        """The pruned similarity, sparse: k entries per column.

        Built a block of columns at a time, so memory grows with items x block, not items
        x items: a dense matrix was 3.8 GB at 14,310 items (and 45 GB at 50,000), where
        this keeps about 13 MB; 4.3 s instead of 14.4 s there, with the same scores.
        """
        co = (matrix.T @ matrix).tocsc().astype(np.float32)
        n = co.shape[0]
        norms = np.sqrt(co.diagonal()).astype(np.float32)
        rows, cols, vals = [], [], []
        for start in range(0, n, block):
            stop = min(n, start + block)
            sim = co[:, start:stop].toarray()
            sim /= norms[:, None] * norms[None, start:stop] + self.shrink + 1e-9
            sim[np.arange(start, stop), np.arange(stop - start)] = 0.0  # no self-similarity
            if self.k < n:  # each item's k strongest neighbours (column j: "similar to j")
                top = np.argpartition(-sim, self.k, axis=0)[: self.k, :]
            else:
                top = np.broadcast_to(np.arange(n)[:, None], sim.shape)
            rows.append(top.ravel(order="F"))
            cols.append(np.repeat(np.arange(start, stop), top.shape[0]))
            vals.append(np.take_along_axis(sim, top, axis=0).ravel(order="F"))
        out = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
        )
        out.eliminate_zeros()
        return out

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        return _dense(rows @ self.similarity_)

    def _item_similarity(self, j: int) -> np.ndarray:
        """Column ``j``: item ``j``'s kept neighbours, and what each item ``h`` of a history
        adds to ``j``'s score (``score_j = sum_h x_h sim[h, j]``). The pruning per column
        makes the matrix asymmetric, so row ``j`` would name other items than the scoring
        used."""
        return _dense(self.similarity_[:, [j]]).ravel().astype(float)

    def _similarity_block(self, items: np.ndarray, history: np.ndarray) -> np.ndarray:
        # the same columns as _item_similarity, cut to the history
        sub = self.similarity_[np.asarray(history, dtype=np.int64)]
        return _dense(sub[:, np.asarray(items, dtype=np.int64)]).T


def _dense(x: sp.spmatrix | np.ndarray) -> np.ndarray:
    """A dense array (models saved before the similarity was sparse hold a dense one)."""
    return x.toarray() if sp.issparse(x) else np.asarray(x)
