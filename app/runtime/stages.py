"""The four stages of the streaming guard (docs/ARCHITECTURE.md):

ingest  crm.raw.<vendor>  -> crm.changes (keyed by record)         stateless: adapters
record  crm.changes       -> guard.by-actor, guard.by-link, guard.timeline   state by record
link    guard.by-link     -> guard.by-actor                         state by identity/account
actor   guard.by-actor    -> guard.alerts, guard.pause, guard.feedback        state by actor

Each is a BatchStage: the detector objects are the ones `Guard` runs offline.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import orjson
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from app.adapters import AdapterError, decode_line, normalize_with_errors
from app.replay import override_row, timeline_rows
from app.runtime import codec
from app.runtime.stage import BatchStage, Emit, PoisonMessage
from app.runtime.store import PartitionState
from detectors.alerts import Alert, PauseDecision
from detectors.attribution import Attributor
from detectors.base import Finding, Observation
from detectors.events import ChangeEvent
from detectors.pipeline import ActorResult, ActorStage, LinkStage, Output, RecordStage

PauseEncoder = Callable[[PauseDecision], tuple[str, bytes, bytes]]
"""Turns a pause decision into (topic, key, signed value)."""


class IngestStage(BatchStage):
    """Vendor payloads to canonical events. A payload that cannot be used is dead-lettered whole;
    the bad elements of a HubSpot batch are dead-lettered one by one while the good ones go on."""

    name = "ingest"

    def __init__(self, *, raw_topics: dict[str, str], changes_topic: str, max_payload_bytes: int, **kw: Any) -> None:
        super().__init__(topics=list(raw_topics.values()), changelog_topic=None, **kw)
        self.vendor_of = {topic: vendor for vendor, topic in raw_topics.items()}
        self.changes_topic = changes_topic
        self.max_payload_bytes = max_payload_bytes

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

    def state_names(self) -> list[str]:
        return self.stage.state_names()

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
        obs, findings = self.stage.process(event, state)
        if obs is None:
            if self.metrics:
                self.metrics.event(event.source, "duplicate")
            return
        if self.metrics:
            self.metrics.change(event.source, event.actor.kind.value, event.actor.id if event.actor.kind.value == "agent" else None)
        emit.send(self.by_actor, obs.actor_key, codec.encode_actor_input(obs=obs))
        for finding in findings:
            emit.send(self.by_actor, finding.actor_key, codec.encode_actor_input(finding=finding))
        for name, key in self.link.keys(obs):
            emit.send(self.by_link, key, codec.encode_link_probe(name, key, obs))
        if self.timeline_topic:
            rows = timeline_rows(Output(observation=obs))
            emit.send(self.timeline_topic, event.record_key, orjson.dumps(rows))


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
            name, key, obs = codec.decode_link_probe(record.value)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise PoisonMessage("invalid_probe", f"not a link probe: {exc}") from exc
        if name not in self.stage.detectors:
            raise PoisonMessage("unknown_detector", f"no link detector named {name!r} in this worker")
        for finding in self.stage.process(name, key, obs, state):
            emit.send(self.by_actor, finding.actor_key, codec.encode_actor_input(finding=finding))


class ActorStageRunner(BatchStage):
    """Caps, scope, rates, anomaly scores, and alert grouping; emits alerts, pauses, feedback."""

    name = "actor"

    def __init__(self, *, stage: ActorStage, alerts_topic: str, feedback_topic: str,
                 encode_pause: PauseEncoder, on_alert: Callable[[Alert], None] | None = None,
                 on_finding: Callable[[Finding], None] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.stage = stage
        self.alerts_topic = alerts_topic
        self.feedback_topic = feedback_topic
        self.encode_pause = encode_pause
        self.on_alert = on_alert
        self.on_finding = on_finding

    def state_names(self) -> list[str]:
        return self.stage.state_names()

    def handle(self, record: ConsumerRecord, state: PartitionState | None, emit: Emit) -> None:
        assert state is not None
        try:
            item = codec.decode_actor_input(record.value)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise PoisonMessage("invalid_actor_input", f"not an observation or finding: {exc}") from exc
        if isinstance(item, Observation):
            result = self.stage.process_observation(item, state)
        else:
            result = self.stage.process_finding(item, state)
        self._publish(result, emit)

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
