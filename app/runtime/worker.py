"""The guard worker: a Faust app whose services are the guard's batch stages and web server.

Faust gives the worker lifecycle (signals, graceful stop), the service tree and the place where
the web server hangs; the stages are mode.Services started as runtime dependencies of the app
(see app/runtime/stage.py for why they use aiokafka batches rather than Faust agents).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import faust
from aiokafka import AIOKafkaProducer
from mode import Service

from app.adapters import VENDORS
from app.config import Settings
from app.metrics import GuardMetrics
from app.review.service import UNKNOWN
from app.runtime import local_store
from app.runtime.kafka_client import (
    client_kwargs,
    faust_credentials,
    faust_group_timing,
    group_kwargs,
    make_producer,
)
from app.runtime.local_store import LocalStore
from app.runtime.model_checkpoints import ModelCheckpoints
from app.runtime.stage import BatchStage
from app.runtime.stages import ActorStageRunner, IngestStage, LinkStageRunner, PauseEncoder, RecordStageRunner
from app.runtime.topics import changelog_topic, ensure_topics
from detectors.activity_anomaly import ActivityAnomalyDetector
from detectors.alerts import Alert, PauseDecision
from detectors.attribution import Attributor
from detectors.base import Finding
from detectors.pipeline import ALERTS_STATE, RECORD_STATE, ActorStage, LinkStage, RecordStage
from detectors.policy import Policy
from detectors.registry import default_detectors
from detectors.velocity_cap import VelocityCapDetector

log = logging.getLogger(__name__)


class AlertBoard:
    """The latest version of recent alerts and the pause state per agent, for the API and CLI."""

    def __init__(self, limit: int = 2000) -> None:
        self.limit = limit
        self.alerts: OrderedDict[str, Alert] = OrderedDict()
        self.paused: dict[str, PauseDecision] = {}
        self.listeners: list[Callable[[Alert], None]] = []

    def add(self, alert: Alert) -> None:
        self.alerts.pop(alert.dedup_key, None)
        self.alerts[alert.dedup_key] = alert
        while len(self.alerts) > self.limit:
            self.alerts.popitem(last=False)
        for listener in self.listeners:
            listener(alert)

    def open_for(self, agent: str | None = None) -> list[Alert]:
        return [a for a in self.alerts.values() if a.status == "open" and (agent is None or a.agent == agent)]


GC_THRESHOLDS = (20_000, 20, 100)
"""Collector thresholds while the guard runs (Python's default: 700, 10, 10). A worker allocates
millions of short-lived objects a minute; with the defaults the young collections and the full
ones they trigger took 4.3 s of a 45 s run at 5,000 events/s, pauses up to 98 ms. With these and
the periodic gc.freeze() below: 0.8 s, no full collection, pauses under 30 ms
(bench/latency.py, docs/latency-recovery.md)."""


class GuardRuntime(Service):
    """Creates the topics, the shared producer and the four stages, and keeps gauges fresh."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        *,
        encode_pause: PauseEncoder,
        metrics: GuardMetrics | None = None,
        idempotent: bool = False,
        board: AlertBoard | None = None,
        on_finding: Callable[[Finding], None] | None = None,
        trust_state: Any = None,
        model_secret: bytes | None = None,
        **kwargs: Any,
    ) -> None:
        """`model_secret` signs the checkpoints of activity_anomaly's models (None: no checkpoints,
        the models warm up again after every restart)."""
        super().__init__(**kwargs)
        self.model_secret = model_secret
        self.settings = settings
        self.policy = policy
        self.encode_pause = encode_pause
        self.metrics = metrics or GuardMetrics(agents=list(policy.agents))
        self.idempotent = idempotent
        self.board = board or AlertBoard()
        self.on_finding = on_finding
        self.trust_state = trust_state
        self.producer: AIOKafkaProducer | None = None
        self.stages: list[BatchStage] = []
        self.ready = asyncio.Event()
        self.extra_services: list[Service] = []
        self._gc_thresholds = gc.get_threshold()

    async def on_start(self) -> None:
        self._gc_thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        settings = self.settings
        kwargs = client_kwargs(settings)
        await ensure_topics(settings, kwargs)
        self.producer = make_producer(settings, self.idempotent)
        await self.producer.start()
        for service in self.extra_services:
            await self.add_runtime_dependency(service)
        detectors = default_detectors(self.policy, self.trust_state)
        topics = settings.topics
        common: dict[str, Any] = {
            "bootstrap": settings.bootstrap_servers,
            "producer": self.producer,
            "deadletter_topic": topics.deadletter,
            "client_kwargs": kwargs,
            "group_kwargs": group_kwargs(settings),
            "metrics": self.metrics,
            "max_records": settings.batch_max_records,
            "fetch_max_wait_ms": settings.fetch_max_wait_ms,
            "loop": self.loop,
            "beacon": self.beacon,
        }
        group = settings.group_id
        self.stages = [
            IngestStage(
                raw_topics={v: topics.raw(v) for v in VENDORS},
                changes_topic=topics.changes, max_payload_bytes=settings.max_payload_bytes,
                group_id=f"{group}.ingest", **common,
            ),
            RecordStageRunner(
                stage=RecordStage(self.policy, detectors), link=LinkStage(self.policy, detectors),
                attributor=Attributor(self.policy), by_actor=topics.by_actor, by_link=topics.by_link,
                timeline_topic=topics.timeline, topics=[topics.changes], group_id=f"{group}.record",
                changelog_topic=changelog_topic(settings, "record"), local_store=self._local_store("record"),
                **common,
            ),
            LinkStageRunner(
                stage=LinkStage(self.policy, detectors), by_actor=topics.by_actor, topics=[topics.by_link],
                group_id=f"{group}.link", changelog_topic=changelog_topic(settings, "link"),
                local_store=self._local_store("link"), **common,
            ),
            ActorStageRunner(
                stage=ActorStage(self.policy, detectors), alerts_topic=topics.alerts,
                feedback_topic=topics.feedback, timeline_topic=topics.timeline,
                encode_pause=self._encode_pause, on_alert=self.board.add,
                on_finding=self.on_finding, topics=[topics.by_actor], group_id=f"{group}.actor",
                changelog_topic=changelog_topic(settings, "actor"), checkpoints=self._checkpoints(detectors),
                local_store=self._local_store("actor"), **common,
            ),
        ]
        for stage in self.stages:  # all four exist (stable indexes); only the configured ones run
            if stage.name in settings.stages:
                await self.add_runtime_dependency(stage)
        self.metrics.up.set(1)
        for agent in self.policy.agents:
            for cap in self.policy.caps_for(agent):
                self.metrics.velocity_cap.labels(self.metrics.agent_label(agent), cap.name).set(cap.max_records)
        self.ready.set()

    def _local_store(self, stage: str) -> LocalStore | None:
        """Where a stage keeps the local copies of its state partitions (None: restore from Kafka)."""
        if not self.settings.local_state:
            return None
        if not local_store.available():
            log.warning("rocksdict is not installed: %s restores its whole state from the changelog", stage)
            return None
        return LocalStore(Path(self.settings.state_dir) / "state", changelog_topic(self.settings, stage))

    def _checkpoints(self, detectors: list[Any]) -> ModelCheckpoints | None:
        """Checkpoints of activity_anomaly's models (needs the secret that signs them)."""
        holder = next((d for d in detectors if d.name == ActivityAnomalyDetector.name), None)
        if holder is None or self.model_secret is None or self.settings.model_checkpoint_s < 0:
            return None
        return ModelCheckpoints(holder, self.model_secret, self.settings.model_checkpoint_s)

    def _encode_pause(self, pause: PauseDecision) -> tuple[str, bytes, bytes]:
        self.board.paused[pause.agent] = pause
        return self.encode_pause(pause)

    async def on_stop(self) -> None:
        gc.set_threshold(*self._gc_thresholds)
        self.metrics.up.set(0)

    async def on_shutdown(self) -> None:
        """The shared producer closes last, after the stages and services that use it stopped
        (mode runs on_stop before stopping children: closing it there made a stage in the middle
        of a batch fail with ProducerClosed on every Ctrl-C)."""
        if self.producer is not None:
            await self.producer.stop()

    @Service.timer(2.0)
    async def _freeze_gc(self) -> None:
        """Move long-lived state out of the collector's reach: full collections walking a heap
        of partition state stalled every stage for up to a second (docs/latency-recovery.md)."""
        gc.freeze()

    @Service.timer(5.0)
    async def _refresh_gauges(self) -> None:
        """Consumer lag per input topic and state sizes per store."""
        lag: dict[str, int] = {}
        sizes: dict[str, int] = {}
        for stage in self.stages:
            consumer = stage.consumer
            if consumer is None:
                continue
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None:
                    continue
                try:
                    position = await consumer.position(tp)
                except Exception:  # noqa: BLE001 - partition being revoked
                    continue
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position)
            for state in stage.partitions.values():
                for name, size in state.sizes().items():
                    sizes[name] = sizes.get(name, 0) + size
        for topic, value in lag.items():
            self.metrics.lag.labels(topic).set(value)
        for name, value in sizes.items():
            self.metrics.state_entries.labels(name).set(value)
        if "actor" not in self.settings.stages:
            return  # agents' pause state and velocity are the actor stage's to export
        for agent in self.policy.agents:
            label = self.metrics.agent_label(agent)
            self.metrics.paused.labels(label).set(1 if agent in self.board.paused else 0)
            for cap, count in self.velocity_counts(agent, None).items():  # as of its latest change
                self.metrics.velocity.labels(label, cap).set(count)

    def on_pause_state(self, payload: Any) -> None:
        """A verified message on guard.pause: a resume lets the agent be paused again."""
        if payload.paused:
            if payload.agent not in self.board.paused:
                self.board.paused[payload.agent] = PauseDecision(
                    agent=payload.agent, reason=payload.reason, detector="", alert_id=payload.alert_id or "",
                    dedup_key="", event_id="", occurred_at=payload.issued_at)
            return
        self.board.paused.pop(payload.agent, None)
        self.metrics.resume(payload.agent)
        if len(self.stages) > 3:
            actor = self.stages[3]
            for state in actor.partitions.values():
                alerts = state[ALERTS_STATE]
                if payload.agent in alerts:
                    actor.stage.alerts.resume(payload.agent, alerts)

    async def republish_pause(self, agent: str, value: bytes) -> None:
        """Write an agent's current signed pause state to guard.pause again (PauseTopicFollower)."""
        if self.producer is None:
            raise RuntimeError("the runtime is not started")
        await self.producer.send_and_wait(self.settings.topics.pause, key=agent.encode(), value=value)

    def current_value(self, record_key: str, field: str) -> Any:
        """The record state's last known value of a field, when this worker holds the record."""
        for state in self.stages[1].partitions.values() if len(self.stages) > 1 else ():
            entry = state[RECORD_STATE].peek(record_key)
            if entry is not None:
                held = entry["f"].get(field)
                return UNKNOWN if held is None else held[0]
        return UNKNOWN

    def velocity_counts(self, agent: str, at_ms: int | None) -> dict[str, int]:
        """Distinct records per cap in the window ending at_ms (event time; None: the agent's
        latest change), for the proposal gate and the velocity gauge."""
        for state in self.stages[3].partitions.values() if len(self.stages) > 3 else ():
            entry = state["velocity_cap"].peek(agent)
            if entry is not None:
                if at_ms is None:
                    at_ms = max((t for window in entry.values() for t in window.values()), default=0)
                return VelocityCapDetector.current_counts(agent, {agent: entry}, self.policy, at_ms)
        return {}

    def processed(self) -> dict[str, int]:
        """Messages processed per stage (for the demo and tests)."""
        return {stage.name: stage.processed for stage in self.stages}


def build_faust_app(settings: Settings, runtime: GuardRuntime, web: Service | None) -> faust.App:
    """The Faust app that hosts the runtime (and the web server, when given)."""
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.group_id}-worker",
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=web is not None,
        datadir=f"{settings.state_dir}/faust",
        producer_acks=-1,
        broker_credentials=faust_credentials(settings),
        **faust_group_timing(settings),
    )
    if web is not None:
        app.web_server(web)

    @app.task
    async def start_guard() -> None:
        await app.add_runtime_dependency(runtime)

    return app
