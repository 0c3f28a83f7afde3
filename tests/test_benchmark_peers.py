"""benchmarks/recs_ml100k.py reads the RecBole figures the peer scripts write (``--peer``)."""

from __future__ import annotations

import json

from benchmark_script import load


def _bench():
    return load("recs_ml100k")


def test_peer_figures_read_both_files_the_peer_scripts_write(tmp_path):
    runs = {
        "recbole": "1.2.1",
        "runs": [
            {"protocol": "random-split", "model": "Pop", "test": {"ndcg@10": 0.061}},
            {"protocol": "random-split", "model": "MultiVAE", "test": {"ndcg@10": 0.29}},
            {"protocol": "random-split", "model": "BPR", "error": "RuntimeError()"},
            {"protocol": "leave-one-out", "model": "SASRec", "test": {"ndcg@10": 0.09}},
        ],
    }
    summary = {"work": "/tmp/peer", "splits": {}, "recbole": runs, "agreement": []}
    expected = {
        "random-split": {"popularity": 0.061, "multvae": 0.29},  # the failed BPR run is skipped
        "leave-one-out": {"sasrec": 0.09},
    }
    bench = _bench()
    for name, record in (("run.json", runs), ("summary.json", summary)):
        path = tmp_path / name
        path.write_text(json.dumps(record))
        assert bench.peer_figures(path) == expected
    assert bench.peer_figures(None) == bench.RECBOLE_QUOTED
