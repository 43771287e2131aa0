"""`crm-guard salesforce subscribe` against a local Salesforce Streaming API and the real broker.

The CometD server (tests/integration/fake_salesforce.py) checks token, cookies, clientIds and
replay options as Salesforce does. What is proven here: every event lands on crm.raw.salesforce
once, in order, in the shape the Salesforce adapter reads; a subscriber killed with SIGKILL
resumes after the last event Kafka acknowledged (nothing lost, nothing twice); a lost session and
an expired token are recovered; a resume point Salesforce no longer retains falls back to every
retained event; bad credentials and a missing broker are clear errors with exit 2.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.adapters import normalize_with_errors
from app.config import Settings
from app.runtime.kafka_client import client_kwargs, make_producer
from app.runtime.topics import ensure_topics
from app.salesforce_cdc.client import CometdTransport, TokenSource
from app.salesforce_cdc.metrics import SubscriberMetrics
from app.salesforce_cdc.resume import REPLAY_HEADER, parse_replay_header, resume_points
from app.salesforce_cdc.subscriber import SalesforceSubscriber
from tests.integration.fake_salesforce import FakeSalesforce
from tests.integration.helpers_stream import fresh_settings, produce, wait_for
from tests.integration.test_metrics_promtool import promtool_check_metrics
from tests.integration.test_receiver_http import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parent.parent.parent
CHANNEL = "/data/ChangeEvents"
T0 = 1_767_225_600_000


def account_update(
    i: int, origin: str = "com/salesforce/api/rest/62.0;client=enrich-agent"
) -> dict[str, Any]:
    """A CDC payload as Salesforce sends it: an API client overwriting an Account's Industry."""
    return {
        "ChangeEventHeader": {
            "entityName": "Account",
            "recordIds": [f"001RM0000{i:09d}"],
            "changeType": "UPDATE",
            "changeOrigin": origin,
            "transactionKey": f"0005e192-{i:04d}",
            "sequenceNumber": 1,
            "commitTimestamp": T0 + i * 1000,
            "commitNumber": 74487681550 + i,
            "commitUser": "005RM000001hv4SYAQ",
            "changedFields": ["Industry", "LastModifiedDate"],
        },
        "Industry": f"Industry {i}",
        "LastModifiedDate": "2026-01-01T00:00:00.000Z",
    }


async def raw_messages(settings: Settings) -> list[Any]:
    """Every record on the raw Salesforce topic, all partitions, in offset order per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        topic = settings.topics.raw_salesforce
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[Any] = []
        behind = list(parts)
        while behind:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(records)
            behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def replays_in(records: list[Any]) -> list[int]:
    out = []
    for record in records:
        for name, value in record.headers or ():
            if name == REPLAY_HEADER:
                parsed = parse_replay_header(value)
                assert parsed and parsed[0] == CHANNEL
                out.append(parsed[1])
    return out


async def until(check: Any, timeout_s: float = 30.0) -> None:
    """Wait until `check()` (sync or async) is truthy; fail the test on timeout."""

    async def probe() -> Any:
        value = check()
        return (await value) if inspect.isawaitable(value) else value

    assert await wait_for(probe, timeout_s, interval=0.1), f"timed out after {timeout_s}s"


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_GUARD_")}
    env.update(
        {
            "CRM_GUARD_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "CRM_GUARD_PARTITIONS": str(settings.partitions),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(
        {f"CRM_GUARD_TOPIC_{name.upper()}": value for name, value in settings.topics.model_dump().items()}
    )
    env.update(extra)
    return env


async def start_cli(env: dict[str, str], url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "salesforce",
        "subscribe",
        "--instance-url",
        url,
        *args,
        env=env,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_killed_subscriber_resumes_after_the_last_acknowledged_event(
    kafka_bootstrap: str, kafka_kind: str, unique: str
) -> None:
    sf = FakeSalesforce(per_poll=1, hold_s=0.05)
    url = await sf.start()
    settings = fresh_settings(kafka_bootstrap, unique)
    flags = () if kafka_kind == "apache" else ("--no-idempotence",)
    for i in range(30):
        sf.publish(CHANNEL, account_update(i))
    env = cli_env(settings, CRM_GUARD_SALESFORCE_ACCESS_TOKEN=sf.token)
    try:
        first = await start_cli(env, url, "--replay-from", "all", *flags)
        await until(lambda: _count_at_least(settings, 8), timeout_s=60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        landed = replays_in(await raw_messages(settings))
        assert 8 <= len(landed) < 30, "the kill came mid-stream"
        for i in range(30, 40):
            sf.publish(CHANNEL, account_update(i))
        port = free_port()
        second = await start_cli(env, url, "--replay-from", "all", "--metrics-port", str(port), *flags)
        await until(lambda: _count_at_least(settings, 40), timeout_s=60)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
            exposition = await response.text()
        assert f'crm_guard_salesforce_events_total{{channel="{CHANNEL}"}} {40 - len(landed)}.0' in exposition
        assert "crm_guard_salesforce_connected 1.0" in exposition
        checked = promtool_check_metrics(exposition)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        second.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 0, err.decode()[-2000:]
        assert b"stopped; " in out
    finally:
        await sf.stop()
    assert sf.subscribes[-1] == (CHANNEL, landed[-1]), "resumed after the last event Kafka holds"
    records = await raw_messages(settings)
    assert replays_in(records) == sf.replay_ids(), "every event once, in order"
    assert {r.key for r in records} == {CHANNEL.encode()}
    # what landed is what the guard's ingest stage reads: Salesforce events, the API client named
    for record in records[:3] + records[-3:]:
        events, errors = normalize_with_errors(orjson.loads(record.value), "auto")
        assert not errors and len(events) == 1
        event = events[0]
        assert event.source == "salesforce" and event.operation == "update"
        assert event.record_id.startswith("001RM0000")
        assert [c.field for c in event.changes] == ["Industry"]
        assert event.actor.identity.app_id == "enrich-agent"


async def _count_at_least(settings: Settings, n: int) -> bool:
    try:
        return len(await raw_messages(settings)) >= n
    except Exception:  # noqa: BLE001 - the topic may not exist yet
        return False


async def test_session_loss_expired_token_and_a_replay_id_no_longer_retained(
    kafka_bootstrap: str, kafka_kind: str, unique: str
) -> None:
    sf = FakeSalesforce(per_poll=2, hold_s=0.05)
    url = await sf.start()
    settings = fresh_settings(kafka_bootstrap, unique)
    await ensure_topics(settings, client_kwargs(settings))
    topic = settings.topics.raw_salesforce
    producer = make_producer(settings, idempotent=kafka_kind == "apache")
    await producer.start()
    try:
        for i in range(6):
            sf.publish(CHANNEL, account_update(i))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            # no token configured: the client-credentials flow gets one
            tokens = TokenSource(url, client_id=sf.client_id, client_secret=sf.client_secret)
            metrics = SubscriberMetrics()
            subscriber = SalesforceSubscriber(
                CometdTransport(http, tokens, "62.0"),
                producer,
                topic,
                [CHANNEL],
                {},
                replay_from=-2,
                metrics=metrics,
            )
            task = asyncio.ensure_future(subscriber.run())
            await until(lambda: subscriber.stats.produced >= 6, timeout_s=30)
            sf.drop_clients()  # 403::Unknown client on the next poll: handshake again, resume
            for i in range(6, 10):
                sf.publish(CHANNEL, account_update(i))
            await until(lambda: subscriber.stats.produced >= 10, timeout_s=30)
            sf.expire_token()  # 401::Authentication invalid: a new token, then resume
            for i in range(10, 14):
                sf.publish(CHANNEL, account_update(i))
            await until(lambda: subscriber.stats.produced >= 14, timeout_s=30)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await subscriber.close()
        assert sf.handshakes >= 3 and sf.tokens_issued == 2 and sf.refused_auth >= 1
        sample = metrics.registry.get_sample_value
        assert sample("crm_guard_salesforce_events_total", {"channel": CHANNEL}) == 14
        assert sample("crm_guard_salesforce_handshakes_total", {"reason": "start"}) == 1
        assert sample("crm_guard_salesforce_handshakes_total", {"reason": "session_ended"}) >= 1
        assert sample("crm_guard_salesforce_handshakes_total", {"reason": "token_renewed"}) == 1
        assert replays_in(await raw_messages(settings)) == sf.replay_ids()

        # a restart finds its resume point in Kafka; Salesforce no longer retains it
        for i in range(14, 20):
            sf.publish(CHANNEL, account_update(i))
        sf.retain_from(sf.replay_ids()[16])  # events 14 and 15 expired unseen: a gap Salesforce made
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        try:
            resume = await resume_points(consumer, topic, list(range(settings.partitions)), [CHANNEL])
        finally:
            await consumer.stop()
        assert resume == {CHANNEL: sf.replay_ids()[13]}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            tokens = TokenSource(url, access_token=sf.token)
            metrics = SubscriberMetrics()
            subscriber = SalesforceSubscriber(
                CometdTransport(http, tokens, "62.0"),
                producer,
                topic,
                [CHANNEL],
                resume,
                replay_from=-1,
                metrics=metrics,
            )
            task = asyncio.ensure_future(subscriber.run())
            await until(lambda: subscriber.stats.produced >= 4, timeout_s=30)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert subscriber.stats.resubscribed_all == [CHANNEL]
        assert (
            metrics.registry.get_sample_value("crm_guard_salesforce_replay_gaps_total", {"channel": CHANNEL})
            == 1
        )
        assert sf.subscribes[-2:] == [(CHANNEL, sf.replay_ids()[13]), (CHANNEL, -2)]
        ids = sf.replay_ids()
        assert replays_in(await raw_messages(settings)) == ids[:14] + ids[16:]
    finally:
        await producer.stop()
        await sf.stop()


async def test_refused_credentials_and_a_missing_broker_are_clear_errors(
    kafka_bootstrap: str, kafka_kind: str, unique: str
) -> None:
    sf = FakeSalesforce()
    url = await sf.start()
    settings = fresh_settings(kafka_bootstrap, unique)
    flags = () if kafka_kind == "apache" else ("--no-idempotence",)
    try:
        proc = await start_cli(
            cli_env(settings, CRM_GUARD_SALESFORCE_ACCESS_TOKEN="not-the-token"),  # noqa: S106
            url,
            *flags,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2
        assert (
            "Salesforce refused the credentials" in err.decode()
            and "401::Authentication invalid" in err.decode()
        )
        assert "not-the-token" not in err.decode() + out.decode()

        env = cli_env(
            settings,
            CRM_GUARD_SALESFORCE_CLIENT_ID=sf.client_id,
            CRM_GUARD_SALESFORCE_CLIENT_SECRET="wrong-secret",  # noqa: S106
        )
        proc = await start_cli(env, url, *flags)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2 and "invalid client credentials" in err.decode()

        env = cli_env(settings, CRM_GUARD_SALESFORCE_ACCESS_TOKEN=sf.token)
        del env["CRM_GUARD_BOOTSTRAP_SERVERS"]
        proc = await start_cli(env, url)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2 and "set CRM_GUARD_BOOTSTRAP_SERVERS" in err.decode()

        proc = await start_cli(
            cli_env(settings, CRM_GUARD_SALESFORCE_ACCESS_TOKEN=sf.token),
            url,
            "--channel",
            "/topic/NotCdc",
            *flags,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2 and "is not a Change Data Capture channel" in err.decode()

        env = cli_env(settings, CRM_GUARD_SALESFORCE_ACCESS_TOKEN=sf.token)
        env["CRM_GUARD_BOOTSTRAP_SERVERS"] = "127.0.0.1:1"
        proc = await start_cli(env, url)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1 and "cannot reach Kafka at 127.0.0.1:1" in err.decode()
    finally:
        await sf.stop()
    assert sf.handshakes == 0


async def test_webhook_deliveries_on_the_same_topic_do_not_hide_the_resume_point(
    kafka_bootstrap: str, unique: str
) -> None:
    """A CDC bridge's webhook deliveries (no replay header) land after the subscriber's events on
    the channel's partition: the scan walks back past them."""
    settings = fresh_settings(kafka_bootstrap, unique, partitions=1)
    await ensure_topics(settings, client_kwargs(settings))
    topic = settings.topics.raw_salesforce
    producer = make_producer(settings, idempotent=False)
    await producer.start()
    try:
        for replay in (5, 9, 12):
            await producer.send_and_wait(
                topic,
                key=CHANNEL.encode(),
                value=b"{}",
                headers=[(REPLAY_HEADER, f"{CHANNEL} {replay}".encode())],
            )
    finally:
        await producer.stop()
    await produce(settings.bootstrap_servers, topic, [b"{}"] * 50)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        assert await resume_points(consumer, topic, [0], [CHANNEL, "/data/LeadChangeEvent"]) == {CHANNEL: 12}
    finally:
        await consumer.stop()


SALESFORCE_AGENT_POLICY = """
agents:
  sf-enrich-agent:
    identities:
      - {vendor: salesforce, app_id: enrich-agent}
    denied_fields: [Industry]
"""


async def test_subscribed_events_reach_the_guard_and_pause_the_agent(
    kafka_bootstrap: str, kafka_kind: str, unique: str
) -> None:
    """End to end: Salesforce (the local CometD server) -> subscriber -> crm.raw.salesforce -> the
    guard's stages -> a protected_field alert on the agent named in the policy, and its pause."""
    from app.policy_file import parse_policy
    from app.runtime.assembly import build_runtime
    from tests.integration.helpers_stream import alert_values, read_topic

    settings = fresh_settings(kafka_bootstrap, unique)
    runtime, _ = build_runtime(
        settings, parse_policy(SALESFORCE_AGENT_POLICY, "test"), idempotent=kafka_kind == "apache"
    )
    await runtime.start()
    sf = FakeSalesforce(per_poll=2, hold_s=0.05)
    url = await sf.start()
    producer = make_producer(settings, idempotent=kafka_kind == "apache")
    await producer.start()
    try:
        await asyncio.wait_for(runtime.ready.wait(), 60)
        for i in range(3):
            sf.publish(CHANNEL, account_update(i))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            subscriber = SalesforceSubscriber(
                CometdTransport(http, TokenSource(url, access_token=sf.token), "62.0"),
                producer,
                settings.topics.raw_salesforce,
                [CHANNEL],
                {},
                replay_from=-2,
            )
            task = asyncio.ensure_future(subscriber.run())

            async def protected() -> list[dict[str, Any]]:
                alerts = alert_values(await read_topic(kafka_bootstrap, settings.topics.alerts))
                return [a for a in alerts if a.get("kind") == "protected_field"]

            await until(protected, timeout_s=60)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        alert = (await protected())[-1]
        assert alert["agent"] == "sf-enrich-agent" and alert["severity"] == "critical"
        pauses = await read_topic(kafka_bootstrap, settings.topics.pause)
        assert [p.key for p in pauses] == [b"sf-enrich-agent"]
    finally:
        await producer.stop()
        await sf.stop()
        await runtime.stop()
