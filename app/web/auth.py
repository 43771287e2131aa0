"""The operator token: what stands between an agent and its own review decisions.

Agents have network access, and the HTTP API can approve proposals, pin an agent's autonomy and
resume a paused agent. With `api_token` set (CRM_GUARD_API_TOKEN), every change the API makes
(any method but GET/HEAD/OPTIONS under /api/) needs `Authorization: Bearer <token>`; reads stay
open, like Prometheus' and Grafana's anonymous viewing. Vendor webhooks (/webhooks/*) carry their
own signatures and are not affected. Without a token the API is open and `run` says so at start.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from app.web.keys import METRICS, SETTINGS

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` (constant-time comparison)."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@web.middleware
async def operator_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 with a reason for an API change without the operator token (when one is configured)."""
    if request.method in SAFE_METHODS or not request.path.startswith("/api/"):
        return await handler(request)
    settings = request.app.get(SETTINGS)
    secret = getattr(settings, "api_token", None)
    if secret is None:
        return await handler(request)
    header = request.headers.get("Authorization")
    if bearer_matches(header, secret.get_secret_value()):
        return await handler(request)
    reason = "wrong_token" if header else "missing_token"
    # an agent trying to resume itself or approve its own proposal is worth a look: log and count it
    log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, reason)
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.api_refused.labels(reason).inc()
    return web.json_response(
        {
            "error": reason,
            "message": "this change needs the operator token: Authorization: Bearer <api_token>",
        },
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="crm-guard"'},
    )
