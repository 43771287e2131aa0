"""unattributed_actor: changes from an identity that maps to no agent, human, automation or import.

Rule: every change whose attributed actor is `unknown` is evidence, grouped per identity (the
actor key includes the vendor identity). The first opens a warning alert; later ones grow it. An
unknown integration writing to the CRM is exactly how an unregistered agent shows up, but it
does not stop being unknown overnight: once an identity was warned about, its changes are `info`
evidence (they grow an open alert and open none) until `renotify_after` (7 days) of event time
has passed since that warning. Without this, an unmapped integration that works every day opened
a new warning every morning, after each quiet night resolved the last one (4-6 per identity in
the 4-day demo replayed without a policy). Mapping it in the policy ends the findings.
State: per actor key, the event time of its last warning (`{"w": ms}`); dropped after
`retention` (30 days) without one. Cost per event: one comparison for everyone else.
"""

from __future__ import annotations

from typing import ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State, drop_older_than, finding_for
from detectors.events import ActorKind
from detectors.policy import Policy
from detectors.settings import UnattributedActorSettings


class UnattributedActorDetector:
    name: ClassVar[str] = "unattributed_actor"
    stage: ClassVar[Stage] = Stage.ACTOR

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        event = obs.event
        if event.actor.kind is not ActorKind.UNKNOWN:  # first: the cheap test that ends most calls
            return []
        settings = policy.detectors.unattributed_actor
        if not settings.enabled or event.operation == "gap":
            return []
        severity = Severity(settings.severity)
        identity = event.actor.identity.describe()
        summary, details = f"changes from an unattributed identity ({identity})", {"identity": identity}
        if severity is not Severity.INFO:
            last_warned = state.get(obs.actor_key, {}).get("w")
            severity = _reminder_due(state, obs.actor_key, event.occurred_at, settings, severity)
            if severity is not Severity.INFO and last_warned is not None:  # a reminder
                days = (event.occurred_at - last_warned) // 86_400_000
                summary += f", still unmapped {days} days after the last warning"
                details["last_warned_at"] = last_warned
        return [finding_for(obs, self.name, severity, summary, group=identity, details=details)]

    @staticmethod
    def compact(state: State, now_ms: int, settings: UnattributedActorSettings | None = None) -> int:
        """Drop identities not warned about for `retention`; returns how many entries went."""
        retention = (settings or UnattributedActorSettings()).retention
        return drop_older_than(state, now_ms - retention, time_key="w")

    def compact_state(self, state: State, now_ms: int, policy: Policy) -> int:
        """`compact` with the policy's settings (called by the stages once per compaction period)."""
        return self.compact(state, now_ms, policy.detectors.unattributed_actor)


def _reminder_due(state: State, key: str, at: int, settings: UnattributedActorSettings,
                  severity: Severity) -> Severity:
    """`severity` when this identity was never warned about or its last warning is at least
    `renotify_after` old (recording this one), else info."""
    entry = state.get(key)
    if entry is not None and settings.renotify_after and at - entry["w"] < settings.renotify_after:
        return Severity.INFO
    state[key] = {"w": at}
    return severity
