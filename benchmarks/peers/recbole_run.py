"""Run RecBole 1.2.1 with its own trainer and evaluator on valuerec's exported splits.

Runs in the peer venv (``benchmarks/peers/.venv-recbole``, made by ``setup_recbole.sh``), on the
atomic files ``export_splits.py`` wrote, so RecBole trains and ranks on exactly our parts:

* random split (``ml100k-rs``): general models, full ranking, the user's train (and, for test,
  valid) items excluded -- RecBole's full-sort protocol and ours;
* leave-one-out: Pop on the general files (``ml100k-loo``) and the sequential models on the
  pre-augmented files (``ml100k-loo-seq``). RecBole's full-sort evaluation of a *sequential*
  model excludes nothing but the padding item; that is its own figure (``test``, marked
  ``unmasked``), and the masked figure (``test_masked``: the user's train + valid items
  excluded, as our leave-one-out protocol does) is computed with RecBole's collector and metric
  code on the same scores. For Pop on leave-one-out it is the other way round.

Early stopping watches NDCG@10 on the validation part (``stopping_step``, default RecBole's 10),
the test part is evaluated once with the best validation checkpoint. Epoch caps keep the run
bounded on a shared CPU (``--max-epochs`` for general models, ``--seq-epochs`` for sequential
ones, ``--epochs MODEL=N`` per model); the JSON says which runs were stopped by a cap.

For the evaluator-agreement check and the Pop puzzle it also

* dumps full score matrices (rows: our user ids, columns: our item ids; RecBole's internal ids
  are mapped back through ``dataset.field2id_token``) for ``--dump`` runs, and
* for Pop, records how its item counts were formed and what RecBole's evaluator gives with the
  true training counts (``diagnostics``): RecBole's ``Pop.calculate_loss`` does
  ``item_cnt[item] = item_cnt[item] + 1`` per batch, so an item counts at most once per batch,
  and its point-wise batches include the sampled *negative* items.

    benchmarks/peers/.venv-recbole/bin/python benchmarks/peers/recbole_run.py \\
        --data /tmp/peer-data --work /tmp/peer-work --out /tmp/peer-work/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

RS_MODELS = ("Pop", "ItemKNN", "BPR", "LightGCN", "MultiVAE", "EASE")
LOO_MODELS = ("Pop", "GRU4Rec", "SASRec")
SEQUENTIAL = {"GRU4Rec", "SASRec"}
#: default epoch caps of the sequential models: RecBole's 300 would take hours on one CPU
#: thread (measured here: GRU4Rec ~70 s, SASRec ~150-250 s per epoch, machine shared)
SEQ_EPOCHS = {"GRU4Rec": 10, "SASRec": 5}
#: (protocol, model) pairs whose score matrices are written for our evaluator
DEFAULT_DUMPS = ("rs:Pop", "rs:EASE", "loo:Pop", "loo:GRU4Rec", "loo:SASRec")
METRICS = ["Recall", "NDCG", "MRR", "Hit", "Precision"]
TOPK = [10, 20]
PROTOCOLS = {"rs": "random-split", "loo": "leave-one-out"}
#: glibc malloc settings for this process: keep freed blocks instead of returning them to the
#: kernel, so the large per-batch activations are not page-faulted in again every batch.
#: Measured on SASRec here: CPU time per batch 4.8 s -> 3.3 s, system time 1.9 s -> 0.4 s.
#: Results are unchanged (only where memory comes from); glibc reads them at start-up only.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}


def bootstrap(threads: int) -> None:
    """Pin threads and undo two RecBole/torch defaults that would skew or break the run.

    * one intra-op thread: the machine is shared and timings must be comparable;
    * ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, but RecBole's
      checkpoints hold numpy arrays (EASE, ItemKNN) and its own config objects;
    * ``recbole/model/sequential_recommender/sine.py`` switches on autograd anomaly detection
      at import time, for every model, which roughly halves training speed.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(threads)
    original_load = torch.load

    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return original_load(*args, **kwargs)

    torch.load = load  # type: ignore[assignment]
    import recbole.model.general_recommender  # import every model module now
    import recbole.model.sequential_recommender  # noqa: F401  (this one imports sine.py)

    torch.autograd.set_detect_anomaly(False)


# --------------------------------------------------------------------------- RecBole setup


def base_config(data: Path, work: Path, protocol: str, model: str, epochs: int, stop: int) -> dict:
    """RecBole config for one run on our pre-split files (no RecBole split or filtering)."""
    sequential = model in SEQUENTIAL
    dataset = {"rs": "ml100k-rs", "loo": "ml100k-loo-seq" if sequential else "ml100k-loo"}[protocol]
    cfg: dict[str, Any] = {
        "dataset": dataset,
        "data_path": str(data),
        "benchmark_filename": ["train", "valid", "test"],
        "checkpoint_dir": str(work / "saved"),
        "use_gpu": False,
        "show_progress": False,
        "state": "WARNING",
        "seed": 2020,
        "reproducibility": True,
        "worker": 0,
        "epochs": epochs,
        "stopping_step": stop,
        "eval_step": 1,
        "metrics": METRICS,
        "topk": TOPK,
        "valid_metric": "NDCG@10",
        "metric_decimal_place": 6,
        # the parts come from the files; split is unused with benchmark files
        "eval_args": {
            "split": None,
            "group_by": "user",
            "order": "TO" if protocol == "loo" else "RO",
            "mode": "full",
        },
    }
    if sequential:
        cfg["load_col"] = {"inter": ["user_id", "item_id_list", "item_id"]}
        cfg["alias_of_item_id"] = ["item_id_list"]  # one id space for targets and histories
        cfg["train_neg_sample_args"] = None  # CE loss over all items (RecBole's default)
    else:
        cfg["load_col"] = {"inter": ["user_id", "item_id", "timestamp"]}
    return cfg


class Run:
    """One model on one protocol: config, data, model and trainer, as ``run_recbole`` builds."""

    def __init__(self, model: str, config_dict: dict) -> None:
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, get_trainer, init_logger, init_seed

        self.name = model
        # RecBole's Config also reads ``--key=value`` from sys.argv; ours are not for it
        argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            self.config = Config(model=model, config_dict=config_dict)
        finally:
            sys.argv = argv
        init_seed(self.config["seed"], self.config["reproducibility"])
        init_logger(self.config)
        self.dataset = create_dataset(self.config)
        self.train_data, self.valid_data, self.test_data = data_preparation(
            self.config, self.dataset
        )
        init_seed(self.config["seed"], self.config["reproducibility"])
        cls = get_model(model)
        self.model = cls(self.config, self.train_data._dataset).to(self.config["device"])
        self.trainer = get_trainer(self.config["MODEL_TYPE"], model)(self.config, self.model)
        self.n_items = self.dataset.item_num
        # progress lines: every epoch for the slow sequential models, else every 25
        self.progress_every = 1 if model in SEQUENTIAL else 25

    def fit(self) -> dict[str, Any]:
        """Train with early stopping on validation; time the training epochs separately."""
        trainer = self.trainer
        epoch_seconds: list[float] = []
        epoch_cpu: list[float] = []
        curve: list[float] = []
        best = {"epoch": -1}
        train_epoch = trainer._train_epoch

        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.process_time()
            out = train_epoch(*args, **kwargs)
            epoch_seconds.append(time.perf_counter() - start)
            epoch_cpu.append(time.process_time() - cpu)
            return out

        def on_valid(epoch: int, score: float) -> None:
            curve.append(float(score))
            if trainer.cur_step == 0:  # early_stopping() reset the counter: a new best
                best["epoch"] = epoch
            if epoch_seconds and (epoch + 1) % self.progress_every == 0:
                print(
                    f"[recbole]   epoch {epoch + 1}: valid ndcg@10 {score:.4f} "
                    f"(best {trainer.best_valid_score:.4f} at {best['epoch'] + 1}), "
                    f"{epoch_seconds[-1]:.1f} s/epoch ({epoch_cpu[-1]:.1f} s CPU)",
                    flush=True,
                )

        trainer._train_epoch = timed
        start, cpu = time.perf_counter(), time.process_time()
        trainer.fit(self.train_data, self.valid_data, saved=True, callback_fn=on_valid)
        fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
        trainer._train_epoch = train_epoch
        epochs = len(epoch_seconds)
        return {
            "epochs_run": epochs,
            "epoch_cap": trainer.epochs,
            "best_epoch": best["epoch"] + 1 if best["epoch"] >= 0 else None,
            "stopped_early": epochs < trainer.epochs,
            # wall-clock and CPU seconds: on a shared machine the CPU time (one thread) is
            # what an idle machine's wall clock would show
            "fit_seconds": round(fit_s, 2),
            "fit_cpu_seconds": round(fit_cpu, 2),
            "train_seconds": round(sum(epoch_seconds), 2),
            "seconds_per_epoch": round(sum(epoch_seconds) / epochs, 3) if epochs else None,
            "cpu_seconds_per_epoch": round(sum(epoch_cpu) / epochs, 3) if epochs else None,
            "valid_curve_ndcg@10": [round(v, 5) for v in curve],
            "best_valid": clean(trainer.best_valid_result),
        }

    def test(self) -> dict[str, float]:
        """RecBole's own figure: ``trainer.evaluate`` with the best validation checkpoint."""
        return clean(self.trainer.evaluate(self.test_data, load_best_model=True))

    def evaluate_variant(
        self, *, history: bool, seen: Any = None, tie_order: Any = None
    ) -> dict[str, float]:
        """RecBole's collector and metrics on the test part with a different exclusion rule.

        ``history=False`` ignores the seen items RecBole's general loader supplies (an
        unmasked figure); ``seen`` (a users x items scipy CSR in RecBole's ids) sets those
        cells to -inf (the masked figure for sequential models, whose loader supplies none).
        ``tie_order`` (RecBole item ids, first = preferred) breaks equal scores in that order
        instead of leaving them to ``torch.topk``, whose choice among ties is arbitrary.
        """
        import torch
        from recbole.evaluator import Collector, Evaluator

        trainer = self.trainer
        trainer.tot_item_num = self.n_items
        collector, evaluator = Collector(self.config), Evaluator(self.config)
        self.model.eval()
        with torch.no_grad():
            for interaction, history_index, pos_u, pos_i in self.test_data:
                batch = (interaction, history_index if history else None, pos_u, pos_i)
                interaction, scores, pos_u, pos_i = trainer._full_sort_batch_eval(batch)
                if seen is not None:
                    rows = seen[interaction[self.config["USER_ID_FIELD"]].numpy()].tocoo()
                    scores[
                        torch.from_numpy(rows.row).long(), torch.from_numpy(rows.col).long()
                    ] = -float("inf")
                if tie_order is not None:
                    scores = strict_scores(scores, tie_order)
                collector.eval_batch_collect(scores, interaction, pos_u, pos_i)
        return clean(evaluator.evaluate(collector.get_data_struct()))

    def our_item_order(self, item_ids: list[str]) -> Any:
        """RecBole item ids sorted by *our* item index (valuerec breaks ties towards it)."""
        import torch

        token_id = self.dataset.field2token_id[self.config["ITEM_ID_FIELD"]]
        return torch.tensor([token_id[t] for t in item_ids], dtype=torch.long)

    def test_scores(self) -> tuple[Any, list[str], list[str]]:
        """Raw scores of every test row over every real item, in *our* ids.

        Nothing is masked: our evaluator applies its own exclusion to these scores.
        """
        import numpy as np
        import torch

        uid_field = self.config["USER_ID_FIELD"]
        rows, users = [], []
        self.model.eval()
        with torch.no_grad():
            for batch in self.test_data:
                interaction = batch[0]
                scores = self.model.full_sort_predict(interaction).view(-1, self.n_items)
                rows.append(scores[:, 1:].cpu().numpy())  # column 0 is RecBole's padding item
                users.extend(interaction[uid_field].tolist())
        user_tokens = self.dataset.field2id_token[uid_field][np.asarray(users)]
        item_tokens = self.dataset.field2id_token[self.config["ITEM_ID_FIELD"]][1:]
        return np.concatenate(rows), [str(t) for t in user_tokens], [str(t) for t in item_tokens]

    def seen_matrix(self, general_dir: Path) -> Any:
        """The users' train + valid items of the general leave-one-out files, in RecBole ids."""
        import numpy as np
        import pandas as pd
        from scipy import sparse

        parts = [
            pd.read_csv(general_dir / f"{general_dir.name}.{p}.inter", sep="\t", dtype=str)
            for p in ("train", "valid")
        ]
        frame = pd.concat(parts, ignore_index=True)
        u_map = self.dataset.field2token_id[self.config["USER_ID_FIELD"]]
        i_map = self.dataset.field2token_id[self.config["ITEM_ID_FIELD"]]
        users = frame["user_id:token"].map(u_map)
        items = frame["item_id:token"].map(i_map)
        keep = users.notna() & items.notna()
        data = np.ones(int(keep.sum()), dtype=np.float32)
        shape = (self.dataset.user_num, self.n_items)
        coords = (users[keep].astype(int).to_numpy(), items[keep].astype(int).to_numpy())
        return sparse.csr_matrix((data, coords), shape=shape)


def strict_scores(scores: Any, order: Any) -> Any:
    """Scores with every tie broken by ``order`` (item ids, first preferred); -inf stays.

    Each row's items are ranked by (score descending, position in ``order``) and replaced by
    their reversed rank, so the ranking is the one valuerec's evaluator makes of the same
    scores; columns missing from ``order`` (RecBole's padding item) become -inf.
    """
    import torch

    cols = scores[:, order].to(torch.float64)
    rank = torch.sort(cols, dim=1, descending=True, stable=True).indices
    width = cols.shape[1]
    strict = torch.empty_like(cols)
    values = torch.arange(width, 0, -1, dtype=torch.float64).expand_as(cols).contiguous()
    strict.scatter_(1, rank, values)
    strict[torch.isneginf(cols)] = -float("inf")
    out = torch.full(scores.shape, -float("inf"), dtype=torch.float64)
    out[:, order] = strict
    return out


def clean(result: Any) -> dict[str, float]:
    """RecBole's OrderedDict of numpy/torch numbers as a plain, JSON-safe dict."""
    return {str(k): float(v) for k, v in (result or {}).items()}


# ----------------------------------------------------------------------------- Pop puzzle


def record_batches(run: Run) -> list[tuple[Any, Any]]:
    """Keep a copy of each training batch's item ids and labels as ``Pop`` counts them."""
    model = run.model
    label_field = run.config["LABEL_FIELD"]
    batches: list[tuple[Any, Any]] = []
    calculate_loss: Callable[[Any], Any] = model.calculate_loss

    def recording(interaction: Any) -> Any:
        labels = interaction.interaction.get(label_field)  # None: pair-wise batches
        batches.append((interaction[model.ITEM_ID].clone(), labels))
        return calculate_loss(interaction)

    model.calculate_loss = recording  # type: ignore[method-assign]
    return batches


def pop_diagnostics(run: Run, batches: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Decompose RecBole Pop's counts and score each variant with RecBole's own evaluator.

    Variants: RecBole's counts as trained; the true count of train interactions; all batch
    rows counted (positives and sampled negatives, no per-batch de-duplication); positives
    only but once per batch. The true count is what a popularity baseline means (and what
    valuerec's PopularityRecommender uses).
    """
    import numpy as np
    import torch

    model = run.model
    n = run.n_items
    trained = model.item_cnt[:, 0].clone()
    pos_all, rows_all = np.zeros(n, np.int64), np.zeros(n, np.int64)
    pos_once, rows_once = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for items, labels in batches:
        it = items.numpy()
        pos = it if labels is None else it[labels.numpy() > 0]
        pos_all += np.bincount(pos, minlength=n)
        rows_all += np.bincount(it, minlength=n)
        pos_once += np.bincount(np.unique(pos), minlength=n)
        rows_once += np.bincount(np.unique(it), minlength=n)
    train_items = run.train_data._dataset.inter_feat[run.config["ITEM_ID_FIELD"]].numpy()
    true_counts = np.bincount(train_items, minlength=n)
    variants = {
        "recbole_as_trained": trained.numpy(),
        "true_train_counts": true_counts,
        "all_rows_incl_negatives": rows_all,
        "positives_once_per_batch": pos_once,
    }
    results: dict[str, Any] = {}
    for name, counts in variants.items():
        cnt = torch.as_tensor(np.asarray(counts), dtype=torch.long).view(-1, 1)
        model.item_cnt = cnt
        model.max_cnt = torch.max(cnt, dim=0)[0]
        test = clean(run.trainer.evaluate(run.test_data, load_best_model=False))
        top = np.argsort(-np.asarray(counts)[1:], kind="stable")[:10] + 1
        results[name] = {
            "ndcg@10": test.get("ndcg@10"),
            "recall@10": test.get("recall@10"),
            "max_count": int(np.max(counts)),
            "items_at_max": int(np.sum(np.asarray(counts) == np.max(counts))),
            "top10_true_counts": [int(true_counts[i]) for i in top],
        }
    model.item_cnt = trained.view(-1, 1)
    model.max_cnt = torch.max(model.item_cnt, dim=0)[0]
    spearman = float(
        np.corrcoef(
            np.argsort(np.argsort(trained.numpy()[1:])), np.argsort(np.argsort(true_counts[1:]))
        )[0, 1]
    )
    return {
        "batches": len(batches),
        "rows_per_batch": int(batches[0][0].numel()) if batches else 0,
        "recbole_counts_equal_rows_once_per_batch": bool(
            np.array_equal(trained.numpy(), rows_once)
        ),
        "rank_correlation_recbole_vs_true_counts": round(spearman, 4),
        "variants": results,
    }


# --------------------------------------------------------------------------------- driver


def dump(run: Run, folder: Path, tag: str) -> dict[str, Any]:
    """Write ``<tag>.scores.npy`` and ``<tag>.ids.json`` (our user and item ids)."""
    import numpy as np

    scores, users, items = run.test_scores()
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{tag}.scores.npy", scores)
    (folder / f"{tag}.ids.json").write_text(json.dumps({"users": users, "items": items}))
    return {"scores": str(folder / f"{tag}.scores.npy"), "ids": str(folder / f"{tag}.ids.json")}


def run_one(protocol: str, model: str, args: argparse.Namespace, epochs: int) -> dict[str, Any]:
    """Train, test and (when asked) diagnose and dump one model on one protocol."""
    cfg = base_config(args.data, args.work, protocol, model, epochs, args.stopping_step)
    cfg.update(args.overrides.get(model, {}))
    start = time.perf_counter()
    run = Run(model, cfg)
    build_s = time.perf_counter() - start
    batches = record_batches(run) if model == "Pop" else []
    out: dict[str, Any] = {
        "protocol": PROTOCOLS[protocol],
        "dataset": cfg["dataset"],
        "model": model,
        "build_seconds": round(build_s, 2),
        "users_items": [run.dataset.user_num - 1, run.n_items - 1],
        "params": {k: run.config[k] for k in PARAM_KEYS if run.config[k] is not None},
    }
    out.update(run.fit())
    out["test"] = run.test()
    sequential = model in SEQUENTIAL
    seen = None
    if protocol == "loo" and sequential:
        out["test_is"] = "unmasked (RecBole's full sort masks nothing for sequential models)"
        seen = run.seen_matrix(args.data / "ml100k-loo")
        out["test_masked"] = run.evaluate_variant(history=False, seen=seen)
    elif protocol == "loo":
        out["test_is"] = "masked (train + valid items excluded)"
        out["test_unmasked"] = run.evaluate_variant(history=False)
    else:
        out["test_is"] = "masked (train + valid items excluded)"
    if f"{protocol}:{model}" in args.dump:
        out["dump"] = dump(run, args.work / "dumps", f"{protocol}-{model}")
        # the same figures with ties broken as valuerec breaks them, for the agreement check
        order = run.our_item_order(args.item_ids)
        if protocol == "loo" and sequential:
            masked = run.evaluate_variant(history=False, seen=seen, tie_order=order)
            unmasked = run.evaluate_variant(history=False, tie_order=order)
        else:
            masked = run.evaluate_variant(history=True, tie_order=order)
            unmasked = run.evaluate_variant(history=False, tie_order=order)
        out["tie_broken"] = {"masked": masked, "unmasked": unmasked}
    if model == "Pop":
        out["diagnostics"] = pop_diagnostics(run, batches)
    return out


PARAM_KEYS = (
    "embedding_size",
    "hidden_size",
    "n_layers",
    "num_layers",
    "learning_rate",
    "train_batch_size",
    "train_neg_sample_args",
    "reg_weight",
    "k",
    "shrink",
    "MAX_ITEM_LIST_LENGTH",
    "loss_type",
    "latent_dimension",
    "mlp_hidden_size",
)


def parse_overrides(values: list[str]) -> dict[str, dict[str, Any]]:
    """``MODEL.key=value`` pairs (value parsed as JSON when it can be) per model."""
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        target, _, raw = item.partition("=")
        model, _, key = target.partition(".")
        if not key or not raw:
            raise SystemExit(f"--set expects MODEL.key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(model, {})[key] = value
    return out


def ensure_malloc_env(argv: list[str]) -> None:
    """Re-execute this script with :data:`MALLOC_ENV` unless it is already in effect."""
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()) or "--no-malloc-env" in argv:
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, __file__, *argv], {**os.environ, **MALLOC_ENV})


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ensure_malloc_env(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="export_splits.py --out")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (logs, dumps)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    parser.add_argument("--rs-models", default=",".join(RS_MODELS))
    parser.add_argument("--loo-models", default=",".join(LOO_MODELS))
    parser.add_argument("--max-epochs", type=int, default=300, help="cap for general models")
    parser.add_argument(
        "--seq-epochs", type=int, default=0, help=f"cap for sequential models (0: {SEQ_EPOCHS})"
    )
    parser.add_argument("--epochs", action="append", default=[], help="MODEL=N cap")
    parser.add_argument("--stopping-step", type=int, default=10)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="MODEL.key=val")
    parser.add_argument("--dump", default=",".join(DEFAULT_DUMPS), help="protocol:Model list")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-malloc-env", action="store_true", help="keep glibc's defaults")
    args = parser.parse_args(argv)
    args.data, args.work = args.data.resolve(), args.work.resolve()
    args.dump = {d for d in args.dump.split(",") if d}
    args.overrides = parse_overrides(args.sets)
    args.item_ids = json.loads((args.data / "manifest.json").read_text())["item_ids"]
    caps = {k: int(v) for k, _, v in (e.partition("=") for e in args.epochs)}

    bootstrap(args.threads)
    import recbole
    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)  # RecBole writes log/ and log_tensorboard/ into the working directory
    plan = [("rs", m) for m in args.rs_models.split(",") if m] + [
        ("loo", m) for m in args.loo_models.split(",") if m
    ]
    results: dict[str, Any] = {
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "malloc_env": {k: os.environ.get(k) for k in MALLOC_ENV},
        "runs": [],
    }
    for protocol, model in plan:
        if model in SEQUENTIAL:
            epochs = caps.get(model, args.seq_epochs or SEQ_EPOCHS[model])
        else:
            epochs = caps.get(model, args.max_epochs)
        print(f"[recbole] {PROTOCOLS[protocol]} {model} (epoch cap {epochs}) ...", flush=True)
        try:
            entry = run_one(protocol, model, args, epochs)
        except Exception as exc:  # one broken model must not lose the others' figures
            traceback.print_exc()
            entry = {"protocol": PROTOCOLS[protocol], "model": model, "error": repr(exc)}
        else:
            print(
                f"[recbole]   ndcg@10 {entry['test'].get('ndcg@10', float('nan')):.4f}  "
                f"epochs {entry['epochs_run']}  fit {entry['fit_seconds']:.1f}s "
                f"({entry['fit_cpu_seconds']:.1f}s CPU), {entry['seconds_per_epoch']} s/epoch "
                f"({entry['cpu_seconds_per_epoch']} s CPU)",
                flush=True,
            )
        results["runs"].append(entry)
        args.out.write_text(json.dumps(results, indent=2, default=str))  # keep partial results
    print(f"[recbole] wrote {args.out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
