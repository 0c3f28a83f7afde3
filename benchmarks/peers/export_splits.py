"""Write valuerec's exact MovieLens-100K splits as RecBole 1.2.1 pre-split atomic files.

A peer's figures only stand beside ours if the peer ranks for the *same* users against the
*same* targets with the *same* seen items masked. RecBole's own ``RS`` / ``LS`` splitters
shuffle with their own seed and break timestamp ties their own way, so instead of asking
RecBole to split, we hand it our parts through its benchmark-file mechanism
(``benchmark_filename: [train, valid, test]``): RecBole then reads
``<dataset>.train.inter``, ``<dataset>.valid.inter`` and ``<dataset>.test.inter`` as they are,
skips all of its filtering, and uses the parts verbatim.

Three RecBole datasets are written under ``--out`` (one folder each, as RecBole expects):

* ``ml100k-rs``  -- :func:`random_split` (seed 0, per-user 80/10/10): one row per interaction,
  ``user_id:token  item_id:token  timestamp:float`` (float epoch seconds).
* ``ml100k-loo`` -- :func:`leave_one_out` in the same general format (for Pop on
  leave-one-out, and for the seen items the sequential evaluation masks).
* ``ml100k-loo-seq`` -- the same leave-one-out split as RecBole's *sequential* benchmark
  format, which it does not augment itself: one row per prediction, with the user's previous
  items (``item_id_list:token_seq``, oldest first, at most ``--max-len``) and the target
  ``item_id``. Train rows are every prefix of the user's train sequence (RecBole's own
  augmentation); the valid row has the train sequence as history, the test row train + valid.

Tokens are our raw ids (``Interactions.user_ids`` / ``item_ids``), so RecBole's internal
remapping can be undone with ``dataset.field2id_token``. ``manifest.json`` records the sizes.

Runs in valuerec's own venv::

    .venv/bin/python benchmarks/peers/export_splits.py --out /tmp/peer-data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from valuerec.data.store import Store
from valuerec.evaluate.ranking import Interactions, Split, leave_one_out, random_split

DEFAULT_DB = Path("/tmp/bench-data/movielens-100k.duckdb")
PARTS = ("train", "valid", "test")
#: RecBole's default MAX_ITEM_LIST_LENGTH: the history a sequential model sees per prediction
MAX_LEN = 50


def load_interactions(db: Path) -> Interactions:
    """MovieLens-100K interactions from the store, building the store first when it is gone."""
    if not db.exists():
        from valuerec.data import datasets

        db.parent.mkdir(parents=True, exist_ok=True)
        with Store(db) as store:
            datasets.load("movielens-100k", store)
    store = Store(db, read_only=True)
    try:
        return Interactions.from_store(store)
    finally:
        store.close()


def _seconds(ts: pd.Series) -> np.ndarray:
    """Timestamps as float epoch seconds (RecBole's ``float`` field type)."""
    if pd.api.types.is_datetime64_any_dtype(ts):
        return ts.to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
    return ts.to_numpy(dtype=float)


def _part_frame(part: Interactions) -> pd.DataFrame:
    """One part as RecBole's general atomic columns, with our raw ids as tokens."""
    f = part.frame
    return pd.DataFrame(
        {
            "user_id:token": part.user_ids.to_numpy()[f["user"].to_numpy()],
            "item_id:token": part.item_ids.to_numpy()[f["item"].to_numpy()],
            "timestamp:float": _seconds(f["timestamp"]),
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> None:
    # RecBole reads atomic files with pandas (sep="\t", header with name:type)
    frame.to_csv(path, sep="\t", index=False, float_format="%.1f")


def export_general(split: Split, name: str, out: Path) -> dict[str, int]:
    """Write ``split`` as RecBole's general pre-split files ``<name>.<part>.inter``."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for part_name in PARTS:
        frame = _part_frame(getattr(split, part_name))
        _write(frame, folder / f"{name}.{part_name}.inter")
        sizes[part_name] = len(frame)
    return sizes


def _sequences(split: Split) -> dict[int, list[int]]:
    """Each user's train items in time order, then their valid item, then their test item.

    The split's frames keep the row order of :meth:`Interactions.from_store` (user, time,
    item id), which is exactly the order :func:`leave_one_out` used to pick the last items;
    a stable sort by (user, time) keeps it, so RecBole gets the same order of ties.
    """
    frames = []
    for rank, part_name in enumerate(PARTS):
        f = getattr(split, part_name).frame[["user", "item", "timestamp"]].copy()
        f["part"] = rank
        f["t"] = _seconds(f["timestamp"])
        frames.append(f)
    allf = pd.concat(frames, ignore_index=True)
    allf = allf.sort_values(["user", "part", "t"], kind="mergesort")
    return {int(u): g["item"].tolist() for u, g in allf.groupby("user", sort=True)}


def export_sequential(split: Split, name: str, out: Path, max_len: int = MAX_LEN) -> dict:
    """Write leave-one-out as RecBole's sequential benchmark files (pre-augmented rows).

    Users without a valid and a test item (fewer than 3 items) contribute train rows only, as
    they are not evaluated by us either.
    """
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    items = split.train.item_ids.to_numpy()
    users = split.train.user_ids.to_numpy()
    has_valid = np.diff(split.valid.matrix.indptr) > 0
    has_test = np.diff(split.test.matrix.indptr) > 0
    rows: dict[str, list[tuple[str, str, str]]] = {p: [] for p in PARTS}
    for u, seq in _sequences(split).items():
        n_train = len(seq) - int(has_valid[u]) - int(has_test[u])
        tokens = [str(items[i]) for i in seq]
        for pos in range(1, len(seq)):
            part = "train" if pos < n_train else ("valid" if pos == n_train else "test")
            history = " ".join(tokens[max(0, pos - max_len) : pos])
            rows[part].append((str(users[u]), history, tokens[pos]))
    sizes = {}
    for part_name in PARTS:
        frame = pd.DataFrame(
            rows[part_name],
            columns=["user_id:token", "item_id_list:token_seq", "item_id:token"],
        )
        _write(frame, folder / f"{name}.{part_name}.inter")
        sizes[part_name] = len(frame)
    return sizes


def export_all(inter: Interactions, out: Path, seed: int = 0, max_len: int = MAX_LEN) -> dict:
    """Write the three RecBole datasets and ``manifest.json``; return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    rs = random_split(inter, seed=seed)
    loo = leave_one_out(inter)
    manifest = {
        "source": "valuerec MovieLens-100K store",
        "users": inter.n_users,
        "items": inter.n_items,
        "interactions": len(inter),
        "random_split_seed": seed,
        # our item order: valuerec breaks score ties towards the lower index
        "item_ids": [str(i) for i in inter.item_ids],
        "max_item_list_length": max_len,
        "datasets": {
            "ml100k-rs": export_general(rs, "ml100k-rs", out),
            "ml100k-loo": export_general(loo, "ml100k-loo", out),
            "ml100k-loo-seq": export_sequential(loo, "ml100k-loo-seq", out, max_len),
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="MovieLens-100K store")
    parser.add_argument("--out", type=Path, required=True, help="folder for RecBole datasets")
    parser.add_argument("--seed", type=int, default=0, help="random_split seed")
    parser.add_argument("--max-len", type=int, default=MAX_LEN, help="sequence history cap")
    args = parser.parse_args(argv)
    manifest = export_all(load_interactions(args.db), args.out, args.seed, args.max_len)
    print(json.dumps({k: v for k, v in manifest.items() if k != "item_ids"}, indent=2))


if __name__ == "__main__":
    main()
