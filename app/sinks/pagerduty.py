"""PagerDuty Events API v2 (POST /v2/enqueue): trigger on open and update, resolve on resolved.

`dedup_key` is the alert's dedup key (<= 255 characters), so repeated triggers of one alert add
log entries to one PagerDuty alert instead of paging again, and a resend after a crash is harmless
(`resend_uncertain=True`). 202 is success; 400 (invalid event) is not retried; 429 and 5xx are,
with Retry-After when given. PagerDuty allows about 120 events per minute per routing key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp

from app.sinks.base import (
    HttpSink,
    actor_label,
    agent_url,
    iso_ms,
    record_url,
    scrub,
    scrub_value,
    truncate,
)
from detectors.alerts import Alert

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX = 1024
DEDUP_MAX = 255
SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


def pd_dedup_key(alert: Alert) -> str:
    """The alert's dedup key; hashed in the unlikely case it exceeds PagerDuty's 255 characters."""
    key = alert.dedup_key
    return key if len(key) <= DEDUP_MAX else "crm-guard:" + hashlib.sha256(key.encode()).hexdigest()


def pagerduty_event(alert: Alert, routing_key: str, public_url: str) -> dict[str, Any]:
    """The Events API v2 body for this alert version."""
    dedup = pd_dedup_key(alert)
    if alert.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup}
    who = actor_label(alert)
    paused = " [agent paused]" if alert.action == "paused" else ""
    summary = truncate(
        f"crm-guard {alert.kind}: {who}{paused}: {scrub(alert.summary)} ({alert.records} records)",
        SUMMARY_MAX,
    )
    links = []
    if alert.agent:
        links.append(
            {"href": agent_url(public_url, alert.agent), "text": f"Agent {alert.agent} in crm-guard"}
        )
    for key in alert.sample_record_keys[:3]:
        links.append({"href": record_url(public_url, key), "text": f"Timeline of {key}"})
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": summary,
            "source": f"crm-guard/{who}",
            "severity": SEVERITY.get(alert.severity.value, "warning"),
            "timestamp": iso_ms(alert.last_event_at),
            "component": who,
            "group": ",".join(alert.object_types) or "crm",
            "class": alert.kind,
            "custom_details": {
                "agent": alert.agent,
                "actor": alert.actor_key,
                "actor_kind": alert.actor_kind.value,
                "detector": alert.kind,
                "group": alert.group,
                "records_affected": alert.records,
                "changes": alert.count,
                "since": iso_ms(alert.first_event_at),
                "last_seen": iso_ms(alert.last_event_at),
                "sample_records": alert.sample_record_keys,
                "evidence_event_ids": alert.evidence_event_ids,
                "action_taken": "paused" if alert.action == "paused" else "none",
                "alert_id": alert.alert_id,
                "update": alert.version,
                "evidence": scrub_value(alert.details),
            },
        },
        "links": links,
        "client": "crm-guard",
        "client_url": public_url,
    }


class PagerDutySink(HttpSink):
    """Sends Events API v2 events for one routing key (the 32-character integration key)."""

    name = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        public_url: str,
        *,
        url: str = DEFAULT_URL,
        resend_uncertain: bool = True,
        timeout_seconds: float = 10.0,
    ) -> None:
        if len(routing_key) != 32:
            raise ValueError("PagerDuty routing key must be the 32-character integration key")
        self.routing_key = routing_key
        self.public_url = public_url
        self.url = url
        self.throttle_seconds = 0.0
        self.resend_uncertain = resend_uncertain
        self.timeout_seconds = timeout_seconds

    def wants(self, alert: Alert, delivered_before: bool) -> bool:
        """A resolve for an alert never triggered here is not sent."""
        return alert.status != "resolved" or delivered_before

    async def send(self, alert: Alert, session: aiohttp.ClientSession) -> None:
        body = json.dumps(pagerduty_event(alert, self.routing_key, self.public_url), ensure_ascii=False)
        await self.post_json(session, self.url, body.encode("utf-8"))
