"""Reading crm.proposals into the review service, and the mode.Service the worker runs it under.

`ProposalConsumer` is a consumer group (`<group_id>.proposals`) over crm.proposals: each batch's
proposals are submitted in order, and offsets are committed only after every submit returned
(each submit has already written its decision to guard.decisions and produced its effects). A
replayed proposal is a no-op (the store knows its proposal_id). A message that is not a valid
proposal goes to guard.deadletter with the reason and its origin in headers, like the stages' dead
letters, and the consumer goes on. Any other error (the broker away) stops the consumer and, under
ReviewServices, crashes the service so the worker restarts from the last commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from mode import Service

from app.review.service import BadRequest, ReviewService
from app.runtime.kafka_client import client_kwargs, group_kwargs

log = logging.getLogger(__name__)


class ProposalConsumer:
    """crm.proposals -> ReviewService.submit, at least once, committed per batch."""

    def __init__(self, service: ReviewService, group_id: str | None = None, max_records: int = 500,
                 on_error: Callable[[BaseException], Awaitable[Any]] | None = None) -> None:
        self.service = service
        self.on_error = on_error
        self.error: BaseException | None = None
        settings = service.settings
        self.group_id = group_id or f"{settings.group_id}.proposals"
        self.max_records = max_records
        self.consumer: AIOKafkaConsumer | None = None
        self.submitted = 0
        self.deadlettered = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.service.settings
        self.consumer = AIOKafkaConsumer(
            settings.topics.proposals, bootstrap_servers=settings.bootstrap_servers, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", **client_kwargs(settings), **group_kwargs(settings),
        )
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
            self._task = None
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one policy: stop and let the worker restart from the commit
            log.exception("proposal consumer stopped")
            self.error = exc
            if self.on_error is not None:
                await self.on_error(exc)

    async def _loop(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
            if not batch:
                continue
            offsets = {}
            for tp, records in batch.items():
                for record in records:
                    await self._handle(record)
                offsets[tp] = records[-1].offset + 1
            await consumer.commit(offsets)

    async def _handle(self, record: ConsumerRecord) -> None:
        if record.value is None:
            await self._deadletter(record, "empty_value", "a proposal message has no value")
            return
        try:
            await self.service.submit(record.value)
            self.submitted += 1
        except BadRequest as exc:
            await self._deadletter(record, "invalid_proposal", str(exc))

    async def _deadletter(self, record: ConsumerRecord, reason: str, message: str) -> None:
        producer = self.service.producer
        assert producer is not None
        headers = [
            ("reason", reason.encode()),
            ("error", message[:1000].encode()),
            ("origin_topic", record.topic.encode()),
            ("origin_partition", str(record.partition).encode()),
            ("origin_offset", str(record.offset).encode()),
            ("stage", b"review"),
        ]
        await producer.send_and_wait(self.service.settings.topics.deadletter, key=record.key,
                                     value=record.value, headers=headers)
        self.deadlettered += 1
        log.warning("proposal at %s[%d]@%d dead-lettered: %s", record.topic, record.partition, record.offset, reason)


class ReviewServices(Service):
    """The review service and the proposal consumer as one mode.Service (for GuardRuntime.extra_services)."""

    def __init__(self, service: ReviewService, consume_proposals: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.review = service
        self.consumer = ProposalConsumer(service, on_error=self.crash) if consume_proposals else None

    async def on_start(self) -> None:
        await self.review.start()
        if self.consumer is not None:
            await self.consumer.start()

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.review.stop()
