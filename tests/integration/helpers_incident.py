"""A running guard with a small incident behind it, for tests that need real metrics.

`incident_guard(bootstrap, kind)` starts the guard runtime in-process on the broker (fresh topics),
its web server on a free port (serving /metrics), and three local alert sinks (Slack and the webhook
answer 200, PagerDuty answers 400 so deliveries have a `failed` outcome too); `feed_incident` then
produces, through the raw HubSpot topic and crm.proposals:

* a human setting job titles, then enrich-bot changing 25 distinct contacts within minutes (its cap
  is 20 an hour: a critical velocity_cap alert and a pause), one of them a title the human set;
* the human setting that title back (an override of enrich-bot);
* enrich-bot writing a denied field (protected_field alert) and an unknown API client writing;
* a redelivered HubSpot batch (duplicates), a message that is not JSON and a batch with a broken
  element (dead letters);
* a proposal from enrich-bot that needs a review (review backlog).

Event times are minutes before now, so alert latency is a real few minutes.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import ClientSession, web
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.runtime.assembly import build_runtime
from app.web.server import WebServer
from tests.integration.helpers_stream import fresh_settings, guard_policy, hubspot_change, produce

AGENT = "enrich-bot"  # the agent of helpers_stream.POLICY_YAML
HUMAN = {"source": "CRM_UI", "source_id": "userId:5"}


@dataclass
class SinkServer:
    """Local Slack, webhook and PagerDuty endpoints; counts what each received."""

    received: dict[str, int] = field(default_factory=lambda: {"slack": 0, "webhook": 0, "pagerduty": 0})
    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        async def slack(_: web.Request) -> web.Response:
            self.received["slack"] += 1
            return web.Response(text="ok")

        async def webhook(_: web.Request) -> web.Response:
            self.received["webhook"] += 1
            return web.json_response({"ok": True})

        async def pagerduty(_: web.Request) -> web.Response:
            self.received["pagerduty"] += 1
            body = {"status": "invalid event", "message": "Event object is invalid"}
            return web.json_response(body, status=400)

        app = web.Application()
        app.router.add_post("/slack", slack)
        app.router.add_post("/webhook", webhook)
        app.router.add_post("/pagerduty", pagerduty)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@dataclass
class RunningGuard:
    settings: Settings
    runtime: Any
    web: WebServer
    sinks: SinkServer

    @property
    def target(self) -> str:
        """host:port of the guard's web server (what Prometheus scrapes)."""
        return f"127.0.0.1:{self.web.port}"

    async def metrics_text(self) -> str:
        async with ClientSession() as session, session.get(f"http://{self.target}/metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    async def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of /metrics: (name, labels, value)."""
        text = await self.metrics_text()
        families = text_string_to_metric_families(text)
        return [(s.name, dict(s.labels), s.value) for fam in families for s in fam.samples]


@asynccontextmanager
async def incident_guard(bootstrap: str, kind: str, web_port: int = 0) -> AsyncIterator[RunningGuard]:
    """A started guard (runtime + web server + local sinks) on fresh topics; stopped on exit.
    `web_port` 0 picks a free port (see RunningGuard.target)."""
    sinks = SinkServer()
    await sinks.start()
    unique = uuid.uuid4().hex[:10]
    settings = fresh_settings(
        bootstrap, unique, partitions=1,
        slack_webhook_url=sinks.url("slack"), webhook_url=sinks.url("webhook"),
        pagerduty_routing_key="R0UT1NGKEY0000000000000000000000", pagerduty_url=sinks.url("pagerduty"),
    ).with_overrides(web_port=web_port, state_dir=tempfile.mkdtemp(prefix="crm-guard-incident-"))
    runtime, shared = build_runtime(settings, guard_policy(), idempotent=kind == "apache")
    web_server = WebServer(shared)
    try:
        await web_server.start()
        await runtime.start()
        await asyncio.wait_for(runtime.ready.wait(), 60)
        yield RunningGuard(settings, runtime, web_server, sinks)
    finally:
        await runtime.stop()
        await web_server.stop()
        await sinks.stop()
        shutil.rmtree(settings.state_dir, ignore_errors=True)  # the local pause-signing key


def incident_messages(now_ms: int | None = None) -> list[bytes]:
    """The raw HubSpot messages of the incident (see the module docstring)."""
    t = (now_ms or int(time.time() * 1000)) - 10 * 60_000
    minute = 60_000
    msgs: list[list[dict[str, Any]]] = []
    msgs.append([hubspot_change(1, 7000, "jobtitle", "CTO", t, **HUMAN),
                 hubspot_change(2, 7001, "jobtitle", "CFO", t + 1, **HUMAN)])
    burst = [hubspot_change(100 + i, 7000 + i, "jobtitle", f"Title {i}", t + minute + i * 1000)
             for i in range(25)]
    msgs += [burst[i:i + 10] for i in range(0, len(burst), 10)]
    msgs.append(burst[:3])  # HubSpot redelivers a batch: duplicates
    # the human sets contact 7000's title back; enrich-bot writes a field denied to it
    msgs.append([hubspot_change(200, 7000, "jobtitle", "CTO", t + 5 * minute, **HUMAN)])
    msgs.append([hubspot_change(300, 7100, "utm_source", "enriched", t + 5 * minute + 1)])
    # an API client no policy entry names
    msgs.append([hubspot_change(400 + i, 7200 + i, "city", "Oslo", t + 6 * minute + i, source="API",
                                source_id="31337") for i in range(3)])
    out = [orjson.dumps(m) for m in msgs]
    out.append(b"{not json")
    out.append(orjson.dumps([hubspot_change(500, 7300, "jobtitle", "x", t + 7 * minute),
                             {"eventId": 501, "subscriptionType": "contact.propertyChange"}]))
    return out


def review_proposal(now_ms: int | None = None) -> dict[str, Any]:
    """A proposal from enrich-bot on a medium-tier field: without earned trust it waits for a review."""
    now = now_ms or int(time.time() * 1000)
    change = {
        "event_id": f"proposal-ev-{now}", "source": "hubspot", "source_event_id": f"p-{now}",
        "occurred_at": now,
        "object_type": "contact", "source_object_type": "contact", "record_id": "7400", "operation": "update",
        "changes": [{"field": "lifecyclestage", "new": "customer"}],
        "actor": {"kind": "agent", "id": AGENT, "identity": {"vendor": "hubspot", "app_id": "4242"}},
    }
    return {"proposal_id": f"p-{now}", "agent": AGENT, "change": change, "reason": "a signed contract",
            "evidence": {"activity": "call-7"}, "confidence": 0.8, "proposed_at": now}


async def feed_incident(guard: RunningGuard) -> None:
    settings = guard.settings
    await produce(settings.bootstrap_servers, settings.topics.raw_hubspot, incident_messages())
    await produce(settings.bootstrap_servers, settings.topics.proposals, [orjson.dumps(review_proposal())],
                  key=AGENT.encode())


def incident_seen(samples: list[tuple[str, dict[str, str], float]]) -> list[str]:
    """What of the incident the guard's metrics do not show yet (empty once everything is counted)."""

    def matching(name: str, labels: dict[str, str]) -> list[float]:
        return [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]

    def value(name: str, **labels: str) -> float:
        return sum(matching(name, labels))

    def present(name: str, **labels: str) -> bool:
        return bool(matching(name, labels))

    deliveries = "crm_guard_alert_deliveries_total"

    wanted = {
        "events ok": value("crm_guard_events_total", outcome="ok") >= 30,
        "duplicates": value("crm_guard_events_total", outcome="duplicate") >= 3,
        "dead letters (events)": value("crm_guard_events_total", outcome="deadletter") >= 2,
        "dead letters": value("crm_guard_deadletters_total") >= 2,
        "human changes": value("crm_guard_changes_total", actor_kind="human") >= 3,
        "agent changes": value("crm_guard_agent_changes_total", agent=AGENT) >= 26,
        "override": value("crm_guard_overrides_total", agent=AGENT) >= 1,
        "pause": value("crm_guard_pauses_total", agent=AGENT) >= 1,
        "paused": value("crm_guard_agent_paused", agent=AGENT) == 1,
        "velocity_cap alert": value("crm_guard_alerts_total", detector="velocity_cap") >= 1,
        "protected_field alert": value("crm_guard_alerts_total", detector="protected_field") >= 1,
        "alert latency": value("crm_guard_alert_latency_seconds_count") >= 1,
        "slack delivered": value(deliveries, sink="slack", outcome="sent") >= 1,
        "webhook delivered": value(deliveries, sink="webhook", outcome="sent") >= 1,
        "pagerduty failed": value(deliveries, sink="pagerduty", outcome="failed") >= 1,
        "review backlog": value("crm_guard_review_backlog", agent=AGENT) >= 1,
        "trust": present("crm_guard_agent_trust", agent=AGENT),
        "consumer lag": present("crm_guard_consumer_lag"),
        "state entries": present("crm_guard_state_entries"),
        "batch time": value("crm_guard_processed_batch_seconds_count") >= 1,
    }
    return [name for name, ok in wanted.items() if not ok]


async def wait_for_incident(guard: RunningGuard, timeout_s: float = 45.0) -> list[str]:
    """Until the metrics show the whole incident; returns what is still missing at the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    missing = incident_seen(await guard.samples())
    while missing and loop.time() < deadline:
        await asyncio.sleep(0.5)
        missing = incident_seen(await guard.samples())
    return missing
