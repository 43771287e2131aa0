"""One stage of the guard as a batch consumer: getmany, process partition by partition, write
outputs and the state changelog, wait for every acknowledgement, then commit.

Why not a Faust agent per event: a bare Faust agent tops out near 12,000 events/s here, while
aiokafka's getmany() batches read about 330,000 messages/s (docs/ARCHITECTURE.md has the
figures). This loop is a mode.Service inside the Faust app, so Faust still owns the worker
lifecycle, the web server and the service tree.

Delivery: at least once, with idempotent effects. A batch's offsets are committed only after all
its produced records (outputs, dead letters, changelog) are acknowledged; a crash before that
replays the batch, and the record stage skips events it already applied (by event id).
Errors: one policy, here: a message that cannot be decoded or processed goes to the dead-letter
topic with the reason and its origin (topic, partition, offset) in headers, and the stage goes
on. Anything else (broker down) stops the stage and the worker, which then restarts from the
last commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from mode import Service

from app.runtime.compaction import CompactionSchedule, compact_in_slices
from app.runtime.local_store import LocalStore
from app.runtime.partitioner import partition_for
from app.runtime.restore import ChangelogRestorer
from app.runtime.store import Loader, PartitionState

log = logging.getLogger(__name__)


@dataclass
class Emit:
    """Records a stage wants produced for one input message."""

    records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]], int | None]] = field(
        default_factory=list)

    def send(self, topic: str, key: str | bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> None:
        if isinstance(key, str):
            key = key.encode()
        self.records.append((topic, key, value, headers or [], partition))


class PoisonMessage(Exception):
    """A message this stage cannot use: dead-lettered with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, stage: "BatchStage") -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.stage.batch_lock:
            await self.stage.before_revoke([tp.partition for tp in revoked if tp.partition in self.stage.partitions])
            for tp in revoked:
                self.stage.partitions.pop(tp.partition, None)
                self.stage.compaction.forget(tp.partition)
                if self.stage.local_store is not None:
                    await self.stage.local_store.aclose(tp.partition)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.stage.batch_lock:
            await self.stage.restore([tp.partition for tp in assigned])


class BatchStage(Service):
    """Base of every stage. Subclasses set `name`, `topics`, `state_names()` and `handle()`."""

    name = "stage"

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: list[str],
        producer: AIOKafkaProducer,
        deadletter_topic: str,
        changelog_topic: str | None,
        client_kwargs: dict[str, Any],
        group_kwargs: dict[str, Any] | None = None,
        metrics: Any = None,
        max_records: int = 1000,
        fetch_max_wait_ms: int = 500,
        local_store: LocalStore | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.input_topics = topics
        self.producer = producer
        self.deadletter_topic = deadletter_topic
        self.changelog_topic = changelog_topic
        self.client_kwargs = client_kwargs
        self.group_kwargs = group_kwargs or {}
        self.metrics = metrics
        self.max_records = max_records
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.local_store = local_store if changelog_topic else None
        self._unmirrored: list[tuple[int, list[tuple[bytes | None, bytes | None]], asyncio.Future]] = []
        self.restored = {"local": 0, "changelog": 0}
        """State records restored so far, from the local copies and from the changelog."""
        self.compaction = CompactionSchedule()  # runners report event times: compaction.saw()
        self.compacted = 0  # state entries dropped past their retention so far
        self.partitions: dict[int, PartitionState] = {}
        self.batch_lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.processed = 0
        self.idle = asyncio.Event()
        self.failure: BaseException | None = None
        self.on_failure: Any = None

    # ---- to implement -------------------------------------------------------------------------

    def state_names(self) -> list[str]:
        return []

    def state_loaders(self) -> dict[str, Loader]:
        """Hook: per state name, how an entry decoded from the changelog is made the kept entry."""
        return {}

    def handle(self, record: ConsumerRecord, state: PartitionState | None, emit: Emit) -> None:
        raise NotImplementedError

    def handle_records(self, records: list[ConsumerRecord], state: PartitionState | None, emit: Emit) -> None:
        """One partition's messages of a batch, in offset order: `handle` each; one that raises is
        dead-lettered (see `failed`) and the rest go on."""
        for record in records:
            try:
                self.handle(record, state, emit)
            except Exception as exc:  # noqa: BLE001 - one error policy: dead-letter and go on
                self.failed(record, exc, emit)

    def failed(self, record: ConsumerRecord, exc: Exception, emit: Emit) -> None:
        """The one error policy: the message goes to the dead-letter topic with the reason (a
        PoisonMessage's own, else `processing_error` with the exception, logged with its trace)."""
        if isinstance(exc, PoisonMessage):
            self._deadletter(emit, record, exc.reason, str(exc))
            return
        log.error("%s: failed on %s[%d]@%d", self.name, record.topic, record.partition, record.offset, exc_info=exc)
        self._deadletter(emit, record, "processing_error", f"{type(exc).__name__}: {exc}")

    def after_batch(self, emit: Emit) -> None:
        """Hook: produce anything derived from the whole batch (e.g. metrics gauges)."""

    def compact(self, state: PartitionState, now_ms: int) -> int:
        """Hook: drop a partition's entries past their retention at event time `now_ms`."""
        return 0

    async def _compact_due(self) -> None:
        """Compact the partitions whose event time crossed a day (app/runtime/compaction.py)."""
        for partition, now in self.compaction.due(int(time.time() * 1000)):
            state = self.partitions.get(partition)
            if state is None:
                continue
            dropped = await compact_in_slices(self.compact, state, now)
            if dropped:
                self.compacted += dropped
                log.info("%s: partition %d dropped %d state entries past their retention", self.name,
                         partition, dropped)
                if self.metrics is not None:
                    self.metrics.state_compacted.labels(self.name).inc(dropped)

    def restore_record(self, partition: int, state: PartitionState, key: bytes, value: bytes | None) -> None:
        """Hook: apply one changelog record while restoring a partition (default: JSON state)."""
        state.apply_changelog(key, value)

    async def before_revoke(self, partitions: list[int]) -> None:
        """Hook: the last chance to write anything about these partitions before another worker
        takes them over (called under the batch lock)."""

    # ---- lifecycle ----------------------------------------------------------------------------

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            **self.client_kwargs,
            **self.group_kwargs,
        )
        await self.consumer.start()
        self.consumer.subscribe(self.input_topics, listener=_Rebalance(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.local_store is not None:
            await self.local_store.aclose_all()

    async def restore(self, partitions: list[int]) -> None:
        """Rebuild the state of newly assigned partitions (app/runtime/restore.py)."""
        names = self.state_names()
        loaders = self.state_loaders()
        states = {p: PartitionState(names, loaders) for p in partitions}
        self.partitions.update(states)
        if not self.changelog_topic or not names or not partitions:
            return
        started = time.monotonic()
        restorer = ChangelogRestorer(name=self.name, topic=self.changelog_topic, bootstrap=self.bootstrap,
                                     client_kwargs=self.client_kwargs, local_store=self.local_store,
                                     apply=self.restore_record)
        local, restored = await restorer.restore(states)
        self.restored["local"] += local
        self.restored["changelog"] += restored
        log.info("%s: restored %d changelog records for partitions %s in %.2fs (%d of them from the "
                 "local copy)", self.name, restored + local, partitions, time.monotonic() - started, local)

    async def _run(self) -> None:
        try:
            await self._consume()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not a bad message (those are dead-lettered): the broker or the producer failed. The
            # uncommitted batch is redone by whoever takes the partitions over; stop this worker.
            log.critical("%s stage failed, stopping the worker: %r", self.name, exc, exc_info=True)
            self.failure = exc
            if self.on_failure is not None:
                self.on_failure(self, exc)
            raise

    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not self.should_stop:
            batch = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
            if not batch:
                self.idle.set()
                continue
            self.idle.clear()
            async with self.batch_lock:
                started = time.perf_counter()
                await self._process_batch(consumer, batch)
                if self.metrics is not None:
                    self.metrics.observe_batch(self.name, time.perf_counter() - started)

    async def _process_batch(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        emit = Emit()
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            if tp.partition not in self.partitions and self.state_names():
                # Assigned before the listener ran (cannot happen with aiokafka, kept as a guard).
                await self.restore([tp.partition])
            self.handle_records(records, self.partitions.get(tp.partition), emit)
            offsets[tp] = records[-1].offset + 1
            self.processed += len(records)
        self.after_batch(emit)
        await self._compact_due()
        futures = await self._send_records(emit.records)
        if self.changelog_topic:
            for p, state in self.partitions.items():
                changes = state.drain_changes()
                if changes:
                    futures.extend(await self._send_batches(self.changelog_topic, p, [(k, v, []) for k, v in changes]))
        if futures:
            await asyncio.gather(*futures)
        self._mirror_acknowledged()
        await consumer.commit(offsets)

    async def send_and_wait(self, records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]],
                                                      int | None]], timeout_s: float = 10.0) -> None:
        """Produce records outside a batch (on a stop or a revocation) and wait for the acks, for
        at most `timeout_s`: a broker that is gone must not hold the stop up."""
        try:
            async with asyncio.timeout(timeout_s):
                futures = await self._send_records(records)
            if futures:
                async with asyncio.timeout(timeout_s):
                    await asyncio.gather(*futures)
        except Exception as exc:  # noqa: BLE001 - timeouts included: logged, the caller goes on stopping
            log.warning("%s: %d records not acknowledged while stopping: %r", self.name, len(records), exc)
        self._mirror_acknowledged()

    def _mirror_acknowledged(self) -> None:
        """Write the changelog records the broker acknowledged to the partitions' local copies,
        in offset order, with the new checkpoint. A partition with a record not acknowledged
        writes nothing this time: its copy stays a prefix of the changelog."""
        pending, self._unmirrored = self._unmirrored, []
        if self.local_store is None or not pending:
            return
        by_partition: dict[int, list[tuple[int, list[tuple[bytes | None, bytes | None]]]]] = {}
        failed: set[int] = set()
        for partition, records, future in pending:
            if not future.done() or future.cancelled() or future.exception() is not None:
                failed.add(partition)
                continue
            by_partition.setdefault(partition, []).append((future.result().offset, records))
        for partition in failed:  # its copy may now lack a record the changelog has: drop it
            copy = self.local_store.get(partition)
            if copy is not None:
                copy.drop_later()
        for partition, acked in by_partition.items():
            copy = self.local_store.get(partition)
            if copy is None or partition in failed:
                continue
            acked.sort(key=lambda item: item[0])
            base, last = acked[-1]
            copy.write_later([record for _, records in acked for record in records], base + len(last))

    async def _send_records(self, records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]],
                                                      int | None]]) -> list[asyncio.Future]:
        """Produce a batch's outputs grouped by topic partition, the partition chosen as the
        producer's default partitioner would (murmur2 of the key; random without a key), so keyed
        records land where `send()` would have put them, in the order they were emitted."""
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]] = {}
        partitions: dict[str, list[int]] = {}
        for topic, key, value, headers, partition in records:
            if partition is None:
                if topic not in partitions:
                    partitions[topic] = sorted(await self.producer.partitions_for(topic))
                partition = partition_for(key, partitions[topic])
            grouped.setdefault((topic, partition), []).append((key, value, headers))
        futures: list[asyncio.Future] = []
        for (topic, partition), items in grouped.items():
            futures.extend(await self._send_batches(topic, partition, items))
        return futures

    async def _send_batches(self, topic: str, partition: int,
                            items: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> list[asyncio.Future]:
        """Records for one partition as whole record batches: one produce call per batch instead of
        one per record (`send()` costs ~8 us a record in Python, the hot path's largest producer
        cost). A record too large for an empty batch goes alone through send()."""
        producer = self.producer
        futures: list[asyncio.Future] = []
        # changelog records are remembered per produce until acknowledged, for the local copy
        track = self._unmirrored if self.local_store is not None and topic == self.changelog_topic else None
        pending: list[tuple[bytes | None, bytes | None]] = []
        batch = producer.create_batch()
        for key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                if track is not None:
                    pending.append((key, value))
                continue
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                if track is not None:
                    track.append((partition, pending, futures[-1]))
                    pending = []
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                    if track is not None:
                        pending.append((key, value))
                    continue
            futures.append(await producer.send(topic, key=key, value=value, headers=headers, partition=partition))
            if track is not None:
                track.append((partition, [(key, value)], futures[-1]))
            batch = producer.create_batch()  # the refused one is closed
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            if track is not None:
                track.append((partition, pending, futures[-1]))
        return futures

    def _deadletter(self, emit: Emit, record: ConsumerRecord, reason: str, message: str) -> None:
        headers = [
            ("reason", reason.encode()),
            ("error", message[:1000].encode()),
            ("origin_topic", record.topic.encode()),
            ("origin_partition", str(record.partition).encode()),
            ("origin_offset", str(record.offset).encode()),
            ("stage", self.name.encode()),
        ]
        emit.send(self.deadletter_topic, record.key, record.value, headers)
        if self.metrics is not None:
            self.metrics.deadletter(self.source_label(record), reason)

    def source_label(self, record: ConsumerRecord) -> str:
        """The bounded `source` label of a dead letter: the stage (the ingest stage: the vendor)."""
        return self.name
