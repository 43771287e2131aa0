"""The demo feeder: streams the bundled incident (app/demo/*.jsonl) into the raw topics in
accelerated event time, as the vendors would have delivered it, then reports what was caught."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mode import Service

from app.adapters import VENDORS, AdapterError, decode_line, normalize_with_errors
from app.config import Settings


def load_deliveries(demo_dir: Path) -> list[tuple[int, str, bytes]]:
    """(event time, vendor, raw payload) for every line of the demo files, in event-time order."""
    out: list[tuple[int, str, bytes]] = []
    for vendor in VENDORS:
        path = demo_dir / f"{vendor}.jsonl"
        if not path.exists():
            continue
        for raw in path.read_bytes().splitlines():
            if not raw.strip():
                continue
            try:
                events, _ = normalize_with_errors(decode_line(raw), vendor)
            except AdapterError:
                events = []
            when = min((e.occurred_at for e in events), default=0)
            out.append((when, vendor, raw))
    out.sort(key=lambda item: item[0])
    return out


class DemoFeeder(Service):
    """Produces the demo deliveries once the runtime is ready; optionally stops the worker after."""

    def __init__(self, settings: Settings, demo_dir: Path, speed: float, exit_when_done: bool, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.demo_dir = demo_dir
        self.speed = max(speed, 1.0)
        self.exit_when_done = exit_when_done
        self.runtime: Any = None
        self.review: Any = None
        self.failed = False

    def bind(self, runtime: Any, review: Any = None) -> None:
        self.runtime = runtime
        self.review = review

    async def on_start(self) -> None:
        self.add_future(self._feed())

    async def _feed(self) -> None:
        try:
            await self._feed_once()
        except Exception as exc:  # noqa: BLE001 - report and stop the demo
            self.failed = True
            print(f"demo feeder failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

    async def _feed_once(self) -> None:
        await self.runtime.ready.wait()
        deliveries = load_deliveries(self.demo_dir)
        if not deliveries:
            raise RuntimeError(f"no demo files in {self.demo_dir}")
        producer = self.runtime.producer
        topics = self.settings.topics
        first = deliveries[0][0]
        span_h = (deliveries[-1][0] - first) / 3_600_000
        print(f"demo: streaming {len(deliveries)} vendor deliveries ({span_h:.0f} h of CRM traffic) "
              f"at {self.speed:.0f}x", flush=True)
        started = asyncio.get_running_loop().time()
        futures = []
        for when, vendor, raw in deliveries:
            due = started + (when - first) / 1000 / self.speed
            delay = due - asyncio.get_running_loop().time()
            if delay > 0.005:
                await asyncio.sleep(delay)
            futures.append(await producer.send(topics.raw(vendor), value=raw))
        await asyncio.gather(*futures)
        await self._wait_drained()
        board = self.runtime.board
        opened = [a for a in board.alerts.values()]
        paused = sorted(board.paused)
        print(f"demo: done. {sum(self.runtime.processed().values())} messages processed, "
              f"{len(opened)} alerts, paused agents: {', '.join(paused) or 'none'}", flush=True)
        await self._propose(deliveries)
        print(f"demo: timeline and review pages at {self.settings.public_url}/ ; metrics at "
              f"{self.settings.public_url}/metrics", flush=True)
        if self.exit_when_done:
            os.kill(os.getpid(), signal.SIGTERM)

    async def _propose(self, deliveries: list[tuple[int, str, bytes]]) -> None:
        """After the incident, some agents propose instead of writing (through the agents' own
        client, app/client.py), and the gate routes each: applied, queued for review, rejected."""
        from app.client import ProposalProducer
        from app.runtime.kafka_client import client_kwargs

        sent: list[str] = []
        for agent, change, reason in demo_proposals(deliveries):
            async with ProposalProducer(self.settings.bootstrap_servers, agent, self.settings.topics.proposals,
                                        **client_kwargs(self.settings)) as client:
                sent.append(await client.propose(change, reason, evidence={"source": "demo"}, confidence=0.8))
        review = self.review
        if review is None or not sent:
            return
        deadline = asyncio.get_running_loop().time() + 20
        while any(review.store.get(pid) is None for pid in sent) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        records = [r for r in (review.store.get(pid) for pid in sent) if r is not None]
        outcome = {"applied by the gate": 0, "waiting for review": 0, "rejected by the gate": 0}
        for record in records:
            key = ("waiting for review" if record.status.value == "pending" else
                   "applied by the gate" if record.status.value == "approved" else "rejected by the gate")
            outcome[key] += 1
        print(f"demo: {len(records)} agent proposals: "
              + ", ".join(f"{n} {what}" for what, n in outcome.items() if n)
              + f" (review queue: {self.settings.public_url}/review)", flush=True)

    async def _wait_drained(self, quiet_s: float = 2.0) -> None:
        """Wait until no stage has processed anything for `quiet_s` seconds."""
        last = None
        quiet_since = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(0.25)
            now_counts = self.runtime.processed()
            now = asyncio.get_running_loop().time()
            if now_counts != last:
                last = now_counts
                quiet_since = now
            elif now - quiet_since >= quiet_s:
                return


DEMO_PROPOSALS: tuple[tuple[str, str, str, str, str], ...] = (
    # agent, HubSpot object, field, proposed value, the agent's reason
    ("enrich-agent", "contact", "jobtitle", "VP Marketing", "title on the company's team page"),
    ("enrich-agent", "contact", "city", "Boston", "office address on the company site"),
    ("hygiene-agent", "contact", "firstname", "Maria", "first name was all capitals"),
    ("pipeline-agent", "deal", "dealstage", "closedwon", "the customer signed the contract (e-mail of today)"),
    ("forecast-agent", "deal", "amount", "120000", "the quote in the latest e-mail"),
)


def demo_proposals(deliveries: list[tuple[int, str, bytes]]) -> list[tuple[str, dict[str, Any], str]]:
    """(agent, change, reason) for DEMO_PROPOSALS, on HubSpot records the incident created."""
    created: dict[str, list[str]] = {"contact": [], "deal": []}
    for _, vendor, raw in deliveries:
        if vendor != "hubspot":
            continue
        try:
            events, _ = normalize_with_errors(decode_line(raw), vendor)
        except AdapterError:
            continue
        for event in events:
            ids = created.get(event.source_object_type)
            if event.operation == "create" and ids is not None and event.record_id not in ids:
                ids.append(event.record_id)
    out = []
    for index, (agent, object_type, field, value, reason) in enumerate(DEMO_PROPOSALS):
        ids = created[object_type]
        if not ids:
            continue
        change = {"source": "hubspot", "object_type": object_type, "source_object_type": object_type,
                  "record_id": ids[index % len(ids)], "operation": "update",
                  "changes": [{"field": field, "new": value}]}
        out.append((agent, change, reason))
    return out
