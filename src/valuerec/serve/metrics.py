"""Prometheus metrics: request counts and latency per route, events, model versions.

Each app has its own :class:`prometheus_client.CollectorRegistry` (not the process-global
one), so several apps in one process (tests) do not collide. Latency is measured by a plain
ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``, which costs a task and a
stream copy per request on the path whose p99 matters. Routes are labelled by their template
(``/users/{user_id}/recommendations``), never by the raw path, so labels stay few: the route
the router picked, or for a request answered without one (the body guard's 401 and 413, the
schema and docs pages, which FastAPI's router does not record) the route the router would
pick; ``(unmatched)`` only when no route serves the path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match

__all__ = ["CONTENT_TYPE", "UNMATCHED", "Metrics", "MetricsMiddleware", "route_for"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _ModelVersions(Collector):
    """``valuerec_model_info{name, version, kind}`` = 1 for every served model, read at scrape."""

    def __init__(self, served: Callable[[], list[tuple[str, str, str]]]) -> None:
        self._served = served

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "valuerec_model_info",
            "Models being served (value 1)",
            labels=["name", "version", "kind"],
        )
        for name, version, kind in self._served():
            g.add_metric([name, version, kind], 1.0)
        yield g


class Metrics:
    """The metrics of one app."""

    def __init__(self, served_models: Callable[[], list[tuple[str, str, str]]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "valuerec_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "valuerec_http_request_duration_seconds",
            "Time from request to response, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "valuerec_events",
            "Events posted to /events by outcome (stored, duplicate, rejected)",
            ["outcome"],
            registry=self.registry,
        )
        self.exposures = Counter(
            "valuerec_exposures_written",
            "Exposure events written back for returned recommendations",
            registry=self.registry,
        )
        self.fast_path = Counter(
            "valuerec_fast_path_requests",
            "User recommendation requests answered by the fast path (the rest went through"
            " the full FastAPI route)",
            registry=self.registry,
        )
        self.registry.register(_ModelVersions(served_models))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # the labelled children are looked up once per (method, route, status): the lookup
        # costs more than the update itself, on every request. A method HTTP does not define
        # is "other": a client inventing methods grew the labels (and memory) without end
        method = method if method in _METHODS else "other"
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return _generate(self.registry)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: the route label of a request no route serves (a 404)
UNMATCHED = "(unmatched)"


def _routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route in the order the router tries them. FastAPI keeps an included router as
    one entry that holds the router (``original_router``; its routes carry their full paths,
    as the app includes its routers without a prefix), so those are opened."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def route_for(scope: dict, *, full: bool = True) -> BaseRoute | None:
    """The route the app's router hands this request to: the first that takes its path and
    method, or with ``full=False`` failing that the first that takes its path (whose 405 it
    answers); None when none does (a 404)."""
    partial = None
    for route in _routes(scope["app"].router.routes):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return None if full else partial


class MetricsMiddleware:
    """Times every HTTP request and counts it by route template and status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        # a mount's router rewrites the scope's root_path: the route is looked up, when it
        # must be, with the request as it came
        root_path = scope.get("root_path", "")

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:  # answered before routing, or by a route FastAPI does not record
                request = {"type": "http", "method": scope["method"], "path": scope["path"],
                           "root_path": root_path, "app": scope.get("app")}  # fmt: skip
                route = getattr(route_for(request, full=False), "path", UNMATCHED)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)
