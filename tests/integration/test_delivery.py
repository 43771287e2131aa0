"""Alert delivery on a real broker: guard.alerts -> AlertFeed -> Slack, PagerDuty, webhook once each;
429 retried after Retry-After while a down sink delays nothing else; the Kafka delivery table
survives a restart; a worker SIGKILLed right after the vendors received the request does not
send again (PagerDuty is resent with the same dedup_key: still one PagerDuty alert)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from app.sinks.alert_feed import AlertFeed
from app.sinks.delivery import DeliveryService, RetryPolicy, delivery_metrics
from app.sinks.delivery_log import DeliveryRecord, KafkaDeliveryLog
from app.sinks.pagerduty import PagerDutySink
from app.sinks.routing import RoutingConfig
from app.sinks.slack import SlackSink
from app.sinks.webhook import WebhookSink
from detectors.alerts import Alert
from tests.unit.fake_vendors import FakePagerDuty, FakeSlack, FakeWebhook, make_alert

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "https://guard.example.com"
KEY = "0123456789abcdef0123456789abcdef"
HMAC_KEY = "webhook-test-secret"
ALL = RoutingConfig.model_validate(
    {"rules": [{"sinks": ["slack", "pagerduty", "webhook"], "min_severity": "info"}]}
)


async def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce_alert(bootstrap: str, topic: str, alert: Alert) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, key=alert.dedup_key.encode(), value=orjson.dumps(alert.model_dump(mode="json"))
        )
    finally:
        await producer.stop()


async def until(pred: Any, timeout: float = 10.0) -> None:
    started = time.monotonic()
    while not pred():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def sinks(slack: FakeSlack, pd: FakePagerDuty, hook: FakeWebhook) -> list[Any]:
    return [
        SlackSink(slack.url, PUBLIC),
        PagerDutySink(KEY, PUBLIC, url=pd.url),
        WebhookSink(hook.url, PUBLIC, secret=HMAC_KEY),
    ]


async def test_alert_topic_to_every_sink_once_with_429_and_a_down_sink(
    kafka_bootstrap: str, unique: str
) -> None:
    alerts, deliveries = f"guard.alerts.{unique}", f"guard.deliveries.{unique}"
    await create_topic(kafka_bootstrap, alerts)
    registry = CollectorRegistry()
    async with FakeSlack() as slack, FakePagerDuty() as pd, FakeWebhook(secret=HMAC_KEY) as hook:
        slack.script.append((429, "rate_limited", {"Retry-After": "1"}))
        pd.down = True
        service = DeliveryService(
            sinks(slack, pd, hook),
            ALL,
            KafkaDeliveryLog(kafka_bootstrap, deliveries),
            retry=RetryPolicy(base_delay=0.5, max_delay=1.0),
            metrics=delivery_metrics(registry),
        )
        await service.start()
        feed = AlertFeed(service, kafka_bootstrap, alerts, group_id=f"delivery-{unique}")
        await feed.start()
        try:
            assert await feed.wait_assigned(30)  # the group join is not what this test measures
            alert = make_alert(severity="critical", action="paused")
            produced = time.monotonic()
            await produce_alert(kafka_bootstrap, alerts, alert)
            await until(lambda: len(hook.ok_requests()) == 1)
            webhook_after = time.monotonic() - produced
            await until(lambda: len(slack.ok_requests()) == 1)
            pd.down = False
            await until(lambda: len(pd.ok_requests()) == 1)
            await produce_alert(kafka_bootstrap, alerts, alert)  # a redelivered alert: not sent again
            await until(lambda: feed.submitted == 2)
            await service.drain(5)
        finally:
            await feed.stop()
            await service.stop()
    assert webhook_after < 1.0, webhook_after  # neither the 429 nor the down PagerDuty held it up
    assert [r.status for r in slack.requests] == [429, 200] and slack.requests[1].at - slack.requests[
        0
    ].at >= 1.0
    assert len(hook.requests) == 1 and len(pd.ok_requests()) == 1 and pd.alerts_created == 1
    assert slack.errors == pd.errors == hook.errors == [] and slack.pii == []
    for sink in ("slack", "pagerduty", "webhook"):
        assert (
            registry.get_sample_value("crm_guard_alert_deliveries_total", {"sink": sink, "outcome": "sent"})
            == 1
        )
        assert (
            registry.get_sample_value(
                "crm_guard_alert_deliveries_total", {"sink": sink, "outcome": "duplicate"}
            )
            == 1
        )


async def test_the_kafka_delivery_table_survives_a_restart(kafka_bootstrap: str, unique: str) -> None:
    deliveries = f"guard.deliveries.{unique}"
    async with FakeWebhook() as hook:
        first = DeliveryService(
            [WebhookSink(hook.url, PUBLIC)], ALL, KafkaDeliveryLog(kafka_bootstrap, deliveries)
        )
        async with first:
            await first.submit(make_alert(version=1))
            assert await first.drain(5)
        second_log = KafkaDeliveryLog(kafka_bootstrap, deliveries)
        second = DeliveryService([WebhookSink(hook.url, PUBLIC)], ALL, second_log)
        async with second:
            record = DeliveryRecord.from_json(second_log.get("webhook|mass_overwrite:0123456789abcdef0123"))
            assert record.sent_version == 1 and record.state == "idle" and second_log.loaded >= 3
            await second.submit(make_alert(version=1))  # the same version again: not sent
            await second.submit(make_alert(version=2, count=40))
            assert await second.drain(5)
    assert [r.json["crm_guard"]["version"] for r in hook.requests] == [1, 2]


CHILD = """
import asyncio, json, sys
from app.sinks.alert_feed import AlertFeed
from app.sinks.delivery import DeliveryService
from app.sinks.delivery_log import KafkaDeliveryLog
from app.sinks.pagerduty import PagerDutySink
from app.sinks.routing import RoutingConfig
from app.sinks.slack import SlackSink
from app.sinks.webhook import WebhookSink

cfg = json.loads(sys.argv[1])

async def main():
    rule = {"sinks": ["slack", "pagerduty", "webhook"], "min_severity": "info"}
    routing = RoutingConfig.model_validate({"rules": [rule]})
    sinks = [SlackSink(cfg["slack"], "https://guard.example.com"),
             PagerDutySink(cfg["key"], "https://guard.example.com", url=cfg["pd"]),
             WebhookSink(cfg["hook"], "https://guard.example.com", secret=cfg["secret"])]
    service = DeliveryService(sinks, routing, KafkaDeliveryLog(cfg["bootstrap"], cfg["deliveries"]))
    await service.start()
    # a short session: the group notices the SIGKILLed predecessor sooner (the broker's minimum is 6 s)
    feed = AlertFeed(service, cfg["bootstrap"], cfg["alerts"], group_id=cfg["group"], session_timeout_ms=6000,
                     heartbeat_interval_ms=1000)
    await feed.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def start_child(cfg: dict[str, Any]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        json.dumps(cfg),
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"ready", line
    return proc


async def test_a_worker_killed_right_after_sending_does_not_send_twice(
    kafka_bootstrap: str, unique: str
) -> None:
    alerts = f"guard.alerts.{unique}"
    await create_topic(kafka_bootstrap, alerts)
    async with FakeSlack() as slack, FakePagerDuty() as pd, FakeWebhook(secret=HMAC_KEY) as hook:
        cfg = {
            "bootstrap": kafka_bootstrap,
            "alerts": alerts,
            "deliveries": f"guard.deliveries.{unique}",
            "group": f"delivery-{unique}",
            "slack": slack.url,
            "pd": pd.url,
            "hook": hook.url,
            "secret": HMAC_KEY,
            "key": KEY,
        }
        for fake in (slack, pd, hook):
            fake.hold = asyncio.Event()  # the vendors get the request; the worker never gets the answer
        first = await start_child(cfg)
        try:
            await produce_alert(kafka_bootstrap, alerts, make_alert(severity="critical"))
            await asyncio.wait_for(
                asyncio.gather(slack.received.wait(), pd.received.wait(), hook.received.wait()), 20
            )
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        for fake in (slack, pd, hook):
            fake.hold.set()
        second = await start_child(cfg)
        try:
            await until(lambda: len(pd.requests) == 2, 20)  # PagerDuty: resent, deduplicated by dedup_key
            await produce_alert(
                kafka_bootstrap, alerts, make_alert(severity="critical")
            )  # redelivery: ignored
            await produce_alert(
                kafka_bootstrap, alerts, make_alert(severity="critical", version=2, status="resolved")
            )
            await until(
                lambda: len(hook.requests) == 2 and len(slack.requests) == 2 and len(pd.requests) == 3, 40
            )
            await asyncio.sleep(0.5)
        finally:
            second.send_signal(signal.SIGKILL)
            await second.wait()
    assert [r.json["alerts"][0]["status"] for r in hook.requests] == ["firing", "resolved"]
    assert ["resolved" in r.json["text"] for r in slack.requests] == [False, True]
    assert [r.json["event_action"] for r in pd.requests] == ["trigger", "trigger", "resolve"]
    assert pd.alerts_created == 1 and pd.alerts == {"mass_overwrite:0123456789abcdef0123": "resolved"}
