"""When each partition's state is compacted (entries past their retention dropped), and how.

Once per day of event time per partition (detectors.pipeline.COMPACT_EVERY_MS), after the batch
that crosses the day, never in the first batch after an assignment: a compaction reads every
entry, and restored entries are decoded only when first read (app/runtime/store.py). Event time
is capped at the wall clock plus MAX_CLOCK_SKEW_MS, so one change stamped years ahead cannot
expire everything. A partition is compacted COMPACT_SLICE keys at a time, the event loop running
in between, so millions of entries never hold the consumer group's heartbeats.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.runtime.store import PartitionState, StateSlice
from detectors.pipeline import COMPACT_EVERY_MS, StateSet, next_boundary

MAX_CLOCK_SKEW_MS = 3_600_000
"""How far ahead of the wall clock event time may count for compaction."""
COMPACT_SLICE = 50_000
"""Keys of each state compacted between two turns of the event loop (~0.2 s at most)."""


class CompactionSchedule:
    """Per partition: the latest event time seen, and the event time of its next compaction."""

    def __init__(self) -> None:
        self.event_times: dict[int, int] = {}
        self.next_at: dict[int, int] = {}

    def saw(self, partition: int, at_ms: int) -> None:
        """A message of `partition` carried event time `at_ms`."""
        if at_ms > self.event_times.get(partition, 0):
            self.event_times[partition] = at_ms

    def forget(self, partition: int) -> None:
        """The partition was revoked."""
        self.event_times.pop(partition, None)
        self.next_at.pop(partition, None)

    def due(self, wall_ms: int) -> list[tuple[int, int]]:
        """(partition, event time to compact at) for every partition due now; schedules the next."""
        ceiling = wall_ms + MAX_CLOCK_SKEW_MS
        out = []
        for partition, at in self.event_times.items():
            now = min(at, ceiling)
            due = self.next_at.get(partition)
            if due is not None and now < due:
                continue
            self.next_at[partition] = next_boundary(now, COMPACT_EVERY_MS)
            if due is not None:  # else: the first batch since the partition was assigned
                out.append((partition, now))
        return out


async def compact_in_slices(compact: Callable[[StateSet, int], int], state: PartitionState,
                            now_ms: int) -> int:
    """Run a stage's `compact` over a partition slice by slice; returns the entries dropped."""
    keys = {name: list(tracked.data) for name, tracked in state.items()}
    dropped = 0
    for start in range(0, max(map(len, keys.values()), default=0), COMPACT_SLICE):
        view = {name: StateSlice(state[name], held[start:start + COMPACT_SLICE])
                for name, held in keys.items()}
        dropped += compact(view, now_ms)  # type: ignore[arg-type]
        await asyncio.sleep(0)
    return dropped
