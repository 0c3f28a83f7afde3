"""One interface for every customer-value model, and the data they all learn from.

``Model(**params).fit(store, calibration_end, holdout_days=...)`` then
``predict(users, horizon_days) -> DataFrame[user_id, pred_transactions,
pred_transactions_median, pred_spend, p_alive, p_return, ltv, ltv_low, ltv_high, spend_low,
spend_high, spend_low50, spend_high50]``.

* ``pred_transactions`` / ``pred_spend``: expected repeat purchase days / spend over the next
  ``horizon_days`` after the cut-off (expectations add up over customers and feed LTV);
* ``pred_transactions_median``: the median of the model's predictive distribution of that
  count, the point forecast that minimises absolute error (Gneiting 2011, "Making and
  evaluating point forecasts"); 0 for a customer more likely gone than back, where the
  expectation is a fraction. Models without a count distribution (naive) give their point
  forecast;
* ``p_alive``: probability the customer buys again within the horizon the model was trained
  for (its holdout window; BTYD models: probability of being alive at the cut-off, their
  closest notion). Neither depends on ``horizon_days``: a supervised model rescales its
  expected counts and spend linearly to another horizon, but a probability of buying at all
  does not scale that way, and nothing in its training says how it would;
* ``p_return``: probability of at least one repeat purchase day within ``horizon_days``,
  ``1 - P(count = 0)`` from the model's count distribution (``p_alive`` for a model without
  one). What "will this customer buy again" is scored on (the evaluator's ``auc_return``):
  for LightGBM and the Transformer's default hurdle count it equals ``p_alive`` at their
  trained horizon (and follows the constant rate their counts assume at others), but a
  BTYD model's ``p_alive`` is 1 for every one-time buyer, who may well not buy in the
  horizon; it never exceeds ``pred_transactions`` (P(N >= 1) <= E[N]);
* ``ltv``: discounted expected spend over the horizon, ``sum_t C_t p_t / (1 + d)^t`` over
  30-day periods, where ``C_t p_t`` is the expected spend of period t;
* ``*_low`` / ``*_high``: 80% (and ``*50``: 50%) prediction intervals where the model has a
  predictive distribution; models without one return the point prediction for both ends.
  The intervals are quantiles of a distribution whose mean is ``pred_spend``, but a mean
  need not lie inside a central interval: most customers' spend is 0 with high probability,
  so the mean is often above ``*_high`` (0 when the atom at 0 holds over 90%), and when the
  randomised interval of :func:`valuerec.nn.ziln.ziln_interval` leaves 0 out (it must for
  some customers, or no interval could cover exactly 80% of them) the mean, pulled down by
  that atom, can lie below ``*_low``.

Supervised models learn from features before ``calibration_end`` and labels in the
``holdout_days`` after it; BTYD models only read the calibration period.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from valuerec.data.schema import id_list
from valuerec.data.store import Store
from valuerec.features.behaviour import behaviour_features
from valuerec.features.rfm import holdout_summary, rfm_summary
from valuerec.features.sequences import Sequences, build_sequences
from valuerec.features.split import (
    MAX_HORIZON_DAYS,
    SplitError,
    TemporalSplit,
    TimeLike,
    when_text,
)
from valuerec.value.counts import CountPMF, count_quantile, scaled_quantile

PRED_COLUMNS = (
    "user_id", "pred_transactions", "pred_transactions_median", "pred_spend", "p_alive",
    "p_return", "ltv", "ltv_low", "ltv_high", "spend_low", "spend_high", "spend_low50",
    "spend_high50",
)  # fmt: skip
PERIOD_DAYS = 30.0


@dataclass
class ValueData:
    """Everything value models learn from, for one split and set of customers (same order).

    ``features``: behaviour features (days); ``rfm``: the BTYD summary (weeks); ``labels``:
    holdout repeat purchase days and spend (None when predicting the unknown future);
    ``sequences``: daily behaviour tokens for sequence models (None unless asked for);
    ``shift_days``: per row, how many days before ``split``'s cut-off that row's own cut-off
    lies (None: all at the cut-off; :func:`snapshot_data` pools earlier ones).
    """

    split: TemporalSplit
    features: pd.DataFrame
    rfm: pd.DataFrame
    labels: pd.DataFrame | None
    sequences: Sequences | None = None
    shift_days: np.ndarray | None = None

    @property
    def users(self) -> pd.Index:
        return self.features.index

    @property
    def at_cutoff(self) -> np.ndarray:
        """Rows seen at the split's own cut-off (not an earlier snapshot): what calibration
        to the window being predicted must be fitted on."""
        if self.shift_days is None:
            return np.ones(len(self.users), dtype=bool)
        return self.shift_days == 0

    @property
    def customers(self) -> np.ndarray:
        """Each row's customer: its user id without a snapshot's ``@-<s>d`` key suffix.

        What held-out folds must be drawn by: a customer's earlier snapshot's label window
        overlaps the holdout of the customer at the cut-off.
        """
        keys = self.users.astype(str).to_numpy()
        if self.shift_days is None:
            return keys
        suffix = np.char.add(np.char.add("@-", self.shift_days.astype(str)), "d")
        shifted = self.shift_days > 0
        out = keys.copy()
        out[shifted] = [k[: -len(x)] for k, x in zip(keys[shifted], suffix[shifted], strict=True)]
        return out

    def subset(self, users: Sequence[str] | pd.Index) -> ValueData:
        idx = pd.Index(users)
        rows = pd.Series(np.arange(len(self.users)), index=self.users)[idx].to_numpy()
        return ValueData(
            self.split,
            self.features.loc[idx],
            self.rfm.loc[idx],
            None if self.labels is None else self.labels.loc[idx],
            None if self.sequences is None else self.sequences.take(rows),
            None if self.shift_days is None else self.shift_days[rows],
        )

    @classmethod
    def concat(cls, parts: Sequence[ValueData]) -> ValueData:
        """Customers of ``parts`` one after the other, under the first part's split.

        For training sets pooled over several cut-offs (:func:`snapshot_data`): user keys must
        be unique across parts, and every part needs labels, and sequences if the first has.
        """
        users = parts[0].users.append([p.users for p in parts[1:]])
        if not users.is_unique:
            raise ValueError("a customer key appears in more than one part")
        if any(p.labels is None for p in parts):
            raise ValueError("every part needs labels")
        seq = None
        if parts[0].sequences is not None:
            if any(p.sequences is None for p in parts):
                raise ValueError("every part needs sequences when the first has them")
            seq = Sequences.concat([p.sequences for p in parts])  # type: ignore[misc]
        shifts = [
            np.zeros(len(p.users), np.int64) if p.shift_days is None else p.shift_days
            for p in parts
        ]
        return cls(
            parts[0].split,
            pd.concat([p.features for p in parts]),
            pd.concat([p.rfm for p in parts]),
            pd.concat([p.labels for p in parts]),  # type: ignore[misc]
            seq,
            np.concatenate(shifts),
        )


def value_data(
    store: Store,
    calibration_end: TimeLike,
    holdout_days: int,
    *,
    users: Sequence[str] | None = None,
    labels: bool = True,
    sequences: bool = False,
    vocab: dict[str, dict[str, int]] | None = None,
    max_len: int = 32,
    token_types: Sequence[str] | None = None,
) -> ValueData:
    """Features and (optionally) holdout labels for customers acquired before the cut-off.

    ``sequences``: also build each customer's last ``max_len`` daily behaviour tokens (of
    ``token_types`` only, when given), with ``vocab`` (a trained model's id maps) when given.
    """
    split = TemporalSplit(calibration_end, holdout_days)
    split.check(store, labels=labels)
    feats = behaviour_features(store, split.calibration_end)
    rfm = rfm_summary(store, split.calibration_end)
    if users is not None:
        wanted = pd.Index(id_list(users, "users"), dtype=object)
        repeated = wanted[wanted.duplicated()].unique()
        if len(repeated):  # one row per customer: every model's frames are indexed by user
            raise ValueError(
                f"{len(repeated)} users are listed more than once (e.g. {list(repeated[:3])})"
            )
        unknown = wanted.difference(feats.index)
        if len(unknown):
            raise ValueError(
                f"{len(unknown)} users have no purchase before {when_text(split.calibration_end)} "
                f"(e.g. {list(unknown[:3])})"
            )
        feats = feats.loc[wanted]
    rfm = rfm.loc[feats.index]
    lab = None
    if labels:
        hold = holdout_summary(store, split.calibration_end, split.holdout_end)
        lab = pd.DataFrame(
            {
                "holdout_transactions": hold["frequency_holdout"].astype(float),
                # net of refunds (negative values) but floored at 0: the spend losses
                # (Tweedie, ZILN) need labels >= 0, and value is what a customer brings
                "holdout_spend": hold["spend_holdout"].clip(lower=0.0),
            }
        ).loc[feats.index]
    seq = None
    if sequences:
        seq = build_sequences(
            store, split.calibration_end, max_len=max_len, users=feats.index, daily=True,
            vocab=vocab, event_types=token_types,
        )  # fmt: skip
    return ValueData(split, feats, rfm, lab, seq)


def snapshot_data(
    store: Store,
    calibration_end: TimeLike,
    holdout_days: int,
    shifts_days: Sequence[int],
    *,
    users: Sequence[str] | None = None,
    **options: Any,
) -> ValueData:
    """Training data at ``calibration_end`` and at earlier cut-offs, pooled (rolling origins).

    A model fitted at one cut-off sees one example per customer of "history so far -> the next
    ``holdout_days``". Where rates drift (trends, seasons, bursts), how a history leads into
    its future is what a sequence model must learn, and one cut-off gives it few examples of
    each situation. Each shift ``s`` adds every training customer with a purchase before
    ``calibration_end - s`` again, as seen at that cut-off, with the next ``holdout_days`` as
    label (key ``"<user>@-<s>d"``). Each window ends by ``calibration_end + holdout_days``, so
    nothing beyond what a fit at ``calibration_end`` already reads is used, and only
    ``users`` (the customers being trained on) appear. ``options``: :func:`value_data`'s;
    the earlier cut-offs reuse the first one's sequence vocabulary.
    """
    main = value_data(store, calibration_end, holdout_days, users=users, **options)
    if not shifts_days:
        return main
    cut = main.split.calibration_end
    parts = [main]
    vocab = None if main.sequences is None else main.sequences.vocab
    for shift in shifts_days:
        if shift <= 0:
            raise ValueError(f"snapshot shifts must be positive days, got {shift}")
        earlier = cut - pd.Timedelta(days=int(shift))
        try:
            rows = value_data(store, earlier, holdout_days, **{**options, "vocab": vocab})
        except SplitError:  # the cut-off is before the first purchase: nothing to add
            continue
        who = rows.users.intersection(main.users, sort=False)
        if len(who) == 0:
            continue
        part = rows.subset(who)
        keys = pd.Index([f"{u}@-{int(shift)}d" for u in who], name=main.users.name)
        seq = part.sequences
        parts.append(
            ValueData(
                part.split,
                part.features.set_axis(keys),
                part.rfm.set_axis(keys),
                part.labels.set_axis(keys),  # type: ignore[union-attr]
                None if seq is None else dataclasses.replace(seq, users=keys),
                np.full(len(keys), int(shift), np.int64),
            )
        )
    return ValueData.concat(parts)


def holdout_labels(data: ValueData) -> pd.DataFrame:
    """The holdout labels a supervised model learns from.

    An error, rather than a model that learned that every customer is gone (p_alive about 0
    for all), when no training customer bought in the holdout window: it lies after the end
    of the log, or the cut-off is at the last purchase.
    """
    if data.labels is None:
        raise ValueError("supervised models need holdout labels: build value_data(labels=True)")
    if not (data.labels["holdout_transactions"] > 0).any():
        raise ValueError(
            "no training customer bought in the holdout window: there is nothing to learn "
            "(does the holdout lie after the end of the log?)"
        )
    return data.labels


def check_discount_rate(discount_rate: float) -> None:
    """Raise ValueError unless ``discount_rate`` (per 30-day period) is finite and > -1."""
    try:
        ok = bool(np.isfinite(float(discount_rate)) and float(discount_rate) > -1.0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"discount_rate must be a finite number above -1 (per 30-day period, e.g. 0.01), "
            f"got {discount_rate!r}"
        )


def discount_factors(horizon_days: float, discount_rate: float) -> np.ndarray:
    """1 / (1 + d)^t for the 30-day periods t = 1..ceil(horizon / 30).

    ``d`` must be a number above -1 (a factor (1 + d) that is positive and finite): -2 gave
    negative LTVs for positive spend, and NaN a late error that did not name the rate.
    """
    check_discount_rate(discount_rate)
    periods = max(1, int(np.ceil(horizon_days / PERIOD_DAYS)))
    return 1.0 / (1.0 + discount_rate) ** np.arange(1, periods + 1)


#: expected purchases over a horizon below which a timing profile is rounding noise: the
#: BG/NBD curve is c * (1 - (almost 1)), exact to about 1e-16 * c, so below 1e-9 how it
#: splits over periods says nothing (one-time buyers put it near 1e-13 over a day)
NEGLIGIBLE_PURCHASES = 1e-9


def discounted_share(per: np.ndarray, disc: np.ndarray, constant: float) -> np.ndarray:
    """Discounted / undiscounted spend of each customer whose purchases fall as ``per`` says.

    ``per`` holds each customer's (row's) expected purchases in each period, ``disc`` the
    periods' discount factors, ``constant`` the share at a constant spend rate. The share is
    a weighted mean of ``disc``, so it never depends on how large the expectations are:
    dividing by a total floored at 1e-12 made LTV 0.41 x spend at a 1-day horizon, where
    one period must give spend / (1 + d). Where the expected purchases are negligible
    (:data:`NEGLIGIBLE_PURCHASES`) their split is noise, and the constant rate is used: it
    is also what a tiny rate's curve tends to (expected purchases grow linearly in time).
    Rounding can leave a period slightly negative, so the share is clipped to the range of
    ``disc``: LTV stays between the spend times the first and the last period's factor.
    """
    total = per.sum(axis=1)
    usable = total > NEGLIGIBLE_PURCHASES
    share = np.full(len(per), float(constant))
    np.divide((per * disc).sum(axis=1), total, out=share, where=usable)
    return np.clip(share, disc.min(), disc.max())


class ValueModel(BaseEstimator, ABC):
    """Base class: scikit-learn style (hyper-parameters in ``__init__``, state ends in ``_``).

    scikit-learn's ``BaseEstimator`` gives ``get_params`` / ``set_params``, so
    ``sklearn.base.clone`` makes an unfitted copy with the same settings (a grid search, a
    refit per fold)."""

    name = "value-model"
    #: fewest customers a fit accepts; supervised models need enough to learn from
    min_customers = 1
    #: learns from holdout labels (supervised), so its cut-off needs a holdout after it.
    #: BTYD and naive models learn from the calibration period alone: they may be fitted at
    #: the end of the log, to score today's customers on everything known.
    needs_labels: bool = False
    #: horizon the model was trained for, in days (supervised) or any (BTYD)
    horizon_days_: float
    discount_rate: float = 0.01

    # -- store-level API -----------------------------------------------------------------
    def fit(
        self,
        store: Store,
        calibration_end: TimeLike,
        *,
        holdout_days: int = 273,
        users: Sequence[str] | None = None,
    ) -> ValueModel:
        """Learn from ``store``: features before ``calibration_end``, labels after it."""
        self._store = store
        return self.fit_data(self.training_data(store, calibration_end, holdout_days, users))

    def training_data(
        self,
        store: Store,
        calibration_end: TimeLike,
        holdout_days: int = 273,
        users: Sequence[str] | None = None,
    ) -> ValueData:
        """What :meth:`fit` learns from: :func:`value_data` with this model's options.

        Public so that a caller who fits on a subset with :meth:`fit_data` (the benchmark)
        trains on exactly what :meth:`fit` would. Models that also learn from earlier cut-offs
        name them in :meth:`_snapshot_shifts` (:func:`snapshot_data`).
        """
        opts = self._data_options()
        opts.pop("vocab", None)  # a model being fitted builds its own vocabulary
        shifts = self._snapshot_shifts()
        return snapshot_data(
            store, calibration_end, holdout_days, shifts, users=users,
            labels=self.needs_labels, **opts,
        )  # fmt: skip

    def _snapshot_shifts(self) -> list[int]:
        """Days before the cut-off of the earlier cut-offs to train on too (none by default)."""
        return []

    def predict(
        self,
        users: Sequence[str] | None = None,
        horizon_days: float | None = None,
        *,
        store: Store | None = None,
        as_of: TimeLike | None = None,
    ) -> pd.DataFrame:
        """Predictions for ``users`` (default: every customer) as of ``as_of``.

        ``as_of`` defaults to the calibration end used in :meth:`fit`; pass the end of the log
        to score today's customers with a model trained on an earlier window.
        """
        data = self.prediction_data(users, store=store, as_of=as_of)
        return self.predict_data(data, horizon_days)

    def prediction_data(
        self,
        users: Sequence[str] | None = None,
        *,
        store: Store | None = None,
        as_of: TimeLike | None = None,
    ) -> ValueData:
        """What :meth:`predict` reads from the store (features, and tokens for sequence
        models), without predicting: all of its database work.

        Apart so that a server reads under its store's lock and predicts outside it: the
        prediction is the costly part (seconds for a LightGBM bag or the Transformer on
        every customer) and needs nothing from the store, so writes need not wait for it.
        """
        if not hasattr(self, "split_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")
        store = store or getattr(self, "_store", None)
        if store is None:
            raise ValueError("predict needs a store: pass store= (the model was loaded from disk)")
        cut = as_of if as_of is not None else self.split_.calibration_end
        return value_data(
            store, cut, self.split_.holdout_days, users=users, labels=False, **self._data_options()
        )

    def _data_options(self) -> dict[str, Any]:
        """Extra :func:`value_data` arguments this model needs (sequence models: tokens)."""
        return {}

    # -- frame-level API (the benchmark computes features once) ----------------------------
    def fit_data(self, data: ValueData) -> ValueModel:
        if len(data.users) == 0:
            raise ValueError("no customers with a purchase in the calibration period")
        if len(data.users) < self.min_customers:
            raise ValueError(
                f"{self.name} needs at least {self.min_customers} customers with a purchase in "
                f"the calibration period, got {len(data.users)}"
            )
        check_discount_rate(self.discount_rate)  # said before the fit, not at predict
        self.split_ = data.split
        self.horizon_days_ = float(data.split.holdout_days)
        self._fit(data)
        return self

    def _count_pmf(self, data: ValueData, horizon_days: float) -> tuple[CountPMF, float] | None:
        """The model's distribution of each customer's purchase count over the horizon.

        Returns ``(pmf, scale)``: the count is ``scale`` times a variable with PMF ``pmf``
        (supervised models learn the distribution for the horizon they were trained on and,
        as for their means, scale it linearly to another horizon), or None for a model with
        no distribution.
        """
        return None

    def transaction_quantile(
        self, data: ValueData, level: float = 0.5, horizon_days: float | None = None
    ) -> np.ndarray:
        """Quantile ``level`` of each customer's purchase count over the horizon.

        ``level=0.5`` gives ``pred_transactions_median``; a model without a distribution
        returns its point forecast whatever the level.
        """
        horizon = self._horizon(horizon_days)
        found = self._count_pmf(data, horizon)
        if found is None:
            return self._predict(data, horizon)["pred_transactions"].to_numpy(float)
        pmf, scale = found
        if scale == 1.0:  # the distribution's own horizon: no P(none) to rescale
            return count_quantile(pmf, len(data.users), level)
        p_return = self._return_probability(self._predict(data, horizon), found, len(data.users))
        return scaled_quantile(pmf, len(data.users), scale, 1.0 - p_return, level)

    @staticmethod
    def _return_probability(
        out: pd.DataFrame, found: tuple[CountPMF, float] | None, n: int
    ) -> np.ndarray:
        """P(at least one purchase in the horizon) from the count distribution.

        At the horizon the distribution is for (``scale`` 1: BTYD at any horizon, supervised
        models at their trained one) it is ``1 - P(0)``. A supervised model asked for another
        horizon ``scale`` times its own rescales its counts linearly, i.e. assumes a constant
        purchase rate; the same assumption gives ``P(none) = P0 ** scale`` (a constant hazard).
        A model without a distribution (naive) gives its ``p_alive``. In every case no count is
        positive more often than its mean says (P(N >= 1) <= E[N]), which caps the result.
        """
        if found is None:
            p = out["p_alive"].to_numpy(float)
        else:
            pmf, scale = found
            none = np.clip(np.asarray(pmf(0, np.arange(n)), dtype=float), 0.0, 1.0)
            p = 1.0 - (none if scale == 1.0 else none**scale)
        return np.clip(np.minimum(p, out["pred_transactions"].to_numpy(float)), 0.0, 1.0)

    @classmethod
    def _count_columns(
        cls, out: pd.DataFrame, found: tuple[CountPMF, float] | None, n: int
    ) -> None:
        """Set ``p_return`` and ``pred_transactions_median`` from one count distribution.

        The median is read off the distribution whose P(none) is ``1 - p_return``
        (:func:`scaled_quantile`), so a median of 0 goes with a return probability of at
        most one half at every horizon. A model without a distribution gives its mean.
        """
        out["p_return"] = cls._return_probability(out, found, n)
        if found is None:
            out["pred_transactions_median"] = out["pred_transactions"].to_numpy(float)
            return
        pmf, scale = found
        out["pred_transactions_median"] = scaled_quantile(
            pmf, n, scale, 1.0 - out["p_return"].to_numpy(float)
        )

    def _horizon(self, horizon_days: float | None) -> float:
        """The horizon to predict for: the trained one by default, else a positive number."""
        # the trained one is checked too: a model fitted in Python on a longer holdout
        # must not forecast past the limit an explicit horizon has
        horizon = float(self.horizon_days_ if horizon_days is None else horizon_days)
        if not (np.isfinite(horizon) and 0 < horizon <= MAX_HORIZON_DAYS):
            given = (
                f"{horizon_days}"
                if horizon_days is not None
                else f"{horizon:g}, the holdout the model was fitted on (give horizon_days)"
            )
            raise ValueError(
                f"horizon_days must be a number of days in (0, {MAX_HORIZON_DAYS:g}], got {given}"
            )
        return horizon

    def predict_data(self, data: ValueData, horizon_days: float | None = None) -> pd.DataFrame:
        horizon = self._horizon(horizon_days)
        out = self._predict(data, horizon)
        if "pred_transactions_median" not in out or "p_return" not in out:
            self._count_columns(out, self._count_pmf(data, horizon), len(data.users))
        out.insert(0, "user_id", data.users.to_numpy())
        for low, high in (("spend_low", "spend_high"), ("spend_low50", "spend_high50")):
            if low not in out:
                out[low] = out["pred_spend"]
                out[high] = out["pred_spend"]
        if "ltv" not in out:
            ratio = self._ltv_ratio(data, horizon)
            out["ltv"] = out["pred_spend"] * ratio
            out["ltv_low"] = out["spend_low"] * ratio
            out["ltv_high"] = out["spend_high"] * ratio
        out = out[list(PRED_COLUMNS)].reset_index(drop=True)
        numeric = out.drop(columns="user_id")
        if not np.isfinite(numeric.to_numpy(dtype=float)).all():
            bad = numeric.columns[~np.isfinite(numeric.to_numpy(dtype=float)).all(axis=0)]
            raise FloatingPointError(f"{self.name} produced non-finite {list(bad)}")
        return out

    def _ltv_ratio(self, data: ValueData, horizon: float) -> np.ndarray:
        """Discounted / undiscounted spend over the horizon, from a per-period profile.

        Supervised models predict a total; the timing of that spend within the horizon comes
        from the BG/NBD per-customer purchase curve fitted alongside (``profile_model_``), so
        a likely-to-churn customer's spend is front-loaded and discounted less. Where the
        profile expects next to no purchases, spend is taken to come at a constant rate
        (:func:`discounted_share`).
        """
        profile = getattr(self, "profile_model_", None)
        disc = discount_factors(horizon, self.discount_rate)
        ends = np.minimum(np.arange(1, len(disc) + 1) * PERIOD_DAYS, horizon)
        # spend at a constant rate: each period's share is its length
        constant = float(np.diff(ends, prepend=0.0) / horizon @ disc)
        if profile is None:
            return np.full(len(data.users), constant)
        r = data.rfm
        edges = ends / 7.0
        cum = np.column_stack(
            [
                np.asarray(
                    profile.conditional_expected_number_of_purchases_up_to_time(
                        e, r["frequency"].to_numpy(), r["recency"].to_numpy(), r["T"].to_numpy()
                    ),
                    dtype=float,
                )
                for e in edges
            ]
        )
        per = np.diff(np.column_stack([np.zeros(len(r)), cum]), axis=1)
        return discounted_share(per, disc, constant)

    @abstractmethod
    def _fit(self, data: ValueData) -> None: ...

    @abstractmethod
    def _predict(self, data: ValueData, horizon_days: float) -> pd.DataFrame:
        """Columns pred_transactions, pred_spend, p_alive (+ optional intervals / ltv)."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_store", None)  # a live database handle is not part of the model
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
