"""The REST API contract points of review 24: dot ids, the events body, the dashboard routes'
documented errors, metrics labels and answers to unknown paths and methods.

The fixtures are :mod:`test_serve`'s (a small shop per backend, a fresh copy per test that
writes), imported rather than copied so that both files test the same deployment.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

import test_serve
from test_serve import _client, call, service
from valuerec.serve.keys import default_keys_path

# test_serve's fixtures, found by pytest under these names in this module
backend = test_serve.backend
databases = test_serve.databases
template = test_serve.template
deployment = test_serve.deployment
client = test_serve.client
reader = test_serve.reader


# -- ids "." and ".." --------------------------------------------------------------------------
def test_write_back_refuses_dot_ids_as_every_write(reader):
    res = call(reader, "POST", "/recommendations/batch",
               json={"user_ids": ["u1", ".."], "write_back": True})  # fmt: skip
    assert res.status_code == 422, res.text
    assert [d["field"] for d in res.json()["details"]] == ["user_ids[1]"]


def test_ids_with_dots_that_are_no_dot_segment_are_kept(client):
    """Only the two dot segments are refused: "...", "a.b" and ".x" address fine."""
    for user in ("...", "a.b", ".x"):
        assert call(client, "POST", "/users", "write", json={"user_id": user}).status_code == 201
        res = call(client, "GET", f"/users/{user}")
        assert res.status_code == 200 and res.json()["user_id"] == user, res.text


@pytest.mark.parametrize("segment", ["%2E", "%2E%2E", "%2e"])
def test_path_ids_dot_and_dot_dot_are_refused(reader, segment):
    """A raw %2E reaches the server as the path id ".": it is refused as on write, not looked
    up (an id no API write can store, which a browser could not address either)."""
    for path in (f"/users/{segment}", f"/users/{segment}/value",
                 f"/users/{segment}/recommendations", f"/users/{segment}/purchases",
                 f"/items/{segment}", f"/items/{segment}/similar"):  # fmt: skip
        res = call(reader, "GET", path)
        assert res.status_code == 422, (path, res.text)
        detail = res.json()["details"][0]
        assert "'.' or '..'" in detail["reason"], (path, detail)


# -- POST /events body -------------------------------------------------------------------------
def test_events_body_refuses_unknown_fields_as_every_other_body(client):
    """A client's "dry_run" (or a misspelt option) was ignored and its events stored."""
    event = {"user_id": "extra1", "item_id": "i1", "event_type": "view"}
    res = call(client, "POST", "/events", "write", json={"events": [event], "dry_run": True})
    assert res.status_code == 422, res.text
    assert res.json()["details"] == [
        {"location": "body", "field": "dry_run", "reason": "Extra inputs are not permitted"}
    ]
    assert service(client).repo.count_events(user_id="extra1") == 0
    schema = call(client, "GET", "/openapi.json").json()
    assert schema["components"]["schemas"]["EventBatchIn"]["additionalProperties"] is False


# -- documented errors -------------------------------------------------------------------------
def test_the_dashboard_routes_document_their_503(deployment):
    """With an unreadable key file every keyed route answers 503; the dashboard's two said
    nothing of it in /openapi.json."""
    db, keys = deployment
    with _client(db, keys) as c:
        schema = c.get("/openapi.json").json()
        default_keys_path(db).write_text("{not json")
        for path, template_ in (
            ("/users/u1/purchases", "/users/{user_id}/purchases"),
            ("/models/current", "/models/current"),
        ):
            res = call(c, "GET", path)
            assert res.status_code == 503 and "API keys" in res.json()["message"], res.text
            documented = schema["paths"][template_]["get"]["responses"]
            assert "503" in documented, (path, sorted(documented))
            assert documented["503"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorOut"
            }


# -- metrics labels ----------------------------------------------------------------------------
def _count(c: TestClient, method: str, route: str, status: int) -> float:
    text = call(c, "GET", "/metrics").text
    line = f'valuerec_http_requests_total{{method="{method}",route="{route}",status="{status}"}} '
    found = [float(x[len(line) :]) for x in text.splitlines() if x.startswith(line)]
    return found[0] if found else 0.0


def test_metrics_label_answers_before_routing_by_their_route(deployment, monkeypatch):
    """The body guard's 401s and 413s are answered before routing and were all counted under
    route="(unmatched)": an operator could not see a client failing auth on /events."""
    import valuerec.serve.bodyguard as guard

    monkeypatch.setattr(guard, "MAX_BODY_BYTES", 1000)
    db, keys = deployment
    with _client(db, keys) as c:
        for _ in range(2):
            c.post("/events", json={"events": []})  # no key
            c.patch("/users/u1", json={}, headers={"X-API-Key": "vr_wrong"})
        big = {"events": [{"user_id": "u1", "event_type": "view", "note": "x" * 2000}]}
        assert call(c, "POST", "/events", "write", json=big).status_code == 413
        c.get("/openapi.json")
        c.get("/dashboard/static/dashboard.js")
        call(c, "POST", "/openapi.json", "write")  # a 405 from a route FastAPI does not record
        c.post("/evnts", json={})  # no route: the only "(unmatched)"
        assert _count(c, "POST", "/events", 401) == 2.0
        assert _count(c, "PATCH", "/users/{user_id}", 401) == 2.0
        assert _count(c, "POST", "/events", 413) == 1.0
        assert _count(c, "GET", "/openapi.json", 200) == 1.0
        assert _count(c, "GET", "/dashboard/static", 200) == 1.0
        assert _count(c, "POST", "/openapi.json", 405) == 1.0
        assert _count(c, "POST", "(unmatched)", 404) == 1.0
        assert _count(c, "POST", "(unmatched)", 401) == 0.0


# -- unknown paths and methods -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("POST", "/evnts", 404, "no such endpoint: POST /evnts"),
        ("POST", "/health", 405, "POST is not allowed on /health"),
        ("PUT", "/users/u1", 405, "PUT is not allowed on /users/u1"),
        ("POST", "/dashboard", 405, "POST is not allowed on /dashboard"),
        ("PATCH", "/segments", 405, "PATCH is not allowed on /segments"),
    ],
)
def test_a_missing_path_or_method_is_a_404_or_405_with_or_without_a_key(
    reader, method, path, status, message
):
    """The body guard answered 401 "missing API key" to a typo'd path, because it checked the
    key before any route: there was no route whose 401 it could be."""
    answers = [
        reader.request(method, path, json={}, headers=headers)
        for headers in ({}, {"X-API-Key": "vr_wrong"}, {"X-API-Key": reader.keys["write"]})
    ]
    for res in answers:
        assert res.status_code == status, res.text
        assert res.json() == {"error": res.json()["error"], "message": message}
    # nothing about the route differs with the key: the same headers (Allow for a 405)
    assert len({res.headers.get("allow") for res in answers}) == 1


def test_a_real_route_without_a_key_is_still_a_401(reader):
    for method, path in (("POST", "/events"), ("PATCH", "/users/u1"), ("POST", "/items")):
        res = reader.request(method, path, content=b"{not json")
        assert res.status_code == 401, (method, path, res.text)
        assert res.json()["message"].startswith("missing API key"), (method, path)


def test_a_404_or_405_before_the_key_check_reads_no_body(reader):
    """The guard's point is that no body is read without a known key: a 404 or 405 answered
    without one must not read it either."""
    reads: list[str] = []

    async def receive() -> dict[str, Any]:
        reads.append("read")
        return {"type": "http.request", "body": json.dumps({}).encode(), "more_body": False}

    async def request(method: str, path: str) -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "server": ("test", 80),
            "client": ("test", 1), "headers": [(b"content-type", b"application/json")],
        }  # fmt: skip
        await reader.app(scope, receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    assert asyncio.run(request("POST", "/evnts")) == 404
    assert asyncio.run(request("PUT", "/users/u1")) == 405
    assert reads == []
    assert asyncio.run(request("POST", "/events")) == 401  # the route's 401, still unread
    assert reads == []
