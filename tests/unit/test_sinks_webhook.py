"""Generic webhook: Alertmanager-like body, HMAC signature a receiver can verify, delivery ids."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from app.sinks.base import DeliveryError
from app.sinks.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSink,
    sign,
    verify_signature,
    webhook_body,
)
from tests.unit.fake_vendors import FakeWebhook, make_alert

PUBLIC = "https://guard.example.com"
SECRET, WRONG = "s3cret", "wrong"


def test_body_is_alertmanager_shaped_and_carries_the_alert() -> None:
    body = webhook_body(make_alert(action="paused"), PUBLIC)
    assert (
        body["version"] == "4"
        and body["status"] == "firing"
        and body["groupKey"].startswith("mass_overwrite:")
    )
    (item,) = body["alerts"]
    assert item["labels"] == {
        "alertname": "mass_overwrite",
        "severity": "warning",
        "agent": "enrich-bot",
        "dedup_key": "mass_overwrite:0123456789abcdef0123",
        "actor_kind": "agent",
        "group": "utm_source",
    }
    assert item["startsAt"] == "2026-01-01T00:00:00.000Z" and item["endsAt"] == "0001-01-01T00:00:00Z"
    assert item["generatorURL"] == f"{PUBLIC}/agents/enrich-bot" and item["annotations"]["action"] == "paused"
    assert body["crm_guard"]["records"] == 9 and body["crm_guard"]["version"] == 1
    resolved = webhook_body(make_alert(status="resolved"), PUBLIC)
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] == "2026-01-01T00:10:00.000Z"


def test_pii_is_masked_everywhere() -> None:
    alert = make_alert(summary="set email to ann@example.com", details={"values": ["555-867-5309", "ok"]})
    text = json.dumps(webhook_body(alert, PUBLIC))
    assert "ann@example.com" not in text and "867-5309" not in text


def test_signature_round_trip_tamper_and_staleness() -> None:
    sink = WebhookSink("http://unused", PUBLIC, secret=SECRET)
    now = time.time()
    body, headers = sink.request(make_alert(), now=now)
    assert headers[DELIVERY_HEADER] == "mass_overwrite:0123456789abcdef0123:1"
    ts, sig = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert sig == sign("s3cret", ts, body) and sig.startswith("sha256=")
    assert verify_signature("s3cret", ts, body, sig, now=now)
    assert not verify_signature("s3cret", ts, body + b" ", sig, now=now)
    assert not verify_signature("other", ts, body, sig, now=now)
    assert not verify_signature("s3cret", ts, body, sig, now=now + 301)
    assert not verify_signature("s3cret", None, body, sig)
    assert DELIVERY_HEADER in WebhookSink("http://unused", PUBLIC).request(make_alert())[1]
    assert SIGNATURE_HEADER not in WebhookSink("http://unused", PUBLIC).request(make_alert())[1]


async def test_receiver_verifies_and_status_codes_are_classified() -> None:
    async with FakeWebhook(secret=SECRET) as hook, aiohttp.ClientSession() as session:
        await WebhookSink(hook.url, PUBLIC, secret=SECRET).send(make_alert(), session)
        assert hook.deliveries == ["mass_overwrite:0123456789abcdef0123:1"]
        with pytest.raises(DeliveryError) as info:
            await WebhookSink(hook.url, PUBLIC, secret=WRONG).send(make_alert(), session)
        assert info.value.status == 401 and not info.value.retryable
        for status, retryable in ((408, True), (429, True), (500, True), (404, False)):
            hook.script.append((status, "", {}))
            with pytest.raises(DeliveryError) as info:
                await WebhookSink(hook.url, PUBLIC, secret=SECRET).send(make_alert(), session)
            assert info.value.retryable is retryable


async def test_unreachable_receiver_is_a_retryable_network_error() -> None:
    async with FakeWebhook() as hook:
        url = hook.url
    async with aiohttp.ClientSession() as session:
        with pytest.raises(DeliveryError) as info:
            await WebhookSink(url, PUBLIC, timeout_seconds=2).send(make_alert(), session)
    assert info.value.retryable and info.value.status is None
