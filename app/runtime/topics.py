"""Creating the guard's topics on start, with partition counts and configs that fit their use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.config import Settings

log = logging.getLogger(__name__)

STAGES_WITH_STATE = ("record", "link", "actor")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compact: bool = False
    retention_ms: int | None = None


def changelog_topic(settings: Settings, stage: str) -> str:
    """The compacted changelog of a stage's state (co-partitioned with its input topic)."""
    return f"{settings.group_id}.{stage}-changelog"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the guard reads or writes."""
    t = settings.topics
    n = settings.partitions
    week = 7 * 86_400_000
    specs = [
        TopicSpec(t.raw_hubspot, n, retention_ms=week),
        TopicSpec(t.raw_salesforce, n, retention_ms=week),
        TopicSpec(t.raw_pipedrive, n, retention_ms=week),
        TopicSpec(t.changes, n, retention_ms=4 * week),
        TopicSpec(t.proposals, n),
        TopicSpec(t.approved, n),
        TopicSpec(t.alerts, n, retention_ms=4 * week),
        TopicSpec(t.pause, 1, compact=True),
        TopicSpec(t.feedback, n, retention_ms=4 * week),
        TopicSpec(t.deadletter, 1, retention_ms=4 * week),
        TopicSpec(t.by_actor, n, retention_ms=week),
        TopicSpec(t.by_link, n, retention_ms=week),
        TopicSpec(t.deliveries, 1, compact=True),
        TopicSpec(t.decisions, 1, compact=True),
        TopicSpec(t.timeline, n, retention_ms=13 * week),
    ]
    specs += [TopicSpec(changelog_topic(settings, s), n, compact=True) for s in STAGES_WITH_STATE]
    return specs


async def ensure_topics(settings: Settings, client_kwargs: dict[str, Any]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **client_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = []
        for spec in topic_specs(settings):
            if spec.name in existing:
                continue
            configs: dict[str, str] = {}
            if spec.compact:
                configs["cleanup.policy"] = "compact"
            if spec.retention_ms is not None:
                configs["retention.ms"] = str(spec.retention_ms)
            wanted.append(NewTopic(spec.name, spec.partitions, settings.replication_factor, topic_configs=configs))
        created = []
        for topic in wanted:  # one by one: an existing topic must not fail the others
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()
