"""RecBole 1.2.1 beside valuerec on MovieLens-100K, on our exact splits.

The entry point of the peer benchmark; runs in valuerec's venv:

1. writes our random split (seed 0, per-user 80/10/10) and leave-one-out split as RecBole
   pre-split atomic files (``export_splits.py``);
2. runs ``recbole_run.py`` in the peer venv (``setup_recbole.sh`` makes it) as a subprocess:
   RecBole's own trainer, early stopping and evaluator;
3. evaluator agreement: RecBole's dumped score matrices (Pop and EASE on the random split,
   Pop and the sequential models on leave-one-out) are ranked again by *our*
   ``evaluate_scores`` on the same split, beside RecBole's own figure for the same scores --
   the two evaluators must agree within 1% before any model comparison means anything;
4. prints RecBole's figures per model and protocol (epochs, seconds, seconds per epoch), and
   the decomposition of RecBole Pop's item counts (why its figure is not a popularity
   baseline's).

    .venv/bin/python benchmarks/peers/recbole_ml100k.py                 # everything (~40 min)
    .venv/bin/python benchmarks/peers/recbole_ml100k.py --skip-sequential --max-epochs 50
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from valuerec.evaluate.ranking import (
    Interactions,
    Split,
    evaluate_scores,
    leave_one_out,
    random_split,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import export_splits  # noqa: E402  (sibling script, not a package)

PEER_PYTHON = HERE / ".venv-recbole" / "bin" / "python"
SHOWN = ("ndcg@10", "recall@10", "mrr@10", "hit@10", "ndcg@20", "recall@20")
CHECKED = ("ndcg@10", "recall@10", "mrr@10", "hit@10", "precision@10", "ndcg@20", "recall@20")
#: relative difference allowed between the two evaluators on the same scores
TOLERANCE = 0.01
SEQUENTIAL_MODELS = ("GRU4Rec", "SASRec")
console = Console(width=160)
SHORT = {"random-split": "random", "leave-one-out": "LOO"}


def run_peer(args: argparse.Namespace, data: Path, work: Path) -> Path:
    """Run ``recbole_run.py`` in the peer venv; return its results JSON."""
    python = Path(args.peer_python)
    if not python.exists():
        raise SystemExit(f"{python} not found: run benchmarks/peers/setup_recbole.sh first")
    out = work / "recbole_results.json"
    loo = "Pop" if args.skip_sequential else args.loo_models
    cmd = [
        str(python),
        str(HERE / "recbole_run.py"),
        "--data", str(data),
        "--work", str(work),
        "--out", str(out),
        "--rs-models", args.models,
        "--loo-models", loo,
        "--max-epochs", str(args.max_epochs),
        "--seq-epochs", str(args.seq_epochs),
        "--threads", str(args.threads),
    ]  # fmt: skip
    for cap in args.epochs:
        cmd += ["--epochs", cap]
    for item in args.set:
        cmd += ["--set", item]
    # progress goes to stderr so that --json keeps stdout clean
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"recbole_run.py failed (exit {proc.returncode})")
    return out


def load_dump(entry: dict[str, Any], split: Split) -> np.ndarray:
    """RecBole's dumped test scores as an ``n_users x n_items`` array over *our* vocabularies.

    Users without a row (RecBole only scores users with a test target) get zeros; our
    evaluator never ranks them either, which :func:`agreement` checks.
    """
    scores = np.load(entry["dump"]["scores"])
    ids = json.loads(Path(entry["dump"]["ids"]).read_text())
    rows = split.train.user_ids.get_indexer(ids["users"])
    cols = split.train.item_ids.get_indexer(ids["items"])
    if (rows < 0).any() or (cols < 0).any():
        raise ValueError(f"{entry['model']}: dumped ids outside our vocabularies")
    if sorted(cols.tolist()) != list(range(split.n_items)):
        raise ValueError(f"{entry['model']}: dumped items are not our whole catalogue")
    full = np.zeros((split.n_users, split.n_items), dtype=np.float64)
    full[np.ix_(rows, cols)] = scores
    return full


def rel_diff(ours: float, theirs: float) -> float:
    """|ours - theirs| / theirs (0 when both are 0)."""
    if theirs == 0:
        return 0.0 if ours == 0 else math.inf
    return abs(ours - theirs) / abs(theirs)


def agreement(entry: dict[str, Any], split: Split) -> list[dict[str, Any]]:
    """Our evaluator on RecBole's scores beside RecBole's figures for the same scores.

    The check compares with RecBole's collector and metrics run on the same scores with ties
    broken as ours breaks them (``tie_broken``): ``torch.topk`` picks arbitrarily among equal
    scores, and RecBole Pop's scores are full of ties (see ``diagnostics``), which would make
    the check measure tie order instead of the evaluators. RecBole's own figure with its own
    tie order (``recbole_raw``) is kept beside it. ``masked`` excludes the user's train (and
    valid) items, ``unmasked`` nothing.
    """
    report = evaluate_scores(load_dump(entry, split), split, stage="test", unmasked=True)
    ours = report.metrics
    if entry["model"] in SEQUENTIAL_MODELS:
        raw = {"masked": entry.get("test_masked", {}), "unmasked": entry["test"]}
    else:
        raw = {"masked": entry["test"], "unmasked": entry.get("test_unmasked", {})}
    rows = []
    for label, suffix in (("masked", ""), ("unmasked", "_unmasked")):
        theirs = entry.get("tie_broken", {}).get(label, {})
        for metric in CHECKED:
            if metric not in theirs:
                continue
            mine = float(ours[f"{metric}{suffix}"])
            recbole_raw = raw[label].get(metric)
            rows.append(
                {
                    "protocol": entry["protocol"],
                    "model": entry["model"],
                    "masking": label,
                    "metric": metric,
                    "users": int(ours["users" if not suffix else "users_unmasked"]),
                    "valuerec": mine,
                    "recbole": theirs[metric],
                    "rel_diff": rel_diff(mine, theirs[metric]),
                    "recbole_raw": recbole_raw,
                    "rel_diff_raw": None if recbole_raw is None else rel_diff(mine, recbole_raw),
                }
            )
    return rows


def reference_models(split: Split) -> dict[str, float]:
    """valuerec's own Pop and EASE (reg 250, RecBole's default) on the same random split.

    Best effort: the recommenders live in ``src/`` and must not block the peer figures.
    """
    out: dict[str, float] = {}
    try:
        from valuerec.recommend.ease import EASERecommender
        from valuerec.recommend.popularity import PopularityRecommender

        for name, model in (("Pop", PopularityRecommender()), ("EASE", EASERecommender(250.0))):
            model.fit(split.train)
            out[name] = evaluate_scores(model.score_users, split).metrics["ndcg@10"]
    except Exception as exc:  # a reference column, never a failure
        Console(stderr=True).print(f"[yellow]valuerec reference models skipped: {exc!r}[/yellow]")
    return out


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "inf"
    return str(value)


def print_tables(summary: dict[str, Any]) -> None:
    """RecBole per model and protocol, the agreement check and the Pop decomposition."""
    res = summary["recbole"]
    table = Table(
        title=f"RecBole {res['recbole']} on valuerec's splits (torch {res['torch']}, "
        f"{res['threads']} thread)"
    )
    left = ("protocol", "model", "test is")
    for col in (*left, *SHOWN, "other mask ndcg@10", "epochs (best)"):
        table.add_column(col, justify="left" if col in left else "right")
    for col in ("fit s (CPU)", "s/epoch (CPU)"):
        table.add_column(col, justify="right")
    for e in res["runs"]:
        if "error" in e:
            table.add_row(SHORT[e["protocol"]], e["model"], "[red]failed[/red]", e["error"][:60])
            continue
        other = e.get("test_masked") or e.get("test_unmasked") or {}
        capped = "" if e["stopped_early"] or e["epoch_cap"] == 1 else " cap"
        table.add_row(
            SHORT[e["protocol"]],
            e["model"],
            e["test_is"].split(" ")[0],
            *(fmt(e["test"].get(m)) for m in SHOWN),
            fmt(other.get("ndcg@10")),
            f"{e['epochs_run']}/{e['epoch_cap']} ({e['best_epoch']}){capped}",
            f"{fmt(e['fit_seconds'], 1)} ({fmt(e.get('fit_cpu_seconds'), 1)})",
            f"{fmt(e['seconds_per_epoch'], 2)} ({fmt(e.get('cpu_seconds_per_epoch'), 2)})",
        )
    console.print(table)

    check = Table(
        title="Evaluator agreement: RecBole's scores ranked by both evaluators "
        "(RecBole = its collector + metrics with valuerec's tie order; raw = its own tie order)"
    )
    right = ("users", "valuerec", "RecBole", "rel diff", "RecBole raw", "raw diff")
    for col in ("protocol", "model", "masking", "metric", *right):
        check.add_column(col, justify="right" if col in right else "left")
    for r in summary["agreement"]:
        ok = "green" if r["rel_diff"] <= TOLERANCE else "red"
        raw_diff = r["rel_diff_raw"]
        check.add_row(
            SHORT[r["protocol"]],
            r["model"],
            r["masking"],
            r["metric"],
            str(r["users"]),
            fmt(r["valuerec"], 6),
            fmt(r["recbole"], 6),
            f"[{ok}]{100 * r['rel_diff']:.3f}%[/{ok}]",
            fmt(r["recbole_raw"], 6),
            "-" if raw_diff is None else f"{100 * raw_diff:.2f}%",
        )
    console.print(check)
    worst = summary["agreement_worst"]
    console.print(
        f"largest relative difference: {100 * worst:.3f}% "
        f"({'within' if worst <= TOLERANCE else 'OUTSIDE'} {100 * TOLERANCE:.0f}%); "
        f"against RecBole's own tie order: {100 * summary['agreement_worst_raw']:.2f}% "
        "(Pop's tied scores; see the Pop tables)"
    )

    for e in res["runs"]:
        diag = e.get("diagnostics")
        if not diag:
            continue
        pop = Table(
            title=f"RecBole Pop on {e['protocol']}: how its item counts are formed "
            f"({diag['batches']} batches of {diag['rows_per_batch']} rows)"
        )
        for col in ("counts", "test ndcg@10", "recall@10", "max count", "items at max"):
            pop.add_column(col, justify="left" if col == "counts" else "right")
        for name, v in diag["variants"].items():
            pop.add_row(
                name, fmt(v["ndcg@10"]), fmt(v["recall@10"]), str(v["max_count"]),
                str(v["items_at_max"]),
            )  # fmt: skip
        console.print(pop)
    ref = summary.get("valuerec_reference", {})
    if ref:
        console.print(
            "valuerec's own models on the same random split, test ndcg@10: "
            + ", ".join(f"{k} {v:.4f}" for k, v in ref.items())
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=export_splits.DEFAULT_DB)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new /tmp/peer-*)")
    parser.add_argument("--models", default="Pop,ItemKNN,BPR,LightGCN,MultiVAE,EASE",
                        help="RecBole models on the random split")  # fmt: skip
    parser.add_argument("--loo-models", default="Pop,GRU4Rec,SASRec",
                        help="RecBole models on leave-one-out")  # fmt: skip
    parser.add_argument("--skip-sequential", action="store_true", help="leave-one-out: Pop only")
    parser.add_argument("--max-epochs", type=int, default=300, help="cap for general models")
    parser.add_argument(
        "--seq-epochs",
        type=int,
        default=0,
        help="cap for sequential models (0: GRU4Rec 10, SASRec 5)",
    )
    parser.add_argument("--epochs", action="append", default=[], help="MODEL=N epoch cap")
    parser.add_argument("--set", action="append", default=[], help="MODEL.key=value (RecBole)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--peer-python", default=str(PEER_PYTHON))
    parser.add_argument("--results", type=Path, help="reuse a recbole_run.py JSON, run nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object, no tables")
    args = parser.parse_args(argv)

    work = (args.work or Path(tempfile.mkdtemp(prefix="peer-"))).resolve()
    data = work / "data"
    inter: Interactions = export_splits.load_interactions(args.db)
    manifest = export_splits.export_all(inter, data)
    results_path = args.results or run_peer(args, data, work)
    results = json.loads(Path(results_path).read_text())

    splits = {"random-split": random_split(inter, seed=0), "leave-one-out": leave_one_out(inter)}
    rows: list[dict[str, Any]] = []
    for entry in results["runs"]:
        if "dump" in entry and "error" not in entry:
            rows.extend(agreement(entry, splits[entry["protocol"]]))
    summary = {
        "work": str(work),
        "splits": manifest["datasets"],
        "recbole": results,
        "agreement": rows,
        "agreement_worst": max((r["rel_diff"] for r in rows), default=math.nan),
        "agreement_worst_raw": max(
            (r["rel_diff_raw"] for r in rows if r["rel_diff_raw"] is not None), default=math.nan
        ),
        "valuerec_reference": reference_models(splits["random-split"]),
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_tables(summary)
        console.print(f"full results: {work / 'summary.json'}")


if __name__ == "__main__":
    main()
