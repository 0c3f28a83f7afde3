"""``valuerec report``, review 25: a placeholder date, the featured model's case, cut-offs
inside a day.

Tiny stores built here, with the cheap value models (naive, bgnbd) fitted by ``value fit``;
the report is parsed back with :mod:`test_report`'s parser.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from test_report import Page, _ingest, parse
from valuerec.artifacts import default_root
from valuerec.cli_value import value_app
from valuerec.report import build_report
from valuerec.report.build import ReportOptions

runner = CliRunner()
FITTED = ("naive", "bgnbd")
VALUE_ONLY = ("value",)  # the other sections are not under test and cost time


def _purchases(users: int, start: str, days: int, seed: int) -> pd.DataFrame:
    """1 to 5 purchases per customer at 10:00 on days spread over ``days`` from ``start``."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for _ in range(int(rng.integers(1, 6))):
            when = pd.Timestamp(start) + pd.Timedelta(days=int(rng.integers(0, days)), hours=10)
            rows.append((f"u{u}", "purchase", when, round(float(rng.uniform(5, 80)), 2)))
    return pd.DataFrame(rows, columns=["user_id", "event_type", "timestamp", "value"])


def _fit(db: Path, *args: str, models: str = ",".join(FITTED)) -> None:
    res = runner.invoke(value_app, ["fit", "--db", str(db), "--models", models, "--json", *args])
    assert res.exit_code == 0, res.output


def _value_text(page: Page) -> str:
    """The value section's text, from its first paragraph on (the page's style sheet before
    it would only lengthen assertion messages)."""
    text = " ".join(" ".join(page.text).split())
    return text[text.find("Source:") :]


# ------------------------------------------------------------ 1: an event dated 9999-12-31


@pytest.fixture(scope="module")
def placeholder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Page]:
    """80 customers in 2023 plus one purchase dated 9999-12-31 (a placeholder date)."""
    events = _purchases(80, "2023-01-01", 200, seed=1)
    events.loc[len(events)] = ("u1", "purchase", pd.Timestamp("9999-12-31 10:00"), 5.0)
    db = tmp_path_factory.mktemp("r25-9999") / "shop.duckdb"
    _ingest(db, events=events)
    _fit(db, "--holdout-days", "60", "--calibration-end", "2023-05-01")
    return db, parse(build_report([db], ReportOptions(sections=VALUE_ONLY)))


def test_a_placeholder_date_keeps_the_held_out_comparison(
    placeholder: tuple[Path, Page],
) -> None:
    db, page = placeholder
    assert page.sections["shop-value"]["class"] == "available", page.notes
    res = runner.invoke(value_app, ["evaluate", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    evaluated = json.loads(res.stdout)["models"]
    for name in FITTED:
        metrics = evaluated[name]["metrics"]
        assert page.value("shop-value-models", name, "customers") == evaluated[name]["customers"]
        for key in ("normalized_gini", "top20_share", "mae_spend", "auc_return"):
            assert page.value("shop-value-models", name, key) == pytest.approx(metrics[key]), key
    for chart in ("gain-lift", "decile-calibration", "actual-vs-predicted", "churn-roc"):
        assert f"shop-{chart}" in page.figures, chart


def test_a_placeholder_date_replaces_only_the_as_of_today_parts_with_a_note(
    placeholder: tuple[Path, Page],
) -> None:
    _, page = placeholder
    assert "shop-ltv-distribution" not in page.figures
    assert "shop-value-segments" not in page.tables
    assert "shop-value-deciles" in page.tables  # held out, not "as of today"
    notes = [n for n in page.notes if "9999-12-31" in n and "fix or delete" in n.lower()]
    assert notes, page.notes
    assert "(user u1)" in notes[0] and "segments" in notes[0], notes[0]
    assert "LTV distribution" in notes[0], notes[0]
    # the report has no cut-off option: a note must not send the reader to one
    for note in page.notes:
        assert "--calibration-end" not in note and "--as-of" not in note, note


# --------------------------------------------------------- 2 and 3: a cut-off inside a day


@pytest.fixture(scope="module")
def cutday(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Purchases from 2024-01-01 to 2024-09-27; naive and bgnbd fitted with a cut-off at
    midnight in UTC+2 (22:00 UTC the day before), whose 90-day holdout outruns the log."""
    db = tmp_path_factory.mktemp("r25-cutday") / "shop.duckdb"
    _ingest(db, events=_purchases(120, "2024-01-01", 270, seed=2))
    _fit(db, "--holdout-days", "90", "--calibration-end", "2024-07-29T00:00:00+02:00")
    return db


def test_a_cut_off_inside_a_day_is_printed_with_its_time(cutday: Path) -> None:
    text = _value_text(parse(build_report([cutday], ReportOptions(sections=VALUE_ONLY))))
    assert "learnt from purchases before 2024-07-28 22:00" in text, text
    assert "from 2024-07-28 22:00:00 to 2024-10-26 22:00:00" in text, text
    assert "The holdout window ends 2024-10-26 22:00:00, after the last event" in text, text


def test_a_model_fitted_on_another_split_the_same_day_names_its_time(
    tmp_path: Path, cutday: Path
) -> None:
    db = tmp_path / "shop.duckdb"
    db.write_bytes(cutday.read_bytes())  # with its artifacts, which live beside it
    shutil.copytree(default_root(cutday), default_root(db))
    # naive again, at noon of the same day: the newest fit decides the split, bgnbd's is
    # another one, whose date alone would read as the same
    _fit(db, "--holdout-days", "90", "--calibration-end", "2024-07-28T12:00:00Z", models="naive")
    page = parse(build_report([db], ReportOptions(sections=VALUE_ONLY)))
    assert any(
        "bgnbd not shown" in n and "calibration end 2024-07-28 22:00:00" in n for n in page.notes
    ), page.notes


def test_a_cut_off_at_midnight_stays_a_bare_date(tmp_path: Path) -> None:
    db = tmp_path / "shop.duckdb"
    _ingest(db, events=_purchases(120, "2024-01-01", 270, seed=2))
    _fit(db, "--holdout-days", "60", "--calibration-end", "2024-07-29")
    text = _value_text(parse(build_report([db], ReportOptions(sections=VALUE_ONLY))))
    assert "learnt from purchases before 2024-07-29;" in text, text
    assert "in the 60 days from 2024-07-29 to 2024-09-27." in text, text


# ------------------------------------------------------ 2: --value-model in any letter case


@pytest.mark.parametrize("spelt", ["BGNBD", " BgNbd "])
def test_the_featured_value_model_is_case_insensitive(cutday: Path, spelt: str) -> None:
    pages = [
        parse(build_report([cutday], ReportOptions(value_model=v, sections=VALUE_ONLY)))
        for v in ("bgnbd", spelt)
    ]
    text = _value_text(pages[1])
    assert "show bgnbd (chosen with --value-model)" in text, text
    assert "was not scored here" not in text
    assert pages[1].tables == pages[0].tables
    assert pages[1].notes == pages[0].notes
