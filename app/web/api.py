"""Health, Prometheus metrics, alerts and agents: the JSON API every deployment has."""

from __future__ import annotations

import os

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.metrics_merge import merge_expositions
from app.web.auth import decided_by, whoami
from app.web.keys import BOARD, METRICS, PEER_METRICS, POLICY, RUNTIME, SETTINGS

PEER_SCRAPE_TIMEOUT_S = 2.0
"""How long /metrics waits for the record process's metrics before it reports the worker down."""


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app.get(RUNTIME)
    ready = runtime is not None and runtime.ready.is_set()
    return web.json_response({"status": "ok" if ready else "starting"}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    peer_url = request.app.get(PEER_METRICS)
    if peer_url:  # a worker of two processes: the record process's series too (app/metrics_merge.py)
        body = merge_expositions(body.decode(), await _scrape(peer_url))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _scrape(url: str) -> str | None:
    """The text exposition at url, or None when it does not answer in time."""
    try:
        timeout = aiohttp.ClientTimeout(total=PEER_SCRAPE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                return None
            return await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None


MAX_ALERTS = 2000
"""Most alerts one GET /api/alerts returns (the board keeps the latest 2,000)."""


async def alerts(request: web.Request) -> web.Response:
    """GET /api/alerts?status=open&agent=…&limit=200: the latest version of recent alerts, newest first."""
    board = request.app[BOARD]
    status = request.query.get("status")
    agent = request.query.get("agent")
    raw_limit = request.query.get("limit", "200")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_ALERTS:
        return web.json_response({"error": "bad_limit", "message": f"limit must be 1 to {MAX_ALERTS}"}, status=400)
    items = [
        a.model_dump(mode="json") for a in reversed(board.alerts.values())
        if (status is None or a.status == status) and (agent is None or a.agent == agent)
    ]
    return web.json_response({"alerts": items[: int(raw_limit)]})


async def agents(request: web.Request) -> web.Response:
    board = request.app[BOARD]
    policy = request.app[POLICY]
    out = []
    for name in sorted(set(policy.agents) | set(board.paused)):
        pause = board.paused.get(name)
        out.append({
            "agent": name,
            "state": "paused" if pause else "active",
            "pause": pause.model_dump(mode="json") if pause else None,
            "open_alerts": len(board.open_for(name)),
        })
    return web.json_response({"agents": out})


async def resume(request: web.Request) -> web.Response:
    """POST /api/agents/{agent}/resume {"reason": "...", "by": "..."}: a signed resume on guard.pause
    (`by` is the token holder's name when a named user's token authorized it)."""
    from app.cli_agents import UserError, resume_agent

    agent = request.match_info["agent"]
    if agent not in request.app[POLICY].agents:
        return web.json_response({"error": "unknown_agent", "message": f"no agent named {agent!r}"}, status=404)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:  # nesting too deep included (json.loads would raise RecursionError)
        return web.json_response({"error": "not_json", "message": "the body must be JSON"}, status=400)
    reason = body.get("reason") if isinstance(body, dict) else None
    by = decided_by(request, body.get("by") if isinstance(body, dict) else None)
    if not isinstance(reason, str) or not reason.strip() or not isinstance(by, str) or not by.strip():
        return web.json_response({"error": "missing_field", "message": "reason and by are required"}, status=400)
    runtime = request.app[RUNTIME]
    try:
        payload, _ = await resume_agent(request.app[SETTINGS], agent, reason.strip(), by.strip(), env=os.environ,
                                        idempotent=bool(runtime and runtime.idempotent))
    except UserError as exc:  # the guard cannot sign a resume (no pause key configured): the server's setup
        return web.json_response({"error": "cannot_resume", "message": str(exc)}, status=503)
    return web.json_response({"agent": agent, "state": payload.state, "seq": payload.seq})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/agents", agents)
    app.router.add_get("/api/whoami", whoami)
    app.router.add_post("/api/agents/{agent}/resume", resume)
