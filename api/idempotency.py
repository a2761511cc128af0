"""`Idempotency-Key` on `/v1` POSTs: a client that retries after a timeout gets the first answer, not a second order.

The first request with a key claims it in the store (`begin_idempotent`, atomic across API processes), runs, and
leaves its response there for `api.idempotency_ttl_s`. A retry with the same key and body replays that response
with `Idempotent-Replayed: true`; the same key with another body is refused (422), and a retry while the first is
still running is told to wait (409 with `Retry-After`). A response of 5xx releases the key, so the retry runs.

Keys belong to the caller: the record is named after the authenticated principal, so one client can neither read
nor block another's. A request that does not authenticate passes through untouched and is refused by the route.
Webhooks are left out: their senders retry with the same event id, which the engine already deduplicates.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import authenticate
from api.problems import TYPE_PREFIX, problem_response
from graph.access import IdempotencyRecord, IdempotencyState
from graph.access_store import AccessStore
from graph.errors import AdvocacyError, StoreUnavailable

log = logging.getLogger(__name__)

HEADER: Final = "Idempotency-Key"
REPLAYED: Final = "Idempotent-Replayed"
KEY_PATTERN: Final = r"^[\x21-\x7e]{1,255}$"
_KEY: Final = re.compile(KEY_PATTERN)
_EXEMPT_PREFIXES: Final = ("/v1/webhooks/",)


def applies(method: str, path: str) -> bool:
    return method == "POST" and path.startswith("/v1/") and not path.startswith(_EXEMPT_PREFIXES)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not applies(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        client_key = Headers(scope=scope).get(HEADER.lower())
        if client_key is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        replay = _replayer(body)
        request = Request(scope, replay)
        if not _KEY.match(client_key):
            await _send(
                problem_response(
                    request,
                    status=422,
                    title="Invalid input",
                    detail=f"{HEADER} must be 1 to 255 visible ASCII characters",
                    type_=TYPE_PREFIX + "validation",
                ),
                scope,
                send,
            )
            return
        app: FastAPI = scope["app"]
        clock: Callable[[], datetime] = app.state.clock
        try:
            principal = await run_in_threadpool(authenticate, request, clock())
        except AdvocacyError:
            await self.app(scope, _replayer(body), send)
            return
        path = scope["path"] if len(scope["path"]) <= 200 else hashlib.sha256(scope["path"].encode()).hexdigest()
        record_key = f"{principal.ident}:POST {path}:{client_key}"
        fingerprint = hashlib.sha256(body).hexdigest()
        try:
            store = app.state.store_holder.get()
            existing = await run_in_threadpool(
                store.begin_idempotent,
                record_key,
                fingerprint,
                now=clock(),
                ttl=timedelta(seconds=app.state.settings.api.idempotency_ttl_s),
            )
        except StoreUnavailable as exc:
            await _send(
                problem_response(
                    request,
                    status=503,
                    title=exc.title,
                    detail=exc.public,
                    type_=TYPE_PREFIX + "store-unavailable",
                    headers={"Retry-After": str(exc.retry_after_s)},
                    extensions={"dependency": "store"},
                ),
                scope,
                send,
            )
            return
        if existing is not None:
            await _send(_answer_existing(request, existing, fingerprint), scope, send)
            return
        await self._run_and_record(scope, body, send, store, record_key)

    async def _run_and_record(self, scope: Scope, body: bytes, send: Send, store: AccessStore, record_key: str) -> None:
        status = 500
        content_type = "application/json"
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = int(message["status"])
                content_type = Headers(raw=message.get("headers", [])).get("content-type", content_type)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, _replayer(body), capture)
        except BaseException:
            await run_in_threadpool(store.abandon_idempotent, record_key)
            raise
        if status >= 500:
            await run_in_threadpool(store.abandon_idempotent, record_key)
            return
        text = b"".join(chunks).decode("utf-8", errors="replace")
        try:
            await run_in_threadpool(
                store.finish_idempotent, record_key, status=status, body=text, content_type=content_type
            )
        except AdvocacyError as exc:  # the answer already went out; the key stays claimed until it expires
            log.warning("could not record the response for an idempotency key: %s", exc.detail)


def _answer_existing(request: Request, existing: IdempotencyRecord, fingerprint: str) -> Response:
    if existing.fingerprint != fingerprint:
        return problem_response(
            request,
            status=422,
            title="Invalid input",
            detail=f"this {HEADER} was already used with a different request body; use a new key for a new request",
            type_=TYPE_PREFIX + "idempotency-key-reused",
        )
    if existing.state is IdempotencyState.IN_PROGRESS:
        return problem_response(
            request,
            status=409,
            title="Conflict",
            detail=f"a request with this {HEADER} is still being processed; retry shortly",
            type_=TYPE_PREFIX + "idempotency-in-progress",
            headers={"Retry-After": "1"},
        )
    assert existing.status is not None  # a done record has its status (`IdempotencyRecord` checks)
    return Response(
        existing.body, status_code=existing.status, media_type=existing.content_type, headers={REPLAYED: "true"}
    )


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _replayer(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _send(response: Response, scope: Scope, send: Send) -> None:
    async def no_receive() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_receive, send)


def document(schema: dict[str, Any], *, ttl_s: int) -> None:
    """Declare the header on every POST it applies to, so clients and Schemathesis see it."""
    kept = f"{ttl_s // 3600} h" if ttl_s % 3600 == 0 else f"{ttl_s} s"
    parameter = {
        "name": HEADER,
        "in": "header",
        "required": False,
        "description": (
            f"Makes a retry safe: the first response to this key (and this body) is replayed for {kept} instead of "
            "the request running again. Use a new random value (a UUID) per logical request."
        ),
        "schema": {"type": "string", "pattern": KEY_PATTERN, "maxLength": 255},
    }
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    answers = {
        "409": "A request with this `Idempotency-Key` is still running; retry after `Retry-After` seconds",
        "422": "Invalid input (including a malformed `Idempotency-Key`, or one reused with another body)",
    }
    for path, operations in schema.get("paths", {}).items():
        post = operations.get("post")
        if post is None or not applies("POST", path):
            continue
        post.setdefault("parameters", []).append(parameter)
        responses = post.setdefault("responses", {})
        for status, description in answers.items():
            response = responses.setdefault(status, {"description": description})
            response.setdefault("content", {}).update(problem)
