"""Publishing signed pause and resume messages to the compacted `guard.pause` topic (key = agent id).

Sequence numbers: `seq = max(now_ms, last_seq + 1)` per agent, where `last_seq` is the highest
sequence this process issued or read from the topic (`seed`, `seed_from_topic`). Wall-clock
milliseconds make seq grow across restarts and across processes (the worker pauses, an operator's
CLI resumes) without coordination; reading the topic on start covers a clock that stepped back,
as long as the step is smaller than the time since the last message. Two publishers issuing for
the same agent in the same millisecond could tie: the client rejects the second (replayed), so
the first wins. The worker and the CLI do not race in practice (a resume follows a pause by
minutes), and `crm-guard agents resume` reads the topic first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from app.pause.keys import signing_key_from_settings
from app.pause.reader import read_to_end
from app.pause.signing import PausePayload, PauseRejected, PauseSigner, PauseState, PauseVerifier
from detectors.alerts import PauseDecision

log = logging.getLogger("crm_guard.pause")


def wall_ms() -> int:
    return int(time.time() * 1000)


class SeqClock:
    """Per-agent sequence numbers that only grow: max(now_ms, last + 1)."""

    def __init__(self, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.clock_ms = clock_ms
        self.last: dict[str, int] = {}

    def seed(self, last: Mapping[str, int]) -> None:
        """Raise the floor to sequence numbers seen elsewhere (the topic)."""
        for agent, seq in last.items():
            if seq > self.last.get(agent, -1):
                self.last[agent] = int(seq)

    def next(self, agent: str, now_ms: int | None = None) -> int:
        now = self.clock_ms() if now_ms is None else now_ms
        seq = max(now, self.last.get(agent, -1) + 1)
        self.last[agent] = seq
        return seq


class PauseEncoder:
    """Synchronous signing for the runtime's batch emit: a PauseDecision -> (topic, key, value).

    Matches `app.runtime.stages.PauseEncoder`; the runtime produces the bytes with its own batch
    and commits offsets after they are acknowledged.
    """

    def __init__(
        self,
        topic: str,
        signer: PauseSigner,
        *,
        seq: SeqClock | None = None,
        clock_ms: Callable[[], int] = wall_ms,
        issued_by: str = "crm-guard",
    ) -> None:
        self.topic = topic
        self.signer = signer
        self.clock_ms = clock_ms
        self.seq = seq or SeqClock(clock_ms)
        self.issued_by = issued_by

    def payload(
        self,
        agent: str,
        state: PauseState,
        reason: str,
        *,
        alert_id: str | None = None,
        expires_at: int | None = None,
        issued_by: str | None = None,
    ) -> PausePayload:
        now = self.clock_ms()
        return self.signer.payload(
            agent=agent,
            state=state,
            reason=reason,
            alert_id=alert_id,
            issued_at=now,
            expires_at=expires_at,
            seq=self.seq.next(agent, now),
            issued_by=issued_by or self.issued_by,
        )

    def encode(self, payload: PausePayload) -> tuple[str, bytes, bytes]:
        return self.topic, payload.agent.encode("utf-8"), self.signer.sign_bytes(payload)

    def __call__(self, decision: PauseDecision) -> tuple[str, bytes, bytes]:
        return self.encode(
            self.payload(decision.agent, "paused", decision.reason, alert_id=decision.alert_id)
        )


def pause_encoder_for(settings: Any, env: Mapping[str, str] | None = None) -> PauseEncoder:
    """The runtime's encoder: the configured key, or the local key in the state dir (demo)."""
    key = signing_key_from_settings(settings, env)
    return PauseEncoder(settings.topics.pause, key.signer())


class PausePublisher:
    """Signs and produces pause/resume messages; awaits the broker's acknowledgement."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        signer: PauseSigner,
        *,
        seq: SeqClock | None = None,
        clock_ms: Callable[[], int] = wall_ms,
        issued_by: str = "crm-guard",
    ) -> None:
        self.producer = producer
        self.encoder = PauseEncoder(topic, signer, seq=seq, clock_ms=clock_ms, issued_by=issued_by)

    @property
    def topic(self) -> str:
        return self.encoder.topic

    def seed(self, last_seqs: Mapping[str, int]) -> None:
        self.encoder.seq.seed(last_seqs)

    async def seed_from_topic(
        self, bootstrap: str, verifier: PauseVerifier | None = None, **kafka_kwargs: Any
    ) -> dict[str, PauseRecord]:
        """Read the topic and raise every agent's seq floor to what it holds; returns the records."""
        records = await read_pause_topic(bootstrap, self.topic, verifier, **kafka_kwargs)
        self.seed({a: r.seq for a, r in records.items() if r.seq is not None})
        return records

    async def publish(
        self,
        agent: str,
        state: PauseState,
        reason: str,
        *,
        alert_id: str | None = None,
        expires_at: int | None = None,
        issued_by: str | None = None,
    ) -> PausePayload:
        payload = self.encoder.payload(
            agent, state, reason, alert_id=alert_id, expires_at=expires_at, issued_by=issued_by
        )
        topic, key, value = self.encoder.encode(payload)
        await self.producer.send_and_wait(topic, value=value, key=key)
        return payload

    async def pause(
        self,
        agent: str,
        reason: str,
        *,
        alert_id: str | None = None,
        expires_at: int | None = None,
        issued_by: str | None = None,
    ) -> PausePayload:
        return await self.publish(
            agent, "paused", reason, alert_id=alert_id, expires_at=expires_at, issued_by=issued_by
        )

    async def resume(
        self,
        agent: str,
        reason: str,
        *,
        issued_by: str,
        expires_at: int | None = None,
        alert_id: str | None = None,
    ) -> PausePayload:
        """An operator's resume; `issued_by` names them and is part of the signed payload."""
        return await self.publish(
            agent, "active", reason, alert_id=alert_id, expires_at=expires_at, issued_by=issued_by
        )

    async def publish_decision(self, decision: PauseDecision) -> PausePayload:
        return await self.pause(decision.agent, decision.reason, alert_id=decision.alert_id)

    async def republish(self, records: Iterable[PauseRecord], issued_by: str) -> list[PausePayload]:
        """Re-sign every agent's current state with this publisher's key (key rotation step)."""
        out = []
        for record in records:
            if record.payload is None:
                continue
            p = record.payload
            out.append(
                await self.publish(
                    p.agent,
                    p.state,
                    p.reason,
                    alert_id=p.alert_id,
                    expires_at=p.expires_at,
                    issued_by=issued_by,
                )
            )
        return out


@dataclass
class PauseRecord:
    """The latest message for one agent as read from the topic.

    `payload` is set when the message parses; `verified` when a verifier was given and accepted
    its signature; `error` says why not.
    """

    agent: str
    payload: PausePayload | None
    verified: bool
    error: str | None
    offset: int
    timestamp_ms: int

    @property
    def seq(self) -> int | None:
        return None if self.payload is None else self.payload.seq


async def read_pause_topic(
    bootstrap: str, topic: str, verifier: PauseVerifier | None = None, **kafka_kwargs: Any
) -> dict[str, PauseRecord]:
    """The latest message per agent (by highest seq among those that parse; tombstones ignored)."""
    latest: dict[str, PauseRecord] = {}
    async for record in read_to_end(bootstrap, topic, **kafka_kwargs):
        if record.key is None or record.value is None:
            continue
        agent = record.key.decode("utf-8", "replace")
        payload, verified, error = None, False, None
        try:
            if verifier is not None:
                payload = verifier.verify(record.value)
                verified = True
            else:
                payload = PausePayload.from_dict(json.loads(record.value)["payload"])
        except PauseRejected as exc:
            error = exc.reason
        except (ValueError, KeyError, TypeError):
            error = "malformed"
        if payload is not None and payload.agent != agent:
            payload, verified, error = None, False, "wrong_agent"
        current = latest.get(agent)
        if payload is None:
            if current is None or current.payload is None:
                latest[agent] = PauseRecord(agent, None, False, error, record.offset, record.timestamp)
            continue
        if current is None or current.payload is None or payload.seq > current.payload.seq:
            latest[agent] = PauseRecord(agent, payload, verified, None, record.offset, record.timestamp)
    return latest


class PauseTopicFollower:
    """The guard's side of `guard.pause`: every agent's latest verified state, kept current.

    Reads from the beginning (no consumer group) and calls `on_state(payload)` for each verified
    message whose seq is above the agent's current one, history included, so the runtime can
    rebuild which agents are paused and learn of resumes made from the CLI or the API (e.g. to call
    `AlertManager.resume` and clear its board). Unverifiable messages are logged and ignored.

    It also keeps the topic telling the truth. The topic is compacted: what survives per agent is
    its last message, and an agent that starts after compaction sees nothing else. A message
    written after the agent's current state that is not that state (an old signed resume sent
    again by anyone who can write to the topic, a forged one, a lagging writer's older state)
    would become that survivor; agents running since before reject it by its seq, new ones could
    not. With `republish`, the follower answers such a message by writing the current state's
    signed bytes again (after the batch it read), so the last message is the current state again.
    Only verified messages are answered (an old genuine state, or one of another agent's under
    this agent's key): an unverifiable one may be another worker's during a key rotation, and
    agents fail safe on those. Two workers answering the same message write the same bytes.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        verifier: PauseVerifier,
        on_state: Callable[[PausePayload], Any] | None = None,
        republish: Callable[[str, bytes], Awaitable[Any]] | None = None,
        **kafka_kwargs: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.verifier = verifier
        self.on_state = on_state
        self.republish = republish
        self.raw: dict[str, bytes] = {}  # per agent: the signed bytes of its current state
        self.stale: set[str] = set()  # agents whose last message read is not their current state
        self.republished = 0
        kafka_kwargs.setdefault("fetch_max_wait_ms", 200)
        self.kafka_kwargs = kafka_kwargs
        self.states: dict[str, PausePayload] = {}
        self.rejected = 0
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    def paused_agents(self) -> list[str]:
        return sorted(a for a, p in self.states.items() if p.paused)

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from app.pause.reader import topic_partitions

        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, **self.kafka_kwargs
        )
        await self._consumer.start()
        tps = await topic_partitions(self._consumer, self.topic)
        self._consumer.assign(tps)
        if tps:
            await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run(), name="pause-topic-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batch.values():
                for record in records:
                    await self._handle(record)
            await self.restore_stale()

    async def restore_stale(self) -> None:
        """Write the current state again for agents whose last message is not it (see above)."""
        if self.republish is None:
            return
        for agent in sorted(self.stale):
            current = self.states[agent]
            log.warning("guard.pause: the last message for %s is not its current state (seq %d, %s): an old or "
                        "misplaced message was written after it; writing the current state again",
                        agent, current.seq, current.state)
            try:
                await self.republish(agent, self.raw[agent])
            except Exception as exc:  # noqa: BLE001 - the broker or a producer not started yet: next round
                log.warning("guard.pause: could not write %s's state again yet (%r); retrying", agent, exc)
                return
            self.stale.discard(agent)
            self.republished += 1

    async def _handle(self, record: Any) -> None:
        if record.key is None or record.value is None:
            return
        agent = record.key.decode("utf-8", "replace")
        try:
            payload = self.verifier.verify(record.value)
        except PauseRejected as exc:
            self.rejected += 1
            log.warning("guard.pause offset %d: %s; ignored", record.offset, exc.reason)
            # Not answered: during a key rotation another worker's messages are unverifiable here, and
            # two workers answering each other's would never stop. Agents fail safe on them anyway.
            return
        if payload.agent != agent:
            self.rejected += 1
            self._mark_stale(agent)
            return
        current = self.states.get(agent)
        if current is not None and payload.seq <= current.seq:
            if record.value == self.raw.get(agent):
                self.stale.discard(agent)  # a copy of the current state: what restore_stale writes
            else:
                self.stale.add(agent)
            return
        self.states[agent] = payload
        self.raw[agent] = record.value
        self.stale.discard(agent)
        if self.on_state is not None:
            result = self.on_state(payload)
            if asyncio.iscoroutine(result):
                await result

    def _mark_stale(self, agent: str) -> None:
        if agent in self.states:  # an agent with no verified state has nothing to restore
            self.stale.add(agent)
