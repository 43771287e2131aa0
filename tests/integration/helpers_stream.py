"""Helpers for streaming tests: settings with fresh topics, producing payloads, reading topics."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.config import Settings, Topics
from app.runtime.kafka_client import topic_partitions
from app.policy_file import parse_policy
from detectors.policy import Policy

POLICY_YAML = """
agents:
  enrich-bot:
    identities:
      - {vendor: hubspot, change_source: INTEGRATION, app_id: "4242"}
    denied_fields: [utm_*, hs_analytics_source*]
    velocity_caps: [{max_records: 20, window: 1h}]
humans:
  - {vendor: hubspot, change_source: CRM_UI}
"""

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def guard_policy() -> Policy:
    return parse_policy(POLICY_YAML, "test-policy")


def fresh_settings(bootstrap: str, unique: str, partitions: int = 3, **over: Any) -> Settings:
    names = {name: f"{value}.{unique}" for name, value in Topics().model_dump().items()}
    values: dict[str, Any] = {"web_port": 0, "state_dir": f"/tmp/crm-guard-test-{unique}", "batch_max_records": 500}
    return Settings(bootstrap_servers=bootstrap, group_id=f"crm-guard-{unique}", partitions=partitions,
                    topics=Topics(**names), **{**values, **over})


def hubspot_change(event_id: int, object_id: int, prop: str, value: str, at: int,
                   source: str = "INTEGRATION", source_id: str = "4242") -> dict[str, Any]:
    """One HubSpot webhook event as HubSpot sends it (v3 webhooks)."""
    return {
        "eventId": event_id, "subscriptionId": 1001, "portalId": 62515, "appId": 4242,
        "occurredAt": at, "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
        "objectId": object_id, "propertyName": prop, "propertyValue": value,
        "changeSource": source, "sourceId": source_id,
    }


def agent_burst(n_records: int, start_id: int = 1, at: int = T0) -> list[list[dict[str, Any]]]:
    """An agent touching n distinct contacts within minutes: batches of 10 as HubSpot delivers."""
    events = [hubspot_change(start_id + i, 999 + start_id + i, "jobtitle", f"Title {i}", at + i * 1000)
              for i in range(n_records)]
    return [events[i:i + 10] for i in range(0, len(events), 10)]


async def produce(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=key) for v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 2.0) -> list[Any]:
    """Every record currently in the topic (all partitions), from the beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = {tp.partition for tp in await topic_partitions(consumer, topic)}
        for _ in range(20):
            if partitions:
                break
            await asyncio.sleep(0.1)
            partitions = {tp.partition for tp in await topic_partitions(consumer, topic)}
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
            if batch:
                continue  # only an empty fetch at the end counts (tansu reports ends early)
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps)):
                break
        return out
    finally:
        await consumer.stop()


async def wait_for(predicate: Any, timeout_s: float = 30.0, interval: float = 0.25) -> Any:
    """Await an async predicate until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = None
    while loop.time() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    return last


def alert_values(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]
