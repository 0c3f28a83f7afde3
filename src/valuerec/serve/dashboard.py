"""``GET /dashboard``: a small web page over the API, plus the two read-only views it needs.

The page is static (HTML, one JS file, one CSS file, all in ``static/``, no network
resources) and calls the API from the browser with a read key the user types in once. Two
endpoints exist for it because the rest of the API does not expose what it shows to a read
key: a user's last purchases, and the models' current versions with their metrics
(``GET /models`` lists every version and needs an admin key, which a dashboard must not hold).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from valuerec.serve.auth import require
from valuerec.serve.keys import Role
from valuerec.serve.repository import _utc
from valuerec.serve.routes import _ERRORS, UserId
from valuerec.serve.service import ServeService

__all__ = ["install_dashboard"]

STATIC = FsPath(__file__).with_name("static")
MAX_PURCHASES = 50

READ = [Depends(require(Role.READ))]


class Purchase(BaseModel):
    timestamp: datetime | None
    item_id: str | None
    title: str | None
    value: float | None
    quantity: float | None


class PurchasesOut(BaseModel):
    user_id: str
    items: list[Purchase]


class CurrentModel(BaseModel):
    name: str
    kind: str
    current_version: str | None = Field(
        description="The version the CURRENT pointer names; null when it names none that "
        "exists (`error` says why)."
    )
    serving_version: str | None = Field(description="The version this server answers with.")
    created_at: str | None = Field(
        description="When the served version was saved (the current one's if none is served)."
    )
    versions: int
    metrics: dict[str, Any] | None = Field(
        description="The served version's metrics (the current one's if none is served)."
    )
    error: str | None = Field(
        None, description="Why CURRENT names no version, or why its version is not served."
    )


class CurrentModelsOut(BaseModel):
    models: list[CurrentModel]


# the errors of every keyed route, the 503 of an unreadable key file included: a copy of its
# own here had left that one out of /openapi.json
router = APIRouter(responses=_ERRORS)


async def _service(request: Request) -> ServeService:
    return request.app.state.service


Service = Annotated[ServeService, Depends(_service)]


#: the page runs only its own script and style and may not be framed: a read key typed into
#: it must not be readable by, or clicked through from, another site's page
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> FileResponse:
    """The page itself; it needs no key (the data it fetches does)."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get(
    "/users/{user_id}/purchases", dependencies=READ, response_model=PurchasesOut, tags=["users"]
)
def user_purchases(
    user_id: UserId,
    svc: Service,
    limit: Annotated[int, Query(ge=1, le=MAX_PURCHASES, description="Newest first.")] = 5,
) -> PurchasesOut:
    """A user's last purchases, newest first, with item titles (empty for an unknown user)."""
    repo = svc.repo
    with repo.lock:  # the store connection is shared with the writers
        frame: pd.DataFrame = repo.store.fetch_frame(
            "SELECT e.timestamp, e.item_id, i.title, e.value, e.quantity FROM events e"
            " LEFT JOIN items i USING (item_id)"
            " WHERE e.user_id = ? AND e.event_type = 'purchase'"
            f" ORDER BY e.timestamp DESC, e.item_id LIMIT {int(limit)}",
            [user_id],
        )
    items = [
        Purchase(
            timestamp=_utc(r.timestamp),  # stored naive UTC: said so, like every other time
            item_id=None if pd.isna(r.item_id) else str(r.item_id),
            title=None if pd.isna(r.title) else str(r.title),
            value=None if pd.isna(r.value) else float(r.value),
            quantity=None if pd.isna(r.quantity) else float(r.quantity),
        )
        for r in frame.itertuples(index=False)
    ]
    return PurchasesOut(user_id=user_id, items=items)


@router.get("/models/current", dependencies=READ, response_model=CurrentModelsOut, tags=["models"])
def current_models(svc: Service) -> CurrentModelsOut:
    """Each model's current and served version, with the served version's date and metrics
    (read key): the page shows them as the model that answers, which is not the current one
    while that cannot be loaded."""
    rows = []
    for m in svc.models.describe():
        shown = m["serving_version"] or m["current_version"]
        info = next((v for v in m["versions"] if v["version"] == shown), None)
        metrics = info.get("metrics") if info else None
        rows.append(
            CurrentModel(
                name=m["name"],
                kind=m["kind"],
                current_version=m["current_version"],
                serving_version=m["serving_version"],
                created_at=_text(info.get("created_at")) if info else None,
                versions=len(m["versions"]),
                metrics=metrics if isinstance(metrics, dict) else None,
                error=m["error"],
            )
        )
    return CurrentModelsOut(models=rows)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else str(value)


def install_dashboard(app: FastAPI) -> None:
    """Add the page, its static files and its two endpoints to ``app``.

    Call it before the main router is included, so that ``/models/current`` wins over any
    ``/models/{name}`` route added there later.
    """
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
