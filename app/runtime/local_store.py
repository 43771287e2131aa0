"""A local RocksDB copy of each state partition's changelog, so a restarted worker reads its state
from disk and only the changelog's tail from Kafka (what Kafka Streams does with its checkpoint
file, and Faust with its RocksDB tables).

The copy holds exactly the changelog records this worker saw acknowledged, as the same key and
value bytes, plus a checkpoint: the changelog offset the copy is complete up to, and a digest of
the last record written. It is only ever written after the broker acknowledged those records, so
it is always a prefix of the changelog; a restore loads the copy and reads the changelog from the
checkpoint on (whatever another worker wrote while it owned the partition), after checking that
the record before the checkpoint is still the one the copy ends with (a topic deleted and created
again, or another cluster, fails the check and the partition is restored from the changelog).

Why RocksDB (rocksdict): iterating 1.4 million entries takes 0.6 s against 3-4 s to read them
back from the broker, and restored entries stay bytes until read (app/runtime/store.py): a
million records are held 4.7 s after a restart from the copies, 6.1 s from Kafka
(bench/recovery.py). Every write goes through one writer thread per stage, in order, so the
event loop never waits for RocksDB. Without rocksdict, or when another process holds a
partition's copy open, the stage restores from the changelog alone (logged).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

try:  # an optional dependency: the guard works without it, restores just read more from Kafka
    from rocksdict import Options, Rdict, WriteBatch, WriteOptions
except ImportError:  # pragma: no cover - rocksdict is a declared dependency
    Rdict = None  # type: ignore[assignment,misc]

_META = b"\x00crm-guard/"
"""Prefix of the copy's own entries; changelog keys start with a state name, never with 0x00."""
_OFFSET = _META + b"next-offset"
_DIGEST = _META + b"last-record"
_TOPIC = _META + b"topic"
WRITE_BUFFER_BYTES = 8 * 1024 * 1024


def available() -> bool:
    """Whether rocksdict can be imported here."""
    return Rdict is not None


def record_digest(key: bytes | None, value: bytes | None) -> bytes:
    """What identifies a changelog record when checking that a copy still matches the topic."""
    h = hashlib.blake2b(digest_size=16)
    for part in (key, value):
        h.update(b"\x00" if part is None else b"\x01" + len(part).to_bytes(8, "big") + part)
    return h.digest()


@dataclass(frozen=True)
class Checkpoint:
    """How far a copy goes: the changelog offset after its last record, and that record's digest."""

    next_offset: int
    last_digest: bytes


class LocalPartition:
    """The local copy of one changelog partition."""

    def __init__(self, path: Path, topic: str, db: Rdict, writer: ThreadPoolExecutor) -> None:
        self.path = path
        self.topic = topic
        self.db = db
        self.writer = writer
        self.broken = False  # a write failed: nothing more is written until the copy is reopened

    def checkpoint(self) -> Checkpoint | None:
        """The copy's checkpoint; None when it is empty or belongs to another changelog topic."""
        offset = self.db.get(_OFFSET)
        digest = self.db.get(_DIGEST)
        if offset is None or digest is None or self.db.get(_TOPIC) != self.topic.encode():
            return None
        return Checkpoint(int(offset), bytes(digest))

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of the copy, its own entries left out."""
        for key, value in self.db.items():
            if not key.startswith(_META):
                yield key, value

    def write(self, records: list[tuple[bytes, bytes | None]], next_offset: int) -> None:
        """Apply acknowledged changelog records in order (None deletes) and move the checkpoint,
        in one atomic write batch. A failure (disk full) empties the copy and stops its writes:
        a copy missing some records must never look like a prefix of the changelog."""
        if not records or self.broken:
            return
        try:
            self.db.write(self._batch(records, next_offset), _write_options())
        except Exception as exc:  # noqa: BLE001 - any storage error: the copy is given up, Kafka has it all
            log.warning("local state copy %s: write failed, dropping the copy: %s", self.path, exc)
            self.drop()

    def write_later(self, records: list[tuple[bytes, bytes | None]], next_offset: int) -> Future[None]:
        """`write` on the store's writer thread, in the order asked for: a restore goes on
        decoding (and a stage on processing) while the copy is written on the other core, with
        RocksDB releasing the GIL while it writes. `close` waits for what is queued."""
        return self.writer.submit(self.write, records, next_offset)

    def drop(self) -> None:
        """Give the copy up until it is reopened: emptied, no more writes (writer thread)."""
        self.broken = True
        try:
            self.clear()
        except Exception as exc:  # noqa: BLE001 - the next open starts from nothing either way
            log.warning("local state copy %s: cannot be emptied: %s", self.path, exc)

    def drop_later(self) -> Future[None]:
        return self.writer.submit(self.drop)

    def _batch(self, records: list[tuple[bytes, bytes | None]], next_offset: int) -> WriteBatch:
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        last_key, last_value = records[-1]
        batch.put(_OFFSET, str(next_offset).encode())
        batch.put(_DIGEST, record_digest(last_key, last_value))
        batch.put(_TOPIC, self.topic.encode())
        return batch

    def clear(self) -> None:
        """Forget everything (the copy no longer matches the changelog)."""
        try:
            self.db.close()
        except Exception:  # noqa: BLE001, S110 - closed already (a failed write): destroy it all the same
            pass
        Rdict.destroy(str(self.path))
        self.db = Rdict(str(self.path), _options())

    def close(self) -> None:
        """Close once every queued write is done."""
        self.writer.submit(self.close_now).result()

    def close_now(self) -> None:
        """Close (on the writer thread, after the writes queued before)."""
        try:
            self.db.close()
        except Exception as exc:  # noqa: BLE001 - a copy that failed is dropped anyway; never fail a revocation
            log.warning("local state copy %s: close failed: %s", self.path, exc)


class LocalStore:
    """The local copies of one stage: `<root>/<changelog topic>/<partition>`."""

    def __init__(self, root: str | Path, topic: str) -> None:
        self.root = Path(root) / topic
        self.topic = topic
        self.open_partitions: dict[int, LocalPartition] = {}
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"local-state-{topic}")

    def open(self, partition: int) -> LocalPartition | None:
        """Open (or create) a partition's copy; None when it cannot be had (logged)."""
        if partition in self.open_partitions:
            return self.open_partitions[partition]
        if Rdict is None:
            return None
        path = self.root / str(partition)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = Rdict(str(path), _options())
        except Exception as exc:  # noqa: BLE001 - a lock held by another worker, a full disk: restore from Kafka
            log.warning("local state copy %s unavailable, restoring from the changelog only: %s", path, exc)
            return None
        local = LocalPartition(path, self.topic, db, self.writer)
        self.open_partitions[partition] = local
        return local

    def get(self, partition: int) -> LocalPartition | None:
        return self.open_partitions.get(partition)

    def close(self, partition: int) -> None:
        """Close a partition's copy once its queued writes are done (blocks until then)."""
        local = self.open_partitions.pop(partition, None)
        if local is not None:
            local.close()

    def close_all(self) -> None:
        for partition in list(self.open_partitions):
            self.close(partition)

    async def aclose(self, partition: int) -> None:
        """`close` without holding the event loop while queued writes finish (revocation, stop)."""
        local = self.open_partitions.pop(partition, None)
        if local is not None:
            await asyncio.wrap_future(self.writer.submit(local.close_now))

    async def aclose_all(self) -> None:
        for partition in list(self.open_partitions):
            await self.aclose(partition)


def _options() -> Options:
    """8 MB memtables: a worker holds one copy per owned partition of each stage (18 with 6
    partitions), and the default 64 MB each would cost over a gigabyte; smaller memtables are
    also faster to fill (1.1 s instead of 2.3 s for 1.4 million 330-byte entries here)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    return options


def _write_options() -> WriteOptions:
    """No write-ahead log: the copy is a cache of the changelog. A crash loses at most the
    writes since the last memtable flush, and RocksDB recovers to a prefix of the write batches,
    each of which moved the checkpoint with its records, so the copy stays a prefix of the
    changelog and the restore reads a little more of the tail."""
    options = WriteOptions()
    options.disable_wal = True
    return options
