"""Retention in the running product: the stages drop state past each detector's retention once
per day of event time (detectors/pipeline.py COMPACT_EVERY_MS), with the policy's settings, in the
replay (Guard) and in the streaming stages (BatchStage._compact_due)."""

from __future__ import annotations

import time

from app.runtime.compaction import MAX_CLOCK_SKEW_MS
from app.runtime.stage import BatchStage
from app.runtime.store import PartitionState
from detectors.events import ActorKind
from detectors.pipeline import COMPACT_EVERY_MS, RECORD_STATE, Guard
from tests.unit.helpers_events import D, H, agents_policy, event

POLICY = agents_policy("enricher", record_state={"retention": "2d"}, override={"window": "1h"},
                       mass_overwrite={"retention": "1d"})


def _agent_write(guard: Guard) -> str:
    """enricher overwrites contact 1's job title at T0; the record's state key."""
    guard.process(event("1", {"jobtitle": "CEO"}, at=0, by="rep", kind=ActorKind.HUMAN))
    guard.process(event("1", {"jobtitle": "Chief"}, at=1000))
    (key,) = guard.states[RECORD_STATE]
    return key


def test_state_within_its_retention_is_kept() -> None:
    guard = Guard(POLICY)
    key = _agent_write(guard)
    assert key in guard.states["override"] and "enricher" in guard.states["mass_overwrite"]
    # a day and a half later: a compaction runs (new day), but the record is inside its 2 days
    guard.process(event("2", {"city": "Oslo"}, at=D + 12 * H, by="rep", kind=ActorKind.HUMAN))
    assert key in guard.states[RECORD_STATE]
    # the override window (1 h) and the actor's idle retention (1 d) have passed, though
    assert key not in guard.states["override"] and "enricher" not in guard.states["mass_overwrite"]


def test_state_past_its_retention_is_dropped_with_the_policy_settings() -> None:
    guard = Guard(POLICY)
    key = _agent_write(guard)
    guard.process(event("2", {"city": "Oslo"}, at=3 * D, by="rep", kind=ActorKind.HUMAN))
    assert key not in guard.states[RECORD_STATE]
    assert len(guard.states[RECORD_STATE]) == 1  # contact 2, just changed
    assert guard.compacted >= 3  # record state, override entry, the agent's overwrite windows


def test_the_shipped_retention_keeps_three_weeks_of_records() -> None:
    guard = Guard(agents_policy("enricher"))
    key = _agent_write(guard)
    guard.process(event("2", {"city": "Oslo"}, at=21 * D, by="rep", kind=ActorKind.HUMAN))
    assert key in guard.states[RECORD_STATE]  # record_state.retention is 90 days


def _held() -> PartitionState:
    state = PartitionState(["s"])
    state.apply_changelog(b"s\x1fk", b'{"t": 1}')
    return state


class _Recorder(BatchStage):
    name = "probe"

    def __init__(self) -> None:
        super().__init__(bootstrap="unused:9092", group_id="g", topics=["in"], producer=None,  # type: ignore[arg-type]
                         deadletter_topic="dl", changelog_topic="g.probe-changelog", client_kwargs={})
        self.calls: list[tuple[int, int]] = []

    def compact(self, state: PartitionState, now_ms: int) -> int:
        self.calls.append((len(state), now_ms))
        return 0


async def test_a_stage_compacts_each_partition_once_per_day_of_its_event_time() -> None:
    stage = _Recorder()
    stage.partitions = {0: _held(), 1: _held()}
    t0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    stage.compaction.saw(0, t0 + 5 * H)
    await stage._compact_due()  # not in the first batch after an assignment (restored entries stay undecoded)
    assert stage.calls == []
    stage.compaction.saw(0, t0 + 20 * H)
    stage.compaction.saw(1, t0 + 20 * H)
    await stage._compact_due()  # partition 0: same day; partition 1: its first batch
    assert stage.calls == []
    stage.compaction.saw(0, t0 + COMPACT_EVERY_MS)
    await stage._compact_due()  # partition 0 crossed midnight of its event time
    assert [now for _, now in stage.calls] == [t0 + COMPACT_EVERY_MS]
    stage.compaction.saw(0, t0 + COMPACT_EVERY_MS + 23 * H)
    stage.compaction.saw(1, t0 + COMPACT_EVERY_MS + H)
    await stage._compact_due()  # partition 0: same day again; partition 1 crossed it
    assert [now for _, now in stage.calls] == [t0 + COMPACT_EVERY_MS, t0 + COMPACT_EVERY_MS + H]


async def test_event_time_far_ahead_of_the_clock_counts_only_up_to_the_allowed_skew() -> None:
    stage = _Recorder()
    stage.partitions = {0: _held()}
    stage.compaction.saw(0, 1_767_225_600_000)  # 2026-01-01
    await stage._compact_due()
    stage.compaction.saw(0, 7_258_118_400_000)  # 2200-01-01: a mistyped or forged timestamp
    before = int(time.time() * 1000)
    await stage._compact_due()
    (_, now), = stage.calls
    assert before <= now <= int(time.time() * 1000) + MAX_CLOCK_SKEW_MS
    await stage._compact_due()  # and it does not compact again on every batch
    assert len(stage.calls) == 1


async def test_a_revoked_partition_is_not_compacted() -> None:
    stage = _Recorder()
    stage.partitions = {0: _held()}
    stage.compaction.saw(3, 1_767_225_600_000)  # a partition this stage no longer owns
    await stage._compact_due()
    assert stage.calls == []


async def test_a_big_partition_is_compacted_slice_by_slice_with_restored_entries_kept_as_bytes() -> None:
    """The streaming record stage over 120,003 restored records (COMPACT_SLICE 50,000): every
    slice is scanned, the stale records go (with tombstones), the kept ones stay undecoded."""
    from app.runtime.stages import RecordStageRunner
    from app.runtime.store import changelog_key
    from detectors.attribution import Attributor
    from detectors.pipeline import LinkStage, RecordStage
    from detectors.registry import default_detectors

    policy = agents_policy("enricher", record_state={"retention": "2d"})
    detectors = default_detectors(policy)
    runner = RecordStageRunner(stage=RecordStage(policy, detectors), link=LinkStage(policy, detectors),
                               attributor=Attributor(policy), by_actor="a", by_link="l", timeline_topic=None,
                               bootstrap="unused:9092", group_id="g", topics=["in"], producer=None,
                               deadletter_topic="dl", changelog_topic="g.record-changelog", client_kwargs={})
    state = PartitionState(runner.state_names(), runner.state_loaders())
    t0 = 1_767_225_600_000
    for i in range(120_003):
        at = t0 if i % 3 else t0 + 5 * D  # one in three changed recently
        state.apply_changelog(changelog_key(RECORD_STATE, f"hubspot/contact/{i}"), b'{"f":{},"r":[],"e":[],"t":%d,"d":false}' % at)
    runner.partitions = {0: state}
    runner.compaction.saw(0, t0 + 5 * D)
    await runner._compact_due()  # first batch after the assignment: scheduled, not run
    runner.compaction.saw(0, t0 + 6 * D)
    await runner._compact_due()
    assert runner.compacted == 80_002
    kept = state[RECORD_STATE].data
    assert len(kept) == 40_001 and all(type(v) is bytes for v in kept.values())
    assert len(state.drain_changes()) == 80_002  # tombstones for the changelog
