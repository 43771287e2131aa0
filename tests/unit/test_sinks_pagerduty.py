"""PagerDuty Events API v2: valid events, severity mapping, limits, trigger/resolve by dedup_key,
and the vendor's answers (202, 400 not retried, 429 after Retry-After, 5xx retried)."""

from __future__ import annotations


import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from app.sinks.base import DeliveryError
from app.sinks.delivery import DeliveryService, RetryPolicy, delivery_metrics
from app.sinks.pagerduty import PagerDutySink, pagerduty_event
from app.sinks.routing import RoutingConfig
from tests.unit.fake_vendors import FakePagerDuty, make_alert, pagerduty_problems

PUBLIC = "https://guard.example.com"
KEY = "R0123456789abcdef0123456789abcde"[:32]
PD_ONLY = RoutingConfig.model_validate({"rules": [{"sinks": ["pagerduty"], "min_severity": "info"}]})
FAST = RetryPolicy(base_delay=0.02, max_delay=0.1, max_attempts=4)


def _problems(event: dict) -> list[str]:
    import json

    body = json.dumps(event).encode()
    return pagerduty_problems(body, event)


@pytest.mark.parametrize(
    ("ours", "theirs"), [("critical", "critical"), ("warning", "warning"), ("info", "info")]
)
def test_trigger_is_valid_and_maps_severity(ours: str, theirs: str) -> None:
    event = pagerduty_event(make_alert(severity=ours, action="paused"), KEY, PUBLIC)
    assert _problems(event) == []
    assert event["event_action"] == "trigger" and event["dedup_key"] == "mass_overwrite:0123456789abcdef0123"
    p = event["payload"]
    assert (
        p["severity"] == theirs and p["source"] == "crm-guard/enrich-bot" and p["class"] == "mass_overwrite"
    )
    assert p["timestamp"] == "2026-01-01T00:10:00.000Z"
    assert "[agent paused]" in p["summary"]
    details = p["custom_details"]
    assert details["records_affected"] == 9 and details["action_taken"] == "paused"
    assert (
        details["sample_records"][0] == "hubspot/contact/1000"
        and details["evidence"]["field"] == "utm_source"
    )
    assert {link["href"] for link in event["links"]} >= {
        f"{PUBLIC}/agents/enrich-bot",
        f"{PUBLIC}/records/hubspot/contact/1000",
    }


def test_summary_is_cut_to_1024_and_pii_is_masked() -> None:
    alert = make_alert(summary="bob@example.com " + "y" * 4000, details={"sample": "call +44 20 7946 0958"})
    event = pagerduty_event(alert, KEY, PUBLIC)
    assert _problems(event) == []
    assert len(event["payload"]["summary"]) == 1024 and event["payload"]["summary"].endswith("…")
    assert "bob@example.com" not in str(event) and "7946" not in str(event)


def test_resolve_and_long_dedup_keys() -> None:
    event = pagerduty_event(make_alert(status="resolved"), KEY, PUBLIC)
    assert event == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": "mass_overwrite:0123456789abcdef0123",
    }
    long_key = pagerduty_event(make_alert(dedup_key="x" * 400), KEY, PUBLIC)["dedup_key"]
    assert (
        len(long_key) <= 255
        and _problems(pagerduty_event(make_alert(dedup_key="x" * 400), KEY, PUBLIC)) == []
    )


def test_routing_key_must_be_an_integration_key() -> None:
    with pytest.raises(ValueError, match="32-character"):
        PagerDutySink("short", PUBLIC)


async def test_vendor_answers_are_classified() -> None:
    async with FakePagerDuty() as pd, aiohttp.ClientSession() as session:
        sink = PagerDutySink(KEY, PUBLIC, url=pd.url)
        await sink.send(make_alert(), session)
        assert pd.requests[-1].status == 202 and pd.alerts_created == 1
        pd.script += [(400, '{"status":"invalid event"}', {}), (429, "", {"Retry-After": "3"}), (502, "", {})]
        for retryable, after in ((False, None), (True, 3.0), (True, None)):
            with pytest.raises(DeliveryError) as info:
                await sink.send(make_alert(), session)
            assert info.value.retryable is retryable and info.value.retry_after == after
        assert pd.errors == []


async def test_400_is_not_retried_and_counted_failed() -> None:
    registry = CollectorRegistry()
    async with FakePagerDuty() as pd:
        pd.script.append((400, '{"status":"invalid event","message":"Event object is invalid"}', {}))
        service = DeliveryService(
            [PagerDutySink(KEY, PUBLIC, url=pd.url)], PD_ONLY, retry=FAST, metrics=delivery_metrics(registry)
        )
        async with service:
            await service.submit(make_alert())
            assert await service.drain(5)
    assert len(pd.requests) == 1
    assert (
        registry.get_sample_value(
            "crm_guard_alert_deliveries_total", {"sink": "pagerduty", "outcome": "failed"}
        )
        == 1
    )


async def test_429_waits_for_retry_after_then_5xx_backs_off_then_succeeds() -> None:
    async with FakePagerDuty() as pd:
        pd.script += [(429, '{"status":"throttle event"}', {"Retry-After": "1"}), (503, "", {})]
        service = DeliveryService([PagerDutySink(KEY, PUBLIC, url=pd.url)], PD_ONLY, retry=FAST)
        async with service:
            await service.submit(make_alert(severity="critical"))
            assert await service.drain(10)
    times = [r.at for r in pd.requests]
    assert [r.status for r in pd.requests] == [429, 503, 202]
    assert times[1] - times[0] >= 1.0  # Retry-After: 1 honoured
    assert times[1] - times[0] < 5  # ...and not the default backoff's minutes (loose: CI is noisy)
    assert pd.alerts_created == 1 and pd.errors == []


async def test_trigger_updates_then_resolve_make_one_pagerduty_alert() -> None:
    async with FakePagerDuty() as pd:
        service = DeliveryService([PagerDutySink(KEY, PUBLIC, url=pd.url)], PD_ONLY, retry=FAST)
        async with service:
            never = make_alert(dedup_key="velocity_cap:never", status="resolved", version=3)
            await service.submit(never)  # a resolve for an alert never triggered here is not sent
            for version in (1, 2, 3):
                await service.submit(make_alert(version=version, count=10 * version))
                await service.drain(5)
            await service.submit(make_alert(version=4, status="resolved"))
            await service.drain(5)
    actions = [r.json["event_action"] for r in pd.requests]
    assert actions == ["trigger", "trigger", "trigger", "resolve"]
    assert pd.alerts_created == 1 and pd.alerts == {"mass_overwrite:0123456789abcdef0123": "resolved"}
