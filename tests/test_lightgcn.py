"""LightGCN: the propagation matrix, training on planted tastes, determinism and fold-in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from valuerec.recommend.base import REC_COLUMNS
from valuerec.recommend.lightgcn import (
    LightGCNRecommender,
    _sample_negatives,
    _SymmetricMatmul,
    _to_torch,
    normalized_adjacency,
)

SMALL = {"embedding_size": 16, "lr": 0.05, "epochs": 40, "batch_size": 64, "reg_weight": 1e-4}


def _two_groups(n_users: int = 20, n_items: int = 10, per_user: int = 5) -> pd.DataFrame:
    """Users u* take ``per_user`` of items a*, users v* the same number of items b*."""
    rng = np.random.default_rng(0)
    rows = []
    for g, prefix in (("u", "a"), ("v", "b")):
        items = [f"{prefix}{j}" for j in range(n_items)]
        for i in range(n_users):
            rows += [(f"{g}{i}", item) for item in rng.choice(items, per_user, replace=False)]
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


@pytest.fixture(scope="module")
def groups() -> pd.DataFrame:
    return _two_groups()


@pytest.fixture(scope="module")
def fitted(groups: pd.DataFrame) -> LightGCNRecommender:
    return LightGCNRecommender(**SMALL).fit(groups)


@pytest.fixture(scope="module")
def latent() -> tuple[sp.csr_matrix, LightGCNRecommender]:
    """150 users x 80 items drawn from a 4-factor model: tastes overlap, ranks are graded."""
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(150, 4)), rng.normal(size=(80, 4))
    logits = u @ v.T + rng.gumbel(size=(150, 80))
    top = np.argsort(-logits, axis=1)[:, :15]
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i:03d}" for i in np.repeat(np.arange(150), 15)],
            "item_id": [f"i{j:02d}" for j in top.ravel()],
        }
    )
    model = LightGCNRecommender(embedding_size=16, lr=0.02, epochs=30, batch_size=256).fit(frame)
    return model.matrix_, model


def test_propagation_matrix_by_hand():
    # users: u0 has items 0 and 1, u1 has items 1 and 2; item 3 has no interaction
    r = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=np.float32))
    got = normalized_adjacency(r).toarray()
    # degrees: u0 2, u1 2, i0 1, i1 2, i2 1, i3 0; an edge weighs 1 / sqrt(d_u d_i)
    h, q = 1 / np.sqrt(2), 0.5
    ua = np.array([[h, q, 0, 0], [0, q, h, 0]])
    want = np.block([[np.zeros((2, 2)), ua], [ua.T, np.zeros((4, 4))]])
    assert np.allclose(got, want, atol=1e-7)
    assert np.allclose(got, got.T)
    assert not got[-1].any()  # an isolated item propagates nothing (no division by zero)


def test_propagation_ignores_duplicate_and_weighted_entries():
    r = sp.csr_matrix((np.array([3.0, 1.0, 1.0]), (np.array([0, 0, 1]), np.array([0, 0, 1]))))
    got = normalized_adjacency(r).toarray()
    assert got[0, 2] == pytest.approx(1.0) and got[1, 3] == pytest.approx(1.0)


def test_symmetric_matmul_gradient_matches_dense():
    adj = normalized_adjacency(sp.random(5, 7, density=0.4, random_state=0, format="csr"))
    dense = torch.as_tensor(adj.toarray(), dtype=torch.float64)
    sparse = _to_torch(sp.csr_matrix(adj, dtype=np.float64))
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 3, dtype=torch.float64)
    (_SymmetricMatmul.apply(sparse, x) * w).sum().backward()
    assert torch.allclose(x.grad, dense.T @ w)
    assert torch.allclose(_SymmetricMatmul.apply(sparse, x), dense @ x)


def test_negatives_are_never_positives():
    rng = np.random.default_rng(0)
    m = sp.random(50, 12, density=0.6, random_state=1, format="lil")
    m[0, :] = 1.0
    m[0, 5] = 0.0  # user 0 lacks only item 5: rejection alone would rarely find it
    m[1, :] = 1.0  # user 1 has everything: no valid negative, must not hang
    m = m.tocsr()
    u, i = m.nonzero()
    keys = np.sort(u.astype(np.int64) * 12 + i)
    negs = _sample_negatives(u.astype(np.int64), keys, 12, rng)
    assert (negs[u == 0] == 5).all()
    has_free = (np.diff(m.indptr) < 12)[u]  # user 1 and any random user who has all 12
    assert has_free.sum() > 200
    assert not np.asarray(m[u[has_free], negs[has_free]]).any()
    assert len(np.unique(negs)) > 6  # spread over the catalogue, not a constant


def test_recommends_the_users_own_group(fitted: LightGCNRecommender, groups: pd.DataFrame):
    users = sorted(groups["user_id"].unique())
    rec = fitted.recommend(users, k=3)
    own = rec["item_id"].str[0] == rec["user_id"].str[0].map({"u": "a", "v": "b"})
    assert own.all()
    assert list(rec.columns) == list(REC_COLUMNS)
    seen = set(groups.loc[groups.user_id == "u0", "item_id"])
    assert not seen & set(rec.loc[rec.user_id == "u0", "item_id"])
    sim = fitted.similar_items("a0", k=5)
    assert set(sim["similar_item_id"].str[0]) == {"a"}


def test_unknown_user_gets_flagged_popular_items(fitted: LightGCNRecommender):
    rec = fitted.recommend(["u1", "stranger"], k=4)
    cold = rec[rec.user_id == "stranger"]
    assert cold["cold_start"].all() and len(cold) == 4
    assert not rec.loc[rec.user_id == "u1", "cold_start"].any()
    pop = fitted.popularity_[fitted.item_ids_.get_indexer(cold["item_id"])]
    assert pop.tolist() == sorted(fitted.popularity_, reverse=True)[:4]


def test_deterministic_given_the_seed(groups: pd.DataFrame, fitted: LightGCNRecommender):
    again = LightGCNRecommender(**SMALL).fit(groups)
    assert np.array_equal(again.user_embeddings_, fitted.user_embeddings_)
    assert np.array_equal(again.item_embeddings_, fitted.item_embeddings_)
    other = LightGCNRecommender(**{**SMALL, "seed": 1}).fit(groups)
    assert not np.allclose(other.item_embeddings_, fitted.item_embeddings_)


def test_fold_in_agrees_with_the_trained_user_embeddings(latent):
    matrix, model = latent
    users = np.arange(matrix.shape[0])
    native = model._score(users)
    folded = model._score_rows(matrix[users])
    # a wrong fold-in (here: each user's row replaced by another user's) must not pass
    wrong = model._score_rows(matrix[np.roll(users, 1)])

    def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        ra, rb = a.argsort(axis=1).argsort(axis=1), b.argsort(axis=1).argsort(axis=1)
        rho = np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(ra, rb, strict=True)])
        ta, tb = np.argsort(-a, axis=1)[:, :20], np.argsort(-b, axis=1)[:, :20]
        overlap = np.mean([len(set(x) & set(y)) / 20 for x, y in zip(ta, tb, strict=True)])
        return float(rho), float(overlap)

    rho, overlap = agreement(native, folded)
    rho_wrong, overlap_wrong = agreement(native, wrong)
    assert rho > 0.9 and overlap > 0.75
    assert rho - rho_wrong > 0.3 and overlap - overlap_wrong > 0.3


def test_fold_in_serves_new_users_from_their_events(fitted: LightGCNRecommender):
    cols = fitted.item_ids_.get_indexer(["a0", "a1", "a2"])
    row = sp.csr_matrix((np.ones(3), (np.zeros(3, int), cols)), shape=(1, len(fitted.item_ids_)))
    scores = fitted._score_rows(sp.vstack([row, sp.csr_matrix(row.shape)]))
    scores[0, cols] = -np.inf
    top = fitted.item_ids_[np.argsort(-scores[0])[:3]]
    assert all(item.startswith("a") for item in top)
    assert np.allclose(scores[1], fitted.cold_start_scores())  # nothing known: popularity
    with pytest.raises(ValueError, match="items"):
        fitted._score_rows(sp.csr_matrix((1, 3)))
