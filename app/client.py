"""The client agents embed: obey pause signals, read feedback, propose changes. No Faust.

Needs only aiokafka, cryptography and pydantic (through the canonical event model).

    guard = PauseGuard("kafka:9092", "enrich-bot", load_public_keys("keys/"))
    await guard.start()
    async with guard.write():          # raises AgentPaused while the guard says stop
        await crm.update(contact_id, {"jobtitle": title})

`PauseGuard` reads the compacted `guard.pause` topic from its beginning (no consumer group: every
replica of an agent sees every message) and keeps following it. It acts only on messages for its
own agent that are signed by a trusted key, not expired, and carry a sequence number above the
last one it accepted. It fails safe: until it has read to the end of the topic, when it has not
confirmed it is up to date for `stale_after` seconds (broker unreachable), or when the newest
message for the agent cannot be verified, `is_paused()` is True. A forged message can therefore
at most stop an agent, never release it.

An agent the guard never paused has no message on the topic and is active, unless
`require_state=True` (then only a signed `active` message lets it act).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from app.pause.keys import parse_public_key
from app.pause.reader import caught_up, topic_partitions
from app.pause.signing import PausePayload, PauseRejected, PauseVerifier

log = logging.getLogger("crm_guard.client")

F = TypeVar("F", bound=Callable[..., Any])


class AgentPaused(RuntimeError):
    """Raised instead of a write while the agent is paused (or its state cannot be confirmed)."""

    def __init__(self, agent: str, status: GuardStatus) -> None:
        reason = status.payload.reason if status.payload and status.why == "paused" else status.why
        super().__init__(f"agent {agent} is paused: {reason}")
        self.agent = agent
        self.status = status


@dataclass(frozen=True)
class GuardStatus:
    """What the guard knows. `why`: active, never_paused, paused, resume_expired, not_synced,
    disconnected, unverifiable, expired, no_state."""

    paused: bool
    why: str
    payload: PausePayload | None
    synced: bool


def _wall_ms() -> int:
    return int(time.time() * 1000)


class PauseGuard:
    """Follows `guard.pause` for one agent and answers `is_paused()`; see the module docstring.

    `public_keys` maps key ids to Ed25519 public keys (objects, PEM, or base64 raw); trust two ids
    during a key rotation. `kafka_kwargs` go to AIOKafkaConsumer (security_protocol, sasl_*,
    ssl_context, ...). `stale_after` is how long the guard may go without confirming it has read
    to the end of the topic before it reports paused; `check_interval` how often it confirms.
    """

    def __init__(
        self,
        bootstrap: str,
        agent_id: str,
        public_keys: Mapping[str, Any],
        topic: str = "guard.pause",
        *,
        require_state: bool = False,
        stale_after: float = 10.0,
        check_interval: float = 1.0,
        clock_ms: Callable[[], int] = _wall_ms,
        on_change: Callable[[GuardStatus], None] | None = None,
        **kafka_kwargs: Any,
    ) -> None:
        if not public_keys:
            raise ValueError("PauseGuard needs at least one trusted public key")
        self.bootstrap = bootstrap
        self.agent_id = agent_id
        self.topic = topic
        self.verifier = PauseVerifier(
            {k: parse_public_key(v, f"public key {k!r}") for k, v in public_keys.items()}
        )
        self.require_state = require_state
        self.stale_after = stale_after
        self.check_interval = check_interval
        self.clock_ms = clock_ms
        self.on_change = on_change
        kafka_kwargs.setdefault("fetch_max_wait_ms", 100)
        self.kafka_kwargs = kafka_kwargs
        self.accepted: PausePayload | None = None
        self.rejections: collections.Counter[str] = collections.Counter()
        self.last_rejection: tuple[str, str] | None = None
        self._suspect: str | None = None
        self._synced = False
        self._verified_at: float | None = None  # monotonic time up to which we know we are current
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._last_status: GuardStatus | None = None

    # ----------------------------------------------------------------- lifecycle
    async def start(self, timeout: float = 10.0) -> bool:
        """Connect, read the topic to its end (up to `timeout` s), keep following. True when synced.

        A broker that is not there yet is not an error: the guard keeps trying and reports paused.
        """
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, **self.kafka_kwargs
        )
        self._tasks = [asyncio.create_task(self._connect_and_follow(), name=f"pause-guard-{self.agent_id}")]
        try:
            async with asyncio.timeout(timeout):
                await self._wait_synced()
        except TimeoutError:
            log.warning(
                "pause guard for %s not synced after %.1f s: reporting paused", self.agent_id, timeout
            )
        return self._synced

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None
        self._synced = False
        self._notify()

    async def __aenter__(self) -> PauseGuard:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _wait_synced(self) -> None:
        while not self._synced:
            self._changed.clear()
            await self._changed.wait()

    async def _connect_and_follow(self) -> None:
        while True:
            consumer = self._consumer
            assert consumer is not None
            try:
                await consumer.start()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down at start: keep trying, stay paused
                log.warning(
                    "pause guard for %s cannot reach Kafka (%s); retrying", self.agent_id, type(exc).__name__
                )
                with contextlib.suppress(Exception):
                    await consumer.stop()
                await asyncio.sleep(1.0)
                self._consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    group_id=None,
                    enable_auto_commit=False,
                    **self.kafka_kwargs,
                )
        while not self._tps:
            try:
                self._tps = await topic_partitions(consumer, self.topic)
            except Exception as exc:
                log.warning("pause guard for %s: metadata failed (%s)", self.agent_id, type(exc).__name__)
            if not self._tps:
                await asyncio.sleep(1.0)
        consumer.assign(self._tps)
        await consumer.seek_to_beginning(*self._tps)
        self._tasks.append(
            asyncio.create_task(self._confirm_loop(), name=f"pause-guard-check-{self.agent_id}")
        )
        await self._follow(consumer)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pause guard for %s: fetch failed (%s)", self.agent_id, type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for records in batch.values():
                for record in records:
                    self._handle(record)
            if batch:
                self._notify()

    async def _confirm_loop(self) -> None:
        """Every check_interval: ask the broker for the end offsets, then confirm we reach them."""
        consumer = self._consumer
        assert consumer is not None
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(max(1.0, self.check_interval * 2)):
                    ends = await consumer.end_offsets(self._tps)
                deadline = started + self.stale_after
                while time.monotonic() < deadline:
                    if await caught_up(consumer, ends):
                        self._verified_at = started
                        if not self._synced:
                            self._synced = True
                        self._notify()
                        break
                    await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "pause guard for %s cannot confirm it is current (%s)", self.agent_id, type(exc).__name__
                )
            self._notify()
            await asyncio.sleep(max(0.0, self.check_interval - (time.monotonic() - started)))

    # ----------------------------------------------------------------- messages
    def _handle(self, record: ConsumerRecord) -> None:
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        if record.value is None:
            if key == self.agent_id:
                self._reject("malformed", "tombstone for this agent", suspect=True)
            return
        try:
            payload_agent = json.loads(record.value)["payload"]["agent"]
        except (ValueError, KeyError, TypeError):
            payload_agent = None
        if key != self.agent_id and payload_agent != self.agent_id:
            return  # another agent's message
        try:
            payload = self.verifier.verify(record.value)
        except PauseRejected as exc:
            self._reject(exc.reason, exc.detail, suspect=True)
            return
        if payload.agent != self.agent_id or key != self.agent_id:
            self._reject("wrong_agent", f"message for {payload.agent!r} under key {key!r}", suspect=False)
            return
        if self.accepted is not None and payload.seq <= self.accepted.seq:
            self._reject("replayed", f"seq {payload.seq} <= accepted {self.accepted.seq}", suspect=False)
            return
        if payload.expired(self.clock_ms()):
            # authentic and newer than what we hold, but no longer valid: we cannot tell the state
            self._reject("expired", f"expired at {payload.expires_at}", suspect=True)
            return
        self.accepted = payload
        self._suspect = None
        log.info(
            "pause guard for %s: %s (seq %d, by %s)",
            self.agent_id,
            payload.state,
            payload.seq,
            payload.issued_by,
        )

    def _reject(self, reason: str, detail: str, *, suspect: bool) -> None:
        self.rejections[reason] += 1
        self.last_rejection = (reason, detail)
        if suspect:
            self._suspect = "expired" if reason == "expired" else "unverifiable"
        log.warning("pause guard for %s rejected a message: %s (%s)", self.agent_id, reason, detail)

    # ----------------------------------------------------------------- answers
    def status(self) -> GuardStatus:
        """The current answer and why."""
        p = self.accepted
        if not self._synced:
            return GuardStatus(True, "not_synced", p, False)
        if self._verified_at is None or time.monotonic() - self._verified_at > self.stale_after:
            return GuardStatus(True, "disconnected", p, True)
        if self._suspect:
            return GuardStatus(True, self._suspect, p, True)
        if p is None:
            return GuardStatus(
                self.require_state, "no_state" if self.require_state else "never_paused", None, True
            )
        if p.paused:
            return GuardStatus(True, "paused", p, True)
        if p.expired(self.clock_ms()):
            return GuardStatus(True, "resume_expired", p, True)
        return GuardStatus(False, "active", p, True)

    def is_paused(self) -> bool:
        """True when the agent must not write (paused, or its state cannot be confirmed)."""
        return self.status().paused

    def check(self) -> None:
        """Raise AgentPaused unless the agent may write now."""
        status = self.status()
        if status.paused:
            raise AgentPaused(self.agent_id, status)

    async def wait_until_active(self, timeout: float | None = None) -> None:
        """Return once the agent may write; asyncio.TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_paused():
            remaining = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if remaining <= 0:
                raise TimeoutError(f"agent {self.agent_id} still paused")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    def refuse_while_paused(self, fn: F) -> F:
        """Decorator: the function raises AgentPaused instead of running while paused."""
        if asyncio.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                self.check()
                return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.check()
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    @contextlib.asynccontextmanager
    async def write(self, wait: float | None = None) -> AsyncIterator[PauseGuard]:
        """`async with guard.write():` one CRM write; AgentPaused if paused (after waiting up to
        `wait` seconds for a resume). A pause that arrives during the block does not interrupt it:
        keep one write per block."""
        if wait:
            with contextlib.suppress(asyncio.TimeoutError):
                await self.wait_until_active(wait)
        self.check()
        yield self

    def _notify(self) -> None:
        self._changed.set()
        if self.on_change is not None:
            status = self.status()
            if status != self._last_status:
                self._last_status = status
                try:
                    self.on_change(status)
                except Exception:  # a callback bug must not stop the guard
                    log.exception("pause guard on_change callback failed")


class FeedbackReader:
    """Async iterator over this agent's messages on `guard.feedback` (overrides, review decisions,
    resumes), as dicts. Messages are keyed by agent id with a JSON value.

    With `group_id`, offsets are committed (auto-commit) and a restarted agent continues where it
    stopped; without, it reads from the end (`from_beginning=False`) or the beginning of every
    partition each time.
    """

    def __init__(
        self,
        bootstrap: str,
        agent_id: str,
        topic: str = "guard.feedback",
        *,
        group_id: str | None = None,
        from_beginning: bool = False,
        **kafka_kwargs: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.agent_id = agent_id
        self.topic = topic
        self.group_id = group_id
        self.from_beginning = from_beginning
        kafka_kwargs.setdefault("fetch_max_wait_ms", 100)
        self.kafka_kwargs = kafka_kwargs
        self._consumer: AIOKafkaConsumer | None = None
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()

    async def start(self) -> None:
        reset = "earliest" if self.from_beginning else "latest"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=self.group_id is not None,
            auto_offset_reset=reset,
            **self.kafka_kwargs,
        )
        await consumer.start()
        if self.group_id:
            consumer.subscribe([self.topic])
        else:
            tps = await topic_partitions(consumer, self.topic)
            consumer.assign(tps)
            if tps:
                if self.from_beginning:
                    await consumer.seek_to_beginning(*tps)
                else:
                    await consumer.seek_to_end(*tps)
                for tp in tps:  # resolve positions now, so messages sent after start() are seen
                    await consumer.position(tp)
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def __aenter__(self) -> FeedbackReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __aiter__(self) -> FeedbackReader:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None
        key = self.agent_id.encode("utf-8")
        while not self._buffer:
            batch = await self._consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key != key or record.value is None:
                        continue
                    try:
                        value = json.loads(record.value)
                    except ValueError:
                        log.warning("feedback message at offset %d is not JSON; skipped", record.offset)
                        continue
                    if isinstance(value, dict):
                        self._buffer.append(value)
        return self._buffer.popleft()


class ProposalProducer:
    """Publishes an agent's proposed change to `crm.proposals` (keyed by agent id) instead of
    writing it. Message value (JSON)::

        {"proposal_id", "agent", "change": <canonical ChangeEvent JSON>, "reason", "evidence",
         "confidence", "proposed_at"}

    `proposal_id` defaults to a hash of agent and change, so a retried propose() is the same
    proposal. Missing `actor`, `event_id`, `source_event_id` or `occurred_at` in the change are
    filled in (the agent itself, derived ids, now).
    """

    def __init__(
        self,
        bootstrap: str,
        agent_id: str,
        topic: str = "crm.proposals",
        *,
        enable_idempotence: bool = False,
        clock_ms: Callable[[], int] = _wall_ms,
        **kafka_kwargs: Any,
    ) -> None:
        self.agent_id = agent_id
        self.topic = topic
        self.clock_ms = clock_ms
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=enable_idempotence, **kafka_kwargs
        )
        self._started = False

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._producer.stop()
            self._started = False

    async def __aenter__(self) -> ProposalProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def build(
        self,
        change: Mapping[str, Any] | Any,
        reason: str,
        evidence: Any = None,
        confidence: float = 0.5,
        proposal_id: str | None = None,
    ) -> dict[str, Any]:
        """The message value (validated) without sending it."""
        from detectors.events import ChangeEvent  # pydantic only; no Faust

        if not 0.0 <= float(confidence) <= 1.0:
            raise ValueError("confidence must be within [0, 1]")
        data = dict(change.model_dump(mode="json") if hasattr(change, "model_dump") else change)
        now = self.clock_ms()
        data.setdefault(
            "actor",
            {
                "kind": "agent",
                "id": self.agent_id,
                "identity": {"vendor": str(data.get("source", "unknown")), "raw": self.agent_id},
            },
        )
        data.setdefault("occurred_at", now)
        seed = json.dumps(
            {k: v for k, v in data.items() if k not in ("event_id", "source_event_id", "occurred_at")},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        digest = hashlib.sha256(f"{self.agent_id}|{seed}".encode()).hexdigest()[:24]
        data.setdefault("event_id", f"proposal:{digest}")
        data.setdefault("source_event_id", f"proposal:{digest}")
        canonical = ChangeEvent.model_validate(data).model_dump(mode="json")
        return {
            "proposal_id": proposal_id or digest,
            "agent": self.agent_id,
            "change": canonical,
            "reason": reason,
            "evidence": evidence,
            "confidence": float(confidence),
            "proposed_at": now,
        }

    async def propose(
        self,
        change: Mapping[str, Any] | Any,
        reason: str,
        evidence: Any = None,
        confidence: float = 0.5,
        proposal_id: str | None = None,
    ) -> str:
        """Send one proposal; returns its id once the broker has acknowledged it."""
        if not self._started:
            await self.start()
        message = self.build(change, reason, evidence, confidence, proposal_id)
        value = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        await self._producer.send_and_wait(self.topic, value=value, key=self.agent_id.encode("utf-8"))
        return str(message["proposal_id"])


__all__ = ["AgentPaused", "FeedbackReader", "GuardStatus", "PauseGuard", "ProposalProducer"]
