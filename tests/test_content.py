"""Content-based recommendations: text embeddings, profiles and new-item cold start."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuerec.recommend.content import ContentRecommender, item_texts, minilm_embed

ITEMS = pd.DataFrame(
    {
        "item_id": ["s1", "s2", "s3", "c1", "c2", "new-space"],
        "title": [
            "Star Wars",
            "The Empire Strikes Back",
            "Alien",
            "Toy Story",
            "Babe",
            "Interstellar",
        ],
        "category": [
            "Sci-Fi|Action",
            "Sci-Fi|Action",
            "Sci-Fi|Horror",
            "Animation|Comedy",
            "Children's|Comedy",
            "Sci-Fi|Drama",
        ],
        "text": [
            "space war",
            "space war sequel",
            "space horror",
            "toys come alive",
            "a talking pig",
            "space travel through a wormhole",
        ],
    }
)
LOG = pd.DataFrame({"user_id": ["fan", "fan", "kid", "kid"], "item_id": ["s1", "s2", "c1", "c2"]})


def genre_embed(texts: list[str]) -> np.ndarray:
    """A transparent stand-in for the sentence model: bag of two genres."""
    vec = np.array([[t.count("Sci-Fi"), t.count("Comedy")] for t in texts], dtype=np.float32)
    return vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)


def test_item_texts_join_title_categories_and_text():
    text = item_texts(ITEMS)
    assert text["s1"] == "Star Wars. Sci-Fi, Action. space war"


def test_profiles_rank_by_taste_and_new_items_are_recommendable():
    model = ContentRecommender(items=ITEMS, embed=genre_embed).fit(LOG)
    rec = model.recommend(["fan", "kid"], k=2)
    fan = rec[rec.user_id == "fan"]["item_id"].tolist()
    kid = rec[rec.user_id == "kid"]["item_id"].tolist()
    assert set(fan) == {"s3", "new-space"}  # sci-fi, including the never-consumed item
    assert kid[0] not in {"s3", "new-space"}
    assert "new-space" in set(model.item_ids_)
    assert model.popularity_[model.item_ids_.get_loc("new-space")] == 0


def test_anonymous_session_recommendations():
    model = ContentRecommender(items=ITEMS, embed=genre_embed).fit(LOG)
    rec = model.recommend_for_items(["c1"], k=1)
    assert rec.loc[0, "item_id"] == "c2" and not rec["cold_start"].any()
    assert model.recommend_for_items(["unknown"], k=2)["cold_start"].all()


def test_evaluation_ranks_the_split_catalogue_only():
    """Catalogue items nobody interacted with are not in the split: fit_split leaves them out,
    so the scores line up with the columns the evaluator ranks (plain fit keeps them)."""
    from valuerec.evaluate.ranking import Interactions, evaluate_scores, random_split

    rows = [(u, i, float(t)) for u, items in (("fan", ["s1", "s2", "s3"]),
            ("kid", ["c1", "c2", "s1"]), ("both", ["s2", "c1", "c2", "s3"]))
            for t, i in enumerate(items)]  # fmt: skip
    inter = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    split = random_split(inter, seed=0)
    model = ContentRecommender(items=ITEMS, embed=genre_embed).fit_split(split)
    assert list(model.item_ids_) == list(split.train.item_ids)  # no "new-space"
    report = evaluate_scores(model.split_scorer(split, "test"), split, ks=(2,))
    assert report.metrics["users"] == 3
    assert "new-space" in set(ContentRecommender(items=ITEMS, embed=genre_embed).fit(
        split.train).item_ids_)  # fmt: skip


def test_needs_an_items_table():
    with pytest.raises(ValueError, match="items table"):
        ContentRecommender().fit(LOG)


def test_real_minilm_embeddings_put_sequels_together(capfd):
    from valuerec.recommend.content import _minilm

    _minilm.cache_clear()  # load here, to see what loading prints
    emb = minilm_embed(
        [
            "Star Wars. Sci-Fi, Action. space war",
            "The Empire Strikes Back. Sci-Fi, Action. space war sequel",
            "Babe. Children's, Comedy. a talking pig",
        ]
    )
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2
    # no "Loading weights" progress bar from transformers under the CLI's own
    assert "Loading weights" not in capfd.readouterr().err


def test_an_items_table_listing_an_item_twice_keeps_its_first_row():
    """A caller's table may repeat an id (the store's never does): the fit crashed in pandas
    ("cannot reindex on an axis with duplicate labels")."""
    twice = pd.concat([ITEMS, ITEMS.iloc[[3]].assign(title="Toy Story again")], ignore_index=True)
    assert item_texts(twice)["c1"].startswith("Toy Story. ")
    model = ContentRecommender(items=twice, embed=genre_embed).fit(LOG)
    assert list(model.item_ids_).count("c1") == 1
    pd.testing.assert_frame_equal(
        model.recommend(["fan", "kid"], k=2),
        ContentRecommender(items=ITEMS, embed=genre_embed).fit(LOG).recommend(["fan", "kid"], k=2),
    )


def _length_embed(texts: list[str]) -> np.ndarray:
    """Every text the same direction: what the sentence model gave all empty texts alike."""
    assert "" not in texts  # an item without text is never embedded
    return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)


def test_an_item_without_text_has_no_content():
    """Items without title, category or text (or missing from the items table) all got the
    embedding of "": cosine 1.0 between them, recommended at the top score to anyone who had
    one. They now have a zero embedding; a table with no text at all is refused."""
    items = pd.DataFrame(
        {"item_id": ["a", "blank1", "blank2"], "title": ["A film", None, ""], "text": None}
    )
    log = pd.DataFrame({"user_id": ["u", "v", "v"], "item_id": ["ghost", "a", "blank1"]})
    model = ContentRecommender(items=items, embed=_length_embed).fit(log)
    emb = dict(zip(model.item_ids_, model.item_embeddings_, strict=True))
    assert not emb["blank1"].any() and not emb["blank2"].any() and not emb["ghost"].any()
    assert emb["a"].any()
    sim = model.similar_items("blank1", k=3)
    assert (sim["score"] == 0).all()
    rec = model.recommend(["u"], k=3)  # u's only item has no text: nothing is "like" it
    assert (rec["score"] == 0).all()
    with pytest.raises(ValueError, match="no item of the catalogue has any"):
        ContentRecommender(items=items.assign(title=None), embed=_length_embed).fit(log)


def test_a_hybrid_with_a_content_member_keeps_to_the_logs_items():
    """Content fitted on the whole items table (an item nobody had) gave the hybrid's members
    two catalogues, and scoring failed with a broadcast error; weights summing to 0 blended
    to NaN and recommended nothing."""
    from valuerec.recommend.hybrid import HybridRecommender
    from valuerec.recommend.popularity import PopularityRecommender

    hybrid = HybridRecommender(
        [PopularityRecommender(), ContentRecommender(items=ITEMS, embed=genre_embed)]
    ).fit(LOG)
    assert "new-space" not in set(hybrid.item_ids_)
    assert len(hybrid.recommend(["fan"], k=2)) == 2
    assert len(hybrid.recommend(["x"], k=2, histories={"x": ["s1"]})) == 2
    for weights in ([0.0, 0.0], [1.0, -1.0], [1.0], [np.nan, 1.0]):
        with pytest.raises(ValueError, match="weights must be"):
            HybridRecommender([PopularityRecommender(), PopularityRecommender()], weights).fit(LOG)
