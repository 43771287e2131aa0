"""protected_field: an agent writes outside its scope.

Rule: for a change by a named agent, a finding when the object type is denied (or not in its
allowed list), when a field matches its `denied_fields`, when `allowed_fields` is set and the
field matches none of it, or when the field is high tier and the agent is not `high_tier_allowed`.
On creates only explicit denials count (setting fields of a new record overwrites nothing).
HubSpot delivers a creation as `*.creation` plus one `*.propertyChange` per property, which the
guard sees as updates: so changes by an agent to a record it created itself within
`creation_window` (60 s of event time) are judged as part of the creation (explicit denials and
object types still count; allowed-field and high-tier checks do not). Changes after the window,
or by anyone else, are updates. A property change delivered before its creation is still judged
as an update (the guard cannot know yet that a creation follows).
A write that does not change the known value is ignored. Critical, and a pause when the policy
pauses on breach. Group: the field (or the object type), so each field is one alert.

State key: the agent (ACTOR stage), only for agents that created records lately:
`{"c": {record_key: created_at}}`, entries older than `creation_window` dropped on every touch, at
most `max_recent_creations` (256). An agent whose creations stop leaves one small entry behind.
Cost per event: a few compiled-pattern matches per changed field (cached per policy), one dict
lookup for the agent's recent creations.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from typing import ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State, finding_for
from detectors.events import ActorKind
from detectors.policy import AgentPolicy, Policy, Tier
from detectors.settings import ProtectedFieldSettings


@lru_cache(maxsize=1024)
def _pattern(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns))


def field_matches(patterns: list[str] | None, field: str) -> bool:
    """True when the field matches one of the shell-glob patterns (case-insensitive)."""
    compiled = _pattern(tuple(patterns or ()))
    return compiled is not None and compiled.fullmatch(field.lower()) is not None


def scope_violation(
    agent: AgentPolicy, policy: Policy, source: str, field: str, creating: bool
) -> str | None:
    """Why writing `field` is out of the agent's scope, or None. Shared with the proposal gate.
    Patterns match the field's key or its label (Policy.field_names)."""
    names = policy.field_names(source, field)
    if any(field_matches(agent.denied_fields, name) for name in names):
        return "denied_field"
    if creating:
        return None
    allowed = agent.allowed_fields is not None and any(field_matches(agent.allowed_fields, name) for name in names)
    if agent.allowed_fields is not None and not allowed:
        return "not_allowed_field"
    if not agent.high_tier_allowed and policy.tier_of(source, field) is Tier.HIGH and not allowed:
        return "high_tier_field"
    return None


def object_violation(agent: AgentPolicy, object_type: str) -> str | None:
    """Why the agent may not write this object type, or None."""
    if object_type in {t.value for t in agent.denied_object_types}:
        return "denied_object_type"
    allowed = agent.allowed_object_types
    if allowed is not None and object_type not in {t.value for t in allowed}:
        return "not_allowed_object_type"
    return None


class ProtectedFieldDetector:
    """Agents' writes against their scope in the policy (see module docstring)."""

    name: ClassVar[str] = "protected_field"
    stage: ClassVar[Stage] = Stage.ACTOR

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        event = obs.event
        if event.actor.kind is not ActorKind.AGENT:
            return []
        settings = policy.detectors.protected_field
        if not settings.enabled:
            return []
        agent = policy.agent(event.actor.id)
        if agent is None:
            return []
        findings: list[Finding] = []
        pause = policy.pauses_on_breach(event.actor.id)
        why_object = object_violation(agent, event.object_type.value)
        if why_object and event.operation in ("create", "update", "delete", "merge", "restore"):
            findings.append(
                finding_for(
                    obs,
                    self.name,
                    Severity.CRITICAL,
                    f"agent {event.actor.id} wrote a {event.object_type.value} record ({why_object})",
                    group=f"object:{event.object_type.value}",
                    pause=pause,
                    details={"reason": why_object, "object_type": event.object_type.value},
                )
            )
            return findings
        creating = _creating(obs, state, settings)
        for change in event.changes:
            prior = obs.priors.get(change.field)
            if prior is not None and prior.value == change.new:
                continue
            why = scope_violation(agent, policy, event.source, change.field, creating)
            if why is None:
                continue
            findings.append(
                finding_for(
                    obs,
                    self.name,
                    Severity.CRITICAL,
                    f"agent {event.actor.id} wrote protected field {policy.field_label(event.source, change.field)} ({why})",
                    group=change.field,
                    pause=pause,
                    details={
                        "reason": why,
                        "field": change.field,
                        "tier": policy.tier_of(event.source, change.field).value,
                    },
                )
            )
        return findings


def _creating(obs: Observation, state: State, settings: ProtectedFieldSettings) -> bool:
    """True for a creation, and for the agent's changes to a record it created within the window.

    Remembers the agent's recent creations (the state entry of the agent's actor key)."""
    event = obs.event
    key = obs.actor_key
    now = event.occurred_at
    if event.operation == "create":
        entry = state.get(key)
        created: dict[str, int] = {} if entry is None else entry["c"]
        _expire(created, now, settings.creation_window)
        created.pop(event.record_key, None)
        created[event.record_key] = now
        while len(created) > settings.max_recent_creations:
            del created[next(iter(created))]
        state[key] = {"c": created}
        return True
    if event.operation != "update" or key not in state:
        return False
    created = state[key]["c"]
    at = created.get(event.record_key)
    return at is not None and 0 <= now - at <= settings.creation_window


def _expire(created: dict[str, int], now: int, window: int) -> None:
    for record in [r for r, at in created.items() if now - at > window]:
        del created[record]
