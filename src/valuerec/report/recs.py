"""Recommendation figures for the report: the shared evaluator on both protocols, and examples.

Saved recommender artifacts are fitted on every interaction and carry no evaluation (``valuerec
recommend fit`` stores fit time and sizes only), so there is nothing stored to read: the report
evaluates the models itself, exactly as ``valuerec recommend evaluate`` does -- fit on the
train part (``fit_split``: sequence models early-stop on the validation part) of the random
80/10/10 split (seed 0) and of the leave-one-out split, full ranking
of the test part with seen items masked, :func:`~valuerec.evaluate.ranking.evaluate_scores`
for every metric -- and says so. The default models are the ones ``recommend fit`` saves by
default (the popularity baseline and EASE), which take seconds on MovieLens-100K.

The example users are served by the saved artifact when there is one (the model the server
loads), otherwise by the same model fitted now on every interaction. Each is scored from their
history as the store holds it now (``recommend(histories=...)``, what the server does with
every user's in-memory history), not from the matrix the model was fitted on: an artifact
fitted before newer events would otherwise recommend items the history table right above
shows the user already had. Reasons come from :func:`valuerec.recommend.explain.because`,
the code the CLI and the API use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuerec.artifacts import ArtifactStore, data_fingerprint
from valuerec.cli_recommend import PREFIX, interest_types, item_interactions
from valuerec.data.store import Store
from valuerec.evaluate.ranking import Interactions, protocol_split
from valuerec.recommend.base import Recommender
from valuerec.recommend.explain import because, item_titles
from valuerec.recommend.registry import MODELS, fit_and_evaluate, make_recommender

from .defaults import REC_K, REC_MODELS
from .value import NotApplicable

__all__ = [
    "PROTOCOLS",
    "ExampleUser",
    "PeerRun",
    "ProtocolResult",
    "RecEvaluation",
    "evaluate_recommenders",
    "read_peer",
]

PROTOCOLS = ("random-split", "leave-one-out")
EXAMPLE_USERS = 5
EXAMPLE_K = 5
HISTORY_SHOWN = 5
#: quantiles of history length the example users are picked at: light to heavy users
EXAMPLE_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)

Step = Callable[[str], object]


@dataclass
class ProtocolResult:
    """Every model on one protocol: metrics, top-k lists and the train popularity of items."""

    protocol: str
    metrics: dict[str, dict[str, float]]
    top_items: dict[str, np.ndarray]
    train_counts: np.ndarray
    sizes: dict[str, int]


@dataclass
class ExampleUser:
    """A user's recent history and what the example model recommends them, with reasons."""

    user_id: str
    interactions: int
    items: int  # distinct items among the interactions (the history lists each item once)
    history: pd.DataFrame  # timestamp, event_type, item_id, title (newest first)
    recs: pd.DataFrame  # rank, item_id, title, score, reason


@dataclass
class PeerRun:
    """One peer (RecBole) figure set: a model on a protocol."""

    protocol: str
    model: str
    metrics: dict[str, float]  # masked figures; unmasked ones as ``<metric>_unmasked``
    note: str = ""  # which of the peer's figure sets these are, shown in its row


@dataclass
class RecEvaluation:
    """What the recommendations section shows, and where each part came from."""

    k: int
    models: list[str]
    protocols: dict[str, ProtocolResult]
    example_model: str
    example_source: str
    examples: list[ExampleUser]
    peers: list[PeerRun]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def parse_models(spec: str | None) -> list[str]:
    """A comma list of registered recommender names (default: ``recommend fit``'s)."""
    names = [n.strip().lower() for n in (spec or REC_MODELS).split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if not names or unknown:
        raise ValueError(
            f"unknown recommender(s) {unknown or spec!r}; choose from {', '.join(MODELS)}"
        )
    return list(dict.fromkeys(names))


def _protocol(
    inter: Interactions,
    items: pd.DataFrame,
    users: pd.DataFrame,
    protocol: str,
    names: list[str],
    k: int,
    skipped: dict[str, str],
    step: Step,
) -> ProtocolResult | None:
    split = protocol_split(inter, protocol)
    metrics: dict[str, dict[str, float]] = {}
    tops: dict[str, np.ndarray] = {}
    for name in names:
        step(f"recommendations: {protocol}: {name}")
        try:
            _, report, fit_s = fit_and_evaluate(
                name, split, items, users, k=k, unmasked=protocol == "leave-one-out"
            )
        except Exception as exc:  # one model's failure must not lose the others
            skipped[f"{name} ({protocol})"] = f"{type(exc).__name__}: {exc}"
            continue
        metrics[name] = {**report.metrics, "fit_s": fit_s}
        tops[name] = report.top_items
    if not metrics:
        return None
    return ProtocolResult(protocol, metrics, tops, split.train.item_counts(), split.sizes())


def _example_model(
    root: str,
    names: list[str],
    items: pd.DataFrame,
    users: pd.DataFrame,
    inter: Interactions,
    fingerprint: str,
) -> tuple[str, Recommender, str]:
    """The model the examples use: the first non-baseline one that can use the data (else
    the first baseline), its saved artifact preferred.

    Returns (name, model, where it came from). ``fingerprint`` is the store's
    :func:`~valuerec.artifacts.data_fingerprint`: an artifact saved with another one was
    fitted before the store last changed, and the source says so.

    Raises:
        ValueError: no named model can use the data.
    """
    order = [n for n in names if "popularity" not in n] + [n for n in names if "popularity" in n]
    arts = ArtifactStore(root)
    passed: list[str] = []  # models that could not be used, and why
    for name in order:
        note = ""
        if PREFIX + name in arts.names():
            try:
                model, meta = arts.load(PREFIX + name)
            except Exception as exc:  # unpickling needs the model's code: fit it now instead
                note = f" ({PREFIX}{name} could not be loaded: {type(exc).__name__}: {exc})"
            else:
                version = meta.get("version", "")
                saved = meta.get("data_fingerprint") or fingerprint  # unknown: say nothing
                stale = " (fitted before the store last changed)" if saved != fingerprint else ""
                return name, model, f"the saved artifact {PREFIX}{name} {version}{stale}"
        try:
            model = make_recommender(name, items, users).fit(inter)
        except ValueError as exc:  # e.g. content without an items table: the next model
            passed.append(f"{name}: {exc}")
            continue
        skipped = f"; not {'; '.join(passed)}" if passed else ""
        return name, model, f"{name} fitted now on every interaction{note}{skipped}"
    raise ValueError("no model could serve the examples: " + "; ".join(passed))


def _pick_users(model: Recommender) -> list[str]:
    """Users at spread-out history lengths (light to heavy), deterministic."""
    counts = np.diff(model.matrix_.indptr)
    users = np.flatnonzero(counts > 0)
    if users.size == 0:
        return []
    order = users[np.lexsort((users, counts[users]))]  # by history length, then index
    picks: list[int] = []
    for q in EXAMPLE_QUANTILES:
        pos = min(int(q * order.size), order.size - 1)
        while pos < order.size and order[pos] in picks:
            pos += 1
        if pos < order.size:
            picks.append(int(order[pos]))
    return [str(model.user_ids_[u]) for u in picks[:EXAMPLE_USERS]]


def _examples(
    store: Store, model: Recommender, titles: dict[str, str], kinds: list[str]
) -> list[ExampleUser]:
    """Example users' recent history (of the event types ``kinds`` the model learned from:
    never an exposure, which it did not read) and their recommendations with reasons.

    Each user is scored from their whole history in the store now, oldest first, as the
    server scores its in-memory histories: what is shown as seen is what is masked, even
    when the model was fitted on older data.
    """
    users = _pick_users(model)
    if not users:
        return []
    events = store.events(users, event_types=kinds)
    events = events[events["item_id"].notna()]
    mine_of = {
        user: events[events["user_id"] == user].sort_values("timestamp", kind="stable")
        for user in users
    }
    histories = {user: mine["item_id"].astype(str).tolist() for user, mine in mine_of.items()}
    recs = model.recommend(users, k=EXAMPLE_K, histories=histories)
    out = []
    for user in users:
        mine = mine_of[user]
        recent = mine.drop_duplicates("item_id", keep="last").iloc[::-1].head(HISTORY_SHOWN)
        history = pd.DataFrame(
            {
                "timestamp": recent["timestamp"].to_numpy(),
                "event_type": recent["event_type"].to_numpy(),
                "item_id": recent["item_id"].astype(str).to_numpy(),
                "title": [titles.get(str(i), str(i)) for i in recent["item_id"]],
            }
        )
        mine_recs = recs[recs["user_id"] == user].reset_index(drop=True)
        known = model.item_ids_.get_indexer(histories[user])
        cold = bool(mine_recs["cold_start"].any())  # no item of the history known to it
        seen = None if cold else np.unique(known[known >= 0])
        idx = model.item_ids_.get_indexer(mine_recs["item_id"])
        out.append(
            ExampleUser(
                user_id=user,
                interactions=len(mine),
                items=int(mine["item_id"].nunique()),
                history=history,
                recs=pd.DataFrame(
                    {
                        "rank": mine_recs["rank"].to_numpy(),
                        "item_id": mine_recs["item_id"].astype(str).to_numpy(),
                        "title": [titles.get(str(i), str(i)) for i in mine_recs["item_id"]],
                        "score": mine_recs["score"].to_numpy(dtype=float),
                        "reason": because(model, seen, idx, titles),
                    }
                ),
            )
        )
    return out


def evaluate_recommenders(
    store: Store,
    artifacts_root: str,
    *,
    models: str | None = None,
    peer: list[PeerRun] | None = None,
    step: Step = lambda _: None,
) -> RecEvaluation:
    """Evaluate the recommenders on both protocols and serve five example users.

    Raises:
        NotApplicable: the store has no events with an item (exposures aside).
    """
    names = parse_models(models)
    kinds = interest_types(store)  # as `recommend evaluate` and `train`: never exposures
    if not kinds or not item_interactions(store, kinds):
        raise NotApplicable(
            "this store has no events with an item: recommenders learn from user-item "
            "interactions (views, purchases, ratings... with an item_id; exposures, what a "
            "user was shown, do not count)"
        )
    step("recommendations: reading interactions")
    inter = Interactions.from_store(store, event_types=kinds)
    items, users = store.items(), store.users()
    skipped: dict[str, str] = {}
    protocols = {}
    for protocol in PROTOCOLS:
        try:
            result = _protocol(inter, items, users, protocol, names, REC_K, skipped, step)
        except ValueError as exc:  # e.g. no user with a test item (every user too light)
            skipped[protocol] = str(exc)
            continue
        if result is not None:
            protocols[protocol] = result
    notes = [
        "Recommender artifacts store no evaluation, so these figures were computed now, as "
        "`valuerec recommend evaluate` computes them: fitted on the train part, test part "
        "ranked against the whole catalogue with the user's train and validation items masked."
    ]
    if not protocols:  # the section notes each distinct reason once, below this one
        notes.append("No protocol could be evaluated.")
    shape = (inter.n_users, inter.n_items, len(inter))
    if peer and shape != PEER_DATA_SHAPE:
        notes.append(
            "The peer (RecBole) figures given are measured on MovieLens-100K's splits "
            f"({PEER_DATA_SHAPE[0]:,} users, {PEER_DATA_SHAPE[1]:,} items, "
            f"{PEER_DATA_SHAPE[2]:,} interactions); this store's interactions are not those "
            f"({shape[0]:,} / {shape[1]:,} / {shape[2]:,}), so they are not shown here."
        )
        peer = []
    step("recommendations: example users")
    titles = item_titles(items)
    fingerprint = data_fingerprint(store)
    name, model, source = _example_model(artifacts_root, names, items, users, inter, fingerprint)
    examples = _examples(store, model, titles, kinds)
    return RecEvaluation(
        k=REC_K,
        models=names,
        protocols=protocols,
        example_model=name,
        example_source=source,
        examples=examples,
        peers=peer or [],
        skipped=skipped,
        notes=notes,
    )


# ------------------------------------------------------------------------------- peers

#: (users, items, interactions) of the data the peer figures are measured on: the scripts in
#: ``benchmarks/peers`` run RecBole on valuerec's own splits of MovieLens-100K, so their
#: figures belong beside a store holding exactly those interactions, and no other
PEER_DATA_SHAPE = (943, 1682, 100_000)


def _runs(data: Any) -> list[dict[str, Any]] | None:
    """The run list of a RecBole result: ``recbole_ml100k.py`` summary or ``recbole_run.py``."""
    if isinstance(data, dict) and isinstance(data.get("recbole"), dict):
        data = data["recbole"]
    if isinstance(data, dict) and isinstance(data.get("runs"), list):
        return data["runs"]
    return None


def read_peer(path: str | Path) -> list[PeerRun]:
    """Peer figures from a JSON written by ``benchmarks/peers`` (or a protocol/model mapping).

    Accepted shapes: the summary of ``benchmarks/peers/recbole_ml100k.py`` (``{"recbole":
    {"runs": [...]}}``), the results of ``recbole_run.py`` (``{"runs": [{"protocol",
    "model", "test": {...}}]}``) and ``{protocol: {model: {"test" or "metrics": {...}}}}``
    (optionally under ``"results"``), the form ``benchmarks/recs_ml100k.py --peer`` reads.
    Masked figures come from ``test_masked`` when a run has it, else from ``test``; the
    unmasked ones (``test``, or ``test_unmasked``) are kept as ``<metric>_unmasked``
    (:func:`_peer_figures`). Failed runs are skipped.

    Raises:
        ValueError: the file cannot be read, has none of these shapes, or holds a run that
            does not fit its shape (checked here, so that the report never meets it).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read peer figures {path}: {exc}") from None

    def bad(why: str) -> ValueError:
        return ValueError(f"cannot read peer figures {path}: {why}")

    out: list[PeerRun] = []
    runs = _runs(data)
    if runs is not None:
        for i, r in enumerate(runs):
            if not isinstance(r, dict):
                raise bad(f"run {i} is not an object")
            if "error" in r:
                continue  # a failed run: nothing to show
            for key in ("protocol", "model"):
                if not isinstance(r.get(key), str) or not r[key]:
                    raise bad(f"run {i} has no {key} (a name)")
            if not isinstance(r.get("test"), dict):
                raise bad(f"run {i} has no test object (metric: value) and no error")
            metrics, note = _peer_figures(r, r["test"], f"run {i}", bad)
            out.append(PeerRun(r["protocol"], r["model"], metrics, note))
        return out
    mapping = data.get("results", data) if isinstance(data, dict) else None
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: not a RecBole result file (no 'runs' and no protocol mapping)")
    for protocol, models in mapping.items():
        if not isinstance(models, dict):
            continue
        for model, r in models.items():
            if not isinstance(r, dict):
                continue
            m = r.get("test", r.get("metrics", r))
            if not isinstance(m, dict):
                raise bad(f"{protocol}/{model}: the test figures are not an object (metric: value)")
            metrics, note = _peer_figures(r, m, f"{protocol}/{model}", bad)
            if metrics:
                out.append(PeerRun(str(protocol), str(model), metrics, note))
    if not out:
        raise ValueError(f"{path}: no peer figures found")
    return out


def _peer_figures(
    run: dict[str, Any], test: dict[str, Any], where: str, bad: Callable[[str], ValueError]
) -> tuple[dict[str, float], str]:
    """A peer run's figures as the report's columns mean them, and a note saying whence.

    The report's columns are measured with the user's train and valid items masked, and
    ``<metric>_unmasked`` without. ``recbole_run.py`` writes RecBole's own ``test`` figures,
    which are masked except for sequential models on leave-one-out (RecBole's full sort masks
    nothing there): for those it adds the masked re-evaluation as ``test_masked``, for the
    others the unmasked one as ``test_unmasked``. Reading ``test`` alone put a sequential
    model's unmasked figures under the masked columns.

    Raises:
        ValueError: ``test_masked`` or ``test_unmasked`` is there but not an object.
    """
    for key in ("test_masked", "test_unmasked"):
        if key in run and not isinstance(run[key], dict):
            raise bad(f"{where}: {key} is not an object (metric: value)")
    said = str(run.get("test_is") or "")
    if "test_masked" in run:
        masked, unmasked = run["test_masked"], test
        note = "masked figures from its test_masked; _unmasked from its test" + (
            f", which is {said}" if said else ""
        )
    else:
        masked, unmasked = test, run.get("test_unmasked") or {}
        note = said
    metrics = {str(k): float(v) for k, v in masked.items() if _is_number(v)}
    metrics |= {f"{k}_unmasked": float(v) for k, v in unmasked.items() if _is_number(v)}
    return metrics, note


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
