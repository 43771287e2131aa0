"""unattributed_actor and source_gap: never dropped, grouped per identity / entity."""

from __future__ import annotations

from detectors.events import ActorKind, FieldChange
from detectors.source_gap import SourceGapDetector
from detectors.unattributed_actor import UnattributedActorDetector
from tests.unit.helpers_events import Run, event


def test_unknown_identity_is_a_warning_with_its_identity_and_no_pii() -> None:
    run = Run(UnattributedActorDetector())
    found = run.feed(event(1, {"email": "someone@example.com"}, by="app-77", kind=ActorKind.UNKNOWN))
    assert len(found) == 1 and found[0].severity.value == "warning"
    assert "app-77" in found[0].group and "example.com" not in found[0].summary
    assert run.feed(event(2, {"x": "1"}, by="ann", kind=ActorKind.HUMAN)) == []


def test_gap_events_become_findings() -> None:
    run = Run(SourceGapDetector())
    gap = event("001A", {}, source="salesforce", operation="gap", by="005x", kind=ActorKind.UNKNOWN)
    gap = gap.model_copy(update={"changes": (FieldChange(field="__gap__", new="GAP_UPDATE"),)})
    found = run.feed(gap)
    assert len(found) == 1 and "GAP_UPDATE" in found[0].summary
    assert found[0].severity.value == "warning"
