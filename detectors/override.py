"""override: a human changing a field shortly after an agent changed it.

Rule. When an agent changes a field, remember (per record and field) the agent, its value, the
value it replaced (from the record state's prior; kept from the agent's first change when it
changes the field again) and the time. When a human then changes that field within `window`
(72h) and the value the human changed was still the agent's (nobody else wrote it in between),
that is an override, reported as an `info` finding `override` (group: the field):
  * `revert`: the human restored the value from before the agent's change;
  * `correct`: the human set some other value (blanking included).
Deal stages are different: a rep moving a deal further along after the agent's move (or closing
it, won or lost) is the deal progressing, not disagreement. On a deal's stage field (the vendor's
stage field of pipelines_default.py, or `stage_anomaly.stage_fields`) only a move back to the
stage before the agent's change (`revert`), or to another stage earlier in the pipeline than the
agent's (`correct`), is an override; the order is stage_anomaly's (its `pipelines` over the
vendors' defaults), and a stage no pipeline knows still counts (`stage_progress_is_override`
true counts every move, as before). Fields that follow the stage (`stage_derived_fields`:
Salesforce's Probability and ForecastCategoryName, HubSpot's stage probability) changed by the
agent in its stage-move event and by the human along with a forward move are part of that
progress, not corrections.
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

from sys import intern
from typing import Any, ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State, drop_older_than
from detectors.events import ActorKind, JsonValue, ObjectType
from detectors.pipelines_default import PIPELINE_FIELDS, progress, stage_field, stage_value
from detectors.policy import Policy
from detectors.settings import OverrideSettings
from detectors.values import FieldPatterns, safe_value, same_value

_AGENT = ActorKind.AGENT
_HUMAN = ActorKind.HUMAN
_DEAL = ObjectType.DEAL

_BY, _AT, _VALUE, _BEFORE, _KNOWN, _EVENT = range(6)  # slots of a remembered write


class OverrideDetector:
    """Humans overriding agents' changes within the window (see module docstring)."""

    name: ClassVar[str] = "override"
    stage: ClassVar[Stage] = Stage.RECORD

    def __init__(self) -> None:
        self._patterns: tuple[OverrideSettings, FieldPatterns, FieldPatterns] | None = None

    @staticmethod
    def loaded(entry: dict[str, Any]) -> dict[str, Any]:
        """An entry decoded from the changelog: agent ids interned and one object per agent event
        id, as they were before they were written (JSON decoding copies every occurrence)."""
        ids: dict[str, str] = {}
        try:
            for held in entry["f"].values():
                held[0] = intern(held[0])
                held[5] = ids.setdefault(held[5], held[5])
        except (KeyError, IndexError, TypeError, AttributeError):
            pass  # not the layout this class writes: kept as decoded (only sharing is lost)
        return entry

    def _ignored(self, settings: OverrideSettings) -> FieldPatterns:
        return self._compiled(settings)[1]

    def _derived(self, settings: OverrideSettings) -> FieldPatterns:
        return self._compiled(settings)[2]

    def _compiled(self, settings: OverrideSettings) -> tuple[OverrideSettings, FieldPatterns, FieldPatterns]:
        held = self._patterns
        if held is None or held[0] is not settings:
            derived = FieldPatterns(settings.stage_derived_fields)
            held = (settings, FieldPatterns(settings.ignore_fields), derived)
            self._patterns = held
        return held

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
        moved_on, moved_on_field = self._moved_on(obs, fields, policy, settings)
        derived = self._derived(settings)
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
            if (
                moved_on is not None
                and held[_EVENT] == moved_on
                and (change.field == moved_on_field or derived.matches(change.field))
            ):
                continue  # the rep took the deal further (its stage, and what follows it): progress
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
        agent = intern(event.actor.id)  # shared by every record it wrote
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
    def _moved_on(
        obs: Observation, fields: dict[str, list[Any]], policy: Policy, settings: OverrideSettings
    ) -> tuple[str | None, str | None]:
        """(the agent's event whose stage move a human took further along, the stage field), or
        (None, None). Fields in `stage_derived_fields` the agent changed in that same event and the
        human changes along with the stage (Salesforce's Probability and ForecastCategoryName follow
        StageName) are part of the progress too. A return to the stage before the agent's change is
        never progress."""
        event = obs.event
        if settings.stage_progress_is_override or event.object_type is not _DEAL:
            return None, None
        stages = policy.detectors.stage_anomaly
        name = stage_field(stages, event.source)
        if name is None or event.actor.kind is not _HUMAN:
            return None, None
        change = next((c for c in event.changes if c.field == name), None)
        held = fields.get(name) if change is not None else None
        if change is None or held is None or change.new is None:
            return None, None
        if held[_KNOWN] and same_value(change.new, held[_BEFORE], loose=False):
            return None, None  # a revert, whatever the order says
        pipeline_field = PIPELINE_FIELDS.get(event.source)
        pipeline = next(
            (str(c.new).strip() for c in event.changes if c.field == pipeline_field and c.new is not None),
            None,
        )
        step = progress(stages, event.source, pipeline, stage_value(held[_VALUE]), stage_value(change.new))
        if step is None or step <= 0:
            return None, None
        return held[_EVENT], name

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
            f"human {event.source} user {event.actor.id} {verb} agent {agent}'s change of {policy.field_label(event.source, field)} on "
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
        return drop_older_than(state, now_ms - window)

    def compact_state(self, state: State, now_ms: int, policy: Policy) -> int:
        """`compact` with the policy's `override.window`: what the stages call once per
        `pipeline.COMPACT_EVERY_MS` of event time."""
        return self.compact(state, now_ms, policy.detectors.override)


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
