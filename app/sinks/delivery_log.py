"""The delivery table: per sink and dedup key, what was delivered and what is waiting.

`DeliveryService` (delivery.py) reads and writes one `DeliveryRecord` per key `"{sink}|{dedup_key}"`
through a `DeliveryLog`: `MemoryDeliveryLog` (tests, benchmarks) or `KafkaDeliveryLog` (the
compacted `guard.deliveries`, rebuilt by reading the topic to its end on start). The table is the
outbox's second half: an alert version is delivered once because the table says so durably
before and after each attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.pause.reader import read_to_end

log = logging.getLogger("crm_guard.delivery")


@dataclass
class DeliveryRecord:
    """The delivery state of one dedup key at one sink (the value stored in the DeliveryLog)."""

    state: str = "idle"  # idle | pending | sending | failed | uncertain
    pending: dict[str, Any] | None = None  # the alert version waiting (JSON), None when none
    attempts: int = 0
    first_try_ms: int | None = None
    queued_ms: int | None = None
    sent_version: int = 0
    sent_ms: int | None = None
    sent_severity: str | None = None
    sent_action: str | None = None
    sent_status: str | None = None
    failed_version: int = 0
    error: str | None = None
    rev: int = 0

    @property
    def pending_version(self) -> int:
        return int(self.pending["version"]) if self.pending else 0

    def to_json(self) -> dict[str, Any]:
        """A shallow dict: `pending` is shared, never mutated (a new version replaces it whole)."""
        return {name: getattr(self, name) for name in _RECORD_FIELDS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> DeliveryRecord:
        if not data:
            return cls()
        return cls(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})


_RECORD_FIELDS = tuple(f.name for f in fields(DeliveryRecord))


class DeliveryLog(Protocol):
    """Where delivery records live; values are JSON-able dicts. `put` makes the value visible to
    `get` when called (so read-modify-write without an await in between is atomic) and returns an
    awaitable that completes when the value is durable (raises if it could not be made so)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def get(self, key: str) -> dict[str, Any] | None: ...

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]: ...

    def put(self, key: str, value: dict[str, Any]) -> Awaitable[None]: ...


async def _done() -> None:
    return None


class MemoryDeliveryLog:
    """A dict: for tests, benchmarks and a guard that accepts losing delivery state on restart."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.writes = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(list(self.data.items()))

    def put(self, key: str, value: dict[str, Any]) -> Awaitable[None]:
        self.data[key] = dict(value)
        self.writes += 1
        return _done()


class KafkaDeliveryLog:
    """The delivery table on a compacted topic (`guard.deliveries`, key `sink|dedup_key`).

    On start it reads the topic to its end (newest `rev` per key wins, which also merges writes of
    a worker that owned the key before a rebalance: call `catch_up()` after an assignment change).
    Writes go through one producer in call order (aiokafka keeps per-partition order) and `put`
    returns after the broker's acknowledgement (acks=all).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = "guard.deliveries",
        *,
        enable_idempotence: bool = False,
        ensure_topic: bool = True,
        replication_factor: int = 1,
        producer: AIOKafkaProducer | None = None,
        **kafka_kwargs: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.enable_idempotence = enable_idempotence
        self.ensure_topic = ensure_topic
        self.replication_factor = replication_factor
        self.kafka_kwargs = kafka_kwargs
        self._producer = producer
        self._own_producer = producer is None
        self.data: dict[str, dict[str, Any]] = {}
        self._last_rev = 0
        self.loaded = 0

    async def start(self) -> None:
        if self.ensure_topic:
            await self._ensure_topic()
        await self.catch_up()
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=self.enable_idempotence,
                linger_ms=2,
                **self.kafka_kwargs,
            )
        if self._own_producer:
            await self._producer.start()

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.kafka_kwargs)
        await admin.start()
        try:
            if self.topic not in set(await admin.list_topics()):
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(
                                self.topic,
                                1,
                                self.replication_factor,
                                topic_configs={"cleanup.policy": "compact"},
                            )
                        ]
                    )
        finally:
            await admin.close()

    async def catch_up(self) -> int:
        """Read the topic to its end, merging by rev; returns the number of messages read."""
        n = 0
        async for record in read_to_end(self.bootstrap, self.topic, **self.kafka_kwargs):
            n += 1
            if record.key is None:
                continue
            key = record.key.decode("utf-8")
            if record.value is None:
                self.data.pop(key, None)
                continue
            try:
                value = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                log.warning("delivery log: undecodable value at offset %d skipped", record.offset)
                continue
            current = self.data.get(key)
            if current is None or int(value.get("rev", 0)) >= int(current.get("rev", 0)):
                self.data[key] = value
                self._last_rev = max(self._last_rev, int(value.get("rev", 0)))
        self.loaded += n
        return n

    async def stop(self) -> None:
        if self._producer is not None and self._own_producer:
            await self._producer.stop()
        self._producer = None

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(list(self.data.items()))

    def _next_rev(self) -> int:
        self._last_rev = max(time.time_ns() // 1000, self._last_rev + 1)
        return self._last_rev

    def put(self, key: str, value: dict[str, Any]) -> Awaitable[None]:
        if self._producer is None:
            raise RuntimeError("KafkaDeliveryLog.put before start()")
        value = dict(value)
        value["rev"] = self._next_rev()
        self.data[key] = value
        # scheduled now, so messages reach the producer in call order
        return asyncio.ensure_future(self._send(key.encode("utf-8"), orjson.dumps(value)))

    async def _send(self, key: bytes, value: bytes) -> None:
        assert self._producer is not None
        fut = await self._producer.send(self.topic, key=key, value=value)
        await fut
