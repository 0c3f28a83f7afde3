"""Content-based recommendations: text embeddings, profiles and new-item cold start."""

from __future__ import annotations

import pickle

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
    # no neighbour: the zero-score list of the first items in index order was arbitrary
    assert model.similar_items("blank1", k=3).empty
    assert model.similar_items("ghost", k=3).empty
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


NOTEXT_ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "mute1", "mute2"],
        "title": ["Space war", "Space war sequel", "Funny pig", "Funny toys", None, None],
        "category": ["Sci-Fi", "Sci-Fi", "Comedy", "Comedy", None, None],
    }
)
# popularity: d 4 users, c 3, b 2, a 1, mute1 1, mute2 1
NOTEXT_LOG = pd.DataFrame(
    [("u1", "d"), ("u2", "d"), ("u3", "d"), ("u4", "d"), ("u1", "c"), ("u2", "c"),
     ("u3", "c"), ("u1", "b"), ("u2", "b"), ("u2", "a"), ("mute", "mute1"), ("u4", "mute2")],
    columns=["user_id", "item_id"],
)  # fmt: skip


def test_items_without_text_are_no_neighbours_of_anything():
    """A text-less item's neighbours were the first items in index order at score 0, and it
    was itself a neighbour (score 0) of every item with text, ahead of those with a negative
    cosine. It has no content, so it is nobody's neighbour and has none."""
    model = ContentRecommender(items=NOTEXT_ITEMS, embed=genre_embed).fit(NOTEXT_LOG)
    assert model.similar_items("mute1", k=5).empty
    sim = model.similar_items("a", k=5)
    assert list(sim["similar_item_id"]) == ["b", "c", "d"]  # every item with text, no mute*
    assert sim["score"].tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_a_history_of_items_without_text_is_served_cold():
    """A history made only of text-less items has a zero profile: every item scored 0, and
    the list was index order (a, b, c, d), flagged warm. It now gets the popularity fallback,
    flagged cold, as a history of unknown items does; the seen item stays out."""
    model = ContentRecommender(items=NOTEXT_ITEMS, embed=genre_embed).fit(NOTEXT_LOG)
    popular = ["d", "c", "b"]
    rec = model.recommend(["x"], k=3, histories={"x": ["mute1"]})
    assert list(rec["item_id"]) == popular and rec["cold_start"].all()
    assert rec["score"].tolist() == [4.0, 3.0, 2.0]
    trained = model.recommend(["mute"], k=3)  # a training user with only mute1
    assert list(trained["item_id"]) == popular and trained["cold_start"].all()
    fresh = model.recommend(["y"], k=6, histories={"y": ["mute1", "mute2"]})
    assert {"mute1", "mute2"}.isdisjoint(fresh["item_id"]) and fresh["cold_start"].all()
    # one item with text is enough to be served by content
    warm = model.recommend(["z"], k=2, histories={"z": ["mute1", "a"]})
    assert list(warm["item_id"]) == ["b", "c"] and not warm["cold_start"].any()
    # the evaluator's scores and score() say the same
    mute = model.user_ids_.get_loc("mute")
    np.testing.assert_allclose(model.score_users(np.array([mute]))[0], model.popularity_)
    scored = model.score("mute", ["d", "a"])
    assert scored["score"].tolist() == [4.0, 1.0] and scored["cold_start"].all()
    np.testing.assert_allclose(model.score_histories([["mute2"]])[0], model.cold_start_scores())


def test_which_items_have_text_is_computed_once_and_not_saved():
    """A scan of the embedding matrix per request had cost content requests 60-85%."""
    model = ContentRecommender(items=NOTEXT_ITEMS, embed=genre_embed).fit(NOTEXT_LOG)
    first = model._has_text()
    assert model._has_text() is first
    copy = pickle.loads(pickle.dumps(model))
    assert "_has_text_cache" not in copy.__dict__
    np.testing.assert_array_equal(copy._has_text(), first)
