"""Recommenders on MovieLens-100K: every model, both protocols, one evaluator.

Hyper-parameters are chosen on the validation part only (small grids, or early stopping on
validation for the neural sequence model); the test part is touched once per model with the
chosen setting. Prints NDCG/Recall/MRR/Hit@10, coverage, training seconds (and seconds per
epoch for SASRec) and scoring speed. Sequence models see each user's items in time order; on
leave-one-out their test-time history includes the validation item, as in RecBole's
sequential protocol (general models score from the training items, as in RecBole). RecBole
itself runs beside us in ``benchmarks/peers/recbole_ml100k.py``; pass its ``--json`` output
with ``--peer`` to print its figures in the same table.

    python benchmarks/recs_ml100k.py [--protocols leave-one-out] [--models sasrec,ease]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from valuerec.data import datasets
from valuerec.data.store import Store
from valuerec.evaluate.ranking import (
    Interactions,
    Split,
    evaluate_scores,
    leave_one_out,
    random_split,
)
from valuerec.recommend.base import Recommender
from valuerec.recommend.content import ContentRecommender
from valuerec.recommend.ease import EASERecommender, SideEASERecommender
from valuerec.recommend.hybrid import HybridRecommender
from valuerec.recommend.knn import ItemKNNRecommender
from valuerec.recommend.lightgcn import LightGCNRecommender, MFBPRRecommender
from valuerec.recommend.mf import ALSRecommender, BPRRecommender, SideALSRecommender
from valuerec.recommend.popularity import PopularityRecommender
from valuerec.recommend.sasrec import SASRecRecommender
from valuerec.recommend.vae import MultVAERecommender
from valuerec.report.recs import read_peer

console = Console(width=160)
#: NDCG@10 quoted in issue 4 (RecBole 1.2.1 by the issue's author), used when no --peer run
RECBOLE_QUOTED = {
    "random-split": {"popularity": 0.060, "itemknn": 0.283, "bpr": 0.293, "ease": 0.330,
                     "als": 0.327, "multvae": 0.285, "lightgcn": 0.304},
    "leave-one-out": {"sasrec": 0.090},
}  # fmt: skip
#: our models whose RecBole counterpart goes by another name: RecBole's BPR samples negatives
#: uniformly, as mf-bpr does
PEER_NAME = {"mf-bpr": "bpr"}
#: CPU seconds per training epoch of RecBole 1.2.1 on one thread here (peers/README.md): the
#: figure the issue asks SASRec's to be set beside
RECBOLE_EPOCH_CPU_S = {"leave-one-out": {"sasrec": 160.0, "sasrec-mt": 160.0}}
GRIDS: dict[str, tuple[Callable[..., Recommender], dict[str, list]]] = {
    "popularity": (PopularityRecommender, {}),
    "itemknn": (ItemKNNRecommender, {"k": [50, 100, 200], "shrink": [0.0, 10.0, 50.0]}),
    "ease": (EASERecommender, {"reg": [100.0, 250.0, 500.0, 1000.0]}),
    "edlae": (EASERecommender, {"reg": [150.0, 250.0, 400.0], "dropout": [0.33, 0.5, 0.6]}),
    "als": (ALSRecommender, {"factors": [32, 64], "regularization": [1.0, 10.0, 30.0]}),
    # epochs: a ceiling; early stopping on validation NDCG@10 decides
    "multvae": (MultVAERecommender, {"latent": [16, 32, 64], "epochs": [300]}),
    "bpr": (
        BPRRecommender,
        {"factors": [64], "learning_rate": [0.01, 0.05], "iterations": [100, 300]},
    ),
    "mf-bpr": (MFBPRRecommender, {"reg_weight": [1e-2, 3e-2], "lr": [3e-3, 1e-2]}),
    "lightgcn": (LightGCNRecommender, {}),
    # epochs: a ceiling; early stopping on validation NDCG@10 decides
    "sasrec": (SASRecRecommender, {}),
    "sasrec-mt": (SASRecRecommender, {"value_weight": [0.1]}),
}


class Scorer:
    """Fits and scores models on one split through the models' own split protocol."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def ndcg(self, model: Recommender, stage: str = "valid") -> float:
        scores = model.split_scorer(self.split, stage)
        return evaluate_scores(scores, self.split, stage=stage).metrics["ndcg@10"]

    def fit(self, name: str, params: dict) -> Recommender:
        return GRIDS[name][0](**params).fit_split(self.split)


def tune(name: str, scorer: Scorer) -> tuple[Recommender, dict, float, float]:
    """Best (model, params, valid NDCG@10, fit seconds) over the grid, on validation only."""
    _, grid = GRIDS[name]
    best: tuple = (None, {}, -1.0, 0.0)
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        params = dict(zip(keys, values, strict=True))
        start = time.perf_counter()
        model = scorer.fit(name, params)
        fit_s = time.perf_counter() - start
        score = scorer.ndcg(model)
        if score > best[2]:
            best = (model, params, score, fit_s)
    return best


def run(protocol: str, inter: Interactions, names: list[str]) -> dict[str, dict]:
    split = random_split(inter, seed=0) if protocol == "random-split" else leave_one_out(inter)
    scorer = Scorer(split)
    out, fitted = {}, {}
    for name in names:
        if name == "hybrid":
            continue
        model, params, valid, fit_s = tune(name, scorer)
        fitted[name] = model
        start = time.perf_counter()
        report = evaluate_scores(
            model.split_scorer(split, "test"),
            split,
            stage="test",
            unmasked=protocol == "leave-one-out",
        )
        score_s = time.perf_counter() - start
        out[name] = {"params": params, "valid": valid, "metrics": report.metrics, "fit_s": fit_s,
                     "score_s": score_s}  # fmt: skip
        if isinstance(model, SASRecRecommender):
            out[name]["epochs"] = len(model.history_)
            out[name]["best_epoch"] = model.best_epoch_
            out[name]["s_per_epoch"] = fit_s / len(model.history_)
            out[name]["cpu_s_per_epoch"] = model.history_[-1]["train_cpu_s"] / len(model.history_)
        console.print(
            f"  {protocol} {name} {params}: valid ndcg@10 {valid:.4f}, test "
            f"{report.metrics['ndcg@10']:.4f}, fit {fit_s:.1f}s"
        )
    if protocol == "random-split" and "hybrid" in names:
        out["hybrid"] = hybrid(split, fitted)
    return out


#: general models the hybrid may blend (item-kNN and BPR got weight 0 whenever tried)
HYBRID_MEMBERS = ("ease-side", "edlae", "als-side", "als", "multvae", "lightgcn")


def hybrid(split: Split, fitted: dict[str, Recommender]) -> dict:
    """Blend of the validation-tuned general models; weights chosen on validation."""
    members = [fitted[n] for n in HYBRID_MEMBERS if n in fitted]
    model = HybridRecommender(members)
    start = time.perf_counter()
    info = model.tune_weights(split, grid=(0.0, 0.5, 1.0, 2.0), refit=False)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    report = evaluate_scores(model.score_users, split, stage="test")
    console.print(f"  hybrid weights {info}")
    return {
        "params": info,
        "valid": info["valid_ndcg@10"],
        "metrics": report.metrics,
        "fit_s": fit_s,
        "score_s": time.perf_counter() - start,
    }


def show(protocol: str, res: dict[str, dict], peer: dict[str, float]) -> None:
    table = Table(title=f"MovieLens-100K, {protocol} (test, full ranking, seen items excluded)")
    cols = ["model", "NDCG@10", "RecBole NDCG@10", "Recall@10", "MRR@10", "Hit@10",
            "coverage@10", "fit s", "s/epoch", "score s (943 users)"]  # fmt: skip
    recbole_cpu = RECBOLE_EPOCH_CPU_S.get(protocol, {})
    if protocol == "leave-one-out":
        cols.insert(2, "NDCG@10 unmasked")
        cols[-1:-1] = ["CPU s/epoch", "RecBole CPU s/epoch"]
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right")
    for name, r in res.items():
        m = r["metrics"]
        peer_ndcg = peer.get(PEER_NAME.get(name, name))
        row = [name, f"{m['ndcg@10']:.4f}"]
        if protocol == "leave-one-out":
            row.append(f"{m.get('ndcg@10_unmasked', float('nan')):.4f}")
        row += [
            f"{peer_ndcg:.4f}" if peer_ndcg is not None else "",
            f"{m['recall@10']:.4f}",
            f"{m['mrr@10']:.4f}",
            f"{m['hit@10']:.4f}",
            f"{m['coverage@10']:.3f}",
            f"{r['fit_s']:.1f}",
            f"{r['s_per_epoch']:.2f}" if "s_per_epoch" in r else "",
        ]
        if protocol == "leave-one-out":
            row += [
                f"{r['cpu_s_per_epoch']:.2f}" if "cpu_s_per_epoch" in r else "",
                f"{recbole_cpu[name]:.0f}" if name in recbole_cpu else "",
            ]
        row.append(f"{r['score_s']:.3f}")
        table.add_row(*row)
    console.print(table)


#: RecBole's model names where the quoted table (and PEER_NAME) spells them otherwise
RECBOLE_NAMES = {"pop": "popularity", "multivae": "multvae"}


def peer_figures(path: Path | None) -> dict[str, dict[str, float]]:
    """RecBole NDCG@10 per protocol and model: from a peer run's JSON, else the quoted ones.

    The file is read as the report reads it (``read_peer``: the summary of
    ``peers/recbole_ml100k.py``, the results of ``peers/recbole_run.py`` or a protocol/model
    mapping); failed runs are skipped.
    """
    if path is None:
        return RECBOLE_QUOTED
    out: dict[str, dict[str, float]] = {}
    for run in read_peer(path):
        if "ndcg@10" in run.metrics:
            name = RECBOLE_NAMES.get(run.model.lower(), run.model.lower())
            out.setdefault(run.protocol, {})[name] = run.metrics["ndcg@10"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("bench-data"))
    parser.add_argument("--protocols", default="random-split,leave-one-out")
    parser.add_argument("--models", default=",".join([*GRIDS, "ease-side", "content", "hybrid"]))
    parser.add_argument("--peer", type=Path, help="JSON written by peers/recbole_ml100k.py")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    db = args.cache / "movielens-100k.duckdb"
    if not db.exists():
        with Store(db) as store:
            datasets.load("movielens-100k", store)
    with Store(db, read_only=True) as store:
        inter = Interactions.from_store(store)
        items, users = store.items(), store.users()
    GRIDS["content"] = (functools.partial(ContentRecommender, items=items), {})
    GRIDS["ease-side"] = (
        functools.partial(SideEASERecommender, items=items, users=users),
        {
            "reg": [200.0, 300.0, 400.0],
            "item_weight": [1.0, 3.0],
            "time_weight": [0.5, 1.0],
            "window": [10, 20, 40],
            "sequence_weight": [0.0, 0.5, 1.0],
        },
    )
    GRIDS["als-side"] = (
        functools.partial(SideALSRecommender, items=items, users=users),
        {
            "factors": [32, 64],
            "regularization": [10.0, 30.0],
            "item_weight": [1.0, 3.0],
            "sequence_weight": [0.0, 0.5, 1.0],
        },
    )
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = sorted(set(protocols) - {"random-split", "leave-one-out"})
    if unknown or not protocols:  # a typo must not run another protocol under its name
        parser.error(f"--protocols: unknown {unknown or args.protocols!r}; use random-split, "
                     "leave-one-out or both")  # fmt: skip
    if "hybrid" in names and not set(HYBRID_MEMBERS) & set(names):
        parser.error(f"--models: hybrid blends some of {', '.join(HYBRID_MEMBERS)}; name one")
    peer = peer_figures(args.peer)
    results = {}
    for protocol in protocols:
        console.rule(protocol)
        results[protocol] = run(protocol, inter, names)
        show(protocol, results[protocol], peer.get(protocol, {}))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
