"""Recovery: how long a restarted worker takes to rebuild the record stage's state.

    python bench/recovery.py [--bootstrap HOST:PORT] [--records 1000000] [--partitions 6]
                             [--fields 3] [--fill direct|guard]

Without --bootstrap it starts the embedded tansu broker. Steps, all in one run:

1. Fill. `--fill direct` (default): one canonical change event per record (N distinct HubSpot
   contacts, `--fields` field changes each, 60 % by humans, 40 % by an agent) is decoded,
   attributed and applied by the record stage's own code (ChangeEvent.model_validate_json,
   Attributor, RecordStage.process into a PartitionState), and PartitionState.drain_changes()
   gives the changelog records, which are produced to `<group>.record-changelog` at the partition
   the Kafka default partitioner gives the record key on crm.changes. Byte for byte what the
   running record stage writes, without running the other stages. `--fill guard`: the same events
   are produced to crm.changes and a guard worker processes them (all stages, all changelogs).
2. Baselines, each in a fresh process: a bare aiokafka read of the whole changelog topic
   (assign, seek to beginning, getmany until the end offsets, the same consumer settings and loop
   as BatchStage.restore), and the same read plus `orjson.loads` of every value into a dict (the
   least work any restore in Python must do).
3. Restore: a fresh process builds a worker with app.runtime.assembly.build_runtime (same group,
   same topics), starts it and waits until the record stage owns every partition and holds all N
   records. Printed: time to `runtime.ready`, time until the state is complete, the stage's own
   restore log (reader start to state rebuilt), records/s, and the process's peak RSS.
   Three times: with `local_state` off (the whole changelog from Kafka), then twice with it on in
   the same state directory: the first start reads the changelog and writes the local RocksDB
   copies, the second loads them and reads only the changelog's (empty) tail.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from app.config import Settings  # noqa: E402
from bench.common import bench_settings, code_version  # noqa: E402

POLICY = """
agents:
  enrich-bot:
    identities: [{vendor: hubspot, change_source: INTEGRATION, app_id: "4242"}]
humans: [{vendor: hubspot, change_source: CRM_UI}]
"""
PORTAL = 62515
T0 = 1_767_225_600_000
FIELDS = ("jobtitle", "city", "lifecyclestage", "industry", "website", "hs_lead_status", "country", "state")


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def event_bytes(i: int, fields: int) -> tuple[bytes, bytes]:
    """(record key, canonical event JSON) of record i: one update with `fields` changes."""
    if i % 5 < 3:
        identity = {"vendor": "hubspot", "change_source": "CRM_UI", "user_id": str(1 + i % 300)}
        hint, actor_id = "human", identity["user_id"]
    else:
        identity = {"vendor": "hubspot", "change_source": "INTEGRATION", "app_id": "4242"}
        hint, actor_id = "unknown", "4242"
    record_id = str(1_000_000 + i)
    changes = [{"field": FIELDS[f % len(FIELDS)], "new": f"{FIELDS[f % len(FIELDS)]} value {i % 97}"}
               for f in range(fields)]
    event = {
        "event_id": f"hubspot:{PORTAL}:{i}", "source": "hubspot", "source_event_id": str(i),
        "occurred_at": T0 + i * 10, "object_type": "contact", "source_object_type": "contact",
        "record_id": record_id, "operation": "update", "changes": changes,
        "actor": {"kind": hint, "id": actor_id, "identity": identity},
    }
    return f"hubspot/contact/{record_id}".encode(), orjson.dumps(event)


# ------------------------------------------------------------------------------------- fill

async def fill_direct(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Changelog records from the record stage's own code, produced straight to the changelog."""
    from aiokafka.partitioner import DefaultPartitioner

    from app.policy_file import parse_policy
    from app.runtime.kafka_client import make_producer
    from app.runtime.store import PartitionState
    from app.runtime.topics import changelog_topic
    from detectors.attribution import Attributor
    from detectors.events import ChangeEvent
    from detectors.pipeline import RecordStage
    from detectors.registry import default_detectors

    policy = parse_policy(POLICY, "bench-recovery")
    stage = RecordStage(policy, default_detectors(policy))
    attributor = Attributor(policy)
    partitioner = DefaultPartitioner()
    parts = list(range(settings.partitions))
    topic = changelog_topic(settings, "record")
    producer = make_producer(settings, args.idempotent)
    await producer.start()
    messages = 0
    value_bytes = 0
    per_state: dict[str, int] = {}
    started = time.perf_counter()
    try:
        chunk = 20_000
        for base in range(0, args.records, chunk):
            states = {p: PartitionState(stage.state_names()) for p in parts}
            for i in range(base, min(args.records, base + chunk)):
                key, value = event_bytes(i, args.fields)
                event = attributor.attribute(ChangeEvent.model_validate_json(value))
                stage.process(event, states[partitioner(key, parts, parts)])
            futures = []
            for p, state in states.items():
                for ckey, cvalue in state.drain_changes():
                    name = ckey.split(b"\x1f", 1)[0].decode()
                    per_state[name] = per_state.get(name, 0) + 1
                    value_bytes += len(cvalue or b"")
                    futures.append(await producer.send(topic, key=ckey, value=cvalue, partition=p))
            await asyncio.gather(*futures)
            messages += len(futures)
    finally:
        await producer.stop()
    return {"messages": messages, "value_bytes": value_bytes, "per_state": per_state,
            "seconds": time.perf_counter() - started}


async def fill_guard(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """The events through crm.changes and a whole guard worker (every stage and changelog)."""
    from app.policy_file import parse_policy
    from app.runtime.assembly import build_runtime
    from app.runtime.kafka_client import make_producer

    runtime, _ = build_runtime(settings, parse_policy(POLICY, "bench-recovery"), idempotent=args.idempotent)
    await runtime.start()
    await runtime.ready.wait()
    started = time.perf_counter()
    producer = make_producer(settings, args.idempotent)
    await producer.start()
    try:
        futures = []
        for i in range(args.records):
            key, value = event_bytes(i, args.fields)
            futures.append(await producer.send(settings.topics.changes, key=key, value=value))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    record = runtime.stages[1]
    while record.processed < args.records or not record.idle.is_set():
        await asyncio.sleep(0.2)
    seconds = time.perf_counter() - started
    processed = runtime.processed()
    await runtime.stop()
    return {"seconds": seconds, "processed": processed}


# ------------------------------------------------------------------------------------- children

async def read_child(args: argparse.Namespace) -> dict[str, Any]:
    """Baseline: read the changelog topic to its end as BatchStage.restore does (decode optional)."""
    settings = bench_settings(args.bootstrap, args.suffix, args.partitions, "rec")
    from app.runtime.topics import changelog_topic

    topic = changelog_topic(settings, "record")
    if not args.gc:
        gc.disable()
    rss0 = rss_mb()
    started = time.perf_counter()
    reader = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False)
    await reader.start()
    state: dict[str, Any] = {}
    count = 0
    try:
        tps = [TopicPartition(topic, p) for p in range(args.partitions)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        while True:
            batch = await reader.getmany(*tps, timeout_ms=300, max_records=10_000)
            for records in batch.values():
                count += len(records)
                if args.decode:
                    for rec in records:
                        state[rec.key.decode()] = orjson.loads(rec.value)
            if batch:
                continue
            positions = [await reader.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
    finally:
        await reader.stop()
    seconds = time.perf_counter() - started
    return {"messages": count, "seconds": seconds, "entries": len(state), "rss_start_mb": rss0,
            "peak_rss_mb": peak_rss_mb()}


class _RestoreLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "restored" in record.getMessage():
            self.lines.append(record.getMessage())


def _time_startup(runtime: Any) -> dict[str, float]:
    """Seconds spent in each step before runtime.ready: wrappers on this process's objects only
    (topic creation and each extra service's on_start), nothing in app/runtime is changed."""
    import app.runtime.worker as worker_module

    spent: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        async def wrapper(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    worker_module.ensure_topics = timed("ensure_topics", worker_module.ensure_topics)  # type: ignore[assignment]
    for service in runtime.extra_services:
        service.on_start = timed(type(service).__name__, service.on_start)
    return spent


async def restore_child(args: argparse.Namespace) -> dict[str, Any]:
    """A fresh worker (build_runtime, same group and topics): start until the record state is whole."""
    from app.policy_file import parse_policy
    from app.runtime.assembly import build_runtime
    from detectors.pipeline import RECORD_STATE

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    capture = _RestoreLog()
    stage_log = logging.getLogger("app.runtime.stage")
    stage_log.setLevel(logging.INFO)
    stage_log.addHandler(capture)
    settings = bench_settings(args.bootstrap, args.suffix, args.partitions, "rec").with_overrides(
        local_state=args.local_state)
    runtime, _ = build_runtime(settings, parse_policy(POLICY, "bench-recovery"), idempotent=args.idempotent)
    startup = _time_startup(runtime)
    rss0 = rss_mb()
    cpu0 = time.process_time()
    started = time.perf_counter()
    await runtime.start()
    await runtime.ready.wait()
    ready = time.perf_counter() - started
    record = runtime.stages[1]
    assigned = None
    while True:
        if assigned is None and len(record.partitions) == args.partitions:
            assigned = time.perf_counter() - started
        held = sum(len(ps[RECORD_STATE].data) for ps in list(record.partitions.values()))
        if (len(record.partitions) == args.partitions and held >= args.expect
                and not record.batch_lock.locked()):
            break
        if time.perf_counter() - started > args.timeout:
            raise RuntimeError(f"restore incomplete after {args.timeout}s: {held} of {args.expect} records")
        await asyncio.sleep(0.02)
    restored = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    rss_restored = rss_mb()
    lines = list(capture.lines)
    states = list(record.partitions.values())
    await runtime.stop()
    # Restored entries are decoded when first read: what reading every one of them once costs
    # (traffic touching them), measured here at once, after the worker stopped.
    decode_started = time.perf_counter()
    decoded = sum(1 for ps in states for state in ps.values() for key in list(state.data) if state.peek(key))
    decode_s = time.perf_counter() - decode_started
    return {"cpu_s": cpu, "startup": startup, "ready_s": ready, "assigned_s": assigned, "restored_s": restored,
            "records": held, "rss_start_mb": rss0, "rss_end_mb": rss_restored, "peak_rss_mb": peak_rss_mb(),
            "decode_all_s": decode_s, "decoded": decoded, "rss_decoded_mb": rss_mb(), "restore_log": lines}


def run_child(mode: str, bootstrap: str, suffix: str, args: argparse.Namespace,
              *extra: str) -> dict[str, Any]:
    """Run this script in a fresh process in one of its child modes; its RESULT line as a dict."""
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, "--bootstrap", bootstrap, "--suffix", suffix,
           "--partitions", str(args.partitions), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=str(ROOT))  # noqa: S603
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} failed: {out.stdout[-2000:]} {out.stderr[-3000:]}")


# ------------------------------------------------------------------------------------- main

async def main_async(args: argparse.Namespace) -> None:
    from app.broker.embedded import start_embedded
    from app.runtime.kafka_client import client_kwargs
    from app.runtime.topics import changelog_topic, ensure_topics

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = start_embedded(log_path="/tmp/crm-guard-bench-recovery-tansu.log")  # noqa: S108
        bootstrap = broker.bootstrap
    try:
        suffix = uuid.uuid4().hex[:8]
        settings = bench_settings(bootstrap, suffix, args.partitions, "rec")
        print(f"broker: {bootstrap} ({'embedded tansu' if broker else 'given'}); cpus: {os.cpu_count()}; "
              f"python {sys.version.split()[0]}; code {code_version()}")
        print(f"config: {args.records:,} records, {args.fields} fields each, {args.partitions} partitions, "
              f"fill={args.fill}, changelog {changelog_topic(settings, 'record')}, "
              f"producer idempotent={args.idempotent}; "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        await ensure_topics(settings, client_kwargs(settings))
        if args.fill == "direct":
            fill = await fill_direct(settings, args)
            print(f"fill (direct): {fill['messages']:,} changelog records ({fill['per_state']}), "
                  f"{fill['value_bytes'] / 1e6:.0f} MB of values "
                  f"({fill['value_bytes'] / max(1, fill['messages']):.0f} B each), "
                  f"written in {fill['seconds']:.1f}s")
        else:
            fill = await fill_guard(settings, args)
            print(f"fill (guard): {args.records:,} events through the guard in {fill['seconds']:.1f}s; "
                  f"processed {fill['processed']}")
        idem = ["--idempotent"] if args.idempotent else ["--no-idempotent"]
        bare = run_child("--read-child", bootstrap, suffix, args, "--no-decode")
        dec = run_child("--read-child", bootstrap, suffix, args, "--decode")
        nogc = run_child("--read-child", bootstrap, suffix, args, "--decode", "--no-gc")
        runs = [
            ("restarted worker, changelog only (local_state off)", "--no-local-state"),
            ("restarted worker, first start with local copies (reads the changelog, writes the copies)",
             "--local-state"),
            ("restarted worker again (loads its local copies, reads the changelog's empty tail)",
             "--local-state"),
        ]
        results = [run_child("--restore-child", bootstrap, suffix, args, "--expect", str(args.records),
                             *idem, flag) for _, flag in runs]
        n = bare["messages"]
        print(f"\nbaseline: bare aiokafka read of the changelog   {n:>10,} messages in "
              f"{bare['seconds']:6.2f}s = {n / bare['seconds']:>9,.0f} messages/s   "
              f"peak RSS {bare['peak_rss_mb']:.0f} MB")
        print(f"baseline: read + orjson.loads into a dict       {dec['messages']:>10,} messages in "
              f"{dec['seconds']:6.2f}s = {dec['messages'] / dec['seconds']:>9,.0f} messages/s   "
              f"peak RSS {dec['peak_rss_mb']:.0f} MB")
        print(f"baseline: the same with gc.disable()            {nogc['messages']:>10,} messages in "
              f"{nogc['seconds']:6.2f}s = {nogc['messages'] / nogc['seconds']:>9,.0f} messages/s   "
              f"peak RSS {nogc['peak_rss_mb']:.0f} MB")
        for (title, _), res in zip(runs, results, strict=True):
            print_restore(title, res, bare, dec)
        first = results[0]["restored_s"]
        print("\nstate complete, relative to the changelog-only restore: "
              + ", ".join(f"{r['restored_s'] / first:.2f}x" for r in results))
        shutil.rmtree(settings.state_dir, ignore_errors=True)
        print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if broker:
            broker.stop()


def print_restore(title: str, res: dict[str, Any], bare: dict[str, Any], dec: dict[str, Any]) -> None:
    """One restore child's figures."""
    print(f"\n{title}: {res['records']:,} records in the record state")
    print(f"  runtime.ready after            {res['ready_s']:6.2f}s   ("
          + ", ".join(f"{k} {v:.2f}s" for k, v in res["startup"].items()) + ")")
    print(f"  record partitions assigned at  {res['assigned_s']:6.2f}s")
    print(f"  state complete at              {res['restored_s']:6.2f}s   "
          f"= {res['records'] / res['restored_s']:,.0f} records/s from the start of the runtime; "
          f"the process used {res['cpu_s']:.2f}s of CPU meanwhile")
    for line in res["restore_log"]:
        print(f"  stage log: {line}")
    for line in res["restore_log"]:
        match = re.match(r"record: restored (\d+) changelog records .* in ([\d.]+)s", line)
        if match:
            msgs, secs = int(match.group(1)), float(match.group(2))
            print(f"  record stage restore alone     {secs:6.2f}s   = {res['records'] / secs:,.0f} "
                  f"records/s ({msgs / secs:,.0f} changelog records/s, {secs / bare['seconds']:.1f}x "
                  f"the bare read, "
                  f"{secs / dec['seconds']:.2f}x read + orjson.loads)")
    per_record = (res["rss_end_mb"] - res["rss_start_mb"]) * 1024 * 1024 / max(1, res["records"])
    print(f"  RSS {res['rss_start_mb']:.0f} MB before start, {res['rss_end_mb']:.0f} MB after restore, "
          f"peak {res['peak_rss_mb']:.0f} MB ({per_record:.0f} B per record)")
    print(f"  then reading every restored entry once (decodes and keeps them, as traffic touching them "
          f"does): {res['decoded']:,} entries in {res['decode_all_s']:.2f}s, RSS {res['rss_decoded_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("CRM_GUARD_BENCH_BOOTSTRAP"),
                        help="a running Kafka (default: start the embedded tansu)")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--fields", type=int, default=3, help="field changes per record (default 3)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--fill", choices=("direct", "guard"), default="direct")
    parser.add_argument("--idempotent", action=argparse.BooleanOptionalAction, default=None,
                        help="idempotent producers (default: on with --bootstrap, as `crm-guard run`)")
    parser.add_argument("--timeout", type=float, default=1200, help=argparse.SUPPRESS)
    parser.add_argument("--read-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--restore-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--decode", action=argparse.BooleanOptionalAction, default=False,
                        help=argparse.SUPPRESS)
    parser.add_argument("--gc", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS)
    parser.add_argument("--suffix", help=argparse.SUPPRESS)
    parser.add_argument("--local-state", action=argparse.BooleanOptionalAction, default=True,
                        help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.idempotent is None:
        args.idempotent = bool(args.bootstrap)
    if args.read_child:
        print("RESULT " + json.dumps(asyncio.run(read_child(args))), flush=True)
    elif args.restore_child:
        print("RESULT " + json.dumps(asyncio.run(restore_child(args))), flush=True)
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
