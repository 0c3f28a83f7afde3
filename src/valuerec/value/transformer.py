"""The sequence Transformer value model: behaviour sequence + static features -> ZILN spend.

Each customer's daily behaviour tokens (:mod:`valuerec.features.sequences`) are encoded by the
shared :class:`valuerec.nn.encoder.SequenceEncoder`, with the static behaviour features and the
BG/NBD view of the customer as a summary token. Two heads read the summary state:

* a zero-inflated lognormal of holdout spend (:mod:`valuerec.nn.ziln`), giving the expected
  spend and per-customer prediction intervals;
* a hurdle count of holdout repeat purchase days: a churn head (probability of buying again,
  reported as p_alive) times a zero-truncated Poisson for how often.

A small ensemble of networks is averaged (CDNOW's signal is weak and single networks are
noisy). They are cross-fitted: network k is early-stopped on fold k of the training
customers, which it never trains on, so every training customer has an out-of-fold
prediction. Those drive a split-conformal adjustment of the interval levels (the 80% / 50%
intervals then cover 80% / 50% of new customers) and a rank-preserving calibration of the
expected spend. The intervals are quantiles of the networks' ZILN rescaled to the calibrated
mean (:func:`_mu_for_mean`), so mean and interval describe one distribution.

``snapshots=k`` trains on the customers as seen at ``k`` earlier cut-offs too (rolling
origins, :func:`~valuerec.value.base.snapshot_data`), when the model builds its own training
data (:meth:`fit` with a store, or :meth:`training_data`). Where purchase rates drift, how a
history runs into its future is what the sequence encoder has to learn, and one cut-off gives
it one example per customer: on the value benchmark's drifting synthetic logs, 8 monthly
snapshots lift its margin over LightGBM from +0.003 to +0.009 normalized Gini (fit time about
5x). Off by default: on CDNOW (6 snapshots) Gini rose by 0.002-0.004 but one half's decile
MAPE went from 0.157 to 0.194, for 6x the fit time. The spend calibration and interval levels
are fitted on the rows at the fit's own cut-off only.

``periodic_pool=True`` adds a second reading of the sequence beside the attention summary: a
sum over the tokens of learned embeddings of their event type, numeric features and periodic
encodings of their age (:class:`valuerec.nn.time_pool.PeriodicSumPool`). Attention averages;
a forecast of purchases needs counts, and habits that repeat a year on need each token's phase.
It needs the history to reach back that far: on the ``annual-habits`` synthetic log (two years
of history, 10,000 customers) the default 32 tokens end a median 309 days back for the 40% of
customers whose sequence is full, who hold 81% of the future spend. There, with 8 snapshots,
``max_len=128`` and the pool lift the margin over LightGBM to +0.012 normalized Gini
[+0.004, +0.021] (fit 12 min on 2 cores), against +0.002 with neither, +0.005 with 128
tokens alone and +0.007 with the pool alone; the Bayes-attainable margin is +0.036. Off by
default: on CDNOW (purchase tokens only, no annual habit in a 9-month calibration), with
128 tokens and the pool, the ensemble's Gini margin over LightGBM stays +0.003 / +0.003
(halves) but its decile MAPE goes from 0.097 / 0.116 to 0.110 / 0.121.

The figures above predate the annual moments of the purchase days among the behaviour
features (:func:`valuerec.features.behaviour.behaviour_features`), which the context token
reads too. With them, on ``annual-habits``, LightGBM itself gains +0.015 and the sequence
model's margin over it shrinks to +0.005 [-0.002, +0.011] with 8 snapshots (+0.020 over
LightGBM without the moments) and +0.001 with 128 tokens and the pool as well: a hand-made
statistic of the phase gives the trees most of what the networks had learned to read from
the tokens. The ensemble of LightGBM and the 8-snapshot Transformer is the best model there
(+0.009 [+0.004, +0.014]; the generator's own posterior is +0.021). Re-measured after the
cross-fitting folds were drawn by customer (before, a customer's earlier snapshot rows could
train the network that predicted them "out of fold"): +0.004 [-0.002, +0.011] for the
Transformer (+0.019 over LightGBM without the moments), +0.007 [+0.003, +0.011] for the
ensemble (+0.022): no gain from the cleaner validation, the differences within the runs' noise.
"""

from __future__ import annotations

import zlib
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from valuerec.features.sequences import NUMERIC
from valuerec.nn.early_stopping import EarlyStopping
from valuerec.nn.encoder import SequenceEncoder
from valuerec.nn.time_pool import PeriodicSumPool
from valuerec.nn.ziln import ziln_interval, ziln_loss, ziln_mean, ziln_params
from valuerec.value.base import ValueData, ValueModel, holdout_labels
from valuerec.value.btyd import BetaGeoFitter
from valuerec.value.calibration import SpendCalibration
from valuerec.value.counts import CountPMF, hurdle_pmf, mixture_pmf
from valuerec.value.gbm import btyd_features


class _Net(nn.Module):
    """Encoder (+ periodic sum pool) + ZILN spend head + count heads."""

    def __init__(
        self, encoder: SequenceEncoder, d: int, pool: PeriodicSumPool | None = None
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pool = pool
        width = d + (pool.width if pool is not None else 0)
        # outputs: ZILN (logit p, mu, raw sigma), log purchase rate, logit P(buys again)
        self.head = nn.Sequential(nn.Linear(width, d), nn.GELU(), nn.Linear(d, 5))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if not hasattr(self, "pool"):  # nn.Module looks in _modules too
            self.pool = None  # an artifact saved before the pool existed

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        _, summary = self.encoder(
            batch["item"],
            batch["category"],
            batch["event_type"],
            batch["numeric"],
            batch["mask"],
            batch["context"],
        )
        if self.pool is not None:
            pooled = self.pool(batch["event_type"], batch["numeric"], batch["mask"])
            summary = torch.cat([summary, pooled], dim=-1)
        return self.head(summary)


_SEQ_KEYS = ("item", "category", "event_type", "numeric", "mask")
#: a context column whose std (+1e-6 at fit) is at most this was constant in training
CONSTANT_STD = 1e-4


def _batch(t: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows ``idx``, with sequences trimmed to the longest one in the batch.

    Sequences are right-aligned, so dropping leading all-padding columns changes nothing
    but the cost: most customers have a handful of tokens, and attention is quadratic.
    """
    rows = {k: v[idx] for k, v in t.items()}
    longest = int(rows["mask"].sum(1).max()) if len(idx) else 1
    keep = max(longest, 1)
    for k in _SEQ_KEYS:
        rows[k] = rows[k][:, -keep:]
    return rows


def _buckets(lengths: np.ndarray, rows: np.ndarray, size: int, rng: np.random.Generator):
    """Mini-batches of similar sequence length, in random order (cheap trimmed batches)."""
    noisy = lengths[rows] + rng.random(len(rows))  # shuffle within equal lengths
    ordered = rows[np.argsort(noisy, kind="stable")]
    batches = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    """``log1p`` of the magnitude with the sign kept: counts and money are heavy-tailed, and
    some features are signed (the annual moments of the purchase days), which a clip at 0
    would halve. The same as ``log1p`` on the non-negative features."""
    return np.sign(x) * np.log1p(np.abs(x))


def _user_uniform(users: pd.Index) -> np.ndarray:
    """A fixed U(0,1) draw per user id, so randomised intervals are stable across calls."""
    h = np.array([zlib.crc32(str(u).encode()) for u in users], dtype=np.float64)
    return (h + 0.5) / 2.0**32


def _mu_for_mean(raw: dict[str, np.ndarray], spend: np.ndarray) -> np.ndarray:
    """The lognormal location that gives the ZILN ``(p, mu, sigma)`` the mean ``spend``.

    The reported expected spend is the networks' mean after calibration (and averaged over the
    networks), so it is not the mean of the distribution ``(p, mu, sigma)`` the heads output.
    The intervals are taken from that distribution moved (a change of scale, which keeps its
    zero mass and log-spread) to have the reported mean: one predictive distribution per
    customer, whose mean is ``pred_spend`` and whose quantiles are the interval ends. Without
    this, calibration that lowered a customer's mean left the interval where it was, above it.
    """
    ok = (spend > 0) & (raw["p"] > 0)
    safe = np.where(ok, spend, 1.0) / np.where(ok, raw["p"], 1.0)
    return np.where(ok, np.log(safe) - raw["sigma"] ** 2 / 2, raw["mu"])


def _customer_folds(customers: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` folds of row indices, every row of one customer in the same fold.

    Customers are drawn in a random order and cut into ``k`` runs; a fold lists its
    customers' rows in that order. With one row per customer this is the plain random split
    of rows (the same folds as before snapshots existed, for a given seed).
    """
    if not k:
        return []
    codes, uniques = pd.factorize(customers)
    order = np.random.default_rng(seed).permutation(len(uniques))
    rank = np.empty(len(uniques), np.int64)
    rank[order] = np.arange(len(uniques))
    row_rank = rank[codes]
    by_rank = np.argsort(row_rank, kind="stable")
    cuts = np.cumsum([0, *(len(part) for part in np.array_split(order, k))])
    edges = np.searchsorted(row_rank[by_rank], cuts)
    return [by_rank[lo:hi] for lo, hi in pairwise(edges)]


class TransformerValueModel(ValueModel):
    """Sequence Transformer with a ZILN head, trained multi-task on spend and purchase count."""

    name = "transformer"
    needs_labels = True
    min_customers = 20

    def __init__(
        self,
        max_len: int = 32,
        token_types: tuple[str, ...] | None = None,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        dropout: float = 0.1,
        epochs: int = 40,
        batch_size: int = 256,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        patience: int = 5,
        n_models: int = 3,
        count_weight: float = 1.0,
        count_model: str = "hurdle",
        calibrate_mean: bool = True,
        snapshots: int = 0,
        snapshot_step_days: int = 30,
        periodic_pool: bool = False,
        seed: int = 0,
        device: str | None = None,
        discount_rate: float = 0.01,
    ) -> None:
        self.max_len = max_len
        self.token_types = token_types
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.n_models = n_models
        self.count_weight = count_weight
        self.count_model = count_model
        self.calibrate_mean = calibrate_mean
        self.snapshots = snapshots
        self.snapshot_step_days = snapshot_step_days
        self.periodic_pool = periodic_pool
        self.seed = seed
        self.device = device
        self.discount_rate = discount_rate

    def _data_options(self) -> dict[str, Any]:
        return {
            "sequences": True,
            "max_len": self.max_len,
            "token_types": self.token_types,
            "vocab": getattr(self, "vocab_", None),
        }

    def _snapshot_shifts(self) -> list[int]:
        """``snapshots`` earlier cut-offs, ``snapshot_step_days`` apart."""
        return [self.snapshot_step_days * (k + 1) for k in range(max(self.snapshots, 0))]

    # -- tensors -------------------------------------------------------------------------
    def _context_table(self, data: ValueData) -> pd.DataFrame:
        return data.features.join(btyd_features(self.profile_model_, data.rfm, self.horizon_days_))

    def _context(self, data: ValueData) -> np.ndarray:
        x = _signed_log1p(self._context_table(data)[self.context_columns_].to_numpy(float))
        # a column constant in training (no clicks in a purchase log) keeps its own scale:
        # divided by its std (+1e-6), one new click read 690,000 standard deviations out, and
        # every customer who had one got the same prediction. Training inputs are unchanged
        # (a constant column is 0 either way), and so are artifacts saved before.
        scale = np.where(self.context_std_ > CONSTANT_STD, self.context_std_, 1.0)
        return ((x - self.context_mean_) / scale).astype(np.float32)

    def _tensors(self, data: ValueData) -> dict[str, torch.Tensor]:
        seq = data.sequences
        if seq is None:
            raise ValueError("the Transformer needs sequences: build value_data(sequences=True)")
        dev = self._device()
        return {
            "item": torch.as_tensor(seq.item, device=dev),
            "category": torch.as_tensor(seq.category, device=dev),
            "event_type": torch.as_tensor(seq.event_type, device=dev),
            "numeric": torch.as_tensor(seq.numeric, device=dev),
            "mask": torch.as_tensor(seq.mask, device=dev),
            "context": torch.as_tensor(self._context(data), device=dev),
        }

    def _device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # -- training ------------------------------------------------------------------------
    def _fit(self, data: ValueData) -> None:
        labels = holdout_labels(data)  # an error when there is nothing to learn
        if data.sequences is None:
            raise ValueError("the Transformer needs sequences: build value_data(sequences=True)")
        self.vocab_ = data.sequences.vocab
        self.profile_model_ = BetaGeoFitter().fit(data.rfm)
        ctx = self._context_table(data)
        self.context_columns_ = list(ctx.columns)
        logged = _signed_log1p(ctx.to_numpy(float))
        self.context_mean_ = logged.mean(axis=0)
        self.context_std_ = logged.std(axis=0) + 1e-6
        tensors = self._tensors(data)
        dev = self._device()
        # purchases with no money at all (every value zero or NULL): counts and churn are
        # still learnt, and the spend forecast is 0 (a ZILN mean is never 0 by itself)
        self.spent_ = bool((labels["holdout_spend"] > 0).any())
        y_spend = torch.as_tensor(labels["holdout_spend"].to_numpy(np.float32), device=dev)
        y_tx = torch.as_tensor(labels["holdout_transactions"].to_numpy(np.float32), device=dev)
        n = len(data.users)
        # Cross-fitting: network k holds out fold k (early stopping on it), so every training
        # customer gets an out-of-fold prediction from the network that did not see them; the
        # interval levels and the mean calibration are then fitted on all of those. Folds
        # are drawn by customer: with snapshots, a customer's earlier rows (whose label
        # windows overlap their holdout) are held out with them. At least 2 folds: a single
        # network (n_models=1) trains on half the customers and stops early on the other half.
        k_folds = max(self.n_models, 2) if n >= 20 else 0
        folds = _customer_folds(data.customers, k_folds, self.seed)
        self.nets_, self.history_ = [], []
        oof_parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        for k in range(self.n_models):
            held = folds[k % k_folds] if k_folds else np.empty(0, np.int64)
            train = np.setdiff1d(np.arange(n), held) if len(held) else np.arange(n)
            torch.manual_seed(self.seed * 1000 + k)
            net, hist = self._train_one(tensors, y_spend, y_tx, train, held, self.seed * 1000 + k)
            self.nets_.append(net)
            self.history_.append(hist)
            if len(held) and k < k_folds:
                oof_parts.append((held, self._outputs(tensors, held, [net])))
        self._calibrate(data, oof_parts)

    def _make_net(self) -> _Net:
        v = self.vocab_
        enc = SequenceEncoder(
            len(v["item"]) + 2,
            len(v["category"]) + 2,
            len(v["event_type"]) + 2,
            len(NUMERIC),
            n_context=len(self.context_columns_),
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            max_len=self.max_len,
            dropout=self.dropout,
        )
        pool = (
            PeriodicSumPool(len(v["event_type"]) + 2, len(NUMERIC), NUMERIC.index("log_age_days"))
            if getattr(self, "periodic_pool", False)  # False in artifacts saved before it
            else None
        )
        return _Net(enc, self.d_model, pool).to(self._device())

    def _loss(self, out: torch.Tensor, y_spend: torch.Tensor, y_tx: torch.Tensor) -> torch.Tensor:
        if self.count_model == "poisson":
            count = F.poisson_nll_loss(out[:, 3], y_tx, log_input=True, full=False)
        else:
            # hurdle: how often a returning customer buys is a zero-truncated Poisson (its
            # -log-likelihood, up to log y!); whether they return is the churn head below
            log_lam = out[:, 3]
            lam = torch.exp(log_lam)
            ztp = -(y_tx * log_lam - lam - torch.log(-torch.expm1(-lam) + 1e-12))
            count = torch.where(y_tx > 0, ztp, torch.zeros_like(ztp)).mean()
        # churn head: P(at least one purchase in the horizon), learned from purchases rather
        # than from spend, so free orders or missing values still count as coming back
        returns = F.binary_cross_entropy_with_logits(out[:, 4], (y_tx > 0).float())
        return ziln_loss(out[:, :3], y_spend) + self.count_weight * (count + returns)

    def _train_one(
        self,
        t: dict[str, torch.Tensor],
        y_spend: torch.Tensor,
        y_tx: torch.Tensor,
        train: np.ndarray,
        cal: np.ndarray,
        seed: int,
    ) -> tuple[_Net, list[float]]:
        net = self._make_net()
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        rng = np.random.default_rng(seed)
        stopper, hist = EarlyStopping(self.patience, min_delta=1e-4), []
        lengths = t["mask"].sum(1).cpu().numpy()
        for epoch in range(1, self.epochs + 1):
            net.train()
            for rows in _buckets(lengths, train, self.batch_size, rng):
                idx = torch.as_tensor(rows)
                loss = self._loss(net(_batch(t, idx)), y_spend[idx], y_tx[idx])
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
            if len(cal) == 0:
                continue
            net.eval()
            with torch.no_grad():
                total = 0.0
                for rows in _buckets(lengths, cal, 1024, rng):
                    idx = torch.as_tensor(rows)
                    total += float(self._loss(net(_batch(t, idx)), y_spend[idx], y_tx[idx])) * len(
                        rows
                    )
                val = total / len(cal)
            hist.append(val)
            if stopper.check(-val, net, epoch):  # a loss: lower is better
                break
        stopper.restore(net)
        net.eval()
        return net, hist

    # -- prediction ----------------------------------------------------------------------
    def _raw(self, data: ValueData) -> dict[str, np.ndarray]:
        """Ensemble outputs (averaged over the networks) for every customer of ``data``."""
        t = self._tensors(data)
        return self._outputs(t, np.arange(len(data.users)), self.nets_)

    def _outputs(
        self, t: dict[str, torch.Tensor], rows: np.ndarray, nets: list[_Net]
    ) -> dict[str, np.ndarray]:
        """ZILN parameters, expected spend and purchase rate of ``rows``, averaged over ``nets``."""
        n = len(rows)
        lengths = t["mask"][torch.as_tensor(rows)].sum(1).cpu().numpy() if n else np.zeros(0)
        order = np.argsort(lengths, kind="stable")
        ps, mus, sigmas, means, rates, alive, lams = [], [], [], [], [], [], []
        with torch.no_grad():
            for net in nets:
                out = torch.zeros(n, 5)
                for start in range(0, n, 2048):
                    pos = torch.as_tensor(order[start : start + 2048])
                    out[pos] = net(_batch(t, torch.as_tensor(rows)[pos])).cpu()
                logit, mu, sigma = (x.numpy().astype(float) for x in ziln_params(out[:, :3]))
                p = 1 / (1 + np.exp(-logit))
                ps.append(p)
                mus.append(mu)
                sigmas.append(sigma)
                means.append(ziln_mean(p, mu, sigma))
                lam = np.exp(out[:, 3].numpy().astype(float))
                p_return = 1 / (1 + np.exp(-out[:, 4].numpy().astype(float)))
                alive.append(p_return)
                lams.append(lam)
                if self.count_model == "poisson":
                    rates.append(lam)
                else:  # hurdle: P(return) x mean of the zero-truncated Poisson
                    rates.append(p_return * lam / -np.expm1(-np.maximum(lam, 1e-9)))
        return {
            "p": np.mean(ps, axis=0),
            "mu": np.mean(mus, axis=0),
            "sigma": np.mean(sigmas, axis=0),
            "mean": np.mean(means, axis=0),
            "rate": np.mean(rates, axis=0),
            "p_return": np.mean(alive, axis=0),
            # per network, (nets, n): the count distribution is the mixture of theirs
            "p_return_each": np.array(alive).reshape(len(nets), n),
            "lam_each": np.array(lams).reshape(len(nets), n),
            "rate_each": np.array(rates).reshape(len(nets), n),
        }

    def _raw_pmf(self, raw: dict[str, np.ndarray]) -> CountPMF:
        """The count distribution the heads define: the hurdle (churn head x zero-truncated
        Poisson), or a Poisson with ``count_model='poisson'``; over several networks the
        mixture of theirs, whose mean is the averaged ``rate`` (one hurdle of averaged
        parameters would have another mean)."""
        if self.count_model == "hurdle":
            parts = [
                hurdle_pmf(p, lam)
                for p, lam in zip(raw["p_return_each"], raw["lam_each"], strict=True)
            ]
        else:  # a Poisson is this hurdle
            parts = [hurdle_pmf(-np.expm1(-rate), rate) for rate in raw["rate_each"]]
        return mixture_pmf(parts)

    def _count_pmf(self, data: ValueData, horizon_days: float) -> tuple[CountPMF, float]:
        return self._raw_pmf(self._raw(data)), horizon_days / self.horizon_days_

    def _calibrate(
        self, data: ValueData, oof_parts: list[tuple[np.ndarray, dict[str, np.ndarray]]]
    ) -> None:
        """Split-conformal interval levels and the mean calibration, from out-of-fold outputs.

        The nominal level of each interval is the one whose intervals cover the target share
        of training customers out of fold; the calibration of the expected spend (the 10-bin
        map, ``SpendCalibration.fit``: the power map changed nothing here, see
        ``value.calibration``) is fitted on the same predictions.
        """
        self.interval_levels_ = {0.8: 0.8, 0.5: 0.5}
        self.mean_calibration_ = SpendCalibration()
        if not oof_parts or data.labels is None:
            return
        rows = np.concatenate([r for r, _ in oof_parts])
        # only rows at the fit's own cut-off: earlier snapshots' windows fall in other seasons
        # and stages of the customers' lives, so their spend levels differ from the window
        # being predicted (on CDNOW, calibrating on all rows doubled one half's decile MAPE)
        here = data.at_cutoff[rows]
        rows = rows[here]
        if not len(rows):
            return
        raw = {  # customers on the last axis (the per-network arrays are (nets, n))
            k: np.concatenate([o[k] for _, o in oof_parts], axis=-1)[..., here]
            for k in oof_parts[0][1]
        }
        y = data.labels["holdout_spend"].to_numpy()[rows]
        if self.calibrate_mean:
            # the lognormal mean exp(mu + sigma^2/2) amplifies any error in sigma; recalibrate
            # level and spread on customers the networks did not train on (ranking unchanged)
            self.mean_calibration_ = SpendCalibration.fit(raw["mean"], y)
            if len(self.mean_calibration_.log_pred) < 2:  # too few for a map: the level
                self.mean_calibration_ = SpendCalibration.level(raw["mean"], y)
        spend = self.mean_calibration_(raw["mean"])
        self.oof_spend_ = pd.Series(spend, index=data.users[rows])
        if len(rows) < 50:  # too few to choose interval levels: the nominal ones
            return
        u = _user_uniform(data.users[rows])
        mu = _mu_for_mean(raw, spend)
        grid = np.linspace(0.02, 0.995, 196)
        for target in (0.8, 0.5):
            cover = []
            for level in grid:
                lo, hi = ziln_interval(level, raw["p"], mu, raw["sigma"], u)
                cover.append(np.mean((y >= lo) & (y <= hi)))
            self.interval_levels_[target] = float(grid[np.argmin(np.abs(np.array(cover) - target))])

    def _predict(self, data: ValueData, horizon_days: float) -> pd.DataFrame:
        raw = self._raw(data)
        scale = horizon_days / self.horizon_days_
        u = _user_uniform(data.users)
        spent = getattr(self, "spent_", True)  # (models saved before it was recorded: True)
        spend = self.mean_calibration_(raw["mean"]) if spent else np.zeros(len(data.users))
        out = {
            "pred_transactions": raw["rate"] * scale,
            "pred_spend": spend * scale,
            "p_alive": raw["p_return"],
        }
        mu = _mu_for_mean(raw, spend) if spent else None
        for target, (lo_name, hi_name) in (
            (0.8, ("spend_low", "spend_high")),
            (0.5, ("spend_low50", "spend_high50")),
        ):
            if mu is None:  # nobody spent anything in training: no money to forecast
                out[lo_name], out[hi_name] = np.zeros(len(spend)), np.zeros(len(spend))
                continue
            lo, hi = ziln_interval(self.interval_levels_[target], raw["p"], mu, raw["sigma"], u)
            out[lo_name], out[hi_name] = lo * scale, hi * scale
        frame = pd.DataFrame(out)
        # from the same outputs rather than by the base class (no second pass of the network)
        self._count_columns(frame, (self._raw_pmf(raw), scale), len(data.users))
        return frame
