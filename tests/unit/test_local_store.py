"""The local RocksDB copies of state partitions (app/runtime/local_store.py) and how a stage
writes acknowledged changelog records to them (BatchStage._mirror_acknowledged)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.structs import RecordMetadata, TopicPartition

from app.runtime.local_store import LocalStore, record_digest
from app.runtime.stage import BatchStage

TOPIC = "crm-guard.record-changelog"


def test_a_copy_keeps_the_records_in_order_and_its_checkpoint(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, TOPIC)
    copy = store.open(0)
    assert copy is not None and copy.checkpoint() is None
    copy.write([(b"rs\x1fa", b"1"), (b"rs\x1fb", b"2"), (b"rs\x1fa", b"3")], next_offset=3)
    copy.write([(b"rs\x1fb", None)], next_offset=4)  # a tombstone deletes
    assert dict(copy.records()) == {b"rs\x1fa": b"3"}
    checkpoint = copy.checkpoint()
    assert checkpoint is not None and checkpoint.next_offset == 4
    assert checkpoint.last_digest == record_digest(b"rs\x1fb", None)
    store.close_all()
    reopened = LocalStore(tmp_path, TOPIC).open(0)
    assert reopened is not None and dict(reopened.records()) == {b"rs\x1fa": b"3"}
    assert reopened.checkpoint() == checkpoint


def test_a_copy_of_another_changelog_topic_has_no_checkpoint(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, TOPIC)
    copy = store.open(2)
    assert copy is not None
    copy.write([(b"rs\x1fa", b"1")], next_offset=1)
    copy.topic = "other-group.record-changelog"
    assert copy.checkpoint() is None


def test_clearing_a_copy_forgets_records_and_checkpoint(tmp_path: Path) -> None:
    copy = LocalStore(tmp_path, TOPIC).open(0)
    assert copy is not None
    copy.write([(b"rs\x1fa", b"1")], next_offset=1)
    copy.clear()
    assert list(copy.records()) == [] and copy.checkpoint() is None
    copy.write([(b"rs\x1fz", b"9")], next_offset=7)  # usable again after
    assert dict(copy.records()) == {b"rs\x1fz": b"9"}


def test_a_copy_held_open_elsewhere_is_unavailable_not_an_error(tmp_path: Path) -> None:
    first = LocalStore(tmp_path, TOPIC)
    assert first.open(0) is not None
    assert LocalStore(tmp_path, TOPIC).open(0) is None  # RocksDB's lock: restore from Kafka instead
    first.close_all()
    assert LocalStore(tmp_path, TOPIC).open(0) is not None


def test_digests_tell_a_missing_value_from_an_empty_one() -> None:
    assert record_digest(b"k", None) != record_digest(b"k", b"")
    assert record_digest(b"ab", b"c") != record_digest(b"a", b"bc")


def _acked(loop: asyncio.AbstractEventLoop, partition: int, offset: int) -> asyncio.Future:
    future = loop.create_future()
    future.set_result(RecordMetadata(TOPIC, partition, TopicPartition(TOPIC, partition), offset, -1, 0, 0))
    return future


def _failed(loop: asyncio.AbstractEventLoop) -> asyncio.Future:
    future = loop.create_future()
    future.set_exception(RuntimeError("not acknowledged"))
    return future


def _stage(tmp_path: Path) -> BatchStage:
    return BatchStage(bootstrap="unused:9092", group_id="g", topics=["in"], producer=None,  # type: ignore[arg-type]
                      deadletter_topic="dl", changelog_topic=TOPIC, client_kwargs={},
                      local_store=LocalStore(tmp_path, TOPIC))


async def test_acknowledged_records_reach_the_copy_in_offset_order(tmp_path: Path) -> None:
    stage = _stage(tmp_path)
    loop = asyncio.get_running_loop()
    assert stage.local_store is not None
    copy = stage.local_store.open(0)
    assert copy is not None
    # acknowledged out of order: the batch at offset 12 was produced before the one at 10
    stage._unmirrored = [(0, [(b"rs\x1fa", b"late")], _acked(loop, 0, 12)),
                         (0, [(b"rs\x1fa", b"early"), (b"rs\x1fb", b"x")], _acked(loop, 0, 10))]
    stage._mirror_acknowledged()
    _written(stage)
    assert dict(copy.records()) == {b"rs\x1fa": b"late", b"rs\x1fb": b"x"}
    checkpoint = copy.checkpoint()
    assert checkpoint is not None and checkpoint.next_offset == 13
    assert checkpoint.last_digest == record_digest(b"rs\x1fa", b"late")
    assert stage._unmirrored == []


async def test_a_partition_with_a_record_not_acknowledged_drops_its_copy(tmp_path: Path) -> None:
    stage = _stage(tmp_path)
    loop = asyncio.get_running_loop()
    assert stage.local_store is not None
    kept, dropped = stage.local_store.open(0), stage.local_store.open(1)
    assert kept is not None and dropped is not None
    dropped.write([(b"rs\x1fold", b"1")], next_offset=5)
    stage._unmirrored = [(0, [(b"rs\x1fa", b"1")], _acked(loop, 0, 0)),
                         (1, [(b"rs\x1fb", b"1")], _acked(loop, 1, 5)),
                         (1, [(b"rs\x1fc", b"1")], _failed(loop))]
    stage._mirror_acknowledged()
    _written(stage)
    assert dict(kept.records()) == {b"rs\x1fa": b"1"}
    # the copy of partition 1 could lack a record the changelog has: it is emptied and written no
    # more, so the next assignment restores that partition from the changelog
    assert dropped.broken and dropped.checkpoint() is None and list(dropped.records()) == []
    dropped.write([(b"rs\x1fd", b"1")], next_offset=9)
    assert list(dropped.records()) == []
    stage.local_store.close(1)
    reopened = stage.local_store.open(1)
    assert reopened is not None and not reopened.broken and reopened.checkpoint() is None


def test_a_failed_write_drops_the_copy(tmp_path: Path) -> None:
    copy = LocalStore(tmp_path, TOPIC).open(0)
    assert copy is not None
    copy.write([(b"rs\x1fa", b"1")], next_offset=1)
    copy.db.close()  # the next write fails, as on a full disk
    copy.write([(b"rs\x1fb", b"2")], next_offset=2)
    assert copy.broken and list(copy.records()) == [] and copy.checkpoint() is None


def _written(stage: BatchStage) -> None:
    """Wait for the writes queued on the copies' writer thread."""
    assert stage.local_store is not None
    stage.local_store.writer.submit(lambda: None).result()
