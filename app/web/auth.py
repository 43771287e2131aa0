"""API tokens: what stands between an agent and its own review decisions.

Agents have network access, and the HTTP API can approve proposals, pin an agent's autonomy and
resume a paused agent. With `api_token` set (CRM_GUARD_API_TOKEN, one shared operator token)
and/or `api_users_file` (a token per person, with a role: app/web/users.py), every change the API
makes (any method but GET/HEAD/OPTIONS under /api/) needs `Authorization: Bearer <token>`; reads
stay open, like Prometheus' and Grafana's anonymous viewing. A person's token also says who
decided: handlers read `request[API_USER]` and record that name, not the one in the body. A
reviewer may decide proposals (REVIEWER_ROUTES); pinning and resuming agents need an operator.
Vendor webhooks (/webhooks/*) carry their own signatures and are not affected. With neither
setting the API is open and `run` says so at start.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from app.web.keys import METRICS, SETTINGS, USERS
from app.web.users import ApiUser

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_USER = web.RequestKey("api_user", ApiUser)
"""The named user whose token authorized this request (absent for the shared token or none)."""

REVIEWER_ROUTES = frozenset({
    "/api/review/proposals/{id}/approve",
    "/api/review/proposals/{id}/modify",
    "/api/review/proposals/{id}/reject",
    "/api/review/batch-approve",
})
"""Changes a reviewer may make; every other change under /api/ needs an operator."""


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not header:
        return None
    scheme, _, given = header.strip().partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` (constant-time comparison)."""
    given = bearer_token(header)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


SHARED = ApiUser("", "operator")
"""Who holds the shared api_token: an operator with no name (the body says who)."""


def token_holder(request: web.Request) -> ApiUser | None:
    """The named user, or SHARED, whose token the request carries; None for no known token."""
    header = request.headers.get("Authorization")
    secret = getattr(request.app.get(SETTINGS), "api_token", None)
    if secret is not None and bearer_matches(header, secret.get_secret_value()):
        return SHARED
    token = bearer_token(header)
    users = request.app.get(USERS)
    return users.lookup(token) if users is not None and token is not None else None


def tokens_configured(request: web.Request) -> bool:
    """Whether the guard wants tokens for changes (an api_token, a users file, or both)."""
    shared = getattr(request.app.get(SETTINGS), "api_token", None)
    return shared is not None or request.app.get(USERS) is not None


def required_role(request: web.Request) -> str:
    """The role a change needs: reviewer for proposal decisions, operator for the rest."""
    resource = request.match_info.route.resource
    return "reviewer" if resource is not None and resource.canonical in REVIEWER_ROUTES else "operator"


@web.middleware
async def operator_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 with a reason for an API change without a valid token (when tokens are configured),
    403 for a person whose role does not cover it."""
    if request.method in SAFE_METHODS or not request.path.startswith("/api/"):
        return await handler(request)
    if not tokens_configured(request):
        return await handler(request)
    user = token_holder(request)
    if user is SHARED:
        return await handler(request)
    if user is not None:
        role = required_role(request)
        if user.may(role):
            request[API_USER] = user
            return await handler(request)
        return _refuse(request, 403, "forbidden_role",
                       f"{user.name} is a {user.role}; {request.method} {request.path} needs an {role}")
    reason = "wrong_token" if request.headers.get("Authorization") else "missing_token"
    return _refuse(request, 401, reason, "this change needs an API token: Authorization: Bearer <token> "
                   "(the operator's api_token, or your own from `crm-guard users add`)")


def _refuse(request: web.Request, status: int, reason: str, message: str) -> web.Response:
    # an agent trying to resume itself or approve its own proposal is worth a look: log and count it
    log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, reason)
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.api_refused.labels(reason).inc()
    headers = {"WWW-Authenticate": 'Bearer realm="crm-guard"'} if status == 401 else None
    return web.json_response({"error": reason, "message": message}, status=status, headers=headers)


def decided_by(request: web.Request, given: str | None) -> str | None:
    """Who made a change: the named user whose token authorized it, else what the body says."""
    user = request.get(API_USER)
    return user.name if user is not None else given


async def whoami(request: web.Request) -> web.Response:
    """GET /api/whoami: whom the request's bearer token names, so the review page can say who is
    deciding: {"user": name or null, "role": "reviewer"|"operator"|null, "open": true when the
    guard has no tokens}; 401 when it has tokens and this one is none of them."""
    if not tokens_configured(request):
        return web.json_response({"user": None, "role": None, "open": True})
    user = token_holder(request)
    if user is None:
        reason = "wrong_token" if request.headers.get("Authorization") else "missing_token"
        return web.json_response({"error": reason, "message": "no user holds this token"}, status=401)
    return web.json_response({"user": user.name or None, "role": user.role, "open": False})
