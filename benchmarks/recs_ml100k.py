"""Recommenders on MovieLens-100K: every model, both protocols, one evaluator.

Hyper-parameters are chosen on the validation part only (small grids); the test part is
touched once per model with the chosen setting. Prints NDCG/Recall/MRR/Hit@10, coverage,
training seconds and scoring speed, with the RecBole figures quoted in issue 4 (measured by
its author with RecBole 1.2.1 on a per-user random 80/10/10 split) as a reference column.
Running RecBole itself beside us (benchmarks/peers/) is still to do.

    python benchmarks/recs_ml100k.py
"""

from __future__ import annotations

import argparse
import functools
import itertools
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from valuerec.data import datasets
from valuerec.data.store import Store
from valuerec.evaluate.ranking import Interactions, evaluate_scores, leave_one_out, random_split
from valuerec.recommend.base import Recommender
from valuerec.recommend.content import ContentRecommender
from valuerec.recommend.ease import EASERecommender
from valuerec.recommend.hybrid import HybridRecommender
from valuerec.recommend.knn import ItemKNNRecommender
from valuerec.recommend.mf import ALSRecommender, BPRRecommender
from valuerec.recommend.popularity import PopularityRecommender
from valuerec.recommend.vae import MultVAERecommender

console = Console(width=150)
#: NDCG@10 quoted in issue 4 (RecBole 1.2.1, random 80/10/10, full ranking), for reference
RECBOLE_QUOTED = {
    "popularity": 0.060,
    "itemknn": 0.283,
    "bpr": 0.293,
    "ease": 0.330,
    "als": 0.327,
    "multvae": 0.285,
}
GRIDS: dict[str, tuple[Callable[..., Recommender], dict[str, list]]] = {
    "popularity": (PopularityRecommender, {}),
    "itemknn": (ItemKNNRecommender, {"k": [50, 100, 200], "shrink": [0.0, 10.0, 50.0]}),
    "ease": (EASERecommender, {"reg": [100.0, 250.0, 500.0, 1000.0]}),
    "als": (ALSRecommender, {"factors": [32, 64], "regularization": [1.0, 10.0, 30.0]}),
    "multvae": (MultVAERecommender, {"epochs": [30, 50]}),
    "bpr": (
        BPRRecommender,
        {"factors": [64], "learning_rate": [0.01, 0.05], "iterations": [100, 300]},
    ),
}


def tune(name: str, split, stage_metric: str = "ndcg@10") -> tuple[Recommender, dict, float]:
    cls, grid = GRIDS[name]
    best = (None, {}, -1.0)
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        params = dict(zip(keys, values, strict=True))
        model = cls(**params).fit(split.train)
        score = evaluate_scores(model.score_users, split, stage="valid").metrics[stage_metric]
        if score > best[2]:
            best = (model, params, score)
    return best  # type: ignore[return-value]


def run(protocol: str, inter: Interactions) -> dict[str, dict]:
    split = random_split(inter, seed=0) if protocol == "random-split" else leave_one_out(inter)
    out = {}
    for name in GRIDS:
        model, params, valid = tune(name, split)
        start = time.perf_counter()
        model = GRIDS[name][0](**params).fit(split.train)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        report = evaluate_scores(
            model.score_users, split, stage="test", unmasked=protocol == "leave-one-out"
        )
        score_s = time.perf_counter() - start
        out[name] = {
            "params": params,
            "valid": valid,
            "metrics": report.metrics,
            "fit_s": fit_s,
            "score_s": score_s,
        }
        console.print(
            f"  {protocol} {name} {params}: valid ndcg@10 {valid:.4f}, test "
            f"{report.metrics['ndcg@10']:.4f}"
        )
    if protocol == "random-split":
        out["hybrid"] = hybrid(split, out)
    return out


def hybrid(split, res: dict[str, dict]) -> dict:
    """Blend of the validation-tuned EASE, ALS, item-kNN and Mult-VAE; weights on validation."""
    members = [GRIDS[n][0](**res[n]["params"]) for n in ("ease", "als", "itemknn", "multvae")]
    model = HybridRecommender(members)
    start = time.perf_counter()
    info = model.tune_weights(split)
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


def show(protocol: str, res: dict[str, dict]) -> None:
    table = Table(title=f"MovieLens-100K, {protocol} (test, full ranking, seen items excluded)")
    cols = [
        "model",
        "NDCG@10",
        "Recall@10",
        "MRR@10",
        "Hit@10",
        "coverage@10",
        "fit s",
        "score s (943 users)",
    ]
    if protocol == "random-split":
        cols.insert(2, "RecBole NDCG@10 (quoted)")
    else:
        cols.insert(2, "NDCG@10 unmasked")
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right")
    for name, r in res.items():
        m = r["metrics"]
        extra = (
            f"{RECBOLE_QUOTED.get(name, float('nan')):.3f}"
            if protocol == "random-split"
            else f"{m.get('ndcg@10_unmasked', float('nan')):.4f}"
        )
        table.add_row(
            name,
            f"{m['ndcg@10']:.4f}",
            extra,
            f"{m['recall@10']:.4f}",
            f"{m['mrr@10']:.4f}",
            f"{m['hit@10']:.4f}",
            f"{m['coverage@10']:.3f}",
            f"{r['fit_s']:.2f}",
            f"{r['score_s']:.3f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("bench-data"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    db = args.cache / "movielens-100k.duckdb"
    if not db.exists():
        with Store(db) as store:
            datasets.load("movielens-100k", store)
    with Store(db, read_only=True) as store:
        inter = Interactions.from_store(store)
        items = store.items()
    GRIDS["content"] = (functools.partial(ContentRecommender, items=items), {})
    for protocol in ("random-split", "leave-one-out"):
        console.rule(protocol)
        show(protocol, run(protocol, inter))


if __name__ == "__main__":
    main()
