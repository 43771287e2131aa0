"""velocity_cap: an agent touching more distinct records than its cap allows in a rolling window.

Rule: for each cap of the agent (policy: defaults.velocity_caps or the agent's own; default 50
distinct records per rolling hour), count the distinct records the agent changed in the window
(t - window, t], optionally only those of one object type or with a change in one field tier.
The change that brings the count to max_records + 1 is the breach: critical, and a pause when the
policy pauses on breach. Every further new record in the window adds evidence to the same alert.

Exact, not approximate: the state holds, per cap, each record's last change time in the window in
time order (a dict re-inserted on touch), so expiry pops from the front and the count is its
length. State key: the agent (ACTOR stage). Memory: at most 2 x max_records records per cap
(beyond the cap every new record is a breach anyway, the oldest are dropped). Cost per event: one
dict update per cap, amortized O(1) expiry. A change older than the newest one in the window
(it crossed a different partition on the way) is inserted at its place in time order and
counted against the windows that hold its time, as if it had arrived in order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import islice
from typing import ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State, finding_for
from detectors.events import ActorKind
from detectors.policy import Policy, VelocityCap
from detectors.time_order import insert_in_time_order


class VelocityCapDetector:
    name: ClassVar[str] = "velocity_cap"
    stage: ClassVar[Stage] = Stage.ACTOR

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        event = obs.event
        if event.actor.kind is not ActorKind.AGENT or event.operation == "gap":
            return []
        agent = event.actor.id
        caps = policy.caps_for(agent)
        entry = state.get(agent)
        if entry is None:
            entry = {}
        findings: list[Finding] = []
        now = event.occurred_at
        for cap in caps:
            if not _applies(cap, obs, policy):
                continue
            name = cap.name
            window = entry.get(name)
            if window is None:
                window = {}
                entry[name] = window
            _expire(window, now - cap.window)
            record = event.record_key
            is_new = record not in window
            if not is_new:
                if window[record] > now:  # out of order: keep the later time
                    continue
                del window[record]
            if window and next(reversed(window.values())) > now:
                count = _insert_late(window, record, now, cap.window)
            else:
                window[record] = now
                count = len(window)
            if is_new and count > cap.max_records:
                findings.append(self._breach(obs, cap, count, policy, agent))
            if count > 2 * cap.max_records:
                for key in list(islice(window, count - 2 * cap.max_records)):  # the oldest, not all keys
                    del window[key]
        state[agent] = entry
        return findings

    def _breach(self, obs: Observation, cap: VelocityCap, count: int, policy: Policy, agent: str) -> Finding:
        minutes = cap.window // 60_000
        return finding_for(
            obs,
            self.name,
            Severity.CRITICAL,
            f"agent {agent} changed {count} distinct records in {minutes} min (cap {cap.name})",
            group=cap.name,
            pause=policy.pauses_on_breach(agent),
            details={"cap": cap.name, "max_records": cap.max_records, "window_ms": cap.window, "count": count},
        )

    @staticmethod
    def current_counts(agent: str, state: State, policy: Policy, now_ms: int) -> dict[str, int]:
        """Distinct records per cap in the window ending now (for metrics and the proposal gate)."""
        entry = state.get(agent) or {}
        out = {}
        for cap in policy.caps_for(agent):
            window = entry.get(cap.name) or {}
            out[cap.name] = sum(1 for t in window.values() if t > now_ms - cap.window)
        return out


def _applies(cap: VelocityCap, obs: Observation, policy: Policy) -> bool:
    event = obs.event
    if cap.object_type is not None and event.object_type is not cap.object_type:
        return False
    if cap.tier is not None:
        return any(policy.tier_of(event.source, c.field) is cap.tier for c in event.changes)
    return True


def _insert_late(window: dict[str, int], record: str, at: int, span: int) -> int:
    """Insert a change that arrived after later ones (out of order across partitions) at its place
    in time order, and count as in-order processing would have: the fullest window (e - span, e]
    that holds `at`, e from `at` up to the newest change. Counting the whole window instead would
    join records more than `span` apart and report breaches that never were.

    The insert is `time_order.insert_in_time_order` (O(entries after it) for the usual change a
    few milliseconds late). When every entry lies within `span` of the newest, the count is the
    window's size; otherwise one bisect per entry between `at` and `at + span`."""
    values = window.values()
    oldest, newest = next(iter(values)), next(reversed(values))
    insert_in_time_order(window, record, at, at)
    if at + span > newest and newest - span < min(oldest, at):
        return len(window)
    times = list(window.values())
    place = bisect_right(times, at) - 1  # the inserted entry: after every other one at <= at
    stop = bisect_left(times, at + span)  # the windows to try end at times[place:stop]
    if times[stop - 1] - span < times[0]:  # none of them has dropped an entry yet
        return stop
    return max(end + 1 - bisect_right(times, times[end] - span) for end in range(place, stop))


def _expire(window: dict[str, int], cutoff: int) -> None:
    while window:
        first = next(iter(window))
        if window[first] > cutoff:
            return
        del window[first]
