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


def records_of(groups: list[list[Observation]]) -> list[Any]:
    out = []
    for offset, group in enumerate(groups):
        value = orjson.dumps([codec.actor_input(obs=o) for o in group])
        out.append(ConsumerRecord("by_actor", 0, offset, 0, 0, b"enricher", value, None, 8, len(value), []))
    return out


def test_a_batch_merges_its_messages_in_event_time_order() -> None:
    """Two messages of one batch (two record partitions' halves of an hour) give the state that
    the hour in order gives, as one message would."""
    changes = [Observation(event=event(f"r{i}", {"jobtitle": f"t{i}"}, at=i * M)) for i in range(60)]
    runner = actor_runner()
    runner.handle_records(records_of([changes[1::2], changes[0::2]]), runner.partitions[0], Emit())
    assert runner.observations == 60
    assert {name: t.data for name, t in runner.partitions[0].items()} == state_after(changes)


def test_a_bad_message_in_a_batch_is_dead_lettered_and_the_others_are_handled() -> None:
    runner = actor_runner()
    good = [Observation(event=event(f"r{i}", {"jobtitle": f"t{i}"}, at=i * M)) for i in range(4)]
    records = records_of([good[:2], good[2:]])
    poison = ConsumerRecord("by_actor", 0, 7, 0, 0, b"enricher", b"{not json", None, 8, 9, [])
    emit = Emit()
    runner.handle_records([records[0], poison, records[1]], runner.partitions[0], emit)
    assert runner.observations == 4
    dead = [r for r in emit.records if r[0] == "dl"]
    assert len(dead) == 1 and dead[0][2] == b"{not json"
    assert dict(dead[0][3])["reason"] == b"invalid_actor_input" and dict(dead[0][3])["origin_offset"] == b"7"


def test_an_item_that_raises_dead_letters_its_message_and_skips_the_rest_of_it() -> None:
    runner = actor_runner()
    first = [Observation(event=event(f"a{i}", {"jobtitle": "x"}, at=i * M)) for i in range(3)]
    second = [Observation(event=event(f"b{i}", {"jobtitle": "y"}, at=i * M + 1)) for i in range(3)]
    seen: list[str] = []
    process = runner.stage.process_observation

    def failing(obs: Observation, state: Any) -> Any:
        if obs.event.record_id == "b1":
            raise RuntimeError("detector bug")
        seen.append(obs.event.record_id)
        return process(obs, state)

    runner.stage.process_observation = failing  # type: ignore[method-assign]
    emit = Emit()
    runner.handle_records(records_of([first, second]), runner.partitions[0], emit)
    assert seen == ["a0", "b0", "a1", "a2"]  # merged by event time; b2 skipped after b1 raised
    dead = [r for r in emit.records if r[0] == "dl"]
    assert len(dead) == 1 and dict(dead[0][3])["reason"] == b"processing_error"
    assert dict(dead[0][3])["origin_offset"] == b"1"
