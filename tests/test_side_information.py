"""Side information (user profile, activity months, item attributes) in EASE and ALS."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from valuerec.evaluate.ranking import Interactions
from valuerec.recommend.ease import EASERecommender, SideEASERecommender
from valuerec.recommend.mf import ALSRecommender, SideALSRecommender
from valuerec.recommend.registry import make_recommender
from valuerec.recommend.side import (
    activity_periods,
    entity_features,
    expand_properties,
    sequence_windows,
)


def test_entity_features_encode_categories_bins_and_skip_identifiers():
    users = pd.DataFrame(
        {
            "user_id": ["1", "2", "3", "4", "5", "6", "7", "8"],
            "properties": [
                f'{{"age": {a}, "gender": "{g}", "zip": "{z}"}}'
                for a, g, z in zip(
                    [15, 22, 31, 40, 52, 60, 71, 80], "MFMFMFMF", range(10000, 10008), strict=True
                )
            ],
        }
    )
    ids = pd.Index(["3", "1", "unknown"])
    x, names = entity_features(users, "user_id", ids, bins=4)
    assert not any(n.startswith("zip=") for n in names)  # one value per user: an identifier
    assert [n for n in names if n.startswith("gender=")] == ["gender=F", "gender=M"]
    ages = [n for n in names if n.startswith("age=")]
    assert len(ages) == 4 and ages[0].startswith("age=[-inf,")
    frame = pd.DataFrame(x, index=ids, columns=names)
    assert frame.loc["3", "gender=M"] == 1 and frame.loc["3", "gender=F"] == 0
    assert frame.loc["1", ages[0]] == 1 and frame.loc["3", ages[0]] == 0
    assert frame.loc["unknown"].sum() == 0  # nothing known about an id missing from the table
    assert (frame.loc[["1", "3"]].sum(axis=1) == 2).all()  # one age bin + one gender each


def test_entity_features_split_multi_valued_categories():
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["A film", "B film", "C film"],
            "category": ["Action|Comedy", "Comedy", None],
        }
    )
    x, names = entity_features(items, "item_id", pd.Index(["a", "b", "c"]))
    assert names == ["category=action", "category=comedy"]  # titles are skipped
    np.testing.assert_array_equal(x, [[1, 1], [0, 1], [0, 0]])
    assert entity_features(None, "item_id", pd.Index(["a"]))[0].shape == (1, 0)


def test_entity_features_read_padded_labels_json_arrays_and_skip_objects():
    """'Action | comedy' made four features of two labels ('Action ', ' comedy', ...); a
    JSON array (tags) or object in properties crashed the level count (unhashable dict),
    and with it ease-side, als-side, hybrid and every model fitted after them."""
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "category": ["Action | comedy", "action|Comedy", " DRAMA ", None],
            "properties": [
                '{"tags": ["New", "sale "], "dims": {"w": 1}}',
                '{"tags": ["new"], "dims": {"w": 2}}',
                '{"tags": [], "dims": {"w": 1}}',
                None,
            ],
        }
    )
    x, names = entity_features(items, "item_id", pd.Index(["a", "b", "c", "d"]))
    assert names == [
        "category=action", "category=comedy", "category=drama", "tags=new", "tags=sale"
    ]  # fmt: skip
    np.testing.assert_array_equal(
        x, [[1, 1, 0, 1, 1], [1, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    )


def test_expand_properties_keeps_table_columns():
    t = pd.DataFrame({"item_id": ["a"], "price": [3.0], "properties": ['{"price": 9, "year": 1]']})
    with pytest.raises(ValueError):
        expand_properties(t)  # malformed JSON is an error, not a silent empty row
    t["properties"] = ['{"price": 9, "year": 1}']
    out = expand_properties(t)
    assert out.loc[0, "price"] == 3.0 and out.loc[0, "year"] == 1


def test_property_columns_do_not_depend_on_the_order_of_the_stored_keys():
    """An upsert's merge moves keys in the stored text; the features (and als-side, whose
    result depends on their column order) must stay the same."""
    props = ['{"vip": "no", "region": "n"}', *['{"vip": "y", "region": "s"}'] * 5]
    ids = pd.Index(list("abcdef"))
    one = pd.DataFrame({"user_id": ids, "properties": props})
    other = one.assign(properties=['{"region": "n", "vip": "no"}', *props[1:]])
    assert list(expand_properties(one).columns) == ["user_id", "region", "vip"]
    (x1, names1), (x2, names2) = (entity_features(t, "user_id", ids) for t in (one, other))
    assert names1 == names2 == ["region=n", "region=s", "vip=no", "vip=y"]
    np.testing.assert_array_equal(x1, x2)


def test_activity_periods_mark_the_months_a_user_was_active():
    frame = pd.DataFrame(
        {
            "user_id": ["u", "u", "v", "ghost"],
            "item_id": ["a", "b", "a", "a"],
            "timestamp": pd.to_datetime(["1997-09-03", "1997-11-30", "1997-11-01", "1998-01-01"]),
        }
    )
    x, names = activity_periods(frame, pd.Index(["u", "v"]))
    assert names == ["1997-09", "1997-11"]  # the unknown user's month is not a column
    np.testing.assert_array_equal(x, [[1, 1], [0, 1]])


def test_sequence_windows_are_consecutive_items_in_time_order():
    stamps = pd.to_datetime([f"2024-01-0{d}" for d in (5, 1, 3, 2, 4)])
    frame = pd.DataFrame(
        {
            "user_id": ["u"] * 5 + ["v", "ghost"],
            "item_id": ["e", "a", "c", "b", "d", "a", "a"],  # rows not in time order
            "timestamp": [*stamps, stamps[0], stamps[0]],
        }
    )
    users, items = pd.Index(["u", "v"]), pd.Index(["a", "b", "c", "d", "e"])
    w = sequence_windows(frame, users, items, window=4)
    rows = sorted(tuple(items[r.indices]) for r in w)
    # u in time order a b c d e; stride 2: [a b c d], [c d e], [e] (one item: dropped);
    # v's single item and the unknown user's make no window
    assert rows == [("a", "b", "c", "d"), ("c", "d", "e")]
    assert set(w.data) == {1.0}
    codes = Interactions.from_frame(frame.iloc[:6])  # the evaluator's coded form: the same
    w2 = sequence_windows(codes, codes.user_ids, codes.item_ids, window=4)
    assert sorted(tuple(codes.item_ids[r.indices]) for r in w2) == rows
    assert sequence_windows(frame.drop(columns="timestamp"), users, items, 4).shape == (0, 5)


def test_sequence_windows_tie_items_consumed_close_in_time():
    # every user has x, y and z, but y always right after x and z long after, among fillers:
    # the whole history cannot tell y from z, the windows can
    rng = np.random.default_rng(1)
    rows = []
    for u in range(30):
        seq = ["x", "y", *rng.choice([f"f{j}" for j in range(20)], 8, replace=False), "z"]
        rows += [(f"u{u}", item, pd.Timestamp("2024-01-01") + pd.Timedelta(hours=t))
                 for t, item in enumerate(seq)]  # fmt: skip
    log = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    scores = {}
    for weight in (0.0, 1.0):
        model = SideEASERecommender(reg=1.0, sequence_weight=weight, window=4).fit(log)
        s = model.score_histories([["x"]])[0]
        scores[weight] = s[model.item_ids_.get_loc("y")] - s[model.item_ids_.get_loc("z")]
    assert scores[0.0] == pytest.approx(0.0, abs=1e-6)  # y and z: identical columns
    assert scores[1.0] > 0.05
    # the windows are extra rows of the same closed form, nothing else
    model = SideEASERecommender(reg=1.0, time_weight=0.0, sequence_weight=0.5, window=4).fit(log)
    plain = EASERecommender(reg=1.0, dropout=0.5)
    windows = sequence_windows(log, model.user_ids_, model.item_ids_, 4)
    b = plain._closed_form(sp.vstack([model.matrix_, 0.5 * windows]))
    np.testing.assert_allclose(model.weights_[: b.shape[0]], b, rtol=1e-4, atol=1e-6)


def _groups(n: int = 12) -> pd.DataFrame:
    """Users x* like a-items, users y* like b-items; everyone also watched the neutral c0."""
    rng = np.random.default_rng(0)
    rows = []
    for g, items in (("x", [f"a{j}" for j in range(6)]), ("y", [f"b{j}" for j in range(6)])):
        for i in range(n):
            rows += [(f"{g}{i}", item) for item in rng.choice(items, 4, replace=False)]
            rows.append((f"{g}{i}", "c0"))
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def _top_prefix(model, user: str) -> str:
    rec = model.recommend([user], k=3)
    letters = set(rec["item_id"].str[0])
    assert len(letters) == 1, rec
    return letters.pop()


def test_profile_columns_tell_users_with_the_same_history_apart():
    log = _groups()
    # two newcomers who only watched the neutral film: same items, different profiles
    log = pd.concat([log, pd.DataFrame({"user_id": ["nx", "ny"], "item_id": ["c0", "c0"]})])
    users = pd.DataFrame({"user_id": log["user_id"].unique()})
    users["properties"] = users["user_id"].map(
        lambda u: json.dumps({"segment": "x" if u == "nx" or u.startswith("x") else "y"})
    )
    side = SideEASERecommender(users=users, reg=1.0, item_weight=0.0).fit(log)
    assert side.side_names_["user"] == ["segment=x", "segment=y"]
    assert _top_prefix(side, "nx") == "a"
    assert _top_prefix(side, "ny") == "b"
    plain = EASERecommender(reg=1.0, dropout=0.5).fit(log)
    np.testing.assert_allclose(  # without the profile the two are indistinguishable
        plain.score_users(plain.user_ids_.get_indexer(["nx"])),
        plain.score_users(plain.user_ids_.get_indexer(["ny"])),
    )
    # a history alone (serving, sessions) carries no profile: the item part only
    hist = side.score_histories([["c0"]])[0]
    n = len(side.item_ids_)
    np.testing.assert_allclose(hist, side.weights_[:n][side.item_ids_.get_loc("c0")], rtol=1e-6)


def test_activity_months_carry_the_time_signal():
    # September users watch a-items, November users b-items; newcomers watched only c0
    log = _groups()
    month = np.where(log["user_id"].str[0] == "x", "1997-09-15", "1997-11-15")
    log["timestamp"] = pd.to_datetime(month)
    late = pd.DataFrame(
        {"user_id": ["n_sep", "n_nov"], "item_id": ["c0", "c0"],
         "timestamp": pd.to_datetime(["1997-09-20", "1997-11-20"])}
    )  # fmt: skip
    model = SideEASERecommender(reg=1.0, item_weight=0.0).fit(pd.concat([log, late]))
    assert model.side_names_["user"] == ["1997-09", "1997-11"]
    assert _top_prefix(model, "n_sep") == "a"
    assert _top_prefix(model, "n_nov") == "b"


def test_item_attribute_rows_lift_an_item_nobody_has_touched_yet():
    log = _groups()
    log = pd.concat([log, pd.DataFrame({"user_id": ["x0"], "item_id": ["a_new"]})])
    items = pd.DataFrame({"item_id": sorted(log["item_id"].unique())})
    items["category"] = items["item_id"].map(lambda i: {"a": "Drama", "b": "Horror"}.get(i[0]))
    # a_new: one interaction only, but a Drama like every a-item
    model = SideEASERecommender(items=items, reg=1.0, item_weight=2.0).fit(log)
    plain = SideEASERecommender(reg=1.0, item_weight=2.0).fit(log)
    j = model.item_ids_.get_loc("a_new")
    x_users = model.user_ids_.get_indexer([f"x{i}" for i in range(1, 12)])
    y_users = model.user_ids_.get_indexer([f"y{i}" for i in range(12)])
    with_attr = model.score_users(x_users)[:, j]
    without = plain.score_users(x_users)[:, j]
    assert (with_attr > without).all()  # the genre rows tie a_new to the other dramas
    assert with_attr.mean() > model.score_users(y_users)[:, j].mean()


def test_without_side_tables_or_timestamps_it_is_edlae():
    log = _groups()
    side = SideEASERecommender(reg=5.0, dropout=0.4).fit(log)
    edlae = EASERecommender(reg=5.0, dropout=0.4).fit(log)
    assert side.user_side_.shape[1] == 0
    np.testing.assert_allclose(side.weights_, edlae.weights_, rtol=1e-5, atol=1e-7)
    users = np.arange(len(side.user_ids_))
    np.testing.assert_allclose(side.score_users(users), edlae.score_users(users), atol=1e-5)


def test_registry_passes_the_tables():
    users = pd.DataFrame({"user_id": ["x0"], "properties": ['{"segment": "x"}']})
    model = make_recommender("ease-side", items=None, users=users)
    assert isinstance(model, SideEASERecommender) and model.users is users


def test_a_named_history_keeps_the_profile_part_in_the_api_and_in_serving():
    from valuerec.serve.registry import ModelHandle

    log = _groups()
    log["timestamp"] = pd.to_datetime(
        np.where(log["user_id"].str[0] == "x", "1997-09-15", "1997-11-15")
    )
    users = pd.DataFrame({"user_id": log["user_id"].unique()})
    users["properties"] = users["user_id"].map(lambda u: json.dumps({"segment": u[0]}))
    model = SideEASERecommender(users=users, reg=1.0).fit(log)
    names = ["x0", "y3", "x7"]
    hist = [list(log.loc[log.user_id == u, "item_id"]) for u in names]
    stored = model.score_users(model.user_ids_.get_indexer(names))
    np.testing.assert_allclose(model.score_histories(hist, user_ids=names), stored, atol=1e-5)
    items_only = model.score_histories(hist)
    assert not np.allclose(items_only, stored, atol=1e-3)  # the profile part is real
    # recommend() from a fresh history of a known user = from the model's own view
    fresh = model.recommend(names, k=4, histories=dict(zip(names, hist, strict=True)))
    pd.testing.assert_frame_equal(fresh, model.recommend(names, k=4), atol=1e-5)
    # the serving layer's scorer adds the same part for named users, none for anonymous ones
    handle = ModelHandle("m", "rec-m", "v0001", {}, model, 0.0)
    assert handle.has_profile
    prepared = [handle.prepare(tuple(h)) for h in hist]
    np.testing.assert_allclose(handle.score(prepared, names), stored, atol=1e-5)
    np.testing.assert_allclose(handle.score(prepared, [None] * 3), items_only, atol=1e-5)


def test_side_als_uses_the_profile_in_its_factors_and_in_a_named_fold_in():
    log = _groups()
    log = pd.concat([log, pd.DataFrame({"user_id": ["nx", "ny"], "item_id": ["c0", "c0"]})])
    users = pd.DataFrame({"user_id": log["user_id"].unique()})
    users["properties"] = users["user_id"].map(
        lambda u: json.dumps({"segment": "x" if u == "nx" or u.startswith("x") else "y"})
    )
    kw = {"factors": 4, "regularization": 0.1, "iterations": 30}
    side = SideALSRecommender(users=users, **kw).fit(log)
    assert side.side_names_["user"] == ["segment=x", "segment=y"]
    assert side.user_factors_.shape[0] == len(side.user_ids_)
    assert side.item_factors_.shape[0] == len(side.item_ids_)
    assert _top_prefix(side, "nx") == "a"
    assert _top_prefix(side, "ny") == "b"
    plain = ALSRecommender(**kw).fit(log)
    a_items = [j for j, i in enumerate(plain.item_ids_) if i.startswith("a")]
    gap = {}
    for name, m in (("side", side), ("plain", plain)):
        s = m.score_users(m.user_ids_.get_indexer(["nx", "ny"]))
        gap[name] = s[0, a_items].mean() - s[1, a_items].mean()
    assert gap["side"] > 0.1 and abs(gap["plain"]) < 0.05  # only the profile separates them
    # a history folds in over the item columns, plus the side columns of a named known user:
    # a newcomer's one neutral item then gives back their profile's recommendations
    from valuerec.serve.registry import ModelHandle

    stored = side.score_users(side.user_ids_.get_indexer(["nx", "ny"]))
    named = side.score_histories([["c0"], ["c0"]], user_ids=["nx", "ny"])
    anonymous = side.score_histories([["c0"], ["c0"]])
    np.testing.assert_allclose(anonymous[0], anonymous[1])  # no profile: the same history
    assert named[0, a_items].mean() - named[1, a_items].mean() > 0.1
    assert all(np.corrcoef(n, s)[0, 1] > 0.95 for n, s in zip(named, stored, strict=True))
    handle = ModelHandle("a", "rec-a", "v0001", {}, side, 0.0)
    prepared = [handle.prepare(("c0",)), handle.prepare(("c0",))]
    np.testing.assert_allclose(handle.score(prepared, ["nx", "ny"]), named, atol=1e-5)
    np.testing.assert_allclose(handle.score(prepared, [None, None]), anonymous, atol=1e-5)


def test_a_hybrid_with_a_side_member_keeps_the_profile_part_for_named_histories():
    from valuerec.recommend.hybrid import HybridRecommender
    from valuerec.serve.registry import ModelHandle

    log = _groups()
    users = pd.DataFrame({"user_id": log["user_id"].unique()})
    users["properties"] = users["user_id"].map(lambda u: json.dumps({"segment": u[0]}))
    hybrid = HybridRecommender(
        [SideEASERecommender(users=users, reg=1.0), EASERecommender(reg=1.0)], weights=[2, 1]
    ).fit(log)
    names = ["x1", "y2"]
    hist = [list(log.loc[log.user_id == u, "item_id"]) for u in names]
    stored = hybrid.score_users(hybrid.user_ids_.get_indexer(names))
    np.testing.assert_allclose(hybrid.score_histories(hist, user_ids=names), stored, atol=1e-4)
    assert not np.allclose(hybrid.score_histories(hist), stored, atol=1e-3)
    handle = ModelHandle("h", "rec-h", "v0001", {}, hybrid, 0.0)
    prepared = [handle.prepare(tuple(h)) for h in hist]
    np.testing.assert_allclose(handle.score(prepared, names), stored, atol=1e-4)
