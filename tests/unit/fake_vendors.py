"""Local HTTP servers that check each request the way Slack, PagerDuty and a signed-webhook receiver
would, and answer with the vendors' status codes. Tests script answers (`script`), hold requests
(`hold`) and read what arrived (`requests`).

Checks follow the vendors' documentation:
- Slack incoming webhooks: JSON body with `text` and/or `blocks`; at most 50 blocks; header text
  plain_text <= 150; section text <= 3000, or 1-10 fields of <= 2000; context <= 10 elements.
  200 `ok`, 400 `invalid_payload` (not JSON) / `invalid_blocks`, 404, 410, 429 with Retry-After.
- PagerDuty Events API v2 (/v2/enqueue): routing_key of 32 characters, event_action trigger |
  acknowledge | resolve, dedup_key <= 255 (required unless trigger), trigger payload with summary
  (1..1024), source, severity (critical|error|warning|info), ISO 8601 timestamp if present,
  custom_details an object; body <= 512 KB. 202 {"status": "success", ...}; 400 "invalid event".
  Alerts are tracked by dedup_key like PagerDuty does (one open alert per key).
- Webhook: X-CRM-Guard-Signature over timestamp + "." + body (401 when wrong or stale).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from app.sinks.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from detectors.alerts import Alert

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+\d[\d\s().\-]{6,}\d")


@dataclass
class Seen:
    """One request as the server received it."""

    at: float
    body: bytes
    json: Any
    headers: dict[str, str]
    status: int


@dataclass
class FakeVendor:
    """Base: scripted answers, a hold switch, request log, PII sniffing."""

    script: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pii: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None
    received: asyncio.Event = field(default_factory=asyncio.Event)
    down: bool = False
    url: str = ""
    _runner: web.AppRunner | None = None

    path = "/"

    async def start(self) -> FakeVendor:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}{self.path}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeVendor:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def ok_requests(self) -> list[Seen]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        text = body.decode("utf-8", "replace")
        if EMAIL.search(text) or PHONE.search(text):
            self.pii.append(text[:200])
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        seen = Seen(time.monotonic(), body, data, dict(request.headers), 0)
        self.requests.append(seen)
        self.received.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            status, reply, headers = 503, "down", {}
        elif self.script:
            status, reply, headers = self.script.pop(0)
        else:
            status, reply, headers = self.validate(request, body, data)
            if status >= 400:
                self.errors.append(f"{status} {reply[:200]} {headers.get('X-Problems', '')}")
        seen.status = status
        return web.Response(status=status, text=reply, headers=headers)

    def validate(self, request: web.Request, body: bytes, data: Any) -> tuple[int, str, dict[str, str]]:
        raise NotImplementedError


class FakeSlack(FakeVendor):
    path = "/services/T000/B000/XXXX"

    def validate(self, request: web.Request, body: bytes, data: Any) -> tuple[int, str, dict[str, str]]:
        if not request.content_type.startswith("application/json") or not isinstance(data, dict):
            return 400, "invalid_payload", {}
        if not data.get("text") and not data.get("blocks"):
            return 400, "missing_text_or_fallback_or_attachments", {}
        blocks = data.get("blocks", [])
        problems = slack_block_problems(blocks)
        if problems:
            return 400, "invalid_blocks", {"X-Problems": "; ".join(problems)[:500]}
        return 200, "ok", {}


def slack_block_problems(blocks: Any) -> list[str]:
    """What Slack would refuse in a blocks array."""
    out: list[str] = []
    if not isinstance(blocks, list):
        return ["blocks is not a list"]
    if len(blocks) > 50:
        out.append(f"{len(blocks)} blocks > 50")
    for i, b in enumerate(blocks):
        kind = b.get("type")
        if kind == "header":
            t = b.get("text", {})
            if t.get("type") != "plain_text" or not t.get("text") or len(t["text"]) > 150:
                out.append(f"block {i}: header text must be plain_text of 1..150")
        elif kind == "section":
            if "text" in b:
                t = b["text"]
                if (
                    t.get("type") not in ("mrkdwn", "plain_text")
                    or not t.get("text")
                    or len(t["text"]) > 3000
                ):
                    out.append(f"block {i}: section text must be 1..3000")
            if "fields" in b:
                fs = b["fields"]
                if not 1 <= len(fs) <= 10 or any(len(f.get("text", "")) > 2000 for f in fs):
                    out.append(f"block {i}: 1..10 fields of <= 2000")
            if "text" not in b and "fields" not in b:
                out.append(f"block {i}: section needs text or fields")
        elif kind == "context":
            els = b.get("elements", [])
            if not 1 <= len(els) <= 10:
                out.append(f"block {i}: context needs 1..10 elements")
        elif kind in ("divider", "actions", "image"):
            pass
        else:
            out.append(f"block {i}: unknown type {kind!r}")
    return out


class FakePagerDuty(FakeVendor):
    path = "/v2/enqueue"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.alerts: dict[str, str] = {}  # dedup_key -> triggered | resolved
        self.alerts_created = 0

    def validate(self, request: web.Request, body: bytes, data: Any) -> tuple[int, str, dict[str, str]]:
        errors = pagerduty_problems(body, data)
        if errors:
            return (
                400,
                json.dumps(
                    {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
                ),
                {"Content-Type": "application/json"},
            )
        key = data.get("dedup_key")
        action = data["event_action"]
        if action == "trigger":
            if self.alerts.get(key) != "triggered":
                self.alerts_created += 1
            self.alerts[key] = "triggered"
        elif action == "resolve" and self.alerts.get(key) == "triggered":
            self.alerts[key] = "resolved"
        return (
            202,
            json.dumps({"status": "success", "message": "Event processed", "dedup_key": key}),
            {"Content-Type": "application/json"},
        )


def pagerduty_problems(body: bytes, data: Any) -> list[str]:
    """What the Events API v2 would reject."""
    if len(body) > 512 * 1024:
        return ["payload larger than 512 KB"]
    if not isinstance(data, dict):
        return ["body is not a JSON object"]
    errs = []
    rk = data.get("routing_key")
    if not isinstance(rk, str) or len(rk) != 32:
        errs.append("'routing_key' must be the 32 character integration key")
    action = data.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errs.append("'event_action' is invalid")
    key = data.get("dedup_key")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        errs.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not key:
        errs.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        p = data.get("payload")
        if not isinstance(p, dict):
            return errs + ["'payload' is missing"]
        s = p.get("summary")
        if not isinstance(s, str) or not 1 <= len(s) <= 1024:
            errs.append("'payload.summary' must be 1..1024 characters")
        if not isinstance(p.get("source"), str) or not p.get("source"):
            errs.append("'payload.source' is missing")
        if p.get("severity") not in ("critical", "error", "warning", "info"):
            errs.append("'payload.severity' is invalid")
        if "timestamp" in p:
            try:
                datetime.fromisoformat(str(p["timestamp"]).replace("Z", "+00:00"))
            except ValueError:
                errs.append("'payload.timestamp' is not ISO 8601")
        if "custom_details" in p and not isinstance(p["custom_details"], dict):
            errs.append("'payload.custom_details' must be an object")
        for link in data.get("links", []):
            if not isinstance(link, dict) or not link.get("href"):
                errs.append("'links' entries need href")
    return errs


class FakeWebhook(FakeVendor):
    path = "/hooks/crm-guard"

    def __init__(self, secret: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.secret = secret
        self.deliveries: list[str] = []

    def validate(self, request: web.Request, body: bytes, data: Any) -> tuple[int, str, dict[str, str]]:
        if self.secret is not None and not verify_signature(
            self.secret, request.headers.get(TIMESTAMP_HEADER), body, request.headers.get(SIGNATURE_HEADER)
        ):
            return 401, "bad signature", {}
        if not isinstance(data, dict) or "alerts" not in data or "crm_guard" not in data:
            return 400, "not an alert", {}
        self.deliveries.append(request.headers.get(DELIVERY_HEADER, ""))
        return 200, "", {}


T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def make_alert(**over: Any) -> Alert:
    """An alert as the alert manager publishes it (fields overridable)."""
    data: dict[str, Any] = {
        "alert_id": "0123456789abcdef0123",
        "dedup_key": "mass_overwrite:0123456789abcdef0123",
        "kind": "mass_overwrite",
        "group": "utm_source",
        "severity": "warning",
        "status": "open",
        "actor_key": "enrich-bot",
        "actor_kind": "agent",
        "agent": "enrich-bot",
        "object_types": ["contact"],
        "sample_record_keys": [f"hubspot/contact/{1000 + i}" for i in range(5)],
        "count": 12,
        "records": 9,
        "first_event_at": T0,
        "last_event_at": T0 + 600_000,
        "detected_at": T0 + 60_000,
        "summary": "enrich-bot replaced utm_source on 9 contacts (google -> enriched)",
        "evidence_event_ids": ["e1", "e2"],
        "action": "none",
        "version": 1,
        "details": {"field": "utm_source", "from": "google", "to": "enriched"},
    }
    data.update(over)
    return Alert.model_validate(data)
