"""The operator token: API changes need it when it is configured; reads and vendor webhooks do not."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.config import Settings
from app.web.auth import bearer_matches, operator_auth
from app.metrics import GuardMetrics
from app.web.keys import METRICS, SETTINGS


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def client_for(token: str | None, metrics: GuardMetrics | None = None) -> TestClient:
    app = web.Application(middlewares=[operator_auth])
    app[SETTINGS] = Settings(api_token=token)
    if metrics is not None:
        app[METRICS] = metrics
    app.router.add_get("/api/alerts", ok)
    app.router.add_post("/api/agents/{agent}/resume", ok)
    app.router.add_post("/webhooks/hubspot", ok)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_changes_need_the_token_reads_and_webhooks_do_not() -> None:
    metrics = GuardMetrics()
    client = await client_for("s3cret-token", metrics)
    try:
        missing = await client.post("/api/agents/bot/resume", json={})
        assert missing.status == 401 and (await missing.json())["error"] == "missing_token"
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await client.post("/api/agents/bot/resume", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401 and (await wrong.json())["error"] == "wrong_token"
        basic = await client.post("/api/agents/bot/resume", headers={"Authorization": "Basic s3cret-token"})
        assert basic.status == 401
        right = await client.post("/api/agents/bot/resume", headers={"Authorization": "Bearer s3cret-token"})
        assert right.status == 200
        assert (await client.get("/api/alerts")).status == 200
        assert (await client.post("/webhooks/hubspot", json=[])).status == 200  # its own signature check
        refused = metrics.registry.get_sample_value
        assert refused("crm_guard_api_refused_total", {"reason": "missing_token"}) == 1
        assert refused("crm_guard_api_refused_total", {"reason": "wrong_token"}) == 2
    finally:
        await client.close()


async def test_without_a_token_the_api_is_open() -> None:
    client = await client_for(None)
    try:
        assert (await client.post("/api/agents/bot/resume", json={})).status == 200
    finally:
        await client.close()


def test_bearer_matching() -> None:
    assert bearer_matches("Bearer abc", "abc") and bearer_matches("bearer  abc ", "abc")
    assert not bearer_matches(None, "abc") and not bearer_matches("", "abc")
    assert not bearer_matches("Bearer abcd", "abc") and not bearer_matches("Token abc", "abc")


async def test_the_guards_web_app_refuses_a_resume_without_the_token() -> None:
    """build_web_app (what `crm-guard run` serves) carries the middleware: an agent cannot resume
    itself, and the refusal comes before the handler looks at anything."""
    from app.web.server import build_web_app
    from detectors.policy import AgentPolicy, Policy

    app = build_web_app(
        {
            "settings": Settings(api_token="s3cret-token"),
            "policy": Policy(agents={"bot": AgentPolicy()}),
            "runtime": None,
        }
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        done = await client.post("/api/agents/bot/resume", json={"reason": "I am fine", "by": "bot"})
        assert done.status == 401
        pin = await client.post("/api/agents/bot/pin", json={"tier": "high", "level": "act", "by": "bot"})
        assert pin.status == 401
    finally:
        await client.close()
