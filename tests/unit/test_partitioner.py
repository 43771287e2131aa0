"""partition_for picks the partition Kafka's default partitioner (aiokafka's, the Java client's)
picks, so records the stages group themselves land where send() would put them."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from app.runtime.partitioner import murmur2, partition_for


def test_murmur2_equals_aiokafkas_on_keys_of_every_length() -> None:
    rng = random.Random(1)  # noqa: S311 - test data
    keys = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 70))) for _ in range(20_000)]
    keys += [f"hubspot/contact/{i}".encode() for i in range(20_000)] + [b"", b"a", b"ab", b"abc"]
    assert [murmur2(k) for k in keys] == [aiokafka_murmur2(k) for k in keys]


def test_partition_for_equals_the_default_partitioner() -> None:
    for count in (1, 3, 6, 12):
        partitions = list(range(count))
        for i in range(2000):
            key = f"agent-{i}".encode()
            assert partition_for(key, partitions) == DefaultPartitioner()(key, partitions, None)
    assert partition_for(None, [0, 1, 2]) in (0, 1, 2)
    assert partition_for(bytearray(b"enrich-bot"), [0, 1, 2]) == partition_for(b"enrich-bot", [0, 1, 2])
