"""The Python API as a data scientist calls it: pandas or Arrow in, scikit-learn habits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.base import clone

from valuerec.data.ingest import ingest
from valuerec.data.schema import id_text
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.evaluate.ranking import Interactions, evaluate_scores, leave_one_out, random_split
from valuerec.evaluate.value import evaluate_value
from valuerec.recommend.ease import SideEASERecommender
from valuerec.recommend.mf import BPRRecommender
from valuerec.recommend.popularity import PopularityRecommender
from valuerec.recommend.registry import MODELS as REC_MODELS
from valuerec.recommend.registry import make_recommender
from valuerec.value.registry import MODELS as VALUE_MODELS
from valuerec.value.registry import make_model


@pytest.fixture(scope="module")
def shop():
    return generate(users=60, items=20, days=90, holdout_days=10, seed=5)


def test_iso_text_of_mixed_precision_is_read_as_ingest_reads_it():
    """pandas took the first value's format for the whole column: a fraction of a second, or
    a date beside date-times, then failed where ingest stores every value."""
    text = ["2024-01-01T10:00:00Z", "2024-01-02T10:00:00.250Z", "2024-01-03 10:00:00 UTC"] * 2
    frame = pd.DataFrame(
        {"user_id": ["u1"] * 3 + ["u2"] * 3, "item_id": list("abcabd"), "timestamp": text}
    )
    parsed = frame.assign(
        timestamp=pd.to_datetime([t.replace(" UTC", "Z") for t in text], format="ISO8601")
    )
    for model in (PopularityRecommender(half_life_days=30), SideEASERecommender()):
        a = model.fit(frame).cold_start_scores()
        np.testing.assert_allclose(a, clone(model).fit(parsed).cold_start_scores())
    split = leave_one_out(Interactions.from_frame(frame))
    assert split.test.nnz == 2
    for bad in ("Jan 5 2024", "2024-01-01t10:00"):  # text ingest quarantines
        with pytest.raises(ValueError, match=f"'{bad}' is no time ingest reads"):
            PopularityRecommender(half_life_days=30).fit(frame.assign(timestamp=bad))


def test_one_event_type_given_as_text_is_that_type(shop, tmp_path):
    """``event_types="purchase"`` asked for the types p, u, r, ... and found nothing."""
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, shop.events)
        purchases = store.events(event_types=["purchase"])
        assert len(purchases) > 0
        pd.testing.assert_frame_equal(store.events(event_types="purchase"), purchases)
        one = Interactions.from_store(store, "Purchase")
        assert one.nnz == Interactions.from_store(store, ["purchase"]).nnz > 0


def test_categorical_ids_of_floats_are_the_stored_ids():
    """A float id column (one missing value) made categorical gave ids like "7.0", so user
    7, stored as "7", was served cold."""
    ids = pd.Series([7.0, 110.0, 7.0]).astype("category")
    assert list(id_text(ids)) == ["7", "110", "7"]
    # integer categories with a missing value (dictionary-encoded Parquet) are no floats
    assert list(id_text(pd.Categorical([1, 2, None])))[:2] == ["1", "2"]
    frame = pd.DataFrame(
        {"user_id": pd.Series([7.0, 7.0, 8.0, 8.0]).astype("category"), "item_id": [1, 2, 1, 3]}
    )
    model = PopularityRecommender().fit(frame)
    assert list(model.user_ids_) == ["7", "8"]


def test_a_named_user_given_as_a_float_is_the_known_user(shop):
    """``score_histories(h, user_ids=[7.0])`` scored an anonymous visitor: bpr lost its
    learned part and ease-side the profile part."""
    events = shop.events.assign(user_id=lambda f: f.user_id.str[1:].astype(int))
    users = shop.users.assign(user_id=lambda f: f.user_id.str[1:].astype(int))
    for model in (BPRRecommender(factors=4, iterations=20), SideEASERecommender(users=users)):
        model.fit(events)
        user = int(model.user_ids_[0])
        hist = [list(events.loc[events.user_id == user, "item_id"])]
        as_text = model.score_histories(hist, [str(user)])
        np.testing.assert_allclose(model.score_histories(hist, [float(user)]), as_text)
        assert not np.allclose(model.score_histories(hist), as_text)


def test_side_tables_may_be_arrow_tables(shop):
    """fit() took Arrow; the side tables crashed with an AttributeError."""
    for name in ("ease-side", "als-side"):
        pandas = make_recommender(name, shop.items, shop.users).fit(shop.events)
        arrow = make_recommender(
            name, pa.Table.from_pandas(shop.items), pa.Table.from_pandas(shop.users)
        ).fit(shop.events)
        np.testing.assert_allclose(
            arrow.score_users(np.arange(5)), pandas.score_users(np.arange(5)), rtol=1e-5
        )


def test_evaluators_take_arrow_tables_and_array_likes(shop):
    truth = pd.DataFrame(
        {"user_id": ["a", "b", "c"], "holdout_transactions": [0, 2, 1], "holdout_spend": [0, 9, 4]}
    )
    pred = pd.DataFrame(
        {
            "user_id": ["c", "b", "a"],
            "pred_transactions": [1.0, 2.0, 0.5],
            "pred_spend": [3.0, 8.0, 1.0],
            "p_alive": [0.5, 0.9, 0.2],
        }
    )
    want = evaluate_value(truth, pred).metrics
    got = evaluate_value(pa.Table.from_pandas(truth), pa.Table.from_pandas(pred)).metrics
    assert got == pytest.approx(want, nan_ok=True)
    split = random_split(Interactions.from_frame(shop.events), seed=0)
    scores = np.random.default_rng(0).random((split.n_users, split.n_items))
    want = evaluate_scores(scores, split).metrics
    assert evaluate_scores(pd.DataFrame(scores), split).metrics == want
    assert evaluate_scores(scores.tolist(), split).metrics == want


@pytest.mark.parametrize(
    "make, name",
    [*((make_recommender, n) for n in REC_MODELS), *((make_model, n) for n in VALUE_MODELS)],
)
def test_every_model_clones_with_its_settings(make, name):
    """The base classes said "scikit-learn style" but had no get_params: clone refused them."""
    model = make(name)
    params = model.get_params(deep=False)
    assert all(hasattr(model, k) for k in params)
    copy = clone(model)
    assert copy is not model and type(copy) is type(model)
    assert copy.get_params(deep=False).keys() == params.keys()
