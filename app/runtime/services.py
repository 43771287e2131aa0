"""Services that run beside the stages in every worker: the timeline store and the review queue."""

from __future__ import annotations

import asyncio
from typing import Any

from mode import Service

from app.config import Settings
from app.pause.publisher import PauseTopicFollower
from app.pause.signing import PauseVerifier
from app.runtime.kafka_client import client_kwargs, group_kwargs
from app.sinks.alert_feed import build_delivery
from app.timeline.log import KafkaTimelineLog
from app.timeline.store import TimelineStore


class TimelineService(Service):
    """Rebuilds the timeline store from guard.timeline on start, then follows the topic.

    The record stage writes change rows and the actor stage writes findings to the topic; every
    worker reads all of it, so any worker's web page shows every record.
    """

    def __init__(self, settings: Settings, store: TimelineStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeline_log = KafkaTimelineLog.from_settings(settings)
        self.store = store
        self._stop = asyncio.Event()

    async def on_start(self) -> None:
        await self.timeline_log.start()
        await self.timeline_log.rebuild(self.store)
        self.add_future(self.timeline_log.follow(self.store, self._stop))

    async def on_stop(self) -> None:
        self._stop.set()
        await self.timeline_log.stop()


class DeliveryRunner(Service):
    """Alert delivery: guard.alerts -> Slack, PagerDuty, webhook, through the delivery table."""

    def __init__(self, settings: Settings, registry: Any, idempotent: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delivery, self.feed = build_delivery(settings, settings.routing, registry=registry, idempotent=idempotent,
                                                  kafka_kwargs=client_kwargs(settings), group_kwargs=group_kwargs(settings))

    async def on_start(self) -> None:
        await self.delivery.start()
        await self.feed.start()

    async def on_stop(self) -> None:
        await self.feed.stop()
        await self.delivery.stop()


class PauseStateService(Service):
    """Follows guard.pause: when an operator resumes an agent (CLI or API), the actor stage may
    pause it again on new evidence, and the board and metrics show it active; an old or replayed
    message written after an agent's current state is answered with the current state again
    (`republish`, see PauseTopicFollower)."""

    def __init__(self, settings: Settings, key_id: str, public_key: Any, on_state: Any,
                 republish: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.follower = PauseTopicFollower(
            settings.bootstrap_servers, settings.topics.pause, PauseVerifier({key_id: public_key}),
            on_state=on_state, republish=republish, **client_kwargs(settings),
        )

    async def on_start(self) -> None:
        await self.follower.start()

    async def on_stop(self) -> None:
        await self.follower.stop()
