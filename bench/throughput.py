"""Throughput of one guard worker through a real broker, against baselines in the same run.

    python bench/throughput.py [--bootstrap HOST:PORT] [--events 200000] [--records 50000] [--split]

Without --bootstrap it starts the embedded tansu broker. It produces N canonical change events
(agents, humans, an unknown integration; many records) to a fresh crm.changes topic, then times:

1. raw aiokafka getmany() reading the topic (the ceiling of the client),
2. a bare Faust agent that only counts the same messages (a subprocess; Faust's per-event path),
3. the guard's record, link and actor stages with every detector, until the actor stage has
   consumed every observation (end to end through two more topics and three changelogs);
4. with --split, the same with the record stage in a second process (`crm-guard run --stages
   record`): what the second core buys. Timed from the first observation the actor stage
   receives, so the record stage's first batch (~0.1 s) is not counted.

Figures are events/s; ratios are against the bare Faust agent of the same run. The guard's row also
gives the CPU time its process spent per event (all three stages, Kafka clients included; the
broker is another process), which varies less than the wall clock on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from app.broker.embedded import start_embedded  # noqa: E402
from app.policy_file import parse_policy  # noqa: E402
from app.runtime.kafka_client import client_kwargs  # noqa: E402
from app.runtime.topics import ensure_topics  # noqa: E402
from app.runtime.worker import GuardRuntime  # noqa: E402
from app.config import Settings  # noqa: E402
from bench.common import bench_settings, worker_env  # noqa: E402

POLICY = """
agents:
  enrich-bot: {identities: [{vendor: hubspot, change_source: INTEGRATION, app_id: "1"}]}
  deal-bot: {identities: [{vendor: hubspot, change_source: INTEGRATION, app_id: "2"}], high_tier_allowed: true}
humans: [{vendor: hubspot, change_source: CRM_UI}]
"""
T0 = 1_767_225_600_000


def make_events(n: int, records: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of canonical events: 40 % enrichment agent, 20 % deal agent, 35 % humans."""
    out = []
    for i in range(n):
        r = (i * 7919) % records
        bucket = i % 20
        if bucket < 8:
            identity = {"vendor": "hubspot", "change_source": "INTEGRATION", "app_id": "1"}
            field, value, otype = "jobtitle", f"title {i % 13}", "contact"
        elif bucket < 12:
            identity = {"vendor": "hubspot", "change_source": "INTEGRATION", "app_id": "2"}
            field, value, otype = "amount", str(1000 + i % 50), "deal"
        elif bucket < 19:
            identity = {"vendor": "hubspot", "change_source": "CRM_UI", "user_id": str(100 + i % 9)}
            field, value, otype = "phone", f"+1555{i % 10000:04d}", "contact"
        else:
            identity = {"vendor": "hubspot", "change_source": "INTEGRATION", "app_id": "999"}
            field, value, otype = "city", "Oslo", "contact"
        record_key = f"hubspot/{otype}/{r}"
        event = {
            "event_id": f"hubspot:1:{i}", "source": "hubspot", "source_event_id": str(i),
            "occurred_at": T0 + i * 20, "object_type": otype, "source_object_type": otype, "record_id": str(r),
            "operation": "update", "changes": [{"field": field, "new": value}],
            "actor": {"kind": "unknown", "id": identity.get("user_id") or identity["app_id"], "identity": identity},
        }
        out.append((record_key.encode(), orjson.dumps(event)))
    return out


async def produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_read(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen = 0
        start = None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if batch and start is None:
                start = time.perf_counter()
            seen += sum(len(v) for v in batch.values())
        return n / (time.perf_counter() - (start or time.perf_counter()))
    finally:
        await consumer.stop()


def faust_baseline(bootstrap: str, topic: str, n: int) -> float:
    out = subprocess.run(  # noqa: S603
        [sys.executable, str(ROOT / "bench" / "faust_count.py"), "--bootstrap", bootstrap, "--topic", topic,
         "--expect", str(n)],
        capture_output=True, text=True, timeout=900, cwd=str(ROOT),
    )
    match = re.search(r"RATE (\d+)", out.stdout)
    if match:
        return float(match.group(1))
    raise RuntimeError(f"faust baseline failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")


async def backlog(bootstrap: str, n: int, partitions: int, tag: str) -> Settings:
    """Fresh topics with n events waiting on crm.changes. The backlog is in the topic before the
    worker starts, as for the two baselines: producing while the guard runs would share the CPU
    with it and start its clock mid-stream."""
    settings = bench_settings(bootstrap, uuid.uuid4().hex[:8], partitions, tag)
    await ensure_topics(settings, client_kwargs(settings))
    await produce(bootstrap, settings.topics.changes, make_events(n, max(1, n // 4)))
    return settings


def guard_runtime(settings: Settings, idempotent: bool) -> GuardRuntime:
    pause_topic = settings.topics.pause
    return GuardRuntime(settings, parse_policy(POLICY), encode_pause=lambda p: (pause_topic, p.agent.encode(), b"{}"),
                        idempotent=idempotent)


async def guard_run(bootstrap: str, n: int, partitions: int, idempotent: bool) -> tuple[float, float, dict[str, int]]:
    """(events/s, CPU microseconds of this process per event, messages per stage). The CPU figure
    is the steadier one on a shared machine: another process's load stretches the wall clock but
    not (much) the CPU time the guard spends per event."""
    runtime = guard_runtime(await backlog(bootstrap, n, partitions, "thr"), idempotent)
    await runtime.start()
    await runtime.ready.wait()
    record, actor = runtime.stages[1], runtime.stages[3]
    start = time.perf_counter()
    first = cpu_first = None
    while actor.observations < n:
        await asyncio.sleep(0.01)
        if first is None and record.processed:
            first, cpu_first = time.perf_counter(), time.process_time()
    elapsed = time.perf_counter() - (first or start)
    cpu = time.process_time() - (cpu_first or 0.0)
    counts = runtime.processed()
    await runtime.stop()
    return n / elapsed, cpu / n * 1e6, counts


async def guard_split_run(bootstrap: str, n: int, partitions: int, idempotent: bool) -> float:
    """The record stage in a child `crm-guard run --stages record`, the rest in this process."""
    settings = await backlog(bootstrap, n, partitions, "thrs")
    policy_file = Path(settings.state_dir) / "policy.yaml"
    policy_file.parent.mkdir(parents=True, exist_ok=True)
    policy_file.write_text(POLICY)
    cmd = [sys.executable, "-m", "app.cli", "run", "--stages", "record", "--port", "0", "--policy", str(policy_file)]
    if not idempotent:
        cmd.append("--no-idempotence")
    runtime = guard_runtime(settings.with_overrides(stages=["ingest", "link", "actor"]), idempotent)
    child = None
    try:
        await runtime.start()
        await runtime.ready.wait()
        actor = runtime.stages[3]
        # The downstream stages own their partitions before the record stage starts: otherwise
        # its output would pile up and the actor stage would be timed draining a backlog.
        while len(actor.partitions) < partitions or len(runtime.stages[2].partitions) < partitions:
            await asyncio.sleep(0.05)
        child = subprocess.Popen(cmd, env=worker_env(settings), cwd=str(ROOT), stdout=subprocess.DEVNULL,  # noqa: S603
                                 stderr=open(Path(settings.state_dir) / "record-worker.log", "wb"))  # noqa: SIM115
        first = None
        while actor.observations < n:
            if child.poll() is not None:
                raise RuntimeError(f"record worker exited ({child.returncode}); log in {settings.state_dir}")
            await asyncio.sleep(0.01)
            if first is None and actor.observations:
                first = time.perf_counter()
        return n / (time.perf_counter() - (first or time.perf_counter()))
    finally:
        await runtime.stop()
        if child is not None:
            child.send_signal(signal.SIGINT)
            child.wait(60)


async def main_async(args: argparse.Namespace) -> None:
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = start_embedded()
        bootstrap = broker.bootstrap
    idempotent = args.idempotent
    try:
        topic = f"bench.changes.{uuid.uuid4().hex[:8]}"
        items = make_events(args.events, args.records)
        await produce(bootstrap, topic, items)
        raw = await raw_read(bootstrap, topic, args.events)
        faust_rate = faust_baseline(bootstrap, topic, args.events)
        guard_rate, guard_cpu_us, counts = await guard_run(bootstrap, args.events, args.partitions, idempotent)
        split_rate = await guard_split_run(bootstrap, args.events, args.partitions, idempotent) if args.split else None
        print(f"broker: {bootstrap} ({'embedded tansu' if broker else 'given'}), events: {args.events}, "
              f"partitions: {args.partitions}, cpus: {os.cpu_count()}")
        print(f"raw aiokafka getmany read          {raw:>10,.0f} events/s")
        print(f"bare Faust agent (count only)      {faust_rate:>10,.0f} events/s   (baseline)")
        print(f"guard, all detectors, 3 stages     {guard_rate:>10,.0f} events/s   "
              f"{guard_rate / faust_rate:.2f}x the bare Faust agent, {guard_cpu_us:.0f} us CPU per event")
        if split_rate is not None:
            print(f"guard, record stage in a 2nd process {split_rate:>10,.0f} events/s   "
                  f"{split_rate / faust_rate:.2f}x the bare Faust agent, {split_rate / guard_rate:.2f}x one process")
        print(f"messages per stage: {counts}")
    finally:
        if broker:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("CRM_GUARD_BENCH_BOOTSTRAP"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--idempotent", action="store_true", help="idempotent producer (Apache Kafka only)")
    parser.add_argument("--split", action="store_true", help="also run the record stage in a second process")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
