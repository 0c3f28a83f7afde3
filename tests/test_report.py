"""``valuerec report``: the HTML report on small synthetic stores, checked against the evaluators.

The report is parsed back (``html.parser``) and every figure in its tables is compared with
what :func:`evaluate_value` / :func:`evaluate_scores` return when run here independently on
the same data, through the exact value each numeric cell carries (``data-value``) and the
text it shows. Charts are decoded and parsed as SVG.
"""

from __future__ import annotations

import base64
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from valuerec.artifacts import ArtifactStore, default_root
from valuerec.cli import app
from valuerec.cli_value import holdout_customers, value_app
from valuerec.data import synth
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.evaluate.ranking import Interactions, evaluate_scores, leave_one_out, random_split
from valuerec.evaluate.value import evaluate_value, paired_bootstrap
from valuerec.recommend.registry import make_recommender
from valuerec.report import build_report
from valuerec.report import recs as report_recs
from valuerec.report import value as report_value
from valuerec.report.build import ReportOptions
from valuerec.report.document import fmt_number
from valuerec.report.policy import read_policy
from valuerec.report.recs import read_peer
from valuerec.value.base import value_data
from valuerec.value.segments import SEGMENTS

runner = CliRunner()
SVG = "{http://www.w3.org/2000/svg}"
VALUE_CHARTS = (
    "ltv-distribution", "gain-lift", "decile-calibration", "actual-vs-predicted", "churn-roc",
)  # fmt: skip
REC_CHARTS = ("popularity-bias",)
FITTED = ("naive", "bgnbd")


# ------------------------------------------------------------------------------- parsing


@dataclass
class Figure:
    attrs: dict[str, str]
    src: str = ""
    caption: str = ""


@dataclass
class Row:
    key: str | None
    cells: list[tuple[dict[str, str], str]] = field(default_factory=list)


@dataclass
class Page:
    """What the tests read from a report: sections, figures, tables and every URL."""

    sections: dict[str, dict[str, str]] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    tables: dict[str, list[Row]] = field(default_factory=dict)
    headers: dict[str, list[str]] = field(default_factory=dict)
    urls: list[tuple[str, str, str]] = field(default_factory=list)  # (tag, attribute, value)
    notes: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def cell(self, table: str, row: str, key: str) -> tuple[dict[str, str], str]:
        for r in self.tables[table]:
            if r.key == row:
                for attrs, text in r.cells:
                    if attrs.get("data-key") == key:
                        return attrs, text
        raise KeyError(f"{table}: no cell {row}/{key}")

    def value(self, table: str, row: str, key: str) -> float:
        attrs, _ = self.cell(table, row, key)
        return float(attrs["data-value"])


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._figure: Figure | None = None
        self._table: str | None = None
        self._row: Row | None = None
        self._cell: dict[str, str] | None = None
        self._buf: list[str] = []
        self._in: str | None = None  # figcaption / th / note

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attrs_list}
        for name in ("src", "href", "action", "poster", "data"):
            if name in attrs:
                self.page.urls.append((tag, name, attrs[name]))
        if tag == "section" and "data-kind" in attrs:
            self.page.sections[attrs["id"]] = attrs
        elif tag == "figure":
            self._figure = Figure(attrs)
            self.page.figures[attrs["id"]] = self._figure
        elif tag == "img" and self._figure is not None:
            self._figure.src = attrs.get("src", "")
        elif tag == "figcaption":
            self._in, self._buf = "figcaption", []
        elif tag == "table":
            self._table = attrs["id"]
            self.page.tables[self._table] = []
            self.page.headers[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = Row(attrs.get("data-key"))
        elif tag in ("td", "th") and self._table is not None:
            self._cell, self._buf, self._in = attrs, [], tag
        elif tag == "p" and attrs.get("class") == "note":
            self._in, self._buf = "note", []

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._buf).strip()
        if tag == "figcaption" and self._figure is not None:
            self._figure.caption, self._in = text, None
        elif tag == "figure":
            self._figure = None
        elif tag == "th" and self._table is not None:
            self.page.headers[self._table].append(text)
            self._in = None
        elif tag == "td" and self._row is not None and self._cell is not None:
            self._row.cells.append((self._cell, text))
            self._cell, self._in = None, None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row.cells:
                self.page.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "p" and self._in == "note":
            self.page.notes.append(text)
            self._in = None

    def handle_data(self, data: str) -> None:
        self.page.text.append(data)
        if self._in is not None:
            self._buf.append(data)


def parse(html: str) -> Page:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser.page


def svg_of(figure: Figure) -> ET.Element:
    prefix = "data:image/svg+xml;base64,"
    assert figure.src.startswith(prefix), figure.src[:40]
    data = base64.b64decode(figure.src[len(prefix) :], validate=True)
    assert len(data) > 2000, f"{figure.attrs['id']}: only {len(data)} bytes"
    root = ET.fromstring(data)
    assert root.tag == f"{SVG}svg"
    return root


def svg_text(root: ET.Element) -> str:
    return " ".join(" ".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def squash(s: str) -> str:
    return " ".join(s.split())


# ------------------------------------------------------------------------------ fixtures


def _ingest(db: Path, **frames: pd.DataFrame) -> None:
    with Store(db) as store:
        for kind, frame in frames.items():
            ingest(store, frame, kind)


@dataclass
class Built:
    db: Path
    html: str
    page: Page


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """Purchases, views and a catalogue, with saved value models: every section applies.

    BASELINES is narrowed to naive, so bgnbd counts as "ours" and gets the paired-bootstrap
    comparison (the real "ours" models take too long to fit in a unit test).
    """
    data = synth.generate(users=700, items=60, days=420, holdout_days=30, seed=5)
    db = tmp_path_factory.mktemp("report-shop") / "shop.duckdb"
    _ingest(db, items=data.items, users=data.users, events=data.events)
    first = pd.Timestamp(data.events["timestamp"].min()).normalize()
    res = runner.invoke(
        value_app,
        ["fit", "--db", str(db), "--models", ",".join(FITTED), "--holdout-days", "90",
         "--calibration-end", f"{first + pd.Timedelta(days=300):%Y-%m-%d}", "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_value, "BASELINES", ("naive",))
        html = build_report([db])
    yield Built(db, html, parse(html))


def _ratings(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    users, items = 120, 50
    pop = 1.0 / np.arange(1, items + 1)
    rows = []
    for u in range(users):
        n = int(rng.integers(4, 25))
        for j, i in enumerate(rng.choice(items, size=n, replace=False, p=pop / pop.sum())):
            rows.append((f"r{u}", f"m{i}", pd.Timestamp("2023-01-01") + pd.Timedelta(hours=u + j)))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    events["event_type"] = "rating"
    events["rating"] = 4.0
    catalogue = pd.DataFrame({"item_id": [f"m{i}" for i in range(items)]})
    catalogue["title"] = [f"Film <{i}> & co" for i in range(items)]  # markup must be escaped
    return events, catalogue


PEERS = {
    "runs": [
        {"protocol": "random-split", "model": "EASE", "test": {"ndcg@10": 0.321}},
        {"protocol": "leave-one-out", "model": "Pop", "test": {"ndcg@10": 0.0123}},
        {"protocol": "random-split", "model": "BPR", "error": "boom"},
    ]
}


@dataclass
class Two:
    """One report over two stores, written by the CLI (as the demo's two stores would be)."""

    purchases: Path  # CDNOW-like: purchases with an amount, no items, no saved models
    ratings: Path  # MovieLens-like: ratings of titled items, no purchases
    out: Path
    cli: Any
    page: Page
    html: str


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Two:
    folder = tmp_path_factory.mktemp("report-two")
    data = synth.generate(users=600, items=30, days=500, holdout_days=30, seed=3)
    purchases = data.events[data.events["event_type"] == "purchase"].drop(columns="item_id")
    _ingest(folder / "purchases.duckdb", events=purchases)
    events, catalogue = _ratings()
    _ingest(folder / "ratings.duckdb", items=catalogue, events=events)
    (folder / "peer.json").write_text(json.dumps(PEERS))
    out = folder / "sub" / "report.html"
    with Store(folder / "ratings.duckdb", read_only=True) as store:
        inter = Interactions.from_store(store)
    with pytest.MonkeyPatch.context() as mp:
        # peer figures sit beside the data they were measured on (MovieLens-100K): here the
        # ratings store stands for it
        mp.setattr(report_recs, "PEER_DATA_SHAPE", (inter.n_users, inter.n_items, len(inter)))
        args = ["report", "--db", str(folder / "purchases.duckdb"), "--db",
                str(folder / "ratings.duckdb"), "--out", str(out), "--peer",
                str(folder / "peer.json")]  # fmt: skip
        res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    html = out.read_text(encoding="utf-8")
    return Two(folder / "purchases.duckdb", folder / "ratings.duckdb", out, res, parse(html), html)


# --------------------------------------------------------------------------------- tests


def test_every_section_and_chart_is_there_with_title_labels_and_caption(shop: Built) -> None:
    page = shop.page
    kinds = {a["data-kind"]: a for a in page.sections.values()}
    for kind in ("data", "value", "recommendations", "examples"):
        assert kinds[kind]["class"] == "available", kind
    expected = {f"shop-{c}" for c in ("events-by-month", *VALUE_CHARTS, *REC_CHARTS)}
    assert set(page.figures) == expected
    for fid, fig in page.figures.items():
        for attr in ("data-title", "data-xlabel", "data-ylabel"):
            assert fig.attrs[attr].strip(), (fid, attr)
        assert "(" in fig.attrs["data-xlabel"] + fig.attrs["data-ylabel"], f"{fid}: units"
        assert len(fig.caption) > 40, fid
        drawn = squash(svg_text(svg_of(fig)))
        assert squash(fig.attrs["data-title"]) in drawn, fid
        assert fig.attrs["data-xlabel"] in drawn and fig.attrs["data-ylabel"] in drawn, fid
        assert len(list(svg_of(fig).iter(f"{SVG}path"))) > 5, f"{fid}: nothing drawn"
    for table in ("shop-counts", "shop-types", "shop-months", "shop-value-models",
                  "shop-value-deciles", "shop-value-segments", "shop-rec-random-split",
                  "shop-rec-leave-one-out", "shop-rec-beyond"):  # fmt: skip
        assert page.tables[table], table
    examples = [t for t in page.tables if re.fullmatch(r"shop-example-\d-recs", t)]
    assert len(examples) == 5
    for t in examples:
        assert all(text for r in page.tables[t] for _, text in r.cells[-1:]), "reasons missing"


def test_file_needs_no_network(shop: Built) -> None:
    assert shop.page.urls, "no src/href at all: the parser is broken"
    for tag, attr, url in shop.page.urls:
        assert url.startswith(("data:", "#")), (tag, attr, url[:60])
    lowered = shop.html.lower()
    assert "<script" not in lowered and "<link" not in lowered and "@import" not in lowered
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", lowered)


def _independent_value(db: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, Any]]:
    """Truth and held-out predictions of the saved models, computed here as `value fit` did."""
    arts = ArtifactStore(default_root(db))
    preds, reports = {}, {}
    with Store(db, read_only=True) as store:
        for name in FITTED:
            model, meta = arts.load(f"value-{name}")
            data = value_data(store, meta["calibration_end"], meta["holdout_days"])
            held = holdout_customers(data.users, meta["test_fraction"], meta["split_salt"])
            truth = data.labels.loc[data.users[held]].rename_axis("user_id").reset_index()
            preds[name] = model.predict(
                list(truth["user_id"]), meta["holdout_days"], store=store,
                as_of=meta["calibration_end"],
            )  # fmt: skip
            reports[name] = evaluate_value(truth, preds[name])
    return truth, preds, reports


def test_value_figures_equal_evaluate_value_on_the_same_split(shop: Built) -> None:
    truth, preds, reports = _independent_value(shop.db)
    page, table = shop.page, "shop-value-models"
    assert [r.key for r in page.tables[table]] == list(FITTED)
    checked = 0
    for name, report in reports.items():
        for key, value in report.metrics.items():
            try:
                attrs, shown = page.cell(table, name, key)
            except KeyError:
                continue  # not every metric is a column
            if not math.isfinite(value):
                assert shown == "-" and "data-value" not in attrs
                continue
            assert float(attrs["data-value"]) == pytest.approx(value, rel=1e-12, abs=1e-12)
            checked += 1
        assert page.value(table, name, "customers") == len(truth)
    assert checked >= 2 * 10
    gini = reports["naive"].metrics["normalized_gini"]
    assert page.cell(table, "naive", "normalized_gini")[1] == fmt_number(gini)
    # the paired bootstrap against the best baseline, with the same seed and resamples
    boot = paired_bootstrap(
        truth["holdout_spend"], preds["bgnbd"]["pred_spend"], preds["naive"]["pred_spend"],
        n_boot=report_value.N_BOOT, seed=0,
    )  # fmt: skip
    attrs, shown = page.cell(table, "bgnbd", "gini_vs_best_baseline")
    assert float(attrs["data-value"]) == pytest.approx(boot["diff"], abs=1e-12)
    assert f"[{boot['low']:+.3f}, {boot['high']:+.3f}]" in shown
    # deciles of the featured model (no lightgbm here: the best held-out Gini)
    featured = max(reports, key=lambda n: reports[n].metrics["normalized_gini"])
    deciles = reports[featured].deciles
    assert len(page.tables["shop-value-deciles"]) == len(deciles)
    for row in deciles.itertuples():
        for key in ("predicted_sum", "actual_sum", "customers"):
            got = page.value("shop-value-deciles", str(row.decile), key)
            assert got == pytest.approx(getattr(row, key), rel=1e-12)
    # segments: every current customer exactly once
    segs = page.tables["shop-value-segments"]
    assert [r.key for r in segs] == list(SEGMENTS)
    total = sum(page.value("shop-value-segments", s, "users") for s in SEGMENTS)
    assert total == page.value("shop-counts", "customers with a purchase", "purchasers")


def test_recommendation_figures_equal_evaluate_scores(shop: Built) -> None:
    with Store(shop.db, read_only=True) as store:
        inter = Interactions.from_store(store)
        items = store.items()
    page = shop.page
    for protocol, split in (("random-split", random_split(inter, seed=0)),
                            ("leave-one-out", leave_one_out(inter))):  # fmt: skip
        for name in ("popularity", "ease"):
            model = make_recommender(name, items).fit_split(split)
            m = evaluate_scores(
                model.split_scorer(split, "test"),
                split,
                ks=(10,),
                unmasked=protocol == "leave-one-out",
            ).metrics
            for key in ("ndcg@10", "recall@10", "hit@10"):
                got = page.value(f"shop-rec-{protocol}", name, key)
                assert got == pytest.approx(m[key], rel=1e-9), (protocol, name, key)
            for key in ("coverage@10", "novelty@10", "exposure_gini@10"):
                got = page.value("shop-rec-beyond", f"{protocol}:{name}", key)
                assert got == pytest.approx(m[key], rel=1e-9), (protocol, name, key)


def _kinds(page: Page, store: str) -> dict[str, str]:
    """Section kind -> "available" / "unavailable" for one store of a report."""
    return {
        a["data-kind"]: a["class"]
        for sid, a in page.sections.items()
        if sid.startswith(f"{store}-")
    }


def test_cli_writes_the_report_and_prints_its_path(two: Two, tmp_path: Path) -> None:
    assert two.cli.stdout.strip() == str(two.out.resolve())
    assert two.html.startswith("<!DOCTYPE html>") and two.html.rstrip().endswith("</html>")
    assert [p.name for p in two.out.parent.iterdir()] == ["report.html"]  # no temporary left
    missing = runner.invoke(app, ["report", "--db", str(tmp_path / "nope.duckdb")])
    assert missing.exit_code == 2 and "no store at" in missing.output
    assert not (tmp_path / "report.html").exists()
    bad = runner.invoke(app, ["report", "--db", str(two.ratings), "--rec-models", "nope"])
    assert bad.exit_code == 2 and "unknown recommender" in bad.output
    bad = runner.invoke(app, ["report", "--db", str(two.ratings), "--value-model", "bogus"])
    assert bad.exit_code == 2 and "unknown value model 'bogus'" in bad.output


def test_store_without_items_or_models_gets_value_from_baselines_fitted_now(two: Two) -> None:
    page = two.page
    assert _kinds(page, "purchases") == {
        "data": "available", "value": "available", "recommendations": "unavailable",
    }  # fmt: skip
    assert any("no events with an item" in n for n in page.notes)
    assert any("fitted now" in n for n in page.notes)
    rows = [r.key for r in page.tables["purchases-value-models"]]
    assert rows == list(report_value.VALUE_FALLBACK_MODELS)
    ids = {f.removeprefix("purchases-") for f in page.figures if f.startswith("purchases-")}
    assert ids == {"events-by-month", *VALUE_CHARTS}
    for fid in ids:
        svg_of(page.figures[f"purchases-{fid}"])
    # the split is the one `value fit` makes by default, on the same hash-held-out customers
    with Store(two.purchases, read_only=True) as store:
        split = report_value.default_split(store)
        data = value_data(store, split.calibration_end, split.holdout_days)
    held = holdout_customers(data.users, 0.2, "valuerec-value-test")
    assert page.value("purchases-value-models", "naive", "customers") == int(held.sum())


def test_ratings_store_gets_recommendations_with_peers_and_no_value(two: Two) -> None:
    page = two.page
    assert _kinds(page, "ratings") == {
        "data": "available", "value": "unavailable", "recommendations": "available",
        "examples": "available",
    }  # fmt: skip
    assert any("no purchase events" in n for n in page.notes)
    assert page.value("ratings-rec-random-split", "peer:EASE", "ndcg@10") == 0.321
    assert page.value("ratings-rec-leave-one-out", "peer:Pop", "ndcg@10") == 0.0123
    assert "peer:BPR" not in [r.key for r in page.tables["ratings-rec-random-split"]]
    assert "Film <3> & co" in "".join(page.text) and "Film <3>" not in two.html  # escaped
    ids = {f for f in page.figures if f.startswith("ratings-")}
    assert ids == {"ratings-events-by-month", "ratings-popularity-bias"}
    for fid in ids:
        svg_of(page.figures[fid])


def test_empty_store_says_what_is_missing(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    Store(db).close()
    page = parse(build_report([db]))
    assert _kinds(page, "empty") == {
        "data": "available", "value": "unavailable", "recommendations": "unavailable",
    }  # fmt: skip
    assert page.value("empty-counts", "events", "events") == 0
    assert not page.figures


# ------------------------------------------------------------------------------ policies


def test_policy_section_shows_the_experiment_record_with_intervals_days_and_ope(
    tmp_path: Path,
) -> None:
    """A tiny policy experiment's record (what the benchmark's --json writes) rendered by
    `valuerec report --policy-json` alone: every figure equals the record's."""
    import warnings

    from valuerec.cli_simulate import policy_data
    from valuerec.simulate.experiment import ExperimentConfig, run_seed

    cfg = ExperimentConfig(
        users=200, items=200, seeds=(0, 1), pre_days=20, log_days=10, days=8,
        policies=("relevance", "revenue-greedy", "value-aware"),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BG/NBD falls back on such short logs
        results = [run_seed(cfg, s) for s in cfg.seeds]
    record = policy_data(results)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(record, default=float))
    out = tmp_path / "policy.html"
    res = runner.invoke(app, ["report", "--policy-json", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = parse(out.read_text())
    assert page.sections["policy-comparison"]["class"] == "available"
    assert page.sections["policy-ope-section"]["class"] == "available"
    for name in results[0].runs:  # the interval brackets the seeds' mean
        mean = np.mean([r.runs[name].revenue for r in results])
        assert page.value("policy-table", name, "revenue") == pytest.approx(mean)
        assert page.value("policy-table", name, "revenue_low") <= mean
        assert page.value("policy-table", name, "ndcg") == pytest.approx(
            np.mean([r.runs[name].ndcg for r in results])
        )
    gain = [r.runs["value-aware"].revenue / r.runs["relevance"].revenue - 1 for r in results]
    assert page.value("policy-paired", "value-aware vs relevance", "revenue") == pytest.approx(
        np.mean(gain)
    )
    ope_rows = page.tables["policy-ope"]
    assert len(ope_rows) == 2 * 3  # seeds x deterministic targets
    first = results[0].ope
    assert first is not None
    assert page.value("policy-ope", "0:value-aware", "truth") == pytest.approx(
        first.truth["value-aware"]
    )
    assert page.value("policy-ope", "0:value-aware", "dr") == pytest.approx(
        first.estimates["value-aware"]["dr"].estimate
    )
    # the simultaneous intervals' count is the record's, and at least the 95% intervals' own
    held = record["ope_simultaneous"]["dr"]
    alone = sum(r["dr_covers"] for r in record["ope"])
    assert held.endswith("/6") and int(held.split("/")[0]) >= alone
    assert f"DR {held}." in out.read_text()
    fig = page.figures["policy-days"]
    drawn = squash(svg_text(svg_of(fig)))
    assert "cumulative revenue" in drawn and "active users" in drawn
    cum = record["daily"]["relevance"]["cumulative_revenue"]
    assert len(cum) == cfg.days and cum[-1] == pytest.approx(
        np.mean([r.runs["relevance"].revenue for r in results])
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"policies": []}')
    res = runner.invoke(app, ["report", "--policy-json", str(bad), "--out", str(out)])
    assert res.exit_code == 2 and "no policy table" in res.output


def test_user_text_is_drawn_literally_and_ids_stay_unique(tmp_path: Path) -> None:
    """Event types and policy names are users' text: a "$" pair is not mathtext (which
    crashed the report on "\\frac"), and a store named policy.duckdb does not take the policy
    part's ids."""
    db = tmp_path / "policy.duckdb"
    times = pd.date_range("2024-01-01", periods=40, freq="D")
    events = pd.DataFrame(
        {"user_id": [f"u{i % 7}" for i in range(40)], "item_id": "i1",
         "event_type": "pay$\\frac$view", "timestamp": times}
    )  # fmt: skip
    _ingest(db, events=events)
    daily = {"day": [1, 2], "cumulative_revenue": [1.0, 2.0], "active": [5, 4]}
    record = {
        "seeds": [0],
        "policies": [{"policy": "relevance", "revenue": 10.0}, {"policy": "a$\\frac$b"}],
        "daily": {"relevance": daily, "a$\\frac$b": daily},
    }
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    html = build_report([db], ReportOptions(policy=path, sections=("data",)))
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    page = parse(html)
    drawn = {fid: svg_text(svg_of(f)) for fid, f in page.figures.items()}
    assert "pay$\\frac$view" in " ".join(drawn.values())
    assert "a$\\frac$b" in drawn["policy-days"]
    assert page.sections["policy-2-data"]["class"] == "available"


def test_the_store_named_by_valuerec_db_may_have_a_space_in_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "my shop" / "x.duckdb"
    db.parent.mkdir()
    Store(db).close()
    monkeypatch.setenv("VALUEREC_DB", str(db))
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert _kinds(parse(out.read_text()), "x")["data"] == "available"


# ------------------------------------------------------------------- oddly shaped input files

GOOD_POLICY = {"policies": [{"policy": "relevance", "revenue": 10.0}]}

BAD_PEERS = [
    ({"runs": [{"model": "ease", "test": {"ndcg@10": 0.1}}]}, "run 0 has no protocol"),
    ({"runs": [{"protocol": "random-split", "test": {"ndcg@10": 0.1}}]}, "run 0 has no model"),
    ({"runs": ["ease"]}, "run 0 is not an object"),
    ({"runs": [{"protocol": "p", "model": "m", "test": [0.1]}]}, "run 0 has no test object"),
    ({"random-split": {"ease": {"test": 5}}}, "random-split/ease"),
    ({"results": {"random-split": {"ease": {"metrics": "good"}}}}, "random-split/ease"),
]


@pytest.mark.parametrize(("record", "why"), BAD_PEERS)
def test_an_oddly_shaped_peer_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: Any, why: str
) -> None:
    """A peer file of an unexpected shape was a KeyError or AttributeError traceback."""
    peer = tmp_path / "peer.json"
    peer.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=f"cannot read peer figures {re.escape(str(peer))}: "):
        read_peer(peer)
    with pytest.raises(ValueError, match=re.escape(why)):
        read_peer(peer)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(GOOD_POLICY))
    monkeypatch.delenv("VALUEREC_DB", raising=False)
    out = tmp_path / "r.html"
    res = runner.invoke(
        app, ["report", "--policy-json", str(policy), "--peer", str(peer), "--out", str(out)]
    )
    assert res.exit_code == 2, res.output
    assert "cannot read peer figures" in res.output and not out.exists()


def test_failed_peer_runs_are_still_skipped(tmp_path: Path) -> None:
    peer = tmp_path / "peer.json"
    peer.write_text(json.dumps(PEERS))
    assert [(r.protocol, r.model) for r in read_peer(peer)] == [
        ("random-split", "EASE"),
        ("leave-one-out", "Pop"),
    ]


BAD_POLICIES = [
    ({"policies": [{"policy": "a", "revenue": "n/a"}]}, "policies[0].revenue is not a number"),
    ({"policies": [{"policy": "a", "ndcg_low": True}]}, "policies[0].ndcg_low is not a number"),
    ({"policies": ["policy"]}, "policies[0] is not an object"),
    (
        {**GOOD_POLICY, "paired": {"x": {"revenue": [0.1, 0.0]}}},
        "paired['x'].revenue is not [mean, low, high]",
    ),
    ({**GOOD_POLICY, "paired": {"x": {"ndcg": [0.1, "a", 0.2]}}}, "paired['x'].ndcg"),
    ({**GOOD_POLICY, "paired": [1]}, "paired is not an object"),
    ({**GOOD_POLICY, "ope": [{"seed": 1}]}, "ope[0] has no policy"),
    ({**GOOD_POLICY, "ope": [{"seed": 1, "policy": "a", "dr": "x"}]}, "ope[0].dr is not a number"),
    ({**GOOD_POLICY, "ope": {"seed": 1}}, "ope is not a list"),
    ({**GOOD_POLICY, "daily": {"a": {"day": [1]}}}, "daily['a'].cumulative_revenue"),
    (
        {**GOOD_POLICY, "daily": {"a": {"day": [1, 2], "cumulative_revenue": [1], "active": [1]}}},
        "daily['a']: series of different lengths",
    ),
    ({**GOOD_POLICY, "seeds": 2}, "seeds is not a list"),
    ({**GOOD_POLICY, "ope_simultaneous": ["dr"]}, "ope_simultaneous is not an object"),
]


@pytest.mark.parametrize(("record", "why"), BAD_POLICIES)
def test_an_oddly_shaped_policy_file_is_a_clear_error(
    tmp_path: Path, record: Any, why: str
) -> None:
    """A policy record of an unexpected shape was a KeyError / ValueError traceback (the
    policy part is built before any section is guarded): it is now the file's error."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=f"cannot read policy figures from {re.escape(str(path))}"):
        read_policy(path)
    with pytest.raises(ValueError, match=re.escape(why)):
        read_policy(path)
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "--policy-json", str(path), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "cannot read policy figures" in res.output and not out.exists()


def test_exposures_alone_give_recommenders_nothing_to_learn(tmp_path: Path) -> None:
    """The report's recommenders read the interest event types, as `recommend evaluate` and
    `train` do: items a user was only shown are not interactions."""
    from valuerec.report.recs import evaluate_recommenders
    from valuerec.report.value import NotApplicable

    rows = [(f"u{u}", f"i{u % 3}", "exposure", "2024-01-01") for u in range(20)]
    rows += [(f"u{u}", None, "purchase", "2024-01-02") for u in range(20)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    with Store(tmp_path / "shown.duckdb") as store:
        ingest(store, events, "events")
        with pytest.raises(NotApplicable, match="exposures, what a user was shown, do not count"):
            evaluate_recommenders(store, str(tmp_path / "arts"))


def test_ids_stay_unique_when_a_store_is_named_like_another_stores_section(
    tmp_path: Path,
) -> None:
    """ "shop" has a section "shop-data", which is also the id of a store shop-data.duckdb; and
    renaming a second "shop" to "shop-2" must not collide with a store already named so."""
    events = pd.DataFrame({"user_id": ["u1", "u2"], "event_type": "view",
                           "timestamp": ["2024-01-01", "2024-01-02"]})  # fmt: skip
    dbs = [tmp_path / "a" / "shop-2.duckdb", tmp_path / "shop.duckdb",
           tmp_path / "shop-data.duckdb", tmp_path / "b" / "Shop.duckdb"]  # fmt: skip
    for db in dbs:
        db.parent.mkdir(exist_ok=True)
        _ingest(db, events=events)
    html = build_report(dbs, ReportOptions(sections=("data",)))
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    page = parse(html)
    for sid in ("shop-2-data", "shop-data", "shop-data-2-data", "shop-3-data"):
        assert page.sections[sid]["class"] == "available", sid


def test_peer_figures_are_shown_only_beside_the_data_they_were_measured_on(
    tmp_path: Path,
) -> None:
    from valuerec.report.recs import PEER_DATA_SHAPE, PeerRun, evaluate_recommenders

    rows = [(f"u{u}", f"i{(u + j) % 7}", "view", f"2024-01-{1 + j:02d}")
            for u in range(30) for j in range(4)]  # fmt: skip
    rows += [(f"u{u}", "promo", "exposure", "2024-01-06") for u in range(30)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    peer = [PeerRun("random-split", "EASE", {"ndcg@10": 0.33}, "")]
    with Store(tmp_path / "shop.duckdb") as store:
        ingest(store, events, "events")
        ev = evaluate_recommenders(store, str(tmp_path / "arts"), models="popularity", peer=peer)
    assert ev.peers == [] and PEER_DATA_SHAPE != (30, 7, 120)
    assert any("measured on MovieLens-100K" in n and "30 / 7 / 120" in n for n in ev.notes)
    # example users' history: the view events the model read, never the exposures
    for example in ev.examples:
        assert set(example.history["event_type"]) == {"view"}
        assert example.interactions == 4


def test_a_model_that_cannot_use_the_data_costs_the_section_nothing(tmp_path: Path) -> None:
    """`--rec-models content,popularity` on a store without items: content's failure (it
    needs an items table) lost the whole recommendations section, popularity included,
    because the examples tried to fit content. Now content is skipped and popularity serves."""
    from valuerec.report.recs import evaluate_recommenders

    rows = [(f"u{u}", f"i{(u + j) % 7}", "view", f"2024-01-{1 + j:02d}")
            for u in range(30) for j in range(4)]  # fmt: skip
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    with Store(tmp_path / "shop.duckdb") as store:
        ingest(store, events, "events")
        ev = evaluate_recommenders(store, str(tmp_path / "arts"), models="content,popularity")
    assert set(ev.protocols["random-split"].metrics) == {"popularity"}
    assert any(k.startswith("content") and "items table" in v for k, v in ev.skipped.items())
    assert ev.example_model == "popularity" and len(ev.examples) > 0
    assert "not content: " in ev.example_source


def test_no_churn_roc_chart_when_every_held_out_customer_is_in_one_class(shop: Built) -> None:
    """The chart drew only the random diagonal beside a note saying there is no ROC curve."""
    import dataclasses

    from valuerec.report.sections import value_section

    with Store(shop.db, read_only=True) as store:
        ev = report_value.evaluate_models(store, str(default_root(str(shop.db))))
    ids = {b.id for b in value_section("shop", ev).blocks}
    assert "shop-churn-roc" in ids
    everyone_back = ev.truth.assign(holdout_transactions=1.0)
    section = value_section("shop", dataclasses.replace(ev, truth=everyone_back))
    assert "shop-churn-roc" not in {b.id for b in section.blocks}
    assert any("no ROC curve" in n for n in section.notes)


# ------------------------------------------------------------------- review fixes (review D)


def test_a_sequential_peer_shows_its_masked_figures_under_the_masked_columns(
    tmp_path: Path,
) -> None:
    """recbole_run.py writes a sequential model's leave-one-out `test` unmasked and its masked
    figures in `test_masked`: the report showed the unmasked ones under "seen items masked",
    left ndcg@10_unmasked empty for every peer and never showed what `test_is` said."""
    from valuerec.report.recs import ProtocolResult, RecEvaluation
    from valuerec.report.sections import _rec_table

    peer = tmp_path / "peer.json"
    said = "unmasked (RecBole's full sort masks nothing for sequential models)"
    peer.write_text(json.dumps({"runs": [
        {"protocol": "leave-one-out", "model": "SASRec", "test_is": said,
         "test": {"ndcg@10": 0.111, "recall@10": 0.222},
         "test_masked": {"ndcg@10": 0.333, "recall@10": 0.444}},
        {"protocol": "leave-one-out", "model": "EASE",
         "test_is": "masked (train + valid items excluded)",
         "test": {"ndcg@10": 0.5, "recall@10": 0.6}, "test_unmasked": {"ndcg@10": 0.25}},
    ]}))  # fmt: skip
    runs = {r.model: r for r in read_peer(peer)}
    assert runs["SASRec"].metrics == {
        "ndcg@10": 0.333, "recall@10": 0.444, "ndcg@10_unmasked": 0.111,
        "recall@10_unmasked": 0.222,
    }  # fmt: skip
    assert runs["EASE"].metrics == {"ndcg@10": 0.5, "recall@10": 0.6, "ndcg@10_unmasked": 0.25}
    ours = ProtocolResult(
        "leave-one-out", {"ease": {"ndcg@10": 0.4, "users": 9.0, "fit_s": 0.1}}, {},
        np.ones(3), {"train": 20, "valid": 9, "test": 9},
    )  # fmt: skip
    ev = RecEvaluation(10, ["ease"], {"leave-one-out": ours}, "ease", "", [], list(runs.values()))
    table = _rec_table("ml", ev, "leave-one-out")
    rows = dict(zip(table.row_keys, table.rows, strict=True))
    cells = {c.key: c for c in rows["peer:SASRec"] if c.key}
    assert (cells["ndcg@10"].value, cells["recall@10"].value) == (0.333, 0.444)
    assert cells["ndcg@10_unmasked"].value == 0.111
    assert {c.key: c.value for c in rows["peer:EASE"] if c.key}["ndcg@10_unmasked"] == 0.25
    source = rows["peer:SASRec"][1].text
    assert "test_masked" in source and said in source
    assert rows["peer:EASE"][1].text == "RecBole (peer): masked (train + valid items excluded)"
    peer.write_text(json.dumps({"runs": [{"protocol": "p", "model": "m", "test": {},
                                          "test_masked": [0.3]}]}))  # fmt: skip
    with pytest.raises(ValueError, match="run 0: test_masked is not an object"):
        read_peer(peer)


def test_ltv_axis_over_less_than_a_decade_has_plain_tick_labels() -> None:
    """Matplotlib labels minor ticks of a log axis spanning under a decade; their default
    mathtext was drawn literally ("$\\mathdefault{2\\times10^{1}}$") under text.parse_math=False."""
    from valuerec.report.charts import ltv_distribution

    ltv = np.random.default_rng(0).uniform(5, 35, 200)
    drawn = svg_text(ET.fromstring(ltv_distribution("x", ltv, "pareto", 200).svg))
    assert "mathdefault" not in drawn and "$" not in drawn
    assert {"6", "10", "20", "30"} <= set(drawn.split())
    # no major tick in range at all: the minor labels are the only ones, and plain
    ltv = np.random.default_rng(1).uniform(12, 80, 200)
    drawn = svg_text(ET.fromstring(ltv_distribution("x", ltv, "pareto", 200).svg))
    assert "mathdefault" not in drawn and {"20", "30", "40", "60"} <= set(drawn.split())


def test_segment_recency_shows_one_decimal_as_the_dashboard_does(shop: Built) -> None:
    """A median of whole days is often x.5: the report rounded 14.5 to 14 (half to even), the
    dashboard to 15. Both now show one decimal, which is exact for such a median."""
    shown = 0
    for segment in SEGMENTS:
        attrs, text = shop.page.cell("shop-value-segments", segment, "median_recency_days")
        if "data-value" in attrs:
            assert text == f"{float(attrs['data-value']):,.1f}", (segment, text)
            shown += 1
    assert shown >= 2


def test_example_users_are_scored_from_their_current_history(tmp_path: Path) -> None:
    """A saved recommender fitted before newer events recommended, right under a user's
    history table, items that table shows they already had, with no note: each example user
    is now scored from their history in the store (as the server does), and the source says
    the artifact predates the data."""
    from valuerec.artifacts import data_fingerprint
    from valuerec.recommend.ease import EASERecommender
    from valuerec.report.recs import evaluate_recommenders

    day = pd.Timestamp("2024-01-01")
    early = [(f"u{u}", f"i{(u + j) % 12}", "view", day + pd.Timedelta(hours=u + j))
             for u in range(40) for j in range(3)]  # fmt: skip
    # a month later every user has every item but two, neither of them in their early three
    late = [(f"u{u}", f"i{i}", "view", day + pd.Timedelta(days=30, hours=u + i))
            for u in range(40) for i in range(12)
            if i not in ((u + 5) % 12, (u + 7) % 12)]  # fmt: skip
    columns = ["user_id", "item_id", "event_type", "timestamp"]
    root = tmp_path / "arts"
    with Store(tmp_path / "shop.duckdb") as store:
        ingest(store, pd.DataFrame(early, columns=columns), "events")
        meta = {"model": "ease", "data_fingerprint": data_fingerprint(store)}
        old = EASERecommender(reg=10.0).fit(Interactions.from_store(store))
        ArtifactStore(root).save("rec-ease", old, meta)
        ingest(store, pd.DataFrame(late, columns=columns), "events")
        ev = evaluate_recommenders(store, str(root), models="ease")
        history = store.events().groupby("user_id")["item_id"].agg(list)
    assert ev.example_source.startswith("the saved artifact rec-ease v0001")
    assert "fitted before the store last changed" in ev.example_source
    assert len(ev.examples) == 5
    for example in ev.examples:
        had = history[example.user_id]
        assert example.interactions == len(had)
        assert not set(example.recs["item_id"]) & set(had), example.user_id
        # what the server would answer: the saved model scored on the current history
        expected = old.recommend([example.user_id], k=5, histories={example.user_id: had})
        assert list(example.recs["item_id"]) == list(expected["item_id"])
        assert len(example.recs) == 2 and all(
            r.startswith("similar to ") for r in example.recs["reason"]
        )


def test_a_month_without_events_is_shown_with_zero_events(tmp_path: Path) -> None:
    """An outage that lost March to May must show as three empty months, in the table and the
    chart, not vanish between February and June."""
    months = ["2024-01", "2024-02", "2024-06", "2024-07"]
    events = pd.DataFrame(
        [(f"u{d % 7}", "purchase", f"{m}-{d:02d}", 10.0 + d) for m in months for d in (1, 2)],
        columns=["user_id", "event_type", "timestamp", "value"],
    )
    db = tmp_path / "gap.duckdb"
    _ingest(db, events=events)
    page = parse(build_report([db], ReportOptions(sections=("data",))))
    every = ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05", "2024-06", "2024-07"]
    assert [r.key for r in page.tables["gap-months"]] == every
    for month in ("2024-03", "2024-04", "2024-05"):
        assert page.value("gap-months", month, "purchase") == 0
        assert page.value("gap-months", month, "total") == 0
    assert page.value("gap-months", "2024-06", "total") == 2
    labels = re.findall(r"20\d\d-\d\d", svg_text(svg_of(page.figures["gap-events-by-month"])))
    assert labels == every


def test_a_placeholder_date_does_not_fill_in_thousands_of_empty_months(tmp_path: Path) -> None:
    """One event dated 9999-12-31 had made 96,036 month rows (and a 72 MB report): past
    fifty years only the months with events are listed."""
    events = pd.DataFrame(
        [("u1", "purchase", "2024-01-05", 10.0), ("u2", "purchase", "2024-03-05", 12.0),
         ("u3", "view", "9999-12-31", None)],
        columns=["user_id", "event_type", "timestamp", "value"],
    )  # fmt: skip
    db = tmp_path / "far.duckdb"
    _ingest(db, events=events)
    page = parse(build_report([db], ReportOptions(sections=("data",))))
    assert [r.key for r in page.tables["far-months"]] == ["2024-01", "2024-03", "9999-12"]


def test_an_out_path_that_cannot_be_written_is_a_clear_error_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--out`` naming a folder, or a path below a file, was a traceback after the whole
    report had been computed: now it is one ``error:`` line (exit 2) before any store is read,
    and a failure while writing names the path as well."""
    from valuerec.report import build as report_build
    from valuerec.report.build import ReportError, write_report

    db = tmp_path / "shop.duckdb"
    _ingest(db, events=pd.DataFrame({"user_id": ["u1"], "event_type": "view",
                                     "timestamp": ["2024-01-01"]}))  # fmt: skip
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("not a folder")

    def no_work(*_: object) -> None:
        raise AssertionError("a store was evaluated before --out was checked")

    with monkeypatch.context() as mp:
        mp.setattr(report_build, "_store_part", no_work)
        below = f"{tmp_path / 'afile'} is not a directory"
        for out, why in [
            (tmp_path / "folder", "it is a directory"),
            (tmp_path / "afile" / "report.html", below),
            (tmp_path / "afile" / "sub" / "report.html", below),
        ]:
            res = runner.invoke(app, ["report", "--db", str(db), "--out", str(out)])
            assert res.exit_code == 2, res.output
            # the console folds long lines (paths) wherever it likes: compare without spaces
            expected = f"error: --out: cannot write the report to {out}: {why}"
            assert "".join(res.output.split()).startswith("".join(expected.split()))
            assert "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder", "shop.duckdb"]
    assert not list((tmp_path / "folder").iterdir())

    def refused(*_: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(report_build.os, "replace", refused)
    out = tmp_path / "new" / "report.html"  # a missing folder is still made, as before
    with pytest.raises(ReportError, match=f"cannot write the report to {out}: Permission denied"):
        write_report([db], out, ReportOptions(sections=("data",)))
    assert not list(out.parent.iterdir())  # the temporary file is gone


@pytest.mark.parametrize(
    ("browsing", "last"),
    [
        (True, "2024-09-30 18:00"),  # views during 2023, before the first purchase
        (False, "2024-04-11 12:00"),  # 101.5 days of purchases: half is 50 d, not 51
    ],
)
def test_the_fallback_split_is_the_one_valuerec_train_makes(
    tmp_path: Path, browsing: bool, last: str
) -> None:
    """The note of the value section fitted now says its holdout is shortened "as `valuerec
    train` does": it must be train's split, so the report shows what train would save."""
    rng = np.random.default_rng(4)
    first = pd.Timestamp("2024-01-01")
    ns = rng.uniform(first.value, pd.Timestamp(last).value, size=400).astype("int64")
    stamps = pd.to_datetime(np.sort(np.r_[ns, first.value, pd.Timestamp(last).value]))
    events = pd.DataFrame({
        "user_id": [f"u{i % 40}" for i in range(len(stamps))], "event_type": "purchase",
        "timestamp": stamps, "value": rng.uniform(5, 50, len(stamps)).round(2),
    })  # fmt: skip
    if browsing:
        early = pd.DataFrame({"user_id": [f"u{i}" for i in range(40)], "event_type": "view",
                              "timestamp": pd.Timestamp("2023-02-01 09:30")})  # fmt: skip
        events = pd.concat([early, events], ignore_index=True)
    db = tmp_path / "shop.duckdb"
    _ingest(db, events=events)
    with Store(db, read_only=True) as store:
        split = report_value.default_split(store)
    args = ["train", "--db", str(db), "--value-models", "naive", "--rec-models", ""]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    meta = ArtifactStore(default_root(str(db))).meta("value-naive")
    ours = (pd.Timestamp(split.calibration_end), split.holdout_days)
    assert ours == (pd.Timestamp(meta["calibration_end"]), meta["holdout_days"])


def test_each_reason_a_recommender_is_not_shown_is_said_once(tmp_path: Path) -> None:
    """Three views: no user has a test item on either protocol, so every model fails the same
    way; the section said so eight times (a note joining the four, then one note each)."""
    events = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"],
                           "event_type": "view", "timestamp": ["2024-01-01", "2024-01-02",
                                                               "2024-01-03"]})  # fmt: skip
    db = tmp_path / "views.duckdb"
    _ingest(db, events=events)
    page = parse(build_report([db], ReportOptions(sections=("recommendations",))))
    why = "no user has a test item"
    said = [n for n in page.notes if why in n]
    assert len(said) == 1 and said[0].count(why) == 1, said
    for name in ("popularity", "ease"):
        for protocol in ("random-split", "leave-one-out"):
            assert f"{name} ({protocol})" in said[0]
    assert any(n.startswith("No protocol could be evaluated") for n in page.notes)


def test_example_history_heading_counts_distinct_items_and_interactions(tmp_path: Path) -> None:
    """The history table lists each item once: a user with 6 interactions with 3 items has 3
    rows, and the heading must not read as if 3 of 6 rows were left out."""
    rows = [(f"u{u}", f"i{(u + j) % 8}", "view", f"2024-01-{u + 2 * j + r + 1:02d}")
            for u in range(12) for j in range(3) for r in range(2)]  # fmt: skip
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    db = tmp_path / "again.duckdb"
    _ingest(db, events=events)
    options = ReportOptions(sections=("recommendations",), rec_models="popularity")
    html = build_report([db], options)
    found = re.findall(r'id="again-example-\d+-history".*?<caption>([^<]*)</caption>', html, re.S)
    assert found
    for caption in found:  # every user viewed 3 items twice each
        assert re.fullmatch(r"User u\d+: 3 most recent of 3 distinct items \(6 interactions\)",
                            squash(caption)), caption  # fmt: skip
