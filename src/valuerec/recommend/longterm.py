"""A ranking policy learned from logged slates for long-term revenue (PyTorch).

A click-or-purchase model ranks for today; what a slate does to a user's next visits is
invisible to it. This policy learns both from the log of an exploring policy and ranks by
``expected revenue now + value of the user x how much the item lowers their chance of
leaving``:

* a **purchase head** ``P(buy | item at position p) = sigmoid(f(x) + b_p)`` on the logged
  exposures (``b_p`` learns the position bias);
* a **click head** ``P(click | item at position p)``, learned from the plentiful clicks;
* a **retention head**: a slate's dropout probability ``d = sigmoid(h(user) + sum_p theta_p
  g(x_p))`` with ``g(x) = -gamma P(click | x) + r(x)``: engagement with what was shown is the
  main route by which a slate keeps a user (one scalar ``gamma`` to learn from the few
  dropouts), and a small residual ``r`` (L2-penalised) learns what else matters (price, for
  instance). Leaving is never logged, only silence is, so the likelihood of "no later visit"
  mixes the two ways it happens: ``d + (1 - d)(1 - v)^T`` (left, or stayed but did not visit
  in the ``T`` days the log still ran, at the user's observed visit rate ``v``) -- slates near
  the end of the log are then weighed as the weak evidence they are;
* a **value head**: the user's revenue per day after the slate (a Monte-Carlo critic, fitted
  on the revenue the log saw next), times ``horizon_days`` gives what losing them costs.

The score of candidate ``x`` for a user is then ``P(buy | x, first) price + V d(1-d)
theta_1 (-g(x))``: today's revenue plus the future revenue its effect on the user's dropout
protects, the two on the same money scale. Exploration in the log (an epsilon-greedy logger)
is what makes ``g`` learnable: without randomised slates every user would see the same kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from valuerec.recommend.policies import ScoredPolicy, SlateContext, zscore

__all__ = ["EPOCHS", "LoggedSlates", "LongTermPolicy"]

#: training epochs: held-out log-loss of the purchase head on a fresh logging run (tuning
#: seeds 100, 101) was lowest at 24 (8 underfits: 0.4129 vs LightGBM's 0.4086; 24: 0.4096;
#: 40 and 64 overfit)
EPOCHS = 24


@dataclass
class LoggedSlates:
    """Training data: one row per logged slate.

    ``features`` (S, k, F): the platform's features of the shown items; ``price``/``bought``/
    ``clicked`` (S, k); ``silent`` (S,): the user was never seen again in the log;
    ``days_left`` (S,): days the log ran after the slate; ``visit_rate`` (S,): the user's
    observed visits per day; ``future_rate`` (S,): the user's revenue per day in the rest of
    the log.
    """

    features: np.ndarray
    price: np.ndarray
    bought: np.ndarray
    clicked: np.ndarray
    silent: np.ndarray
    days_left: np.ndarray
    visit_rate: np.ndarray
    future_rate: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


class LongTermPolicy(ScoredPolicy):
    """Rank by learned expected revenue plus the revenue protected by retention.

    ``user_columns``: the feature columns that describe the user (the same for all of a
    user's candidates); ``retention_weight`` scales the retention term (0: a learned
    revenue-greedy policy); ``horizon_days``: how far ahead a retained user is valued.
    """

    name = "learned"
    reads_purchase_model = False  # its own purchase head, learned from the log

    def __init__(
        self,
        user_columns: Sequence[int],
        horizon_days: float = 90.0,
        retention_weight: float = 1.0,
        hidden: int = 64,
        epochs: int = EPOCHS,
        batch_size: int = 256,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-5,
        seed: int = 0,
        diversity: float = 0.0,
        residual_penalty: float = 1.0,
        conservatism: float = 0.0,
    ) -> None:
        self.user_columns = list(user_columns)
        self.horizon_days = horizon_days
        self.retention_weight = retention_weight
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.seed = seed
        self.diversity = diversity
        self.residual_penalty = residual_penalty
        self.conservatism = conservatism

    # -- the network -----------------------------------------------------------------------------
    def _build(self, n_features: int, k: int) -> None:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        h = self.hidden

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.item = nn.Sequential(
                    nn.Linear(n_features, h),
                    nn.ReLU(),
                    nn.Linear(h, h),
                    nn.ReLU(),
                    nn.Linear(h, 3),
                )
                self.user = nn.Sequential(
                    nn.Linear(n_users_cols, h // 2), nn.ReLU(), nn.Linear(h // 2, 2)
                )
                self.position = nn.Parameter(torch.zeros(k))
                self.click_position = nn.Parameter(torch.zeros(k))
                self.theta = nn.Parameter(torch.zeros(k))
                self.gamma = nn.Parameter(torch.zeros(()))

        n_users_cols = len(self.user_columns)
        self.net_ = Net()
        self.k_ = k

    @staticmethod
    def _effect(net: Any, item_out: Any) -> Any:
        """``g(x)``: an item's push on the dropout logit (negative: it keeps the user)."""
        import torch

        p_click = torch.sigmoid(item_out[..., 1] + net.click_position[0])
        return -net.gamma * p_click + item_out[..., 2]

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_) / self.scale_).astype(np.float32)

    def fit(self, data: LoggedSlates) -> LongTermPolicy:
        """Learn the three heads from logged slates (Adam, mini-batches of slates)."""
        import torch
        import torch.nn.functional as F

        if len(data) < 2:
            raise ValueError("need at least two logged slates to learn from")
        s, k, f = data.features.shape
        flat = data.features.reshape(-1, f)
        self.mean_ = flat.mean(axis=0)
        self.scale_ = np.where(flat.std(axis=0) > 0, flat.std(axis=0), 1.0)
        self.price_scale_ = float(np.mean(data.price))
        self.rate_scale_ = float(max(np.mean(data.future_rate), 1e-6))
        self._build(f, k)
        x = torch.from_numpy(self._standardise(data.features))
        bought = torch.from_numpy(data.bought.astype(np.float32))
        clicked = torch.from_numpy(data.clicked.astype(np.float32))
        silent = torch.from_numpy(data.silent.astype(np.float32))
        stay_quiet = torch.from_numpy(
            ((1.0 - np.clip(data.visit_rate, 1e-3, 1.0)) ** data.days_left).astype(np.float32)
        )
        rate = torch.from_numpy((data.future_rate / self.rate_scale_).astype(np.float32))
        has_future = torch.from_numpy((data.days_left >= 7).astype(np.float32))
        net = self.net_
        opt = torch.optim.Adam(
            net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        gen = torch.Generator().manual_seed(self.seed)
        ucols = self.user_columns
        for _ in range(self.epochs):
            for idx in torch.randperm(s, generator=gen).split(self.batch_size):
                xb = x[idx]
                item_out = net.item(xb)  # (b, k, 3)
                user_out = net.user(xb[:, 0, ucols])  # (b, 2)
                buy_logit = item_out[..., 0] + net.position
                loss_buy = F.binary_cross_entropy_with_logits(buy_logit, bought[idx])
                click_logit = item_out[..., 1] + net.click_position
                loss_click = F.binary_cross_entropy_with_logits(click_logit, clicked[idx])
                g = self._effect(net, item_out)
                theta = F.softplus(net.theta)
                d = torch.sigmoid(user_out[:, 0] + (theta * g).sum(dim=1))
                p_silent = (d + (1 - d) * stay_quiet[idx]).clamp(1e-6, 1 - 1e-6)
                loss_ret = F.binary_cross_entropy(p_silent, silent[idx])
                w = has_future[idx]
                pred_rate = F.softplus(user_out[:, 1])
                loss_val = (w * (pred_rate - rate[idx]) ** 2).sum() / w.sum().clamp(min=1)
                resid = (item_out[..., 2] ** 2).mean()
                loss = (
                    loss_buy
                    + loss_click
                    + loss_ret
                    + 0.1 * loss_val
                    + self.residual_penalty * resid
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        return self

    # -- serving -------------------------------------------------------------------------------
    def components(self, ctx: SlateContext) -> dict[str, np.ndarray]:
        """The learned pieces for a context: P(buy at first), retention effect g, dropout
        probability d and value V per user (for inspection and tests)."""
        import torch
        import torch.nn.functional as F

        ctx.require("price")
        net = self.net_
        with torch.no_grad():
            x = torch.from_numpy(self._standardise(ctx.features))
            item_out = net.item(x)
            user_out = net.user(x[:, 0, self.user_columns])
            theta = F.softplus(net.theta)
            p_buy = torch.sigmoid(item_out[..., 0] + net.position[0])
            g = self._effect(net, item_out)
            k = min(self.k_, g.shape[1])
            top = torch.topk(g.neg(), k, dim=1).values.neg()  # a retaining slate's items
            d = torch.sigmoid(user_out[:, 0] + (theta[:k] * top).sum(dim=1))
            value = F.softplus(user_out[:, 1]) * self.rate_scale_ * self.horizon_days
        return {
            "p_buy": p_buy.numpy().astype(float),
            "g": g.numpy().astype(float),
            "dropout": d.numpy().astype(float),
            "value": value.numpy().astype(float),
            "theta1": np.full(len(ctx), float(theta[0])),
        }

    def long_term_value(self, ctx: SlateContext) -> np.ndarray:
        """Learned money value of showing each candidate first: revenue now plus the future
        revenue its effect on dropout protects."""
        c = self.components(ctx)
        revenue = c["p_buy"] * ctx.price
        slope = (c["value"] * c["dropout"] * (1 - c["dropout"]) * c["theta1"])[:, None]
        return revenue - self.retention_weight * slope * c["g"]

    def scores(self, ctx: SlateContext) -> np.ndarray:
        """The learned value; with ``conservatism`` > 0, standardised per user and pulled
        towards the logging policy's ranking (relevance) by that weight.

        Conservatism is the usual guard of offline policy learning (BCQ, CQL): where the
        learned policy strays from what the logger showed its estimates rest on little data,
        and effects the log can barely identify -- a slate's pull on dropout, seen through a
        few hundred departures -- are exactly the ones it would get wrong.
        """
        value = self.long_term_value(ctx)
        if self.conservatism <= 0:
            return value
        return zscore(value) + self.conservatism * zscore(ctx.relevance)
