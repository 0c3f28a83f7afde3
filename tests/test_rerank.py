"""Value-aware re-ranking of real recommendations: the simulator's blend on a store's log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.recommend.policies import SlateContext, ValueAwarePolicy, mmr_rank
from valuerec.recommend.rerank import ItemValues, UserValues, value_rerank


def _arrays(m: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=m), rng.uniform(5, 200, m), rng.uniform(0.01, 0.3, m)


def test_zero_value_weight_is_exactly_the_relevance_order() -> None:
    rel, price, p = _arrays()
    rel[3] = rel[7]  # a tie keeps the candidates' order
    order = value_rerank(rel, price, p, 0.0, churn_risk=0.9, ltv_rank=0.9)
    np.testing.assert_array_equal(order, np.argsort(-rel, kind="stable"))
    np.testing.assert_array_equal(value_rerank(rel, price, p, 0.0, k=5), order[:5])


def test_rerank_matches_the_simulator_policy_for_one_user() -> None:
    rel, price, p = _arrays()
    margin = np.random.default_rng(1).uniform(0.1, 0.5, len(rel))
    cats = np.eye(4)[np.arange(len(rel)) % 4]
    for kwargs in (
        {"value_weight": 2.0, "protect": 1.0, "diversity": 0.0},
        {"value_weight": 3.0, "protect": 0.5, "diversity": 1.0},
    ):
        policy = ValueAwarePolicy(objective="margin", **kwargs)
        ctx = SlateContext(
            np.zeros(1, int),
            np.arange(len(rel))[None],
            rel[None],
            10,
            price=price[None],
            margin_rate=margin[None],
            churn_risk=np.array([0.6]),
            ltv_rank=np.array([0.8]),
            item_embedding=cats,
            p_purchase=p[None],
        )
        order = value_rerank(
            rel,
            price,
            p,
            kwargs["value_weight"],
            k=10,
            margin_rate=margin,
            objective="margin",
            churn_risk=0.6,
            ltv_rank=0.8,
            protect=kwargs["protect"],
            diversity=kwargs["diversity"],
            embedding=cats,
        )
        np.testing.assert_array_equal(order, policy.rank(ctx)[0])


def test_value_weight_moves_expensive_likely_purchases_up() -> None:
    rel = np.linspace(1.0, 0.0, 20)  # candidate 0 is the most relevant
    price = np.full(20, 10.0)
    price[15] = 500.0  # far down by relevance, worth much more
    p = np.full(20, 0.1)
    assert value_rerank(rel, price, p, 0.0)[0] == 0
    assert value_rerank(rel, price, p, 3.0)[0] == 15
    # an at-risk, top-value user keeps the relevance order: protection removes the weight
    assert value_rerank(rel, price, p, 3.0, churn_risk=1.0, ltv_rank=1.0)[0] == 0


def test_rerank_rejects_bad_input() -> None:
    rel, price, p = _arrays()
    with pytest.raises(ValueError, match="finite"):
        value_rerank(np.r_[rel[:-1], -np.inf], price, p, 1.0)
    with pytest.raises(ValueError, match="one length"):
        value_rerank(rel, price[:-1], p, 1.0)
    with pytest.raises(ValueError, match="embedding"):
        value_rerank(rel, price, p, 1.0, diversity=1.0)


def test_item_values_from_a_store_are_smoothed_purchase_rates() -> None:
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["A", "B", "C"],
            "category": ["x", "x|y", None],
            "price": [10.0, None, 30.0],
        }
    )
    rows = []
    for u in range(40):  # item a: 40 views, 20 purchases; b: 40 views, 2 purchases at 7.5
        rows += [(f"u{u}", "a", "view", 0.0), (f"u{u}", "b", "view", 0.0)]
        if u % 2 == 0:
            rows.append((f"u{u}", "a", "purchase", 10.0))
        if u < 2:
            rows.append((f"u{u}", "b", "purchase", 7.5))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "value"])
    events["timestamp"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(
        np.arange(len(events)), "min"
    )
    with Store(":memory:") as store:
        ingest(store, items, "items")
        ingest(store, events, "events")
        iv = ItemValues.from_store(store, prior_looks=20.0)
    prior = 22 / 80
    assert list(iv.item_ids) == ["a", "b", "c"]
    np.testing.assert_allclose(
        iv.p_purchase, [(20 + 20 * prior) / 60, (2 + 20 * prior) / 60, prior]
    )
    np.testing.assert_allclose(iv.price, [10.0, 7.5, 30.0])  # b: its median paid value
    np.testing.assert_allclose(iv.embedding[1], [1 / np.sqrt(2), 1 / np.sqrt(2)])
    arrays = iv.take(["c", "zzz", "a"])
    np.testing.assert_allclose(arrays.p_purchase, [prior, prior, iv.p_purchase[0]])
    np.testing.assert_allclose(arrays.price, [30.0, 10.0, 10.0])  # unknown: median price
    assert not arrays.embedding[1].any()


def test_a_purchases_only_store_gets_each_items_share_of_buyers() -> None:
    """u0 buys a six times, u1 buys b once: each item was bought by half the customers (a
    repeat buyer counts once), and an item the store never saw gets the mean share."""
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "price": [10.0, 20.0, 5.0]})
    rows = [("u0", "a", 10.0)] * 6 + [("u1", "b", 20.0)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "value"]).assign(
        event_type="purchase",
        timestamp=pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(rows)), "D"),
    )
    with Store(":memory:") as store:
        ingest(store, items, "items")
        ingest(store, events, "events")
        iv = ItemValues.from_store(store)
    np.testing.assert_allclose(iv.p_purchase, [0.5, 0.5, 0.0])
    assert iv.take(["zzz"]).p_purchase[0] == pytest.approx(1 / 3)


def test_mmr_penalises_the_largest_similarity_even_when_negative() -> None:
    # after item 0, item 1 (opposite to it, cos -1) scores 0.5 + 1 = 1.5, item 2 (cos 0) 0.6
    embedding = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    order = mmr_rank(np.array([[1.0, 0.5, 0.6]]), embedding[None], 3, diversity=1.0)
    assert order.tolist() == [[0, 1, 2]]


def test_the_revenue_blend_needs_no_margins() -> None:
    rel, price, p = _arrays()
    ctx = SlateContext(
        np.zeros(1, int), np.arange(len(rel))[None], rel[None], 5,
        price=price[None], p_purchase=p[None],
    )  # fmt: skip
    shown = ValueAwarePolicy(value_weight=3.0, diversity=0.0, objective="revenue").rank(ctx)[0]
    money = p * price
    assert shown.tolist() == value_rerank(rel, price, p, 3.0, k=5).tolist()
    assert money[shown].mean() > money[np.argsort(-rel)[:5]].mean()


def test_user_values_from_value_predictions() -> None:
    pred = pd.DataFrame(
        {"user_id": ["x", "y", "z"], "ltv": [5.0, 50.0, 0.0], "p_alive": [0.9, 0.2, 1.0]}
    )
    uv = UserValues.from_predictions(pred)
    assert uv.get("y") == pytest.approx((0.8, 1.0))
    assert uv.get("z") == pytest.approx((0.0, 0.0))
    assert uv.get("nobody") == (None, None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"value_weight": float("nan")},
        {"value_weight": float("inf")},
        {"diversity": float("nan")},
        {"protect": float("nan")},
    ],
)
def test_a_nan_option_is_refused_not_read_as_zero(kwargs) -> None:
    """value_weight=NaN passed the range check (NaN < 0 is false) and ranked by relevance."""
    rel, price, p = _arrays()
    with pytest.raises(ValueError, match="need finite value_weight"):
        value_rerank(rel, price, p, **kwargs)


def test_a_nan_price_or_purchase_probability_is_refused() -> None:
    rel, price, p = _arrays()
    for bad_price, bad_p in ((price.copy(), p), (price, p.copy())):
        (bad_price if bad_price is not price else bad_p)[3] = np.nan
        with pytest.raises(ValueError, match="must be finite"):
            value_rerank(rel, bad_price, bad_p, value_weight=1.0)


def test_item_values_of_a_store_without_items_serve_any_candidate(tmp_path) -> None:
    """No item events at all: take() indexed an empty price array (IndexError)."""
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, pd.DataFrame({"user_id": ["a"], "event_type": ["view"],
                                    "timestamp": ["2024-01-01"]}), "events")  # fmt: skip
        values = ItemValues.from_store(store)
    got = values.take(["x", "y"])
    assert len(values.item_ids) == 0 and got.price.tolist() == [1.0, 1.0]
    assert got.p_purchase.shape == (2,) and got.embedding.shape[0] == 2
