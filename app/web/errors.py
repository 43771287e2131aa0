"""Middlewares that turn failures into JSON answers with a reason, for the machine-facing paths.

Clients of /api/ and /webhooks/ (agents, the review page, vendors' retry logic, scripts) read
`{"error": reason, "message": ...}` from every 4xx and 5xx. aiohttp's own answers for an unknown
path, a wrong method or an oversized body are plain text, and an unexpected exception in a
handler is a bare 500; `json_errors` gives them the same shape. Pages (/, /records/..., /review)
keep aiohttp's answers: a browser shows them as they are.
"""

from __future__ import annotations

import logging

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


@web.middleware
async def broker_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503 `broker_unavailable` (JSON, with the reason) when a handler's write to Kafka failed:
    the caller learns that its resume, decision or proposal did not go through and may retry it;
    a bare 500 would say neither. (The webhook receiver answers its own 503 with a shorter wait:
    vendors time out after a few seconds.)"""
    try:
        return await handler(request)
    except KafkaError as exc:
        log.warning("%s %s: the broker refused or did not answer: %r", request.method, request.path, exc)
        message = f"Kafka did not take the write ({type(exc).__name__}); retry later"
        return web.json_response({"error": "broker_unavailable", "message": message}, status=503)
