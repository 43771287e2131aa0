"""The timeline survives restarts: written to guard.timeline, rebuilt from it on a real broker."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.timeline.log import KafkaTimelineLog, TimelineRecorder
from app.timeline.store import TimelineSettings, TimelineStore
from detectors.base import Finding, Severity
from detectors.events import ActorKind
from tests.unit.helpers_events import H, M, T0, event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def _finding(event_id: str, record_key: str) -> Finding:
    return Finding(detector="mass_overwrite", severity=Severity.WARNING, actor_key="enricher",
                   actor_kind=ActorKind.AGENT, agent="enricher", event_id=event_id, occurred_at=T0,
                   record_key=record_key, object_type="contact", summary="agent overwrote utm_source")


async def test_recorded_timeline_is_rebuilt_by_a_fresh_store_after_restart(kafka_bootstrap: str, unique: str) -> None:
    topic = f"guard.timeline.{unique}"
    log = KafkaTimelineLog(topic, partitions=3, bootstrap_servers=kafka_bootstrap)
    await log.start()
    store = TimelineStore()
    recorder = TimelineRecorder(store, log)
    try:
        for rid in range(12):
            recorder.record_event(event(str(rid), {"utm_source": "google"}, at=rid * M, by="user-1",
                                        kind=ActorKind.HUMAN))
            ev = event(str(rid), {"utm_source": "enriched", "jobtitle": "CTO"}, at=H + rid * M)
            recorder.record_event(ev)
            recorder.record_finding(_finding(ev.event_id, ev.record_key))
        recorder.record_decision({"proposal_id": "p-1", "record_key": "hubspot/contact/3", "decision": "reject",
                                  "decided_at": T0 + 2 * H, "decided_by": "gate", "reason": "denied field"})
        assert recorder.pending == 12 * 3 + 12 + 1
        sent = await recorder.flush()
        assert sent == 12 and recorder.pending == 0
        assert await recorder.flush() == 0
    finally:
        await log.stop()

    # "restart": a new log object and an empty store rebuild from the topic alone
    restarted = KafkaTimelineLog(topic, partitions=3, bootstrap_servers=kafka_bootstrap)
    rebuilt = TimelineStore()
    read = await restarted.rebuild(rebuilt)
    assert read == 12
    assert len(rebuilt) == len(store) == 36
    for key in (f"hubspot/contact/{rid}" for rid in range(12)):
        assert rebuilt.record_timeline(key).to_dict() == store.record_timeline(key).to_dict()
    assert rebuilt.agents() == store.agents()
    assert rebuilt.record_proposals("hubspot/contact/3") == store.record_proposals("hubspot/contact/3")
    again = await restarted.rebuild(rebuilt)  # idempotent: a second rebuild changes nothing
    assert again == 12 and len(rebuilt) == 36


async def test_rebuild_applies_record_stage_rows_and_per_record_cap_and_skips_poison(kafka_bootstrap: str,
                                                                                     unique: str) -> None:
    topic = f"guard.timeline.{unique}"
    log = KafkaTimelineLog(topic, partitions=2, bootstrap_servers=kafka_bootstrap)
    await log.start()
    await log.stop()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        # what the runtime's record stage emits: a plain JSON list of rows (field null without fields)
        rows = [{"event_id": f"ev-{i}", "record_key": "salesforce/deal/006A", "source": "salesforce",
                 "object_type": "deal", "record_id": "006A", "occurred_at": T0 + i * M, "field": "StageName",
                 "old": None, "has_old": False, "new": f"stage-{i}", "actor_id": "closer", "actor_kind": "agent",
                 "operation": "update"} for i in range(8)]
        rows.append({**rows[0], "event_id": "ev-del", "field": None, "occurred_at": T0 + H, "operation": "delete"})
        await producer.send_and_wait(topic, orjson.dumps(rows), key=b"salesforce/deal/006A")
        await producer.send_and_wait(topic, b"{not json", key=b"salesforce/deal/006A")
        await producer.send_and_wait(topic, orjson.dumps([{"event_id": 1}]), key=b"x")
    finally:
        await producer.stop()
    store = TimelineStore(TimelineSettings(max_entries_per_record=5))
    assert await KafkaTimelineLog(topic, bootstrap_servers=kafka_bootstrap).rebuild(store) == 3
    entries = store.record_entries("salesforce/deal/006A")
    assert [e.event_id for e in entries] == ["ev-4", "ev-5", "ev-6", "ev-7", "ev-del"]
    assert entries[-1].field == "" and entries[-1].operation == "delete"


async def test_follow_picks_up_another_workers_writes(kafka_bootstrap: str, unique: str) -> None:
    topic = f"guard.timeline.{unique}"
    writer = KafkaTimelineLog(topic, partitions=2, bootstrap_servers=kafka_bootstrap)
    await writer.start()
    reader = KafkaTimelineLog(topic, partitions=2, bootstrap_servers=kafka_bootstrap)
    view = TimelineStore()
    try:
        first = TimelineStore()
        TimelineRecorder(first).record_event(event("1", {"city": "Oslo"}, at=0))
        await writer.append_batch(first.record_entries("hubspot/contact/1"))
        assert await reader.rebuild(view) == 1
        stop = asyncio.Event()
        task = asyncio.create_task(reader.follow(view, stop))
        later = TimelineStore()
        TimelineRecorder(later).record_event(event("2", {"city": "Rome"}, at=M))
        await writer.append_batch(later.record_entries("hubspot/contact/2"))
        for _ in range(100):
            if view.has_record("hubspot/contact/2"):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert view.has_record("hubspot/contact/2") and len(view) == 2
    finally:
        await writer.stop()


async def test_append_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        await KafkaTimelineLog("t", bootstrap_servers="127.0.0.1:1").append_batch([])
