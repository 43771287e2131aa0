"""unattributed_actor: changes from an identity that maps to no agent, human, automation or import.

Rule: every change whose attributed actor is `unknown` is evidence, grouped per identity (the
actor key includes the vendor identity). The first opens a warning alert; later ones grow it. An
unknown integration writing to the CRM is exactly how an unregistered agent shows up, but it
does not stop being unknown overnight: once an identity was warned about, its changes are `info`
evidence (they grow an open alert and open none) until `renotify_after` (7 days) of event time
has passed since that warning. Without this, an unmapped integration that works every day opened
a new warning every morning, after each quiet night resolved the last one (4-6 per identity in
the 4-day demo replayed without a policy). Mapping it in the policy ends the findings.
High-tier fields (commission inputs, attribution, owner, amount...) written by such an identity
are a second group with its own warning (`high_tier_severity`) and reminders: before a policy
names an agent, `protected_field` cannot judge its scope, and a single commission write would
otherwise hide inside the identity's general alert.
State: per actor key, the event time of its last warning (`{"w": ms}`, and `"h"` for the
high-tier group); dropped after `retention` (30 days) without one. Cost per event: one
comparison for everyone else; a tier lookup per field for unknown identities.
"""

from __future__ import annotations

from typing import Any, ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State, drop_older_than, finding_for, tier_of
from detectors.events import ActorKind
from detectors.policy import Policy, Tier
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
        identity = event.actor.identity.describe()
        general = f"changes from an unattributed identity ({identity})"
        findings = [self._finding(obs, state, settings, "w", Severity(settings.severity), identity, general,
                                  {"identity": identity})]
        high = sorted({c.field for c in event.changes if tier_of(obs, c.field, policy) is Tier.HIGH})
        if high:
            findings.append(self._finding(
                obs, state, settings, "h", Severity(settings.high_tier_severity), f"{identity} high-tier",
                f"an unattributed identity ({identity}) wrote high-tier fields: {', '.join(high)}",
                {"identity": identity, "high_tier_fields": high}))
        return findings

    def _finding(self, obs: Observation, state: State, settings: UnattributedActorSettings, slot: str,
                 severity: Severity, group: str, summary: str, details: dict[str, Any]) -> Finding:
        """One finding of the group; warning (or the configured severity) when this identity's
        last one in `slot` is at least `renotify_after` old, else info evidence."""
        if severity is not Severity.INFO:
            last_warned = state.get(obs.actor_key, {}).get(slot)
            severity = _reminder_due(state, obs.actor_key, obs.event.occurred_at, settings, severity, slot)
            if severity is not Severity.INFO and last_warned is not None:  # a reminder
                days = (obs.event.occurred_at - last_warned) // 86_400_000
                summary += f", still unmapped {days} days after the last warning"
                details["last_warned_at"] = last_warned
        return finding_for(obs, self.name, severity, summary, group=group, details=details)

    @staticmethod
    def compact(state: State, now_ms: int, settings: UnattributedActorSettings | None = None) -> int:
        """Drop identities not warned about for `retention`; returns how many entries went."""
        retention = (settings or UnattributedActorSettings()).retention
        return drop_older_than(state, now_ms - retention, time_key="w")

    def compact_state(self, state: State, now_ms: int, policy: Policy) -> int:
        """`compact` with the policy's settings (called by the stages once per compaction period)."""
        return self.compact(state, now_ms, policy.detectors.unattributed_actor)


def _reminder_due(state: State, key: str, at: int, settings: UnattributedActorSettings,
                  severity: Severity, slot: str) -> Severity:
    """`severity` when this identity was never warned about in `slot` ("w": its changes, "h": its
    high-tier writes) or the last warning there is at least `renotify_after` old (recording this
    one), else info."""
    entry = state.get(key) or {}
    last = entry.get(slot)
    if last is not None and settings.renotify_after and at - last < settings.renotify_after:
        return Severity.INFO
    state[key] = {"w": at, **entry, slot: at}  # "w" is what compaction reads: always present
    return severity
