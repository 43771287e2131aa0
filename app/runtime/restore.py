"""Rebuilding a stage's partition states when they are assigned: from each partition's local
RocksDB copy where it still matches the changelog, then from the changelog (the tail after the
copy, or all of it), copying what is read to the local copy.

Why a separate reader: the stage's own consumer belongs to its group and reads the input topic;
the changelog is read by assignment, from explicit positions, with `auto_offset_reset="none"` so
a position past the end raises instead of silently moving (a copy ahead of the changelog).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from app.runtime.gc_pause import collector_paused
from app.runtime.local_store import LocalStore, record_digest
from app.runtime.store import PartitionState

log = logging.getLogger(__name__)

ApplyRecord = Callable[[int, PartitionState, bytes, "bytes | None"], None]
"""Applies one changelog record to a partition's state (BatchStage.restore_record)."""


class ChangelogRestorer:
    """Restores partitions of one stage from its changelog topic and local copies."""

    def __init__(self, *, name: str, topic: str, bootstrap: str, client_kwargs: dict[str, Any],
                 local_store: LocalStore | None, apply: ApplyRecord) -> None:
        self.name = name
        self.topic = topic
        self.bootstrap = bootstrap
        self.client_kwargs = client_kwargs
        self.local_store = local_store
        self.apply = apply

    async def restore(self, states: dict[int, PartitionState]) -> tuple[int, int]:
        """Fill the fresh `states` (by partition); returns (records from local copies, records
        from the changelog)."""
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                  auto_offset_reset="none", **self.client_kwargs)
        await reader.start()
        try:
            with collector_paused():
                starts, local = await self._load_local_copies(reader, states)
                restored = await self._read_changelog(reader, states, starts)
        finally:
            await reader.stop()
        return local, restored

    async def _load_local_copies(self, reader: AIOKafkaConsumer,
                                 states: dict[int, PartitionState]) -> tuple[dict[int, int], int]:
        """Load the local copy of every partition that has one matching the changelog; returns
        where to read the changelog from per loaded partition, and how many records were loaded."""
        starts: dict[int, int] = {}
        loaded = 0
        if self.local_store is None:
            return starts, loaded
        for p, state in states.items():
            local = self.local_store.open(p)
            if local is None:
                continue
            checkpoint = local.checkpoint()
            if checkpoint is None or not await self._copy_matches(reader, p, checkpoint.next_offset,
                                                                  checkpoint.last_digest):
                if checkpoint is not None:
                    log.warning("%s: the local copy of partition %d does not match %s any more; "
                                "restoring it from the changelog", self.name, p, self.topic)
                local.clear()
                continue
            for key, value in local.records():
                self.apply(p, state, key, value)
                loaded += 1
                if not loaded % 50_000:  # let the web server (/metrics, /healthz) answer meanwhile
                    await asyncio.sleep(0)
            starts[p] = checkpoint.next_offset
        return starts, loaded

    async def _copy_matches(self, reader: AIOKafkaConsumer, partition: int, next_offset: int,
                            digest: bytes) -> bool:
        """Whether the changelog record just before a copy's checkpoint is the copy's last one
        (not if the topic was created again, or compaction removed it: then restore it all)."""
        tp = TopicPartition(self.topic, partition)
        reader.assign([tp])
        reader.seek(tp, next_offset - 1)
        try:
            for _ in range(3):  # a broker slow to answer: give up, restore from the changelog
                batch = await reader.getmany(tp, timeout_ms=300, max_records=1)
                records = batch.get(tp)
                if records:
                    record = records[0]
                    return (record.offset == next_offset - 1
                            and record_digest(record.key, record.value) == digest)
        except OffsetOutOfRangeError:  # the topic is shorter than the copy: created again since
            return False
        return False

    async def _read_changelog(self, reader: AIOKafkaConsumer, states: dict[int, PartitionState],
                              starts: dict[int, int]) -> int:
        """Apply the changelog partitions to the states, from `starts` (else from the beginning)
        up to their ends, copying what is read to the local copies; returns the count."""
        tps = [TopicPartition(self.topic, p) for p in states]
        reader.assign(tps)
        for tp in tps:
            if tp.partition in starts:
                reader.seek(tp, starts[tp.partition])
            else:
                await reader.seek_to_beginning(tp)
        ends = await reader.end_offsets(tps)
        copies = {p: self.local_store.get(p) for p in states} if self.local_store is not None else {}
        restored = 0
        # Read until every partition is at its end AND a fetch comes back empty: some brokers
        # (tansu) report the end as the last batch's first offset + 1.
        while True:
            batch = await reader.getmany(*tps, timeout_ms=300, max_records=10_000)
            for tp, records in batch.items():
                state = states[tp.partition]
                for rec in records:
                    self.apply(tp.partition, state, rec.key, rec.value)
                    restored += 1
                copy = copies.get(tp.partition)
                if copy is not None and records:
                    copy.write_later([(rec.key, rec.value) for rec in records], records[-1].offset + 1)
            if batch:
                continue
            positions = [await reader.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
        for state in states.values():
            state.drain_changes()
        # Not awaited: the copies are written on their writer thread while the stage starts
        # processing; the batches' own writes queue behind these, so each copy stays a prefix.
        return restored
