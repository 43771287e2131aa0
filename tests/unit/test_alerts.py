"""Alert grouping: one open alert per actor/kind/group, deterministic dedup keys, pauses once."""

from __future__ import annotations

from typing import Any

from detectors.alerts import AlertManager, dedup_key_for
from detectors.base import Finding, Severity
from detectors.events import ActorKind
from detectors.settings import AlertSettings


def finding(i: int, severity: Severity = Severity.WARNING, group: str = "utm_source", pause: bool = False,
            at: int | None = None, actor: str = "bot") -> Finding:
    return Finding(
        detector="mass_overwrite", severity=severity, actor_key=actor, actor_kind=ActorKind.AGENT, agent=actor,
        event_id=f"e{i}", occurred_at=1000 * i if at is None else at, record_key=f"hubspot/contact/{i}",
        object_type="contact", summary=f"s{i}", group=group, pause=pause,
    )


def test_findings_of_one_group_make_one_alert_that_grows() -> None:
    manager, state = AlertManager(), {}
    published = []
    for i in range(10):
        alerts, _ = manager.add(finding(i), state)
        published.extend(alerts)
    keys = {a.dedup_key for a in published}
    assert len(keys) == 1
    assert [a.count for a in published] == [1, 2, 4, 8]  # updates when evidence doubles, not per event
    final = manager.open_alerts(state)[0]
    assert final.count == 10 and final.records == 10 and final.sample_record_keys[0] == "hubspot/contact/0"


def test_dedup_key_is_deterministic_and_redelivered_findings_do_not_count() -> None:
    manager, state = AlertManager(), {}
    manager.add(finding(1), state)
    manager.add(finding(1), state)
    alert = manager.open_alerts(state)[0]
    assert alert.count == 1
    assert alert.dedup_key == dedup_key_for("mass_overwrite", "bot", "utm_source", "e1")


def test_info_findings_never_open_an_alert() -> None:
    manager, state = AlertManager(), {}
    assert manager.add(finding(1, Severity.INFO), state) == ([], [])
    assert manager.open_alerts(state) == []


def test_pause_is_decided_once_until_resumed() -> None:
    manager, state = AlertManager(), {}
    _, pauses = manager.add(finding(1, Severity.CRITICAL, pause=True), state)
    assert [p.agent for p in pauses] == ["bot"] and pauses[0].event_id == "e1"
    _, again = manager.add(finding(2, Severity.CRITICAL, pause=True, group="other"), state)
    assert again == []
    manager.resume("bot", state)
    _, after = manager.add(finding(3, Severity.CRITICAL, pause=True), state)
    assert len(after) == 1


def test_quiet_alerts_resolve_and_a_new_one_gets_a_new_key() -> None:
    manager, state = AlertManager(AlertSettings(resolve_after="1h")), {}
    first, _ = manager.add(finding(1, at=0), state)
    assert manager.tick("bot", 3_599_999, state) == [] and first[0].resolved_at is None
    resolved = manager.tick("bot", 3_600_000, state)
    assert [a.status for a in resolved] == ["resolved"] and resolved[0].dedup_key == first[0].dedup_key
    assert resolved[0].resolved_at == 3_600_000  # event time of the resolution, not of the opening
    second, _ = manager.add(finding(2, at=3_700_000), state)
    assert second[0].dedup_key != first[0].dedup_key


def test_severity_only_rises() -> None:
    manager, state = AlertManager(), {}
    manager.add(finding(1, Severity.WARNING), state)
    alerts, _ = manager.add(finding(2, Severity.CRITICAL), state)
    assert alerts[-1].severity is Severity.CRITICAL
    manager.add(finding(3, Severity.WARNING), state)
    assert manager.open_alerts(state)[0].severity is Severity.CRITICAL


def test_the_console_prints_a_resolved_alert_at_its_resolution_time(capsys: Any) -> None:
    from app.runtime.console import ConsolePrinter
    from app.runtime.worker import AlertBoard

    board = AlertBoard()
    ConsolePrinter(board).attach()
    manager, state = AlertManager(AlertSettings(resolve_after="1h")), {}
    opened, _ = manager.add(finding(1, at=0), state)
    board.add(opened[0])
    board.add(manager.tick("bot", 2 * 3_600_000, state)[0])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[1970-01-01 00:00] WARNING") and "resolved" not in lines[0]
    assert lines[1].startswith("[1970-01-01 02:00] resolved WARNING") and lines[1].endswith("(opened 1970-01-01 00:00)")
