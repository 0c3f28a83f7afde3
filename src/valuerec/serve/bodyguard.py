"""A request body is read only for a known key and up to :data:`MAX_BODY_BYTES`.

FastAPI reads and parses a body before any dependency runs, so the key check of
:mod:`valuerec.serve.auth` came after it: a client without a key made the server hold and
parse 64 MB (its memory doubled) before its 401. This plain ASGI layer answers first: a
request with a body and no key, or a key the server does not know, gets the route's own 401
unread; a body over the limit gets a 413, whether its length is declared or streamed. A key
the server knows goes on to the route, which checks its role (403) as before.

A path no route serves, or a method its route does not take, has no route whose 401 this
could be: the router answers its 404 or 405 as for any request, with or without a key, and
is handed no body, so none is read either way.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson

from valuerec.serve.auth import scope_key
from valuerec.serve.errors import error_body
from valuerec.serve.metrics import route_for

__all__ = ["MAX_BODY_BYTES", "BodyGuard"]

#: the largest request body read: a full ``POST /events`` batch (10,000 events) of ordinary
#: events is a few MB; the margin is for long texts and properties
MAX_BODY_BYTES = 32 * 2**20
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class BodyGuard:
    """ASGI middleware: 401 before reading a body without a known key, 413 above the limit."""

    def __init__(self, app: Any, state: Any, limit: int | None = None) -> None:
        self.app = app
        self.state = state
        self.limit = MAX_BODY_BYTES if limit is None else limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        route = route_for(scope)
        if route is None:  # the router's 404 or 405, which reads no body: it is given none
            await self.app(scope, _no_body(), send)
            return
        # what the router would set: the answers given here are counted under their route
        # template (metrics), not as unmatched requests
        scope["route"] = route
        headers = scope["headers"]
        key = scope_key(scope)
        if not key:
            await _reply(send, 401, "missing API key: send one in the X-API-Key header")
            return
        try:
            role = self.state.keys.role_of(key)
        except Exception:  # a broken keys file: the route answers its 503
            role = True
        if role is None:
            await _reply(send, 401, "invalid or revoked API key")
            return
        declared = next((v for k, v in headers if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _reply(send, 413, self._too_large())
            return
        # read here, up to the limit, and handed on whole: a streamed body that passes the
        # limit is refused before the route parses any of it
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _reply(send, 413, self._too_large())
                return
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: a disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.limit // 2**20} MB: send smaller batches"


def _no_body() -> Any:
    """The ``receive`` of a request answered without its body: an empty one, then nothing
    (as a client that waits), so the client's body is never read."""
    given = False

    async def receive() -> dict:
        nonlocal given
        if given:
            await anyio.sleep_forever()  # cancelled with the response's own tasks
        given = True
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


async def _reply(send: Any, status: int, message: str) -> None:
    body = orjson.dumps(error_body(status, message))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
