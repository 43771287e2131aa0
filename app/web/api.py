"""Health, Prometheus metrics, alerts and agents: the JSON API every deployment has."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app.get("runtime")
    ready = runtime is not None and runtime.ready.is_set()
    return web.json_response({"status": "ok" if ready else "starting"}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app["metrics"].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def alerts(request: web.Request) -> web.Response:
    board = request.app["board"]
    status = request.query.get("status")
    agent = request.query.get("agent")
    items = [
        a.model_dump(mode="json") for a in reversed(board.alerts.values())
        if (status is None or a.status == status) and (agent is None or a.agent == agent)
    ]
    return web.json_response({"alerts": items[: int(request.query.get("limit", "200"))]})


async def agents(request: web.Request) -> web.Response:
    board = request.app["board"]
    policy = request.app["policy"]
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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/agents", agents)
