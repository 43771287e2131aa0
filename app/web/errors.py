"""Middlewares that turn failures into JSON answers with a reason, for the machine-facing paths.

Clients of /api/ and /webhooks/ (agents, the review page, vendors' retry logic, scripts) read
`{"error": reason, "message": ...}` from every 4xx and 5xx. aiohttp's own answers for an unknown
path, a wrong method or an oversized body are plain text, and an unexpected exception in a
handler is a bare 500; `json_errors` gives them the same shape. Pages (/, /records/..., /review)
keep aiohttp's answers: a browser shows them as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiokafka.errors import KafkaError

from app.web.auth import Handler

log = logging.getLogger(__name__)

MACHINE_PATHS = ("/api/", "/webhooks/")

_KEPT_HEADERS = ("allow", "www-authenticate", "retry-after")
_REASONS = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


def _reason(status: int, phrase: str) -> str:
    """A short slug for an HTTP error: the known ones by name, else the status phrase."""
    return _REASONS.get(status) or phrase.lower().replace(" ", "_").replace("-", "_") or f"http_{status}"


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's plain-text errors and unexpected exceptions on /api/ and /webhooks/ as JSON:
    404 `not_found`, 405 `method_not_allowed` (with the Allow header), 413 `too_large`, and 500
    `internal_error` (logged with its traceback; the answer names no internals)."""
    if not request.path.startswith(MACHINE_PATHS):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            message = f"{request.method} is not allowed here; allowed: {allowed}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS}
        return web.json_response({"error": _reason(exc.status, exc.reason), "message": message},
                                 status=exc.status, headers=headers)
    except Exception as exc:  # noqa: BLE001 - the last-resort answer; logged with its traceback
        log.exception("%s %s failed", request.method, request.path)
        message = f"the guard failed to handle this request ({type(exc).__name__}); it is logged"
        return web.json_response({"error": "internal_error", "message": message}, status=500)


def body_limit(max_bytes: int) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """413 for a request body over `max_bytes` (max_payload_bytes) outside /webhooks/: the app's
    own limit is the larger max_delivery_bytes, which only vendor batches need."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        size = request.content_length
        if size is not None and size > max_bytes and not request.path.startswith("/webhooks/"):
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
        return await handler(request)

    return limit


API_WRITE_WAIT_S = 10.0
"""How long a change made through /api/ waits for Kafka before the caller is told. The producer's
own request timeout is 40 s: a reviewer or an agent should not hang that long on a broker that is
down. The write goes on in the background and lands if the broker comes back; every API change is
safe to repeat (a decided proposal answers 409, a resume of an active agent changes nothing)."""

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UNBOUNDED = frozenset({"/api/review/batch-approve"})
"""Changes made of many writes in turn, answered item by item: they take as long as they take."""


@web.middleware
async def broker_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503 `broker_unavailable` (JSON, with the reason) when a handler's write to Kafka failed, or
    when an /api/ change has not been acknowledged within API_WRITE_WAIT_S: the caller learns that
    its resume, decision or proposal did not go through (or not yet) and may check and retry it;
    a bare 500 or a hung request would say neither. (The webhook receiver answers its own 503 with
    a shorter wait: vendors time out after a few seconds.)"""
    try:
        if (request.method not in _WRITE_METHODS or not request.path.startswith("/api/")
                or request.path in _UNBOUNDED):
            return await handler(request)
        work = asyncio.ensure_future(handler(request))
        try:
            return await asyncio.wait_for(asyncio.shield(work), API_WRITE_WAIT_S)
        except TimeoutError:
            if work.done():
                raise  # the handler's own TimeoutError
            work.add_done_callback(_late_outcome(request.method, request.path))
            log.warning("%s %s: Kafka has not acknowledged within %.0fs; answering 503, the write goes on",
                        request.method, request.path, API_WRITE_WAIT_S)
            message = (f"Kafka has not acknowledged the write within {API_WRITE_WAIT_S:.0f}s; it may still "
                       "go through when the broker answers: check the state before retrying")
            return web.json_response({"error": "broker_unavailable", "message": message}, status=503,
                                     headers={"Retry-After": "30"})
    except KafkaError as exc:
        log.warning("%s %s: the broker refused or did not answer: %r", request.method, request.path, exc)
        message = f"Kafka did not take the write ({type(exc).__name__}); retry later"
        return web.json_response({"error": "broker_unavailable", "message": message}, status=503)


def _late_outcome(method: str, path: str) -> Callable[[asyncio.Future[web.StreamResponse]], None]:
    """Log how a write answered with 503 ended after all."""

    def done(work: asyncio.Future[web.StreamResponse]) -> None:
        if work.cancelled():
            log.warning("%s %s: the write was cancelled after its 503", method, path)
        elif work.exception() is not None:
            log.warning("%s %s: the write failed after its 503: %r", method, path, work.exception())
        else:
            status = work.result().status
            log.info("%s %s: the write went through after its 503 (status %s)", method, path, status)

    return done
