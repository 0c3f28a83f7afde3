"""Hybrid: a weighted blend of recommenders, weights chosen on the validation split.

Members' scores live on different scales (EASE weights, ALS dot products, VAE logits), so each
member's scores are standardised per user over the catalogue before blending. The weights are
found by a coarse search over the simplex on validation NDCG — never on test.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from valuerec.recommend.base import Recommender, interaction_matrix


def _standardise(scores: np.ndarray) -> np.ndarray:
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return (scores - mean) / np.maximum(std, 1e-9)


class HybridRecommender(Recommender):
    """``sum_m w_m * standardise(score_m)`` over fitted member recommenders."""

    name = "hybrid"

    def __init__(self, members: list[Recommender], weights: list[float] | None = None) -> None:
        self.members = members
        self.weights = weights

    def _fit(self, matrix: sp.csr_matrix) -> None:
        w = np.asarray(self.weights or [1.0] * len(self.members), float)
        if len(w) != len(self.members) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            # [0, 0] blended to NaN and recommended nothing; [1, -1] to +-inf
            raise ValueError(
                f"weights must be one number >= 0 per member ({len(self.members)}), not all 0; "
                f"got {self.weights!r}"
            )
        for m in self.members:
            if "whole_catalogue" in inspect.signature(m.fit).parameters:
                m.fit(self._interactions, whole_catalogue=False)  # content: the log's items
            else:
                m.fit(self._interactions)
            if not m.item_ids_.equals(self.item_ids_):
                # scores are summed column by column: a member over another catalogue (content
                # fitted on the whole items table) failed at scoring with a broadcast error
                raise ValueError(
                    f"member {type(m).__name__} learned {len(m.item_ids_)} items where the "
                    f"hybrid has {len(self.item_ids_)}: members must share the interactions' "
                    "item vocabulary"
                )
        self.weights_ = w / w.sum()

    def _member_scores(self, users: np.ndarray) -> list[np.ndarray]:
        return [_standardise(m.score_users(users).astype(np.float64)) for m in self.members]

    def _score(self, users: np.ndarray) -> np.ndarray:
        parts = self._member_scores(users)
        return sum(w * p for w, p in zip(self.weights_, parts, strict=True))

    def _score_sequences(self, sequences: list[np.ndarray]) -> np.ndarray:
        return self._history_scores(sequences)

    def _history_scores(
        self, seqs: list[np.ndarray], user_ids: Sequence[str | None] | None = None
    ) -> np.ndarray:
        # members share the item vocabulary of the hybrid, so indices pass through unchanged;
        # each member adds its own profile part before it is standardised
        parts = [
            _standardise(m._history_scores(seqs, user_ids).astype(np.float64)) for m in self.members
        ]
        return sum(w * p for w, p in zip(self.weights_, parts, strict=True))

    def tune_weights(
        self,
        split: Any,
        grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
        metric: str = "ndcg@10",
        refit: bool = True,
    ) -> dict[str, float]:
        """Fit members on ``split.train`` and pick the weights maximising validation ``metric``.

        Member scores are computed once; each weight vector only re-blends them. With
        ``refit=False`` the members are taken as already fitted on ``split.train`` (a
        benchmark that tuned them need not train them twice).
        """
        from valuerec.evaluate.ranking import evaluate_scores

        if refit:
            self.fit(split.train)
        else:
            self.matrix_, self.user_ids_, self.item_ids_ = interaction_matrix(split.train)
            self.popularity_ = np.asarray(self.matrix_.sum(axis=0)).ravel()
            self.weights_ = np.full(len(self.members), 1.0 / len(self.members))
        users = np.arange(len(self.user_ids_))
        parts = self._member_scores(users)
        best, best_w = -1.0, self.weights_
        for w in itertools.product(grid, repeat=len(self.members)):
            if sum(w) == 0:
                continue
            wn = np.asarray(w, float) / sum(w)
            blend = sum(x * p for x, p in zip(wn, parts, strict=True))
            value = evaluate_scores(blend, split, stage="valid").metrics[metric]
            if value > best:
                best, best_w = value, wn
        self.weights_ = best_w
        return {
            "valid_" + metric: best,
            **{m.name: float(x) for m, x in zip(self.members, best_w, strict=True)},
        }
