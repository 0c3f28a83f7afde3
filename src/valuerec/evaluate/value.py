"""Evaluation of customer-value models: the one function every model, CLI and report goes through.

A value model is judged on two different jobs, and the metrics here keep them apart:

* **How much** -- does the model get each customer's future spend and transaction count right
  (MAE, RMSE) and, summed over the base, the total (aggregate error, the number finance asks
  for)? Errors per decile of predicted value show *where* the total is wrong.
* **Who** -- does it put the valuable customers first? Targeting, budgets and recommendations
  only use the *order* of predictions, so ranking metrics (normalised Gini, share of spend in
  the top 10 % / 20 %, Spearman) are reported separately, and do not reward getting the scale
  right.

Value models predict many ties: every customer with the same RFM summary gets the same
prediction, and a heuristic baseline may give most customers the same value. An order-based
metric that breaks ties by input order (or by sorting the actual values) would score a model on
an accident of row order, and could even credit a constant prediction. The ranking metrics here
are therefore *tie-aware*: customers with equal predictions share their group's spend equally,
which is the expectation over all orders of the tie. A constant prediction scores exactly 0.

Transaction counts get two absolute errors. ``mae_transactions`` scores ``pred_transactions``,
the expected count every model predicts (it adds up, and RMSE and the aggregate error need
it). But the point forecast that minimises absolute error is the *median* of the predictive
distribution, not its mean (Gneiting 2011, "Making and evaluating point forecasts"): scoring
the mean by MAE penalises a model for reporting the right expectation, and rewards one that
under-predicts (for CDNOW's mostly-absent customers, shrinking every expectation towards 0
lowers MAE). So when ``pred_transactions_median`` is present, ``mae_transactions_median``
scores it too; benchmark tables call that "MAE tx", the number a target on transaction MAE
is checked against, with the mean's MAE beside it.

Comparing two models on one holdout needs an uncertainty: :func:`paired_bootstrap` resamples
customers once and scores both models on the same resamples, so that the customer-level noise
common to both cancels out of the difference.

Everything is plain numpy / pandas / scipy and vectorised; nothing here fits anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import rankdata, spearmanr

from valuerec.data.schema import as_frame, id_text
from valuerec.evaluate.resampling import defined_resamples

__all__ = [
    "DECILE_COLUMNS",
    "ValueReport",
    "decile_mape",
    "decile_mape_floor",
    "decile_table",
    "evaluate_value",
    "interval_coverage",
    "normalized_gini",
    "paired_bootstrap",
    "top_share",
]

DECILE_COLUMNS = (
    "decile", "customers", "predicted_sum", "actual_sum",
    "predicted_mean", "actual_mean", "abs_pct_error",
)  # fmt: skip

TRUTH_COLUMNS = ("user_id", "holdout_transactions", "holdout_spend")
PRED_COLUMNS = ("user_id", "pred_transactions", "pred_spend", "p_alive")
MEDIAN_COLUMN = "pred_transactions_median"
#: P(any purchase in the horizon): what returning is scored on when a model gives it
RETURN_COLUMN = "p_return"
INTERVALS = {
    "coverage80": ("spend_low", "spend_high"),
    "coverage50": ("spend_low50", "spend_high50"),
}

Metric = Callable[[np.ndarray, np.ndarray], float]

# Resamples are drawn in chunks of about this many customer draws, which bounds the memory of
# the vectorised bootstrap (a few arrays of this size) whatever n_boot and n are.
_BOOT_CHUNK_DRAWS = 2_000_000


# --------------------------------------------------------------------------------- helpers


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    """A 1-D float array; non-finite values are refused so NaN never turns into a score."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _pair(actual: ArrayLike, predicted: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, p = _vector(actual, "actual"), _vector(predicted, "predicted")
    if a.shape != p.shape:
        raise ValueError(f"actual and predicted differ in length: {a.size} != {p.size}")
    return a, p


def _centred_rank2(key: np.ndarray) -> np.ndarray:
    """``2 * midrank - (n + 1)`` of ``key`` (ascending): integers, centred on 0.

    Mid-ranks give each member of a tied group the group's mean position, which is what makes
    the Gini below tie-aware; doubling makes the values exact integers, so a constant key gives
    exactly zero rather than a rounding residue.
    """
    return 2.0 * rankdata(key, method="average") - (key.size + 1)


def _gini_raw(actual: np.ndarray, key: np.ndarray) -> float:
    """Unnormalised Gini of ``actual`` ordered by ``key``, up to a positive factor.

    With customers sorted by ``key`` descending at positions ``j = 1..n``, the area between the
    cumulative-gain (Lorenz) curve and the diagonal is ``sum_i (L_i - i/n)`` where ``L_i`` is
    the share of spend in the first ``i``. Summing by parts this equals
    ``(1 / T) * sum_j a_j ((n + 1) / 2 - j)``; replacing a tied group's members by the group
    mean replaces ``j`` by the group's mean position, i.e. the mid-rank. In ascending mid-ranks
    ``r`` that is ``sum_j a_j (2 r_j - n - 1) / (2 T)``; the factor ``1 / (2 T)`` cancels in
    the normalised Gini and is dropped.
    """
    return float(np.dot(actual, _centred_rank2(key)))


def _tie_groups(sorted_key: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    if sorted_key.size == 0:
        return np.zeros(0, dtype=np.intp)
    change = np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1
    return np.concatenate(([0], change))


# --------------------------------------------------------------------------- ranking metrics


def normalized_gini(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Gini of actual spend ordered by prediction, divided by the Gini of the perfect order.

    1 means the prediction orders customers as well as their actual spend does, 0 no better than
    random, and a negative value worse than random (a reversed ranking gives -1 when actual
    values are distinct). Only the order of ``predicted`` matters, so the value is invariant
    to any strictly increasing transform of the predictions.

    Tie-aware: customers with equal predictions share the gain of their group (the cumulative
    gain curve is linear across the group), the average over every order of the tie. A
    constant prediction therefore scores exactly 0 and the perfect prediction exactly 1.

    Degenerate inputs return 0.0 instead of NaN so that they never poison an average: with fewer
    than two customers there is nothing to rank, and when every actual value is equal
    (including all zero) no order can beat random, so the perfect Gini is 0 as well.
    """
    a, p = _pair(actual, predicted)
    if a.size < 2:
        return 0.0
    perfect = _gini_raw(a, a)
    if perfect <= 0.0:  # all actual values equal: every order is as good as any other
        return 0.0
    return _gini_raw(a, p) / perfect + 0.0  # + 0.0 turns -0.0 into 0.0


def top_share(actual: ArrayLike, predicted: ArrayLike, fraction: float) -> float:
    """Share of total actual spend held by the top ``fraction`` of customers by prediction.

    This is the question a targeting budget asks: if we can only act on the best 10 %, how much
    of next period's spend do we reach? ``fraction * n`` need not be a whole number of customers.

    Tie-aware like :func:`normalized_gini`: the cumulative-spend curve is linear across a group of
    tied predictions, so a cut-off that falls inside a group takes that part of the group's
    spend in proportion to the part of the group it takes.

    Returns NaN when total actual spend is 0 (a share of nothing is undefined).
    """
    a, p = _pair(actual, predicted)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    total = a.sum()
    if a.size == 0 or total == 0.0:
        return math.nan
    order = np.argsort(-p, kind="stable")
    sorted_p, sorted_a = p[order], a[order]
    starts = _tie_groups(sorted_p)
    ends = np.append(starts[1:], a.size)  # position after each group
    # The curve is known exactly at group boundaries and linear in between.
    x = np.concatenate(([0.0], ends.astype(float)))
    y = np.concatenate(([0.0], np.cumsum(np.add.reduceat(sorted_a, starts))))
    return float(np.interp(fraction * a.size, x, y) / total)


# --------------------------------------------------------------------------- calibration


def _decile_labels(n: int, n_bins: int) -> np.ndarray:
    """Bin (1-based) of each sorted position, sized exactly as ``np.array_split`` would."""
    bins = min(n_bins, n)
    base, extra = divmod(n, bins)
    sizes = np.full(bins, base)
    sizes[:extra] += 1
    return np.repeat(np.arange(1, bins + 1), sizes)


def _tie_spread(sorted_actual: np.ndarray, sorted_predicted: np.ndarray) -> np.ndarray:
    """``sorted_actual`` with each run of tied predictions given its mean at every position.

    Where a bin's edge cuts a group of tied predictions, which of them fall on either side is
    an accident of row order (renaming customers changed a naive model's decile MAPE from
    0.846 to 0.835); spreading the group's spend evenly over its positions is the mean over
    every order of the ties, as :func:`top_share` and :func:`normalized_gini` take it.
    """
    starts = _tie_groups(sorted_predicted)
    if starts.size == sorted_actual.size:  # no ties: nothing to spread
        return sorted_actual
    sizes = np.diff(np.append(starts, sorted_actual.size))
    return np.repeat(np.add.reduceat(sorted_actual, starts) / sizes, sizes)


def decile_table(actual: ArrayLike, predicted: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Predicted against actual spend per bin of predicted value (decile 1 = highest predicted).

    An aggregate error of 0 can hide a model that overstates the best customers and understates
    the rest; the table shows where the total goes wrong. Customers are sorted by prediction,
    descending, and cut into ``n_bins`` groups whose sizes differ by at most one, as
    ``np.array_split`` does. A group of tied predictions that a cut splits shares its actual
    spend in proportion to the part of it on each side (:func:`_tie_spread`), so the table does
    not depend on row order. With fewer customers than bins, there is one bin per customer.

    ``abs_pct_error`` is ``|predicted_sum - actual_sum| / |actual_sum|`` and NaN where the
    bin's actual sum is 0.
    """
    a, p = _pair(actual, predicted)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if a.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in DECILE_COLUMNS})
    order = np.argsort(-p, kind="stable")
    labels = _decile_labels(a.size, n_bins)
    bins = int(labels[-1])
    count = np.bincount(labels, minlength=bins + 1)[1:]
    pred_sum = np.bincount(labels, weights=p[order], minlength=bins + 1)[1:]
    spread = _tie_spread(a[order], p[order])
    act_sum = np.bincount(labels, weights=spread, minlength=bins + 1)[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(act_sum != 0.0, np.abs(pred_sum - act_sum) / np.abs(act_sum), np.nan)
    return pd.DataFrame(
        {
            "decile": np.arange(1, bins + 1),
            "customers": count,
            "predicted_sum": pred_sum,
            "actual_sum": act_sum,
            "predicted_mean": pred_sum / count,
            "actual_mean": act_sum / count,
            "abs_pct_error": err,
        }
    )


def decile_mape(actual: ArrayLike, predicted: ArrayLike, n_bins: int = 10) -> float:
    """Mean over deciles of ``|sum predicted - sum actual| / sum actual``, as a fraction.

    A calibration score: is spend right for the top customers *and* for the tail? Deciles whose
    actual sum is 0 are skipped (their relative error is undefined); NaN if all are.
    """
    err = decile_table(actual, predicted, n_bins)["abs_pct_error"].to_numpy()
    err = err[~np.isnan(err)]
    return float(err.mean()) if err.size else math.nan


#: fewest customers per decile for which :func:`decile_mape_floor` estimates anything
MIN_FLOOR_CUSTOMERS = 2


def decile_mape_floor(
    actual: ArrayLike,
    predicted: ArrayLike,
    n_bins: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """The decile MAPE a perfectly calibrated model with this ranking would still score.

    Decile MAPE compares each decile's predicted sum with the spend its customers happened to
    make, and spend is heavy-tailed: the low deciles' sums ride on a few large baskets. Even a
    model that knew every decile's expected spend exactly would miss those sums by sampling
    alone, so a decile MAPE near this floor says nothing about calibration. Each decile (cut
    by ``predicted``, as :func:`decile_table` cuts them) keeps its customers' mean as the
    "known" expectation; its customers are resampled with replacement ``n_boot`` times and the
    MAPE of the expectations against the resampled sums is taken. Tied predictions are ordered
    by actual spend (deterministic whatever the row order).

    NaN with fewer than :data:`MIN_FLOOR_CUSTOMERS` customers in a decile (nothing to resample).

    Returns ``mean``, and ``low`` / ``high``, the 2.5 % and 97.5 % quantiles over resamples
    (1,000 by default: 25 in each tail, for a bound a 0.10 target is read against; 70 ms on
    12,000 customers).
    The floor is an estimate from one sample (the plug-in mean stands for the expectation), and
    a model fitted on another sample adds its own estimation noise on top of it.
    """
    a, p = _pair(actual, predicted)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if a.size == 0:
        raise ValueError("no customers to resample")
    # ties in predicted broken by actual spend, not by row order: the resampled customers of
    # a decile are individuals (they cannot be spread as decile_table spreads them), and the
    # floor must not change when customers are renamed
    order = np.lexsort((a, -p))
    labels = _decile_labels(a.size, n_bins)
    if np.bincount(labels)[1:].min() < MIN_FLOOR_CUSTOMERS:
        # resampling one customer of one never changes a decile's sum: the floor would
        # read 0% ("perfect calibration scores 0") when it is merely unknown
        return {"mean": math.nan, "low": math.nan, "high": math.nan}
    rng = np.random.default_rng(seed)
    errors = []
    for k in range(1, int(labels[-1]) + 1):
        x = a[order][labels == k]
        expected = x.sum()
        if expected == 0:  # skipped by decile_mape too
            continue
        chunk = max(1, _BOOT_CHUNK_DRAWS // x.size)  # bounded memory on large bases
        sums = np.concatenate(
            [
                x[rng.integers(0, x.size, size=(min(chunk, n_boot - done), x.size))].sum(axis=1)
                for done in range(0, n_boot, chunk)
            ]
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            errors.append(np.where(sums != 0, np.abs(expected - sums) / np.abs(sums), np.nan))
    if not errors:
        return {"mean": math.nan, "low": math.nan, "high": math.nan}
    stacked = np.vstack(errors)
    # a resample whose every decile drew no spend has no decile MAPE (as decile_mape says):
    # it is left out, not allowed to turn the whole floor into NaN
    defined = ~np.isnan(stacked).all(axis=0)
    if not defined.any():
        return {"mean": math.nan, "low": math.nan, "high": math.nan}
    per_boot = np.nanmean(stacked[:, defined], axis=0)
    return {
        "mean": float(per_boot.mean()),
        "low": float(np.quantile(per_boot, 0.025)),
        "high": float(np.quantile(per_boot, 0.975)),
    }


def interval_coverage(actual: ArrayLike, low: ArrayLike, high: ArrayLike) -> float:
    """Fraction of customers whose actual value lies in ``[low, high]`` (bounds included).

    An 80 % interval should cover about 80 % of customers; much less means the model is
    over-confident, much more that its intervals are too wide to be useful. NaN if empty.
    """
    a, lo, hi = _vector(actual, "actual"), _vector(low, "low"), _vector(high, "high")
    if not a.shape == lo.shape == hi.shape:
        raise ValueError(f"lengths differ: actual {a.size}, low {lo.size}, high {hi.size}")
    if a.size == 0:
        return math.nan
    return float(np.mean((lo <= a) & (a <= hi)))


# --------------------------------------------------------------------------- bootstrap


def _resample_counts(n: int, n_boot: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of bootstrap resamples as (indices, counts), both of shape (chunk, n).

    Every path of :func:`paired_bootstrap` consumes the same chunks, so a given seed means the
    same resamples whichever path computes the metric.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _BOOT_CHUNK_DRAWS // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (np.arange(b)[:, None] * n + idx).ravel()
        counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)
        yield idx, counts
        done += b


def _weighted_gini_raw(actual: np.ndarray, key: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`_gini_raw` of each resample given as per-customer counts, for all rows at once.

    In a resample of size ``N = n`` where customer ``i`` appears ``w_i`` times, all copies of
    customers in one tie group ``g`` of ``key`` are tied with each other, so they share the
    mid-rank ``L_g + (W_g + 1) / 2`` where ``W_g`` is the group's total count and ``L_g`` the
    count of everything ranked below it. ``2 r - (N + 1) = 2 L_g + W_g - N``, and the raw Gini
    is ``sum_g (sum_{i in g} w_i a_i) (2 L_g + W_g - N)``: exact integer rank terms, as in
    the unweighted version, without materialising any resample.
    """
    order = np.argsort(key, kind="stable")
    starts = _tie_groups(key[order])
    w = weights[:, order]
    group_w = np.add.reduceat(w, starts, axis=1)
    group_wa = np.add.reduceat(w * actual[order], starts, axis=1)
    below = np.cumsum(group_w, axis=1) - group_w
    return np.einsum("bg,bg->b", group_wa, 2.0 * below + group_w - key.size)


def _bootstrap_gini(
    a: np.ndarray, pa: np.ndarray, pb: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    perfect = _weighted_gini_raw(a, a, counts)
    ok = perfect > 0.0
    safe = np.where(ok, perfect, 1.0)
    ga = np.where(ok, _weighted_gini_raw(a, pa, counts) / safe, 0.0)
    gb = np.where(ok, _weighted_gini_raw(a, pb, counts) / safe, 0.0)
    return ga, gb


def paired_bootstrap(
    actual: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    metric: Metric = normalized_gini,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    higher_is_better: bool = True,
) -> dict[str, float]:
    """Is model A better than model B on this holdout, or is the gap noise?

    Customers are resampled with replacement ``n_boot`` times; *both* models are scored on the
    *same* resample, so customer-level luck shared by the two models cancels in the difference
    and the interval is much narrower than comparing two separate intervals.

    Returns ``diff`` = metric(A) - metric(B) on the full data, ``low`` / ``high``, the 95 %
    percentile interval of the resampled differences, and ``p_better``, the share of resamples
    where A beats B strictly (higher metric, or lower with ``higher_is_better=False`` for
    error metrics such as :func:`decile_mape`).

    :func:`normalized_gini` (the default) is computed for all resamples at once from resample
    counts; any other ``metric(actual, predicted)`` is called once per resample and model.
    A resample on which either model's metric is undefined (NaN: a top share or decile MAPE
    of a resample that drew no spender) is left out of the interval and of ``p_better``;
    more than 5% such resamples is an error (:mod:`.resampling`'s rule).
    """
    a, pa = _pair(actual, pred_a)
    _, pb = _pair(actual, pred_b)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if a.size == 0:
        raise ValueError("no customers to resample")
    diffs = np.empty(n_boot)
    done = 0
    for idx, counts in _resample_counts(a.size, n_boot, seed):
        b = idx.shape[0]
        if metric is normalized_gini:
            ma, mb = _bootstrap_gini(a, pa, pb, counts)
        else:
            ma = np.array([metric(a[i], pa[i]) for i in idx])
            mb = np.array([metric(a[i], pb[i]) for i in idx])
        diffs[done : done + b] = ma - mb
        done += b
    sign = 1.0 if higher_is_better else -1.0
    diffs = defined_resamples(
        diffs, "the paired bootstrap", "the metric is undefined on too many resamples"
    )
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "diff": float(metric(a, pa) - metric(a, pb)),
        "low": float(low),
        "high": float(high),
        "p_better": float(np.mean(sign * diffs > 0.0)),
    }


# --------------------------------------------------------------------------- the report


@dataclass
class ValueReport:
    """Everything :func:`evaluate_value` measured: scalar metrics and the decile table."""

    metrics: dict[str, float]
    deciles: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy: plain Python numbers, and None where a value is NaN or infinite."""

        def clean(value: Any) -> Any:
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        return {
            "metrics": {str(k): clean(v) for k, v in self.metrics.items()},
            "deciles": [
                {str(k): clean(v) for k, v in row.items()}
                for row in self.deciles.to_dict(orient="records")
            ],
        }


def _check_frame(frame: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    """Columns present, no NaN or infinity, one row per user: ids compared as the store
    keeps them (``1`` and ``"1"`` are one user, who would otherwise be scored twice)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}")
    for col in columns:
        if frame[col].isna().any():
            raise ValueError(f"{name} column {col!r} contains NaN")
        if col != "user_id" and not np.isfinite(frame[col].to_numpy(dtype=float)).all():
            raise ValueError(f"{name} column {col!r} contains infinite values")
    dup = int(id_text(frame["user_id"]).duplicated().sum())
    if dup:
        raise ValueError(f"{name} has {dup} duplicated user_id(s)")


def _pct_error(predicted: np.ndarray, actual: np.ndarray) -> float:
    total = actual.sum()
    return 100.0 * (predicted.sum() - total) / total if total != 0.0 else math.nan


def _spearman(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Spearman correlation, 0.0 where it is undefined (a constant side, fewer than 2 rows)."""
    if actual.size < 2 or np.ptp(actual) == 0.0 or np.ptp(predicted) == 0.0:
        return 0.0
    rho = float(spearmanr(actual, predicted).statistic)
    return rho if math.isfinite(rho) else 0.0


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half), NaN with a single class.

    The same value as ``sklearn.metrics.roc_auc_score``, without the dependency.
    """
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score, method="average")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _classification(positive: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1; 0.0 where a ratio has no denominator (as scikit-learn does)."""
    tp = float(np.sum(positive & flagged))
    precision = tp / flagged.sum() if flagged.any() else 0.0
    recall = tp / positive.sum() if positive.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision_return": precision, "recall_return": recall, "f1_return": f1}


def evaluate_value(
    truth: pd.DataFrame, pred: pd.DataFrame, *, threshold: float = 0.5
) -> ValueReport:
    """Score a customer-value model's predictions against what customers did in the holdout.

    ``truth`` holds ``user_id``, ``holdout_transactions`` and ``holdout_spend``; ``pred`` holds
    ``user_id``, ``pred_transactions``, ``pred_spend``, ``p_alive`` and optionally an 80 %
    (``spend_low``, ``spend_high``) and a 50 % (``spend_low50``, ``spend_high50``) interval
    for spend, and ``p_return``, the probability of buying in the horizon, which returning is
    scored on when present (a BTYD ``p_alive`` is 1 for every one-time buyer: the probability
    of being alive, not of buying). Every truth user must have a prediction: silently
    scoring a subset would flatter a model that skips hard customers. Predictions for users
    not in ``truth`` are ignored.
    NaN anywhere in the columns used is an error rather than a metric quietly turned NaN.

    Metrics: error of the amounts (``mae_*``, ``rmse_*``, ``aggregate_*error_pct`` in percent of
    the actual total, NaN if that total is 0; ``mae_transactions_median`` of the median count
    forecast when ``pred`` has ``pred_transactions_median``, see the module docstring), ranking
    of spend (``spearman_spend``, ``normalized_gini``, ``top10_share``, ``top20_share``),
    calibration by decile (``decile_mape``, and ``decile_mape_floor``: what a perfectly
    calibrated model with this ranking would score from sampling alone, with its 95% interval
    ``decile_mape_floor_low`` / ``_high``), whether ``p_return`` (else ``p_alive``)
    tells returning customers (any holdout transaction) apart (``auc_return``, NaN with a
    single class; ``precision_return``, ``recall_return``, ``f1_return`` flagging it ``>=
    threshold``), interval coverage (``coverage80``, ``coverage50``, when the columns exist)
    and the number of ``customers``.
    """
    truth, pred = as_frame(truth), as_frame(pred)  # Arrow tables too
    intervals = {k: cols for k, cols in INTERVALS.items() if set(cols) <= set(pred.columns)}
    pred_cols = PRED_COLUMNS + tuple(c for cols in intervals.values() for c in cols)
    has_median = MEDIAN_COLUMN in pred.columns
    if has_median:
        pred_cols += (MEDIAN_COLUMN,)
    score_col = RETURN_COLUMN if RETURN_COLUMN in pred.columns else "p_alive"
    if score_col not in pred_cols:
        pred_cols += (score_col,)
    _check_frame(truth, "truth", TRUTH_COLUMNS)
    if "user_id" not in pred.columns:
        _check_frame(pred, "pred", pred_cols)  # says which columns are missing
    # ids as the store keeps them: a truth frame with integer ids matches the model's text
    truth = truth.assign(user_id=id_text(truth["user_id"]))
    pred = pred.assign(user_id=id_text(pred["user_id"]))
    missing = int((~truth["user_id"].isin(pred["user_id"])).sum())
    if missing:
        raise ValueError(f"{missing} of {len(truth)} truth users are missing from pred")
    # only the scored users' rows are checked: a NaN or a repeat for a user outside truth
    # is ignored like the rest of that user's prediction
    pred = pred.loc[pred["user_id"].isin(truth["user_id"])]
    _check_frame(pred, "pred", pred_cols)
    # a model without a predictive distribution gives its point forecast as both ends
    # (value.base): that is no interval, and its "coverage" would be a share of exact hits.
    # Decided on the scored users' rows, as every other metric is.
    intervals = {
        k: (low, high) for k, (low, high) in intervals.items() if (pred[low] != pred[high]).any()
    }
    df = truth[list(TRUTH_COLUMNS)].merge(pred[list(pred_cols)], on="user_id", how="inner")
    if df.empty:
        raise ValueError("no customers to evaluate")

    def col(name: str) -> np.ndarray:
        return df[name].to_numpy(dtype=float)

    tx, spend = col("holdout_transactions"), col("holdout_spend")
    ptx, pspend, p_return = col("pred_transactions"), col("pred_spend"), col(score_col)
    returned = tx > 0
    metrics: dict[str, float] = {
        "mae_transactions": float(np.mean(np.abs(ptx - tx))),
        "rmse_transactions": float(np.sqrt(np.mean((ptx - tx) ** 2))),
        "mae_spend": float(np.mean(np.abs(pspend - spend))),
        "rmse_spend": float(np.sqrt(np.mean((pspend - spend) ** 2))),
        "aggregate_error_pct": _pct_error(pspend, spend),
        "aggregate_tx_error_pct": _pct_error(ptx, tx),
        "spearman_spend": _spearman(spend, pspend),
        "normalized_gini": normalized_gini(spend, pspend),
        "top10_share": top_share(spend, pspend, 0.1),
        "top20_share": top_share(spend, pspend, 0.2),
        "decile_mape": decile_mape(spend, pspend),
        **{
            "decile_mape_floor" + ("" if k == "mean" else f"_{k}"): v
            for k, v in decile_mape_floor(spend, pspend).items()
        },
        "auc_return": _auc(returned, p_return),
        **_classification(returned, p_return >= threshold),
    }
    if has_median:
        metrics["mae_transactions_median"] = float(np.mean(np.abs(col(MEDIAN_COLUMN) - tx)))
    for key, (low, high) in intervals.items():
        metrics[key] = interval_coverage(spend, col(low), col(high))
    metrics["customers"] = float(len(df))
    return ValueReport(metrics=metrics, deciles=decile_table(spend, pspend))
