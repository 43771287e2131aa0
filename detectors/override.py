"""override: a human changing a field shortly after an agent changed it.

Rule. When an agent changes a field, remember (per record and field) the agent, its value, the
value it replaced (from the record state's prior; kept from the agent's first change when it
changes the field again) and the time. When a human then changes that field within `window`
(72h) and the value the human changed was still the agent's (nobody else wrote it in between),
that is an override, reported as an `info` finding `override` (group: the field):
  * `revert`: the human restored the value from before the agent's change;
  * `correct`: the human set some other value (blanking included).
A human setting the agent's own value again confirms it and ends the watch; automation, imports,
integrations or another agent writing the field end it too (the agent's value is gone, but not
by a person's judgement). Humans correcting humans never produce anything: only agent writes are
remembered.

The finding is the agent's: `actor_key`, `actor_kind` and `agent` name the agent (so it reaches
the agent's partition, override_rate and guard.feedback); the human is in `details.human`.
Details: agent, record_key, field, tier, agent_value, human_value, previous_value (None with
previous_known False when the guard never saw it), delay_ms, kind (revert|correct),
agent_event_id. E-mail and phone values are masked (values.safe_value).

State key: the record key (RECORD stage); only records an agent wrote within the window have an
entry: `{"f": {field: [agent, at, agent_value, before, before_known, agent_event_id]}, "t": last}`,
values cut to `max_value_chars` (256), at most `max_fields_per_record` (64) fields; expired fields
are dropped on every touch of the record and the entry when empty; `compact()` drops records whose
every field expired. Idempotent: a human's event consumes the entry, so a redelivery finds nothing;
record state already drops redelivered events before this stage. Cost per event: one dict lookup
for records no agent touched; O(changed fields) otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State
from detectors.events import ActorKind, JsonValue
from detectors.policy import Policy
from detectors.settings import OverrideSettings
from detectors.values import FieldPatterns, safe_value, same_value

_AGENT = ActorKind.AGENT
_HUMAN = ActorKind.HUMAN

_BY, _AT, _VALUE, _BEFORE, _KNOWN, _EVENT = range(6)  # slots of a remembered write


class OverrideDetector:
    """Humans overriding agents' changes within the window (see module docstring)."""

    name: ClassVar[str] = "override"
    stage: ClassVar[Stage] = Stage.RECORD

    def __init__(self) -> None:
        self._patterns: tuple[OverrideSettings, FieldPatterns] | None = None

    def _ignored(self, settings: OverrideSettings) -> FieldPatterns:
        held = self._patterns
        if held is None or held[0] is not settings:
            held = (settings, FieldPatterns(settings.ignore_fields))
            self._patterns = held
        return held[1]

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        settings = policy.detectors.override
        event = obs.event
        if not settings.enabled or event.operation == "gap":
            return []
        key = event.record_key
        if event.operation == "delete":
            state.pop(key, None)
            return []
        entry = state.get(key)
        actor = event.actor
        if actor.kind is _AGENT:
            self._remember(obs, key, entry, state, settings)
            return []
        if entry is None:
            return []
        now = event.occurred_at
        ignored = self._ignored(settings)
        fields: dict[str, list[Any]] = entry["f"]
        findings: list[Finding] = []
        for change in event.changes:
            held = fields.get(change.field)
            if held is None or ignored.matches(change.field):
                continue
            if now < held[_AT]:
                continue  # older than the agent's change: arrived out of order, not a reaction to it
            if now - held[_AT] > settings.window or actor.kind is not _HUMAN:
                del fields[change.field]
                continue
            prior = obs.priors.get(change.field)
            if prior is not None and (
                prior.actor_kind is not _AGENT or prior.actor_id != held[_BY]
            ):
                del fields[change.field]  # someone else wrote it in between: not the agent's value any more
                continue
            del fields[change.field]
            if same_value(change.new, held[_VALUE], loose=False):
                continue  # the human confirmed the agent's value
            findings.append(self._finding(obs, change.field, change.new, held, policy, settings))
        self._prune(entry, now, settings)
        if entry["f"]:
            entry["t"] = max(entry["t"], now)
            state[key] = entry
        else:
            del state[key]
        return findings

    def _remember(
        self,
        obs: Observation,
        key: str,
        entry: dict[str, Any] | None,
        state: State,
        settings: OverrideSettings,
    ) -> None:
        event = obs.event
        agent = event.actor.id
        now = event.occurred_at
        ignored = self._ignored(settings)
        limit = settings.max_value_chars
        changed = False
        for change in event.changes:
            if ignored.matches(change.field):
                continue
            if entry is None:
                entry = {"f": {}, "t": now}
            fields: dict[str, list[Any]] = entry["f"]
            held = fields.get(change.field)
            prior = obs.priors.get(change.field)
            if held is not None and now < held[_AT]:
                continue  # out of order: the later write stays
            if (
                held is not None
                and held[_BY] == agent
                and now - held[_AT] <= settings.window
                and (prior is None or (prior.actor_kind is _AGENT and prior.actor_id == agent))
            ):
                before, known = held[_BEFORE], held[_KNOWN]  # the agent changed it again: keep the original
            else:
                before = None if prior is None else _cut(prior.value, limit)
                known = prior is not None
            fields.pop(change.field, None)
            fields[change.field] = [agent, now, _cut(change.new, limit), before, known, event.event_id]
            while len(fields) > settings.max_fields_per_record:
                del fields[next(iter(fields))]
            changed = True
        if changed and entry is not None:
            self._prune(entry, now, settings)
            entry["t"] = max(entry["t"], now)
            state[key] = entry

    @staticmethod
    def _prune(entry: dict[str, Any], now: int, settings: OverrideSettings) -> None:
        fields = entry["f"]
        for name in [n for n, held in fields.items() if now - held[_AT] > settings.window]:
            del fields[name]

    def _finding(
        self,
        obs: Observation,
        field: str,
        human_value: JsonValue,
        held: list[Any],
        policy: Policy,
        settings: OverrideSettings,
    ) -> Finding:
        event = obs.event
        agent = held[_BY]
        revert = bool(held[_KNOWN]) and same_value(human_value, held[_BEFORE], loose=False)
        kind = "revert" if revert else "correct"
        delay = event.occurred_at - held[_AT]
        limit = settings.max_value_chars
        tier = policy.tier_of(event.source, field)
        verb = "reverted" if revert else "corrected"
        summary = (
            f"human {event.source} user {event.actor.id} {verb} agent {agent}'s change of {field} on "
            f"{event.object_type.value} {event.record_id} after {_span(delay)}"
        )
        return Finding(
            detector=self.name,
            severity=Severity.INFO,
            actor_key=agent,
            actor_kind=_AGENT,
            agent=agent,
            event_id=event.event_id,
            occurred_at=event.occurred_at,
            record_key=event.record_key,
            object_type=event.object_type.value,
            summary=summary,
            group=field,
            details={
                "agent": agent,
                "record_key": event.record_key,
                "field": field,
                "tier": tier.value,
                "kind": kind,
                "agent_value": safe_value(field, held[_VALUE], limit),
                "human_value": safe_value(field, _cut(human_value, limit), limit),
                "previous_value": safe_value(field, held[_BEFORE], limit) if held[_KNOWN] else None,
                "previous_known": bool(held[_KNOWN]),
                "delay_ms": delay,
                "agent_event_id": held[_EVENT],
                "human": {"id": event.actor.id, "kind": event.actor.kind.value, "source": event.source},
            },
        )

    @staticmethod
    def compact(state: State, now_ms: int, settings: OverrideSettings | None = None) -> int:
        """Drop records whose every remembered agent write is older than the window."""
        window = (settings or OverrideSettings()).window
        stale = [k for k, v in state.items() if v["t"] < now_ms - window]
        for key in stale:
            del state[key]
        return len(stale)


def _cut(value: JsonValue, limit: int) -> JsonValue:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit]
    if isinstance(value, (list, dict)):
        text = repr(value)
        return value if len(text) <= limit else text[:limit]
    return value


def _span(ms: int) -> str:
    if ms >= 3_600_000:
        return f"{ms / 3_600_000:.1f}h"
    return f"{ms // 60_000} min"
