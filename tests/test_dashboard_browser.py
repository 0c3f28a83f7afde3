"""The dashboard and the HTML report, opened in headless Chromium (Debian's, driven by Selenium).

The server is the real one (uvicorn on a loopback port, in a thread) over a small shop with
trained models and a read key. The page is driven like a person would: type the key, look up
a customer, open the segments and models views; what it shows is compared with what the API
answers for the same requests. Screenshots at a laptop and a phone width go to
``test-artifacts/``. The report test opens a generated report and checks every chart image
decoded (``naturalWidth > 0``), which is what a reader sees and what parsing the HTML cannot
tell.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``; CI
installs them); without them these tests skip, unless ``VALUEREC_REQUIRE_BROWSER`` is set
(CI sets it), where they fail. Selenium is pointed at both binaries so that Selenium Manager
never downloads a browser.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from valuerec.artifacts import ArtifactStore, default_root
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.evaluate.ranking import Interactions
from valuerec.features.split import TemporalSplit
from valuerec.recommend.ease import EASERecommender
from valuerec.recommend.popularity import PopularityRecommender
from valuerec.report import ReportOptions, write_report
from valuerec.serve import ServeSettings, create_app
from valuerec.serve.keys import KeyStore, default_keys_path
from valuerec.value.registry import make_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
DESKTOP = (1280, 900)
PHONE = (390, 844)
WAIT = 20.0  # seconds: generous, a cold Chromium on a busy CI machine is slow


def _missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            return f"{binary} missing: apt-get install -y chromium chromium-driver"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (starting one costs about a second)."""
    driver = _chromium()
    try:
        yield driver
    finally:
        driver.quit()


def _chromium() -> Any:
    """A headless Chromium that keeps its console log (``get_log("browser")``)."""
    reason = _missing_browser()
    if reason:
        if os.environ.get("VALUEREC_REQUIRE_BROWSER"):
            pytest.fail(f"a browser is required here but unavailable: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    flags = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
    for flag in (*flags, "--disable-dev-shm-usage", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, for get_log
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(WAIT)
    return driver


# -- the server --------------------------------------------------------------------------------
@dataclass
class Served:
    url: str
    key: str
    db: Path

    def get(self, path: str, **params: Any) -> Any:
        res = httpx.get(self.url + path, params=params, headers={"X-API-Key": self.key})
        assert res.status_code == 200, res.text
        return res.json()


def _shop(folder: Path) -> tuple[Path, str]:
    """A store with items and events, popularity + EASE + a naive value model, a read key."""
    db = folder / "shop.duckdb"
    data = generate(users=150, items=40, days=200, holdout_days=10, seed=7)
    with Store(db) as store:
        ingest(store, data.items, "items")
        ingest(store, data.events, "events")
        inter = Interactions.from_store(store)
        arts = ArtifactStore(default_root(db))
        arts.save("rec-popularity", PopularityRecommender().fit(inter), {"model": "popularity"})
        meta = {"model": "ease", "metrics": {"ndcg@10": 0.3125, "recall@10": 0.5}}
        arts.save("rec-ease", EASERecommender(reg=250.0).fit(inter), meta)
        split = TemporalSplit.last_days(store, 30)
        naive = make_model("naive").fit(store, split.calibration_end, holdout_days=30)
        arts.save("value-naive", naive, {"model": "naive"})
    key, _ = KeyStore(default_keys_path(db)).create("read", name="dashboard test")
    return db, key


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Served]:
    """The shop with trained models, served (:func:`_serve`)."""
    db, key = _shop(tmp_path_factory.mktemp("dash-shop"))
    yield from _serve(db, key)


def _serve(db: Path, key: str) -> Iterator[Served]:
    """``create_app`` under uvicorn on a socket bound here (port 0: no race for a free port),
    for as long as the generator is not closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = create_app(db, settings=ServeSettings(exposure_flush_seconds=3600.0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", key, db)
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()


# -- page helpers ------------------------------------------------------------------------------
def _wait(driver: Any, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(lambda d: condition(d), message=what)


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _visible(driver: Any, selector: str) -> Any:
    return _wait(
        driver,
        lambda d: next((e for e in _css(d, selector) if e.is_displayed()), False),
        f"{selector} visible",
    )


def _screenshot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _size(driver: Any, width: int, height: int) -> None:
    """Emulate a viewport of this size (a phone's is narrower than a headless window may go)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def _fits_width(driver: Any) -> bool:
    """No horizontal scrolling of the page itself (wide tables scroll in their own box)."""
    return driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1"
    )


def _look_up(driver: Any, user: str) -> None:
    box = _visible(driver, "#user-id")
    box.clear()
    box.send_keys(user)
    _css(driver, "#user-form button")[0].click()
    _wait(
        driver,
        lambda d: (
            d.execute_script("return document.querySelector('#customer').dataset.user") == user
        ),
        f"customer {user} rendered",
    )


def _open(driver: Any, view: str) -> None:
    _css(driver, f"#tabs button[data-view={view}]")[0].click()
    _visible(driver, f"#view-{view}")


# -- tests -------------------------------------------------------------------------------------
def test_dashboard_shows_a_customer_segments_and_models_as_the_api_does(browser, served):
    driver = browser
    _size(driver, *DESKTOP)
    driver.get(served.url + "/dashboard")
    driver.execute_script("localStorage.clear()")
    driver.refresh()

    # the key is asked for once, then kept: a reload goes straight to the customer view
    _visible(driver, "#key-input").send_keys(served.key)
    _css(driver, "#key-form button")[0].click()
    _wait(driver, lambda d: not _css(d, "#key-panel")[0].is_displayed(), "key panel closed")
    driver.refresh()
    _visible(driver, "#user-id")
    assert not _css(driver, "#key-panel")[0].is_displayed()

    # a customer worth looking at: the top of the segment with the most predicted value
    segments = served.get("/segments")
    best = max(segments["segments"], key=lambda s: s["predicted_value"])
    user = served.get(f"/segments/{best['segment']}/users", limit=1)["items"][0]["user_id"]
    _look_up(driver, user)

    value = served.get(f"/users/{user}/value")
    ltv = _css(driver, "#value-fields [data-field=ltv]")[0]
    assert float(ltv.get_attribute("data-value")) == pytest.approx(value["ltv"], rel=1e-12)
    assert value["ltv"] > 0 and ltv.text.replace(",", "") == f"{value['ltv']:.2f}"
    low, high = _css(driver, "[data-field=ltv-interval]")[0].get_attribute("data-value").split(",")
    assert (float(low), float(high)) == pytest.approx((value["ltv_low"], value["ltv_high"]))
    p_alive = _css(driver, "[data-field=p-alive]")[0].get_attribute("data-value")
    assert float(p_alive) == pytest.approx(value["p_alive"])
    assert _css(driver, "[data-field=segment]")[0].text == value["segment"]

    recs = served.get(f"/users/{user}/recommendations", k=10)
    shown = _css(driver, "#recs .rec")
    assert len(shown) == len(recs["items"]) > 0
    assert [e.find_element("css selector", ".rec-title").text for e in shown] == [
        i["title"] or i["item_id"] for i in recs["items"]
    ]
    assert [e.get_attribute("data-item-id") for e in shown] == [i["item_id"] for i in recs["items"]]
    assert all(e.find_element("css selector", ".rec-reason").text for e in shown)

    purchases = served.get(f"/users/{user}/purchases", limit=5)["items"]
    assert len(purchases) > 0  # the user is in a segment, so they bought something
    assert [e.get_attribute("data-item-id") for e in _css(driver, "#purchases .purchase")] == [
        p["item_id"] for p in purchases
    ]
    assert _fits_width(driver)
    _screenshot(driver, "dashboard-desktop-customer")

    # segments: sizes and value shares as the API gives them, and a complete target list
    _open(driver, "segments")
    _wait(driver, lambda d: _css(d, "#segments-table[data-loaded]"), "segments table")
    rows = _css(driver, "#segments-table tbody tr")
    assert [r.get_attribute("data-segment") for r in rows] == [
        s["segment"] for s in segments["segments"]
    ]
    for row, seg in zip(rows, segments["segments"], strict=True):
        cell = row.find_element("css selector", "[data-field=users]")
        assert int(cell.get_attribute("data-value")) == seg["users"]
    _screenshot(driver, "dashboard-desktop-segments")
    biggest = max(segments["segments"], key=lambda s: s["users"])
    first = served.get(f"/segments/{biggest['segment']}/users", limit=1)["items"][0]["user_id"]
    csv = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.dashboard.segmentCsv(arguments[0]).then(done, (e) => done('error: ' + e));",
        biggest["segment"],
    )
    lines = csv.splitlines()
    assert lines[0].startswith("user_id,ltv,p_alive")
    assert len(lines) == biggest["users"] + 1
    assert lines[1].split(",")[0] == first

    # models: every model's current version
    _open(driver, "models")
    _wait(driver, lambda d: _css(d, "#models[data-loaded]"), "models view")
    models = served.get("/models/current")["models"]
    cards = {c.get_attribute("data-name"): c for c in _css(driver, "#models .model")}
    names = {"rec-ease", "rec-popularity", "value-naive"}
    assert set(cards) == {m["name"] for m in models} == names
    for m in models:
        current = cards[m["name"]].find_element("css selector", "[data-field=current-version]")
        assert current.get_attribute("data-value") == m["current_version"] == "v0001"
    ease = next(m for m in models if m["name"] == "rec-ease")
    assert ease["metrics"] == {"ndcg@10": 0.3125, "recall@10": 0.5}
    assert {"ndcg@10", "0.3125", "recall@10", "0.5000"} <= set(cards["rec-ease"].text.split())
    _screenshot(driver, "dashboard-desktop-models")

    # a phone: the same customer, one column, nothing wider than the screen
    _size(driver, *PHONE)
    _open(driver, "customer")
    _look_up(driver, user)
    assert _fits_width(driver)
    value_card, recs_card = _css(driver, "#customer > .card")
    assert recs_card.location["y"] > value_card.location["y"]  # stacked, not side by side
    _screenshot(driver, "dashboard-phone-customer")
    _open(driver, "segments")
    _wait(driver, lambda d: _css(d, "#segments-table[data-loaded]"), "segments table")
    assert _fits_width(driver)
    _screenshot(driver, "dashboard-phone-segments")
    _size(driver, *DESKTOP)


def test_a_late_answer_for_an_earlier_customer_never_replaces_the_newer_one(browser, served):
    driver = browser
    _size(driver, *DESKTOP)
    driver.get(served.url + "/dashboard")
    driver.execute_script("localStorage.setItem('valuerec.apiKey', arguments[0])", served.key)
    driver.refresh()
    ranked = served.get("/segments/" + served.get("/segments")["segments"][0]["segment"] + "/users")
    slow, fast = (row["user_id"] for row in ranked["items"][:2])
    # every answer about the first customer arrives 1.5 s late
    driver.execute_script(
        """
        const slow = "/users/" + encodeURIComponent(arguments[0]) + "/";
        const real = window.fetch;
        window.fetch = (url, opts) => real(url, opts).then((res) =>
          String(url).includes(slow) ? new Promise((ok) => setTimeout(() => ok(res), 1500)) : res);
        """,
        slow,
    )
    box = _visible(driver, "#user-id")
    box.send_keys(slow)
    _css(driver, "#user-form button")[0].click()
    _look_up(driver, fast)  # asked while the first look-up is still waiting
    time.sleep(2.5)  # the first customer's answers have arrived by now
    assert driver.execute_script("return document.querySelector('#customer').dataset.user") == fast
    ltv = float(_css(driver, "#value-fields [data-field=ltv]")[0].get_attribute("data-value"))
    assert ltv == pytest.approx(served.get(f"/users/{fast}/value")["ltv"], rel=1e-12)


def test_csv_cells_are_quoted_and_never_run_as_spreadsheet_formulas(browser, served):
    browser.get(served.url + "/dashboard")
    cell = browser.execute_script(
        "return arguments[0].map((v) => window.dashboard.csvCell(v));",
        ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "a,b", "u1", -2.5, None],
    )
    assert cell == [
        '"\'=HYPERLINK(""http://x"",""y"")"',
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
        '"a,b"',
        "u1",
        "-2.5",
        "",
    ]


def test_a_wrong_key_is_asked_for_again(browser, served):
    driver = browser
    driver.get(served.url + "/dashboard")
    driver.execute_script("localStorage.setItem('valuerec.apiKey', 'vr_wrong')")
    driver.refresh()
    _visible(driver, "#user-id").send_keys("u1")
    _css(driver, "#user-form button")[0].click()
    error = _visible(driver, "#key-error")
    assert "invalid" in error.text
    assert driver.execute_script("return localStorage.getItem('valuerec.apiKey')") is None


def test_the_report_shows_every_chart_in_a_browser(browser, tmp_path):
    data = generate(users=200, items=30, days=300, holdout_days=30, seed=3)
    db = tmp_path / "report-shop.duckdb"
    with Store(db) as store:
        ingest(store, data.items, "items")
        ingest(store, data.events, "events")
    out = write_report([db], tmp_path / "report.html", ReportOptions(rec_models="popularity"))
    _size(browser, *DESKTOP)
    browser.get(out.as_uri())
    _wait(browser, lambda d: d.execute_script("return document.readyState") == "complete", "load")
    charts = browser.execute_script(
        "return [...document.querySelectorAll('figure.chart img')].map(i => ({"
        " id: i.closest('figure').id, complete: i.complete, width: i.naturalWidth,"
        " height: i.naturalHeight}))"
    )
    assert len(charts) >= 6, charts  # five value charts and the popularity-bias one
    blank = [c for c in charts if not (c["complete"] and c["width"] > 0 and c["height"] > 0)]
    assert not blank, blank
    _screenshot(browser, "report-desktop")


def _with_key(driver: Any, served: Served) -> None:
    """The dashboard opened with the read key already saved, on the customer view."""
    _size(driver, *DESKTOP)
    driver.get(served.url + "/dashboard")
    driver.execute_script("localStorage.setItem('valuerec.apiKey', arguments[0])", served.key)
    driver.refresh()
    _visible(driver, "#user-id")


def _top_customer(served: Served) -> str:
    first = served.get("/segments")["segments"][0]["segment"]
    return served.get(f"/segments/{first}/users", limit=1)["items"][0]["user_id"]


def test_a_failed_look_up_leaves_no_earlier_customer_on_screen(browser, served):
    """``.grid { display: grid }`` beat the hidden attribute: a failed look-up (bad key,
    server down) left the previous customer's LTV and recommendations under the error, and
    empty card skeletons showed before any look-up."""
    driver = browser
    _with_key(driver, served)
    customer = _css(driver, "#customer")[0]
    assert not customer.is_displayed()  # nothing looked up yet
    _look_up(driver, _top_customer(served))
    assert customer.is_displayed()
    # the server stops answering: every call is a 503
    driver.execute_script(
        "window.fetch = () => Promise.resolve(new Response("
        "JSON.stringify({message: 'service unavailable'}), {status: 503}));"
    )
    box = _visible(driver, "#user-id")
    box.clear()
    box.send_keys("someone-else")
    _css(driver, "#user-form button")[0].click()
    assert "service unavailable" in _visible(driver, "#user-error").text
    assert not customer.is_displayed()
    assert (
        driver.execute_script(
            "return getComputedStyle(document.querySelector('#customer')).display"
        )
        == "none"
    )


def test_a_model_without_an_interval_says_so_and_recency_has_one_decimal(browser, served):
    """The naive model gives its point value as both ends of the interval: the card read
    "80% interval 12.02 - 12.02". And a median recency of 14.5 days showed as 15 here and 14
    in the report: both show one decimal now."""
    driver = browser
    _with_key(driver, served)
    user = _top_customer(served)
    _look_up(driver, user)
    value = served.get(f"/users/{user}/value")
    assert value["model"] == "naive" and value["ltv_low"] == value["ltv_high"] == value["ltv"]
    cell = _css(driver, "[data-field=ltv-interval]")[0]
    assert cell.text == "no interval (this model gives none)"
    none = "no interval (this model gives none)"
    assert driver.execute_script(
        "const f = window.dashboard.interval;"
        "return [f(1, 2.5), f(3, 3), f(null, null), f(1234.5, 5678)];"
    ) == ["1.00 \N{EN DASH} 2.50", none, none, "1,234.50 \N{EN DASH} 5,678.00"]
    _open(driver, "segments")
    _wait(driver, lambda d: _css(d, "#segments-table[data-loaded]"), "segments table")
    segments = served.get("/segments")["segments"]
    rows = _css(driver, "#segments-table tbody tr")
    shown = 0
    for row, seg in zip(rows, segments, strict=True):
        cell = row.find_element("css selector", "[data-field=recency]")
        if seg["median_recency_days"] is not None:
            assert cell.text == f"{seg['median_recency_days']:,.1f}", seg["segment"]
            shown += 1
    assert shown > 0


def test_the_dashboard_loads_without_console_errors(served):
    """A first visit logged a 404 for /favicon.ico. A browser of its own: one that has been
    to the site already remembers the missing icon and does not ask again."""
    driver = _chromium()
    try:
        _with_key(driver, served)
        time.sleep(1.0)  # the browser asks for an icon after the page has loaded
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert not errors, errors  # a script or style the page's policy blocks is one too


def test_the_dashboard_may_not_be_framed_and_runs_only_its_own_code(served):
    """The page had no Content-Security-Policy or X-Frame-Options: another site could frame
    it (clickjacking the key prompt)."""
    import urllib.request

    with urllib.request.urlopen(f"{served.url}/dashboard") as res:
        headers = res.headers
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_ids_dot_and_dot_dot_are_refused_before_any_request(browser, served):
    """The browser drops "." and ".." path segments: looking up "." fetched /users/value and
    /users/recommendations, so it showed "no user 'recommendations'", or another user's
    record (user "value") as a value card that then threw a TypeError."""
    driver = browser
    _with_key(driver, served)
    driver.execute_script(
        "window.__fetched = [];"
        "const real = window.fetch;"
        "window.fetch = (url, opts) => {"
        "  window.__fetched.push(String(url)); return real(url, opts); };"
    )
    look_up = (
        "const done = arguments[arguments.length - 1];"
        "window.dashboard.lookUp(arguments[0]).then(() => done(window.__fetched.splice(0)));"
    )
    for user in (".", ".."):
        assert driver.execute_async_script(look_up, user) == []
        error = _css(driver, "#user-error")[0]
        assert error.is_displayed()
        assert f"no user can have the id '{user}'" in error.text
        assert not _css(driver, "#customer")[0].is_displayed()
    # only those two: an id with dots in it is looked up as any other
    fetched = driver.execute_async_script(look_up, "a.b")
    assert sorted(fetched) == [
        "/users/a.b/purchases?limit=5",
        "/users/a.b/recommendations?k=10",
        "/users/a.b/value",
    ]
    assert not _css(driver, "#user-error")[0].is_displayed()


@pytest.fixture(scope="module")
def served_untrained(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Served]:
    """A store with items and events but no trained model yet, served as ``served`` is."""
    db = tmp_path_factory.mktemp("dash-untrained") / "shop.duckdb"
    data = generate(users=20, items=10, days=60, seed=4)
    with Store(db) as store:
        ingest(store, data.items, "items")
        ingest(store, data.events, "events")
    key, _ = KeyStore(default_keys_path(db)).create("read", name="dashboard test")
    yield from _serve(db, key)


def test_before_training_a_customer_shows_purchases_and_the_models_view_says_why(
    browser, served_untrained
):
    """With no model trained, value and recommendations are 503s; the look-up hid the whole
    card, the purchases the API gave with it, and the Models view was a blank page."""
    driver = browser
    _with_key(driver, served_untrained)
    purchases = served_untrained.get("/users/u9/purchases", limit=5)["items"]
    assert len(purchases) == 4
    _look_up(driver, "u9")
    assert _css(driver, "#customer")[0].is_displayed()
    assert not _css(driver, "#user-error")[0].is_displayed()
    assert [e.get_attribute("data-item-id") for e in _css(driver, "#purchases .purchase")] == [
        p["item_id"] for p in purchases
    ]
    assert "no value model" in _visible(driver, "#value-missing").text
    assert "no recommendation model is loaded" in _visible(driver, "#recs-note").text
    assert _css(driver, "#recs .rec") == []
    _open(driver, "models")
    _wait(driver, lambda d: _css(d, "#models[data-loaded]"), "models view")
    assert served_untrained.get("/models/current")["models"] == []
    assert "No models yet: run `valuerec train`" in _visible(driver, "#models").text


def test_the_models_view_says_why_a_current_version_is_not_served(browser, served_untrained):
    """/models/current gives an ``error`` (a CURRENT naming no version, a version that fails
    to load); the page showed only "current none"."""
    folder = default_root(served_untrained.db) / "rec-broken"
    (folder / "v0001").mkdir(parents=True)  # a version the pointer does not name
    (folder / "v0001" / "meta.json").write_text('{"name": "rec-broken", "version": "v0001"}')
    (folder / "CURRENT").write_text("v0042\n")
    try:
        driver = browser
        _with_key(driver, served_untrained)
        _open(driver, "models")
        _wait(driver, lambda d: _css(d, "#models[data-loaded]"), "models view")
        (model,) = served_untrained.get("/models/current")["models"]
        assert model["name"] == "rec-broken" and "v0042" in model["error"]
        card = _css(driver, "#models .model[data-name=rec-broken]")[0]
        shown = card.find_element("css selector", "[data-field=model-error]")
        assert shown.text == model["error"]
    finally:
        shutil.rmtree(folder)
