"""Slack incoming webhooks: one Block Kit message per alert version that gets through the throttle.

Slack answers 200 with body `ok`; 400 `invalid_payload` / `user_not_found`, 403
`action_prohibited`, 404 `channel_not_found` / `no_service`, 410 `channel_is_archived` (not retried);
429 with Retry-After and 5xx (`rollup_error`) are retried. Incoming webhooks cannot edit a message,
so follow-ups of one alert are new messages: the delivery service throttles them per dedup key
(`throttle_seconds`, default 10 min) unless severity rises, the agent is paused, or it resolves.

Limits kept: at most 50 blocks, header text 150 characters (plain_text), section text 3000,
at most 10 fields per section of 2000 characters each, 10 context elements. Only agent names,
detector names, counts, times and record keys (vendor/type/id) appear: never e-mails or phones.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from app.sinks.base import (
    DeliveryError,
    HttpSink,
    actor_label,
    agent_url,
    iso_ms,
    record_url,
    scrub,
    truncate,
)
from detectors.alerts import Alert

MAX_BLOCKS = 50
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_MAX = 2000
MAX_FIELDS = 10
TEXT_MAX = 3000
SAMPLE_RECORDS = 10

_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def _esc(text: str) -> str:
    """Escape the three characters mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _date(ms: int) -> str:
    """Slack date formatting (shown in the reader's time zone) with an ISO fallback."""
    return f"<!date^{ms // 1000}^{{date_short_pretty}} {{time}}|{iso_ms(ms)}>"


def headline(alert: Alert) -> str:
    """One line: what happened and to whom, for the header and the text fallback."""
    state = (
        " — resolved"
        if alert.status == "resolved"
        else (" — agent paused" if alert.action == "paused" else "")
    )
    return f"{alert.kind} by {actor_label(alert)}{state}"


def slack_message(alert: Alert, public_url: str) -> dict[str, Any]:
    """The webhook body: `text` (notification fallback) and Block Kit `blocks`."""
    who = actor_label(alert)
    emoji = ":white_check_mark:" if alert.status == "resolved" else _EMOJI.get(alert.severity.value, "")
    summary = scrub(alert.summary)
    if alert.action == "paused":
        action = (
            f"*Agent paused.* It refuses writes until a person resumes it: "
            f'`crm-guard agents resume {who} --reason "..."`'
        )
    else:
        action = "Not paused (alert only)."
    group = f" / `{_esc(alert.group)}`" if alert.group else ""
    agent_text = f"<{agent_url(public_url, alert.agent)}|{_esc(alert.agent)}>" if alert.agent else _esc(who)
    fields = [
        f"*Agent*\n{agent_text} ({alert.actor_kind.value})",
        f"*Detector*\n`{_esc(alert.kind)}`{group}",
        f"*Severity*\n{alert.severity.value}",
        f"*Records affected*\n{alert.records} ({alert.count} changes)",
        f"*Since*\n{_date(alert.first_event_at)}",
        f"*Last seen*\n{_date(alert.last_event_at)}",
        f"*Action taken*\n{'paused' if alert.action == 'paused' else 'none (not paused)'}",
        f"*Status*\n{alert.status}",
    ]
    if alert.status == "resolved" and alert.resolved_at is not None:
        fields.append(f"*Resolved*\n{_date(alert.resolved_at)} (quiet since the last change)")
    samples = alert.sample_record_keys[:SAMPLE_RECORDS]
    sample_lines = [f"• <{record_url(public_url, key)}|{_esc(key)}>" for key in samples]
    more = alert.records - len(samples)
    if more > 0:
        sample_lines.append(f"… and {more} more")
    links = []
    if alert.agent:
        links.append(f"<{agent_url(public_url, alert.agent)}|Agent page: {_esc(alert.agent)}>")
    if samples:
        links.append(f"<{record_url(public_url, samples[0])}|Timeline of {_esc(samples[0])}>")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(f"{emoji} {headline(alert)}".strip(), HEADER_MAX),
                "emoji": True,
            },
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(_esc(summary), SECTION_TEXT_MAX)}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": truncate(f, FIELD_MAX)} for f in fields[:MAX_FIELDS]],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(action, SECTION_TEXT_MAX)}},
    ]
    if sample_lines:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": truncate("*Sample records*\n" + "\n".join(sample_lines), SECTION_TEXT_MAX),
                },
            }
        )
    if links:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate(" · ".join(links), SECTION_TEXT_MAX)},
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": truncate(
                        f"crm-guard · dedup `{_esc(alert.dedup_key)}` · update {alert.version}", FIELD_MAX
                    ),
                },
            ],
        }
    )
    text = (
        f"[{alert.severity.value}] {headline(alert)}: {summary} "
        f"({alert.records} records since {iso_ms(alert.first_event_at)})"
    )
    return {"text": truncate(text, TEXT_MAX), "blocks": blocks[:MAX_BLOCKS]}


class SlackSink(HttpSink):
    """Posts to one Slack incoming-webhook URL."""

    name = "slack"

    def __init__(
        self,
        webhook_url: str,
        public_url: str,
        *,
        throttle_seconds: float = 600.0,
        resend_uncertain: bool = False,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.url = webhook_url
        self.public_url = public_url
        self.throttle_seconds = throttle_seconds
        self.resend_uncertain = resend_uncertain
        self.timeout_seconds = timeout_seconds

    async def send(self, alert: Alert, session: aiohttp.ClientSession) -> None:
        body = json.dumps(slack_message(alert, self.public_url), ensure_ascii=False).encode("utf-8")
        _, text = await self.post_json(session, self.url, body)
        if text.strip() not in ("ok", ""):
            # 200 with another body means the message did not post as intended
            raise DeliveryError(f"slack answered 200 {text[:100]!r}", retryable=False, status=200)
