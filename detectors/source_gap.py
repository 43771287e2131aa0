"""source_gap: the source could not send the changes themselves (Salesforce GAP_* and overflow).

Rule: every event with operation `gap` is a warning: the guard lost sight of those records' values
(their record state is now stale), so people must know which records and when. Grouped per
vendor object type, never dropped. State: none. Cost per event: one comparison.
"""

from __future__ import annotations

from typing import ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State, finding_for
from detectors.policy import Policy


class SourceGapDetector:
    name: ClassVar[str] = "source_gap"
    stage: ClassVar[Stage] = Stage.ACTOR

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        event = obs.event
        if event.operation != "gap":  # first: the cheap test that ends most calls
            return []
        settings = policy.detectors.source_gap
        if not settings.enabled:
            return []
        kind = next((str(c.new) for c in event.changes if c.field == "__gap__"), "GAP")
        return [finding_for(
            obs, self.name, Severity(settings.severity),
            f"{event.source} sent {kind} for {event.source_object_type} {event.record_id}: changes unseen",
            group=f"{event.source}/{event.source_object_type}",
            details={"change_type": kind, "entity": event.source_object_type},
        )]
