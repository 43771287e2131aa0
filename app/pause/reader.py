"""Read a whole topic, from its beginning to the end it has now, without a consumer group.

Used to rebuild state from compacted topics (guard.pause, guard.deliveries) and by the CLI.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from app.runtime.kafka_client import topic_partitions

__all__ = ["caught_up", "read_to_end", "topic_partitions"]


async def caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """True when the consumer's position has reached `ends` on every partition."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def read_to_end(
    bootstrap: str, topic: str, *, timeout: float = 30.0, **kafka_kwargs: Any
) -> AsyncIterator[ConsumerRecord]:
    """Every message of `topic` up to (at least) its end when called; TimeoutError if that takes
    longer than `timeout` seconds (a broker that stops answering must not hang a CLI forever).

    Once the reported end offsets are reached it keeps fetching until a fetch comes back empty
    (at most a few rounds): the embedded tansu broker reports the end of a partition as the base
    offset of its last record batch plus one, so records after the first of that batch would
    otherwise be missed. Apache Kafka reports it exactly; the extra fetch then returns nothing.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **kafka_kwargs
    )
    try:
        await consumer.start()
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        drain_rounds = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} to its end took over {timeout:.0f} s")
            if await caught_up(consumer, ends):
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                drain_rounds += 1
                if not batch or drain_rounds > 3:
                    for records in batch.values():
                        for record in records:
                            yield record
                    return
            else:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for record in records:
                    yield record
    finally:
        await consumer.stop()
