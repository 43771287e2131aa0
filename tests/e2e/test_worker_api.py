"""The worker's own JSON API (/api/alerts, /api/agents, the resume endpoint's refusals) over HTTP,
on the application `crm-guard run` serves (build_web_app). What a resume does on Kafka is in
tests/integration/test_pause_client.py; every refusal here is decided before Kafka is asked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.config import Settings
from app.runtime.worker import AlertBoard
from app.web.server import build_web_app
from detectors.alerts import Alert, PauseDecision
from detectors.base import Severity
from detectors.events import ActorKind
from detectors.policy import AgentPolicy, Policy

T0 = 1_767_225_600_000


def alert(key: str, agent: str, status: str = "open", version: int = 1) -> Alert:
    return Alert(alert_id=key, dedup_key=key, kind="mass_overwrite", severity=Severity.CRITICAL, status=status,
                 actor_key=f"agent:{agent}", actor_kind=ActorKind.AGENT, agent=agent, first_event_at=T0,
                 last_event_at=T0, detected_at=T0, summary=f"{agent} overwrote", version=version)


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    board = AlertBoard()
    board.add(alert("a1", "enricher"))
    board.add(alert("a2", "scorer", status="resolved"))
    board.add(alert("a1", "enricher", version=2))  # an update replaces the earlier version
    board.add(alert("a3", "enricher"))
    board.paused["enricher"] = PauseDecision(agent="enricher", reason="overwrote utm_source", detector="mass_overwrite",
                                             alert_id="a1", dedup_key="a1", event_id="e1", occurred_at=T0)
    app = build_web_app({"settings": Settings(), "policy": Policy(agents={"enricher": AgentPolicy(),
                                                                          "scorer": AgentPolicy()}),
                         "runtime": None, "board": board})
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def test_alerts_newest_first_filtered_and_limited(client: TestClient) -> None:
    every = (await (await client.get("/api/alerts")).json())["alerts"]
    assert [(a["dedup_key"], a["version"]) for a in every] == [("a3", 1), ("a1", 2), ("a2", 1)]
    open_ones = (await (await client.get("/api/alerts", params={"status": "open", "agent": "enricher"})).json())
    assert [a["dedup_key"] for a in open_ones["alerts"]] == ["a3", "a1"]
    assert len((await (await client.get("/api/alerts", params={"limit": "1"})).json())["alerts"]) == 1
    for bad in ("abc", "0", "-1", "1e3", "99999999999999999999"):
        answer = await client.get("/api/alerts", params={"limit": bad})
        assert answer.status == 400 and (await answer.json())["error"] == "bad_limit", bad


async def test_agents_say_who_is_paused_and_why(client: TestClient) -> None:
    agents = {a["agent"]: a for a in (await (await client.get("/api/agents")).json())["agents"]}
    assert agents["enricher"]["state"] == "paused" and agents["enricher"]["pause"]["reason"] == "overwrote utm_source"
    assert agents["enricher"]["open_alerts"] == 2
    assert agents["scorer"]["state"] == "active" and agents["scorer"]["pause"] is None


@pytest.mark.parametrize("body", [b"", b"not json", b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[]",
                                  b'{"reason": 5, "by": []}', b'{"reason": " ", "by": "dana"}', b'{"reason": "ok"}'])
async def test_a_resume_without_a_usable_body_is_400(client: TestClient, body: bytes) -> None:
    answer = await client.post("/api/agents/enricher/resume", data=body,
                               headers={"Content-Type": "application/json"})
    assert answer.status == 400 and (await answer.json())["error"] in ("not_json", "missing_field")


async def test_a_resume_of_an_agent_the_policy_does_not_know_is_404(client: TestClient) -> None:
    answer = await client.post("/api/agents/ghost/resume", json={"reason": "x", "by": "dana"})
    assert answer.status == 404 and (await answer.json())["error"] == "unknown_agent"


async def test_unknown_paths_and_methods_on_the_api_answer_json_with_a_reason(client: TestClient) -> None:
    missing = await client.get("/api/nothing-here")
    assert missing.status == 404 and missing.content_type == "application/json"
    assert (await missing.json())["error"] == "not_found"
    wrong = await client.post("/api/alerts", json={})
    assert wrong.status == 405 and wrong.content_type == "application/json"
    assert (await wrong.json())["error"] == "method_not_allowed" and "GET" in wrong.headers["Allow"]
    hook = await client.get("/webhooks/hubspot")
    assert hook.status == 405 and (await hook.json())["error"] == "method_not_allowed"
    page = await client.get("/no-such-page")  # pages keep aiohttp's own answer: a browser shows it
    assert page.status == 404 and page.content_type == "text/plain"


async def test_an_oversized_api_body_is_413_json() -> None:
    app = build_web_app({"settings": Settings(max_payload_bytes=1000), "policy": Policy(agents={"enricher": AgentPolicy()}),
                         "runtime": None, "board": AlertBoard()})
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        answer = await c.post("/api/agents/enricher/resume", data=b'{"reason": "' + b"x" * 5000 + b'"}',
                              headers={"Content-Type": "application/json"})
        assert answer.status == 413 and (await answer.json())["error"] == "too_large"


async def test_a_failing_handler_is_a_logged_500_json_naming_no_internals(caplog: pytest.LogCaptureFixture) -> None:
    app = build_web_app({"settings": Settings(), "policy": Policy(), "runtime": None})  # no alert board wired
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        answer = await c.get("/api/alerts")
        body = await answer.json()
    assert answer.status == 500 and body["error"] == "internal_error" and "KeyError" in body["message"]
    assert "Traceback" not in body["message"] and any("GET /api/alerts failed" in r.message for r in caplog.records)
