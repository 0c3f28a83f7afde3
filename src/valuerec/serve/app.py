"""The application factory: ``create_app(db_path)`` gives a ready FastAPI app.

Everything is loaded before the factory returns (catalogue, histories, models), so the first
request is as fast as the rest, and tests can use FastAPI's ``TestClient`` on the result
directly. The lifespan starts the exposure writer and, at shutdown, writes what it holds and
closes the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from valuerec import __version__
from valuerec.artifacts import ArtifactStore, default_root
from valuerec.data.store import Store
from valuerec.serve.bodyguard import BodyGuard
from valuerec.serve.config import ServeSettings
from valuerec.serve.dashboard import install_dashboard
from valuerec.serve.errors import install_error_handlers
from valuerec.serve.fastpath import (
    PATH_TEMPLATE,
    TRIED,
    InnerFastPath,
    RecommendationFastPath,
)
from valuerec.serve.keys import KeyStore, default_keys_path
from valuerec.serve.metrics import MetricsMiddleware
from valuerec.serve.routes import public, router
from valuerec.serve.schemas import EventIn
from valuerec.serve.service import ServeService

__all__ = ["WORKER_ENV", "ValuerecAPI", "create_app", "worker_app"]

#: what ``valuerec serve --workers N`` hands each worker process: the store, keys and settings
WORKER_ENV = "VALUEREC_SERVE_WORKER"

DESCRIPTION = """Recommendations ranked for long-term value, customer value predictions and
segments, event ingestion, catalogue and user management, and model hot swaps.

Every endpoint except `/health` needs an API key in the `X-API-Key` header
(`valuerec keys create --role read|write|admin`): 401 without one, 403 when its role is too
low. Every error is JSON: `{"error", "message", "details"}`."""


class ValuerecAPI(FastAPI):
    """The FastAPI app, whose first step is the recommendation fast path.

    A request the fast path answers (:mod:`valuerec.serve.fastpath`) skips FastAPI's and our
    middleware; every other request goes through the whole stack as in any FastAPI app. Once
    middleware has been added to the app beyond its own (``own_middleware`` layers), the
    first step yields every request to the stack, so that the added middleware wraps every
    request, and the fast path answers from inside it
    (:class:`~valuerec.serve.fastpath.InnerFastPath`).
    """

    fast_path: RecommendationFastPath | None = None
    own_middleware: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        fast = self.fast_path
        if fast is not None and len(self.user_middleware) == self.own_middleware:
            if await fast(scope, send):
                return
            if scope["type"] == "http":
                scope[TRIED] = True  # declined: the inner layer need not look again
        await super().__call__(scope, receive, send)


def create_app(
    db_path: str | os.PathLike[str],
    *,
    settings: ServeSettings | None = None,
    keys_path: str | os.PathLike[str] | None = None,
    artifacts_root: str | os.PathLike[str] | None = None,
) -> FastAPI:
    """A FastAPI app serving the store at ``db_path`` and its model artifacts.

    ``keys_path`` defaults to ``<db_path>.keys.json``, ``artifacts_root`` to
    ``<db_path>.models`` (where ``valuerec train`` saves models).
    """
    settings = settings or ServeSettings()
    keys = KeyStore(keys_path if keys_path is not None else default_keys_path(db_path))
    keys.refresh()  # a broken key file is a ValueError naming it here, not a 500 per request
    store = Store(db_path)
    try:
        root = artifacts_root if artifacts_root is not None else default_root(db_path)
        arts = ArtifactStore(root)
        service = ServeService(store, arts, settings)
        service.load()
    except BaseException:
        store.close()
        raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.exposures.start()
        service.follower.start()
        try:
            yield
        finally:
            service.close()

    app = ValuerecAPI(
        title="valuerec",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.keys = keys
    install_error_handlers(app)
    install_dashboard(app)  # GET /dashboard and its read-only views
    app.include_router(public)
    app.include_router(router)
    app.state.fast_path = True
    app.fast_path = RecommendationFastPath(app)
    route = next(r for r in router.routes if getattr(r, "path", None) == PATH_TEMPLATE)
    app.add_middleware(InnerFastPath, fast_path=app.fast_path, route=route)
    app.add_middleware(BodyGuard, state=app.state)  # before any body is read
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)  # outermost of ours
    app.own_middleware = len(app.user_middleware)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, with the real event schema on ``POST /events``.

    The endpoint takes the events as raw JSON so that one bad event cannot reject the batch
    (each is validated on its own); the schema still tells clients what an event looks like.
    """
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    event = EventIn.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(event.pop("$defs", {}))
    components["EventIn"] = event
    batch = components.get("EventBatchIn", {}).get("properties", {}).get("events")
    if batch is not None:
        batch["items"] = {"$ref": "#/components/schemas/EventIn"}
    app.openapi_schema = schema
    return schema


def app_from_env() -> FastAPI:  # pragma: no cover - for `uvicorn --factory`
    """``uvicorn valuerec.serve.app:app_from_env --factory``: the store from ``$VALUEREC_DB``."""
    from valuerec.data.store import default_db_path
    from valuerec.serve.config import load_settings

    return create_app(default_db_path(), settings=load_settings())


def worker_app() -> FastAPI:
    """The app of one worker of ``valuerec serve --workers N`` (uvicorn's factory).

    uvicorn starts each worker as a new process, which cannot be handed an app object, so the
    command puts the store, the key file and the settings in :data:`WORKER_ENV` (JSON) and
    each worker builds its own app from it: its own histories, catalogue and models in
    memory, kept in step with the other workers' writes by the store's change feed
    (:mod:`valuerec.serve.follow`).
    """
    spec = json.loads(os.environ[WORKER_ENV])
    return create_app(
        spec["db"], settings=ServeSettings.model_validate(spec["settings"]), keys_path=spec["keys"]
    )
