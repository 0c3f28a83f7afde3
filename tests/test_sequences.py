"""Behaviour sequences: exact token arrays on a hand-built log, daily merging, truncation,
no leakage from the cut-off onwards, vocabulary reuse and row order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.features.sequences import NUMERIC, PAD, UNKNOWN, build_sequences

CUT = "2024-01-10"  # exclusive

COLUMNS = ["user_id", "item_id", "event_type", "timestamp", "value", "quantity", "rating"]
# Hand-built log. The tokens of "a" in time order are A1..A5; A6 lies exactly at the cut-off.
EVENTS = [
    ("a", "i1", "view", "2024-01-01 10:00", None, None, None),  # A1
    ("a", "i2", "purchase", "2024-01-02 09:00", 20.0, 1.0, None),  # A2
    ("a", "i3", "purchase", "2024-01-02 18:00", 5.0, 2.0, None),  # A3 (same day as A2)
    ("a", "i3", "view", "2024-01-05 12:00", None, None, None),  # A4
    ("a", "i1", "purchase", "2024-01-09 23:00", 10.0, 1.0, None),  # A5
    ("a", "i1", "purchase", "2024-01-10 00:00", 99.0, 1.0, None),  # A6: at the cut-off
    ("b", "i9", "purchase", "2024-01-03 00:00", 7.5, 3.0, None),  # B1: i9 has no item row
    ("b", "i2", "rating", "2024-01-04 12:00", None, None, 4.0),  # B2
]
ITEMS = pd.DataFrame(
    {"item_id": ["i1", "i2", "i3"], "category": ["books|fiction", "music", "toys"]}
)
# Events at or after the cut-off: a new item, a new user, a new event type.
FUTURE = [
    ("a", "i7", "purchase", "2024-01-10 00:00:01", 50.0, 1.0, None),
    ("d", "i1", "purchase", "2024-02-01 12:00", 12.0, 1.0, None),
    ("b", "i2", "cart", "2024-03-01 12:00", None, 1.0, None),
    ("a", "i2", "view", "2030-01-01 00:00", None, None, None),
]

# Vocabularies of the log before the cut-off: sorted values, ids from 2 (0 = PAD, 1 = UNKNOWN).
ITEM = {"i1": 2, "i2": 3, "i3": 4, "i9": 5}
CATEGORY = {"books": 2, "music": 3, "toys": 4}  # first category of "books|fiction"
ETYPE = {"purchase": 2, "rating": 3, "view": 4}

H = 1 / 24  # an hour in days


def frame(rows: list[tuple]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["timestamp"] = pd.to_datetime(out["timestamp"], format="ISO8601")
    return out


def token(value=0.0, quantity=0.0, rating=0.0, gap=0.0, age=0.0) -> list[float]:
    """The numeric features of one token, as documented: log1p amounts, rating / 5."""
    return [np.log1p(value), np.log1p(quantity), rating / 5, np.log1p(gap), np.log1p(age)]


PADDING = [0.0] * len(NUMERIC)

# Per-event tokens of a and b, oldest first. Gaps are to the previous event, ages to the cut.
A_EVENTS = {
    "item": [ITEM["i1"], ITEM["i2"], ITEM["i3"], ITEM["i3"], ITEM["i1"]],
    "category": [
        CATEGORY["books"],
        CATEGORY["music"],
        CATEGORY["toys"],
        CATEGORY["toys"],
        CATEGORY["books"],
    ],
    "event_type": [
        ETYPE["view"],
        ETYPE["purchase"],
        ETYPE["purchase"],
        ETYPE["view"],
        ETYPE["purchase"],
    ],
    "numeric": [
        token(age=8 + 14 * H),  # A1: first token, no gap
        token(20, 1, gap=23 * H, age=7 + 15 * H),
        token(5, 2, gap=9 * H, age=7 + 6 * H),
        token(gap=2.75, age=4.5),
        token(10, 1, gap=4 + 11 * H, age=H),
    ],
}
B_EVENTS = {
    "item": [ITEM["i9"], ITEM["i2"]],
    "category": [UNKNOWN, CATEGORY["music"]],  # i9 has no category
    "event_type": [ETYPE["purchase"], ETYPE["rating"]],
    "numeric": [token(7.5, 3, age=7), token(rating=4, gap=1.5, age=5.5)],
}


def padded(tokens: dict[str, list], length: int) -> dict[str, np.ndarray]:
    """Right-align ``tokens`` (oldest first) into ``length`` columns, keeping the latest."""
    n = len(tokens["item"])
    keep = min(n, length)
    pad = length - keep
    out = {k: [0] * pad + list(v[n - keep :]) for k, v in tokens.items() if k != "numeric"}
    out["numeric"] = [PADDING] * pad + tokens["numeric"][n - keep :]
    out["mask"] = [False] * pad + [True] * keep
    return {k: np.asarray(v) for k, v in out.items()}


def assert_row(seq, row: int, expected: dict[str, np.ndarray]) -> None:
    for key in ("item", "category", "event_type", "mask"):
        np.testing.assert_array_equal(getattr(seq, key)[row], expected[key], err_msg=key)
    np.testing.assert_allclose(seq.numeric[row], expected["numeric"], rtol=1e-6, atol=1e-6)


@pytest.fixture
def log(store: Store) -> Store:
    assert ingest(store, frame(EVENTS), "events").stored == len(EVENTS)
    assert ingest(store, ITEMS, "items").stored == len(ITEMS)
    return store


def test_event_tokens_exact(log):
    seq = build_sequences(log, CUT, max_len=6)
    assert list(seq.users) == ["a", "b"]
    assert seq.max_len == 6
    assert seq.vocab == {"item": ITEM, "category": CATEGORY, "event_type": ETYPE}
    assert seq.item.dtype == np.int64 and seq.mask.dtype == bool
    assert seq.numeric.dtype == np.float32 and seq.numeric.shape == (2, 6, len(NUMERIC))
    assert_row(seq, 0, padded(A_EVENTS, 6))
    assert_row(seq, 1, padded(B_EVENTS, 6))
    # the most recent event is in the last column, padding on the left
    assert seq.item[0, -1] == ITEM["i1"] and seq.numeric[0, -1, 0] == pytest.approx(np.log1p(10))
    assert (seq.item[1, :4] == PAD).all() and not seq.mask[1, :4].any()
    # padding positions carry no features at all
    assert (seq.numeric[~seq.mask] == 0).all()
    assert (seq.category[~seq.mask] == PAD).all() and (seq.event_type[~seq.mask] == PAD).all()


def test_truncation_keeps_the_latest_tokens(log):
    seq = build_sequences(log, CUT, max_len=3)
    assert seq.item.shape == (2, 3)
    assert_row(seq, 0, padded(A_EVENTS, 3))  # A3, A4, A5
    assert_row(seq, 1, padded(B_EVENTS, 3))
    # the oldest kept token's gap is still measured to the (dropped) event before it
    assert seq.numeric[0, 0, NUMERIC.index("log_gap_days")] == pytest.approx(np.log1p(9 * H))
    one = build_sequences(log, CUT, max_len=1)
    assert one.item[:, 0].tolist() == [ITEM["i1"], ITEM["i2"]]
    assert one.mask.all()


def test_daily_merges_same_day_same_type(log):
    seq = build_sequences(log, CUT, max_len=6, daily=True)
    a_days = {
        # 01-01 view; 01-02 the two purchases merged (item of the larger order, spend and
        # quantity summed); 01-05 view; 01-09 purchase. Times are midnight of the day.
        "item": [ITEM["i1"], ITEM["i2"], ITEM["i3"], ITEM["i1"]],
        "category": [CATEGORY["books"], CATEGORY["music"], CATEGORY["toys"], CATEGORY["books"]],
        "event_type": [ETYPE["view"], ETYPE["purchase"], ETYPE["view"], ETYPE["purchase"]],
        "numeric": [
            token(age=9),
            token(25, 3, gap=1, age=8),
            token(gap=3, age=5),
            token(10, 1, gap=4, age=1),
        ],
    }
    b_days = {
        "item": [ITEM["i9"], ITEM["i2"]],
        "category": [UNKNOWN, CATEGORY["music"]],
        "event_type": [ETYPE["purchase"], ETYPE["rating"]],
        "numeric": [token(7.5, 3, age=7), token(rating=4, gap=1, age=6)],
    }
    assert_row(seq, 0, padded(a_days, 6))
    assert_row(seq, 1, padded(b_days, 6))
    assert seq.mask.sum(axis=1).tolist() == [4, 2]


def test_daily_keeps_event_types_apart(store):
    rows = [
        ("u", "x", "view", "2024-01-02 08:00", None, None, None),
        ("u", "x", "purchase", "2024-01-02 09:00", 3.0, 1.0, None),
        ("u", "y", "purchase", "2024-01-02 10:00", 4.0, 1.0, None),
        ("u", "y", "view", "2024-01-02 11:00", None, None, None),
    ]
    ingest(store, frame(rows), "events")
    seq = build_sequences(store, "2024-01-03", max_len=4, daily=True)
    assert seq.mask[0].tolist() == [False, False, True, True]  # one token per type
    spends = np.expm1(seq.numeric[0, seq.mask[0], 0])
    assert sorted(spends.round(5).tolist()) == [0.0, 7.0]


def test_tokens_of_one_day_follow_one_order_for_gaps_and_truncation(store):
    """A day's purchase and view tokens tie on time: the gap feature and the newest-first
    truncation must read them in the same order (they once used opposite ones)."""
    rows = [
        ("u", "x", "purchase", "2024-01-01 10:00", 1.0, None, None),
        ("u", "y", "purchase", "2024-01-05 09:00", 2.0, None, None),
        ("u", "z", "view", "2024-01-05 08:00", None, None, None),
    ]
    ingest(store, frame(rows), "events")
    seq = build_sequences(store, "2024-01-10", max_len=3, daily=True)
    names = {v: k for k, v in seq.vocab["event_type"].items()}
    order = [names[int(e)] for e in seq.event_type[0]]
    gaps = np.expm1(seq.numeric[0, :, NUMERIC.index("log_gap_days")]).round(6).tolist()
    assert order == ["purchase", "purchase", "view"] and gaps == [0.0, 4.0, 0.0]
    newest = build_sequences(store, "2024-01-10", max_len=1, daily=True, vocab=seq.vocab)
    assert names[int(newest.event_type[0, 0])] == order[-1]


def test_a_days_token_item_does_not_depend_on_the_scan_order(store):
    """Views without value tie on value: the day's token takes the latest item, whatever
    order the rows arrive in."""
    views = [
        ("u", f"i{k}", "view", f"2024-01-02 {8 + k:02d}:00", None, None, None) for k in range(6)
    ]
    for rows in (views, views[::-1], views[2:] + views[:2]):
        with Store(":memory:") as fresh:
            ingest(fresh, frame(rows), "events")
            seq = build_sequences(fresh, "2024-01-03", max_len=1, daily=True)
            names = {v: k for k, v in seq.vocab["item"].items()}
            assert names[int(seq.item[0, 0])] == "i5"


def test_events_at_or_after_the_cut_never_appear(log):
    before = build_sequences(log, CUT, max_len=6)
    before_daily = build_sequences(log, CUT, max_len=3, daily=True)
    assert ingest(log, frame(FUTURE), "events").stored == len(FUTURE)
    after = build_sequences(log, CUT, max_len=6)
    after_daily = build_sequences(log, CUT, max_len=3, daily=True)
    for old, new in ((before, after), (before_daily, after_daily)):
        assert list(new.users) == list(old.users) == ["a", "b"]  # "d" is not a user yet
        assert new.vocab == old.vocab
        for key in ("item", "category", "event_type", "numeric", "mask"):
            np.testing.assert_array_equal(getattr(new, key), getattr(old, key), err_msg=key)


def test_vocab_reuse_maps_unseen_values_to_unknown(log):
    train = build_sequences(log, CUT, max_len=6)
    ingest(log, frame(FUTURE), "events")
    later = build_sequences(log, "2024-04-01", max_len=2, vocab=train.vocab)
    assert later.vocab is train.vocab
    assert list(later.users) == ["a", "b", "d"]
    # a: A6 (i1 at the old cut-off, now in the past) then the unseen item i7, no item row
    assert later.item[0].tolist() == [ITEM["i1"], UNKNOWN]
    assert later.category[0].tolist() == [CATEGORY["books"], UNKNOWN]
    assert later.event_type[0].tolist() == [ETYPE["purchase"], ETYPE["purchase"]]
    # b: the rating, then the unseen event type "cart"
    assert later.event_type[1].tolist() == [ETYPE["rating"], UNKNOWN]
    assert later.item[1].tolist() == [ITEM["i2"], ITEM["i2"]]
    # d: one purchase of a known item
    assert later.item[2].tolist() == [PAD, ITEM["i1"]]
    assert later.mask[2].tolist() == [False, True]
    # every id stays inside the training vocabulary (so a trained embedding can read it)
    assert later.item.max() <= max(ITEM.values())
    assert later.event_type.max() <= max(ETYPE.values())
    # a fresh vocabulary would have given i7 and "cart" their own ids
    fresh = build_sequences(log, "2024-04-01", max_len=2)
    assert "i7" in fresh.vocab["item"] and "cart" in fresh.vocab["event_type"]
    assert fresh.item[0, 1] == fresh.vocab["item"]["i7"] != UNKNOWN


def test_rows_follow_users_and_missing_users_are_padding(log):
    full = build_sequences(log, CUT, max_len=6)
    seq = build_sequences(log, CUT, max_len=6, users=["c", "b", "a"])
    assert list(seq.users) == ["c", "b", "a"]
    assert not seq.mask[0].any()
    assert (seq.item[0] == PAD).all() and (seq.numeric[0] == 0).all()
    for key in ("item", "category", "event_type", "numeric", "mask"):
        np.testing.assert_array_equal(getattr(seq, key)[1], getattr(full, key)[1])
        np.testing.assert_array_equal(getattr(seq, key)[2], getattr(full, key)[0])
    only_b = build_sequences(log, CUT, max_len=6, users=pd.Index(["b"]))
    np.testing.assert_array_equal(only_b.item[0], full.item[1])
    taken = full.take(np.array([1]))
    assert list(taken.users) == ["b"] and taken.vocab is full.vocab
    np.testing.assert_array_equal(taken.numeric[0], full.numeric[1])


def test_event_type_filter(log):
    seq = build_sequences(log, CUT, max_len=4, event_types=["PURCHASE"])
    assert list(seq.users) == ["a", "b"]
    assert seq.vocab["event_type"] == {"purchase": 2}
    assert seq.mask.sum(axis=1).tolist() == [3, 1]
    # gaps are between the kept events: A2 -> A3 is 9 h, A3 -> A5 is 7 d 5 h
    gaps = np.expm1(seq.numeric[0, 1:, NUMERIC.index("log_gap_days")])
    np.testing.assert_allclose(gaps, [0.0, 9 * H, 7 + 5 * H], rtol=1e-5, atol=1e-6)


def test_empty_and_invalid(store):
    ingest(store, frame(EVENTS), "events")
    empty = build_sequences(store, "2023-01-01", max_len=4, users=["a"])
    assert empty.item.shape == (1, 4) and not empty.mask.any()
    with pytest.raises(ValueError, match="max_len"):
        build_sequences(store, CUT, max_len=0)
