"""The API-key check every endpoint but ``/health`` depends on: 401 without, 403 below role.

Keys and roles live in :mod:`valuerec.serve.keys` (no web framework there, so the command line
can manage keys without importing FastAPI).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from valuerec.serve.errors import ApiError
from valuerec.serve.keys import Role

__all__ = ["HEADER", "require", "scope_key"]

HEADER = "X-API-Key"
_HEADER_BYTES = HEADER.lower().encode()


def scope_key(scope: dict) -> str | None:
    """The API key of a raw ASGI request (its first ``X-API-Key`` header), for the layers
    that answer before FastAPI (``fastpath``, ``bodyguard``); None without one."""
    key = next((v for k, v in scope["headers"] if k == _HEADER_BYTES), None)
    return key.decode("latin-1") if key else None


log = logging.getLogger("valuerec.serve")

_header = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    description="API key from `valuerec keys create --role read|write|admin`.",
)


def require(role: Role) -> Callable[..., Awaitable[Role]]:
    """A dependency that lets a request through only with a key of at least ``role``."""

    async def check(request: Request, key: str | None = Security(_header)) -> Role:
        if not key:
            raise ApiError(401, f"missing API key: send one in the {HEADER} header")
        try:
            got = request.app.state.keys.role_of(key)
        except ValueError as exc:  # the key file was broken while the server runs
            log.error("%s", exc)
            raise ApiError(
                503, "the server cannot read its API keys (see its log): no key is accepted"
            ) from None
        if got is None:
            raise ApiError(401, "invalid or revoked API key")
        if got < role:
            article = "an" if role.label[0] in "aeiou" else "a"
            raise ApiError(
                403,
                f"this endpoint needs {article} {role.label} key; this key's role is {got.label}",
            )
        return got

    return check
