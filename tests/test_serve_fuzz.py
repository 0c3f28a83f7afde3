"""Schemathesis against ``/openapi.json``: over a thousand generated requests, no server error.

Every operation of the schema gets requests that follow it (positive) and requests that break
it (negative: wrong types, out-of-range numbers, missing fields, bad keys), sent in-process to
the ASGI app with an admin key, so that every endpoint's handler is reached rather than only
the key check. Half the time a path's user or item id is swapped for a real one, because
random strings almost never name a stored user and the code behind a 404 is not the code
that would break. The one property checked is the issue's: no answer is a 5xx.

Generation is derandomised (the same cases on every run, so CI is stable). Setting
``VALUEREC_FUZZ_EXAMPLES`` (cases per operation and mode, 28 by default) makes it a random
hunt of that size instead: ``VALUEREC_FUZZ_EXAMPLES=200 pytest tests/test_serve_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from shop import build_shop
from valuerec.data.store import Store
from valuerec.serve import ServeSettings, create_app
from valuerec.serve.keys import KeyStore, default_keys_path

#: cases per operation and generation mode (about 23 operations x 2 modes)
EXAMPLES = int(os.environ.get("VALUEREC_FUZZ_EXAMPLES", "28"))
HUNT = "VALUEREC_FUZZ_EXAMPLES" in os.environ
#: POST /events writes to the store on every valid case: the slowest operation by far
EVENTS_EXAMPLES = max(1, EXAMPLES * 3 // 5)
MIN_CASES = 1_000 if EXAMPLES >= 28 else 0


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A small shop with EASE (two versions), popularity and a value model, served in-process."""
    db = tmp_path_factory.mktemp("fuzz") / "shop.duckdb"
    build_shop(str(db), users=60, items=30, days=120, seed=11)
    with Store(db) as store:
        users = sorted(map(str, store.query("SELECT DISTINCT user_id FROM events")["user_id"]))
        items = sorted(map(str, store.query("SELECT item_id FROM items")["item_id"]))
    key = KeyStore(default_keys_path(db)).create("admin", name="fuzz")[0]
    app = create_app(db, settings=ServeSettings(exposure_flush_seconds=3600.0))
    yield {"app": app, "key": key, "users": users, "items": items, "db": Path(db)}
    app.state.service.close()


def _real_ids(case: Any, draw: st.DataObject, users: list[str], items: list[str]) -> None:
    """Half the time, point the case's path at a stored user or item."""
    params = case.path_parameters or {}
    for name, pool in (("user_id", users), ("item_id", items)):
        if name in params and pool and draw.draw(st.booleans(), label=f"real {name}"):
            params[name] = draw.draw(st.sampled_from(pool), label=name)


def _fuzz(
    op: Any, mode: GenerationMode, budget: int, deployment: dict[str, Any], statuses: Counter[int]
) -> list[str]:
    """Run ``budget`` generated cases of one operation; the 5xx answers, described."""
    headers = {"X-API-Key": deployment["key"]}
    failures: list[str] = []

    @given(case=op.as_strategy(generation_mode=mode), draw=st.data())
    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        derandomize=not HUNT,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any, draw: st.DataObject) -> None:
        _real_ids(case, draw, deployment["users"], deployment["items"])
        res = case.call(headers=headers)
        statuses[res.status_code] += 1
        if res.status_code >= 500:
            failures.append(
                f"{op.label} ({mode.value}) path={case.path_parameters} query={case.query} "
                f"body={case.body!r:.300} -> {res.status_code} {res.text[:300]}"
            )

    with contextlib.suppress(Unsatisfiable):  # nothing to break: GET /health has no input
        run()
    return failures


def test_generated_requests_never_get_a_server_error(deployment: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", deployment["app"])
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        budget = EVENTS_EXAMPLES if op.label == "POST /events" else EXAMPLES
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += _fuzz(op, mode, budget, deployment, statuses)
    total = sum(statuses.values())
    print(f"{total} generated requests, answers by status: {dict(sorted(statuses.items()))}")
    assert not failures, f"{len(failures)} server errors in {total} cases:\n" + "\n".join(
        failures[:20]
    )
    assert total >= MIN_CASES, f"only {total} cases generated: {dict(statuses)}"
    assert statuses[200] + statuses[201] > total // 10, dict(statuses)  # handlers were reached
