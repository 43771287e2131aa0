"""The review queue over HTTP: a JSON API (OpenAPI 3 described) and the /review page.

Needs on the application: `app[REVIEW]` (app/web/keys.py), a started app.review.service.ReviewService.

API (docs/openapi-review.yaml, also served at /api/review/openapi.json):
  GET  /api/review/proposals[?status=&agent=&kind=&field=&tier=&limit=]  grouped by agent and kind
  GET  /api/review/proposals/{id}                       one proposal, current beside proposed values
  POST /api/review/proposals/{id}/approve  {"by", "reason"}
  POST /api/review/proposals/{id}/modify   {"by", "reason", "set": {field: value}}
  POST /api/review/proposals/{id}/reject   {"by", "reason", "category"}
  POST /api/review/batch-approve           {"by", "reason", "filter": {...}, "ids": [...]}
  GET  /api/agents/{agent}/trust                        trust per tier with evidence, levels, history
  POST /api/agents/{agent}/pin             {"tier", "level" | null, "by", "reason"}
Errors: 400 bad body, 404 unknown id or agent, 409 already decided, 503 not started; always
{"error": reason}. `by` (who decided) is the token holder's name when a named user's token
(api_users_file, app/web/users.py) authorized the request; else it comes from the body, else the
X-Forwarded-User header an authenticating proxy sets.

Run `python -m app.web.review --openapi > docs/openapi-review.yaml` after changing the API.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.review.models import REJECT_CATEGORIES, ReviewFilter, ReviewStatus
from app.review.service import ReviewError, ReviewService, describe_validation
from app.web.auth import decided_by
from app.web.keys import REVIEW
from detectors.policy import Autonomy, Tier

STATIC = Path(__file__).resolve().parent / "static"
_STATIC_FILES = {"review.js": "application/javascript", "review.css": "text/css"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str | None = Field(default=None, max_length=200, description="who decides (else X-Forwarded-User)")
    reason: str = Field(default="", max_length=2000)


class ApproveBody(_Body):
    """Approve a pending proposal as proposed."""


class ModifyBody(_Body):
    """Approve with changed values; only fields of the proposal may be set."""

    set: dict[str, Any] = Field(min_length=1, description="field -> value to write instead")


class RejectBody(_Body):
    """Reject a pending proposal; the reason and its category are sent to the agent."""

    reason: str = Field(min_length=1, max_length=2000)
    category: Literal[REJECT_CATEGORIES] = "other"  # type: ignore[valid-type]


class BatchFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    agent: str | None = None
    kind: str | None = None
    field: str | None = None
    tier: Tier | None = None


class BatchApproveBody(_Body):
    """Approve every pending proposal matching the filter, and among `ids` when given; a filter
    naming something, or ids, is required: approving the whole queue takes a deliberate filter."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"anyOf": [{"required": ["ids"]}, {"required": ["filter"]}]})

    filter: BatchFilter = Field(default_factory=BatchFilter)
    ids: list[str] | None = Field(default=None, max_length=1000)


class PinBody(_Body):
    """Pin an agent's autonomy in a tier (level null unpins)."""

    tier: Tier
    level: Autonomy | None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _service(request: web.Request) -> ReviewService:
    service: ReviewService | None = request.app.get(REVIEW)
    if service is None or not service.started.is_set():
        raise web.HTTPServiceUnavailable(text=orjson.dumps({"error": "the review service is not running"}).decode(),
                                         content_type="application/json")
    return service


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        raw = await request.read()
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise _Bad(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _Bad("body must be a JSON object")
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        raise _Bad(describe_validation(exc)) from exc
    if isinstance(body, _Body):
        given = body.by if (body.by or "").strip() else (
            request.headers.get("X-Forwarded-User") or request.headers.get("X-Remote-User"))
        body.by = decided_by(request, given)  # a named user's token says who, whatever the body says
    return body


class _Bad(Exception):
    pass


def _handled(handler: Any) -> Any:
    """Turn refusals into 4xx JSON answers: {"error": reason}."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except _Bad as exc:
            return _error(400, str(exc))
        except ReviewError as exc:
            return _error(exc.status, str(exc))

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


# ---- handlers ---------------------------------------------------------------------------------

async def list_proposals(request: web.Request) -> web.Response:
    service = _service(request)
    query = request.query
    status_text = query.get("status", "pending")
    try:
        status = None if status_text == "all" else ReviewStatus(status_text)
        flt = ReviewFilter(agent=query.get("agent") or None, kind=query.get("kind") or None,
                           field=query.get("field") or None, tier=query.get("tier") or None, status=status)
        limit = int(query.get("limit", "500"))
    except (ValueError, ValidationError) as exc:
        raise _Bad(f"bad query: {exc.errors()[0]['msg'] if isinstance(exc, ValidationError) else exc}") from exc
    if not 0 < limit <= 5000:
        raise _Bad("limit must be between 1 and 5000")
    return _json(await service.list_view(flt, limit=limit))


async def show_proposal(request: web.Request) -> web.Response:
    service = _service(request)
    return _json(await service.view(service.get(request.match_info["id"])))


async def approve(request: web.Request) -> web.Response:
    service = _service(request)
    body: ApproveBody = await _body(request, ApproveBody)
    record = await service.approve(request.match_info["id"], body.by or "", body.reason)
    return _json(await service.view(record))


async def modify(request: web.Request) -> web.Response:
    service = _service(request)
    body: ModifyBody = await _body(request, ModifyBody)
    record = await service.modify(request.match_info["id"], body.by or "", body.reason, body.set)
    return _json(await service.view(record))


async def reject(request: web.Request) -> web.Response:
    service = _service(request)
    body: RejectBody = await _body(request, RejectBody)
    record = await service.reject(request.match_info["id"], body.by or "", body.reason, body.category)
    return _json(await service.view(record))


async def batch_approve(request: web.Request) -> web.Response:
    service = _service(request)
    body: BatchApproveBody = await _body(request, BatchApproveBody)
    flt = ReviewFilter(**body.filter.model_dump())
    result = await service.batch_approve(body.by or "", body.reason, flt, body.ids)
    return _json(result)


async def agent_trust(request: web.Request) -> web.Response:
    service = _service(request)
    return _json(service.trust_snapshot(request.match_info["agent"]))


async def agent_pin(request: web.Request) -> web.Response:
    service = _service(request)
    body: PinBody = await _body(request, PinBody)
    event = await service.pin(request.match_info["agent"], body.tier, body.level, body.by or "", body.reason)
    return _json({"event": event, "trust": service.trust_snapshot(request.match_info["agent"])})


async def openapi_json(request: web.Request) -> web.Response:
    return _json(openapi_spec())


async def page(request: web.Request) -> web.Response:
    return web.Response(text=(STATIC / "review.html").read_text(), content_type="text/html")


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC / name).read_bytes(), content_type=_STATIC_FILES[name],
                        headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    """The review API and page. Needs app[REVIEW] (ReviewService)."""
    r = app.router
    r.add_get("/api/review/proposals", _handled(list_proposals))
    r.add_get("/api/review/proposals/{id}", _handled(show_proposal))
    r.add_post("/api/review/proposals/{id}/approve", _handled(approve))
    r.add_post("/api/review/proposals/{id}/modify", _handled(modify))
    r.add_post("/api/review/proposals/{id}/reject", _handled(reject))
    r.add_post("/api/review/batch-approve", _handled(batch_approve))
    r.add_get("/api/review/openapi.json", openapi_json)
    r.add_get("/api/agents/{agent}/trust", _handled(agent_trust))
    r.add_post("/api/agents/{agent}/pin", _handled(agent_pin))
    r.add_get("/review", page)
    r.add_get("/review/static/{name}", static_file)


# ---- OpenAPI ----------------------------------------------------------------------------------

def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body_schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (ApproveBody, ModifyBody, RejectBody, BatchApproveBody, PinBody):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            out[name] = sub
        out[model.__name__] = schema
    return out


_VALUE = {"description": "any JSON value as the CRM holds it"}
_ITEM = {
    "type": "object",
    "required": ["proposal_id", "agent", "kind", "status", "record_key", "fields", "gate"],
    "properties": {
        "proposal_id": {"type": "string"},
        "agent": {"type": "string"},
        "kind": {"type": "string", "description": "object_type.field[+field] or object_type.operation"},
        "tier": {"type": ["string", "null"], "enum": ["low", "medium", "high", None]},
        "status": {"type": "string", "enum": [s.value for s in ReviewStatus]},
        "record_key": {"type": "string", "description": "source/object_type/record_id"},
        "source": {"type": "string"}, "object_type": {"type": "string"}, "record_id": {"type": "string"},
        "operation": {"type": "string"},
        "fields": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "tier": {"type": "string"}, "proposed": _VALUE,
            "current": _VALUE, "current_known": {"type": "boolean"},
            "agent_old": _VALUE, "applied": _VALUE}}},
        "reason": {"type": "string"}, "evidence": _VALUE,
        "confidence": {"type": ["number", "null"]},
        "proposed_at": {"type": "integer", "description": "ms since the epoch, UTC"},
        "received_at": {"type": "integer"},
        "gate": {"type": "object", "properties": {
            "action": {"type": "string", "enum": ["act", "review", "reject"]}, "reason": {"type": "string"},
            "tier": {"type": ["string", "null"]}, "trust": {"type": ["number", "null"]},
            "level": {"type": ["string", "null"]},
            "violations": {"type": "array", "items": {"type": "string"}}}},
        "decided_by": {"type": ["string", "null"]},
        "decided_at": {"type": ["integer", "null"]},
        "decision_reason": {"type": "string"},
        "category": {"type": ["string", "null"]},
        "via": {"type": ["string", "null"], "enum": ["gate", "human", "expiry", None]},
    },
}
_LIST = {
    "type": "object",
    "properties": {
        "total": {"type": "integer"},
        "backlog": {"type": "object", "additionalProperties": {"type": "integer"},
                    "description": "pending proposals per agent"},
        "groups": {"type": "array", "items": {"type": "object", "properties": {
            "agent": {"type": "string"}, "kind": {"type": "string"}, "count": {"type": "integer"},
            "items": {"type": "array", "items": _ref("ReviewItem")}}}},
    },
}
_TRUST = {
    "type": "object",
    "properties": {
        "agent": {"type": "string"},
        "pending": {"type": "integer"},
        "tiers": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "trust": {"type": "number"}, "alpha": {"type": "number"}, "beta": {"type": "number"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "since_level": {"type": "object"}, "consecutive_failures": {"type": "integer"},
            "level": {"type": "string", "enum": ["observe", "propose", "act"]},
            "level_source": {"type": "string", "enum": ["pin", "policy_pin", "trust", "policy"]},
            "pinned": {"type": ["string", "null"]}, "band": {"type": "string"}}}},
        "history": {"type": "array", "items": {"type": "object"}},
    },
}
_BATCH = {"type": "object", "properties": {
    "approved": {"type": "array", "items": {"type": "string"}},
    "skipped": {"type": "array", "items": {"type": "object", "properties": {
        "proposal_id": {"type": "string"}, "reason": {"type": "string"}}}}}}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _responses(ok: str, *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": _ref(ok)}}}}
    text = {400: "Bad body or query", 401: "The guard wants an API token and the request carried none it knows",
            403: "The token's user has a role that does not cover this change (pinning needs an operator)",
            404: "Unknown proposal or agent", 409: "Already decided", 503: "The review service is not running"}
    for code in codes:
        out[str(code)] = {"description": text[code], "content": {"application/json": {"schema": _ref("Error")}}}
    return out


def _post(summary: str, body: str, ok: str, *codes: int, params: list[Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
        "responses": _responses(ok, 401, 403, *codes),
        "security": [{"operatorToken": []}],  # enforced when the guard has tokens configured (app/web/auth.py)
    }
    if params:
        op["parameters"] = params
    return {"post": op}


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the review API, built from the same models the handlers use."""
    pid = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    agent = [{"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}]
    query = [
        {"name": "status", "in": "query", "schema": {"type": "string", "default": "pending",
                                                      "enum": [s.value for s in ReviewStatus] + ["all"]}},
        {"name": "agent", "in": "query", "schema": {"type": "string"}},
        {"name": "kind", "in": "query", "schema": {"type": "string"}},
        {"name": "field", "in": "query", "schema": {"type": "string"}},
        {"name": "tier", "in": "query", "schema": {"type": "string", "enum": ["low", "medium", "high"]}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 500, "minimum": 1,
                                                      "maximum": 5000}},
    ]
    schemas = {"ReviewItem": _ITEM, "ReviewList": _LIST, "Trust": _TRUST, "BatchResult": _BATCH,
               "PinResult": {"type": "object", "properties": {"event": {"type": "object"}, "trust": _ref("Trust")}},
               "Error": _ERROR, **_body_schemas()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "crm-guard review API", "version": "1",
                 "description": "Proposals gated by scope and trust, the review queue, and agent trust."},
        "paths": {
            "/api/review/proposals": {"get": {"summary": "Proposals grouped by agent and kind (pending by default)",
                                              "parameters": query, "responses": _responses("ReviewList", 400, 503)}},
            "/api/review/proposals/{id}": {"get": {"summary": "One proposal", "parameters": pid,
                                                   "responses": _responses("ReviewItem", 404, 503)}},
            "/api/review/proposals/{id}/approve": _post("Approve as proposed", "ApproveBody", "ReviewItem",
                                                        400, 404, 409, 503, params=pid),
            "/api/review/proposals/{id}/modify": _post("Approve with changed values", "ModifyBody", "ReviewItem",
                                                       400, 404, 409, 503, params=pid),
            "/api/review/proposals/{id}/reject": _post("Reject with a reason", "RejectBody", "ReviewItem",
                                                       400, 404, 409, 503, params=pid),
            "/api/review/batch-approve": _post("Approve every pending proposal matching a filter or ids",
                                               "BatchApproveBody", "BatchResult", 400, 503),
            "/api/agents/{agent}/trust": {"get": {"summary": "Trust per tier with evidence counts and history",
                                                  "parameters": agent, "responses": _responses("Trust", 404, 503)}},
            "/api/agents/{agent}/pin": _post("Pin (or unpin) an agent's autonomy in a tier", "PinBody",
                                             "PinResult", 400, 404, 503, params=agent),
        },
        "components": {"schemas": schemas, "securitySchemes": {"operatorToken": {
            "type": "http", "scheme": "bearer",
            "description": "The guard's api_token (CRM_GUARD_API_TOKEN) or a named user's token (api_users_file, "
                           "`crm-guard users add`); required for changes when either is set. A named user's "
                           "name is recorded as who decided"}}},
    }


def openapi_yaml() -> str:
    return yaml.safe_dump(openapi_spec(), sort_keys=False, width=110)


if __name__ == "__main__":
    if sys.argv[1:] == ["--openapi"]:
        sys.stdout.write(openapi_yaml())
    else:
        print("usage: python -m app.web.review --openapi", file=sys.stderr)
        sys.exit(2)
