"""Alert delivery: per-sink queues, retries, throttling, and an outbox so each version goes out once.

Flow. `guard.alerts` (the outbox's first half: every alert version, keyed by dedup key) is read by
`AlertFeed` (alert_feed.py), which hands alerts to `DeliveryService.submit` and commits its offsets
only after `submit` returns, i.e. after the delivery table (the second half, delivery_log.py)
durably says "pending". Each
sink has its own lane: a coalescing job per dedup key (a newer version replaces one not yet sent),
a timer heap and `concurrency` workers, so a sink that is down or slow delays nobody else, and the
caller only waits for the table write, never for HTTP.

Delivery table (`DeliveryLog`): key `"{sink}|{dedup_key}"`, value: the pending alert (if any),
its state (pending, sending, failed, uncertain, idle), the last delivered version and what it
said (severity, action, status, when: the throttle needs it). Memory or Kafka (compacted
`guard.deliveries`, rebuilt by reading the topic to its end on start).

Once. A version at or below the delivered version is never sent again (`duplicate`). Each attempt
writes "sending" (and waits for the broker) before the HTTP call, and "sent" after. A crash in
between leaves "sending": on restart PagerDuty resends (its dedup_key makes it one alert; the
same holds for a webhook receiver that drops repeated X-CRM-Guard-Delivery ids if configured
`resend_uncertain=True`), Slack and the webhook by default count it as delivered (`uncertain`).
The residual window, honestly: a crash after "sending" is durable but before the vendor received
the request loses that one version for Slack/webhook (a later version of the alert still goes
out); a crash after the vendor answered but before "sent" is durable never duplicates.

Retries: exponential backoff with jitter (`RetryPolicy`), at least Retry-After on 429/5xx, give up
after `max_attempts` or `max_age_seconds` (outcome `failed`). 4xx other than 408/429 fail at once.
Slack follow-ups of one dedup key: at most one per `throttle_seconds` (10 min) unless severity
rises, the agent is paused or the alert resolves; held-back versions coalesce into the latest.

Metrics (`delivery_metrics(registry)`): crm_guard_alert_deliveries_total{sink,outcome},
crm_guard_alert_delivery_seconds{sink} (from the version becoming due to the vendor's 2xx,
retries included), crm_guard_alert_delivery_pending{sink}.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from app.sinks.base import DeliveryError, Sink
from app.sinks.delivery_log import DeliveryLog, DeliveryRecord, MemoryDeliveryLog
from app.sinks.routing import RoutingConfig
from detectors.alerts import Alert
from detectors.base import Severity

log = logging.getLogger("crm_guard.delivery")

OUTCOMES = (
    "sent",
    "retry",
    "failed",
    "duplicate",
    "throttled",
    "coalesced",
    "uncertain",
    "skipped",
    "stale",
    "invalid",
)


def wall_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------- metrics
@dataclass
class DeliveryMetrics:
    """The delivery metrics; children cached per (sink, outcome)."""

    deliveries: Counter
    seconds: Histogram
    pending: Gauge
    _children: dict[tuple[str, str], Any] = field(default_factory=dict)

    def count(self, sink: str, outcome: str, n: int = 1) -> None:
        child = self._children.get((sink, outcome))
        if child is None:
            child = self._children[(sink, outcome)] = self.deliveries.labels(sink, outcome)
        child.inc(n)

    def observe(self, sink: str, seconds: float) -> None:
        child = self._children.get((sink, "_seconds"))
        if child is None:
            child = self._children[(sink, "_seconds")] = self.seconds.labels(sink)
        child.observe(seconds)


def delivery_metrics(registry: CollectorRegistry | None = None) -> DeliveryMetrics:
    """Declare the delivery metrics on `registry` (a fresh one when None)."""
    r = registry if registry is not None else CollectorRegistry()
    return DeliveryMetrics(
        deliveries=Counter(
            "crm_guard_alert_deliveries",
            "Alert deliveries by sink and outcome "
            "(sent, retry, failed, duplicate, throttled, coalesced, uncertain, skipped, stale, invalid)",
            ["sink", "outcome"],
            registry=r,
        ),
        seconds=Histogram(
            "crm_guard_alert_delivery_seconds",
            "Seconds from an alert version becoming due to the sink's 2xx, retries included",
            ["sink"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
        ),
        pending=Gauge(
            "crm_guard_alert_delivery_pending", "Alert versions waiting for a sink", ["sink"], registry=r
        ),
    )


# ----------------------------------------------------------------------------------------- retry
@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; Retry-After wins when the vendor gives one."""

    max_attempts: int = 8
    max_age_seconds: float = 3600.0
    base_delay: float = 1.0
    max_delay: float = 300.0
    max_retry_after: float = 3600.0
    jitter: float = 0.5

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: Callable[[], float] = random.random
    ) -> float:
        """Seconds before attempt `attempt + 1`: base * 2^(attempt-1), capped, the last `jitter`
        fraction randomised; never less than Retry-After (plus up to 10 % so clients spread)."""
        if retry_after is not None:
            wait = min(max(0.0, retry_after), self.max_retry_after)
            return wait + wait * 0.1 * rng()
        d = min(self.max_delay, self.base_delay * float(2 ** max(0, attempt - 1)))
        return d * (1 - self.jitter) + d * self.jitter * rng()


# ------------------------------------------------------------------------------------- the lanes
@dataclass
class _Job:
    not_before: float = 0.0
    reason: str = "new"  # new | backoff | throttle
    queued: bool = False
    in_flight: bool = False
    throttled_version: int = 0


class _Lane:
    """One sink's queue: a job per dedup key with work to do, a timer heap, N workers."""

    def __init__(self, service: DeliveryService, sink: Sink, concurrency: int) -> None:
        self.service = service
        self.sink = sink
        self.concurrency = concurrency
        self.jobs: dict[str, _Job] = {}
        self.ready: asyncio.Queue[str] = asyncio.Queue()
        self.timers: list[tuple[float, int, str]] = []
        self.counter = 0
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        name = self.sink.name
        self.tasks = [asyncio.create_task(self._timer_loop(), name=f"delivery-{name}-timers")]
        self.tasks += [
            asyncio.create_task(self._worker(), name=f"delivery-{name}-{i}") for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        # gather, not `await t` under suppress(CancelledError): that would also swallow a cancel of
        # the caller itself
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    def offer(self, key: str) -> None:
        """There is (maybe new) work for `key`: run it now, unless it waits for a backoff."""
        now = self.service.clock()
        job = self.jobs.get(key)
        if job is None:
            job = self.jobs[key] = _Job(not_before=now)
            self.idle.clear()
            self._gauge()
        if job.in_flight or job.queued:
            return  # the worker re-reads the record when it finishes
        if job.reason == "backoff" and job.not_before > now:
            return  # the sink is failing: a new version does not make it retry sooner
        job.reason, job.not_before = "new", now  # a throttled job re-checks: the new version may escalate
        self._enqueue(key, job)

    def _enqueue(self, key: str, job: _Job) -> None:
        if job.not_before <= self.service.clock():
            job.queued = True
            self.ready.put_nowait(key)
        else:
            self.counter += 1
            heapq.heappush(self.timers, (job.not_before, self.counter, key))
            self.wake.set()

    async def _timer_loop(self) -> None:
        while True:
            now = self.service.clock()
            while self.timers and self.timers[0][0] <= now:
                _, _, key = heapq.heappop(self.timers)
                job = self.jobs.get(key)
                if job and not job.queued and not job.in_flight and job.not_before <= now:
                    job.queued = True
                    self.ready.put_nowait(key)
            timeout = self.timers[0][0] - now if self.timers else None
            self.wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as the
            # event is set, and stop() then waits for this loop forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()

    async def _worker(self) -> None:
        while True:
            key = await self.ready.get()
            job = self.jobs.get(key)
            if job is None or job.in_flight:
                continue
            job.queued = False
            job.in_flight = True
            try:
                nxt, reason = await self.service._process(self, key, job)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad record must not kill the lane
                log.exception("delivery to %s failed unexpectedly for %s", self.sink.name, key)
                nxt, reason = self.service.clock() + 5.0, "backoff"
            finally:
                job.in_flight = False
            if nxt is None:
                rec = self.service._record(self.sink.name, key)
                if rec.pending is not None and rec.state == "pending":
                    job.reason, job.not_before = "new", self.service.clock()
                    self._enqueue(key, job)
                else:
                    self.jobs.pop(key, None)
            else:
                job.reason, job.not_before = reason, nxt
                self._enqueue(key, job)
            self._gauge()
            if not self.jobs:
                self.idle.set()

    def _gauge(self) -> None:
        if self.service.metrics is not None:
            self.service.metrics.pending.labels(self.sink.name).set(len(self.jobs))


# ----------------------------------------------------------------------------------- the service
class DeliveryService:
    """Delivers alert versions to the sinks their routing names; see the module docstring.

    `submit(alert)` returns once the delivery table durably holds the version for every routed
    sink (or knows it as delivered); sending happens in the background.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        routing: RoutingConfig | None = None,
        log_store: DeliveryLog | None = None,
        *,
        retry: RetryPolicy | None = None,
        metrics: DeliveryMetrics | None = None,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
        now_ms: Callable[[], int] = wall_ms,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.sinks = {s.name: s for s in sinks}
        if len(self.sinks) != len(sinks):
            raise ValueError("sink names must be unique")
        self.routing = routing or RoutingConfig()
        self.log = log_store if log_store is not None else MemoryDeliveryLog()
        self.retry = retry or RetryPolicy()
        self.metrics = metrics
        self.session = session
        self._own_session = session is None
        self.concurrency = concurrency
        self.clock = clock
        self.now_ms = now_ms
        self.rng = rng
        self.lanes: dict[str, _Lane] = {}
        self.started = False
        self._unrouted_warned: set[str] = set()

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the delivery table, open the HTTP session, start the lanes, resume unfinished work."""
        await self.log.start()
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        if not self.sinks:
            log.info("no alert sinks configured (slack_webhook_url, pagerduty_routing_key, webhook_url): "
                     "alerts go to guard.alerts, /api/alerts and the console only")
        for name, sink in self.sinks.items():
            lane = self.lanes[name] = _Lane(self, sink, self.concurrency)
            lane.start()
        await self._recover()
        self.started = True

    async def stop(self) -> None:
        """Stop sending (unfinished versions stay pending in the table for the next start)."""
        for lane in self.lanes.values():
            await lane.stop()
        self.lanes = {}
        if self.session is not None and self._own_session:
            await self.session.close()
            self.session = None
        await self.log.stop()
        self.started = False

    async def __aenter__(self) -> DeliveryService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no lane has work (tests, benchmarks, graceful shutdown). False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(lane.idle.wait() for lane in self.lanes.values()))
        except TimeoutError:
            return False
        return all(lane.idle.is_set() for lane in self.lanes.values())

    def backlog(self) -> dict[str, int]:
        """Dedup keys with work waiting, per sink."""
        return {name: len(lane.jobs) for name, lane in self.lanes.items()}

    # submit ----------------------------------------------------------------------------------
    def _count(self, sink: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count(sink, outcome)

    def _record(self, sink: str, dedup_key: str) -> DeliveryRecord:
        return DeliveryRecord.from_json(self.log.get(f"{sink}|{dedup_key}"))

    async def submit(self, alert: Alert) -> list[str]:
        """Queue this version for its routed sinks; returns the sinks it was queued for."""
        return await self.submit_many([alert])

    async def submit_many(self, alerts: Iterable[Alert]) -> list[str]:
        """Queue several versions with one wait for the table writes."""
        if not self.started:
            raise RuntimeError("DeliveryService.submit before start()")
        writes: list[tuple[str, str, Any]] = []
        for alert in alerts:
            for name in self.routing.sinks_for(alert):
                sink = self.sinks.get(name)
                if sink is None:
                    if self.sinks and name not in self._unrouted_warned:  # none at all: said at start
                        self._unrouted_warned.add(name)
                        log.warning("routing names sink %r, which is not configured: skipped", name)
                    continue
                key = f"{name}|{alert.dedup_key}"
                rec = DeliveryRecord.from_json(self.log.get(key))
                if alert.version <= max(rec.sent_version, rec.failed_version, rec.pending_version):
                    self._count(name, "duplicate")
                    continue
                if not sink.wants(alert, rec.sent_version > 0 or rec.state in ("sending", "pending")):
                    self._count(name, "skipped")
                    continue
                if rec.pending is not None and rec.state == "pending":
                    self._count(name, "coalesced")  # the older version will never be sent
                rec.pending = alert.model_dump(mode="json")
                if rec.state != "sending":
                    rec.state = "pending"
                rec.attempts, rec.first_try_ms, rec.queued_ms = 0, None, self.now_ms()
                writes.append((name, alert.dedup_key, self.log.put(key, rec.to_json())))
        results = await asyncio.gather(*(w[2] for w in writes), return_exceptions=True)
        queued, error = [], None
        for (name, dedup, _), result in zip(writes, results, strict=True):
            if isinstance(result, BaseException):
                error = error or result
                continue
            self.lanes[name].offer(dedup)
            queued.append(name)
        if error is not None:
            raise error
        return queued

    # recovery --------------------------------------------------------------------------------
    async def _recover(self) -> None:
        for key, raw in self.log.items():
            name, _, dedup = key.partition("|")
            sink = self.sinks.get(name)
            if sink is None:
                continue
            rec = DeliveryRecord.from_json(raw)
            if rec.state == "sending" and rec.pending is not None:
                if sink.resend_uncertain:
                    rec.state = "pending"
                    await self.log.put(key, rec.to_json())
                    self.lanes[name].offer(dedup)
                else:
                    log.warning(
                        "%s: version %d of %s may or may not have been delivered before a crash; "
                        "counted as delivered (not resent)",
                        name,
                        rec.pending_version,
                        dedup,
                    )
                    self._count(name, "uncertain")
                    self._mark_sent(rec, rec.pending, rec.first_try_ms or self.now_ms())
                    rec.state = "uncertain"
                    await self.log.put(key, rec.to_json())
            elif rec.state == "pending" and rec.pending is not None:
                self.lanes[name].offer(dedup)

    @staticmethod
    def _mark_sent(rec: DeliveryRecord, alert_json: Mapping[str, Any], at_ms: int) -> None:
        version = int(alert_json["version"])
        rec.sent_version = max(rec.sent_version, version)
        rec.sent_ms = at_ms
        rec.sent_severity = alert_json.get("severity")
        rec.sent_action = alert_json.get("action")
        rec.sent_status = alert_json.get("status")
        if rec.pending is not None and rec.pending_version <= version:
            rec.pending, rec.attempts, rec.first_try_ms, rec.error = None, 0, None, None
            rec.state = "idle"
        else:
            rec.state = "pending" if rec.pending is not None else "idle"

    # one attempt -----------------------------------------------------------------------------
    @staticmethod
    def _escalates(alert: Mapping[str, Any], rec: DeliveryRecord) -> bool:
        """A follow-up that must not wait for the throttle."""
        if alert.get("status") == "resolved" and rec.sent_status != "resolved":
            return True
        if alert.get("action") == "paused" and rec.sent_action != "paused":
            return True
        try:
            return Severity(alert["severity"]).rank > Severity(rec.sent_severity or "info").rank
        except ValueError:
            return False

    async def _process(self, lane: _Lane, dedup: str, job: _Job) -> tuple[float | None, str]:
        """Try to deliver the pending version of `dedup` once; returns when to look again."""
        sink = lane.sink
        key = f"{sink.name}|{dedup}"
        rec = DeliveryRecord.from_json(self.log.get(key))
        if rec.pending is None or rec.state not in ("pending", "sending"):
            return None, ""
        alert_json = rec.pending
        version = rec.pending_version
        if version <= rec.sent_version:
            rec.pending, rec.state = None, "idle"
            await self.log.put(key, rec.to_json())
            self._count(sink.name, "duplicate")
            return None, ""
        now_w = self.now_ms()
        due_w = rec.queued_ms or now_w
        if sink.throttle_seconds > 0 and rec.sent_ms is not None and not self._escalates(alert_json, rec):
            until = rec.sent_ms + int(sink.throttle_seconds * 1000)
            if now_w < until:
                if job.throttled_version != version:
                    job.throttled_version = version
                    self._count(sink.name, "throttled")
                return self.clock() + (until - now_w) / 1000, "throttle"
            due_w = max(due_w, until)
        rec.attempts += 1
        rec.first_try_ms = rec.first_try_ms or now_w
        rec.state = "sending"
        try:
            await self.log.put(key, rec.to_json())
        except Exception as exc:  # the table is unreachable: sending now could send twice later
            # the local view says "sending", which the next attempt overwrites; nothing was sent
            log.warning("delivery table write failed for %s (%s); retrying later", key, type(exc).__name__)
            self._count(sink.name, "retry")
            return self.clock() + self.retry.delay(rec.attempts, None, self.rng), "backoff"
        try:
            alert = Alert.model_validate(alert_json)
            await sink.send(alert, self.session)  # type: ignore[arg-type]
        except (DeliveryError, ValidationError) as exc:
            return await self._failed(sink, key, version, exc, rec.attempts, rec.first_try_ms)
        now_w = self.now_ms()
        if self.metrics is not None:
            self.metrics.observe(sink.name, max(0.0, (now_w - due_w) / 1000))
        self._count(sink.name, "sent")
        rec = DeliveryRecord.from_json(self.log.get(key))
        self._mark_sent(rec, alert_json, now_w)
        try:
            await self.log.put(key, rec.to_json())
        except Exception as exc:
            log.error(
                "delivered %s v%d but could not record it (%s): a restart will treat it as uncertain",
                key,
                version,
                type(exc).__name__,
            )
        return None, ""

    async def _failed(
        self, sink: Sink, key: str, version: int, exc: Exception, attempts: int, first_try_ms: int
    ) -> tuple[float | None, str]:
        retryable = isinstance(exc, DeliveryError) and exc.retryable
        retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
        rec = DeliveryRecord.from_json(self.log.get(key))
        age = (self.now_ms() - first_try_ms) / 1000
        give_up = not retryable or attempts >= self.retry.max_attempts or age >= self.retry.max_age_seconds
        superseded = rec.pending_version > version
        rec.error = str(exc)[:300]
        if give_up and not superseded:
            log.warning(
                "%s: giving up on %s v%d after %d attempts: %s",
                sink.name,
                key.partition("|")[2],
                version,
                attempts,
                rec.error,
            )
            rec.state, rec.failed_version, rec.pending = "failed", version, None
            rec.attempts, rec.first_try_ms = 0, None
            await self.log.put(key, rec.to_json())
            self._count(sink.name, "failed")
            return None, ""
        if give_up and superseded and not retryable:
            self._count(sink.name, "failed")
            rec.state = "pending"
            await self.log.put(key, rec.to_json())
            return self.clock(), "new"
        rec.state = "pending"
        await self.log.put(key, rec.to_json())
        self._count(sink.name, "retry")
        return self.clock() + self.retry.delay(max(1, attempts), retry_after, self.rng), "backoff"
