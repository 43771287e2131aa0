"""The actor stage handles one by-actor message's items in event-time order: a record-stage batch
lists them partition after partition, and in a backlog that is hours of one partition before the
next one's. Driven through the runtime's own ActorStageRunner (no broker needed for one message)."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from app.runtime import codec
from app.runtime.stage import Emit
from app.runtime.stages import ActorStageRunner
from app.runtime.store import PartitionState, changelog_key
from detectors.base import Observation
from detectors.events import ActorKind
from detectors.pipeline import ActorStage
from detectors.registry import default_detectors
from tests.unit.helpers_events import M, agents_policy, event


def actor_runner() -> ActorStageRunner:
    policy = agents_policy("enricher")
    detectors = default_detectors(policy)
    runner = ActorStageRunner(
        stage=ActorStage(policy, detectors), alerts_topic="alerts", feedback_topic="fb", timeline_topic=None,
        encode_pause=lambda pause: ("pause", pause.agent.encode(), b"{}"), bootstrap="unused", producer=None,
        deadletter_topic="dl", client_kwargs={}, group_id="test", topics=["by_actor"], changelog_topic=None,
    )
    runner.partitions[0] = PartitionState(runner.state_names())
    return runner


def message(observations: list[Observation]) -> Any:
    value = orjson.dumps([codec.actor_input(obs=o) for o in observations])
    return ConsumerRecord("by_actor", 0, 0, 0, 0, b"enricher", value, None, 8, len(value), [])


def state_after(observations: list[Observation]) -> dict[str, Any]:
    runner = actor_runner()
    runner.handle(message(observations), runner.partitions[0], Emit())
    assert runner.observations == len(observations)
    return {name: tracked.data for name, tracked in runner.partitions[0].items()}


def test_a_message_is_handled_in_event_time_order() -> None:
    # an agent's hour, a change a minute, as two record partitions deliver it in one batch
    changes = [Observation(event=event(f"r{i}", {"jobtitle": f"t{i}"}, at=i * M)) for i in range(60)]
    by_partition = [o for i, o in enumerate(changes) if i % 2 == 0] + [o for i, o in enumerate(changes) if i % 2 == 1]
    in_order = state_after(changes)
    assert state_after(by_partition) == in_order
    # e.g. the last 5-minute window holds its own changes, not every odd minute of the hour
    assert sum(w["n"] for w in in_order["activity_anomaly"]["enricher"]["o"]) <= 5



def test_a_batch_that_moves_event_time_on_closes_quiet_agents_windows() -> None:
    """Another actor's changes in the same partition take event time past the agent's window:
    after_batch closes it (produced with the batch) and marks the entry for the changelog."""
    runner = actor_runner()
    state = runner.partitions[0]
    agent_change = Observation(event=event("r1", {"jobtitle": "CTO"}, at=M))
    human_change = Observation(event=event("r2", {"city": "Oslo"}, at=20 * M, by="rep", kind=ActorKind.HUMAN))
    runner.handle(message([agent_change]), state, Emit())
    runner.after_batch(Emit())
    state.drain_changes()
    detector = next(d for d in runner.stage.detectors if d.name == "activity_anomaly")
    assert detector.learned("enricher") == 0
    value = orjson.dumps([codec.actor_input(obs=human_change)])
    runner.handle(ConsumerRecord("by_actor", 0, 1, 0, 0, b"rep", value, None, 3, len(value), []), state, Emit())
    runner.after_batch(Emit())
    assert detector.learned("enricher") == 1  # closed without another change of its own
    assert state["activity_anomaly"].data["enricher"]["o"] == []
    assert changelog_key("activity_anomaly", "enricher") in {k for k, _ in state.drain_changes()}
