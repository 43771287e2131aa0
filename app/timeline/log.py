"""The timeline's durable log on Kafka, and the recorder the streaming runtime feeds.

Topic `guard.timeline` (Settings.topics.timeline), keyed by record key, value = either a JSON list
of entry rows (what the record stage emits: `app.replay.timeline_rows`), or one JSON batch object:

    {"v": 1, "record_key": "hubspot/contact/123",
     "entries":   [TimelineEntry JSON, ...],      # app/timeline/store.py
     "findings":  [Finding.to_dict(), ...],       # attached by event_id (overrides included)
     "decisions": [TimelineDecision JSON, ...]}   # attached by event_id / proposal_id

Why `cleanup.policy=delete` with `retention.ms` = the store's time retention (90 days), not
compaction: each message carries only the new items of one batch, so compaction (latest message per
key) would lose a record's earlier history; writing the record's whole timeline on every change
instead would cost up to 500 entries per write on exactly the records an agent hammers. The store
re-applies its per-record cap while rebuilding, and appends are idempotent per (event_id, field),
so a rebuild over messages already applied, or a batch produced twice, changes nothing.

Every worker rebuilds from all partitions on start and then follows the topic, so the timeline API
of any worker shows every record (a read model, like a global table), while each worker only
writes the records of its own crm.changes partitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.runtime.kafka_client import topic_partitions
from app.timeline.store import TimelineDecision, TimelineEntry, TimelineStore, entries_from_event
from detectors.base import Finding, Prior
from detectors.events import ChangeEvent

log = logging.getLogger(__name__)

BATCH_VERSION = 1
MAX_ITEMS_PER_MESSAGE = 200
"""Entries per message: 200 entries of ~400 bytes stay well below Kafka's 1 MB message limit."""


def client_options(settings: Any) -> dict[str, Any]:
    """aiokafka connection options (bootstrap, SASL/TLS) from app.config.Settings."""
    options: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers,
                               "security_protocol": settings.security_protocol}
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
    return options


class KafkaTimelineLog:
    """Writes timeline batches to the topic and rebuilds a TimelineStore from it."""

    def __init__(
        self,
        topic: str = "guard.timeline",
        *,
        partitions: int = 6,
        replication_factor: int = 1,
        retention_ms: int = 90 * 86_400_000,
        **client: Any,
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.retention_ms = retention_ms
        self.client = client
        self._producer: AIOKafkaProducer | None = None
        self._positions: dict[int, int] = {}

    @classmethod
    def from_settings(cls, settings: Any, retention_ms: int = 90 * 86_400_000) -> "KafkaTimelineLog":
        """The log for a running guard (app.config.Settings)."""
        return cls(settings.topics.timeline, partitions=settings.partitions,
                   replication_factor=settings.replication_factor, retention_ms=retention_ms,
                   **client_options(settings))

    async def start(self) -> None:
        """Create the topic when missing (retention as documented) and start the producer."""
        admin = AIOKafkaAdminClient(**self.client)
        await admin.start()
        try:
            existing = await admin.list_topics()
            if self.topic not in existing:
                topic = NewTopic(self.topic, self.partitions, self.replication_factor, topic_configs={
                    "cleanup.policy": "delete", "retention.ms": str(self.retention_ms)})
                try:
                    await admin.create_topics([topic])
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()
        self._producer = AIOKafkaProducer(acks="all", linger_ms=5, **self.client)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def append_batch(
        self,
        entries: Iterable[TimelineEntry] = (),
        findings: Iterable[Finding | Mapping[str, Any]] = (),
        decisions: Iterable[TimelineDecision | Mapping[str, Any]] = (),
    ) -> int:
        """Produce the items, one message per record (chunked), and wait until every one is acknowledged.
        Returns the number of messages. Call before committing the offsets these items came from."""
        if self._producer is None:
            raise RuntimeError("KafkaTimelineLog.start() was not called")
        grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}

        def slot(record_key: str, name: str) -> list[dict[str, Any]]:
            return grouped.setdefault(record_key, {"entries": [], "findings": [], "decisions": []})[name]

        for entry in entries:
            slot(entry.record_key, "entries").append(entry.to_json_dict())
        for finding in findings:
            data = finding.to_dict() if isinstance(finding, Finding) else dict(finding)
            slot(str(data["record_key"]), "findings").append(data)
        for decision in decisions:
            data = decision.model_dump(mode="json") if isinstance(decision, TimelineDecision) else dict(decision)
            slot(str(data["record_key"]), "decisions").append(data)
        sends = []
        for record_key, items in grouped.items():
            for chunk in _chunks(items):
                value = orjson.dumps({"v": BATCH_VERSION, "record_key": record_key, **chunk})
                sends.append(await self._producer.send(self.topic, value=value, key=record_key.encode()))
        if sends:
            await asyncio.gather(*sends)
        return len(sends)

    async def rebuild(self, store: TimelineStore, timeout_s: float = 120.0) -> int:
        """Apply every message from the beginning up to the end offsets seen now; returns messages read.
        A message that is not a valid batch is logged (without its values) and skipped."""
        consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, auto_offset_reset="earliest",
                                    **self.client)
        await consumer.start()
        read = 0
        try:
            partitions = await _partitions(consumer, self.topic)
            if not partitions:
                return 0
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await consumer.seek_to_beginning(*partitions)
            pending = {tp for tp in partitions if ends[tp] > 0}
            for tp in partitions:
                self._positions[tp.partition] = 0
            deadline = asyncio.get_running_loop().time() + timeout_s
            while pending:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"timeline rebuild from {self.topic} did not reach the end offsets")
                batches = await consumer.getmany(*pending, timeout_ms=500)
                for tp, messages in batches.items():
                    for message in messages:
                        read += 1
                        _apply(store, message.value, tp, message.offset)
                        self._positions[tp.partition] = message.offset + 1
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        self._positions[tp.partition] = ends[tp]
                        pending.discard(tp)
        finally:
            await consumer.stop()
        return read

    async def follow(self, store: TimelineStore, stop: asyncio.Event | None = None) -> None:
        """After `rebuild`, keep applying new messages (other workers' records) until `stop` is set
        or the task is cancelled. Own messages come back too and are no-ops (idempotent append)."""
        consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, auto_offset_reset="earliest",
                                    **self.client)
        await consumer.start()
        try:
            partitions = await _partitions(consumer, self.topic)
            consumer.assign(partitions)
            for tp in partitions:
                if tp.partition in self._positions:
                    consumer.seek(tp, self._positions[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            while stop is None or not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                for tp, messages in batches.items():
                    for message in messages:
                        _apply(store, message.value, tp, message.offset)
                        self._positions[tp.partition] = message.offset + 1
        finally:
            await consumer.stop()


class TimelineRecorder:
    """The runtime's entry point: add to the store at once, persist on `flush()`.

    In the RECORD stage, for every event the record state applied (Observation not None)::

        recorder.record_event(obs.event, obs.priors)
        for finding in findings: recorder.record_finding(finding)   # any stage, overrides included
        ...
        await recorder.flush()        # once per batch, before committing the batch's offsets

    `flush` keeps the pending items when the produce fails, so the caller can retry and must not
    commit. Without a log (replay, tests) it only feeds the store.
    """

    def __init__(self, store: TimelineStore, log: KafkaTimelineLog | None = None) -> None:
        self.store = store
        self.log = log
        self._entries: list[TimelineEntry] = []
        self._findings: list[Finding | Mapping[str, Any]] = []
        self._decisions: list[TimelineDecision | Mapping[str, Any]] = []

    def record_event(self, event: ChangeEvent, priors: Mapping[str, Prior | None] | None = None) -> int:
        """Add an event's entries; returns how many were new."""
        new = [e for e in entries_from_event(event, priors) if self.store.append(e)]
        self._entries.extend(new)
        return len(new)

    def record_entry(self, entry: TimelineEntry) -> bool:
        if self.store.append(entry):
            self._entries.append(entry)
            return True
        return False

    def record_finding(self, finding: Finding | Mapping[str, Any]) -> bool:
        if self.store.attach_finding(finding):
            self._findings.append(finding)
            return True
        return False

    def record_decision(self, decision: TimelineDecision | Mapping[str, Any]) -> bool:
        if self.store.attach_decision(decision):
            self._decisions.append(decision)
            return True
        return False

    @property
    def pending(self) -> int:
        return len(self._entries) + len(self._findings) + len(self._decisions)

    async def flush(self) -> int:
        """Produce what was recorded since the last flush; returns messages produced."""
        if self.log is None or not self.pending:
            self._entries, self._findings, self._decisions = [], [], []
            return 0
        sent = await self.log.append_batch(self._entries, self._findings, self._decisions)
        self._entries, self._findings, self._decisions = [], [], []
        return sent


def _chunks(items: dict[str, list[dict[str, Any]]]) -> Iterable[dict[str, list[dict[str, Any]]]]:
    total = max(len(v) for v in items.values())
    for start in range(0, max(total, 1), MAX_ITEMS_PER_MESSAGE):
        yield {name: values[start:start + MAX_ITEMS_PER_MESSAGE] for name, values in items.items()}


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    return await topic_partitions(consumer, topic)


def _apply(store: TimelineStore, value: bytes | None, tp: TopicPartition, offset: int) -> None:
    try:
        batch = orjson.loads(value or b"null")
        if not isinstance(batch, (dict, list)):
            raise ValueError("not a batch")
        store.apply_batch(batch)
    except ValueError as exc:  # orjson.JSONDecodeError and pydantic ValidationError are ValueErrors
        log.warning("skipping bad timeline message %s[%d]@%d: %s", tp.topic, tp.partition, offset,
                    type(exc).__name__)
