"""Checkpoints of activity_anomaly's river models in the actor stage's changelog.

Why: the models are not JSON state, and a worker that loses them starts the warm-up again: 100
windows of 5 minutes, more than 8 hours in which activity_anomaly cannot warn about that agent,
after every deploy. Why not with the JSON state after every batch: a model is ~0.4 MB pickled
(~100 KB compressed) and takes ~25 ms to write. So an agent's model is written when it has
learned something new, at most every `interval_s` seconds of wall time, and for every owned
agent when the worker stops or gives its partitions up. A crashed worker resumes from a model at
most `interval_s` old; a stopped one loses nothing.

Where: key `activity_anomaly#model` + 0x1F + agent, in the changelog partition of the agent's
guard.by-actor partition, so whoever takes the partition over reads the model back with the rest
of the partition's state. Value: b"CGM1" + HMAC-SHA256 tag + zlib(pickle). Pickle runs code when
read, so a checkpoint is only unpickled when its tag checks out under a key derived from the
pause signing key: whoever can write to the changelog topic cannot make the worker run code.
A checkpoint that does not check out or does not load (another river version) is skipped with a
warning; that agent's model warms up again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import zlib
from collections.abc import Callable, Collection
from typing import Protocol

from app.runtime.store import changelog_key, split_changelog_key

log = logging.getLogger(__name__)

MODEL_STATE = "activity_anomaly#model"
"""The changelog name of the checkpoints (not a JSON state name, so PartitionState skips it)."""
MODEL_PURPOSE = "model checkpoints"
"""What the secret that signs checkpoints is derived for (SigningKey.derived_secret)."""
MAGIC = b"CGM1"
MAX_CHECKPOINT_BYTES = 900_000
"""Kafka's default message limit is 1 MB; a larger model (trees of height > 12) is not written."""


class ModelHolder(Protocol):
    """What a detector with a non-JSON model offers (detectors/activity_anomaly.py)."""

    def learned(self, agent: str) -> int: ...

    def snapshot(self, agent: str) -> bytes | None: ...

    def restore(self, agent: str, data: bytes) -> None: ...


class ModelCheckpoints:
    """Decides which agents' models are due, encodes and verifies checkpoints."""

    def __init__(self, holder: ModelHolder, secret: bytes, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.holder = holder
        self.secret = secret
        self.interval_s = interval_s
        self.clock = clock
        self.partition_of: dict[str, int] = {}
        self.written: dict[str, int] = {}
        self.written_at: dict[str, float] = {}
        self.too_big: set[str] = set()
        self.checkpoints = 0
        self.restored = 0

    def seen(self, agent: str, partition: int) -> None:
        """The agent's changes arrive on this by-actor partition."""
        self.partition_of[agent] = partition

    def due(self, owned: Collection[int], *, force: bool = False) -> list[tuple[int, bytes, bytes]]:
        """(changelog partition, key, value) for every agent of an owned partition whose model
        learned since its last checkpoint and was not written in the last `interval_s` (`force`:
        regardless of the time, for a stop or a revocation)."""
        now = self.clock()
        out: list[tuple[int, bytes, bytes]] = []
        for agent, partition in self.partition_of.items():
            if partition not in owned or agent in self.too_big:
                continue
            learned = self.holder.learned(agent)
            if learned <= self.written.get(agent, 0):
                continue
            if not force and now - self.written_at.get(agent, float("-inf")) < self.interval_s:
                continue
            blob = self.holder.snapshot(agent)
            if blob is None:
                continue
            value = self.encode(zlib.compress(blob, 6))
            if len(value) > MAX_CHECKPOINT_BYTES:
                self.too_big.add(agent)
                log.warning("activity_anomaly model of %s is %d bytes compressed, over %d: not checkpointed "
                            "(lower detectors.activity_anomaly.height)", agent, len(value), MAX_CHECKPOINT_BYTES)
                continue
            out.append((partition, key_of(agent), value))
            self.written[agent] = learned
            self.written_at[agent] = now
            self.checkpoints += 1
        return out

    def forget(self, partitions: Collection[int]) -> None:
        """Partitions given up: their agents are no longer this worker's to write."""
        for agent in [a for a, p in self.partition_of.items() if p in partitions]:
            del self.partition_of[agent]

    def encode(self, payload: bytes) -> bytes:
        return MAGIC + hmac.new(self.secret, payload, hashlib.sha256).digest() + payload

    def apply(self, agent: str, partition: int, value: bytes | None) -> bool:
        """Install a checkpoint read back from the changelog; False (and a warning) when it does
        not verify or load."""
        if value is None:
            return False
        tag, payload = value[len(MAGIC):len(MAGIC) + 32], value[len(MAGIC) + 32:]
        expected = hmac.new(self.secret, payload, hashlib.sha256).digest()
        if not value.startswith(MAGIC) or not hmac.compare_digest(tag, expected):
            log.warning("activity_anomaly model checkpoint of %s does not verify (another signing key, or not "
                        "written by crm-guard): skipped, the model warms up again", agent)
            return False
        try:
            self.holder.restore(agent, zlib.decompress(payload))
        except Exception as exc:  # noqa: BLE001 - an unloadable model only costs its warm-up
            log.warning("activity_anomaly model checkpoint of %s does not load (%r): skipped, the model warms "
                        "up again", agent, exc)
            return False
        self.partition_of[agent] = partition
        self.written[agent] = self.holder.learned(agent)
        self.written_at[agent] = self.clock()
        self.restored += 1
        return True


def key_of(agent: str) -> bytes:
    """The changelog key of an agent's model checkpoint."""
    return changelog_key(MODEL_STATE, agent)


def agent_of(key: bytes) -> str | None:
    """The agent of a checkpoint key; None for any other changelog key."""
    name, agent = split_changelog_key(key)
    return agent if name == MODEL_STATE else None
