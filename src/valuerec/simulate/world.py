"""The latent world of the simulator: users and items with known parameters, and the true
click, purchase and dropout probabilities that follow from them.

Everything a policy could want to know but a platform never sees lives here, so the
benchmark can score policies against the truth (true relevance for NDCG, exact expected
revenue for off-policy evaluation) while policies only see what was logged.

Model (per visit of user ``i``, item ``j`` shown at position ``k`` of the slate):

* affinity ``a_ij = u_i . v_j``; items' latent vectors cluster around their category's centroid
  and users' tastes around a favourite and a second category, so categories carry taste;
* click: ``theta_k * sigmoid(c0 + c1 a_ij + c2 pop_j - phi F_ij)`` with position bias
  ``theta_k = 1 / log2(k + 1) ** position_decay`` and ``F_ij`` the user's decayed count of
  earlier exposures to the item (fatigue);
* purchase given a click: ``sigmoid(b_i + b1 a_ij - beta_i log(price_j / budget_i))`` -- a base
  purchase propensity, taste, and price relative to the user's budget weighted by their price
  sensitivity; an item is bought at most once;
* satisfaction with the slate: the position-weighted mean click attraction of what was shown,
  each further item of an already shown category counting ``redundancy`` times less and an
  item priced above the user's budget ``exp(-price_aversion log(price / budget))`` times less;
* dropout after the visit with probability ``h_i exp(-gamma (s - s_ref))``: a satisfying slate
  lowers the hazard and a poor one raises it, which is how ranking changes lifetime value.

Items (ids, titles, categories, prices) and item popularity come from the synthetic
generator (:mod:`valuerec.data.synth`), so simulated logs look like the generator's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import pandas as pd
from scipy.special import expit

from valuerec.data import synth


@dataclass
class SimConfig:
    """World parameters (rates are per day, probabilities per visit)."""

    users: int = 10_000
    items: int = 1_000
    dims: int = 8
    slate_size: int = 10
    seed: int = 0
    start: str = "2024-01-01"
    # visits: daily visit rate ~ Gamma(visit_shape, visit_mean / visit_shape)
    visit_shape: float = 2.0
    visit_mean: float = 0.3
    # tastes: the sd of the affinity a_ij over users and items
    taste_scale: float = 2.0
    item_noise: float = 0.8  # item vector = category centroid + item_noise * N(0, I)
    # clicks
    click_bias: float = -1.5
    click_taste: float = 1.0
    click_popularity: float = 0.3
    position_decay: float = 1.0
    fatigue: float = 0.15  # attraction lost per (decayed) earlier exposure of the same item
    fatigue_decay: float = 0.7  # per day
    # purchases given a click
    buy_mean: float = -2.5
    buy_sd: float = 0.7
    buy_taste: float = 0.5
    price_sensitivity_median: float = 0.9
    price_sensitivity_sd: float = 0.5  # of log beta_i
    budget_sd: float = 0.6  # of log budget_i around the catalogue's median log price
    # retention
    hazard_a: float = 1.0  # base dropout hazard per visit ~ Beta(a, b): mean 0.025
    hazard_b: float = 40.0
    satisfaction_effect: float = 5.0
    satisfaction_ref: float = 0.3
    redundancy: float = 0.6
    price_aversion: float = 0.5  # satisfaction lost per log-unit of price above the budget
    # margins: category base rate + noise
    margin_low: float = 0.1
    margin_high: float = 0.5
    margin_sd: float = 0.05

    def with_(self, **overrides: object) -> SimConfig:
        """A copy with some fields changed; unknown names are an error."""
        names = {f.name for f in fields(self)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown simulator option(s): {', '.join(sorted(unknown))}")
        return replace(self, **overrides)  # type: ignore[arg-type]


@dataclass
class World:
    """Latent users and items drawn from a :class:`SimConfig` (seeded)."""

    config: SimConfig
    items: pd.DataFrame  # item_id, title, text, category, price, margin_rate
    item_vec: np.ndarray  # (m, d)
    item_cat: np.ndarray  # (m,) category index
    popularity: np.ndarray  # (m,) standardised log Zipf weight
    margin_rate: np.ndarray  # (m,)
    user_vec: np.ndarray  # (n, d)
    visit_prob: np.ndarray  # (n,)
    buy_base: np.ndarray  # (n,) purchase logit intercept
    price_sensitivity: np.ndarray  # (n,)
    budget: np.ndarray  # (n,) reference price
    base_hazard: np.ndarray  # (n,)
    favourite: np.ndarray  # (n,) category index
    user_ids: np.ndarray = field(repr=False)
    theta: np.ndarray = field(repr=False)  # (k,) position bias

    @property
    def n_users(self) -> int:
        return len(self.user_vec)

    @property
    def n_items(self) -> int:
        return len(self.item_vec)

    @property
    def price(self) -> np.ndarray:
        return self.items["price"].to_numpy()

    @classmethod
    def draw(cls, cfg: SimConfig) -> World:
        # each limit said with its value: "items >= slate_size" named neither number
        if cfg.users < 1:
            raise ValueError(f"users must be at least 1, got {cfg.users}")
        if cfg.slate_size < 1:
            raise ValueError(f"slate_size must be at least 1, got {cfg.slate_size}")
        if cfg.items < cfg.slate_size:
            raise ValueError(
                f"items must be at least {cfg.slate_size} (the slate size), got {cfg.items}"
            )
        rng = np.random.default_rng([cfg.seed, 7])
        n, m, d = cfg.users, cfg.items, cfg.dims
        items, cat = synth._items(synth.SynthConfig(items=m), rng)
        n_cat = len(synth._CATEGORIES)
        centroid = rng.standard_normal((n_cat, d))
        item_vec = (centroid[cat] + cfg.item_noise * rng.standard_normal((m, d))) / np.sqrt(
            1 + cfg.item_noise**2
        )
        item_vec = item_vec.astype(np.float32)  # small products: float32 is twice as fast
        logpop = np.log(synth._zipf_weights(m, 1.1, rng))
        popularity = (logpop - logpop.mean()) / logpop.std()
        base_margin = rng.uniform(cfg.margin_low, cfg.margin_high, n_cat)
        margin = np.clip(base_margin[cat] + cfg.margin_sd * rng.standard_normal(m), 0.02, 0.9)
        items["margin_rate"] = np.round(margin, 3)

        fav = rng.integers(0, n_cat, n)
        second = rng.integers(0, n_cat, n)
        raw = centroid[fav] + 0.5 * centroid[second] + 0.7 * rng.standard_normal((n, d))
        raw /= np.sqrt(1 + 0.25 + 0.49)
        # a_ij = u.v with unit-variance coordinates has variance about d: rescale to taste_scale
        user_vec = (raw * cfg.taste_scale / np.sqrt(d)).astype(np.float32)
        rate = rng.gamma(cfg.visit_shape, cfg.visit_mean / cfg.visit_shape, n)
        visit_prob = -np.expm1(-rate)
        buy_base = rng.normal(cfg.buy_mean, cfg.buy_sd, n)
        beta = cfg.price_sensitivity_median * np.exp(
            cfg.price_sensitivity_sd * rng.standard_normal(n)
        )
        log_price = np.log(items["price"].to_numpy())
        budget = np.exp(np.median(log_price) + cfg.budget_sd * rng.standard_normal(n))
        hazard = rng.beta(cfg.hazard_a, cfg.hazard_b, n)
        theta = 1.0 / np.log2(np.arange(2, cfg.slate_size + 2)) ** cfg.position_decay
        return cls(
            config=cfg,
            items=items,
            item_vec=item_vec,
            item_cat=cat,
            popularity=popularity,
            margin_rate=margin,
            user_vec=user_vec,
            visit_prob=visit_prob,
            buy_base=buy_base,
            price_sensitivity=beta,
            budget=budget,
            base_hazard=hazard,
            favourite=fav,
            user_ids=np.array([f"u{i}" for i in range(n)]),
            theta=theta,
        )

    # -- true probabilities ----------------------------------------------------------------
    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``a_ij`` for ``items`` of shape (len(users), k) -- or all items when 1-D of len m."""
        if items.ndim == 1:
            return self.user_vec[users] @ self.item_vec[items].T
        return np.einsum("nd,nkd->nk", self.user_vec[users], self.item_vec[items])

    def attraction_logit(
        self, users: np.ndarray, items: np.ndarray, fatigue: np.ndarray | None = None
    ) -> np.ndarray:
        cfg = self.config
        pop = self.popularity[items]
        logit = (
            cfg.click_bias
            + cfg.click_taste * self.affinity(users, items)
            + (cfg.click_popularity * pop)
        )
        return logit if fatigue is None else logit - cfg.fatigue * fatigue

    def relevance(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """True graded relevance: the click attraction without fatigue or position bias."""
        if items is None:
            items = np.arange(self.n_items)
        return expit(self.attraction_logit(users, items))

    def buy_prob(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(purchase | click) for ``items`` (len(users), k), before the bought-once rule."""
        cfg = self.config
        u = users[:, None]
        logit = (
            self.buy_base[u]
            + cfg.buy_taste * self.affinity(users, items)
            - self.price_sensitivity[u] * np.log(self.price[items] / self.budget[u])
        )
        return expit(logit)

    def satisfaction(
        self, users: np.ndarray, items: np.ndarray, attraction: np.ndarray
    ) -> np.ndarray:
        """Position-weighted mean attraction of each slate; repeats of a category and items
        priced above the user's budget count less (a slate of things one cannot afford
        disappoints even when they are to one's taste)."""
        cat = self.item_cat[items]
        k = items.shape[1]
        # how many earlier positions of the slate show the same category
        earlier = (cat[:, :, None] == cat[:, None, :]) & np.tri(k, k, -1, dtype=bool)[None]
        weight = self.config.redundancy ** earlier.sum(axis=2)
        over = np.maximum(np.log(self.price[items] / self.budget[users][:, None]), 0.0)
        weight = weight * np.exp(-self.config.price_aversion * over)
        th = self.theta[:k]
        return (attraction * weight * th).sum(axis=1) / th.sum()

    def hazard(self, users: np.ndarray, satisfaction: np.ndarray) -> np.ndarray:
        cfg = self.config
        h = self.base_hazard[users] * np.exp(
            -cfg.satisfaction_effect * (satisfaction - cfg.satisfaction_ref)
        )
        return np.minimum(h, 1.0)

    def truth(self) -> pd.DataFrame:
        """Each user's latent parameters (taste coordinates as ``taste_0..``)."""
        frame = pd.DataFrame(
            {
                "user_id": self.user_ids,
                "visit_prob": self.visit_prob,
                "buy_base_logit": self.buy_base,
                "price_sensitivity": self.price_sensitivity,
                "budget": self.budget,
                "base_hazard": self.base_hazard,
                "favourite_category": np.array(synth._CATEGORIES)[self.favourite],
            }
        )
        taste = pd.DataFrame(
            self.user_vec, columns=[f"taste_{c}" for c in range(self.user_vec.shape[1])]
        )
        return pd.concat([frame, taste], axis=1)
