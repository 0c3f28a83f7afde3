"""Review 25 fixes to the value models: the LTV discount share when the BG/NBD timing
profile expects almost no purchases, and no spend forecast on a log where nobody spent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.value.base import discount_factors, discounted_share
from valuerec.value.gbm import LightGBMValueModel
from valuerec.value.transformer import TransformerValueModel

CAL = pd.Timestamp("2023-01-01")
HOLDOUT = 120
NO_SPEND = "no customer spent anything in the holdout window"


def new_store(path: Path, events: pd.DataFrame) -> Store:
    store = Store(path)
    assert ingest(store, events, "events").quarantined == 0
    return store


def one_time_buyers(customers: int = 60, seed: int = 3) -> pd.DataFrame:
    """Every customer buys once before ``CAL``; a third buy again in the holdout.

    Nobody has a repeat purchase in calibration, so the BG/NBD timing profile ends at its
    parameter box edge and expects ~1e-13 purchases in the next day.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(customers):
        first = CAL - pd.Timedelta(days=int(rng.integers(1, 300)))
        rows.append((f"c{u}", "i1", "purchase", first, float(rng.integers(5, 50))))
        if u % 3 == 0:
            again = CAL + pd.Timedelta(days=int(rng.integers(0, 100)))
            rows.append((f"c{u}", "i2", "purchase", again, float(rng.integers(5, 50))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "value"])


def tiny_transformer() -> TransformerValueModel:
    return TransformerValueModel(
        d_model=8, n_heads=2, n_layers=1, epochs=1, batch_size=64, n_models=1, max_len=4
    )


# -- LTV discount share ------------------------------------------------------------------


def test_discounted_share_does_not_depend_on_how_small_the_expectation_is() -> None:
    """The share was sum(per * disc) / max(total, 1e-12): at total = 4e-13 it came out 0.41
    times what it should be."""
    disc = discount_factors(90, 0.01)  # three 30-day periods
    constant = float(np.full(3, 1 / 3) @ disc)
    shape = np.array([[0.5, 0.3, 0.2]])
    expected = float(shape[0] @ disc)
    for scale in (1.0, 1e-6):  # a curve well above rounding: its shape is kept
        share = discounted_share(shape * scale, disc, constant)
        assert share == pytest.approx([expected], rel=1e-12)
    # expectations down at rounding noise (1 - (almost 1)): their split is meaningless, the
    # constant rate (the limit of a tiny Poisson rate's curve) is used instead
    for scale in (4e-13, 1e-300, 0.0):
        share = discounted_share(shape * scale, disc, constant)
        assert share == pytest.approx([constant], rel=1e-12)


def test_discounted_share_stays_between_first_and_last_discount() -> None:
    """Rounding can make one period's expectation slightly negative; a ratio outside the
    discount factors would make LTV exceed the undiscounted spend or go negative."""
    disc = discount_factors(90, 0.01)
    per = np.array([[1e-3, -2e-3, 1.0015e-3], [-1e-3, 2e-3, 0.0]])
    share = discounted_share(per, disc, 0.99)
    assert ((share >= disc[-1] - 1e-15) & (share <= disc[0] + 1e-15)).all(), share


def test_ltv_is_spend_over_one_period_of_discount_at_a_one_day_horizon(tmp_path: Path) -> None:
    """A horizon of 30 days or less is one period: LTV = spend / 1.01, whatever the
    profile's expectations. It was 0.41 x that at 1 day on a log of one-time buyers."""
    store = new_store(tmp_path / "onetime.duckdb", one_time_buyers())
    model = LightGBMValueModel(n_estimators=20).fit(store, CAL, holdout_days=HOLDOUT)
    data = model.prediction_data()
    rfm = data.rfm
    tiny = model.profile_model_.conditional_expected_number_of_purchases_up_to_time(
        1 / 7, rfm["frequency"], rfm["recency"], rfm["T"]
    )
    assert 0 < np.max(tiny) < 1e-9  # the situation the bug needs
    for horizon in (1, 3, 30):
        pred = model.predict_data(data, horizon)
        ratio = pred["ltv"].sum() / pred["pred_spend"].sum()
        assert ratio == pytest.approx(1 / 1.01, rel=1e-9), (horizon, ratio)
        assert (pred["ltv_low"] <= pred["ltv"]).all() and (pred["ltv"] <= pred["ltv_high"]).all()
    store.close()


# -- nothing spent -----------------------------------------------------------------------


@pytest.fixture
def zero_value_store(tmp_path: Path) -> Iterator[Store]:
    log = one_time_buyers()
    log["value"] = 0.0
    log.loc[log.index % 2 == 0, "value"] = np.nan  # NULL values count as no spend too
    store = new_store(tmp_path / "zero.duckdb", log)
    yield store
    store.close()


def test_transformer_forecasts_no_spend_where_nobody_spent(zero_value_store: Store) -> None:
    """Every value zero or NULL: it forecast 60 over 300 customers that nobody ever spent.
    Now spend, LTV and its intervals are 0, while purchases and churn are still forecast."""
    pred = tiny_transformer().fit(zero_value_store, CAL, holdout_days=HOLDOUT).predict()
    money = ["pred_spend", "ltv", "ltv_low", "ltv_high"]
    assert (pred[money] == 0).all().all()
    assert pred["pred_transactions"].sum() > 1 and pred["p_alive"].between(0, 1).all()


def test_lightgbm_refuses_a_log_where_nobody_spent(zero_value_store: Store) -> None:
    with pytest.raises(ValueError, match=NO_SPEND):
        LightGBMValueModel(n_estimators=20).fit(zero_value_store, CAL, holdout_days=HOLDOUT)
