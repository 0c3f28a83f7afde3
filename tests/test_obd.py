"""The Open Bandit Dataset loader: parsing the wheel's layout, the BTS policy, fetching."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from valuerec.data import datasets, obd
from valuerec.evaluate import offpolicy as ope

network = pytest.mark.network

HEADER = (
    ",timestamp,item_id,position,click,propensity_score,"
    "user_feature_0,user_feature_1,user_feature_2,user_feature_3,"
    "user-item_affinity_0,user-item_affinity_1,user-item_affinity_2"
)
ROWS = [  # out of time order on purpose; the affinity columns as in the wheel
    "0,2019-11-24 00:00:53.965051+00:00,2,3,0,0.3333333333333333,aa,u1,c1,d1,0.0,1.0,0.0",
    "1,2019-11-24 00:00:34.762830+00:00,0,1,1,0.3333333333333333,bb,u1,c2,d1,0.0,0.0,0.0",
    "2,2019-11-24 00:01:10.000000+00:00,1,2,0,0.3333333333333333,aa,u2,c1,d2,2.0,0.0,0.0",
]
ITEMS = """,item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3
0,0,-0.67,h1,h2,h3
1,1,-0.72,h4,h2,h3
2,2,0.74,h4,h5,h6
"""
PRIOR = """all:
  alpha:
    - 47.0
    - 8.0
    - 62.0
  beta:
    - 12198.0
    - 3566.0
    - 15993.0
"""


def write_log(root: Path, rows: list[str], policy: str = "random", campaign: str = "men") -> None:
    base = root / "dataset" / "obd" / policy / campaign
    base.mkdir(parents=True, exist_ok=True)
    (base / f"{campaign}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    (base / "item_context.csv").write_text(ITEMS)


def test_parses_the_wheel_layout_into_a_tidy_frame(tmp_path):
    write_log(tmp_path, ROWS)
    log = obd.read(tmp_path, "random", "men")
    f = log.frame
    assert list(f.columns[:6]) == list(obd.LOG_COLUMNS)
    assert f["row"].tolist() == [1, 0, 2]  # time order
    assert f["timestamp"].is_monotonic_increasing and str(f["timestamp"].dt.tz) == "UTC"
    assert f["item_id"].tolist() == [0, 2, 1]
    assert f["position"].tolist() == [0, 2, 1]  # 0-based
    assert f["click"].tolist() == [1, 0, 0]
    assert f["propensity"].to_numpy() == pytest.approx(1 / 3)
    assert log.context_columns == [
        *(f"user_feature_{i}" for i in range(4)),
        *(f"user-item_affinity_{i}" for i in range(3)),
    ]
    assert f.loc[2, "user-item_affinity_0"] == 2.0
    assert log.n_items == 3 and log.items["item_id"].tolist() == [0, 1, 2]
    # user features one-hot with the first level of each dropped, as obp's pre_process
    # (rows in time order: bb/u1/c2/d1, aa/u1/c1/d1, aa/u2/c1/d2; columns bb, u2, c2, d2)
    assert log.user_context().tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("3,2019-11-24 00:02:00+00:00,3,1,0,0.3,aa,u1,c1,d1,0,0,0", r"item_id must be an item id"),
        ("3,2019-11-24 00:02:00+00:00,1,4,0,0.3,aa,u1,c1,d1,0,0,0", r"position must be 1, 2 or 3"),
        ("3,2019-11-24 00:02:00+00:00,1,1,2,0.3,aa,u1,c1,d1,0,0,0", r"click must be 0 or 1"),
        ("3,2019-11-24 00:02:00+00:00,1,1,0,0.0,aa,u1,c1,d1,0,0,0", r"propensity_score must be in"),
    ],
)
def test_bad_rows_are_clear_errors(tmp_path, row, message):
    write_log(tmp_path, [*ROWS, row])
    with pytest.raises(datasets.DatasetError, match=message):
        obd.read(tmp_path, "random", "men")


def test_missing_files_columns_and_names_are_clear_errors(tmp_path):
    with pytest.raises(datasets.DatasetError, match="OBD file missing"):
        obd.read(tmp_path, "bts", "all")
    with pytest.raises(ValueError, match="policy must be one of"):
        obd.read(tmp_path, "greedy", "all")
    write_log(tmp_path, ROWS, campaign="all")
    path = tmp_path / "dataset" / "obd" / "random" / "all" / "all.csv"
    path.write_text(path.read_text().replace("propensity_score", "pscore"))
    with pytest.raises(datasets.DatasetError, match=r"lacks the OBD column.*propensity_score"):
        obd.read(tmp_path, "random", "all")


def test_bts_prior_and_thompson_distribution(tmp_path):
    conf = tmp_path / "policy" / "conf"
    conf.mkdir(parents=True)
    (conf / "prior_bts.yaml").write_text(PRIOR)
    alpha, beta = obd.bts_prior("all", root=tmp_path)
    assert alpha.tolist() == [47.0, 8.0, 62.0] and beta.tolist() == [12198.0, 3566.0, 15993.0]
    with pytest.raises(datasets.DatasetError, match="campaign 'men'"):
        obd.bts_prior("men", root=tmp_path)
    dist = obd.thompson_action_dist(alpha, beta, n_sim=20_000, seed=0)
    assert dist.shape == (3, 3) and dist.sum(axis=0) == pytest.approx(1.0)
    assert dist.sum(axis=1) == pytest.approx(1.0)  # 3 items, 3 slots: every item shown once
    # P(item 0 ranks first) = P(its draw is the largest of the three), by direct simulation
    draws = np.random.default_rng(1).beta(alpha, beta, size=(200_000, 3))
    assert dist[:, 0] == pytest.approx(np.bincount(draws.argmax(1), minlength=3) / 2e5, abs=0.01)
    # a prior far above the rest puts that item on top every time
    sure = obd.thompson_action_dist(np.array([1000.0, 1, 1, 1]), np.array([1.0, 1000, 1000, 1000]))
    assert sure[0, 0] == 1.0 and sure[0, 1:].sum() == 0.0


def test_logged_distribution_is_the_horvitz_thompson_average(tmp_path):
    def rows(slots: list[tuple[int, int, float]]) -> list[str]:
        return [
            f"{i},2019-11-24 00:{i // 60:02d}:{i % 60:02d}+00:00,{item},{pos},0,{p},a,u,c,d,0,0,0"
            for i, (item, pos, p) in enumerate(slots)
        ]

    # top slot: item 0 with probability 0.8 half the time and 0.2 the other half (mean 0.5),
    # shown 4 + 1 times out of 10; items 1, 2 share the rest. Slots 2, 3: item 2 for sure.
    top = [(0, 1, 0.8)] * 4 + [(1, 1, 0.1)] + [(0, 1, 0.2)] + [(1, 1, 0.4)] * 2 + [(2, 1, 0.4)] * 2
    write_log(tmp_path, rows([*top, (2, 2, 1.0), (2, 3, 1.0)]), policy="bts")
    dist = obd.logged_action_dist(obd.read(tmp_path, "bts", "men"))
    # harmonic means: item 0: 5 / (4/0.8 + 1/0.2) = 0.5; item 1: 3 / (10 + 5) = 0.2;
    # item 2: 2 / 5 = 0.4 -> normalised by 1.1
    assert dist[:, 0] == pytest.approx(np.array([0.5, 0.2, 0.4]) / 1.1)
    assert dist[:, 1:].tolist() == [[0, 0], [0, 0], [1, 1]]
    assert ope.action_probs(dist[None], [0, 2], [0, 2]) == pytest.approx([0.5 / 1.1, 1.0])
    write_log(tmp_path, rows(top), policy="bts")
    with pytest.raises(ValueError, match="no rows at position 1"):
        obd.logged_action_dist(obd.read(tmp_path, "bts", "men"))


def test_fetch_keeps_the_wheel_layout(monkeypatch, tmp_path):
    """The OBD file names repeat across folders: fetch must keep the paths (no network)."""
    spec = datasets.get("obd")

    def fake_pip(cmd, **kwargs):
        dest = Path(cmd[cmd.index("--dest") + 1])
        with zipfile.ZipFile(dest / "obp-0.4.1-py3-none-any.whl", "w") as zf:
            for member in spec.members:
                zf.writestr(member, f"content of {member}")
            zf.writestr("obp/__init__.py", "raise ImportError('never imported')")
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    for member in spec.members:  # what the fake wheel holds is what fetch checks against
        digest = hashlib.sha256(f"content of {member}".encode()).hexdigest()
        monkeypatch.setitem(datasets.SHA256, member, digest)
    folder = datasets.fetch("obd", cache=tmp_path)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert len(files) == 13 and "policy/conf/prior_bts.yaml" in files
    assert (folder / "dataset/obd/bts/women/item_context.csv").read_text() == (
        "content of obp/dataset/obd/bts/women/item_context.csv"
    )
    assert not (folder / "__init__.py").exists()
    with pytest.raises(datasets.DatasetError, match=r"valuerec\.data\.obd\.load"):
        datasets.frames("obd", cache=tmp_path)


@network
def test_real_sample_sizes_and_click_rates():
    for campaign, n_items in (("all", 80), ("men", 34), ("women", 46)):
        logs = {p: obd.load(p, campaign) for p in obd.POLICIES}
        for log in logs.values():
            assert len(log.frame) == 10_000 and log.n_items == n_items
            assert set(log.frame["position"]) == {0, 1, 2}
        # the uniform logger shows each item with probability 1 / n_items at every position
        assert logs["random"].frame["propensity"].to_numpy() == pytest.approx(1 / n_items)
        alpha, _ = obd.bts_prior(campaign)
        assert alpha.size == n_items
    assert obd.load("bts", "men").frame["click"].sum() == 69
