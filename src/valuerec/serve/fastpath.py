"""The hottest endpoint without the framework's per-request machinery.

``GET /users/{user_id}/recommendations`` is what a site calls on every page view. Through
FastAPI it spent more CPU in dependency resolution, parameter validation and response-model
re-validation (about 0.4 ms) than in scoring and ranking the user (about 0.3 ms). This plain
ASGI step answers that one endpoint directly when the request is *valid and simple*: a known
key of at least the read role, query parameters that parse exactly as FastAPI would parse
them, a model that answers. Everything else (a missing or weak key, a bad or repeated
parameter, an unknown model, any error) falls through, untouched, to the FastAPI route, which
stays the one definition of the endpoint's contract: its OpenAPI schema, its 401/403/422/503
answers and their messages. A test checks that both paths give the same JSON.

It is the app's first step (:class:`valuerec.serve.app.ValuerecAPI`), before FastAPI's own
middleware (errors, telemetry, body limit) and ours (metrics, body guard), which a request it
answers does not need: those layers cost 20 us of a request's 370 us of server CPU on
MovieLens-100K. So it records its own request count and latency, under the route's template,
as the metrics middleware would; and once OpenTelemetry is configured (checked once a second) it
steps aside, so that FastAPI's tracing sees every request. An app given middleware of its own
after ``create_app`` (CORS, trusted hosts, gzip) has the fast path answer from inside every
middleware instead (:class:`InnerFastPath`), so that what was added wraps every request.

Why not a cache instead: a cache would make repeated users cheap and leave every new event's
first request as slow as before; this makes every request cheaper.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

from valuerec.serve.auth import scope_key
from valuerec.serve.keys import Role
from valuerec.serve.routes import _path_id
from valuerec.serve.schemas import MAX_K, MAX_VALUE_WEIGHT

__all__ = ["PATH_TEMPLATE", "TRIED", "InnerFastPath", "RecommendationFastPath"]

PATH_TEMPLATE = "/users/{user_id}/recommendations"
_PATH = re.compile(r"^/users/([^/]{1,256})/recommendations$")
_INT = re.compile(r"^[0-9]{1,4}$")
_FLOAT = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,9})?$")  # plain decimals; others go to FastAPI
#: the strings pydantic's lax mode accepts as booleans (case-insensitive)
_BOOLS = {
    **dict.fromkeys(("1", "on", "t", "true", "y", "yes"), True),
    **dict.fromkeys(("0", "off", "f", "false", "n", "no"), False),
}
#: query parameter -> (kind, max length) for the strings; anything else is left to FastAPI
_STRINGS = {"model": 64, "category": 256}
_FLAGS = ("exclude_seen", "write_back")
_JSON = [(b"content-type", b"application/json")]


class RecommendationFastPath:
    """Answers valid user-recommendation requests; says False for the rest, left to FastAPI.

    ``app.state.fast_path`` switches it on and off at run time: tests compare both paths on
    one app. ``valuerec_fast_path_requests`` counts how many it answered.
    """

    #: seconds between two checks whether OpenTelemetry has been configured
    TELEMETRY_CHECK_SECONDS = 1.0

    def __init__(self, app: Any) -> None:
        self.state = app.state  # the FastAPI app's state: service, keys, the fast_path switch
        # FastAPI >= 0.165 traces requests itself once OpenTelemetry is configured
        self._telemetry = getattr(app, "_native_telemetry", None)
        self._traced = False
        self._next_check = float("-inf")

    def _tracing(self, now: float) -> bool:
        """Whether FastAPI traces requests, checked once a second rather than per request:
        the check reads the environment and three providers (3 us, 5% of the fast path's
        throughput on MovieLens-100K). OpenTelemetry lets a provider be set once and never
        unset, so once on it stays on; a provider configured while the server runs has its
        requests traced from the next check on, within a second."""
        if not self._traced and now >= self._next_check and self._telemetry is not None:
            self._traced = bool(self._telemetry.enabled())
            self._next_check = now + self.TELEMETRY_CHECK_SECONDS
        return self._traced

    async def __call__(self, scope: dict, send: Callable, route: Any = None) -> bool:
        """Answer the request and return True, or return False having sent nothing.

        As the app's first step (``route`` None) it records the request's metrics itself;
        as the innermost middleware (:class:`InnerFastPath`) it sets ``scope["route"]`` for
        the metrics middleware around it, as the router would.
        """
        if scope["type"] != "http" or scope["method"] != "GET" or not self.state.fast_path:
            return False
        match = _PATH.match(scope["path"])
        if match is None:
            return False
        start = time.perf_counter()
        if route is None and self._tracing(start):
            return False  # FastAPI's tracing wraps its own stack only
        body = self._answer(scope, match.group(1))
        if body is None:
            return False
        metrics = self.state.service.metrics
        metrics.fast_path.inc()
        if route is not None:
            scope["route"] = route
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_JSON, (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:  # counted as answered even when the client has gone away meanwhile
            if route is None:
                metrics.observe("GET", PATH_TEMPLATE, 200, time.perf_counter() - start)
        return True

    def _answer(self, scope: dict, user_id: str) -> bytes | None:
        """The response body, or None to let FastAPI answer (and explain any problem)."""
        try:
            _path_id(user_id)  # a padded, blank or NUL id: the route's 422
        except ValueError:
            return None
        key = scope_key(scope)
        if not key:
            return None
        try:
            role = self.state.keys.role_of(key)
        except Exception:  # FastAPI's path reports it properly
            return None
        if role is None or role < Role.READ:
            return None
        params = _parse(scope.get("query_string", b""))
        if params is None:
            return None
        try:
            return self.state.service.recommend_user_json(user_id, **params)
        except Exception:  # an ApiError (503, unknown model) or worse:
            return None  # the FastAPI route raises it again and answers it as JSON


#: set on a request's scope once the app's first step has tried the fast path
TRIED = "valuerec.fast_path_tried"


class InnerFastPath:
    """The fast path as the innermost middleware, for an app given middleware of its own.

    A deployer who adds middleware to the app (CORS, trusted hosts, gzip, their own auth)
    expects it to wrap every request. The app's first step yields to the full stack then
    (:class:`valuerec.serve.app.ValuerecAPI`), and this layer, inside every middleware,
    answers the requests the fast path takes, so they still skip FastAPI's routing but pass
    through the deployer's middleware and ours (metrics, body guard) as any request does.
    """

    def __init__(self, app: Any, fast_path: RecommendationFastPath, route: Any) -> None:
        self.app = app
        self.fast_path = fast_path
        self.route = route  # the FastAPI route: the metrics middleware labels by its template

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get(TRIED) or not await self.fast_path(scope, send, self.route):
            await self.app(scope, receive, send)


#: query strings longer than this are parsed each time: memoising them would let clients pin
#: up to ``maxsize`` long strings (a cache-buster parameter makes every string new anyway)
_MEMO_QUERY_BYTES = 256


def _parse(query: bytes) -> Mapping[str, Any] | None:
    """The endpoint's query parameters as FastAPI would read them; None when in doubt.

    Memoised for short query strings (read-only results): a site sends the same few again
    and again.
    """
    return _parse_short(query) if len(query) <= _MEMO_QUERY_BYTES else _parse_query(query)


@functools.lru_cache(maxsize=1024)
def _parse_short(query: bytes) -> Mapping[str, Any] | None:
    return _parse_query(query)


def _parse_query(query: bytes) -> Mapping[str, Any] | None:
    out: dict[str, Any] = {
        "k": 10,
        "model": None,
        "exclude_seen": True,
        "category": None,
        "write_back": False,
        "value_weight": 0.0,
    }
    seen: set[str] = set()
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, strict_parsing=False)
    except ValueError:
        return None
    for name, value in pairs:
        if name in seen:
            return None  # repeated: leave the choice of value to FastAPI
        seen.add(name)
        if name == "k":
            if not _INT.match(value) or not 1 <= int(value) <= MAX_K:
                return None
            out["k"] = int(value)
        elif name in _FLAGS:
            flag = _BOOLS.get(value.lower())
            if flag is None:
                return None
            out[name] = flag
        elif name == "value_weight":
            if not _FLOAT.match(value) or float(value) > MAX_VALUE_WEIGHT:
                return None
            out["value_weight"] = float(value)
        elif name in _STRINGS:
            if not 1 <= len(value) <= _STRINGS[name] or value.isspace():
                return None  # blank: the route says why it is refused
            out[name] = value
        # any other parameter is ignored, as FastAPI ignores it
    return MappingProxyType(out)
