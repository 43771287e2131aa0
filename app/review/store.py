"""Review state that survives restarts: an in-memory index over a compacted Kafka topic.

`ReviewStore` is the index (plain dicts, no I/O): every proposal's latest record, and the trust
state per agent. `DecisionLog` is its durability: guard.decisions (compacted, one partition so
the order of writes is the order of reads), keyed by

* `proposal_id` -> {"type": "proposal", ...ReviewRecord}: the latest state of one proposal;
* `trust:<agent>` -> {"type": "trust", "agent": ..., "state": {...}}: the agent's trust entry
  (detectors/trust.py); proposal ids cannot contain ':' so the keys never collide.

On start the log is read from the beginning to the end offsets into a fresh store; afterwards
every change is written (and acknowledged) before the index is updated, and the log is followed
(`DecisionLog.follow`), so that what other workers write (a proposal submitted or decided there,
an agent's trust moved by its overrides) reaches this worker's store, API and page within a
fetch. The store remembers the offset each key was last written at and never applies an older
one, so a follower behind this worker's own write cannot roll a decision back.

A decision is final, and the first one in the log wins: two people deciding one proposal on two
workers at the same moment both find it pending and both write. Every worker applies the log in
order and ignores a decided record that differs from the decision it already holds, and the
service writing a decision waits until its follower has read past it (`followed_past`) before
producing any effect: the one whose decision came second answers 409 and produces nothing (see
ReviewService._save_decision). Trust is not a decision but a sum of outcomes: a worker whose
trust write for an agent lands after another worker's, computed from the same earlier state,
applies its outcome again to the other's state and writes that (ReviewService._save_trust;
`trust_written_between` finds them). Memory: decided
records are kept `keep_decided` (default 90 days) and then tombstoned; pending records are kept
until decided or expired. Each record is about 2 KB in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Callable, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.review.models import ReviewFilter, ReviewRecord, ReviewStatus
from app.runtime.kafka_client import topic_partitions

log = logging.getLogger(__name__)

TRUST_PREFIX = "trust:"
TRUST_READ_KEPT = 8


class ReviewStore:
    """Every proposal's latest record (in arrival order) and the trust state, by key."""

    def __init__(self) -> None:
        self.records: dict[str, ReviewRecord] = {}  # change it through _set and _remove only
        self._pending: Counter[str] = Counter()  # pending records per agent, kept as records change
        self.trust: dict[str, Any] = {}
        self.offsets: dict[str, int] = {}  # per key: the guard.decisions offset last applied
        # per agent: the last trust messages read from the log, applied or not: (offset, value)
        self.trust_read: dict[str, list[tuple[int, bytes]]] = {}

    # ---- applying log messages ---------------------------------------------------------------

    def newer(self, key: str, offset: int | None) -> bool:
        """Whether a message at `offset` is newer than what the store holds for `key` (and note it)."""
        if offset is None:
            return True
        held = self.offsets.get(key, -1)
        if offset <= held:
            return False
        self.offsets[key] = offset
        return True

    def apply_message(self, key: bytes | str | None, value: bytes | None, offset: int | None = None) -> bool:
        """Apply one guard.decisions message (None value: a tombstone) unless the store already
        holds a newer one for its key; returns whether it was applied."""
        if key is None:
            return False
        text = key.decode() if isinstance(key, bytes) else key
        if offset is not None and value is not None and text.startswith(TRUST_PREFIX):
            read = self.trust_read.setdefault(text[len(TRUST_PREFIX):], [])
            read.append((offset, value))
            del read[:-TRUST_READ_KEPT]
        if not self.newer(text, offset):
            return False
        if value is None:
            # Gone: nothing to protect any more (a follower still behind may bring an older copy
            # back until it reads this tombstone too).
            self.offsets.pop(text, None)
            if text.startswith(TRUST_PREFIX):
                self.trust.pop(text[len(TRUST_PREFIX):], None)
            else:
                self._remove(text)
            return True
        data = orjson.loads(value)
        if data.get("type") == "trust":
            self.trust[data["agent"]] = data["state"]
            return True
        return self._hold(ReviewRecord.model_validate(data))

    def trust_written_between(self, agent: str, after: int, before: int) -> list[Any]:
        """The trust states of `agent` read from the log at offsets strictly between `after` and
        `before`, oldest first: what other workers wrote while this one computed its own."""
        return [orjson.loads(value)["state"] for offset, value in self.trust_read.get(agent, ())
                if after < offset < before]

    def put(self, record: ReviewRecord, offset: int | None = None) -> None:
        """Hold a record this worker wrote at `offset` (kept out if a newer one was followed, or
        if it is another decision of a proposal already decided)."""
        if self.newer(record.proposal_id, offset):
            self._hold(record)

    def _hold(self, record: ReviewRecord) -> bool:
        """Hold `record` unless the proposal is decided and `record` is not that decision: the
        first decision in the log wins, whatever comes after it (a concurrent one that lost)."""
        held = self.records.get(record.proposal_id)
        if held is not None and not held.pending and not same_decision(held, record):
            return False
        self._set(record)
        return True

    def _set(self, record: ReviewRecord) -> None:
        held = self.records.get(record.proposal_id)
        if held is not None and held.pending:
            self._uncount(held.agent)
        self.records[record.proposal_id] = record
        if record.pending:
            self._pending[record.agent] += 1

    def _remove(self, proposal_id: str) -> None:
        held = self.records.pop(proposal_id, None)
        if held is not None and held.pending:
            self._uncount(held.agent)

    def _uncount(self, agent: str) -> None:
        left = self._pending[agent] - 1
        if left > 0:
            self._pending[agent] = left
        else:
            del self._pending[agent]

    # ---- queries ------------------------------------------------------------------------------

    def get(self, proposal_id: str) -> ReviewRecord | None:
        return self.records.get(proposal_id)

    def select(self, flt: ReviewFilter | None = None, limit: int | None = None) -> list[ReviewRecord]:
        """Records matching the filter, oldest first."""
        out = []
        for record in self.records.values():
            if flt is None or flt.matches(record):
                out.append(record)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def pending(self, flt: ReviewFilter | None = None) -> list[ReviewRecord]:
        base = flt or ReviewFilter()
        return self.select(base.model_copy(update={"status": ReviewStatus.PENDING}))

    @staticmethod
    def groups(records: Iterable[ReviewRecord]) -> list[dict[str, Any]]:
        """Records grouped by (agent, kind), groups sorted by agent then kind, items oldest first."""
        grouped: dict[tuple[str, str], list[ReviewRecord]] = {}
        for record in records:
            grouped.setdefault((record.agent, record.kind), []).append(record)
        return [
            {"agent": agent, "kind": kind, "count": len(items), "items": items}
            for (agent, kind), items in sorted(grouped.items())
        ]

    def backlog(self) -> Counter[str]:
        """Pending proposals per agent (a copy). Counted as records change: every submission and
        decision asks for it (the backlog gauge), and counting the held records each time cost
        96 ms with 300,000 of them (decided records are kept 90 days)."""
        return Counter(self._pending)

    def undone(self) -> list[ReviewRecord]:
        """Decided records whose effects were not all produced (a crash in between)."""
        return [r for r in self.records.values() if not r.done]

    def expiry_due(self, now_ms: int, after_ms: int) -> list[ReviewRecord]:
        """Pending records proposed at least `after_ms` before `now_ms`."""
        return [r for r in self.records.values() if r.pending and r.proposal.proposed_at + after_ms <= now_ms]

    def prunable(self, now_ms: int, keep_ms: int) -> list[str]:
        """Ids of records decided more than `keep_ms` before `now_ms`."""
        return [
            r.proposal_id for r in self.records.values()
            if not r.pending and r.done and (r.decided_at or r.received_at) + keep_ms <= now_ms
        ]


def same_decision(held: ReviewRecord, incoming: ReviewRecord) -> bool:
    """Whether `incoming` is the decision `held` records (or its later state: effects done), as
    opposed to another decision of the same proposal."""
    return (held.status, held.via, held.decided_by, held.decided_at) == (
        incoming.status, incoming.via, incoming.decided_by, incoming.decided_at)


def encode_record(record: ReviewRecord) -> tuple[str, bytes]:
    return record.proposal_id, orjson.dumps(record.model_dump(mode="json"))


def encode_trust(agent: str, state: Any) -> tuple[str, bytes]:
    return TRUST_PREFIX + agent, orjson.dumps({"type": "trust", "agent": agent, "state": state})


class DecisionLog:
    """guard.decisions: write-through persistence of the review store."""

    def __init__(self, bootstrap: str, topic: str, producer: AIOKafkaProducer,
                 client_kwargs: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.producer = producer
        self.client_kwargs = client_kwargs or {}
        self.positions: dict[TopicPartition, int] = {}  # the next offset to read: rebuild, then follower
        self._progress = asyncio.Condition()
        self.following = False  # a follower is reading (followed_past has something to wait for)

    async def ensure_topic(self, replication_factor: int = 1) -> bool:
        """Create the compacted topic (one partition) unless it exists; True when created."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.client_kwargs)
        await admin.start()
        try:
            if self.topic in set(await admin.list_topics()):
                return False
            try:
                await admin.create_topics([NewTopic(self.topic, 1, replication_factor,
                                                    topic_configs={"cleanup.policy": "compact"})])
            except TopicAlreadyExistsError:
                return False
            return True
        finally:
            await admin.close()

    async def write(self, key: str, value: bytes | None) -> int:
        """Produce one record and wait for the broker's acknowledgement; returns its offset."""
        return (await self.write_record(key, value))[1]

    async def write_record(self, key: str, value: bytes | None) -> tuple[int, int]:
        """`write`, returning the partition and the offset."""
        metadata = await self.producer.send_and_wait(self.topic, key=key.encode(), value=value)
        return int(metadata.partition), int(metadata.offset)

    async def followed_past(self, partition: int, offset: int, timeout_s: float) -> bool:
        """Wait until the follower has applied the message at `offset` (and all before it);
        False when it has not within `timeout_s`, and at once when no follower runs (during
        `ReviewService.start`, which finishes undone decisions before it starts following)."""
        if not self.following:
            return False
        tp = TopicPartition(self.topic, partition)

        async def reached() -> None:
            async with self._progress:
                await self._progress.wait_for(lambda: self.positions.get(tp, 0) > offset)

        try:
            await asyncio.wait_for(reached(), timeout_s)
        except TimeoutError:  # asyncio's is the builtin from Python 3.11
            return False
        return True

    async def rebuild(self, store: ReviewStore, timeout_s: float = 60.0) -> int:
        """Read the topic from the beginning to its current end into `store`; returns messages read."""
        started = time.monotonic()
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                  **self.client_kwargs)
        await reader.start()
        try:
            partitions = await _partitions(reader, self.topic, timeout_s)
            if not partitions:
                return 0
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            count = 0
            while pending:
                if time.monotonic() - started > timeout_s:
                    raise TimeoutError(f"rebuilding from {self.topic} took over {timeout_s:.0f}s")
                batch = await reader.getmany(*pending, timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for rec in records:
                        store.apply_message(rec.key, rec.value, rec.offset)
                        count += 1
                for tp in list(pending):
                    if await reader.position(tp) >= ends[tp]:
                        pending.discard(tp)
            self.positions = {tp: await reader.position(tp) for tp in tps}
            log.info("review store: rebuilt %d records from %s in %.2fs", count, self.topic,
                     time.monotonic() - started)
            return count
        finally:
            await reader.stop()

    async def follow(self, store: ReviewStore, on_applied: Callable[[], Any] | None = None) -> None:
        """Apply what is written after the rebuild (by any worker) until cancelled; `on_applied`
        runs after each batch that changed the store. Broker errors are retried: the consumer
        reconnects on its own, and a follower that stopped would leave the page stale."""
        self.following = True
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                  fetch_max_wait_ms=200, **self.client_kwargs)
        await reader.start()
        try:
            tps = list(self.positions) or [TopicPartition(self.topic, 0)]
            reader.assign(tps)
            for tp in tps:
                reader.seek(tp, self.positions.get(tp, 0))
            while True:
                try:
                    batch = await reader.getmany(timeout_ms=1000, max_records=1000)
                except KafkaError as exc:
                    log.warning("review store: following %s failed (%r); retrying", self.topic, exc)
                    await asyncio.sleep(1.0)
                    continue
                changed = False
                for tp, records in batch.items():
                    for rec in records:
                        changed = store.apply_message(rec.key, rec.value, rec.offset) or changed
                    if records:
                        self.positions[tp] = records[-1].offset + 1
                if batch:
                    async with self._progress:
                        self._progress.notify_all()
                if changed and on_applied is not None:
                    on_applied()
        finally:
            self.following = False
            await reader.stop()


async def _partitions(reader: AIOKafkaConsumer, topic: str, timeout_s: float) -> set[int]:
    deadline = time.monotonic() + min(timeout_s, 5.0)
    while True:
        found = {tp.partition for tp in await topic_partitions(reader, topic)}
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)
