"""Latency from produce to alert at a steady input rate, against the broker's own round trip.

    python bench/latency.py [--bootstrap HOST:PORT] [--broker-pid PID] [--rate 5000] [--duration 30]
                            [--warmup 10] [--faults-per-s 10] [--batch 10] [--partitions 6]
                            [--workers 1] [--no-cost] [--no-breakdown] [--worker-gc-freeze S]

Without --bootstrap it starts the embedded tansu broker. Input: HubSpot webhook deliveries (JSON
arrays of `contact.propertyChange` / `deal.propertyChange` notifications, `--batch` per delivery)
produced to crm.raw.hubspot exactly as the receiver stores them (value = body, no key, a
`received_at` header), so every event crosses the whole guard: ingest (adapter) -> crm.changes ->
record stage -> guard.by-actor -> actor stage -> guard.alerts.

Background traffic (measured by nobody, processed by every detector): 55 % human UI edits (300
users, 200,000 contacts, 3 % of them e-mail changes that visit the link stage, 20 % deal amounts),
30 % workflows, 15 % two registered enrichment agents within their scope and caps (each re-enriches
a 2,000-contact segment, which also overwrites human values: mass_overwrite alerts, as it should).

Faults (`--faults-per-s`, only after the warm-up), alternating, each opening a NEW alert:
* unattributed: a new unknown integration (sourceId never seen) writes `city`
  -> unattributed_actor alert for that identity;
* denied_field: a new registered agent (one per fault, listed in the policy) writes `utm_source`,
  a field its policy denies -> protected_field alert (critical) and a signed pause.
Latency of one fault = wall time from the producer send() of the delivery that carries it to the
arrival, at a separate consumer of guard.alerts, of the first alert whose evidence_event_ids holds
the fault's event id. The guard runs in `--workers` child processes (one group, as in production),
each built by app.runtime.assembly.build_runtime; this process only produces and consumes.

Where the time goes:
* hops: every produced record carries its producer's send time (CreateTime), so the bench also
  reads the fault's record on crm.changes (key = record key) and on guard.by-actor (key = actor
  key) and splits each latency into
    ingest   send -> ingest stage produced the canonical event (raw topic transit + ingest batch)
    record   -> record stage produced the observation (ingest ack wait, transit, record batch)
    actor    -> actor stage produced the alert (record ack wait, transit, actor batch)
    deliver  -> the alert arrived at this process's consumer (broker transit);
* the workers' own pace: record-stage events/s, CPU per event, CPU of the machine split into
  workers / broker (its pid: the embedded one, or --broker-pid) / this process / everything else,
  the backlog when the input stops, batches per stage, event-loop stalls and GC pauses (measured
  in the worker processes with a 10 ms asyncio probe and gc.callbacks; app/runtime is untouched);
* a cost model (skip with --no-cost): CPU per event of each stage class of app/runtime, the
  timeline store and the aiokafka client, measured in this process without Kafka, and the event
  rate at which one worker (one Python thread) saturates one core.

Baseline in the same run, before the guard starts: the same deliveries at the same rate through one
topic with the same partitions, bare aiokafka producer (same settings as the guard's: acks=all,
linger 5 ms) -> bare consumer in this process; latency of every delivery and of the deliveries at
the fault positions. That is the floor one broker hop gives; the guard path has four such hops.

`--worker-gc-freeze S` is an experiment, not the runtime as shipped: each worker calls gc.freeze()
every S seconds. `--profile FILE` writes a cProfile of each worker (diagnosis only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from bench.common import bench_settings, code_version, env_settings  # noqa: E402

PORTAL = 62515
CONTACTS = 200_000
HUMANS = 300
WORKFLOWS = 40
SEGMENT = 2_000
AGENTS = {"enrich-bot": "4242", "score-bot": "4343"}
UNKNOWN_APP_BASE = 9_000_000
FAULT_APP_BASE = 8_000_000
FAULT_RECORD_BASE = 50_000_000


# ------------------------------------------------------------------------------------- helpers

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    ms = [v * 1000 for v in values]
    return (f"p50 {pct(ms, 50):7.1f}  p95 {pct(ms, 95):7.1f}  p99 {pct(ms, 99):7.1f}  "
            f"max {max(ms):7.1f} ms   n={len(ms)}")


def policy_yaml(fault_agents: int) -> str:
    """Two well-behaved agents, humans and workflows, and one agent per denied-field fault."""
    lines = ["agents:"]
    for name, app_id in AGENTS.items():
        lines.append(f"  {name}:")
        lines.append(f"    identities: [{{vendor: hubspot, change_source: INTEGRATION, app_id: '{app_id}'}}]")
        lines.append("    allowed_fields: [jobtitle, industry, city, website]")
        lines.append("    velocity_caps: [{max_records: 5000, window: 1h}]")
    for k in range(fault_agents):
        lines.append(f"  fault-agent-{k}:")
        rule = f"{{vendor: hubspot, change_source: INTEGRATION, app_id: '{FAULT_APP_BASE + k}'}}"
        lines.append(f"    identities: [{rule}]")
        lines.append("    denied_fields: [utm_*]")
    lines.append("humans: [{vendor: hubspot, change_source: CRM_UI}]")
    lines.append("automations: [{vendor: hubspot, change_source: WORKFLOWS}]")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- traffic

@dataclass
class Fault:
    kind: str
    event_id: str
    record_key: str
    actor_key: str
    sent: float = 0.0        # perf_counter at send()
    sent_wall: float = 0.0   # time.time() at send()
    changes_ts: int | None = None
    by_actor_ts: int | None = None
    alert_ts: int | None = None
    arrived: float | None = None
    alert_kind: str = ""


class Traffic:
    """HubSpot v3 webhook notifications: background mix plus faults."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - synthetic traffic, not secrets
        self.next_id = seed * 10_000_000
        self.faults = 0
        self.agent_names = list(AGENTS)

    def _note(self, obj: str, object_id: int, prop: str, value: str, source: str,
              source_id: str) -> dict[str, Any]:
        self.next_id += 1
        return {
            "eventId": self.next_id, "subscriptionId": 1001, "portalId": PORTAL, "appId": 4242,
            "occurredAt": int(time.time() * 1000), "subscriptionType": f"{obj}.propertyChange",
            "attemptNumber": 0, "objectId": object_id, "propertyName": prop, "propertyValue": value,
            "changeSource": source, "sourceId": source_id,
        }

    def background(self) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        if r < 0.55:
            user = f"userId:{rng.randrange(1, HUMANS + 1)}"
            if rng.random() < 0.2:
                amount = str(rng.randrange(1, 500) * 100)
                return self._note("deal", rng.randrange(1, 20_000), "amount", amount, "CRM_UI", user)
            contact = rng.randrange(1, CONTACTS)
            q = rng.random()
            if q < 0.03:
                return self._note("contact", contact, "email", f"c{contact}.{rng.randrange(9)}@example.com",
                                  "CRM_UI", user)
            prop = ("jobtitle", "city", "lifecyclestage", "hs_lead_status")[int(q * 4) % 4]
            return self._note("contact", contact, prop, f"v{rng.randrange(50)}", "CRM_UI", user)
        if r < 0.85:
            prop = ("hs_lead_status", "lifecyclestage")[r < 0.7]
            workflow = str(1000 + rng.randrange(WORKFLOWS))
            contact = rng.randrange(1, CONTACTS)
            return self._note("contact", contact, prop, f"w{rng.randrange(20)}", "WORKFLOWS", workflow)
        k = rng.randrange(len(self.agent_names))
        contact = 1 + k * SEGMENT + rng.randrange(SEGMENT)
        prop = ("jobtitle", "industry", "city", "website")[rng.randrange(4)]
        return self._note("contact", contact, prop, f"e{rng.randrange(30)}", "INTEGRATION",
                          AGENTS[self.agent_names[k]])

    def fault(self) -> tuple[dict[str, Any], Fault]:
        k = self.faults
        self.faults += 1
        record = FAULT_RECORD_BASE + k
        if k % 2 == 0:
            note = self._note("contact", record, "city", "Oslo", "INTEGRATION", str(UNKNOWN_APP_BASE + k))
            actor_key = f"unknown:hubspot:{UNKNOWN_APP_BASE + k}"
            kind = "unattributed"
        else:
            note = self._note("contact", record, "utm_source", "bench", "INTEGRATION",
                              str(FAULT_APP_BASE + k // 2))
            actor_key = f"fault-agent-{k // 2}"
            kind = "denied_field"
        event_id = f"hubspot:{PORTAL}:{note['eventId']}:{note['propertyName']}"
        return note, Fault(kind, event_id, f"hubspot/contact/{record}", actor_key)


@dataclass
class DriveResult:
    events: int = 0
    deliveries: int = 0
    window_events: int = 0
    window_seconds: float = 0.0
    max_behind: float = 0.0
    # baseline: delivery seq -> (send time, at a fault slot)
    sends: dict[int, tuple[float, bool]] = field(default_factory=dict)
    cpu_start: dict[str, Any] | None = None
    cpu_end: dict[str, Any] | None = None


async def drive(producer: AIOKafkaProducer, topic: str, traffic: Traffic, args: argparse.Namespace,
                on_fault: dict[str, Fault] | None, stamp_seq: bool) -> DriveResult:
    """Send deliveries of `args.batch` notifications at a steady `args.rate` events/s.

    With `on_fault`, one notification of every fault-slot delivery is a fault (registered there);
    with `stamp_seq` (baseline), each delivery carries a `seq` header and its send time is kept.
    """
    interval = args.batch / args.rate
    warm = int(args.warmup / interval)
    total = warm + int(args.duration / interval)
    every = max(1, round(args.rate / args.faults_per_s / args.batch))
    result = DriveResult()
    futures = []
    start = time.perf_counter()
    window_start = None
    for i in range(total):
        target = start + i * interval
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i >= warm:
            result.max_behind = max(result.max_behind, -delay)
        slot = i >= warm and (i - warm) % every == 0
        notes = [traffic.background() for _ in range(args.batch)]
        fault = None
        if slot and on_fault is not None:
            notes[0], fault = traffic.fault()
        body = orjson.dumps(notes)
        headers = [("received_at", str(int(time.time() * 1000)).encode())]
        if stamp_seq:
            headers.append(("seq", str(i).encode()))
        if i == warm:
            window_start = time.perf_counter()
            result.cpu_start = cpu_snapshot(args.broker_pid)
        sent = time.perf_counter()
        if fault is not None:
            fault.sent, fault.sent_wall = sent, time.time()
            on_fault[fault.event_id] = fault  # type: ignore[index]
        if stamp_seq and i >= warm:
            result.sends[i] = (sent, slot)
        futures.append(await producer.send(topic, value=body, headers=headers))
        result.events += len(notes)
        result.deliveries += 1
        if i >= warm:
            result.window_events += len(notes)
        if len(futures) >= 2000:
            await asyncio.gather(*futures)
            futures = []
    result.cpu_end = cpu_snapshot(args.broker_pid)
    await asyncio.gather(*futures)
    result.window_seconds = time.perf_counter() - (window_start or start)
    return result


def make_driver_producer(bootstrap: str) -> AIOKafkaProducer:
    """The receiver's producer settings (app/runtime/kafka_client.make_producer, no idempotence)."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024)


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create a topic and wait until every partition has a leader (no auto-creation races)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        for _ in range(100):
            await consumer._client.force_metadata_update()  # noqa: SLF001 - topic just created
            parts = consumer.partitions_for_topic(topic) or set()
            leaders = [consumer._client.cluster.leader_for_partition(TopicPartition(topic, p)) for p in parts]  # noqa: SLF001
            if len(parts) == partitions and all(x is not None and x >= 0 for x in leaders):
                return
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


async def assigned_consumer(bootstrap: str, topics: list[str]) -> AIOKafkaConsumer:
    """A consumer assigned every partition of the topics, from the beginning (fresh topics)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = []
    for topic in topics:
        parts = None
        for _ in range(100):
            await consumer._client.force_metadata_update()  # noqa: SLF001 - topics just created
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            await asyncio.sleep(0.1)
        if not parts:
            raise RuntimeError(f"topic {topic} has no partitions")
        tps += [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


# ------------------------------------------------------------------------------------- baseline

async def baseline(bootstrap: str, args: argparse.Namespace) -> tuple[list[float], list[float], DriveResult]:
    """Bare produce -> consume through one topic at the same rate: (all, fault slots, drive)."""
    topic = f"bench.rtt.{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, args.partitions)
    consumer = await assigned_consumer(bootstrap, [topic])
    arrivals: dict[int, float] = {}
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    seq = int(dict(rec.headers)["seq"])
                    arrivals.setdefault(seq, now)

    task = asyncio.create_task(consume())
    producer = make_driver_producer(bootstrap)
    await producer.start()
    try:
        result = await drive(producer, topic, Traffic(seed=7), args, None, stamp_seq=True)
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and not all(s in arrivals for s in result.sends):
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await producer.stop()
        await consumer.stop()
    every_lat = [arrivals[s] - sent for s, (sent, _) in result.sends.items() if s in arrivals]
    slot_lat = [arrivals[s] - sent for s, (sent, slot) in result.sends.items() if slot and s in arrivals]
    return every_lat, slot_lat, result


# ------------------------------------------------------------------------------------- cost model

def _rec(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> Any:
    from aiokafka.structs import ConsumerRecord

    return ConsumerRecord(topic, partition, offset, 0, 0, key, value, None, len(key or b""),
                          len(value or b""), [])


def stage_costs(args: argparse.Namespace, deliveries: int = 2000) -> dict[str, Any]:
    """CPU per event of each part of the worker, without Kafka: the runtime's own stage classes
    (handle, after_batch, changelog encoding) and the timeline store, fed the same traffic in
    batches of batch_max_records. No fault events; metrics on, as in the worker."""
    from aiokafka.partitioner import DefaultPartitioner

    from app.metrics import GuardMetrics
    from app.policy_file import parse_policy
    from app.runtime.stage import Emit
    from app.runtime.stages import ActorStageRunner, IngestStage, LinkStageRunner, RecordStageRunner
    from app.runtime.store import PartitionState
    from app.timeline.store import TimelineStore
    from detectors.attribution import Attributor
    from detectors.pipeline import ActorStage, LinkStage, RecordStage
    from detectors.registry import default_detectors

    policy = parse_policy(policy_yaml(1), "bench-cost")
    detectors = default_detectors(policy)
    metrics = GuardMetrics(agents=list(policy.agents))
    common: dict[str, Any] = {"bootstrap": "unused", "producer": None, "deadletter_topic": "dl",
                              "client_kwargs": {}, "metrics": metrics, "group_id": "cost"}
    ingest = IngestStage(raw_topics={"hubspot": "raw"}, changes_topic="changes", max_payload_bytes=1_000_000,
                         **common)
    record = RecordStageRunner(stage=RecordStage(policy, detectors), link=LinkStage(policy, detectors),
                               attributor=Attributor(policy), by_actor="by_actor", by_link="by_link",
                               timeline_topic="timeline", topics=["changes"], changelog_topic="rc", **common)
    link = LinkStageRunner(stage=LinkStage(policy, detectors), by_actor="by_actor", topics=["by_link"],
                           changelog_topic="lc", **common)
    actor = ActorStageRunner(stage=ActorStage(policy, detectors), alerts_topic="alerts", feedback_topic="fb",
                             timeline_topic="timeline",
                             encode_pause=lambda pz: ("pause", pz.agent.encode(), b"{}"),
                             topics=["by_actor"], changelog_topic="ac", **common)
    parts = list(range(args.partitions))
    for stage in (record, link, actor):
        for p in parts:
            stage.partitions[p] = PartitionState(stage.state_names())
    partitioner = DefaultPartitioner()
    traffic = Traffic(seed=23)
    spent: dict[str, float] = {}
    produced: dict[str, int] = {}
    consumed: dict[str, int] = {}

    def run(name: str, stage: Any, records: list[Any]) -> Emit:
        """One stage over `records` in batches, as BatchStage._process_batch does (minus Kafka)."""
        out = Emit()
        size = env_settings().batch_max_records
        t0 = time.process_time()
        for start in range(0, len(records), size):
            emit = Emit()
            for rec in records[start:start + size]:
                stage.handle(rec, stage.partitions.get(rec.partition), emit)
            stage.after_batch(emit)
            changelog = [c for st in stage.partitions.values() for c in st.drain_changes()]
            produced[name + " changelog"] = produced.get(name + " changelog", 0) + len(changelog)
            out.records.extend(emit.records)
        spent[name] = time.process_time() - t0
        consumed[name] = len(records)
        return out

    def route(emit: Emit, topic: str) -> list[Any]:
        rows = [r for r in emit.records if r[0] == topic]
        produced[topic] = produced.get(topic, 0) + len(rows)
        out = []
        for i, (_, key, value, _, part) in enumerate(rows):
            if part is None:
                part = partitioner(key, parts, parts) if key else 0
            out.append(_rec(topic, part, i, key, value))
        return out

    raw = [_rec("raw", 0, i, None, orjson.dumps([traffic.background() for _ in range(args.batch)]))
           for i in range(deliveries)]
    events = deliveries * args.batch
    changes = route(run("ingest", ingest, raw), "changes")
    out = run("record", record, changes)
    by_link, timeline = route(out, "by_link"), route(out, "timeline")
    out_link = run("link", link, by_link)
    by_actor = route(out, "by_actor") + route(out_link, "by_actor")
    out_actor = run("actor", actor, by_actor)
    timeline += route(out_actor, "timeline")
    for topic in ("alerts", "fb", "pause"):
        route(out_actor, topic)
    store = TimelineStore()
    t0 = time.process_time()
    for rec in timeline:
        store.apply_batch(orjson.loads(rec.value))
    spent["timeline store (follower)"] = time.process_time() - t0
    consumed["timeline store (follower)"] = len(timeline)
    return {"events": events, "spent": spent, "produced": produced, "consumed": consumed}


async def client_costs(bootstrap: str, n: int = 20_000) -> tuple[float, float]:
    """Client CPU per produced message (send + acks, acks=all, linger 5 ms) and per consumed message."""
    topic = f"bench.cost.{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, 1)
    value = b"x" * 300
    producer = make_driver_producer(bootstrap)
    await producer.start()
    try:
        await (await producer.send(topic, key=b"k", value=value))
        t0 = time.process_time()
        futures = [await producer.send(topic, key=str(i % 500).encode(), value=value) for i in range(n)]
        await asyncio.gather(*futures)
        send_cost = (time.process_time() - t0) / n
    finally:
        await producer.stop()
    consumer = await assigned_consumer(bootstrap, [topic])
    try:
        seen = 0
        t0 = time.process_time()
        while seen < n + 1:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            seen += sum(len(v) for v in batch.values())
        read_cost = (time.process_time() - t0) / seen
    finally:
        await consumer.stop()
    return send_cost, read_cost


def report_costs(costs: dict[str, Any], send_cost: float, read_cost: float) -> float:
    events = costs["events"]
    print(f"\ncost model: CPU per event of one worker, measured in this process without a broker "
          f"({events:,} background events; the runtime's stage classes, batches of "
          f"{env_settings().batch_max_records})")
    total = 0.0
    for name, seconds in costs["spent"].items():
        us = seconds / events * 1e6
        total += us
        per = costs["consumed"][name] / events
        print(f"  {name:<28} {us:7.1f} us/event   ({per:.2f} input messages per event)")
    n_prod = sum(costs["produced"].values())
    n_cons = sum(costs["consumed"].values())
    prod_us = n_prod / events * send_cost * 1e6
    cons_us = n_cons / events * read_cost * 1e6
    split = ", ".join(f"{k} {v / events:.2f}" for k, v in costs["produced"].items() if v)
    print(f"  {'aiokafka produce':<28} {prod_us:7.1f} us/event   ({n_prod / events:.2f} messages per event "
          f"x {send_cost * 1e6:.1f} us: {split})")
    print(f"  {'aiokafka consume':<28} {cons_us:7.1f} us/event   ({n_cons / events:.2f} messages per event "
          f"x {read_cost * 1e6:.1f} us)")
    total += prod_us + cons_us
    print(f"  {'total':<28} {total:7.1f} us/event   -> one worker (one Python thread) saturates one core at "
          f"about {1e6 / total:,.0f} events/s")
    return total


# ------------------------------------------------------------------------------------- guard child

def worker_stage_sets(args: argparse.Namespace) -> list[list[str]]:
    """The stages of each worker: --worker-stages, else every stage in each of --workers."""
    from app.config import STAGES

    if args.worker_stages:
        return [[s.strip() for s in spec.split(",") if s.strip()] for spec in args.worker_stages]
    return [list(STAGES) for _ in range(args.workers)]


async def serve_guard(args: argparse.Namespace) -> None:
    """The guard worker (child process): READY when every stage owns its partitions, a progress
    line per second, and STATS after STOP on stdin."""
    import logging

    from app.policy_file import parse_policy
    from app.runtime.assembly import build_runtime

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = bench_settings(args.bootstrap, args.suffix, args.partitions, "lat")
    stage_sets = worker_stage_sets(args)
    settings = settings.with_overrides(stages=stage_sets[args.worker_index])
    policy = parse_policy(policy_yaml(args.fault_agents), "bench-latency")
    runtime, shared = build_runtime(settings, policy, idempotent=args.idempotent)
    await runtime.start()
    await runtime.ready.wait()
    running = [s for s in runtime.stages if s.name in settings.stages]
    stateful = [s for s in running if s.name != "ingest"]
    while True:
        consumers_ok = all(s.consumer is not None and s.consumer.assignment() for s in running)
        # the range assignor's share of each stage group: partitions over the workers running it
        restored = all(len(s.partitions) == args.partitions // sum(s.name in ss for ss in stage_sets)
                       and not s.batch_lock.locked() for s in stateful)
        if consumers_ok and restored:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    print("READY " + json.dumps({s.name: sorted(s.partitions) for s in stateful}), flush=True)

    loop = asyncio.get_running_loop()
    stop = loop.run_in_executor(None, sys.stdin.readline)
    # Instrumentation of this process only: garbage-collector pauses and event-loop stalls (a
    # stage's batch runs synchronously between awaits, so every other stage in the worker waits).
    import gc

    gc_pauses: list[tuple[int, float]] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append((info["generation"], time.perf_counter() - gc_started[0]))

    gc.callbacks.append(on_gc)
    stalls: list[float] = []

    async def watch_loop() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            stalls.append(time.perf_counter() - t0 - 0.01)

    watcher = asyncio.create_task(watch_loop())

    async def freeze_heap() -> None:
        """Experiment (--worker-gc-freeze): move the heap to the permanent generation every few
        seconds, so full collections only walk what was allocated since (a bench-side stand-in for
        a runtime that freezes or tunes its collector; cyclic garbage frozen this way leaks)."""
        while True:
            gc.freeze()
            await asyncio.sleep(args.worker_gc_freeze)

    freezer = asyncio.create_task(freeze_heap()) if args.worker_gc_freeze else None
    profiler = None
    if args.profile:  # diagnosis only: cProfile slows the worker down, figures are not comparable
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()

    def usage() -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"t": time.time(), "cpu": ru.ru_utime + ru.ru_stime, "processed": runtime.processed()}

    while not stop.done():
        print("PROGRESS " + json.dumps(usage()), flush=True)
        await asyncio.wait([stop], timeout=1.0)
    stats = usage()
    watcher.cancel()
    if freezer is not None:
        freezer.cancel()
    gc.callbacks.remove(on_gc)
    gen2 = [d for g, d in gc_pauses if g == 2]
    stats["gc"] = {"collections": len(gc_pauses), "seconds": sum(d for _, d in gc_pauses),
                   "gen2": len(gen2), "gen2_seconds": sum(gen2),
                   "max": max((d for _, d in gc_pauses), default=0.0)}
    stats["stalls"] = {"p50": pct(stalls, 50), "p99": pct(stalls, 99), "max": max(stalls),
                       "over_100ms_s": sum(x for x in stalls if x > 0.1)} if stalls else {}
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    batches: dict[str, list[float]] = {}
    for metric in shared["metrics"].registry.collect():
        if metric.name == "crm_guard_processed_batch_seconds":
            for sample in metric.samples:
                stage = sample.labels.get("stage")
                if sample.name.endswith("_count"):
                    batches.setdefault(stage, [0, 0])[0] = sample.value
                elif sample.name.endswith("_sum"):
                    batches.setdefault(stage, [0, 0])[1] = sample.value
    stats["batches"] = batches
    stats["observations"] = runtime.stages[3].observations
    stats["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("STATS " + json.dumps(stats), flush=True)
    await runtime.stop()


# ------------------------------------------------------------------------------------- guard run

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) a process has used, from /proc."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_snapshot(broker_pid: int | None) -> dict[str, Any]:
    """Machine-wide busy time, this process's and the broker's CPU, now."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return {"t": time.time(), "busy": sum(values) - values[3] - values[4], "total": sum(values),
            "driver": time.process_time(), "broker": process_cpu(broker_pid)}


@dataclass
class Worker:
    proc: Any
    log: str
    progress: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)

    def at(self, t: float) -> dict[str, Any] | None:
        """The first progress line at or after wall time t."""
        return next((p for p in self.progress if p["t"] >= t), None)

    def before(self, t: float) -> dict[str, Any] | None:
        """The last progress line at or before wall time t."""
        return next((p for p in reversed(self.progress) if p["t"] <= t), None)


async def start_workers(bootstrap: str, suffix: str, args: argparse.Namespace,
                        fault_agents: int) -> list[Worker]:
    """Start the worker processes and wait until each owns its share of every stage's partitions."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-guard", "--bootstrap", bootstrap,
           "--suffix", suffix, "--partitions", str(args.partitions), "--fault-agents", str(fault_agents),
           "--workers", str(args.workers)]
    if args.worker_stages:
        cmd += ["--worker-stages", *args.worker_stages]
    if args.idempotent:
        cmd.append("--idempotent")
    if args.worker_gc_freeze:
        cmd += ["--worker-gc-freeze", str(args.worker_gc_freeze)]
    workers = []
    for i in range(args.workers):
        log_path = f"/tmp/crm-guard-bench-latency-{suffix}-{i}.log"  # noqa: S108
        extra = ["--worker-index", str(i)] + (["--profile", f"{args.profile}.{i}"] if args.profile else [])
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *cmd, *extra, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                cwd=str(ROOT))
        workers.append(Worker(proc, log_path))

    async def wait_ready(w: Worker) -> None:
        line = await asyncio.wait_for(w.proc.stdout.readline(), timeout=300)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"guard worker did not start ({line!r}); log: {w.log}")
        w.ready = json.loads(line[6:])

    await asyncio.gather(*(wait_ready(w) for w in workers))
    return workers


async def read_worker(w: Worker) -> None:
    while True:
        raw = await w.proc.stdout.readline()
        if not raw:
            return
        text = raw.decode().strip()
        if text.startswith("PROGRESS "):
            w.progress.append(json.loads(text[9:]))
        elif text.startswith("STATS "):
            w.stats.update(json.loads(text[6:]))


async def guard_run(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    n_faults = int(args.duration * args.faults_per_s) + 2
    settings = bench_settings(bootstrap, suffix, args.partitions, "lat")
    t_start = time.perf_counter()
    workers = await start_workers(bootstrap, suffix, args, n_faults // 2 + 1)
    startup = time.perf_counter() - t_start
    readers = [asyncio.create_task(read_worker(w)) for w in workers]
    t = settings.topics
    faults: dict[str, Fault] = {}
    by_record: dict[bytes, Fault] = {}
    by_actor: dict[bytes, Fault] = {}
    other_alerts: dict[str, int] = {}
    stop = asyncio.Event()
    alert_consumer = await assigned_consumer(bootstrap, [t.alerts])
    hop_consumer = await assigned_consumer(bootstrap, [t.changes, t.by_actor]) if args.breakdown else None

    async def consume_alerts() -> None:
        while not stop.is_set():
            batch = await alert_consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    alert = orjson.loads(rec.value)
                    matched = False
                    for eid in alert.get("evidence_event_ids", ()):
                        fault = faults.get(eid)
                        if fault is not None and fault.arrived is None:
                            fault.arrived, fault.alert_ts = now, rec.timestamp
                            fault.alert_kind = alert["kind"]
                            matched = True
                    if not matched:
                        other_alerts[alert["kind"]] = other_alerts.get(alert["kind"], 0) + 1

    async def consume_hops() -> None:
        assert hop_consumer is not None
        while not stop.is_set():
            batch = await hop_consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                changes = tp.topic == t.changes
                index = by_record if changes else by_actor
                for rec in records:
                    fault = index.get(rec.key)
                    if fault is None:
                        continue
                    if changes and fault.changes_ts is None:
                        fault.changes_ts = rec.timestamp
                    elif not changes and fault.by_actor_ts is None:
                        fault.by_actor_ts = rec.timestamp

    class Registry(dict):  # a fault registers in all three indexes at send time
        def __setitem__(self, key: str, fault: Fault) -> None:
            faults[key] = fault
            by_record[fault.record_key.encode()] = fault
            by_actor[fault.actor_key.encode()] = fault

    def processed_now() -> dict[str, int]:
        total: dict[str, int] = {}
        for w in workers:
            for stage, n in (w.progress[-1]["processed"] if w.progress else {}).items():
                total[stage] = total.get(stage, 0) + n
        return total

    tasks = [asyncio.create_task(consume_alerts())]
    if hop_consumer is not None:
        tasks.append(asyncio.create_task(consume_hops()))
    producer = make_driver_producer(bootstrap)
    await producer.start()
    try:
        drive_started = time.time()
        result = await drive(producer, t.raw_hubspot, Traffic(seed=11), args, Registry(), stamp_seq=False)
        drive_ended = time.time()
        deadline = time.perf_counter() + args.drain_timeout
        while time.perf_counter() < deadline and not all(f.arrived for f in faults.values()):
            await asyncio.sleep(0.05)
        deadline = time.perf_counter() + args.drain_timeout  # let the backlog finish, for the lag figures
        caught_up = False
        while time.perf_counter() < deadline and not caught_up:
            done = processed_now()
            caught_up = done.get("ingest", 0) >= result.deliveries and done.get("record", 0) >= result.events
            await asyncio.sleep(0.2)
        drained = time.time()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await producer.stop()
        await alert_consumer.stop()
        if hop_consumer is not None:
            await hop_consumer.stop()
        for w in workers:
            w.proc.stdin.write(b"STOP\n")
            await w.proc.stdin.drain()
        try:
            await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
            await asyncio.wait_for(asyncio.gather(*(w.proc.wait() for w in workers)), timeout=60)
        except TimeoutError:
            for w in workers:
                if w.proc.returncode is None:
                    w.proc.kill()
    return {"faults": list(faults.values()), "drive": result, "workers": workers,
            "other_alerts": other_alerts, "startup": startup, "drive_started": drive_started,
            "drive_ended": drive_ended, "drained": drained, "caught_up": caught_up}


def report_guard(run: dict[str, Any], args: argparse.Namespace) -> None:
    faults: list[Fault] = run["faults"]
    res: DriveResult = run["drive"]
    workers: list[Worker] = run["workers"]
    arrived = [f for f in faults if f.arrived is not None]
    lat = [f.arrived - f.sent for f in arrived]  # type: ignore[operator]
    print(f"\nguard: produce -> alert on guard.alerts ({len(workers)} worker process(es) built by "
          f"build_runtime, started and assigned in {run['startup']:.1f}s: "
          + "; ".join(json.dumps(w.ready) for w in workers) + ")")
    print(f"  input achieved       {res.window_events / res.window_seconds:>9,.0f} events/s over "
          f"{res.window_seconds:.1f}s ({res.window_events:,} events in {res.window_events // args.batch:,} "
          f"deliveries; {res.events:,} with warm-up); max behind schedule {res.max_behind * 1000:.0f} ms")
    print(f"  all faults           {summary(lat)}   missing {len(faults) - len(arrived)} of {len(faults)}")
    for kind in ("unattributed", "denied_field"):
        sub = [f.arrived - f.sent for f in arrived if f.kind == kind]  # type: ignore[operator]
        print(f"  {kind:<20} {summary(sub)}")
    if faults:
        within = sum(1 for v in lat if v < 1.0)
        print(f"  under 1 s            {within} of {len(faults)} faults ({100 * within / len(faults):.1f} %)")
    kinds: dict[str, int] = {}
    for f in arrived:
        kinds[f.alert_kind] = kinds.get(f.alert_kind, 0) + 1
    print(f"  first alert kinds    {kinds}; other alert publications: {run['other_alerts']}")
    hops = [f for f in arrived if f.changes_ts and f.by_actor_ts and f.alert_ts]
    if hops:
        print(f"  where the time goes (producer timestamps, ms resolution, {len(hops)} faults):")
        parts = {
            "ingest  (send -> crm.changes)": [f.changes_ts / 1000 - f.sent_wall for f in hops],  # type: ignore[operator]
            "record  (-> guard.by-actor)": [(f.by_actor_ts - f.changes_ts) / 1000 for f in hops],  # type: ignore[operator]
            "actor   (-> guard.alerts)": [(f.alert_ts - f.by_actor_ts) / 1000 for f in hops],  # type: ignore[operator]
            "deliver (-> consumer)": [f.sent_wall + (f.arrived - f.sent) - f.alert_ts / 1000  # type: ignore[operator]
                                      for f in hops],
        }
        for name, values in parts.items():
            print(f"    {name:<30} {summary(values)}")
    # the guard's own pace in the measured window, from the workers' progress lines
    w_start, w_end = run["drive_started"] + args.warmup, run["drive_ended"]
    rec_events = cpu = span = 0.0
    for w in workers:
        a, b = w.at(w_start), w.before(w_end)
        if a and b and b["t"] > a["t"]:
            rec_events += b["processed"]["record"] - a["processed"]["record"]
            cpu += b["cpu"] - a["cpu"]
            span = max(span, b["t"] - a["t"])
    if span:
        print(f"  guard in the window  record stage {rec_events / span:,.0f} events/s; worker CPU "
              f"{cpu / span * 100:.0f} % of one core in total = "
              f"{cpu / max(1, rec_events) * 1e6:.0f} us CPU per event")
    c0, c1 = res.cpu_start, res.cpu_end
    if c0 and c1:
        wall = c1["t"] - c0["t"]
        ncpu = os.cpu_count() or 1
        busy = (c1["busy"] - c0["busy"]) / max(1, c1["total"] - c0["total"]) * ncpu
        driver = (c1["driver"] - c0["driver"]) / wall
        broker = None
        if c0["broker"] is not None and c1["broker"] is not None:
            broker = (c1["broker"] - c0["broker"]) / wall
        workers_cores = cpu / span if span else 0.0
        others = busy - driver - workers_cores - (broker or 0.0)
        print(f"  machine in the window {busy:.2f} of {ncpu} cores busy: "
              f"guard worker(s) {workers_cores:.2f}, "
              f"broker {'?' if broker is None else f'{broker:.2f}'}, this load generator {driver:.2f}, "
              f"everything else {others:.2f}")
    ends = [w.at(w_end) for w in workers]
    if all(ends):
        rec = sum(e["processed"].get("record", 0) for e in ends)  # type: ignore[index]
        ing = sum(e["processed"].get("ingest", 0) for e in ends)  # type: ignore[index]
        print(f"  backlog at end of input: ingest {max(0, res.deliveries - ing):,} deliveries, "
              f"record {max(0, res.events - rec):,} events; "
              + (f"caught up {run['drained'] - run['drive_ended']:.1f}s after the last send (progress lines "
                 f"are 1 s apart)" if run["caught_up"] else
                 f"NOT caught up {args.drain_timeout:.0f}s after the last send"))
    for i, w in enumerate(workers):
        if not w.stats:
            continue
        per_stage = ", ".join(f"{s} {int(c)} x {1000 * total / c:.0f} ms" for s, (c, total)
                              in w.stats.get("batches", {}).items() if c)
        print(f"  worker {i}: batches (count x mean) {per_stage}; processed {w.stats.get('processed')}; "
              f"peak RSS {w.stats.get('maxrss_mb', 0):.0f} MB; log {w.log}")
        gcs, st = w.stats.get("gc", {}), w.stats.get("stalls", {})
        if gcs and st:
            print(f"    event loop blocked (10 ms probe): p50 {st['p50'] * 1000:.0f} ms, "
                  f"p99 {st['p99'] * 1000:.0f} ms, max {st['max'] * 1000:.0f} ms; "
                  f"GC {gcs['collections']} collections {gcs['seconds']:.2f}s, "
                  f"{gcs['gen2']} full {gcs['gen2_seconds']:.2f}s, longest pause {gcs['max'] * 1000:.0f} ms "
                  f"(whole run incl. drain)")


async def main_async(args: argparse.Namespace) -> None:
    from app.broker.embedded import start_embedded

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = start_embedded(log_path="/tmp/crm-guard-bench-latency-tansu.log")  # noqa: S108
        bootstrap = broker.bootstrap
        args.broker_pid = broker.process.pid
        from app.cli_run import EMBEDDED_FETCH_WAIT_MS  # as `crm-guard run` does on tansu; workers inherit it
        os.environ.setdefault("CRM_GUARD_FETCH_MAX_WAIT_MS", str(EMBEDDED_FETCH_WAIT_MS))
    try:
        print(f"broker: {bootstrap} ({'embedded tansu' if broker else 'given'}); cpus: {os.cpu_count()}; "
              f"python {sys.version.split()[0]}; code {code_version()}")
        experiment = (f"EXPERIMENT gc.freeze() every {args.worker_gc_freeze}s in the worker, "
                      if args.worker_gc_freeze else "")
        print(f"config: rate {args.rate} events/s, {args.batch} notifications per delivery "
              f"({args.rate / args.batch:.0f} deliveries/s), warm-up {args.warmup}s, "
              f"measured {args.duration}s, {args.faults_per_s} faults/s (alternating unattributed / "
              f"denied_field), partitions {args.partitions}, "
              f"guard producer idempotent={args.idempotent}, batch_max_records "
              f"{env_settings().batch_max_records}, guard workers {args.workers} "
              f"(stages {' | '.join(','.join(s) for s in worker_stage_sets(args))}), "
              f"{experiment}"
              f"hop breakdown={'on' if args.breakdown else 'off'}; "
              f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.cost:
            send_cost, read_cost = await client_costs(bootstrap)
            report_costs(stage_costs(args), send_cost, read_cost)
        every, slots, res = await baseline(bootstrap, args)
        print(f"\nbaseline: bare aiokafka produce -> consume, one topic, {args.partitions} partitions")
        print(f"  input achieved       {res.window_events / res.window_seconds:>9,.0f} events/s; "
              f"max behind schedule {res.max_behind * 1000:.0f} ms")
        print(f"  every delivery       {summary(every)}")
        print(f"  fault slots only     {summary(slots)}")
        run = await guard_run(bootstrap, args)
        report_guard(run, args)
        print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if broker:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("CRM_GUARD_BENCH_BOOTSTRAP"),
                        help="a running Kafka (default: start the embedded tansu)")
    parser.add_argument("--rate", type=float, default=5000, help="events/s (default 5000)")
    parser.add_argument("--duration", type=float, default=30, help="measured seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of traffic before the first fault")
    parser.add_argument("--faults-per-s", type=float, default=10)
    parser.add_argument("--batch", type=int, default=10, help="notifications per webhook delivery")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--drain-timeout", type=float, default=60)
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                        help="do not read crm.changes and guard.by-actor for the per-hop split")
    parser.add_argument("--idempotent", action=argparse.BooleanOptionalAction, default=None,
                        help="idempotent guard producer (default: on with --bootstrap, as `crm-guard run`)")
    parser.add_argument("--workers", type=int, default=1, help="guard worker processes (same group)")
    parser.add_argument("--broker-pid", type=int, help="pid of a given broker, to report its CPU use")
    parser.add_argument("--worker-gc-freeze", type=float, default=0, metavar="SECONDS",
                        help="experiment: gc.freeze() in the worker every SECONDS "
                             "(default off: the runtime as is)")
    parser.add_argument("--no-cost", dest="cost", action="store_false", help="skip the per-event cost model")
    parser.add_argument("--profile", metavar="FILE",
                        help="diagnosis: cProfile the worker into FILE.<n> (slows it down; "
                             "figures not comparable)")
    parser.add_argument("--worker-stages", nargs="+", metavar="LIST",
                        help="one comma-separated stage list per worker, e.g. ingest,record link,actor "
                             "(overrides --workers; default: every stage in every worker)")
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve-guard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--suffix", help=argparse.SUPPRESS)
    parser.add_argument("--fault-agents", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_stages:
        args.workers = len(args.worker_stages)
    if args.idempotent is None:
        args.idempotent = bool(args.bootstrap) and not args.serve_guard
    if args.serve_guard:
        asyncio.run(serve_guard(args))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
