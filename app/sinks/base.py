"""What every sink shares: the error a send raises, the sink protocol, links, times, PII scrubbing."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from detectors.alerts import Alert


class DeliveryError(Exception):
    """A send that did not succeed. `retryable` (429, 5xx, network) or not (400, 403, 404, 410);
    `retry_after` in seconds when the vendor said how long to wait."""

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class Sink(Protocol):
    """One destination. `send` raises DeliveryError on failure; returns on success.

    `throttle_seconds`: minimum gap between two messages of one dedup key (0 = every version).
    `resend_uncertain`: after a crash between "sending" and "sent", send again (True: the
    vendor deduplicates, as PagerDuty does by dedup_key) or count the version as delivered.
    """

    name: str
    throttle_seconds: float
    resend_uncertain: bool

    def wants(self, alert: Alert, delivered_before: bool) -> bool:
        """False when this version needs no message (e.g. resolving what was never triggered)."""
        ...

    async def send(self, alert: Alert, session: aiohttp.ClientSession) -> None: ...


class HttpSink:
    """Base for the HTTP sinks: status classification and defaults."""

    name: str = "sink"
    throttle_seconds: float = 0.0
    resend_uncertain: bool = False
    timeout_seconds: float = 10.0

    def wants(self, alert: Alert, delivered_before: bool) -> bool:
        return True

    @staticmethod
    def classify(status: int, body: str, headers: Any) -> None:
        """Raise DeliveryError for anything but 2xx."""
        if 200 <= status < 300:
            return
        reason = f"HTTP {status}: {body[:200].strip()}"
        if status == 429:
            raise DeliveryError(reason, retryable=True, status=status, retry_after=parse_retry_after(headers))
        if status >= 500 or status == 408:
            raise DeliveryError(reason, retryable=True, status=status, retry_after=parse_retry_after(headers))
        raise DeliveryError(reason, retryable=False, status=status)

    async def post_json(
        self, session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """POST `body` as JSON; network failures become retryable DeliveryErrors."""
        hdrs = {"Content-Type": "application/json", "User-Agent": "crm-guard"}
        hdrs.update(headers or {})
        try:
            async with session.post(
                url, data=body, headers=hdrs, timeout=aiohttp.ClientTimeout(total=self.timeout_seconds)
            ) as resp:
                text = await resp.text(errors="replace")
                self.classify(resp.status, text, resp.headers)
                return resp.status, text
        except DeliveryError:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"network: {type(exc).__name__}", retryable=True) from exc


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or bad."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def iso_ms(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-01-01T00:00:00.000Z."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def record_url(public_url: str, record_key: str) -> str:
    """The record's timeline page: {public_url}/records/{source}/{object_type}/{id}."""
    return f"{public_url.rstrip('/')}/records/{quote(record_key, safe='/')}"


def agent_url(public_url: str, agent: str) -> str:
    return f"{public_url.rstrip('/')}/agents/{quote(agent, safe='')}"


def actor_label(alert: Alert) -> str:
    """The agent's name, or the actor key of a non-agent actor (vendor ids, never PII)."""
    return alert.agent or alert.actor_key


_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# Phone numbers as people write them: a leading + or separators between digit groups. Plain digit
# runs are left alone: CRM record ids are digit runs.
_PHONE = re.compile(r"(?<![\w/])(?:\+\d[\d\s().\-]{6,}\d|\(?\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4})(?![\w/])")


def scrub(text: str) -> str:
    """Mask e-mail addresses and phone numbers (defence in depth: summaries should hold none)."""
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


def scrub_value(value: Any) -> Any:
    """scrub() every string inside a JSON-able value."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [scrub_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): scrub_value(v) for k, v in value.items()}
    return value


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"
