"""The Open Bandit Dataset (OBD) sample: real logged bandit feedback with known propensities.

OBD (Saito, Aihara, Matsutani and Narita, "Open Bandit Dataset and Pipeline: Towards Realistic
and Reproducible Off-Policy Evaluation", NeurIPS Datasets and Benchmarks 2021) logs a week of
fashion recommendations on ZOZOTOWN: every impression shows three items (positions 1-3) in a
campaign (``all``, ``men`` or ``women``) chosen either uniformly at random or by Bernoulli
Thompson sampling (``bts``), with the click and the probability the logging policy had of
showing that item in that position. Because two policies ran side by side on the same traffic,
one can estimate the click rate of BTS from the random logs and check it against the click rate
BTS actually got: a real-data test of off-policy evaluation.

A 10,000-row sample of each (policy, campaign) ships inside the ``obp`` wheel; the
``obd`` entry of :mod:`valuerec.data.datasets` extracts it (``pip download``, no import of
obp) keeping the wheel's layout below ``obp/``: ``dataset/obd/{policy}/{campaign}/*.csv`` and
``policy/conf/prior_bts.yaml``, the Beta prior ZOZOTOWN's BTS started the week with.

This module turns those files into a tidy frame per (policy, campaign) and provides the two
evaluation-policy distributions for BTS used in ``benchmarks/ope_obd.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from valuerec.data import datasets

POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
N_POSITIONS = 3  # items per impression
#: Columns of the tidy frame before the context columns.
LOG_COLUMNS = ("row", "timestamp", "item_id", "position", "click", "propensity")
_RAW = {"item_id", "position", "click", "propensity_score", "timestamp"}


@dataclass(frozen=True)
class OBDLog:
    """One (policy, campaign) log of the Open Bandit Dataset.

    ``frame`` has one row per (impression, position) in time order: ``row`` (the row's number
    in the source file), ``timestamp`` (UTC), ``item_id`` (0..n_items-1), ``position``
    (0-based: 0 is the top slot, OBD's 1..3 shifted), ``click`` (0/1), ``propensity`` (the
    logging policy's probability of showing this item in this position, OBD's
    ``propensity_score``), then the context columns as in the file: ``user_feature_0..3``
    (hashed categories) and ``user-item_affinity_<item>`` (the user's past clicks on each item).
    ``items`` is the campaign's item table (``item_id``, ``item_feature_0..3``).
    """

    policy: str
    campaign: str
    frame: pd.DataFrame
    items: pd.DataFrame

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def context_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c not in LOG_COLUMNS]

    def user_context(self) -> np.ndarray:
        """One-hot user features (first level of each dropped), the context obp uses for OBD.

        ``pd.get_dummies(..., drop_first=True)`` on the ``user_feature_*`` columns, as
        ``obp.dataset.OpenBanditDataset.pre_process`` does, so reward models fitted on it see
        the same features as obp's and the peer comparison compares estimators, not features.
        """
        users = self.frame[[c for c in self.frame.columns if c.startswith("user_feature")]]
        return pd.get_dummies(users, drop_first=True).to_numpy(dtype=float)


def folder(*, cache: Path | None = None) -> Path:
    """The extracted sample (fetched once from the package registry)."""
    return datasets.fetch("obd", cache=cache)


def load(policy: str, campaign: str, *, cache: Path | None = None) -> OBDLog:
    """Fetch the sample if needed and read the log of ``policy`` on ``campaign``."""
    return read(folder(cache=cache), policy, campaign)


def read(root: Path, policy: str, campaign: str) -> OBDLog:
    """Parse ``root/dataset/obd/{policy}/{campaign}/{campaign}.csv`` and its item table."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign must be one of {CAMPAIGNS}, got {campaign!r}")
    base = Path(root) / "dataset" / "obd" / policy / campaign
    path, item_path = base / f"{campaign}.csv", base / "item_context.csv"
    for p in (path, item_path):
        if not p.exists():
            raise datasets.DatasetError(f"OBD file missing: {p}")
    raw = pd.read_csv(path, index_col=0)
    items = pd.read_csv(item_path, index_col=0).reset_index(drop=True)
    missing = sorted(_RAW - set(raw.columns))
    if missing or "item_id" not in items.columns:
        raise datasets.DatasetError(
            f"{path if missing else item_path} lacks the OBD column(s) "
            f"{', '.join(missing) or 'item_id'}"
        )

    def bad(column: str, ok: pd.Series, expected: str) -> None:
        if not ok.all():
            first = raw.index[~ok.to_numpy()][0]
            raise datasets.DatasetError(
                f"{path}: {column} must be {expected}; row {first} has {raw.loc[first, column]!r}"
            )

    n_items = len(items)
    bad("item_id", raw["item_id"].between(0, n_items - 1), f"an item id in 0..{n_items - 1}")
    bad("position", raw["position"].isin(range(1, N_POSITIONS + 1)), "1, 2 or 3")
    bad("click", raw["click"].isin((0, 1)), "0 or 1")
    bad("propensity_score", raw["propensity_score"].gt(0) & raw["propensity_score"].le(1),
        "in (0, 1]")  # fmt: skip
    context = [c for c in raw.columns if c not in _RAW]
    frame = pd.DataFrame(
        {
            "row": raw.index.to_numpy(),
            "timestamp": pd.to_datetime(raw["timestamp"].to_numpy(), utc=True),
            "item_id": raw["item_id"].to_numpy(dtype=np.int64),
            "position": raw["position"].to_numpy(dtype=np.int64) - 1,
            "click": raw["click"].to_numpy(dtype=np.int64),
            "propensity": raw["propensity_score"].to_numpy(dtype=float),
        }
    )
    frame = pd.concat([frame, raw[context].reset_index(drop=True)], axis=1)
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    return OBDLog(policy, campaign, frame, items)


# -- the Bernoulli Thompson sampling policy ---------------------------------------------------
def bts_prior(campaign: str, *, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Beta(alpha, beta) prior per item that ZOZOTOWN's BTS used at the start of the week.

    Read from ``obp/policy/conf/prior_bts.yaml`` in the same wheel (obp's
    ``BernoulliTS(is_zozotown_prior=True, campaign=...)`` loads the same constants). The file
    is a plain two-level YAML list; parsed here so valuerec needs no YAML dependency.
    """
    path = (root or folder()) / "policy" / "conf" / "prior_bts.yaml"
    params: dict[str, dict[str, list[float]]] = {}
    section: dict[str, list[float]] = {}
    values: list[float] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0 and text.endswith(":"):
            section = params.setdefault(text[:-1], {})
        elif indent > 0 and text.endswith(":"):
            values = section.setdefault(text[:-1], [])
        elif text.startswith("- "):
            values.append(float(text[2:]))
        else:
            raise datasets.DatasetError(f"{path}:{number}: unexpected line {text!r}")
    try:
        alpha, beta = (np.asarray(params[campaign][k], dtype=float) for k in ("alpha", "beta"))
    except KeyError as exc:
        raise datasets.DatasetError(f"{path} has no {exc} for campaign {campaign!r}") from None
    if alpha.shape != beta.shape or (alpha <= 0).any() or (beta <= 0).any():
        raise datasets.DatasetError(f"{path}: bad prior for campaign {campaign!r}")
    return alpha, beta


def thompson_action_dist(
    alpha: np.ndarray,
    beta: np.ndarray,
    *,
    n_positions: int = N_POSITIONS,
    n_sim: int = 100_000,
    seed: int = 0,
    batch: int = 10_000,
) -> np.ndarray:
    """P(item a shown at position k) under Bernoulli Thompson sampling, by Monte Carlo.

    Each simulated impression draws one click rate per item from Beta(alpha, beta) and shows
    the ``n_positions`` highest draws in order, as ``obp.policy.BernoulliTS.select_action``
    does; the share of ``n_sim`` impressions with item a at position k estimates the
    probability (obp's ``compute_batch_action_dist``, vectorised). Returns
    ``(n_items, n_positions)``, each column summing to one.
    """
    alpha, beta = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    rng = np.random.default_rng(seed)
    counts = np.zeros((alpha.size, n_positions))
    for start in range(0, n_sim, batch):
        draws = rng.beta(alpha, beta, size=(min(batch, n_sim - start), alpha.size))
        top = np.argpartition(-draws, n_positions - 1, axis=1)[:, :n_positions]
        order = np.argsort(-np.take_along_axis(draws, top, axis=1), axis=1)
        top = np.take_along_axis(top, order, axis=1)  # the n_positions best, best first
        for k in range(n_positions):
            counts[:, k] += np.bincount(top[:, k], minlength=alpha.size)
    return counts / n_sim


def logged_action_dist(log: OBDLog) -> np.ndarray:
    """The marginal P(item a at position k) of the policy that wrote ``log``, from its records.

    For each (item, position) the harmonic mean of the recorded propensities of the rows that
    show it: with π_t the policy's probability at round t, the number of rows showing a at k
    has mean Σ_t π_t(a) and Σ_{rows showing a} 1/π_t has mean T_k (the rounds at k), so their
    ratio is a consistent (Horvitz-Thompson) estimate of the average probability
    (1/T_k) Σ_t π_t(a). The plain mean of the recorded propensities is not: rows are shown
    more often when the propensity is high, so it overweights them (on the BTS logs the means
    add up to 2-3.7 per position instead of 1). Items never shown at a position get zero;
    each column is renormalised to sum to one.
    """
    frame = log.frame
    inverse = np.zeros((log.n_items, N_POSITIONS))
    shown = np.zeros((log.n_items, N_POSITIONS))
    at = (frame["item_id"].to_numpy(), frame["position"].to_numpy())
    np.add.at(inverse, at, 1.0 / frame["propensity"].to_numpy())
    np.add.at(shown, at, 1.0)
    if (empty := np.flatnonzero(shown.sum(axis=0) == 0)).size:
        raise ValueError(f"the {log.policy}/{log.campaign} log has no rows at position {empty[0]}")
    dist = np.divide(shown, inverse, out=np.zeros_like(shown), where=inverse > 0)
    return dist / dist.sum(axis=0, keepdims=True)
