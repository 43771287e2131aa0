"""protected_field: an agent writes outside its scope.

Rule: for a change by a named agent, a finding when the object type is denied (or not in its
allowed list), when a field matches its `denied_fields`, when `allowed_fields` is set and the
field matches none of it, or when the field is high tier and the agent is not `high_tier_allowed`.
On creates only explicit denials count (setting fields of a new record overwrites nothing).
A write that does not change the known value is ignored. Critical, and a pause when the policy
pauses on breach. Group: the field (or the object type), so each field is one alert.

State: none. Cost per event: a few compiled-pattern matches per changed field (cached per policy).
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from typing import ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State, finding_for
from detectors.events import ActorKind
from detectors.policy import AgentPolicy, Policy, Tier


@lru_cache(maxsize=1024)
def _pattern(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns))


def field_matches(patterns: list[str] | None, field: str) -> bool:
    """True when the field matches one of the shell-glob patterns (case-insensitive)."""
    compiled = _pattern(tuple(patterns or ()))
    return compiled is not None and compiled.fullmatch(field.lower()) is not None


def scope_violation(agent: AgentPolicy, policy: Policy, source: str, field: str, creating: bool) -> str | None:
    """Why writing `field` is out of the agent's scope, or None. Shared with the proposal gate."""
    if field_matches(agent.denied_fields, field):
        return "denied_field"
    if creating:
        return None
    if agent.allowed_fields is not None and not field_matches(agent.allowed_fields, field):
        return "not_allowed_field"
    if not agent.high_tier_allowed and policy.tier_of(source, field) is Tier.HIGH:
        if agent.allowed_fields is None or not field_matches(agent.allowed_fields, field):
            return "high_tier_field"
    return None


def object_violation(agent: AgentPolicy, object_type: str) -> str | None:
    """Why the agent may not write this object type, or None."""
    if object_type in {t.value for t in agent.denied_object_types}:
        return "denied_object_type"
    if agent.allowed_object_types is not None and object_type not in {t.value for t in agent.allowed_object_types}:
        return "not_allowed_object_type"
    return None


class ProtectedFieldDetector:
    name: ClassVar[str] = "protected_field"
    stage: ClassVar[Stage] = Stage.ACTOR

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        event = obs.event
        if event.actor.kind is not ActorKind.AGENT:
            return []
        agent = policy.agent(event.actor.id)
        if agent is None:
            return []
        findings: list[Finding] = []
        pause = policy.pauses_on_breach(event.actor.id)
        why_object = object_violation(agent, event.object_type.value)
        if why_object and event.operation in ("create", "update", "delete", "merge", "restore"):
            findings.append(finding_for(
                obs, self.name, Severity.CRITICAL,
                f"agent {event.actor.id} wrote a {event.object_type.value} record ({why_object})",
                group=f"object:{event.object_type.value}", pause=pause,
                details={"reason": why_object, "object_type": event.object_type.value},
            ))
            return findings
        creating = event.operation == "create"
        for change in event.changes:
            prior = obs.priors.get(change.field)
            if prior is not None and prior.value == change.new:
                continue
            why = scope_violation(agent, policy, event.source, change.field, creating)
            if why is None:
                continue
            findings.append(finding_for(
                obs, self.name, Severity.CRITICAL,
                f"agent {event.actor.id} wrote protected field {change.field} ({why})",
                group=change.field, pause=pause,
                details={"reason": why, "field": change.field,
                         "tier": policy.tier_of(event.source, change.field).value},
            ))
        return findings
