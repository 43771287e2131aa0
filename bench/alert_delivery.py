"""Alert delivery benchmark: alerts/s delivered to a local sink and the latency the guard adds.

A local HTTP receiver (a separate process, answering 200 like a webhook receiver) records when
each delivery arrives. Measured in the same run:

1. bare:     an aiohttp POST loop with the same bodies and the same number of requests in flight
             (the ceiling: HTTP and the receiver, nothing else);
2. service:  DeliveryService (routing, delivery table writes, per-sink lane, payload building,
             HMAC signing, metrics) through the generic webhook sink;
3. latency:  alerts submitted one at a time at a steady rate, submit -> receiver arrival, p50/p99,
             for the service and for a bare POST of the same body.
With `--bootstrap HOST:PORT` (a running Kafka) step 2 also runs with the Kafka delivery table.

    python bench/alert_delivery.py [--alerts 5000] [--concurrency 4] [--bootstrap 127.0.0.1:9092]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from app.sinks.delivery import DeliveryService, delivery_metrics  # noqa: E402
from app.sinks.delivery_log import KafkaDeliveryLog, MemoryDeliveryLog  # noqa: E402
from app.sinks.routing import RoutingConfig  # noqa: E402
from app.sinks.webhook import DELIVERY_HEADER, WebhookSink  # noqa: E402
from detectors.alerts import Alert  # noqa: E402

PUBLIC = "http://127.0.0.1:6066"
HMAC_KEY = "bench-secret"
ROUTING = RoutingConfig.model_validate({"rules": [{"sinks": ["webhook"], "min_severity": "info"}]})


# ------------------------------------------------------------------------------------- receiver
def _receiver(port_queue: multiprocessing.Queue[int]) -> None:
    arrivals: dict[str, float] = {}

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        arrivals[request.headers.get(DELIVERY_HEADER, "")] = time.monotonic()
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        out = dict(arrivals)
        arrivals.clear()
        return web.json_response(out)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def alert(i: int, run: str) -> Alert:
    t0 = 1_767_225_600_000
    return Alert.model_validate(
        {
            "alert_id": f"{run}{i:08d}",
            "dedup_key": f"mass_overwrite:{run}{i:08d}",
            "kind": "mass_overwrite",
            "group": "utm_source",
            "severity": "critical",
            "actor_key": "enrich-bot",
            "actor_kind": "agent",
            "agent": "enrich-bot",
            "object_types": ["contact"],
            "sample_record_keys": [f"hubspot/contact/{1000 + k}" for k in range(5)],
            "count": 64,
            "records": 50,
            "first_event_at": t0,
            "last_event_at": t0 + 600_000,
            "detected_at": t0 + 60_000,
            "summary": "enrich-bot replaced utm_source on 50 contacts (google -> enriched)",
            "evidence_event_ids": [f"e{k}" for k in range(10)],
            "action": "paused",
            "version": 1,
            "details": {"field": "utm_source", "from": "google", "to": "enriched"},
        }
    )


async def fetch_arrivals(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/stats") as resp:
        return await resp.json()  # type: ignore[no-any-return]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----------------------------------------------------------------------------------------- runs
async def bare_burst(base: str, n: int, concurrency: int, sink: WebhookSink) -> float:
    bodies = [sink.request(alert(i, "bare"))[0] for i in range(n)]  # built up front: not timed
    ids = [f"mass_overwrite:bare{i:08d}:1" for i in range(n)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                async with session.post(
                    f"{base}/hook",
                    data=bodies[i],
                    headers={"Content-Type": "application/json", DELIVERY_HEADER: ids[i]},
                ) as r:
                    await r.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        arrived = await fetch_arrivals(session, base)
    assert len(arrived) == n, (len(arrived), n)
    return n / elapsed


async def service_burst(
    base: str, n: int, concurrency: int, store: object, run: str
) -> tuple[float, dict[str, float]]:
    registry = CollectorRegistry()
    sink = WebhookSink(f"{base}/hook", PUBLIC, secret=HMAC_KEY)
    service = DeliveryService(
        [sink],
        ROUTING,
        store,
        metrics=delivery_metrics(registry),  # type: ignore[arg-type]
        concurrency=concurrency,
    )
    alerts = [alert(i, run) for i in range(n)]
    async with service:
        started = time.perf_counter()
        submit_started = time.perf_counter()
        for chunk in range(0, n, 100):
            await service.submit_many(alerts[chunk : chunk + 100])
        submit_elapsed = time.perf_counter() - submit_started
        assert await service.drain(300)
        elapsed = time.perf_counter() - started
        async with aiohttp.ClientSession() as session:
            arrived = await fetch_arrivals(session, base)
    sent = registry.get_sample_value(
        "crm_guard_alert_deliveries_total", {"sink": "webhook", "outcome": "sent"}
    )
    assert len(arrived) == n and sent == n, (len(arrived), sent, n)
    return n / elapsed, {"submit_per_alert_us": submit_elapsed / n * 1e6}


async def latency(base: str, n: int, rate: float) -> tuple[list[float], list[float]]:
    """Paced single alerts: submit -> arrival for the service, send -> arrival for a bare POST."""
    sink = WebhookSink(f"{base}/hook", PUBLIC, secret=HMAC_KEY)
    service_sent: dict[str, float] = {}
    async with DeliveryService([sink], ROUTING, MemoryDeliveryLog(), concurrency=4) as service:
        for i in range(n):
            a = alert(i, "lat")
            service_sent[f"{a.dedup_key}:1"] = time.monotonic()
            await service.submit(a)
            await asyncio.sleep(1 / rate)
        await service.drain(60)
    bare_sent: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        arrived = await fetch_arrivals(session, base)
        svc = [(arrived[k] - t) * 1000 for k, t in service_sent.items()]
        for i in range(n):
            a = alert(i, "lbare")
            body, headers = sink.request(a)
            key = f"{a.dedup_key}:1"
            bare_sent[key] = time.monotonic()
            async with session.post(
                f"{base}/hook", data=body, headers={"Content-Type": "application/json", **headers}
            ) as r:
                await r.read()
            await asyncio.sleep(1 / rate)
        arrived = await fetch_arrivals(session, base)
    bare = [(arrived[k] - t) * 1000 for k, t in bare_sent.items()]
    return svc, bare


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight per sink")
    parser.add_argument("--latency-alerts", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0, help="alerts/s in the latency run")
    parser.add_argument("--bootstrap", help="also run with the Kafka delivery table on this broker")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[int] = ctx.Queue()
    receiver = ctx.Process(target=_receiver, args=(ports,), daemon=True)
    receiver.start()
    base = f"http://127.0.0.1:{ports.get(timeout=30)}"
    try:
        print(
            f"alert delivery benchmark: {args.alerts} alerts, {args.concurrency} in flight, "
            f"{os.cpu_count()} CPUs (receiver in its own process)"
        )
        sink = WebhookSink(f"{base}/hook", PUBLIC, secret=HMAC_KEY)
        await bare_burst(base, 500, args.concurrency, sink)  # warm-up
        bare = await bare_burst(base, args.alerts, args.concurrency, sink)
        svc, extra = await service_burst(base, args.alerts, args.concurrency, MemoryDeliveryLog(), "mem")
        print(f"  bare aiohttp POST loop          {bare:8.0f} requests/s")
        print(
            f"  DeliveryService, memory table   {svc:8.0f} alerts/s   ({svc / bare:.0%} of bare; "
            f"submit() {extra['submit_per_alert_us']:.0f} us/alert)"
        )
        if args.bootstrap:
            store = KafkaDeliveryLog(args.bootstrap, f"bench.deliveries.{uuid.uuid4().hex[:8]}")
            kfk, extra = await service_burst(base, args.alerts, args.concurrency, store, "kfk")
            print(
                f"  DeliveryService, Kafka table    {kfk:8.0f} alerts/s   ({kfk / bare:.0%} of bare; "
                f"submit() {extra['submit_per_alert_us']:.0f} us/alert)"
            )
        svc_lat, bare_lat = await latency(base, args.latency_alerts, args.rate)
        print(
            f"  latency at {args.rate:.0f} alerts/s, submit -> receiver (ms): "
            f"service p50 {statistics.median(svc_lat):.2f} p99 {pct(svc_lat, 0.99):.2f} | "
            f"bare POST p50 {statistics.median(bare_lat):.2f} p99 {pct(bare_lat, 0.99):.2f} | "
            f"added p50 {statistics.median(svc_lat) - statistics.median(bare_lat):.2f}"
        )
        print(
            json.dumps(
                {
                    "bare_rps": round(bare),
                    "service_memory_aps": round(svc),
                    "latency_ms": {
                        "service_p50": round(statistics.median(svc_lat), 3),
                        "service_p99": round(pct(svc_lat, 0.99), 3),
                        "bare_p50": round(statistics.median(bare_lat), 3),
                        "bare_p99": round(pct(bare_lat, 0.99), 3),
                    },
                }
            )
        )
    finally:
        receiver.kill()
        receiver.join()


if __name__ == "__main__":
    asyncio.run(main())
