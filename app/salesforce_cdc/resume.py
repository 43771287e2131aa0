"""Where a restarted Salesforce subscriber resumes: read back from the raw topic itself.

The subscriber produces every event with the channel as key (so a channel's events share one
partition, in order) and a `salesforce_replay` header `<channel> <replayId>`. What the broker
acknowledged is therefore its own checkpoint: on start, the newest such header of each channel
on that partition is the last event that is durable, and subscribing from its replayId asks
Salesforce for exactly the events after it. No second store can disagree with Kafka, and a
subscriber killed between a produce and any checkpoint write loses nothing and repeats nothing.

Webhook deliveries from a CDC bridge share the topic without the header; the scan walks back
from the end of the partition in chunks until it finds each channel's newest header.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.runtime.partitioner import partition_for

REPLAY_HEADER = "salesforce_replay"
SCAN_CHUNK = 10_000
"""Messages read per step back from the end of a partition."""
MAX_SCAN = 1_000_000
"""At most this many messages are read back per partition; beyond, the channel starts afresh."""


def replay_header(channel: str, replay_id: int) -> tuple[str, bytes]:
    return REPLAY_HEADER, f"{channel} {replay_id}".encode()


def parse_replay_header(value: bytes) -> tuple[str, int] | None:
    """(channel, replayId) of a header value, None when it is not one."""
    try:
        channel, _, number = value.decode().rpartition(" ")
        return (channel, int(number)) if channel else None
    except (UnicodeDecodeError, ValueError):
        return None


def channel_partition(channel: str, partitions: list[int]) -> int:
    """The partition the producer's default partitioner gives the channel's key."""
    return partition_for(channel.encode(), partitions)


async def resume_points(
    consumer: AIOKafkaConsumer, topic: str, partitions: list[int], channels: list[str]
) -> dict[str, int]:
    """The replayId of each channel's newest acknowledged event on `topic` (channels with none
    are left out). `consumer` is started, in no group; the scan reassigns it, so stop it after.
    (Not `assign([])` at the end: aiokafka's `stop()` then waits forever for the fetcher.)"""
    wanted: dict[int, set[str]] = {}
    for channel in channels:
        wanted.setdefault(channel_partition(channel, partitions), set()).add(channel)
    found: dict[str, int] = {}
    for partition, names in sorted(wanted.items()):
        found.update(await _scan_back(consumer, TopicPartition(topic, partition), names))
    return found


async def _scan_back(consumer: AIOKafkaConsumer, tp: TopicPartition, channels: set[str]) -> dict[str, int]:
    consumer.assign([tp])
    first = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    found: dict[str, int] = {}
    stop = end
    while stop > first and end - stop < MAX_SCAN and not channels <= found.keys():
        start = max(first, stop - SCAN_CHUNK)
        newest = await _read_headers(consumer, tp, start, stop, channels - found.keys())
        found.update(newest)
        stop = start
    return found


async def _read_headers(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, stop: int, channels: set[str]
) -> dict[str, int]:
    """The last replay header of each channel among offsets [start, stop)."""
    consumer.seek(tp, start)
    newest: dict[str, int] = {}
    position = start
    while position < stop:
        batch: dict[Any, list[Any]] = await consumer.getmany(tp, timeout_ms=1000, max_records=SCAN_CHUNK)
        records = batch.get(tp, [])
        if not records:
            position = await consumer.position(tp)
            if position >= stop:
                break
            continue
        for record in records:
            if record.offset >= stop:
                break
            for name, value in record.headers or ():
                if name == REPLAY_HEADER:
                    parsed = parse_replay_header(value)
                    if parsed and parsed[0] in channels:
                        newest[parsed[0]] = parsed[1]
        position = records[-1].offset + 1
    return newest
