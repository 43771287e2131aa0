"""The delivery service: routing, backoff, isolation of a down sink, once per version, recovery
after a crash between "sending" and "sent", coalescing, giving up, metrics."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.sinks.delivery import DeliveryService, RetryPolicy, delivery_metrics
from app.sinks.delivery_log import DeliveryRecord, MemoryDeliveryLog
from app.sinks.pagerduty import PagerDutySink
from app.sinks.routing import RoutingConfig
from app.sinks.slack import SlackSink
from app.sinks.webhook import WebhookSink
from tests.unit.fake_vendors import FakePagerDuty, FakeSlack, FakeWebhook, make_alert

PUBLIC = "https://guard.example.com"
KEY = "0123456789abcdef0123456789abcdef"
ALL = RoutingConfig.model_validate(
    {"rules": [{"sinks": ["slack", "pagerduty", "webhook"], "min_severity": "info"}]}
)
FAST = RetryPolicy(base_delay=0.02, max_delay=0.1, max_attempts=3)


def outcome(registry: CollectorRegistry, sink: str, name: str) -> float:
    return (
        registry.get_sample_value("crm_guard_alert_deliveries_total", {"sink": sink, "outcome": name}) or 0.0
    )


def test_default_routing_warning_to_slack_and_webhook_critical_also_to_pagerduty() -> None:
    routing = RoutingConfig()
    assert routing.sinks_for(make_alert(severity="info")) == []
    assert routing.sinks_for(make_alert(severity="warning")) == ["slack", "webhook"]
    assert routing.sinks_for(make_alert(severity="critical")) == ["slack", "webhook", "pagerduty"]


def test_routing_rules_by_kind_and_agent() -> None:
    routing = RoutingConfig.model_validate(
        {
            "rules": [
                {"sinks": ["slack"], "min_severity": "warning"},
                {"sinks": ["pagerduty"], "min_severity": "warning", "agents": ["billing-bot"]},
                {"sinks": ["webhook"], "min_severity": "info", "kinds": ["override_rate"]},
            ]
        }
    )
    assert routing.sinks_for(make_alert(agent="billing-bot")) == ["slack", "pagerduty"]
    assert routing.sinks_for(make_alert(agent="enrich-bot")) == ["slack"]
    assert routing.sinks_for(make_alert(kind="override_rate", severity="info")) == ["webhook"]
    with pytest.raises(ValueError):
        RoutingConfig.model_validate({"rules": [{"sinks": ["email"]}]})
    with pytest.raises(ValueError):
        RoutingConfig.model_validate({"rules": [{"sinks": ["slack"], "min_sev": "warning"}]})


def test_backoff_grows_is_capped_jittered_and_never_below_retry_after() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0, jitter=0.5)
    lows = [policy.delay(n, rng=lambda: 0.0) for n in range(1, 10)]
    highs = [policy.delay(n, rng=lambda: 1.0) for n in range(1, 10)]
    assert lows[:4] == [0.5, 1.0, 2.0, 4.0] and highs[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(highs) == 60.0
    assert policy.delay(1, retry_after=30, rng=lambda: 0.0) == 30 and policy.delay(1, retry_after=30) <= 33
    assert RetryPolicy(max_retry_after=10).delay(1, retry_after=9999, rng=lambda: 0.0) == 10


async def test_a_down_sink_delays_neither_the_caller_nor_the_other_sinks() -> None:
    """Slack holds every request and PagerDuty answers 503: submit still returns and the webhook
    gets all 20 alerts while Slack has answered none."""
    async with FakeSlack() as slack, FakeWebhook() as hook, FakePagerDuty() as pd:
        slack.hold = asyncio.Event()  # Slack accepts the connection and never answers
        pd.down = True  # PagerDuty answers 503 to everything
        service = DeliveryService(
            [
                SlackSink(slack.url, PUBLIC, timeout_seconds=30),
                PagerDutySink(KEY, PUBLIC, url=pd.url),
                WebhookSink(hook.url, PUBLIC),
            ],
            ALL,
            retry=FAST,
        )
        try:
            async with service:
                for i in range(20):
                    await service.submit(make_alert(dedup_key=f"k:{i}", alert_id=str(i), severity="critical"))
                deadline = time.monotonic() + 10  # a bound for a stuck test, not a speed check
                while len(hook.ok_requests()) < 20 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert len(hook.ok_requests()) == 20
                assert service.backlog()["slack"] == 20 and service.backlog()["webhook"] == 0
                assert slack.requests and all(r.status == 0 for r in slack.requests)  # none answered
        finally:
            slack.hold.set()


async def test_stopping_while_a_retry_timer_wakes_does_not_hang() -> None:
    """Python 3.11's wait_for swallows a cancellation that arrives as the awaited event is set; the
    lane's timer loop then never ended and stop() waited forever (seen once in CI)."""
    service = DeliveryService([WebhookSink("http://127.0.0.1:9/", PUBLIC)], ALL)
    await service.start()
    lane = service.lanes["webhook"]
    lane.timers.append((service.clock() + 300, 0, "k:later"))  # a retry due in 5 minutes
    lane.wake.set()
    for _ in range(50):
        await asyncio.sleep(0)  # the timer loop is parked on its wake event with a timeout
    timer_loop = lane.tasks[0]
    lane.wake.set()  # wakes it: its wait completes...
    stopping = asyncio.create_task(service.stop())  # ...and is cancelled in the same loop iteration
    done, _ = await asyncio.wait({stopping}, timeout=10)  # a bound for the hang, not a speed check
    assert stopping in done and timer_loop.cancelled()


async def test_a_version_is_sent_once_however_often_it_is_submitted() -> None:
    registry = CollectorRegistry()
    async with FakeSlack() as slack, FakeWebhook() as hook:
        service = DeliveryService(
            [SlackSink(slack.url, PUBLIC), WebhookSink(hook.url, PUBLIC)],
            ALL,
            metrics=delivery_metrics(registry),
        )
        async with service:
            alert = make_alert()
            await asyncio.gather(*(service.submit(alert) for _ in range(5)))
            await service.drain(5)
            await service.submit(alert)  # redelivered after it was sent
            await service.drain(5)
    assert len(slack.requests) == 1 and len(hook.requests) == 1
    assert outcome(registry, "slack", "sent") == 1 and outcome(registry, "slack", "duplicate") == 5


async def test_crash_between_sending_and_sent_neither_duplicates_nor_double_pages() -> None:
    """The worker dies while the vendors hold the request (they got it, the guard never saw the
    answer). After restart: Slack and the webhook are not resent (uncertain), PagerDuty is resent
    with the same dedup_key and stays one alert."""
    store = MemoryDeliveryLog()
    registry = CollectorRegistry()
    async with FakeSlack() as slack, FakeWebhook() as hook, FakePagerDuty() as pd:
        for fake in (slack, hook, pd):
            fake.hold = asyncio.Event()
        sinks = [
            SlackSink(slack.url, PUBLIC),
            PagerDutySink(KEY, PUBLIC, url=pd.url),
            WebhookSink(hook.url, PUBLIC),
        ]
        first = DeliveryService(sinks, ALL, store)
        await first.start()
        await first.submit(make_alert(severity="critical"))
        await asyncio.wait_for(
            asyncio.gather(slack.received.wait(), hook.received.wait(), pd.received.wait()), 2
        )
        await first.stop()  # the crash: no "sent" is recorded
        states = {k.split("|")[0]: DeliveryRecord.from_json(v).state for k, v in store.items()}
        assert states == {"slack": "sending", "pagerduty": "sending", "webhook": "sending"}
        for fake in (slack, hook, pd):
            fake.hold.set()
        second = DeliveryService(sinks, ALL, store, metrics=delivery_metrics(registry))
        async with second:
            assert await second.drain(5)
            await second.submit(make_alert(severity="critical"))  # the alert topic redelivers it too
            assert await second.drain(5)
    assert len(slack.requests) == 1 and len(hook.requests) == 1
    assert len(pd.requests) == 2 and pd.alerts_created == 1
    assert outcome(registry, "slack", "uncertain") == 1 and outcome(registry, "webhook", "uncertain") == 1
    assert outcome(registry, "pagerduty", "sent") == 1


async def test_pending_work_is_picked_up_after_a_restart() -> None:
    store = MemoryDeliveryLog()
    async with FakeWebhook() as hook:
        hook.down = True
        sinks = [WebhookSink(hook.url, PUBLIC)]
        first = DeliveryService(sinks, ALL, store, retry=RetryPolicy(base_delay=5))
        async with first:
            await first.submit(make_alert())
            await asyncio.wait_for(hook.received.wait(), 2)
        hook.down = False
        async with DeliveryService(sinks, ALL, store) as second:
            assert await second.drain(5)
    assert [r.status for r in hook.requests] == [503, 200]


async def test_versions_coalesce_while_a_sink_is_down_and_it_gives_up_after_n_attempts() -> None:
    registry = CollectorRegistry()
    async with FakeWebhook() as hook:
        hook.down = True
        service = DeliveryService(
            [WebhookSink(hook.url, PUBLIC)], ALL, retry=FAST, metrics=delivery_metrics(registry)
        )
        async with service:
            for version in range(1, 6):
                await service.submit(make_alert(version=version))
            assert await service.drain(5)
            down_requests = len(hook.requests)
            hook.down = False
            await service.submit(make_alert(version=6))
            await service.submit(make_alert(version=2))  # older than what failed: not resent
            assert await service.drain(5)
    versions = [int(r.headers["X-CRM-Guard-Delivery"].rsplit(":", 1)[1]) for r in hook.requests]
    assert down_requests <= 4  # versions 1-4 coalesced into later ones instead of queueing up
    assert (
        len(hook.requests) == down_requests + 1 and versions[-1] == 6 and hook.ok_requests()[0].status == 200
    )
    assert outcome(registry, "webhook", "failed") == 1 and outcome(registry, "webhook", "sent") == 1
    assert outcome(registry, "webhook", "retry") >= 2


async def test_metrics_are_exported_with_bounded_labels() -> None:
    registry = CollectorRegistry()
    async with FakeWebhook() as hook:
        async with DeliveryService(
            [WebhookSink(hook.url, PUBLIC)], ALL, metrics=delivery_metrics(registry)
        ) as svc:
            await svc.submit(make_alert())
            await svc.drain(5)
    text = generate_latest(registry).decode()
    assert 'crm_guard_alert_deliveries_total{outcome="sent",sink="webhook"} 1.0' in text
    assert 'crm_guard_alert_delivery_seconds_count{sink="webhook"} 1.0' in text
    assert 'crm_guard_alert_delivery_pending{sink="webhook"} 0.0' in text
