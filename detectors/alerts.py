"""Alert grouping: findings become one open alert per actor, detector and group.

An alert opens on the first warning-or-worse finding, grows as evidence comes (count, sample
records, last event time, severity can only rise) and resolves after `resolve_after` of event
time without new evidence. Its `dedup_key` is deterministic (detector, actor, group and the id of
the event that opened it), so a replay, a second worker or a restarted worker produce the same
key, and sinks (PagerDuty dedup_key, the delivery table) deliver it once.

State key: the actor key (ACTOR stage). Memory: one entry per open alert, samples capped.
Info findings are evidence only: they are counted on an open alert of their group but never
open one themselves.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from detectors.base import Finding, Severity, State
from detectors.events import ActorKind
from detectors.settings import AlertSettings


class Alert(BaseModel):
    """What people are told. `version` grows with every update of the same alert."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    dedup_key: str
    kind: str = Field(description="the detector that raised it")
    group: str = ""
    severity: Severity
    status: Literal["open", "resolved"] = "open"
    actor_key: str
    actor_kind: ActorKind
    agent: str | None = None
    object_types: list[str] = Field(default_factory=list)
    sample_record_keys: list[str] = Field(default_factory=list)
    count: int = 0
    records: int = 0
    first_event_at: int
    last_event_at: int
    detected_at: int = Field(description="event time of the finding that opened the alert")
    resolved_at: int | None = Field(default=None, description="event time at which it resolved: quiet for "
                                    "resolve_after (None while open)")
    summary: str
    evidence_event_ids: list[str] = Field(default_factory=list)
    action: Literal["none", "paused"] = "none"
    version: int = 1
    details: dict[str, Any] = Field(default_factory=dict)


class PauseDecision(BaseModel):
    """Tell an agent to stop: which agent, why, and the event that triggered it."""

    model_config = ConfigDict(frozen=True)

    agent: str
    reason: str
    detector: str
    alert_id: str
    dedup_key: str
    event_id: str
    occurred_at: int


def dedup_key_for(detector: str, actor_key: str, group: str, opening_event_id: str) -> str:
    """Stable across replays and workers: hash of what the alert is about and where it began."""
    digest = hashlib.sha256(f"{detector}|{actor_key}|{group}|{opening_event_id}".encode()).hexdigest()
    return f"{detector}:{digest[:20]}"


class AlertManager:
    """Groups findings of one actor into alerts, and decides pauses. Pure; state per actor key.

    `add` returns the alerts that changed enough to be published (opened, severity raised, paused,
    count doubled) and the pause decisions to send. An agent is paused at most once until an
    operator resumes it (`resume`).
    """

    def __init__(self, settings: AlertSettings | None = None) -> None:
        self.settings = settings or AlertSettings()

    def add(self, finding: Finding, state: State) -> tuple[list[Alert], list[PauseDecision]]:
        """Fold a finding into the actor's alerts."""
        entry = state.get(finding.actor_key)
        if entry is None:
            entry = {"open": {}, "paused": False, "seen": []}
        published: list[Alert] = []
        published.extend(self._resolve_quiet(entry, finding.occurred_at))
        slot = f"{finding.detector}|{finding.group}"
        seen_key = f"{slot}|{finding.event_id}"
        if seen_key in entry["seen"]:
            state[finding.actor_key] = entry
            return published, []
        entry["seen"].append(seen_key)
        if len(entry["seen"]) > 64:
            del entry["seen"][0]
        alert = entry["open"].get(slot)
        if alert is None:
            if finding.severity is Severity.INFO:
                state[finding.actor_key] = entry
                return published, []
            alert = _open(finding)
            entry["open"][slot] = alert
            changed = True
        else:
            changed = _grow(alert, finding, self.settings)
        pauses: list[PauseDecision] = []
        wants_pause = finding.pause and finding.actor_kind is ActorKind.AGENT and finding.agent
        if wants_pause and not entry["paused"]:
            entry["paused"] = True
            alert["action"] = "paused"
            changed = True
            pauses.append(
                PauseDecision(
                    agent=str(finding.agent),
                    reason=finding.summary,
                    detector=finding.detector,
                    alert_id=alert["alert_id"],
                    dedup_key=alert["dedup_key"],
                    event_id=finding.event_id,
                    occurred_at=finding.occurred_at,
                )
            )
        if changed:
            alert["version"] += 1
            alert["published_count"] = alert["count"]
            published.append(_to_alert(alert))
        state[finding.actor_key] = entry
        return published, pauses

    def tick(self, actor_key: str, now_ms: int, state: State) -> list[Alert]:
        """Resolve the actor's alerts that have been quiet for `resolve_after` (event time)."""
        entry = state.get(actor_key)
        if entry is None:
            return []
        resolved = self._resolve_quiet(entry, now_ms)
        if resolved:
            state[actor_key] = entry
        return resolved

    def resume(self, actor_key: str, state: State) -> None:
        """An operator resumed the agent: it may be paused again by new evidence."""
        entry = state.get(actor_key)
        if entry is not None:
            entry["paused"] = False
            state[actor_key] = entry

    def open_alerts(self, state: State) -> list[Alert]:
        """Every open alert, across actors, in a stable order."""
        out = []
        for entry in state.values():
            out.extend(_to_alert(a) for a in entry["open"].values())
        return sorted(out, key=lambda a: (a.first_event_at, a.dedup_key))

    def _resolve_quiet(self, entry: dict[str, Any], now_ms: int) -> list[Alert]:
        done = [slot for slot, a in entry["open"].items() if now_ms - a["last_event_at"] >= self.settings.resolve_after]
        resolved = []
        for slot in done:
            alert = entry["open"].pop(slot)
            alert["status"] = "resolved"
            alert["resolved_at"] = now_ms
            alert["version"] += 1
            resolved.append(_to_alert(alert))
        return resolved


def _open(finding: Finding) -> dict[str, Any]:
    dedup = dedup_key_for(finding.detector, finding.actor_key, finding.group, finding.event_id)
    return {
        "alert_id": dedup.split(":", 1)[1],
        "dedup_key": dedup,
        "kind": finding.detector,
        "group": finding.group,
        "severity": finding.severity.value,
        "status": "open",
        "actor_key": finding.actor_key,
        "actor_kind": finding.actor_kind.value,
        "agent": finding.agent,
        "object_types": [finding.object_type],
        "sample_record_keys": [finding.record_key],
        "count": 1,
        "records": 1,
        "record_set": {finding.record_key: 1},
        "first_event_at": finding.occurred_at,
        "last_event_at": finding.occurred_at,
        "detected_at": finding.occurred_at,
        "summary": finding.summary,
        "evidence_event_ids": [finding.event_id],
        "action": "none",
        "version": 0,
        "published_count": 0,
        "details": dict(finding.details),
    }


_RECORD_SET_CAP = 1000


def _grow(alert: dict[str, Any], finding: Finding, settings: AlertSettings) -> bool:
    """Add evidence; True when the change deserves a new publication (not every event)."""
    alert["count"] += 1
    alert["last_event_at"] = max(alert["last_event_at"], finding.occurred_at)
    alert["first_event_at"] = min(alert["first_event_at"], finding.occurred_at)
    if finding.record_key not in alert["record_set"]:
        if len(alert["record_set"]) < _RECORD_SET_CAP:
            alert["record_set"][finding.record_key] = 1
        alert["records"] += 1
        if len(alert["sample_record_keys"]) < settings.sample_records:
            alert["sample_record_keys"].append(finding.record_key)
    if finding.object_type not in alert["object_types"]:
        alert["object_types"].append(finding.object_type)
    if len(alert["evidence_event_ids"]) < settings.evidence_events:
        alert["evidence_event_ids"].append(finding.event_id)
    changed = False
    if Severity(finding.severity).rank > Severity(alert["severity"]).rank:
        alert["severity"] = finding.severity.value
        alert["summary"] = finding.summary
        changed = True
    if finding.severity is not Severity.INFO:
        alert["details"].update(finding.details)
    if alert["count"] >= 2 * max(1, alert["published_count"]):
        changed = True
    return changed


def _to_alert(alert: dict[str, Any]) -> Alert:
    data = {k: v for k, v in alert.items() if k not in ("record_set", "published_count")}
    return Alert.model_validate(data)
