"""Generic webhook: the alert as JSON in an Alertmanager-like envelope, optionally HMAC-signed.

Body: `{"version": "4", "receiver": "crm-guard", "status": "firing"|"resolved", "groupKey",
"groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts": [one alert in
Alertmanager's shape], "crm_guard": <the alert as crm-guard publishes it>}`.

Headers: `X-CRM-Guard-Delivery: <dedup_key>:<version>` (stable across retries: receivers can
drop repeats), and with a secret `X-CRM-Guard-Timestamp: <unix seconds>` and
`X-CRM-Guard-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
Receivers verify with `verify_signature` (or the same three lines in their language) and reject
timestamps older than five minutes. 2xx is success; 408, 429 and 5xx are retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp

from app.sinks.base import HttpSink, agent_url, iso_ms, record_url, scrub, scrub_value
from detectors.alerts import Alert

SIGNATURE_HEADER = "X-CRM-Guard-Signature"
TIMESTAMP_HEADER = "X-CRM-Guard-Timestamp"
DELIVERY_HEADER = "X-CRM-Guard-Delivery"
ZERO_TIME = "0001-01-01T00:00:00Z"


def webhook_body(alert: Alert, public_url: str) -> dict[str, Any]:
    """The JSON document posted for one alert version."""
    status = "resolved" if alert.status == "resolved" else "firing"
    labels = {
        "alertname": alert.kind,
        "severity": alert.severity.value,
        "dedup_key": alert.dedup_key,
        "actor_kind": alert.actor_kind.value,
    }
    if alert.agent:
        labels["agent"] = alert.agent
    if alert.group:
        labels["group"] = alert.group
    annotations = {
        "summary": scrub(alert.summary),
        "action": alert.action,
        "records": str(alert.records),
        "changes": str(alert.count),
    }
    generator = (
        agent_url(public_url, alert.agent)
        if alert.agent
        else record_url(public_url, alert.sample_record_keys[0])
        if alert.sample_record_keys
        else public_url
    )
    data = alert.model_dump(mode="json")
    data["summary"] = scrub(alert.summary)
    data["details"] = scrub_value(alert.details)
    return {
        "version": "4",
        "receiver": "crm-guard",
        "status": status,
        "groupKey": alert.dedup_key,
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": alert.kind},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": public_url,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": iso_ms(alert.first_event_at),
                "endsAt": iso_ms(alert.last_event_at) if status == "resolved" else ZERO_TIME,
                "generatorURL": generator,
                "fingerprint": alert.alert_id,
            }
        ],
        "crm_guard": data,
        "links": {
            "agent": agent_url(public_url, alert.agent) if alert.agent else None,
            "records": [record_url(public_url, k) for k in alert.sample_record_keys],
        },
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds as text)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str | None,
    body: bytes,
    signature: str | None,
    *,
    tolerance_seconds: float = 300.0,
    now: float | None = None,
) -> bool:
    """For receivers: the signature matches and the timestamp is recent."""
    if not timestamp or not signature:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookSink(HttpSink):
    """Posts every alert version to one URL (no throttle: machines do not mind follow-ups)."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        public_url: str,
        *,
        secret: str | None = None,
        throttle_seconds: float = 0.0,
        resend_uncertain: bool = False,
        timeout_seconds: float = 10.0,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.public_url = public_url
        self.secret = secret
        self.throttle_seconds = throttle_seconds
        self.resend_uncertain = resend_uncertain
        self.timeout_seconds = timeout_seconds
        self.extra_headers = dict(extra_headers or {})

    def request(self, alert: Alert, now: float | None = None) -> tuple[bytes, dict[str, str]]:
        """Body and headers of the POST (exposed for tests and receivers' fixtures)."""
        body = json.dumps(
            webhook_body(alert, self.public_url), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        headers = {DELIVERY_HEADER: f"{alert.dedup_key}:{alert.version}", **self.extra_headers}
        if self.secret:
            ts = str(int(time.time() if now is None else now))
            headers[TIMESTAMP_HEADER] = ts
            headers[SIGNATURE_HEADER] = sign(self.secret, ts, body)
        return body, headers

    async def send(self, alert: Alert, session: aiohttp.ClientSession) -> None:
        body, headers = self.request(alert)
        await self.post_json(session, self.url, body, headers)
