"""The four stages of the streaming guard (docs/ARCHITECTURE.md):

ingest  crm.raw.<vendor>  -> crm.changes (keyed by record)         stateless: adapters
record  crm.changes       -> guard.by-actor, guard.by-link, guard.timeline   state by record
link    guard.by-link     -> guard.by-actor                         state by identity/account
actor   guard.by-actor    -> guard.alerts, guard.pause, guard.feedback        state by actor

Each is a BatchStage: the detector objects are the ones `Guard` runs offline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import orjson
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from app.adapters import AdapterError, decode_line, normalize_with_errors
from app.replay import override_row, timeline_rows
from app.runtime import codec
from app.runtime.model_checkpoints import ModelCheckpoints, agent_of
from app.runtime.stage import BatchStage, Emit, PoisonMessage
from app.runtime.store import Loader, PartitionState
from detectors.alerts import Alert, PauseDecision
from detectors.attribution import Attributor
from detectors.base import Finding, Observation
from detectors.events import ChangeEvent
from detectors.pipeline import ActorResult, ActorStage, LinkStage, Output, RecordStage

PauseEncoder = Callable[[PauseDecision], tuple[str, bytes, bytes]]
"""Turns a pause decision into (topic, key, signed value)."""

log = logging.getLogger(__name__)


CHUNK_BYTES = 512 * 1024


def json_arrays(items: list[bytes], limit: int = CHUNK_BYTES) -> list[bytes]:
    """Pre-encoded JSON items joined into arrays of at most `limit` bytes (one item may exceed it)."""
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 2
    for item in items:
        if chunk and size + len(item) + 1 > limit:
            out.append(b"[" + b",".join(chunk) + b"]")
            chunk, size = [], 2
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        out.append(b"[" + b",".join(chunk) + b"]")
    return out


class IngestStage(BatchStage):
    """Vendor payloads to canonical events. A payload that cannot be used is dead-lettered whole;
    the bad elements of a HubSpot batch are dead-lettered one by one while the good ones go on."""

    name = "ingest"

    EVENTS_PER_MESSAGE = 10
    """What one raw message typically carries (a HubSpot delivery holds up to 100 notifications,
    a Salesforce or Pipedrive message one). The batch bound is in events: `batch_max_records`
    deliveries at once made ingest batches of ~10,000 events that held the other stages of the
    worker back for half a second (bench/latency.py)."""

    def __init__(self, *, raw_topics: dict[str, str], changes_topic: str, max_payload_bytes: int, **kw: Any) -> None:
        super().__init__(topics=list(raw_topics.values()), changelog_topic=None, **kw)
        self.max_records = max(1, self.max_records // self.EVENTS_PER_MESSAGE)
        self.vendor_of = {topic: vendor for vendor, topic in raw_topics.items()}
        self.changes_topic = changes_topic
        self.max_payload_bytes = max_payload_bytes

    def source_label(self, record: ConsumerRecord) -> str:
        return self.vendor_of.get(record.topic, "unknown")

    def handle(self, record: ConsumerRecord, state: PartitionState | None, emit: Emit) -> None:
        source = self.vendor_of.get(record.topic, "auto")
        if record.value is None:
            raise PoisonMessage("empty", "message has no value")
        try:
            payload = decode_line(record.value, max_bytes=self.max_payload_bytes)
            events, errors = normalize_with_errors(payload, source)
        except AdapterError as exc:
            if self.metrics:
                self.metrics.event(source, "deadletter")
            raise PoisonMessage(exc.reason, str(exc)) from exc
        for err in errors:
            self._deadletter(emit, record, err.reason, str(err))
            if self.metrics:
                self.metrics.event(source, "deadletter")
        for event in events:
            emit.send(self.changes_topic, event.record_key, codec.encode_event(event))
        if self.metrics and events:
            self.metrics.event(source, "ok", len(events))


class RecordStageRunner(BatchStage):
    """Record state, per-record detectors; fans out to the actor and link stages."""

    name = "record"

    def __init__(self, *, stage: RecordStage, link: LinkStage, attributor: Attributor, by_actor: str,
                 by_link: str, timeline_topic: str | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.stage = stage
        self.link = link
        self.attributor = attributor
        self.by_actor = by_actor
        self.by_link = by_link
        self.timeline_topic = timeline_topic
        self.to_actor: dict[str, list[bytes]] = {}
        self.to_link: dict[str, list[bytes]] = {}
        self.timeline_rows: dict[int, list[bytes]] = {}

    def state_names(self) -> list[str]:
        return self.stage.state_names()

    def state_loaders(self) -> dict[str, Loader]:
        return self.stage.state_loaders()

    def handle(self, record: ConsumerRecord, state: PartitionState | None, emit: Emit) -> None:
        assert state is not None
        if record.value is None:
            raise PoisonMessage("empty", "message has no value")
        try:
            event = ChangeEvent.model_validate_json(record.value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PoisonMessage(f"invalid_event:{where}", f"not a canonical change event: {where}: {first['msg']}") from exc
        event = self.attributor.attribute(event)
        self.compaction.saw(record.partition, event.occurred_at)
        obs, findings = self.stage.process(event, state)
        if obs is None:
            if self.metrics:
                self.metrics.event(event.source, "duplicate")
            return
        if self.metrics:
            self.metrics.change(event.source, event.actor.kind.value, event.actor.id if event.actor.kind.value == "agent" else None)
        self.to_actor.setdefault(obs.actor_key, []).append(orjson.dumps(codec.actor_input(obs=obs)))
        for finding in findings:
            self.to_actor.setdefault(finding.actor_key, []).append(orjson.dumps(codec.actor_input(finding=finding)))
        for name, key in self.link.keys(obs):
            self.to_link.setdefault(key, []).append(orjson.dumps(codec.link_probe(name, obs)))
        if self.timeline_topic:
            self.timeline_rows.setdefault(record.partition, []).extend(
                orjson.dumps(row) for row in timeline_rows(Output(observation=obs)))

    def compact(self, state: PartitionState, now_ms: int) -> int:
        return self.stage.compact(state, now_ms)

    def after_batch(self, emit: Emit) -> None:
        """One message per actor key and per link key; one timeline message per input partition
        (each split into JSON arrays of at most CHUNK_BYTES, under Kafka's 1 MB message limit)."""
        for key, items in self.to_actor.items():
            for chunk in json_arrays(items):
                emit.send(self.by_actor, key, chunk)
        for key, items in self.to_link.items():
            for chunk in json_arrays(items):
                emit.send(self.by_link, key, chunk)
        if self.timeline_topic:
            for partition, rows in self.timeline_rows.items():
                for chunk in json_arrays(rows):
                    emit.send(self.timeline_topic, None, chunk, partition=partition)
        self.to_actor, self.to_link, self.timeline_rows = {}, {}, {}


class LinkStageRunner(BatchStage):
    """Identity and account detectors; their findings go to the actor stage."""

    name = "link"

    def __init__(self, *, stage: LinkStage, by_actor: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.stage = stage
        self.by_actor = by_actor

    def state_names(self) -> list[str]:
        return self.stage.state_names()

    def handle(self, record: ConsumerRecord, state: PartitionState | None, emit: Emit) -> None:
        assert state is not None
        try:
            key = record.key.decode()
            probes = codec.decode_link_probes(record.value)
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise PoisonMessage("invalid_probe", f"not a list of link probes: {exc}") from exc
        for name, _ in probes:
            if name not in self.stage.detectors:
                raise PoisonMessage("unknown_detector", f"no link detector named {name!r} in this worker")
        for name, obs in probes:
            self.compaction.saw(record.partition, obs.event.occurred_at)
            for finding in self.stage.process(name, key, obs, state):
                emit.send(self.by_actor, finding.actor_key, orjson.dumps([codec.actor_input(finding=finding)]))

    def compact(self, state: PartitionState, now_ms: int) -> int:
        return self.stage.compact(state, now_ms)


def _event_time(item: Observation | Finding) -> int:
    return item.event.occurred_at if isinstance(item, Observation) else item.occurred_at


def _first(entry: tuple[int, Any, Any]) -> int:
    return entry[0]


class ActorStageRunner(BatchStage):
    """Caps, scope, rates, anomaly scores, and alert grouping; emits alerts, pauses, feedback."""

    name = "actor"

    def __init__(self, *, stage: ActorStage, alerts_topic: str, feedback_topic: str, timeline_topic: str | None,
                 encode_pause: PauseEncoder, on_alert: Callable[[Alert], None] | None = None,
                 on_finding: Callable[[Finding], None] | None = None,
                 checkpoints: ModelCheckpoints | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.stage = stage
        self.checkpoints = checkpoints
        self.alerts_topic = alerts_topic
        self.feedback_topic = feedback_topic
        self.timeline_topic = timeline_topic
        self.encode_pause = encode_pause
        self.on_alert = on_alert
        self.on_finding = on_finding
        self.observations = 0  # changes seen by this stage (messages carry several)
        self.timeline_findings: list[bytes] = []
        self.watermarks: dict[int, int] = {}  # per partition: the latest event time handled
        self.advanced: set[int] = set()  # partitions whose watermark moved in this batch

    def state_names(self) -> list[str]:
        return self.stage.state_names()

    def handle(self, record: ConsumerRecord, state: PartitionState | None, emit: Emit) -> None:
        """One by-actor message on its own (see handle_records)."""
        self.handle_records([record], state, emit)

    def handle_records(self, records: list[ConsumerRecord], state: PartitionState | None, emit: Emit) -> None:
        """A partition's by-actor messages of one batch, their items merged in event-time order.

        A message holds an actor's items from one record-stage batch, partition after partition,
        and the next message the same actor's items from another record partition: in a backlog,
        hours of one partition before the next one's. Merged in event-time order (stable: a
        finding stays after the observation it came with) the windowed detectors see what the
        replay sees instead of long runs of late changes, which also cost a late insert each.
        A message that cannot be decoded, or whose item raises, is dead-lettered; its items after
        the failing one are skipped, everything else goes on.
        """
        assert state is not None
        items: list[tuple[int, Observation | Finding, ConsumerRecord]] = []
        for record in records:
            try:
                decoded = codec.decode_actor_inputs(record.value)
            except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
                self.failed(record, PoisonMessage(
                    "invalid_actor_input", f"not a list of observations and findings: {exc}"), emit)
                continue
            items.extend((_event_time(item), item, record) for item in decoded)
            if self.checkpoints is not None and record.key is not None:
                agent = record.key.decode(errors="replace")
                if agent in self.stage.policy.agents:
                    self.checkpoints.seen(agent, record.partition)
        items.sort(key=_first)
        failed: set[int] = set()
        latest = 0
        for at, item, record in items:
            if record.offset in failed:
                continue
            try:
                if isinstance(item, Observation):
                    self.observations += 1
                    result = self.stage.process_observation(item, state)
                else:
                    result = self.stage.process_finding(item, state)
                self._publish(result, emit)
            except Exception as exc:  # noqa: BLE001 - one error policy: dead-letter and go on
                failed.add(record.offset)
                self.failed(record, exc, emit)
                continue
            latest = max(latest, at)
        if latest:
            partition = records[0].partition
            self.compaction.saw(partition, latest)
            if latest > self.watermarks.get(partition, 0):
                self.watermarks[partition] = latest
                self.advanced.add(partition)

    def _publish(self, result: ActorResult, emit: Emit) -> None:
        now = time.time()
        for finding in result.findings:
            if self.metrics:
                self.metrics.finding(finding.detector, finding.severity.value)
            if finding.detector == "override":
                emit.send(self.feedback_topic, finding.agent or finding.actor_key,
                          orjson.dumps({"type": "override", **override_row(finding)}))
                if self.metrics:
                    self.metrics.override(finding.agent)
            if self.timeline_topic and (finding.detector == "override" or finding.severity.value != "info"):
                # attached to the change it concerns on the record's timeline (sent per batch)
                self.timeline_findings.append(orjson.dumps(finding.to_dict()))
            if self.on_finding:
                self.on_finding(finding)
        for alert in result.alerts:
            emit.send(self.alerts_topic, alert.dedup_key, orjson.dumps(alert.model_dump(mode="json")))
            if self.metrics:
                self.metrics.alert(alert.kind, alert.severity.value)
                if alert.version <= 1:
                    self.metrics.alert_latency.observe(max(0.0, now - alert.detected_at / 1000))
            if self.on_alert:
                self.on_alert(alert)
        for pause in result.pauses:
            topic, key, value = self.encode_pause(pause)
            emit.send(topic, key, value)
            if self.metrics:
                self.metrics.pause(pause.agent)

    def after_batch(self, emit: Emit) -> None:
        """Event time moved on in some partitions: windows of actors that went quiet there close
        (produced and committed with this batch). Then the batch's timeline findings as
        `{"findings": [...]}` messages of at most CHUNK_BYTES: one produce per chunk instead of
        one per finding (a velocity burst warns on every change)."""
        for partition in sorted(self.advanced):
            state = self.partitions.get(partition)
            if state is not None:
                self._publish(self.stage.advance(self.watermarks[partition], state), emit)
        self.advanced.clear()
        if self.timeline_topic and self.timeline_findings:
            for chunk in json_arrays(self.timeline_findings):
                emit.send(self.timeline_topic, None, b'{"findings":' + chunk + b"}")
        self.timeline_findings = []
        if self.checkpoints is not None and self.changelog_topic:
            for partition, key, value in self.checkpoints.due(self.partitions):
                emit.send(self.changelog_topic, key, value, partition=partition)

    def compact(self, state: PartitionState, now_ms: int) -> int:
        return self.stage.compact(state, now_ms)

    def restore_record(self, partition: int, state: PartitionState, key: bytes, value: bytes | None) -> None:
        agent = agent_of(key)
        if agent is None:
            state.apply_changelog(key, value)
        elif self.checkpoints is not None:
            self.checkpoints.apply(agent, partition, value)

    async def before_revoke(self, partitions: list[int]) -> None:
        await self._final_checkpoints(partitions)
        for partition in partitions:
            self.watermarks.pop(partition, None)
            self.advanced.discard(partition)
        if self.checkpoints is not None:
            self.checkpoints.forget(partitions)

    async def on_stop(self) -> None:
        """Checkpoint the models before leaving; a batch stuck on a broker that is gone gets 10 s."""
        try:
            async with asyncio.timeout(10):
                await self.batch_lock.acquire()
        except TimeoutError:
            log.warning("actor: a batch is still in flight after 10 s; stopping without model checkpoints")
        else:
            try:
                await self._final_checkpoints(list(self.partitions))
            finally:
                self.batch_lock.release()
        await super().on_stop()

    async def _final_checkpoints(self, partitions: list[int]) -> None:
        """Every model of these partitions that learned since its last checkpoint, written now."""
        if self.checkpoints is None or not self.changelog_topic or not partitions:
            return
        due = self.checkpoints.due(partitions, force=True)
        if due:
            await self.send_and_wait([(self.changelog_topic, key, value, [], p) for p, key, value in due])
