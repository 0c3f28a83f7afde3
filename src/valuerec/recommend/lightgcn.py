"""LightGCN: collaborative filtering by linear propagation over the user-item graph (He et al.,
SIGIR 2020, "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation").

Users and items are the two sides of a bipartite graph whose edges are the training
interactions. Each node has a free layer-0 embedding ``E0``; one propagation step is

    E(k+1) = D^-1/2 A D^-1/2 E(k)

with ``A`` the symmetric (users + items) adjacency and ``D`` its degrees (eq. 7 of the paper,
written in matrix form: the 1/sqrt(|N_u| |N_i|) weight of eq. 3). LightGCN drops the feature
transforms and non-linearities of NGCF -- the paper shows they only hurt collaborative
filtering -- so a node's final embedding is just the mean of its layers 0..K (eq. 4 with
alpha_k = 1 / (K + 1)) and a score is the inner product of a user's and an item's final
embeddings (eq. 5). Training is BPR (Rendle et al., 2009) over (user, positive, uniformly
sampled negative) triples with L2 on the *layer-0* embeddings of the batch, which are the only
parameters (eq. 15), optimised by Adam, as in the paper and RecBole's implementation.

The whole graph is propagated at every step (torch sparse matmul): at MovieLens-100K's size
(2,625 nodes, 160k non-zeros) that costs far less than the BPR step itself, and it keeps the
gradient exact instead of sampling neighbourhoods.

Users outside the training graph are served by *fold-in* (:meth:`LightGCNRecommender.
_score_rows`): their propagated embedding is rebuilt from the item embeddings of the items in
their row with one propagation step's normalisation, so new events change the recommendations
without retraining.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from valuerec.recommend.base import Recommender


def normalized_adjacency(matrix: sp.spmatrix) -> sp.csr_matrix:
    """The propagation matrix ``D^-1/2 A D^-1/2`` of a binary users x items matrix.

    ``A = [[0, R], [R^T, 0]]`` over ``n_users + n_items`` nodes (users first), ``D`` the
    diagonal of its row sums; a node without edges (an item nobody had in training) gets a zero
    row and column instead of a division by zero, so it keeps only its layer-0 embedding.
    """
    r = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    r.data[:] = 1.0
    r.sum_duplicates()
    r.data[:] = 1.0
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    np.power(deg, -0.5, out=inv_sqrt, where=deg > 0)
    d = sp.diags(inv_sqrt)
    return sp.csr_matrix(d @ a @ d, dtype=np.float32)


def _to_torch(m: sp.csr_matrix) -> torch.Tensor:
    coo = m.tocoo()
    idx = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.as_tensor(coo.data), m.shape).coalesce()


def _layers(adj: torch.Tensor, e0: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """Layer embeddings E(0), ..., E(K) (eq. 7); the model's output is their mean."""
    out = [e0]
    for _ in range(n_layers):
        out.append(torch.sparse.mm(adj, out[-1]))
    return out


class LightGCNRecommender(Recommender):
    """LightGCN with BPR and Adam; defaults chosen on MovieLens-100K validation (see
    ``__init__``).

    Args:
        embedding_size: dimension of the layer-0 embeddings (64 in the paper).
        n_layers: propagation steps K; the final embedding averages layers 0..K.
        reg_weight: L2 weight on the batch's layer-0 embeddings, RecBole's scaling
            (sum of squared norms / 2 / batch size).
        lr: Adam learning rate.
        epochs: passes over the training interactions (one sampled negative per positive).
        batch_size: (user, positive, negative) triples per Adam step; the graph is propagated
            once per step.
        seed: seeds the initialisation and the sampling; a fit is deterministic given it.
        threads: torch intra-op threads during fit (restored afterwards); ``None`` leaves
            torch's setting alone.
    """

    name = "lightgcn"

    def __init__(
        self,
        embedding_size: int = 64,
        n_layers: int = 2,
        reg_weight: float = 1e-4,
        lr: float = 5e-3,
        epochs: int = 100,
        batch_size: int = 2048,
        seed: int = 0,
        threads: int | None = 2,
    ) -> None:
        self.embedding_size = embedding_size
        self.n_layers = n_layers
        self.reg_weight = reg_weight
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.threads = threads

    # -- training ------------------------------------------------------------------------
    def _fit(self, matrix: sp.csr_matrix) -> None:
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            self._train(matrix)
        finally:
            torch.set_num_threads(previous)

    def _train(self, matrix: sp.csr_matrix) -> None:
        n_users, n_items = matrix.shape
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.adjacency_ = normalized_adjacency(matrix)
        adj = _to_torch(self.adjacency_)
        # Xavier-uniform for each table, as RecBole initialises its user and item embeddings
        e0 = torch.empty(n_users + n_items, self.embedding_size)
        for lo, hi in ((0, n_users), (n_users, n_users + n_items)):
            bound = float(np.sqrt(6.0 / (hi - lo + self.embedding_size)))
            e0[lo:hi].uniform_(-bound, bound, generator=gen)
        e0.requires_grad_(True)
        opt = torch.optim.Adam([e0], lr=self.lr)

        coo = matrix.tocoo()
        pos_u = coo.row.astype(np.int64)
        pos_i = coo.col.astype(np.int64)
        keys = np.sort(pos_u * n_items + pos_i)  # membership test for negatives
        for epoch in range(self.epochs):
            order = rng.permutation(len(pos_u))
            users, items = pos_u[order], pos_i[order]
            negs = _sample_negatives(users, keys, n_items, rng)
            for start in range(0, len(users), self.batch_size):
                u = torch.as_tensor(users[start : start + self.batch_size])
                i = torch.as_tensor(items[start : start + self.batch_size]) + n_users
                j = torch.as_tensor(negs[start : start + self.batch_size]) + n_users
                final = torch.stack(_layers(adj, e0, self.n_layers)).mean(dim=0)
                eu, ei, ej = final[u], final[i], final[j]
                diff = (eu * ei).sum(dim=1) - (eu * ej).sum(dim=1)
                bpr = -F.logsigmoid(diff).mean()
                reg = (e0[u].square().sum() + e0[i].square().sum() + e0[j].square().sum()) / (
                    2 * len(u)
                )
                loss = bpr + self.reg_weight * reg
                opt.zero_grad()
                loss.backward()
                opt.step()
            self._epoch_end(epoch, e0.detach(), adj, n_users)
        self._cache(e0.detach(), adj, n_users)

    def _epoch_end(self, epoch: int, e0: torch.Tensor, adj: torch.Tensor, n_users: int) -> None:
        """Hook called after every epoch (a no-op; tuning scripts override it to validate)."""

    def _cache(self, e0: torch.Tensor, adj: torch.Tensor, n_users: int) -> None:
        """Propagate once more and keep the final user and item embeddings for scoring."""
        with torch.no_grad():
            layers = _layers(adj, e0, self.n_layers)
            final = torch.stack(layers).mean(dim=0).numpy()
            # items' layers 0..K-1: what one propagation step turns into a user's layers 1..K
            inner = torch.stack(layers[:-1]).sum(dim=0)[n_users:].numpy() if layers else None
        self.user_embeddings_ = final[:n_users].copy()
        self.item_embeddings_ = final[n_users:].copy()
        self.item_inner_ = inner
        self.item_degree_ = np.asarray(self.matrix_.sum(axis=0)).ravel().astype(np.float32)

    # -- scoring -------------------------------------------------------------------------
    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.user_embeddings_[users] @ self.item_embeddings_.T

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """Scores for users given only as interaction rows over the item vocabulary (fold-in).

        A user's final embedding is ``(e_u(0) + e_u(1) + ... + e_u(K)) / (K + 1)`` and, by
        eq. 3, ``e_u(k+1) = sum_{i in N_u} e_i(k) / sqrt(|N_u| |N_i|)``. So layers 1..K of a
        user are exactly one normalised propagation step over the item layers 0..K-1 already
        learned, and are computed as such here (item degrees from training; the new user's own
        edge would raise them by one, which we ignore). Only the free layer-0 embedding
        ``e_u(0)`` is unknown; it is left out, i.e. approximated by zero -- BPR aligns it with
        the same items anyway, and the per-user scale it would change does not alter the
        ranking. Items without a training interaction contribute nothing; a row with no known
        item gets the cold-start (popularity) scores.
        """
        r = sp.csr_matrix(rows, dtype=np.float32, copy=True)
        r.data[:] = 1.0
        r.sum_duplicates()
        r.data[:] = 1.0
        if r.shape[1] != self.item_embeddings_.shape[0]:
            raise ValueError(
                f"rows must span the {self.item_embeddings_.shape[0]} items, got {r.shape[1]}"
            )
        inv_item = np.zeros_like(self.item_degree_)
        np.power(self.item_degree_, -0.5, out=inv_item, where=self.item_degree_ > 0)
        r = r.multiply(inv_item[None, :]).tocsr()  # also drops items unseen in training
        r.eliminate_zeros()
        n_known = np.diff(r.indptr)
        inv_user = np.zeros(r.shape[0], dtype=np.float32)
        np.power(n_known, -0.5, out=inv_user, where=n_known > 0, dtype=np.float32)
        user = sp.diags(inv_user) @ r @ self.item_inner_ / (self.n_layers + 1)
        scores = np.asarray(user @ self.item_embeddings_.T, dtype=np.float32)
        empty = n_known == 0
        if empty.any():
            scores[empty] = self.cold_start_scores()
        return scores

    def _item_similarity(self, j: int) -> np.ndarray:
        f = self.item_embeddings_
        norms = np.linalg.norm(f, axis=1) + 1e-12
        return (f @ f[j]) / (norms * norms[j])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(embedding_size={self.embedding_size}, "
            f"n_layers={self.n_layers}, epochs={self.epochs})"
        )


def _sample_negatives(
    users: np.ndarray, keys: np.ndarray, n_items: int, rng: np.random.Generator
) -> np.ndarray:
    """One uniformly drawn item per user that the user does not have (vectorised rejection).

    ``keys`` are the sorted ``user * n_items + item`` codes of the training interactions. A
    draw that hits a positive is redrawn; after 50 rounds (only a user who has nearly the whole
    catalogue gets there) the remaining draws are kept as they are.
    """
    negs = rng.integers(0, n_items, size=len(users))
    todo = np.arange(len(users))
    for _ in range(50):
        code = users[todo] * n_items + negs[todo]
        at = np.minimum(np.searchsorted(keys, code), len(keys) - 1)
        todo = todo[keys[at] == code]
        if todo.size == 0:
            break
        negs[todo] = rng.integers(0, n_items, size=todo.size)
    return negs
