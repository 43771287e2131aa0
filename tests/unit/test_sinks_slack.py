"""Slack incoming webhooks: Block Kit within limits, useful content, no PII, vendor status codes,
and per-dedup-key throttling of follow-ups through the delivery service."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from app.sinks.base import DeliveryError
from app.sinks.delivery import DeliveryService, RetryPolicy, delivery_metrics
from app.sinks.routing import RoutingConfig
from app.sinks.slack import SlackSink, slack_message
from tests.unit.fake_vendors import FakeSlack, make_alert, slack_block_problems

PUBLIC = "https://guard.example.com"
SLACK_ONLY = RoutingConfig.model_validate({"rules": [{"sinks": ["slack"], "min_severity": "info"}]})


def test_message_says_who_did_what_to_how_many_since_when_and_links_to_the_ui() -> None:
    alert = make_alert(action="paused", severity="critical")
    msg = slack_message(alert, PUBLIC)
    assert slack_block_problems(msg["blocks"]) == []
    assert msg["text"].startswith("[critical] mass_overwrite by enrich-bot")
    flat = json.dumps(msg)
    assert msg["blocks"][0]["type"] == "header" and "paused" in msg["blocks"][0]["text"]["text"]
    fields = " ".join(f["text"] for b in msg["blocks"] if "fields" in b for f in b["fields"])
    for needle in (
        "*Agent*",
        "*Detector*",
        "*Severity*",
        "*Records affected*\n9 (12 changes)",
        "*Since*",
        "*Action taken*\npaused",
    ):
        assert needle in fields
    assert "<!date^1767225600^" in fields  # since: first_event_at in the reader's time zone
    assert f"{PUBLIC}/records/hubspot/contact/1000" in flat
    assert f"{PUBLIC}/agents/enrich-bot" in flat
    assert "crm-guard agents resume enrich-bot" in flat


def test_a_resolved_alert_says_when_it_resolved() -> None:
    msg = slack_message(make_alert(status="resolved", resolved_at=1_767_229_200_000), PUBLIC)
    assert slack_block_problems(msg["blocks"]) == []
    fields = " ".join(f["text"] for b in msg["blocks"] if "fields" in b for f in b["fields"])
    assert "*Status*\nresolved" in fields and "*Resolved*\n<!date^1767229200^" in fields
    assert "*Resolved*" not in json.dumps(slack_message(make_alert(), PUBLIC))


def test_limits_hold_for_huge_alerts_and_pii_never_leaves() -> None:
    alert = make_alert(
        agent="a" * 300,
        actor_key="a" * 300,
        summary="overwrote ann.lee@example.com and +1 (415) 555-0100 " + "x" * 5000,
        sample_record_keys=[f"salesforce/contact/003{i:015d}" for i in range(200)],
        records=5000,
        group="g" * 3000,
    )
    msg = slack_message(alert, PUBLIC)
    assert slack_block_problems(msg["blocks"]) == []
    assert len(msg["blocks"]) <= 50 and len(msg["blocks"][0]["text"]["text"]) <= 150
    flat = json.dumps(msg, ensure_ascii=False)
    assert "ann.lee@example.com" not in flat and "555-0100" not in flat
    assert "[email]" in flat and "[phone]" in flat
    assert "… and 4990 more" in flat


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (400, "invalid_payload", False),
        (403, "action_prohibited", False),
        (404, "channel_not_found", False),
        (410, "channel_is_archived", False),
        (500, "rollup_error", True),
        (429, "rate_limited", True),
    ],
)
async def test_vendor_status_codes_are_classified(status: int, body: str, retryable: bool) -> None:
    async with FakeSlack() as slack, aiohttp.ClientSession() as session:
        slack.script.append((status, body, {"Retry-After": "7"} if status == 429 else {}))
        sink = SlackSink(slack.url, PUBLIC)
        with pytest.raises(DeliveryError) as info:
            await sink.send(make_alert(), session)
        assert info.value.retryable is retryable and info.value.status == status
        if status == 429:
            assert info.value.retry_after == 7.0
        await sink.send(make_alert(), session)  # the next one is accepted: 200 ok
        assert slack.requests[-1].status == 200 and slack.errors == []


async def test_follow_ups_are_throttled_per_dedup_key_unless_they_escalate() -> None:
    registry = CollectorRegistry()
    async with FakeSlack() as slack:
        service = DeliveryService(
            [SlackSink(slack.url, PUBLIC, throttle_seconds=0.6)],
            SLACK_ONLY,
            metrics=delivery_metrics(registry),
        )
        async with service:
            await service.submit(make_alert(version=1))
            await service.drain(5)
            await service.submit(make_alert(version=2, count=24))  # more evidence, same severity: held
            await service.submit(make_alert(version=3, count=48))  # coalesces with v2
            await asyncio.sleep(0.2)
            assert len(slack.requests) == 1
            await service.submit(make_alert(version=4, count=60, action="paused"))  # paused: at once
            await asyncio.sleep(0.2)
            assert len(slack.requests) == 2 and "paused" in slack.requests[1].json["text"]
            await service.submit(make_alert(version=5, count=70))  # held again (window restarts at v4)
            await service.submit(make_alert(version=6, status="resolved"))  # resolved: at once
            await service.drain(5)
            other = make_alert(dedup_key="velocity_cap:aaaa", alert_id="aaaa", kind="velocity_cap")
            await service.submit(other)  # another dedup key is not throttled by the first
            await service.drain(5)
    texts = [r.json["text"] for r in slack.requests]
    assert len(texts) == 4 and "resolved" in texts[2] and "velocity_cap" in texts[3]
    assert slack.errors == [] and slack.pii == []
    value = registry.get_sample_value
    assert value("crm_guard_alert_deliveries_total", {"sink": "slack", "outcome": "sent"}) == 4
    assert value("crm_guard_alert_deliveries_total", {"sink": "slack", "outcome": "throttled"}) >= 1
    assert value("crm_guard_alert_deliveries_total", {"sink": "slack", "outcome": "coalesced"}) >= 1


async def test_a_held_back_update_goes_out_when_the_window_ends() -> None:
    async with FakeSlack() as slack:
        service = DeliveryService(
            [SlackSink(slack.url, PUBLIC, throttle_seconds=0.4)],
            SLACK_ONLY,
            retry=RetryPolicy(base_delay=0.01),
        )
        async with service:
            await service.submit(make_alert(version=1))
            await service.drain(5)
            await service.submit(make_alert(version=2, count=30))
            assert await service.drain(5)
    assert [
        r.json["blocks"][-1]["elements"][0]["text"].endswith(f"update {v}")
        for r, v in zip(slack.requests, (1, 2), strict=True)
    ] == [True, True]
    assert slack.requests[1].at - slack.requests[0].at >= 0.35
