"""Every error the API returns is one JSON shape with a clear message.

``{"error": "not_found", "message": "no user 'u9'", "details": [...]}``; validation errors
(422) list each bad field in ``details`` as ``{"location", "field", "reason"}`` (and ``index``
for per-event errors), so a client can point at what to fix. Unexpected exceptions become a
500 with a generic message (the traceback goes to the server log, not to the client).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "field_name", "install_error_handlers"]

log = logging.getLogger("valuerec.serve")


class ApiError(Exception):
    """An error with an HTTP status, raised anywhere in the serving layer."""

    def __init__(
        self, status: int, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


#: stable codes (HTTP reason phrases differ between Python versions: 422's did)
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal_error",
    503: "unavailable",
}


def _code(status: int) -> str:
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_body(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict:
    body: dict[str, Any] = {"error": _code(status), "message": message}
    if details is not None:
        body["details"] = details
    return body


#: what FastAPI says (a 400) when a request body cannot be decoded at all
BODY_PARSE_ERROR = "There was an error parsing the body"


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "user_ids", 2)`` -> ``user_ids[2]``: the name a client sent."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    name = ""
    for p in parts:
        name += f"[{p}]" if isinstance(p, int) else (f".{p}" if name else str(p))
    return name or "(body)"


def _validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    details = []
    for e in errors:
        loc = tuple(e.get("loc", ()))
        if e.get("type") == "json_invalid":  # loc holds a character offset, not a field
            at = loc[1] if len(loc) > 1 else "?"
            details.append(
                {"location": "body", "field": "(body)", "reason": f"invalid JSON at character {at}"}
            )
            continue
        details.append(
            {
                "location": str(loc[0]) if loc else "body",
                "field": field_name(loc),
                "reason": e.get("msg", "invalid value"),
            }
        )
    return details


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through :func:`error_body`."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        body = error_body(exc.status, exc.message, exc.details)
        return JSONResponse(jsonable_encoder(body), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(list(exc.errors()))
        fields = ", ".join(dict.fromkeys(f"{d['field']} ({d['reason']})" for d in details))
        body = error_body(422, f"invalid request: {fields}", details)
        return JSONResponse(jsonable_encoder(body), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            # a body that is not even text (not UTF-8): invalid input like malformed JSON,
            # so the documented 422, not an undocumented 400
            # Starlette says the same when the JSON nests deeper than its parser goes
            reason = "cannot be parsed as JSON (not UTF-8 text, or nested too deep)"
            detail = {"location": "body", "field": "(body)", "reason": reason}
            body = error_body(422, f"invalid request: the body {reason}", [detail])
            return JSONResponse(body, status_code=422)
        message = exc.detail if isinstance(exc.detail, str) else _code(exc.status_code)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(
            error_body(exc.status_code, message),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(500, "internal server error (details are in the server log)"),
            status_code=500,
        )
