"""SIGKILL a worker (`crm-guard run`, a real process) mid-stream: after a restart no event is lost
and no incident is opened twice."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.config import Topics
from tests.integration.helpers_stream import POLICY_YAML, T0, hubspot_change, produce, read_topic, wait_for
from tests.integration.helpers_worker import record_pid_in, start_worker, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

N_BATCHES = 2500  # x 10 events


def payloads() -> list[bytes]:
    """Agents, humans and an unknown integration over many records, spread over hours."""
    out = []
    event_id = 0
    for b in range(N_BATCHES):
        batch = []
        for j in range(10):
            event_id += 1
            at = T0 + event_id * 500
            kind = event_id % 10
            if kind < 5:
                batch.append(hubspot_change(event_id, 10_000 + event_id % 3000, "jobtitle", f"t{event_id}", at))
            elif kind < 8:
                batch.append(hubspot_change(event_id, 20_000 + event_id % 500, "phone", "1", at,
                                            source="CRM_UI", source_id=f"userId:{event_id % 7}"))
            elif kind < 9:
                batch.append(hubspot_change(event_id, 30_000 + event_id % 100, "city", "Oslo", at,
                                            source="API", source_id="31337"))
            else:
                batch.append(hubspot_change(event_id, 40_000 + event_id % 200, "utm_source", "enriched", at))
        out.append(orjson.dumps(batch))
    return out


def kill_record_process(log: Path) -> None:
    """SIGKILL the worker's record-stage process, if it runs."""
    pid = record_pid_in(log)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def distinct_events(bootstrap: str, topic: str) -> set[str]:
    ids = set()
    for record in await read_topic(bootstrap, topic, timeout_s=5):
        value = orjson.loads(record.value)
        if isinstance(value, list):  # change rows (dict messages attach findings)
            ids.update(row["event_id"] for row in value)
    return ids


async def test_sigkill_mid_stream_loses_nothing_and_opens_no_incident_twice(
    kafka_bootstrap: str, unique: str, kafka_kind: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    env = worker_env(kafka_bootstrap, unique, policy, tmp_path / "state", "crash", BATCH_MAX_RECORDS="500")
    topics = Topics(**{name: env[f"CRM_GUARD_TOPIC_{name.upper()}"] for name in Topics().model_dump()})
    log = tmp_path / "worker.log"
    total = N_BATCHES * 10

    worker = start_worker(env, log, kafka_kind, "--port", "0")
    try:
        async def ready() -> bool:
            return b"web and metrics" in log.read_bytes()
        assert await wait_for(ready, 60)
        await produce(kafka_bootstrap, topics.raw_hubspot, payloads())

        async def partly() -> bool:
            records = await read_topic(kafka_bootstrap, topics.by_actor, timeout_s=1)
            n = sum(len(orjson.loads(r.value)) for r in records)  # each message carries a batch of items
            return n >= total // 10

        assert await wait_for(partly, 120, interval=0.1), log.read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        # Both processes die at once, as in a machine crash: the record process would otherwise get
        # SIGTERM from the kernel (parent-death signal) and stop cleanly.
        kill_record_process(log)
    seen_before = len(await distinct_events(kafka_bootstrap, topics.timeline))
    assert seen_before < total, "the worker finished before it was killed: nothing was tested"

    worker = start_worker(env, log, kafka_kind, "--port", "0")
    try:
        async def complete() -> bool:
            return len(await distinct_events(kafka_bootstrap, topics.timeline)) >= total

        assert await wait_for(complete, 180, interval=1.0), log.read_text()[-3000:]

        async def alerts_settled() -> list[Any]:
            alerts = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, topics.alerts)]
            kinds = {a["kind"] for a in alerts}
            return alerts if {"velocity_cap", "protected_field", "unattributed_actor"} <= kinds else []

        alerts = await wait_for(alerts_settled, 60)
        assert alerts
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)

    keys_by_subject: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for alert in alerts:
        keys_by_subject[(alert["kind"], alert["actor_key"], alert["group"])].add(alert["dedup_key"])
    twice = {subject: keys for subject, keys in keys_by_subject.items() if len(keys) > 1}
    assert twice == {}, f"incidents opened twice after the restart: {twice}"
    pauses = await read_topic(kafka_bootstrap, topics.pause)
    assert {p.key for p in pauses} == {b"enrich-bot"}
    deadletters = await read_topic(kafka_bootstrap, topics.deadletter)
    assert deadletters == []
