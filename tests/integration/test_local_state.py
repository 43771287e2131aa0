"""Local RocksDB copies of the state partitions on a real broker: a restarted worker loads its copy
and reads only the changelog's tail (what another worker wrote meanwhile) and ends with exactly
the state a restore of the whole changelog gives; a copy that no longer matches the changelog is
dropped and the partition restored from Kafka."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.runtime.assembly import build_runtime
from app.runtime.local_store import LocalStore
from app.runtime.topics import changelog_topic
from tests.integration.helpers_stream import agent_burst, fresh_settings, guard_policy, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

STATEFUL = (1, 2, 3)  # record, link, actor


async def start_restored(settings: Any, kafka_kind: str) -> Any:
    """A started runtime whose stateful stages own every partition and finished restoring."""
    runtime, _ = build_runtime(settings, guard_policy(), idempotent=kafka_kind == "apache")
    await runtime.start()
    await asyncio.wait_for(runtime.ready.wait(), 60)

    async def restored() -> bool:
        stages = [runtime.stages[i] for i in STATEFUL]
        return all(len(s.partitions) == settings.partitions and not s.batch_lock.locked() for s in stages)

    assert await wait_for(restored, 60)
    return runtime


def snapshot(runtime: Any) -> dict[str, Any]:
    """Every entry of every state of the stateful stages, by stage, partition and state name."""
    out: dict[str, Any] = {}
    for i in STATEFUL:
        stage = runtime.stages[i]
        out[stage.name] = {p: {name: orjson.loads(orjson.dumps(st.decoded())) for name, st in ps.items()}
                           for p, ps in stage.partitions.items()}
    return out


async def processed(runtime: Any, n: int) -> bool:
    return runtime.stages[3].observations >= n


async def run_burst(settings: Any, kafka_kind: str, n_records: int, start_id: int = 1) -> Any:
    """Start a worker, let it process an agent's burst over n records, stop it; the stopped runtime."""
    runtime = await start_restored(settings, kafka_kind)
    try:
        await produce(settings.bootstrap_servers, settings.topics.raw_hubspot,
                      [orjson.dumps(b) for b in agent_burst(n_records, start_id=start_id)])
        assert await wait_for(lambda: processed(runtime, n_records), 60)
    finally:
        await runtime.stop()
    return runtime


async def snapshot_of_a_restore(settings: Any, kafka_kind: str) -> tuple[Any, dict[str, Any]]:
    """The state a worker with these settings restores (it is stopped again)."""
    runtime = await start_restored(settings, kafka_kind)
    try:
        return runtime, snapshot(runtime)
    finally:
        await runtime.stop()


def cleanup(*settings: Any) -> None:
    for s in settings:
        shutil.rmtree(s.state_dir, ignore_errors=True)


async def test_a_restarted_worker_loads_its_copy_and_reads_only_the_changelog_tail(
        kafka_bootstrap: str, unique: str, kafka_kind: str) -> None:
    here = fresh_settings(kafka_bootstrap, unique, partitions=2)
    elsewhere = here.with_overrides(state_dir=here.state_dir + "-elsewhere")
    from_kafka = here.with_overrides(state_dir=here.state_dir + "-kafka-only", local_state=False)
    try:
        await run_burst(here, kafka_kind, 15)
        # Another worker (its own disk) takes the partitions over and goes on: its restore has no copy.
        other = await run_burst(elsewhere, kafka_kind, 10, start_id=100)
        assert other.stages[1].restored["local"] == 0 and other.stages[1].restored["changelog"] > 0
        back, restored_here = await snapshot_of_a_restore(here, kafka_kind)
        record = back.stages[1]
        # Its own copy (the first 15 records) plus the tail the other worker wrote.
        assert record.restored["local"] > 0 and record.restored["changelog"] > 0
        assert record.restored["local"] + record.restored["changelog"] > other.stages[1].restored["changelog"]
        full, restored_there = await snapshot_of_a_restore(from_kafka, kafka_kind)
        assert all(full.stages[i].restored["local"] == 0 for i in STATEFUL)
        assert restored_there == restored_here
        held = sum(len(ps["record_state"]) for ps in restored_here["record"].values())
        assert held == 25
    finally:
        cleanup(here, elsewhere, from_kafka)


async def test_a_copy_that_no_longer_matches_the_changelog_is_dropped(
        kafka_bootstrap: str, unique: str, kafka_kind: str) -> None:
    settings = fresh_settings(kafka_bootstrap, unique, partitions=3)
    from_kafka = settings.with_overrides(state_dir=settings.state_dir + "-kafka-only", local_state=False)
    try:
        await run_burst(settings, kafka_kind, 15)
        _, expected = await snapshot_of_a_restore(from_kafka, kafka_kind)
        # Partition 0's copy ends with a record the changelog does not have at that offset, and
        # partition 1's goes past the changelog's end (both as after the topic was deleted and
        # created again): neither may be trusted. Partition 2's is left as it is.
        store = LocalStore(Path(settings.state_dir) / "state", changelog_topic(settings, "record"))
        bogus = (b"record_state\x1fhubspot/contact/bogus", b'{"t":1}')
        for partition, ahead in ((0, 0), (1, 1000)):
            copy = store.open(partition)
            assert copy is not None
            checkpoint = copy.checkpoint()
            assert checkpoint is not None
            copy.write([bogus], checkpoint.next_offset + ahead)
        store.close_all()
        back, state = await snapshot_of_a_restore(settings, kafka_kind)
        assert all("hubspot/contact/bogus" not in ps["record_state"] for ps in state["record"].values())
        assert state == expected
        # partition 2's copy was used, partitions 0 and 1 came from the changelog
        assert back.stages[1].restored["local"] > 0 and back.stages[1].restored["changelog"] > 0
    finally:
        cleanup(settings, from_kafka)
