"""unattributed_actor and source_gap: never dropped, grouped per identity / entity."""

from __future__ import annotations

from detectors.alerts import Alert
from detectors.events import ActorKind, FieldChange
from detectors.pipeline import Guard
from detectors.policy import Policy
from detectors.source_gap import SourceGapDetector
from detectors.unattributed_actor import UnattributedActorDetector
from tests.unit.helpers_events import Run, event


def test_unknown_identity_is_a_warning_with_its_identity_and_no_pii() -> None:
    run = Run(UnattributedActorDetector())
    found = run.feed(event(1, {"email": "someone@example.com"}, by="app-77", kind=ActorKind.UNKNOWN))
    assert [f.severity.value for f in found] == ["warning", "warning"]  # its changes; a high-tier field
    assert "app-77" in found[0].group and all("example.com" not in f.summary for f in found)
    assert found[1].details["high_tier_fields"] == ["email"] and found[1].group.endswith("high-tier")
    assert run.feed(event(2, {"x": "1"}, by="ann", kind=ActorKind.HUMAN)) == []


def test_gap_events_become_findings() -> None:
    run = Run(SourceGapDetector())
    gap = event("001A", {}, source="salesforce", operation="gap", by="005x", kind=ActorKind.UNKNOWN)
    gap = gap.model_copy(update={"changes": (FieldChange(field="__gap__", new="GAP_UPDATE"),)})
    found = run.feed(gap)
    assert len(found) == 1 and "GAP_UPDATE" in found[0].summary
    assert found[0].severity.value == "warning"


HOUR = 3_600_000
DAY = 24 * HOUR


def _workday(day: int, hour: int, n: int) -> int:
    return day * DAY + hour * HOUR + n * 60_000


def test_an_unmapped_integration_is_warned_about_once_a_week_not_every_morning() -> None:
    """It works 9:00-9:05 every day; nights are quiet for longer than alerts.resolve_after (6 h)."""
    run = Run(UnattributedActorDetector())
    by_day: dict[int, list[str]] = {}
    for day in range(15):
        for n in range(5):
            found = run.feed(event(f"{day}-{n}", {"x": str(n)}, at=_workday(day, 9, n), by="app-9",
                                   kind=ActorKind.UNKNOWN))
            by_day.setdefault(day, []).extend(f.severity.value for f in found)
    warned = [day for day, sevs in by_day.items() if "warning" in sevs]
    assert warned == [0, 7, 14]
    reminders = [f for f in run.findings if f.severity.value == "warning"]
    assert "last_warned_at" not in reminders[0].details and "still unmapped" not in reminders[0].summary
    assert reminders[1].summary.endswith("still unmapped 7 days after the last warning")
    assert reminders[1].details["last_warned_at"] == reminders[0].occurred_at
    assert by_day[0] == ["warning"] + ["info"] * 4 and by_day[3] == ["info"] * 5


def test_each_identity_has_its_own_reminder_and_renotify_zero_warns_every_time() -> None:
    run = Run(UnattributedActorDetector())
    first = run.feed(event(1, {"x": "1"}, at=0, by="app-1", kind=ActorKind.UNKNOWN),
                     event(2, {"x": "1"}, at=HOUR, by="app-2", kind=ActorKind.UNKNOWN),
                     event(3, {"x": "1"}, at=2 * HOUR, by="app-1", kind=ActorKind.UNKNOWN))
    assert [f.severity.value for f in first] == ["warning", "warning", "info"]
    always = Run(UnattributedActorDetector(),
                 policy=Policy.model_validate({"detectors": {"unattributed_actor": {"renotify_after": 0}}}))
    daily = (event(i, {"x": "1"}, at=i * DAY, by="app-1", kind=ActorKind.UNKNOWN) for i in range(3))
    found = always.feed(*daily)
    assert [f.severity.value for f in found] == ["warning"] * 3


def test_an_out_of_order_change_does_not_move_the_reminder() -> None:
    run = Run(UnattributedActorDetector())
    run.feed(event(1, {"x": "1"}, at=10 * DAY, by="app-1", kind=ActorKind.UNKNOWN))
    late = run.feed(event(2, {"x": "1"}, at=DAY, by="app-1", kind=ActorKind.UNKNOWN))
    assert [f.severity.value for f in late] == ["info"]
    assert [f.severity.value for f in run.feed(event(3, {"x": "1"}, at=17 * DAY, by="app-1",
                                                     kind=ActorKind.UNKNOWN))] == ["warning"]


def test_reminders_are_forgotten_after_the_retention() -> None:
    state = {"unknown:a": {"w": 0}, "unknown:b": {"w": 29 * DAY}}
    assert UnattributedActorDetector.compact(state, 31 * DAY) == 1 and list(state) == ["unknown:b"]


def test_the_guard_opens_one_alert_per_unmapped_identity_over_a_fortnight() -> None:
    """Through the alert manager: the info evidence grows the open alert, and the week's quiet
    nights do not reopen it; the reminder after seven days is a second alert."""
    guard = Guard(Policy())
    alerts: dict[str, Alert] = {}
    for day in range(10):
        for n in range(5):
            out = guard.process(event(f"{day}-{n}", {"x": str(n)}, at=_workday(day, 9, n), by="app-9",
                                      kind=ActorKind.UNKNOWN))
            for alert in out.alerts:
                alerts[alert.dedup_key] = alert
    unattributed = [a for a in alerts.values() if a.kind == "unattributed_actor"]
    assert len(unattributed) == 2
    assert sorted(a.count for a in unattributed) == [5, 5]


def test_high_tier_writes_of_an_unmapped_identity_are_an_alert_of_their_own() -> None:
    """Before a policy names it, protected_field cannot judge its scope: a commission write must
    not hide in the identity's general alert. Its own group, warned once, reminded weekly."""
    guard = Guard(Policy())
    alerts: dict[str, Alert] = {}
    changes = [({"jobtitle": "CTO"}, 0), ({"jobtitle": "CFO"}, HOUR), ({"commission_rate": "0.2"}, 2 * HOUR),
               ({"commission_rate": "0.3", "utm_source": "x"}, 3 * HOUR),
               ({"commission_rate": "0.1"}, 8 * DAY)]
    for n, (fields, at) in enumerate(changes):
        for alert in guard.process(event(n, fields, at=at, by="app-9", kind=ActorKind.UNKNOWN)).alerts:
            alerts[alert.dedup_key] = alert
    high = sorted((a for a in alerts.values() if a.group.endswith("high-tier")),
                  key=lambda a: a.first_event_at)
    assert len(high) == 2 and high[0].count == 2  # the 2nd write is evidence on it; day 8 a reminder
    assert "wrote high-tier fields: commission_rate" in high[0].summary
    assert "still unmapped" in high[1].summary
    assert len([a for a in alerts.values() if not a.group.endswith("high-tier")]) == 2
    paging = Run(UnattributedActorDetector(), policy=Policy.model_validate(
        {"detectors": {"unattributed_actor": {"high_tier_severity": "critical"}}}))
    found = paging.feed(event(1, {"commission_rate": "0.2"}, by="app-9", kind=ActorKind.UNKNOWN))
    assert [f.severity.value for f in found] == ["warning", "critical"]
