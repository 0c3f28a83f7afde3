"""Recommenders behind one interface: top-k, seen items, cold start, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from valuerec.recommend.base import REC_COLUMNS, interaction_matrix
from valuerec.recommend.ease import EASERecommender
from valuerec.recommend.knn import ItemKNNRecommender
from valuerec.recommend.lightgcn import MFBPRRecommender
from valuerec.recommend.mf import ALSRecommender, BPRRecommender
from valuerec.recommend.popularity import PopularityRecommender
from valuerec.recommend.vae import MultVAERecommender

MODELS = {
    "popularity": PopularityRecommender,
    "itemknn": lambda: ItemKNNRecommender(k=5, shrink=0.0),
    "ease": lambda: EASERecommender(reg=1.0),
    "als": lambda: ALSRecommender(factors=4, iterations=5),
    "bpr": lambda: BPRRecommender(factors=4, iterations=100),
    "mf-bpr": lambda: MFBPRRecommender(embedding_size=8, epochs=60, lr=3e-2, batch_size=32),
    "multvae": lambda: MultVAERecommender(
        hidden=16, latent=4, epochs=60, batch_size=8, anneal_steps=50, lr=1e-2, dropout=0.0
    ),
}


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    """Two taste groups: users u0-u9 like items a*, users v0-v9 like items b*."""
    rng = np.random.default_rng(0)
    rows = []
    for g, items in (("u", [f"a{j}" for j in range(6)]), ("v", [f"b{j}" for j in range(6)])):
        for i in range(10):
            for item in rng.choice(items, 4, replace=False):
                rows.append((f"{g}{i}", item))
    rows.append(("u0", rows[0][1]))  # a duplicate interaction collapses to one
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


@pytest.mark.parametrize("name", list(MODELS))
def test_recommend_contract(name, log):
    model = MODELS[name]().fit(log)
    rec = model.recommend(["u0", "v3", "stranger"], k=3)
    assert list(rec.columns) == list(REC_COLUMNS)
    assert list(rec["user_id"].unique()) == ["u0", "v3", "stranger"]
    seen = set(log.loc[log.user_id == "u0", "item_id"])
    assert not seen & set(rec.loc[rec.user_id == "u0", "item_id"])
    assert rec.loc[rec.user_id == "stranger", "cold_start"].all()
    assert not rec.loc[rec.user_id != "stranger", "cold_start"].any()
    for _, g in rec.groupby("user_id"):
        assert list(g["rank"]) == list(range(1, len(g) + 1))
        assert (np.diff(g["score"].to_numpy()) <= 1e-9).all()


@pytest.mark.parametrize("name", ["itemknn", "ease", "multvae"])
def test_neighbourhood_models_recommend_within_the_taste_group(name, log):
    model = MODELS[name]().fit(log)
    rec = model.recommend([f"u{i}" for i in range(10)] + [f"v{i}" for i in range(10)], k=1)
    same_group = rec["item_id"].str[0] == rec["user_id"].str[0].map({"u": "a", "v": "b"})
    assert same_group.mean() == 1.0


def test_k_larger_than_the_catalogue(log):
    model = EASERecommender(reg=1.0).fit(log)
    rec = model.recommend(["u0"], k=100)
    n_seen = log.loc[log.user_id == "u0", "item_id"].nunique()
    assert len(rec) == 12 - n_seen  # every unseen item once, nothing padded
    cold = model.recommend(["nobody"], k=100)
    assert len(cold) == 12 and cold["cold_start"].all()


def test_exclude_seen_false_can_return_seen_items(log):
    model = PopularityRecommender().fit(log)
    top = model.recommend(["u0"], k=12, exclude_seen=False)
    assert len(top) == 12


def test_duplicates_collapse_and_unknown_items(log):
    m, _, _ = interaction_matrix(log)
    assert m.max() == 1.0 and m.nnz == len(log.drop_duplicates())
    model = ItemKNNRecommender(k=5, shrink=0.0).fit(log)
    s = model.score("u0", ["a1", "zzz"])
    assert np.isfinite(s.loc[0, "score"]) and np.isnan(s.loc[1, "score"])
    assert list(s["cold_start"]) == [False, True]
    assert model.similar_items("zzz").empty


def test_integer_ids_of_the_evaluator_interactions_are_looked_up_as_text():
    """A model fitted on the evaluator's Interactions with integer ids knows its users and
    items by the same text ids as one fitted on a DataFrame: no user turns cold, and the seen
    items stay out."""
    from valuerec.evaluate.ranking import Interactions

    pairs = [(1, 10), (1, 11), (2, 10), (2, 12), (3, 11), (3, 12), (3, 13), (4, 13)]
    frame = pd.DataFrame(
        [(u, i, t) for t, (u, i) in enumerate(pairs)], columns=["user_id", "item_id", "timestamp"]
    )
    model = EASERecommender(reg=1.0).fit(Interactions.from_frame(frame))
    reference = EASERecommender(reg=1.0).fit(frame[["user_id", "item_id"]])
    assert list(model.user_ids_) == ["1", "2", "3", "4"]
    rec = model.recommend([1, "2"], k=2)
    pd.testing.assert_frame_equal(rec, reference.recommend([1, "2"], k=2))
    assert not rec["cold_start"].any()
    assert not set(rec.loc[rec.user_id == "1", "item_id"]) & {"10", "11"}
    by_history = model.recommend(["new"], k=2, histories={"new": [10, 11]})
    assert not by_history["cold_start"].any()
    assert not model.score(1, [12])["cold_start"].any()


@pytest.mark.parametrize("name", list(MODELS))
def test_users_without_training_interactions_get_the_cold_start_fallback(name, log):
    """A user in the vocabulary whose rows have no item is served like an unknown user, by
    recommend, score and the evaluator's score_users alike."""
    ghost = pd.DataFrame({"user_id": ["ghost"], "item_id": [None]})
    model = MODELS[name]().fit(pd.concat([log, ghost], ignore_index=True))
    assert "ghost" in set(model.user_ids_)
    rec = model.recommend(["ghost", "stranger", "u0"], k=3)
    assert list(rec["cold_start"]) == [True] * 6 + [False] * 3
    ghost_rec = rec[rec.user_id == "ghost"].drop(columns="user_id").reset_index(drop=True)
    stranger_rec = rec[rec.user_id == "stranger"].drop(columns="user_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(ghost_rec, stranger_rec)
    g, u0 = model.user_ids_.get_indexer(["ghost", "u0"])
    scores = model.score_users(np.array([u0, g]))
    np.testing.assert_allclose(scores[1], model.cold_start_scores(), rtol=1e-6)
    np.testing.assert_allclose(scores[0], model.score_users(np.array([u0]))[0], rtol=1e-6)
    assert model.score("ghost", ["a0"])["cold_start"].all()


def test_temporal_split_newcomers_are_evaluated_on_the_fallback():
    """Users who appear only after the training cut are ranked by the cold-start scores (not
    by an all-zero row, which ranks the catalogue in index order)."""
    from valuerec.evaluate.ranking import Interactions, evaluate_scores, temporal_split

    old = [(f"u{u}", "z9" if d < 3 else f"a{(u + d) % 8}", float(d)) for u in range(20)
           for d in range(5)]  # fmt: skip
    new = [(f"n{u}", item, 25.0) for u in range(10) for item in ("z9", f"a{u % 8}")]
    rows = pd.DataFrame(old + new, columns=["user_id", "item_id", "timestamp"])
    split = temporal_split(Interactions.from_frame(rows), 10.0, 20.0)
    model = EASERecommender(reg=1.0).fit(split.train)
    report = evaluate_scores(model.score_users, split, ks=(1,))
    assert report.metrics["users"] == 10
    assert report.metrics["hit@1"] == 1.0  # z9, the most popular item, is each one's target


def test_duplicate_user_ids_get_one_list_each(log):
    model = EASERecommender(reg=1.0).fit(log)
    rec = model.recommend(["v1", "u0", "v1", "new", "new"], k=2)
    assert list(rec["user_id"]) == ["v1", "v1", "u0", "u0", "new", "new"]
    pd.testing.assert_frame_equal(rec.iloc[:2], model.recommend(["v1"], k=2))


def test_itemknn_explanations_and_similar_items_follow_the_scoring(log):
    """Pruned to each item's k neighbours per column, the similarity is asymmetric; a
    reason names the history item that added most to the score (sim[h, i]) and
    similar_items lists the item's own kept neighbours (its column)."""
    from valuerec.recommend.explain import because

    model = ItemKNNRecommender(k=2, shrink=0.0).fit(log)
    sim = model.similarity_  # small: kept dense for scoring
    assert not sp.issparse(sim) and (np.count_nonzero(sim, axis=0) <= 2).all()
    assert (sim != sim.T).any()
    for user in [f"u{i}" for i in range(10)] + [f"v{i}" for i in range(10)]:
        history = model.matrix_[model.user_ids_.get_loc(user)].indices
        items = model.item_ids_.get_indexer(model.recommend([user], k=3)["item_id"])
        block = model._similarity_block(items, history)
        np.testing.assert_array_equal(block, sim[np.ix_(history, items)].T)
        top = model.item_ids_[history[np.argmax(sim[np.ix_(history, items)], axis=0)]]
        assert because(model, history, items, {}) == [f"similar to {h}" for h in top]
    for j, item in enumerate(model.item_ids_):
        got = model.similar_items(item, k=2)
        own = np.argsort(-np.where(np.arange(len(sim)) == j, -np.inf, sim[:, j]), kind="stable")
        assert list(got["similar_item_id"]) == list(model.item_ids_[own[:2]])


def test_similar_items_needs_a_positive_k(log):
    model = ItemKNNRecommender(k=5, shrink=0.0).fit(log)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be at least 1"):
            model.similar_items("a0", k=k)


def test_similar_items_of_a_known_item(log):
    model = ItemKNNRecommender(k=5, shrink=0.0).fit(log)
    sim = model.similar_items("a0", k=3)
    assert len(sim) == 3 and "a0" not in set(sim["similar_item_id"])
    assert set(sim["similar_item_id"].str[0]) == {"a"}


def test_ease_is_the_closed_form_solution():
    x = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 1, 0]], dtype=float)
    frame = pd.DataFrame(
        [(f"u{i}", f"i{j}") for i, j in zip(*np.nonzero(x), strict=True)],
        columns=["user_id", "item_id"],
    )
    reg = 0.5
    b = EASERecommender(reg=reg).fit(frame).weights_
    assert np.allclose(np.diag(b), 0)
    # stationarity: (X^T X + reg I) B = X^T X - diag(mu) for some mu (the diagonal constraint)
    g = x.T @ x
    resid = (g + reg * np.eye(4)) @ b - g
    off_diag = resid - np.diag(np.diag(resid))
    assert np.allclose(off_diag, 0, atol=1e-5)


def test_itemknn_cosine_with_shrinkage():
    frame = pd.DataFrame(
        {"user_id": ["u1", "u1", "u2", "u2", "u3"], "item_id": ["a", "b", "a", "b", "a"]}
    )
    model = ItemKNNRecommender(k=10, shrink=1.0).fit(frame)
    # co(a, b) = 2, |a| = sqrt(3), |b| = sqrt(2): 2 / (sqrt(6) + 1)
    assert model.similarity_[0, 1] == pytest.approx(2 / (np.sqrt(6) + 1), rel=1e-6)


def test_empty_interactions_are_rejected():
    with pytest.raises(ValueError, match="no interactions"):
        PopularityRecommender().fit(pd.DataFrame({"user_id": ["u"], "item_id": [None]}))


def test_bad_k():
    with pytest.raises(ValueError):
        PopularityRecommender().fit(pd.DataFrame({"user_id": ["u"], "item_id": ["i"]})).recommend(
            ["u"], k=0
        )


def test_recent_popularity_prefers_what_is_popular_now():
    old = [(f"u{i}", "classic", "2020-01-01") for i in range(10)]
    new = [(f"u{i}", "trend", "2024-06-01") for i in range(4)]
    frame = pd.DataFrame(old + new, columns=["user_id", "item_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    all_time = PopularityRecommender().fit(frame).recommend(["x"], k=1)
    recent = PopularityRecommender(half_life_days=30).fit(frame).recommend(["x"], k=1)
    assert all_time.loc[0, "item_id"] == "classic"
    assert recent.loc[0, "item_id"] == "trend"
    # 4 interactions at age 0 vs 10 at ~4.4 years with a 30-day half-life
    assert recent.loc[0, "score"] == pytest.approx(4.0, rel=1e-6)


def test_recent_popularity_with_the_evaluator_interactions():
    from valuerec.evaluate.ranking import Interactions

    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "item_id": ["x", "x", "y"],
            "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02", "2024-01-01"]),
        }
    )
    inter = Interactions.from_frame(frame)
    model = PopularityRecommender(half_life_days=10).fit(inter)
    assert model.item_ids_[np.argmax(model.item_scores_)] == "y"


@pytest.mark.parametrize("params", [{"k": 0}, {"k": -1}, {"k": 2.5}, {"shrink": -1.0}])
def test_item_knn_refuses_a_neighbourhood_that_is_not_one(params):
    """k = 0 fitted silently and scored every item 0; k = -1 kept all but one neighbour."""
    frame = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"]})
    with pytest.raises(ValueError, match=r"k must be|shrink must be"):
        ItemKNNRecommender(**params).fit(frame)


def test_recent_popularity_counts_users_as_all_time_popularity_does():
    """One vote per user and item, aged by their latest interaction: a user who viewed X four
    times outweighed two users of Y (4 against 2), so an endless half-life did not give the
    all-time order; and a newer row without an item aged every vote (scale 2^-10 here)."""
    rows = [("a", "X", "2024-01-0" + str(d)) for d in (1, 2, 3, 4)]
    rows += [("b", "Y", "2024-01-04"), ("c", "Y", "2024-01-04"), ("d", None, "2024-10-30")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    endless = PopularityRecommender(half_life_days=1e12).fit(frame)
    np.testing.assert_allclose(
        endless.item_scores_, PopularityRecommender().fit(frame).item_scores_
    )
    assert list(endless.item_ids_) == ["X", "Y"]
    np.testing.assert_allclose(endless.item_scores_, [1.0, 2.0])
    # X's vote is aged by a's latest view (the newest item row): 1 and 2 at age 0
    np.testing.assert_allclose(
        PopularityRecommender(half_life_days=1).fit(frame).item_scores_, [1.0, 2.0]
    )
    older = frame.assign(
        timestamp=frame["timestamp"].where(frame["item_id"] != "Y", pd.Timestamp("2024-01-03"))
    )
    np.testing.assert_allclose(
        PopularityRecommender(half_life_days=1).fit(older).item_scores_, [1.0, 1.0]
    )


def test_recent_popularity_needs_timestamps():
    with pytest.raises(ValueError, match="timestamps"):
        PopularityRecommender(half_life_days=7).fit(
            pd.DataFrame({"user_id": ["u"], "item_id": ["i"]})
        )


def test_hybrid_weights_are_chosen_on_validation():
    from valuerec.evaluate.ranking import Interactions, random_split
    from valuerec.recommend.hybrid import HybridRecommender

    rng = np.random.default_rng(1)
    rows = []
    for g, items in (("u", [f"a{j}" for j in range(15)]), ("v", [f"b{j}" for j in range(15)])):
        for i in range(40):
            for item in rng.choice(items, 10, replace=False):
                rows.append((f"{g}{i}", item, pd.Timestamp("2024-01-01")))
    inter = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    split = random_split(inter, seed=0)
    # popularity alone cannot separate the two taste groups; item-kNN can
    hybrid = HybridRecommender([PopularityRecommender(), ItemKNNRecommender(k=10, shrink=0.0)])
    info = hybrid.tune_weights(split, grid=(0.0, 0.5, 1.0))
    assert info["itemknn"] > info["popularity"]
    assert np.isclose(sum(hybrid.weights_), 1.0)
    rec = hybrid.recommend(["u0"], k=3)
    assert (rec["item_id"].str[0] == "a").all()


@pytest.mark.parametrize("name", list(MODELS))
def test_history_of_a_training_user_reproduces_their_recommendations(name, log):
    """Scoring from a history is how serving sees new events; for a training user's own items
    it must agree with the model's stored view: exactly when the user is named (factor models
    add back the gap between the learned user and its fold-in), and for an anonymous history
    exactly for history models, closely for factor models that fold the user in."""
    model = MODELS[name]().fit(log)
    users = [f"u{i}" for i in range(10)] + [f"v{i}" for i in range(10)]
    hist = {u: list(log.loc[log.user_id == u, "item_id"]) for u in users}
    stored = model.score_users(model.user_ids_.get_indexer(users))
    named = model.score_histories([hist[u] for u in users], users)
    np.testing.assert_allclose(named, stored, rtol=1e-4, atol=1e-5)
    if name != "popularity":  # a new event still moves a named user's scores
        grown = model.score_histories([[*hist["u0"], "b0"]], ["u0"])[0]
        assert not np.allclose(grown, stored[0], rtol=1e-3, atol=0)
    folded = model.score_histories([hist[u] for u in users])
    if name in ("als", "bpr", "mf-bpr"):
        # rank correlation of the catalogue scores, user by user
        corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(stored, folded, strict=True)]
        assert np.mean(corr) > 0.8
    else:
        np.testing.assert_allclose(folded, stored, rtol=1e-4, atol=1e-5)


def test_a_refit_factor_model_forgets_the_learned_gaps_of_its_last_fit(log):
    """The learned-minus-fold-in gaps are kept after the first named request; a refit on
    other data must not serve the old ones."""
    model = BPRRecommender(factors=4, iterations=50)
    for data in (log, log[log.user_id != "u1"].assign(user_id=lambda f: f.user_id + "x")):
        model.fit(data)
        users = list(model.user_ids_[:5])
        hist = [list(data.loc[data.user_id == u, "item_id"]) for u in users]
        stored = model.score_users(model.user_ids_.get_indexer(users))
        np.testing.assert_allclose(model.score_histories(hist, users), stored, atol=1e-5)


@pytest.mark.parametrize("name", ["itemknn", "ease", "multvae", "als"])
def test_new_events_in_a_history_change_recommendations_without_retraining(name, log):
    model = MODELS[name]().fit(log)
    # a brand-new user whose history is b-items gets b-items; a u-user who switched taste
    # (history now only b items) stops getting a-items; seen items stay excluded
    rec = model.recommend(
        ["newcomer", "u0"], k=2, histories={"newcomer": ["b0", "b1"], "u0": ["b2", "b3", "b4"]}
    )
    assert not rec["cold_start"].any()
    new = rec[rec.user_id == "newcomer"]["item_id"]
    assert new.str.startswith("b").all() and not set(new) & {"b0", "b1"}
    switched = rec[rec.user_id == "u0"]["item_id"]
    assert switched.str.startswith("b").all() and not set(switched) & {"b2", "b3", "b4"}


def test_history_of_unknown_items_only_is_cold_start(log):
    model = EASERecommender(reg=1.0).fit(log)
    rec = model.recommend(["x"], k=2, histories={"x": ["never-seen"]})
    assert rec["cold_start"].all() and len(rec) == 2
    assert (model.score_histories([[]])[0] == model.cold_start_scores()).all()


def test_edlae_penalises_items_by_their_popularity():
    # when every item has the same popularity d, EDLAE(p) is EASE with reg + p/(1-p) d
    rows = [(f"u{u}", f"i{(u + j) % 6}") for u in range(12) for j in range(3)]
    log = pd.DataFrame(rows, columns=["user_id", "item_id"])  # each item: 6 users
    edlae = EASERecommender(reg=2.0, dropout=0.25).fit(log)
    ease = EASERecommender(reg=2.0 + 0.25 / 0.75 * 6).fit(log)
    np.testing.assert_allclose(edlae.weights_, ease.weights_, rtol=1e-5, atol=1e-6)
    # a popular item is shrunk more than under plain EASE with the same reg
    log2 = pd.concat(
        [log, pd.DataFrame({"user_id": [f"x{i}" for i in range(20)], "item_id": "i0"})]
    )
    plain, dropped = (
        EASERecommender(reg=2.0).fit(log2),
        EASERecommender(reg=2.0, dropout=0.5).fit(log2),
    )
    j = plain.item_ids_.get_loc("i0")
    assert np.abs(dropped.weights_[j]).sum() < np.abs(plain.weights_[j]).sum()
    with pytest.raises(ValueError, match="dropout"):
        EASERecommender(dropout=1.0).fit(log)


def test_multvae_stops_early_on_validation_and_keeps_the_best_weights(log):
    """Validation peaks at the second check: training stops ``patience`` checks later and the
    weights of that check are the ones kept."""
    import copy

    import torch

    inter = log
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.29, 0.9])
    seen: list[dict] = []

    def validation(model: MultVAERecommender) -> float:
        seen.append(copy.deepcopy(model.net_.state_dict()))
        return next(scores)

    model = MultVAERecommender(hidden=16, latent=4, epochs=20, eval_every=1, patience=3)
    model.fit(inter, validation=validation)
    assert len(seen) == 5 and model.epochs_run_ == 5  # stopped after 3 bad checks
    assert model.best_epoch_ == 2
    for name, value in model.net_.state_dict().items():
        assert torch.equal(value, seen[1][name]), name
    assert not torch.equal(seen[1]["to_stats.weight"], seen[3]["to_stats.weight"])
    # without validation it trains the full budget
    plain = MultVAERecommender(hidden=16, latent=4, epochs=3).fit(inter)
    assert plain.epochs_run_ == 3 and plain.best_epoch_ == 3


def test_als_fit_leaves_blas_single_threaded_without_a_warning(log):
    """implicit warns (and slows down) when OpenBLAS runs its own threads under its solver;
    the model is built and fitted with BLAS held to one thread, so users see no warning."""
    with threadpool_limits(2, "blas"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ALSRecommender(factors=4, iterations=2).fit(log)
    assert not [w for w in caught if "threads" in str(w.message)]


def test_bpr_is_deterministic_for_a_seed(log):
    # implicit's BPR runs lock-free parallel SGD on every core unless told one thread
    first = BPRRecommender(factors=8, iterations=50, seed=3).fit(log)
    second = BPRRecommender(factors=8, iterations=50, seed=3).fit(log)
    np.testing.assert_array_equal(
        first.score_users(np.arange(20)), second.score_users(np.arange(20))
    )


def test_epoch_second_timestamps_are_seconds_not_nanoseconds():
    """The evaluator reads numeric timestamps as epoch seconds; so must every model that
    reads time (pd.to_datetime alone puts them all in the first second of 1970)."""
    from valuerec.recommend.side import activity_periods

    old = [(f"u{i}", "classic", "2023-06-01") for i in range(10)]
    new = [(f"u{i}", "trend", "2024-06-01") for i in range(4)]
    frame = pd.DataFrame(old + new, columns=["user_id", "item_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    seconds = (frame["timestamp"] - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    epoch = frame.assign(timestamp=seconds.astype("int64"))
    as_dates = PopularityRecommender(half_life_days=30).fit(frame)
    as_seconds = PopularityRecommender(half_life_days=30).fit(epoch)
    np.testing.assert_allclose(as_seconds.item_scores_, as_dates.item_scores_, rtol=1e-6)
    assert as_seconds.recommend(["x"], k=1).loc[0, "item_id"] == "trend"
    users = pd.Index([f"u{i}" for i in range(10)])
    _, names = activity_periods(epoch, users)
    assert names == ["2023-06", "2024-06"]


def test_ids_of_an_integer_column_with_a_missing_value_stay_integers():
    """pandas makes such a column float; the store keeps "10", so must the vocabulary."""
    frame = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 20, 10, None]})
    model = EASERecommender(reg=1.0).fit(frame)
    assert list(model.item_ids_) == ["10", "20"] and list(model.user_ids_) == ["1", "2", "3"]
    rec = model.recommend(["2"], k=1)
    assert rec.loc[0, "item_id"] == "20" and not rec.loc[0, "cold_start"]
    assert model.user_index([2.0])[0] == model.user_index(["2"])[0] >= 0
    np.testing.assert_array_equal(model.score_histories([["10"]]), model.score_histories([[10.0]]))
    assert not np.allclose(model.score_histories([["10"]]), model.cold_start_scores())


# -- what callers hand in: one id, number ids, Arrow, gaps, an unfitted model -------------------
def test_one_id_given_alone_is_that_user_not_its_characters(log):
    """recommend("u1") iterated the string: lists for users "u" and "1", none for "u1"."""
    model = EASERecommender().fit(log)
    alone = model.recommend("u1", k=3)
    assert set(alone["user_id"]) == {"u1"} and not alone["cold_start"].any()
    pd.testing.assert_frame_equal(alone, model.recommend(["u1"], k=3))
    with pytest.raises(ValueError, match="missing id"):
        model.recommend(["u1", None], k=3)


def _float_ids() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same interactions with integer ids, and as pandas holds them once one row lacks an
    item (the item column turns float: 10 becomes 10.0)."""
    rng = np.random.default_rng(4)
    seconds = pd.to_timedelta(rng.integers(0, 90 * 86_400, 400), unit="s")
    ints = pd.DataFrame(
        {
            "user_id": rng.integers(0, 40, 400),
            "item_id": rng.integers(10, 30, 400),
            "timestamp": pd.Timestamp("2024-01-01") + seconds,
        }
    )
    gap = pd.DataFrame({"user_id": [0], "item_id": [np.nan], "timestamp": [ints.timestamp.max()]})
    return ints, pd.concat([ints, gap], ignore_index=True)


def test_float_item_ids_score_like_the_integers_they_hold():
    """Recent popularity and ease-side looked float ids up as "10.0" in a vocabulary of "10":
    every item scored 0, and the time windows were lost."""
    from valuerec.recommend.ease import SideEASERecommender
    from valuerec.recommend.side import sequence_windows

    ints, floats = _float_ids()
    assert floats["item_id"].dtype.kind == "f"
    a = PopularityRecommender(half_life_days=30).fit(ints)
    b = PopularityRecommender(half_life_days=30).fit(floats)
    assert a.item_scores_.sum() > 0
    np.testing.assert_allclose(b.item_scores_, a.item_scores_, rtol=1e-6)
    a, b = SideEASERecommender().fit(ints), SideEASERecommender().fit(floats)
    wa = sequence_windows(ints, a.user_ids_, a.item_ids_, 4)
    wb = sequence_windows(floats, b.user_ids_, b.item_ids_, 4)
    assert wa.shape[0] > 0 and wb.shape == wa.shape
    pd.testing.assert_frame_equal(a.recommend([1, 2, 3], 5), b.recommend([1, 2, 3], 5))


def test_recent_popularity_refuses_an_undated_interaction(log):
    """A missing timestamp made its item's score NaN, and the most popular item vanished."""
    undated = log.assign(timestamp=pd.Timestamp("2024-01-01"))
    undated.loc[0, "timestamp"] = pd.NaT
    with pytest.raises(ValueError, match=r"1 of \d+ have none"):
        PopularityRecommender(half_life_days=30).fit(undated)


def test_rows_without_a_user_are_dropped_and_arrow_tables_are_read(log):
    """A missing user id crashed the vocabulary's sort (float NaN against text); an Arrow
    table was not read at all."""
    import pyarrow as pa

    from valuerec.evaluate.ranking import Interactions

    nobody = pd.DataFrame({"user_id": [None, np.nan], "item_id": ["a0", "a1"]})
    model = EASERecommender().fit(pd.concat([log, nobody], ignore_index=True))
    pd.testing.assert_index_equal(model.user_ids_, EASERecommender().fit(log).user_ids_)
    arrow = pa.Table.from_pandas(log, preserve_index=False)
    pd.testing.assert_frame_equal(
        EASERecommender().fit(arrow).recommend(["u0", "u1"], k=4),
        EASERecommender().fit(log).recommend(["u0", "u1"], k=4),
    )
    from_arrow = Interactions.from_frame(arrow, time_col=None)
    assert from_arrow.matrix.nnz == Interactions.from_frame(log, time_col=None).matrix.nnz
    with pytest.raises(ValueError, match=r"lack column\(s\) item_id"):
        EASERecommender().fit(log.drop(columns="item_id"))


def test_an_unfitted_model_says_so():
    from sklearn.exceptions import NotFittedError

    model = EASERecommender()
    for call in (lambda: model.recommend(["u0"]), lambda: model.score("u0", ["a0"]),
                 lambda: model.similar_items("a0")):  # fmt: skip
        with pytest.raises(NotFittedError, match="EASERecommender is not fitted yet"):
            call()


def test_ease_inverts_its_gram_matrix_in_place_by_cholesky():
    """The penalised Gram matrix is inverted in its own memory (one items x items array,
    not four), blocks of the symmetric copy not dividing the size; B is unchanged."""
    from valuerec.recommend.ease import _spd_inverse

    rng = np.random.default_rng(2)
    x = (rng.random((400, 130)) < 0.05).astype(float)
    gram = x.T @ x + 25.0 * np.eye(130)
    expected = np.linalg.inv(gram)
    work = gram.copy()
    got = _spd_inverse(work, block=48)
    assert np.shares_memory(got, work)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="not positive definite"):
        _spd_inverse(np.ones((3, 3)))
    # EASE's B from it: -P / diag(P) with a zero diagonal, as the closed form says
    b = EASERecommender(reg=25.0)._closed_form(sp.csr_matrix(x))
    ref = -expected / np.diag(expected)[None, :]
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(b, ref, rtol=1e-5, atol=1e-7)


def test_itemknn_blocks_give_the_dense_pruned_similarity():
    """The sparse similarity, built a few columns at a time, equals the dense computation
    (cosine with shrinkage, no self-similarity, each column's k largest kept)."""
    rng = np.random.default_rng(5)
    x = sp.csr_matrix((rng.random((300, 40)) < 0.15).astype(np.float32))
    model = ItemKNNRecommender(k=6, shrink=2.0)
    co = (x.T @ x).toarray().astype(np.float32)
    norms = np.sqrt(np.diag(co))
    dense = co / (norms[:, None] * norms[None, :] + 2.0 + 1e-9)
    np.fill_diagonal(dense, 0.0)
    drop = np.argpartition(-dense, 6, axis=0)[6:, :]
    np.put_along_axis(dense, drop, 0.0, axis=0)
    for block in (7, 40, 1024):
        got = model._neighbours(x, block=block).toarray()
        np.testing.assert_allclose(got, dense, rtol=1e-6, atol=0)
    # above the dense limit the model keeps it sparse, and scores and explains alike
    small, large = ItemKNNRecommender(k=6, shrink=2.0), ItemKNNRecommender(k=6, shrink=2.0)
    large.dense_limit_bytes = 0
    frame = pd.DataFrame({"user_id": x.nonzero()[0], "item_id": x.nonzero()[1]})
    small.fit(frame)
    large.fit(frame)
    assert not sp.issparse(small.similarity_) and sp.issparse(large.similarity_)
    np.testing.assert_array_equal(
        small.score_users(np.arange(50)), large.score_users(np.arange(50))
    )
    pd.testing.assert_frame_equal(small.similar_items("3"), large.similar_items("3"))
    hist, items = np.array([1, 4, 9]), np.array([0, 2, 5])
    np.testing.assert_array_equal(
        small._similarity_block(items, hist), large._similarity_block(items, hist)
    )


def test_id_helpers_agree_on_bytes_zero_d_arrays_and_missing_times(log):
    from valuerec.data.schema import id_list, one_id

    assert one_id(b"u1") == "u1" == id_list(np.array("u1"))[0]
    assert id_list(np.array(["u1", "u2"])) == ["u1", "u2"]
    for missing in (pd.Series([pd.NaT]), [np.datetime64("NaT")], [None], [float("nan")]):
        with pytest.raises(ValueError, match="missing id"):
            id_list(missing)
    model = EASERecommender().fit(log)
    pd.testing.assert_frame_equal(model.similar_items(b"a0"), model.similar_items("a0"))
    by_bytes = model.recommend(["u1"], k=3, histories={b"u1": ["b0", "b1"]})
    assert by_bytes.equals(model.recommend(["u1"], k=3, histories={"u1": ["b0", "b1"]}))
