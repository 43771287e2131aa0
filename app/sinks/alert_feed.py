"""guard.alerts into the delivery service: the outbox's first half.

`AlertFeed` reads every alert version with a consumer group and commits its offsets only after
`DeliveryService.submit_many` has made the batch durable in the delivery table; a fresh group
skips alerts older than `max_age_seconds`, so a new deployment does not replay weeks of history
into Slack. `build_delivery` assembles the service, its sinks, the Kafka table and the feed from
the runtime settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from app.sinks.base import Sink
from app.sinks.delivery import DeliveryMetrics, DeliveryService, delivery_metrics, wall_ms
from app.sinks.delivery_log import KafkaDeliveryLog
from app.sinks.routing import RoutingConfig
from detectors.alerts import Alert

log = logging.getLogger("crm_guard.delivery")


class _CatchUpOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    """After a rebalance, re-read the delivery table: keys of newly assigned alert partitions may
    have been written by the worker that owned them before."""

    def __init__(self, service: DeliveryService) -> None:
        self.service = service
        self.assignments = 0

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assignments += 1
        catch_up = getattr(self.service.log, "catch_up", None)
        if self.assignments > 1 and catch_up is not None:  # the first assignment follows start()'s read
            await catch_up()


class AlertFeed:
    """Reads `guard.alerts` with a consumer group into a DeliveryService, committing offsets only
    after `submit` has made the batch durable in the delivery table (the outbox hand-off).

    A fresh group starts at the earliest offset; alerts whose Kafka timestamp is older than
    `max_age_seconds` are not delivered (`stale`), so a new deployment does not replay weeks of
    history into Slack.
    """

    def __init__(
        self,
        service: DeliveryService,
        bootstrap: str,
        topic: str = "guard.alerts",
        group_id: str = "crm-guard-delivery",
        *,
        max_age_seconds: float = 3600.0,
        now_ms: Callable[[], int] = wall_ms,
        **kafka_kwargs: Any,
    ) -> None:
        self.service = service
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.max_age_seconds = max_age_seconds
        self.now_ms = now_ms
        kafka_kwargs.setdefault("fetch_max_wait_ms", 200)
        self.kafka_kwargs = kafka_kwargs
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.submitted = 0

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.kafka_kwargs,
        )
        await self._consumer.start()
        self._consumer.subscribe([self.topic], listener=_CatchUpOnAssign(self.service))
        self._task = asyncio.create_task(self._run(), name="alert-feed")

    async def wait_assigned(self, timeout: float = 30.0) -> bool:
        """Wait until the group has given this feed partitions (readiness); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._consumer is None or not self._consumer.assignment():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def _decode(self, record: Any) -> Alert | None:
        try:
            alert = Alert.model_validate_json(record.value)
        except (ValidationError, ValueError, TypeError):
            log.warning("guard.alerts offset %d: not an alert; skipped", record.offset)
            self.service._count("feed", "invalid")
            return None
        if record.timestamp and self.now_ms() - record.timestamp > self.max_age_seconds * 1000:
            self.service._count("feed", "stale")
            return None
        return alert

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            alerts = [a for records in batch.values() for r in records if (a := self._decode(r)) is not None]
            delay = 0.5
            while alerts:
                try:
                    await self.service.submit_many(alerts)
                    self.submitted += len(alerts)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # table unreachable: hold the offsets, try again
                    log.warning("alert feed: submit failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            if batch:
                await consumer.commit()


def sinks_from_settings(settings: Any) -> list[Sink]:
    """The sinks the settings configure (Slack URL, PagerDuty routing key, webhook URL)."""
    from app.sinks.pagerduty import PagerDutySink
    from app.sinks.slack import SlackSink
    from app.sinks.webhook import WebhookSink

    sinks: list[Sink] = []
    if settings.slack_webhook_url is not None:
        sinks.append(SlackSink(settings.slack_webhook_url.get_secret_value(), settings.public_url))
    if settings.pagerduty_routing_key is not None:
        sinks.append(
            PagerDutySink(
                settings.pagerduty_routing_key.get_secret_value(),
                settings.public_url,
                url=settings.pagerduty_url,
            )
        )
    if settings.webhook_url:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else None
        sinks.append(WebhookSink(settings.webhook_url, settings.public_url, secret=secret))
    return sinks


def build_delivery(
    settings: Any,
    routing: RoutingConfig | None = None,
    *,
    registry: CollectorRegistry | None = None,
    metrics: DeliveryMetrics | None = None,
    idempotent: bool = False,
    kafka_kwargs: Mapping[str, Any] | None = None,
    group_kwargs: Mapping[str, Any] | None = None,
) -> tuple[DeliveryService, AlertFeed]:
    """Service + feed from the runtime settings, with the Kafka delivery table. Start the service
    first, then the feed; stop in reverse order."""
    kw = dict(kafka_kwargs or {})
    store = KafkaDeliveryLog(
        settings.bootstrap_servers,
        settings.topics.deliveries,
        enable_idempotence=idempotent,
        replication_factor=settings.replication_factor,
        **kw,
    )
    service = DeliveryService(
        sinks_from_settings(settings),
        routing,
        store,
        metrics=metrics or (delivery_metrics(registry) if registry is not None else None),
    )
    feed = AlertFeed(
        service,
        settings.bootstrap_servers,
        settings.topics.alerts,
        group_id=f"{settings.group_id}-delivery",
        **kw,
        **dict(group_kwargs or {}),
    )
    return service, feed
