"""A seeded generator of e-commerce event logs whose ground truth is known.

The purchase process is the one the BTYD literature assumes, so value models can be scored
against the truth rather than against a noisy holdout alone:

* purchase rate per user ``lambda ~ Gamma(r, alpha)`` (per day), Poisson purchases;
* after each purchase the user drops out with probability ``p ~ Beta(a, b)`` (BG/NBD);
* order value ``z ~ Gamma(p_gg, nu)``, ``nu ~ Gamma(q, gamma)`` per user (Gamma-Gamma);
* items with Zipf popularity inside categories, titles, descriptions and prices; each user
  prefers one category;
* every purchase ends a session of views and a cart event; users also browse without buying.

The log covers ``days`` days; the ``holdout_days`` after it are simulated too and summarised
per user in ``truth`` (realised and expected future transactions and spend, alive flag).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import gammainc

_CATEGORIES = (
    "books", "music", "movies", "electronics", "home", "garden", "toys", "sports",
    "fashion", "beauty", "grocery", "games",
)  # fmt: skip
_ADJECTIVES = (
    "classic", "deluxe", "compact", "vintage", "smart", "organic", "premium", "essential",
    "portable", "modern", "handmade", "ultra", "eco", "pro", "mini", "bold",
)  # fmt: skip
_NOUNS = {
    "books": ("novel", "cookbook", "atlas", "memoir", "anthology"),
    "music": ("album", "vinyl", "box set", "single", "songbook"),
    "movies": ("thriller", "comedy", "documentary", "drama", "western"),
    "electronics": ("headphones", "charger", "speaker", "camera", "keyboard"),
    "home": ("lamp", "blanket", "vase", "kettle", "mirror"),
    "garden": ("planter", "hose", "seed kit", "shears", "bench"),
    "toys": ("puzzle", "robot", "doll", "kite", "train set"),
    "sports": ("racket", "yoga mat", "ball", "helmet", "bottle"),
    "fashion": ("jacket", "scarf", "sneakers", "hat", "backpack"),
    "beauty": ("serum", "perfume", "lip balm", "brush set", "cream"),
    "grocery": ("coffee", "tea", "olive oil", "chocolate", "honey"),
    "games": ("board game", "card deck", "console game", "dice set", "controller"),
}
_PRICE_MEDIAN = {
    "books": 15, "music": 14, "movies": 12, "electronics": 80, "home": 35, "garden": 30,
    "toys": 25, "sports": 40, "fashion": 45, "beauty": 22, "grocery": 9, "games": 30,
}  # fmt: skip


@dataclass
class SynthConfig:
    """Sizes and population parameters of a synthetic log (rates are per day)."""

    users: int = 10_000
    items: int = 1_000
    days: int = 365
    holdout_days: int = 90
    seed: int = 0
    start: str = "2024-01-01"
    r: float = 0.9  # purchase-rate shape
    alpha: float = 45.0  # purchase-rate rate: mean 0.02 purchases/day
    a: float = 0.8  # dropout Beta(a, b): mean 0.17 per purchase
    b: float = 4.0
    p_gg: float = 6.0  # Gamma-Gamma spend: mean order about p*gamma/(q-1) = 30
    q: float = 4.0
    gamma: float = 15.0
    views_per_purchase: float = 4.0
    browse_sessions_per_day: float = 0.03
    zipf: float = 1.1
    taste_share: float = 0.6  # share of choices from the user's favourite category
    event_ids: bool = False


@dataclass
class SynthData:
    """The generated tables, in the canonical schema (``truth`` is per user)."""

    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    truth: pd.DataFrame
    holdout_events: pd.DataFrame
    config: SynthConfig = field(repr=False)

    def write(self, out: str | Path, fmt: str = "csv") -> dict[str, Path]:
        """Write every table to ``out/NAME.{csv,parquet}``; returns the paths."""
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in ("events", "items", "users", "truth", "holdout_events"):
            frame = getattr(self, name)
            tbl = pa.Table.from_pandas(frame, preserve_index=False)
            path = out / f"{name}.{fmt}"
            if fmt == "csv":
                pacsv.write_csv(tbl, path)
            elif fmt == "parquet":
                pq.write_table(tbl, path)
            else:
                raise ValueError(f"unknown format {fmt!r}: csv or parquet")
            paths[name] = path
        return paths


def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return rng.permutation(w)


def _choose(cum: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` indices from the distribution with cumulative weights ``cum``."""
    return np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(cum) - 1)


def _items(cfg: SynthConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    cat_idx = rng.integers(0, len(_CATEGORIES), cfg.items)
    cats = np.array(_CATEGORIES)[cat_idx]
    adj = np.array(_ADJECTIVES)[rng.integers(0, len(_ADJECTIVES), cfg.items)]
    noun_pick = rng.integers(0, 5, cfg.items)
    nouns = np.array([_NOUNS[c][k] for c, k in zip(cats, noun_pick, strict=True)])
    median = np.array([_PRICE_MEDIAN[c] for c in cats], dtype=float)
    price = np.round(median * np.exp(rng.normal(0, 0.5, cfg.items)), 2) + 0.99
    ids = np.array([f"i{j}" for j in range(cfg.items)])
    titles = [f"{a.title()} {n}" for a, n in zip(adj, nouns, strict=True)]
    text = [
        f"A {a} {n} from our {c} range, loved for its quality."
        for a, n, c in zip(adj, nouns, cats, strict=True)
    ]
    items = pd.DataFrame(
        {"item_id": ids, "title": titles, "text": text, "category": cats, "price": price}
    )
    return items, cat_idx


def generate(
    cfg: SynthConfig | None = None,
    progress: Callable[[str], None] | None = None,
    **overrides: object,
) -> SynthData:
    """Generate a log; ``generate(users=1000, seed=1)`` overrides :class:`SynthConfig` fields."""
    cfg = cfg or SynthConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise TypeError(f"unknown synth option {k!r}")
        setattr(cfg, k, v)
    if cfg.users < 1 or cfg.items < 1 or cfg.days < 1 or cfg.holdout_days < 0:
        raise ValueError("users, items and days must be at least 1, holdout_days at least 0")
    say = progress or (lambda _: None)
    rng = np.random.default_rng(cfg.seed)
    n, D, H = cfg.users, float(cfg.days), float(cfg.holdout_days)

    say("items")
    items, item_cat = _items(cfg, rng)
    pop = _zipf_weights(cfg.items, cfg.zipf, rng)
    cum_all = np.cumsum(pop)
    cum_by_cat = []
    for c in range(len(_CATEGORIES)):
        members = np.flatnonzero(item_cat == c)
        if len(members) == 0:
            members = np.arange(cfg.items)
        cum_by_cat.append((members, np.cumsum(pop[members])))

    say("users")
    lam = rng.gamma(cfg.r, 1.0 / cfg.alpha, n)
    p_drop = rng.beta(cfg.a, cfg.b, n)
    nu = rng.gamma(cfg.q, 1.0 / cfg.gamma, n)
    birth = rng.uniform(0.05, 0.75 * D, n)  # after the 30-minute pre-purchase sessions
    fav = rng.integers(0, len(_CATEGORIES), n)

    say("purchases")
    # Simulate purchase times user by user in lock-step: one vectorised step per purchase.
    buy_user, buy_time = [np.arange(n)], [birth.copy()]
    t = birth.copy()
    alive = np.ones(n, bool)
    drop_time = np.full(n, np.inf)
    idx = np.arange(n)
    while len(idx):
        dropped = rng.random(len(idx)) < p_drop[idx]
        drop_time[idx[dropped]] = t[idx[dropped]]
        alive[idx[dropped]] = False
        idx = idx[~dropped]
        t[idx] += rng.exponential(1.0 / lam[idx])
        idx = idx[t[idx] < D + H]
        buy_user.append(idx.copy())
        buy_time.append(t[idx].copy())
    bu = np.concatenate(buy_user)
    bt = np.concatenate(buy_time)
    order_value = np.round(rng.gamma(cfg.p_gg, 1.0 / nu[bu]), 2)

    def pick_items(users: np.ndarray) -> np.ndarray:
        out = _choose(cum_all, rng, len(users))
        from_fav = rng.random(len(users)) < cfg.taste_share
        for c, (members, cum) in enumerate(cum_by_cat):
            sel = np.flatnonzero(from_fav & (fav[users] == c))
            if len(sel):
                out[sel] = members[_choose(cum, rng, len(sel))]
        return out

    say("sessions")
    bitem = pick_items(bu)
    qty = np.maximum(1, np.round(order_value / items["price"].to_numpy()[bitem]))
    # views before each purchase, spread over the preceding 30 minutes
    nviews = rng.poisson(cfg.views_per_purchase, len(bu))
    v_user = np.repeat(bu, nviews)
    v_time = np.repeat(bt, nviews) - rng.uniform(1, 30, len(v_user)) / 1440
    v_item = pick_items(v_user)
    # the purchased item is viewed too, then carted a minute before the purchase
    c_time = bt - 1.0 / 1440
    # browse-only sessions while the user is alive (until dropout or the end of the window)
    active_days = np.clip(np.minimum(drop_time, D + H) - birth, 0, None)
    nbrowse = rng.poisson(cfg.browse_sessions_per_day * active_days)
    s_user = np.repeat(np.arange(n), nbrowse)
    s_time = birth[s_user] + rng.uniform(0, 1, len(s_user)) * active_days[s_user]
    s_len = 1 + rng.poisson(2, len(s_user))
    w_user = np.repeat(s_user, s_len)
    w_time = np.repeat(s_time, s_len) + rng.uniform(0, 20, len(w_user)) / 1440
    w_item = pick_items(w_user)

    say("assembling")
    n_b, n_v, n_w = len(bu), len(v_user), len(w_user)
    etype = np.concatenate(
        [np.full(n_v + n_w, 0, np.int8), np.full(n_b, 1, np.int8), np.full(n_b, 2, np.int8)]
    )
    users_all = np.concatenate([v_user, w_user, bu, bu])
    times_all = np.concatenate([v_time, w_time, c_time, bt])
    items_all = np.concatenate([v_item, w_item, bitem, bitem])
    value_all = np.concatenate([np.full(n_v + n_w + n_b, np.nan), order_value])
    qty_all = np.concatenate([np.full(n_v + n_w, np.nan), qty, qty])
    order = np.lexsort((etype, times_all))
    users_all, times_all, items_all = users_all[order], times_all[order], items_all[order]
    value_all, qty_all, etype = value_all[order], qty_all[order], etype[order]
    start = np.datetime64(pd.Timestamp(cfg.start).to_datetime64(), "us")
    stamps = start + (np.maximum(times_all, 0) * 86_400e6).astype("timedelta64[us]")
    user_ids = np.array([f"u{k}" for k in range(n)])
    frame = pd.DataFrame(
        {
            "user_id": user_ids[users_all],
            "item_id": items["item_id"].to_numpy()[items_all],
            "event_type": np.array(["view", "cart", "purchase"])[etype],
            "timestamp": stamps,
            "value": value_all,
            "quantity": qty_all,
        }
    )
    if cfg.event_ids:
        frame.insert(0, "event_id", [f"e{k}" for k in range(len(frame))])
    in_cal = times_all < D
    events = frame[in_cal].reset_index(drop=True)
    holdout = frame[~in_cal].reset_index(drop=True)

    say("truth")
    truth = _truth(cfg, user_ids, bu, bt, order_value, lam, p_drop, nu, birth, drop_time)
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "signup_time": start + (birth * 86_400e6).astype("timedelta64[us]"),
            "favourite_category": np.array(_CATEGORIES)[fav],
            "region": np.array(["north", "south", "east", "west"])[rng.integers(0, 4, n)],
        }
    )
    # users born after the log ends (none with the defaults) would have no events at all
    return SynthData(events, items, users, truth, holdout, cfg)


def _truth(
    cfg: SynthConfig,
    user_ids: np.ndarray,
    bu: np.ndarray,
    bt: np.ndarray,
    value: np.ndarray,
    lam: np.ndarray,
    p_drop: np.ndarray,
    nu: np.ndarray,
    birth: np.ndarray,
    drop_time: np.ndarray,
) -> pd.DataFrame:
    """Per-user ground truth for the holdout window [days, days + holdout_days)."""
    D, H = float(cfg.days), float(cfg.holdout_days)
    n = len(user_ids)
    in_h = (bt >= D) & (bt < D + H)
    tx = np.bincount(bu[in_h], minlength=n)
    spend = np.bincount(bu[in_h], weights=value[in_h], minlength=n)
    alive = (birth < D) & (drop_time >= D)
    # Expected holdout purchases of a user alive at D: sum_k (1-p)^(k-1) P(Gamma(k, lam) <= H),
    # i.e. the k-th purchase happens in the window and the user survived the k-1 before it.
    exp_tx = np.zeros(n)
    k = np.arange(1, 401, dtype=float)
    for lo in range(0, n, 20_000):
        sl = slice(lo, lo + 20_000)
        lh = (lam[sl] * H)[:, None]
        surv = (1.0 - p_drop[sl])[:, None] ** (k[None, :] - 1)
        exp_tx[sl] = (surv * gammainc(k[None, :], lh)).sum(axis=1)
    exp_tx *= alive
    mean_order = cfg.p_gg / nu
    return pd.DataFrame(
        {
            "user_id": user_ids,
            "alive_at_cutoff": alive,
            "holdout_transactions": tx,
            "holdout_spend": np.round(spend, 2),
            "expected_holdout_transactions": exp_tx,
            "expected_holdout_spend": exp_tx * mean_order,
            "purchase_rate_per_day": lam,
            "dropout_probability": p_drop,
            "mean_order_value": mean_order,
        }
    )
