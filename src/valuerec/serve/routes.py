"""The endpoints: validate, check the key's role, delegate to the service.

Endpoints that only read memory (recommendations, value, segments) are ``async``: they run on
the event loop with no thread hop, which is what keeps their latency low. Endpoints that touch
the database are plain functions, so FastAPI runs them on its thread pool and a slow write
never blocks the loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import AfterValidator

from valuerec.serve.auth import require
from valuerec.serve.keys import Role
from valuerec.serve.metrics import CONTENT_TYPE
from valuerec.serve.schemas import (
    MAX_K,
    MAX_PAGE,
    MAX_VALUE_WEIGHT,
    VALUE_WEIGHT_HELP,
    BatchIn,
    BatchOut,
    ErrorOut,
    EventBatchIn,
    EventsOut,
    HealthOut,
    ItemDeleted,
    ItemIn,
    ItemOut,
    ItemPage,
    ItemPatch,
    ModelsOut,
    PromoteIn,
    SegmentsOut,
    SegmentUsersOut,
    SessionIn,
    SessionOut,
    SimilarOut,
    SwapOut,
    UserDeleted,
    UserIn,
    UserOut,
    UserPage,
    UserPatch,
    UserRecommendations,
    ValueOut,
    _one_path_segment,
    _storable,
)
from valuerec.serve.service import ServeService

__all__ = ["public", "router"]

_ERRORS = {
    401: {"model": ErrorOut, "description": "No API key, or an invalid one"},
    403: {"model": ErrorOut, "description": "The key's role is too low"},
    422: {"model": ErrorOut, "description": "Invalid input: details name each field"},
    503: {"model": ErrorOut, "description": "Unavailable: the server cannot read its API keys"},
}
_404 = {404: {"model": ErrorOut, "description": "Not found"}}
_409 = {409: {"model": ErrorOut, "description": "Conflict"}}
_503 = {503: {"model": ErrorOut, "description": "No model loaded"}}

public = APIRouter()  # /health: no key, so none of the auth errors
router = APIRouter(responses=_ERRORS)

READ = [Depends(require(Role.READ))]
WRITE = [Depends(require(Role.WRITE))]
ADMIN = [Depends(require(Role.ADMIN))]


async def _service(request: Request) -> ServeService:
    return request.app.state.service


Service = Annotated[ServeService, Depends(_service)]


def _path_id(value: str) -> str:
    """Refuse a path id that no API write could have stored, as :data:`schemas.Id` refuses it.

    Not stripped: ids are stored trimmed (``POST /events``, and the exposures that
    ``write_back`` logs, go through ingest), so ``/users/%20u1`` would be served as a new,
    cold-start user while its exposures were stored under ``u1``, another user. A NUL or half
    a surrogate pair would be stored by one backend and refused or altered by the other.
    """
    if not value.strip():
        raise ValueError("must not be blank")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace (ids are stored trimmed)")
    return _one_path_segment(_storable(value))


UserId = Annotated[str, Path(min_length=1, max_length=256), AfterValidator(_path_id)]
ItemId = Annotated[str, Path(min_length=1, max_length=256), AfterValidator(_path_id)]
K = Annotated[int, Query(ge=1, le=MAX_K, description="Number of items.")]
ModelName = Annotated[
    str | None, Query(min_length=1, max_length=64, description="Default: the server's default.")
]
Category = Annotated[
    str | None,
    # a blank category would mask every item: a 422, not an empty answer
    Query(min_length=1, max_length=256, pattern=r"\S", description="Only items in this category."),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows per page.")]
Cursor = Annotated[
    str | None, Query(min_length=1, max_length=1024, description="next_cursor of the last page.")
]


# -- service -----------------------------------------------------------------------------------
@public.get("/health", response_model=HealthOut, tags=["service"])
async def health(svc: Service) -> HealthOut:
    """Liveness and what is loaded; the one endpoint that needs no key."""
    snap = svc.models.value_or_none
    return HealthOut(
        status="ok",
        recommenders={n: h.version for n, h in svc.models.recommenders.items()},
        value_model=f"{snap.name} {snap.version}" if snap else None,
        users_in_memory=len(svc.histories),
    )


@router.get(
    "/metrics",
    dependencies=READ,
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
    tags=["service"],
)
async def metrics(svc: Service) -> Response:
    """Request counts and latency histograms per route, events, served model versions."""
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)


# -- events ------------------------------------------------------------------------------------
@router.post("/events", dependencies=WRITE, response_model=EventsOut, tags=["events"])
def post_events(body: EventBatchIn, svc: Service) -> EventsOut:
    """Store a batch of events; each bad one is reported (index, field, reason), not fatal.

    Idempotent like file ingest: an event with a known ``event_id``, or identical content,
    is counted as a duplicate and not stored again. Content includes the timestamp, which
    defaults to the time of arrival: an event with neither ``event_id`` nor ``timestamp``
    cannot be recognised when retried, and is stored again. Stored events update their users'
    histories at once: the next recommendation reflects them. If no event is valid the
    answer is a 422 with the same per-event details.
    """
    return svc.post_events(body.events)


# -- recommendations ---------------------------------------------------------------------------
@router.get(
    "/users/{user_id}/recommendations",
    dependencies=READ,
    response_model=UserRecommendations,
    responses=_503,
    tags=["recommendations"],
)
async def user_recommendations(
    user_id: UserId,
    svc: Service,
    k: K = 10,
    model: ModelName = None,
    exclude_seen: bool = True,
    category: Category = None,
    write_back: Annotated[
        bool, Query(description="Record the returned items as exposure events.")
    ] = False,
    value_weight: Annotated[
        float,
        Query(ge=0.0, le=MAX_VALUE_WEIGHT, allow_inf_nan=False, description=VALUE_WEIGHT_HELP),
    ] = 0.0,
) -> UserRecommendations:
    """Top-k items for a user, with titles and reasons; unknown users get ``cold_start``."""
    _, (rec,) = svc.recommend_users(
        [user_id],
        k=k,
        model=model,
        exclude_seen=exclude_seen,
        category=category,
        write_back=write_back,
        value_weight=value_weight,
    )
    return rec


@router.post(
    "/recommendations/batch",
    dependencies=READ,
    response_model=BatchOut,
    responses=_503,
    tags=["recommendations"],
)
async def batch_recommendations(body: BatchIn, svc: Service) -> BatchOut:
    """Top-k items for many users in one call (scored together)."""
    handle, recs = svc.recommend_users(
        body.user_ids,
        k=body.k,
        model=body.model,
        exclude_seen=body.exclude_seen,
        category=body.category,
        write_back=body.write_back,
        value_weight=body.value_weight,
        model_in="body",
    )
    return BatchOut(model=handle.name, version=handle.version, results=recs)


@router.post(
    "/sessions/recommendations",
    dependencies=READ,
    response_model=SessionOut,
    responses=_503,
    tags=["recommendations"],
)
async def session_recommendations(body: SessionIn, svc: Service) -> SessionOut:
    """Top-k items for an anonymous visitor from the events of the current session."""
    handle, cold, items = svc.recommend_session(body)
    return SessionOut(model=handle.name, version=handle.version, cold_start=cold, items=items)


@router.get(
    "/items/{item_id}/similar",
    dependencies=READ,
    response_model=SimilarOut,
    responses={**_404, **_503},
    tags=["recommendations"],
)
async def similar_items(
    item_id: ItemId,
    svc: Service,
    k: K = 10,
    model: ModelName = None,
    category: Category = None,
) -> SimilarOut:
    """Items most similar to an item by the model's own similarity; hidden items left out."""
    return svc.similar(item_id, k, model, category)


# -- value -------------------------------------------------------------------------------------
@router.get(
    "/users/{user_id}/value",
    dependencies=READ,
    response_model=ValueOut,
    responses={**_404, **_503},
    tags=["value"],
)
async def user_value(user_id: UserId, svc: Service) -> ValueOut:
    """Predicted transactions, spend, p_alive, LTV with its 80% interval, and segment."""
    return svc.user_value(user_id)


@router.get(
    "/segments", dependencies=READ, response_model=SegmentsOut, responses=_503, tags=["value"]
)
async def segments(svc: Service) -> SegmentsOut:
    """Every segment: size, predicted value and typical behaviour."""
    return svc.segments()


@router.get(
    "/segments/{name}/users",
    dependencies=READ,
    response_model=SegmentUsersOut,
    responses={**_404, **_503},
    tags=["value"],
)
async def segment_users(
    name: Annotated[str, Path(min_length=1, max_length=64)],
    svc: Service,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> SegmentUsersOut:
    """A segment's customers, highest predicted LTV first (``at-risk-high-value`` works too)."""
    return svc.segment_users(name, limit, cursor)


# -- users -------------------------------------------------------------------------------------
@router.get("/users", dependencies=READ, response_model=UserPage, tags=["users"])
def list_users(svc: Service, limit: Limit = 100, cursor: Cursor = None) -> UserPage:
    """Users (from the users table or with events), by id; follow ``next_cursor``."""
    return svc.list_users(limit, cursor)


@router.post(
    "/users",
    dependencies=WRITE,
    response_model=UserOut,
    status_code=201,
    responses=_409,
    tags=["users"],
)
def create_user(body: UserIn, svc: Service) -> UserOut:
    return svc.create_user(body)


@router.get(
    "/users/{user_id}", dependencies=READ, response_model=UserOut, responses=_404, tags=["users"]
)
def get_user(user_id: UserId, svc: Service) -> UserOut:
    return svc.get_user(user_id)


@router.patch(
    "/users/{user_id}", dependencies=WRITE, response_model=UserOut, responses=_404, tags=["users"]
)
def update_user(user_id: UserId, body: UserPatch, svc: Service) -> UserOut:
    """Change the fields given; a field sent as null is cleared."""
    return svc.update_user(user_id, body)


@router.delete(
    "/users/{user_id}",
    dependencies=WRITE,
    response_model=UserDeleted,
    responses=_404,
    tags=["users"],
)
def delete_user(user_id: UserId, svc: Service) -> UserDeleted:
    """Delete a user and all their events; the next recommendation treats them as new."""
    return UserDeleted(user_id=user_id, events_deleted=svc.delete_user(user_id))


# -- items -------------------------------------------------------------------------------------
@router.get("/items", dependencies=READ, response_model=ItemPage, tags=["items"])
def list_items(svc: Service, limit: Limit = 100, cursor: Cursor = None) -> ItemPage:
    """Catalogue items by id; follow ``next_cursor``."""
    return svc.list_items(limit, cursor)


@router.post(
    "/items",
    dependencies=WRITE,
    response_model=ItemOut,
    status_code=201,
    responses=_409,
    tags=["items"],
)
def create_item(body: ItemIn, svc: Service) -> ItemOut:
    return svc.create_item(body)


@router.get(
    "/items/{item_id}", dependencies=READ, response_model=ItemOut, responses=_404, tags=["items"]
)
def get_item(item_id: ItemId, svc: Service) -> ItemOut:
    return svc.get_item(item_id)


@router.patch(
    "/items/{item_id}", dependencies=WRITE, response_model=ItemOut, responses=_404, tags=["items"]
)
def update_item(item_id: ItemId, body: ItemPatch, svc: Service) -> ItemOut:
    """Change the fields given; ``hidden: true`` removes the item from results at once."""
    return svc.update_item(item_id, body)


@router.delete(
    "/items/{item_id}",
    dependencies=WRITE,
    response_model=ItemDeleted,
    responses=_404,
    tags=["items"],
)
def delete_item(item_id: ItemId, svc: Service) -> ItemDeleted:
    """Remove an item from the catalogue; it is hidden, so no model recommends it again."""
    svc.delete_item(item_id)
    return ItemDeleted(item_id=item_id)


# -- models ------------------------------------------------------------------------------------
@router.get("/models", dependencies=ADMIN, response_model=ModelsOut, tags=["models"])
def list_models(svc: Service) -> ModelsOut:
    """Every model artifact: versions, the current pointer and the version being served."""
    return ModelsOut(models=svc.models.describe())


@router.post(
    "/models/{name}/promote",
    dependencies=ADMIN,
    response_model=SwapOut,
    responses=_404,
    tags=["models"],
)
def promote_model(
    name: Annotated[str, Path(min_length=1, max_length=128)],
    svc: Service,
    body: Annotated[PromoteIn, Body()],
) -> SwapOut:
    """Make a version current and serve it (hot swap: loaded fully, then switched)."""
    return SwapOut(**svc.models.promote(name, body.version))


@router.post(
    "/models/{name}/rollback",
    dependencies=ADMIN,
    response_model=SwapOut,
    responses={**_404, **_409},
    tags=["models"],
)
def rollback_model(
    name: Annotated[str, Path(min_length=1, max_length=128)], svc: Service
) -> SwapOut:
    """Go back to the version promoted before the current one (hot swap)."""
    return SwapOut(**svc.models.rollback(name))
