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
_score_rows`): their propagated layers are rebuilt from the item layers of the items in their
row with one propagation step's normalisation, and their free layer-0 embedding is predicted
from those layers by a linear map fitted on the training users, so new events change the
recommendations without retraining.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from valuerec.recommend.base import LearnedUsers, Recommender


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
    """A scipy CSR matrix as a torch sparse CSR tensor (the fast layout for sparse @ dense)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.as_tensor(m.indptr.astype(np.int64)),
            torch.as_tensor(m.indices.astype(np.int64)),
            torch.as_tensor(m.data),
            size=m.shape,
            check_invariants=False,  # built from a valid scipy CSR
        )


class _SymmetricMatmul(torch.autograd.Function):
    """``adj @ x`` for a *symmetric* sparse ``adj``, whose gradient is again ``adj @ grad``.

    Torch's generic sparse backward transposes and coalesces the matrix on every call (about
    10x the cost of the product on MovieLens-100K); symmetry makes that work unnecessary.
    """

    @staticmethod
    def forward(ctx: Any, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adj @ grad


def _layers(adj: torch.Tensor, e0: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """Layer embeddings E(0), ..., E(K) (eq. 7); the model's output is their mean."""
    out = [e0]
    for _ in range(n_layers):
        out.append(_SymmetricMatmul.apply(adj, out[-1]))
    return out


def _mean(layers: list[torch.Tensor]) -> torch.Tensor:
    total = layers[0]
    for layer in layers[1:]:
        total = total + layer
    return total / len(layers)


class LightGCNRecommender(LearnedUsers, Recommender):
    """LightGCN with BPR and Adam.

    The defaults were chosen on MovieLens-100K validation (per-user random 80/10/10 split,
    full ranking): K = 2 layers of 64 dimensions, batches of 4,096 at lr 1e-2 for 90 epochs
    (about a minute on one CPU thread) reach validation NDCG@10 0.257 (test 0.319). The L2
    weight is 3e-3 rather than the paper's 1e-4: at this learning rate 1e-4 and 3e-4 peaked
    after 40-50 epochs and then overfitted (0.246 falling to 0.204), while 1e-3 to 3e-3 kept
    climbing; 1e-2 underfitted (0.23). Three layers, smaller batches and RecBole's lr 1e-3
    for 300 epochs all plateaued at the same 0.25-0.257, slower.

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
            torch's setting alone. One by default: the per-step products are too small to
            gain from more, and on a busy machine extra spinning threads made a small fit
            ten times slower.
    """

    name = "lightgcn"
    #: ridge of the fold-in regression, relative to the mean feature variance (not tuned:
    #: 0.1x to 10x gave the same validation NDCG)
    FOLD_IN_RIDGE = 1e-2

    def __init__(
        self,
        embedding_size: int = 64,
        n_layers: int = 2,
        reg_weight: float = 3e-3,
        lr: float = 1e-2,
        epochs: int = 90,
        batch_size: int = 4096,
        seed: int = 0,
        threads: int | None = 1,
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

        self.item_degree_ = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
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
                final = _mean(_layers(adj, e0, self.n_layers))
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
        """Keep the final embeddings for scoring and fit the fold-in map (see ``_score_rows``)."""
        steps = max(self.n_layers, 1)  # K = 0 still needs one step for the fold-in features
        with torch.no_grad():
            layers = [x.numpy() for x in _layers(adj, e0, steps)]
        final = sum(layers[: self.n_layers + 1]) / (self.n_layers + 1)
        self.user_embeddings_ = final[:n_users].copy()
        self.item_embeddings_ = final[n_users:].copy()
        self.item_layers_ = np.stack([x[n_users:] for x in layers[:steps]])
        # a training user's layers 1..steps are exactly the fold-in features of their row
        feats = np.hstack([x[:n_users] for x in layers[1:]]).astype(np.float64)
        target = layers[0][:n_users].astype(np.float64)
        gram = feats.T @ feats
        ridge = self.FOLD_IN_RIDGE * np.trace(gram) / len(gram) + 1e-12
        self.fold_in_ = np.linalg.solve(gram + ridge * np.eye(len(gram)), feats.T @ target)

    # -- scoring -------------------------------------------------------------------------
    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.user_embeddings_[users] @ self.item_embeddings_.T

    def _user_vectors(self, users: np.ndarray) -> np.ndarray:
        return self.user_embeddings_[users]

    def _fold_vectors(self, rows: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return self._score_rows(rows, vectors=True)

    def _item_vectors(self) -> np.ndarray:
        return self.item_embeddings_

    def _score_rows(self, rows: sp.spmatrix, vectors: bool = False) -> np.ndarray:
        """Scores for users given only as interaction rows over the item vocabulary (fold-in);
        ``vectors``: their folded-in final embeddings instead.

        A user's final embedding is ``(e_u(0) + e_u(1) + ... + e_u(K)) / (K + 1)`` and, by
        eq. 3, ``e_u(k+1) = sum_{i in N_u} e_i(k) / sqrt(|N_u| |N_i|)``. So layers 1..K of a
        user are one normalised propagation step over the item layers 0..K-1 already learned,
        and are computed exactly so here (item degrees from training: the new user's own edges
        would raise them by one, which we ignore, as we ignore their effect on the item layers).

        Only the free layer-0 embedding ``e_u(0)`` has no closed form. Setting it to zero
        (or to the neighbours' mean) loses ranking quality: on MovieLens-100K, validation
        NDCG@10 of training users re-scored by fold-in was 0.241 with zero and 0.248 with the
        items' layer-0 mean, against 0.257 for the trained embeddings. BPR makes ``e_u(0)``
        largely a function of the same neighbourhood, so at fit time we regress it on the
        user's layers 1..K over the training users (ridge, closed form, a (K d) x d map) and
        apply that map here: fold-in then reached 0.257, with top-20 overlap 0.87 and rank
        correlation 0.985 to the trained scores for users *held out* of the regression. Users
        left out of training altogether (a fifth of them) got 0.240 by fold-in, against 0.250
        when the model was trained with them and 0.118 for popularity.

        Items without a training interaction contribute nothing; a row with no known item gets
        the cold-start (popularity) scores.
        """
        n_items = self.item_embeddings_.shape[0]
        r = sp.csr_matrix(rows, dtype=np.float32, copy=True)
        if r.shape[1] != n_items:
            raise ValueError(f"rows must span the {n_items} items, got {r.shape[1]}")
        r.sum_duplicates()
        r.data[:] = 1.0  # an interaction is a 1, however often it happened
        inv_item = np.zeros_like(self.item_degree_)
        np.power(self.item_degree_, -0.5, out=inv_item, where=self.item_degree_ > 0)
        r = sp.csr_matrix(r.multiply(inv_item[None, :]))  # also drops items unseen in training
        r.eliminate_zeros()
        n_known = np.diff(r.indptr)
        inv_user = np.zeros(r.shape[0], dtype=np.float32)
        np.power(n_known, -0.5, out=inv_user, where=n_known > 0, dtype=np.float32)
        step = sp.diags(inv_user) @ r  # one propagation step, users' side
        upper = [np.asarray(step @ layer) for layer in self.item_layers_]  # e_u(1..K)
        e0 = np.hstack(upper) @ self.fold_in_
        user = (e0 + sum(upper[: self.n_layers])) / (self.n_layers + 1)
        if vectors:
            return user
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


class MFBPRRecommender(LightGCNRecommender):
    """Matrix factorisation trained with BPR on uniformly sampled negatives (Rendle et al.,
    2009, as RecBole's BPR): LightGCN with no propagation layer, whose final embeddings are
    then the free ones (eq. 4 with K = 0), scored by inner product.

    It sits beside ``implicit``'s BPR (:class:`~valuerec.recommend.mf.BPRRecommender`)
    because that kernel draws each negative from the list of *interactions*, so in proportion
    to item popularity; popular items are pushed down and accuracy suffers on data where
    popularity predicts (MovieLens-100K validation NDCG@10 at most 0.171, test 0.198, over
    learning rate, regularisation and iterations). With uniform negatives, otherwise the same
    factorisation: 0.251 / 0.304 (RecBole's BPR: 0.293). Defaults chosen on that validation
    split: L2 1e-2 at lr 3e-3 (at lr 1e-2, L2 1e-3 / 3e-3 / 1e-2 / 3e-2 / 1e-1 reached
    0.176 / 0.199 / 0.231 / 0.232 / 0.189).
    """

    name = "mf-bpr"

    def __init__(
        self,
        embedding_size: int = 64,
        reg_weight: float = 1e-2,
        lr: float = 3e-3,
        epochs: int = 90,
        batch_size: int = 4096,
        seed: int = 0,
        threads: int | None = 1,
    ) -> None:
        super().__init__(embedding_size, 0, reg_weight, lr, epochs, batch_size, seed, threads)


def _sample_negatives(
    users: np.ndarray, keys: np.ndarray, n_items: int, rng: np.random.Generator
) -> np.ndarray:
    """One uniformly drawn item per user that the user does not have (vectorised rejection).

    ``keys`` are the sorted ``user * n_items + item`` codes of the training interactions. A
    draw that hits a positive is redrawn, all such draws at once; the few still hitting after
    20 rounds (users who have most of the catalogue) are drawn from their exact complement,
    and a user who has every item keeps a random one.
    """
    negs = rng.integers(0, n_items, size=len(users))
    todo = np.arange(len(users))
    for _ in range(20):
        todo = todo[_is_positive(users[todo], negs[todo], keys, n_items)]
        if todo.size == 0:
            return negs
        negs[todo] = rng.integers(0, n_items, size=todo.size)
    todo = todo[_is_positive(users[todo], negs[todo], keys, n_items)]
    for t in todo:
        lo, hi = np.searchsorted(keys, [users[t] * n_items, (users[t] + 1) * n_items])
        free = np.setdiff1d(np.arange(n_items), keys[lo:hi] - users[t] * n_items)
        if free.size:
            negs[t] = rng.choice(free)
    return negs


def _is_positive(
    users: np.ndarray, items: np.ndarray, keys: np.ndarray, n_items: int
) -> np.ndarray:
    """Whether each (user, item) pair is among the sorted interaction codes ``keys``."""
    code = users * n_items + items
    at = np.minimum(np.searchsorted(keys, code), len(keys) - 1)
    return keys[at] == code
