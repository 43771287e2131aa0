"""stage_anomaly: deal-stage moves by agents that a sales rep would not have made.

Whose moves are judged: `watch_kinds`, by default agents and writers no rule maps (`unknown`: an
agent nobody registered yet looks like that, and the case we start from had no policy at all).
Known integrations, automations, imports and people are not judged. Escalation and pausing are
for agents only: an unknown writer cannot be told to stop.

Three detectors, one per stage:

`StageAnomalyDetector` (RECORD, `stage_anomaly`). For every deal it keeps when it was first seen,
when a human last changed it, and its pipeline. When an agent moves a deal's stage (the stage
field changes, or Pipedrive's `status` becomes won/lost) it checks, against the pipeline's stage
order (pipelines_default.py, overridable in `pipelines`):
  * `skip`: forward past at least `min_skipped_stages` (2) open stages;
  * `backwards`: to an earlier open stage, or reopening a won/lost deal;
  * `closing`: to won or lost;
  * `owner_inactive`: the deal's owner did not change it for `owner_inactive_after` (14d) (and
    the guard has watched it at least that long). The owner is the deal's owner field
    (`owner_fields`); a change is the owner's when its human actor's user id is the owner's:
    directly where owner ids are user ids (`owners_are_users`: Salesforce, Pipedrive), through
    `owner_user_ids` elsewhere (HubSpot owner ids are not user ids). A new owner's clock starts
    at the assignment. When the owner is unknown or cannot be tied to a user, any human's
    change stands in for the owner's.
One finding per reason, group = reason, severity from `severities` (merged over the shipped
ones: warning; owner_inactive info:
tidying stale deals is a common agent task, so it is evidence, not an alert on its own).
State: one entry per deal `{"f": first_seen, "h": last_human_ms, "p": pipeline}`, plus `"o":
owner` and `"oa": the owner's last change (or assignment) ms` once an owner is seen (~100-150
bytes); `compact()` drops deals idle for `retention` (90d). Cost: deals only, O(changes).

`SupportContextDetector` (LINK, `stage_support_context`): the case we start from, a deal stage
moved on a support e-mail. Keyed by account (`source/company/id`, `source/contact/id`, from the
event's related records, at most `max_accounts_per_event`). Tickets (`support_object_types`,
`support_source_object_types`) and support activities (related to a ticket, or a field matching
`support_markers`, e.g. an e-mail to support@, a Salesforce EmailMessage whose ParentId is a Case)
record the account's last support time; activities by humans that are not support (calls,
meetings, e-mails, notes) record its last sales time; edits of a deal are bookkeeping, not sales
activity, and do not count. An agent's stage move on a deal of
the account while support happened within `support_window` (7d) and no sales activity did gives
a `stage_anomaly` finding, group `after_support`, warning. State: one entry per account
`{"s": support_ms, "se": support event id, "h": sales_ms, "t": last_ms}`.

`StageEscalationDetector` (ACTOR, `stage_anomaly_escalation`, on_finding): a single wrong move
warns; `escalate_after` (3) distinct deals with warning-or-worse stage anomalies by one agent
within `escalate_window` (24h) is a critical `stage_anomaly` finding (group `repeated`) that
pauses the agent when `pause_on_escalation` and the policy pauses on breach. Only agents.
State: `{"r": {deal_key: at}}` per agent, at most max(64, 2 x escalate_after) deals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from detectors.base import (
    Finding,
    Observation,
    Severity,
    Stage,
    State,
    actor_label,
    drop_older_than,
    finding_for,
)
from detectors.events import ActorKind, ObjectType
from detectors.pipelines_default import PIPELINE_FIELDS, STATUS_FIELDS, StageOrder, resolve, stage_field
from detectors.policy import Policy
from detectors.settings import DEFAULT_STAGE_SEVERITIES, StageAnomalySettings
from detectors.values import FieldPatterns, finding_from, same_value

_AGENT = ActorKind.AGENT
_HUMAN = ActorKind.HUMAN
_DEAL = ObjectType.DEAL
_ACTIVITY = ObjectType.ACTIVITY
_TICKET = ObjectType.TICKET

DETECTOR = "stage_anomaly"
DAY_MS = 86_400_000
_ACCOUNT_TYPES = (ObjectType.COMPANY, ObjectType.CONTACT)


@dataclass(frozen=True, slots=True)
class Move:
    """A deal's stage change: the field, the stage before (None when unknown) and after."""

    field: str
    before: str | None
    after: str
    status_close: str | None = None  # "won"/"lost" when the move is a Pipedrive status change


def _text(value: Any) -> str:
    return str(value).strip()[:64]


def stage_move(obs: Observation, settings: StageAnomalySettings) -> Move | None:
    """The stage move an event makes, or None (not a deal, no stage change, or the same stage)."""
    event = obs.event
    if event.object_type is not _DEAL:
        return None
    field_name = stage_field(settings, event.source)
    status = STATUS_FIELDS.get(event.source)
    for change in event.changes:
        if change.field == field_name and change.new is not None and _text(change.new):
            prior = obs.priors.get(change.field)
            before = None if prior is None or prior.value is None else _text(prior.value)
            if before is not None and same_value(before, change.new):
                return None
            return Move(change.field, before, _text(change.new))
        if status is not None and change.field == status[0] and isinstance(change.new, str):
            value = change.new.strip().lower()
            closed = "won" if value in status[1] else "lost" if value in status[2] else None
            prior = obs.priors.get(change.field)
            before = None if prior is None or prior.value is None else _text(prior.value)
            if closed and (before is None or before.lower() != value):
                return Move(change.field, before, value, status_close=closed)
    return None


class StageAnomalyDetector:
    """RECORD stage: one deal's history against its pipeline (see module docstring)."""

    name: ClassVar[str] = DETECTOR
    stage: ClassVar[Stage] = Stage.RECORD

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        settings = policy.detectors.stage_anomaly
        event = obs.event
        if not settings.enabled or event.object_type is not _DEAL:
            return []
        key = event.record_key
        now = event.occurred_at
        entry = state.get(key)
        first_event = entry is None
        if entry is None:
            entry = {"f": now, "h": 0, "p": None}
        last_human = entry["h"]
        for prior in obs.priors.values():
            if prior is not None and prior.actor_kind is _HUMAN and prior.at > last_human:
                last_human = prior.at
        pipeline_field = PIPELINE_FIELDS.get(event.source)
        pipeline = entry["p"]
        for change in event.changes:
            if change.field == pipeline_field and change.new is not None:
                pipeline = _text(change.new)
        actor = event.actor
        findings: list[Finding] = []
        if actor.kind.value in settings.watch_kinds:
            move = stage_move(obs, settings)
            if move is not None:
                findings = self._judge(obs, move, entry, last_human, pipeline, first_event, settings)
        _follow_owner(event, entry, settings)
        if actor.kind is _HUMAN:
            last_human = max(last_human, now)
        entry["h"] = last_human
        entry["p"] = pipeline
        entry["f"] = min(entry["f"], now)
        state[key] = entry
        return findings

    def _judge(
        self,
        obs: Observation,
        move: Move,
        entry: dict[str, Any],
        last_human: int,
        pipeline: str | None,
        first_event: bool,
        settings: StageAnomalySettings,
    ) -> list[Finding]:
        now = obs.event.occurred_at
        reasons: dict[str, str] = {}
        skipped = 0
        before = move.before.casefold() if move.before is not None else None
        after = move.after.casefold()
        order: StageOrder | None = None
        if move.status_close:
            reasons["closing"] = f"closed it as {move.status_close}"
        else:
            order = resolve(settings, obs.event.source, pipeline, before, after)
            if order is not None:
                closed_after = order.closed(after)
                if closed_after:
                    reasons["closing"] = f"closed it as {closed_after}"
                if before is not None:
                    if order.closed(before) and not closed_after:
                        reasons["backwards"] = "reopened a closed deal"
                    elif before in order.positions and after in order.positions:
                        step = order.positions[after] - order.positions[before]
                        if step < 0:
                            reasons["backwards"] = f"moved it back {-step} stage(s)"
                        elif step - 1 >= settings.min_skipped_stages:
                            skipped = step - 1
                            reasons["skip"] = f"skipped {skipped} stages"
        owner = entry.get("o")
        by_owner = owner is not None and owner_user(settings, obs.event.source, owner) is not None
        idle_since = (entry.get("oa") or entry["f"]) if by_owner else (last_human or entry["f"])
        if not first_event and now - idle_since > settings.owner_inactive_after:
            days = (now - idle_since) // DAY_MS
            if by_owner:
                reasons["owner_inactive"] = f"its owner ({owner}) did not touch it for {days} days"
            else:
                reasons["owner_inactive"] = (
                    f"no human touched it for {days} days"
                    if last_human
                    else f"no human touched it in {days} days watched"
                )
        if not reasons:
            return []
        who = actor_label(obs)
        base = {
            "field": move.field,
            "from": move.before,
            "to": move.after,
            "pipeline": order.pipeline if order is not None else pipeline,
            "reasons": sorted(reasons),
            "last_human_at": last_human or None,
        }
        if owner is not None:
            base["owner"] = owner
            base["owner_acted_at"] = entry.get("oa") if by_owner else None
        findings = []
        for reason in sorted(reasons):
            severity = _severity(settings, reason)
            details = {**base, "reason": reason}
            if reason == "skip":
                details["skipped"] = skipped
            summary = (
                f"{who} moved deal {obs.event.record_id} from {move.before or '?'} to {move.after}: "
                f"{reasons[reason]}"
            )
            findings.append(finding_for(obs, DETECTOR, severity, summary, group=reason, details=details))
        return findings

    @staticmethod
    def compact(state: State, now_ms: int, settings: StageAnomalySettings | None = None) -> int:
        """Drop deals idle for `retention` (by their last human change or first sight)."""
        retention = (settings or StageAnomalySettings()).retention
        stale = [k for k, v in state.items() if max(v["h"], v["f"], v.get("oa", 0)) < now_ms - retention]
        for key in stale:
            del state[key]
        return len(stale)

    def compact_state(self, state: State, now_ms: int, policy: Policy) -> int:
        """`compact` with the policy's `stage_anomaly.retention`: what the stages call once per
        `pipeline.COMPACT_EVERY_MS` of event time."""
        return self.compact(state, now_ms, policy.detectors.stage_anomaly)


def owner_value(value: Any) -> str | None:
    """An owner field's value as an id: Pipedrive v1 may send `{"id": 7, "name": ...}`."""
    if isinstance(value, dict):
        value = value.get("id", value.get("value"))
    if value is None or isinstance(value, (bool, list, dict)):
        return None
    return _text(value) or None


def _user_key(vendor: str, user_id: str) -> str:
    # Salesforce ids come in a 15-character case-sensitive and an 18-character form; the first
    # 15 characters are the same record.
    return user_id[:15] if vendor == "salesforce" and len(user_id) == 18 else user_id


def owner_user(settings: StageAnomalySettings, vendor: str, owner: str) -> str | None:
    """The user id change events name for a deal owner, or None when the two cannot be tied."""
    mapped = settings.owner_user_ids.get(vendor, {}).get(owner)
    if mapped is not None:
        return _user_key(vendor, str(mapped))
    return _user_key(vendor, owner) if vendor in settings.owners_are_users else None


def _follow_owner(event: Any, entry: dict[str, Any], settings: StageAnomalySettings) -> None:
    """Keep the deal's owner and when the owner last changed it (an assignment counts)."""
    fields = settings.owner_fields.get(event.source)
    if fields:
        for change in event.changes:
            if change.field in fields:
                owner = owner_value(change.new)
                if owner != entry.get("o"):
                    if owner is None:
                        entry.pop("o", None)
                    else:
                        entry["o"] = owner
                    entry["oa"] = event.occurred_at
    owner = entry.get("o")
    user = event.actor.identity.user_id
    if owner is None or not user or event.actor.kind is not _HUMAN:
        return
    if owner_user(settings, event.source, owner) == _user_key(event.source, user):
        entry["oa"] = event.occurred_at


_SUPPORT = "support"
_SALES = "sales"
_MOVE = "move"
_NEVER_CONTEXT = frozenset({ObjectType.CONTACT, ObjectType.COMPANY, ObjectType.LEAD})
_NOTHING: tuple[str | None, list[str], Move | None] = (None, [], None)


class SupportContextDetector:
    """LINK stage: support and sales activity per account; agent stage moves right after support."""

    name: ClassVar[str] = "stage_support_context"
    stage: ClassVar[Stage] = Stage.LINK

    def __init__(self) -> None:
        self._compiled: (
            tuple[StageAnomalySettings, FieldPatterns, list[tuple[str, re.Pattern[str]]]] | None
        ) = None
        self._last: tuple[str, int, tuple[str | None, list[str], Move | None]] | None = None

    def _rules(
        self, settings: StageAnomalySettings
    ) -> tuple[FieldPatterns, list[tuple[str, re.Pattern[str]]]]:
        held = self._compiled
        if held is None or held[0] is not settings:
            held = (
                settings,
                FieldPatterns(settings.support_source_object_types),
                [(f.lower(), re.compile(p)) for f, p in settings.support_markers.items()],
            )
            self._compiled = held
        return held[1], held[2]

    def _classify(self, obs: Observation, policy: Policy) -> tuple[str | None, list[str], Move | None]:
        event = obs.event
        held = self._last
        if held is not None and held[0] == event.event_id and held[1] == id(policy):
            return held[2]
        result = self._compute(obs, policy.detectors.stage_anomaly)
        self._last = (event.event_id, id(policy), result)
        return result

    def _compute(
        self, obs: Observation, settings: StageAnomalySettings
    ) -> tuple[str | None, list[str], Move | None]:
        if not settings.enabled:
            return _NOTHING
        event = obs.event
        kind = event.object_type
        actor = event.actor.kind
        mover = kind is _DEAL and actor.value in settings.watch_kinds
        if kind in _NEVER_CONTEXT or (kind is _DEAL and not mover):
            return _NOTHING  # the bulk of the stream: people and companies, humans' deal edits
        role: str | None = None
        move: Move | None = None
        source_types, markers = self._rules(settings)
        if kind.value in settings.support_object_types or source_types.matches(event.source_object_type):
            role = _SUPPORT
        elif kind is _ACTIVITY:
            if any(r.object_type is _TICKET and not r.removed for r in obs.related) or _marked(
                obs, markers
            ):
                role = _SUPPORT
            elif actor is _HUMAN:
                role = _SALES
        elif mover:
            move = stage_move(obs, settings)
            role = _MOVE if move is not None else None
        if role is None:
            return _NOTHING
        keys = [
            f"{event.source}/{r.object_type.value}/{r.record_id}"
            for r in obs.related
            if r.object_type in _ACCOUNT_TYPES and not r.removed
        ][: settings.max_accounts_per_event]
        return role, keys, move

    def link_keys(self, obs: Observation, policy: Policy) -> list[str]:
        """The accounts (companies, contacts) the event's record is associated with."""
        return list(self._classify(obs, policy)[1])

    def observe_link(self, key: str, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        role, _, move = self._classify(obs, policy)
        if role is None:
            return []
        settings = policy.detectors.stage_anomaly
        event = obs.event
        now = event.occurred_at
        entry = state.get(key)
        if role == _MOVE:
            if entry is None or move is None:
                return []
            window_start = now - settings.support_window
            support_at = entry["s"]
            if not (support_at and window_start < support_at <= now):
                return []
            if entry["h"] and window_start < entry["h"] <= now:
                return []
            minutes = (now - support_at) // 60_000
            summary = (
                f"{actor_label(obs)} moved deal {event.record_id} from {move.before or '?'} to {move.after} "
                f"{minutes} min after support activity on {key.split('/', 1)[1]}, with no sales activity"
            )
            return [
                finding_for(
                    obs,
                    DETECTOR,
                    _severity(settings, "after_support"),
                    summary,
                    group="after_support",
                    details={
                        "reason": "after_support",
                        "field": move.field,
                        "from": move.before,
                        "to": move.after,
                        "account": key,
                        "support_event_id": entry["se"],
                        "support_at": support_at,
                        "minutes_after_support": minutes,
                        "last_sales_at": entry["h"] or None,
                    },
                )
            ]
        if entry is None:
            entry = {"s": 0, "se": "", "h": 0, "t": 0}
        if role == _SUPPORT and now >= entry["s"]:
            entry["s"] = now
            entry["se"] = event.event_id
        elif role == _SALES:
            entry["h"] = max(entry["h"], now)
        entry["t"] = max(entry["t"], now)
        state[key] = entry
        return []

    @staticmethod
    def compact(state: State, now_ms: int, settings: StageAnomalySettings | None = None) -> int:
        """Drop accounts whose last support and sales activity is older than the support window."""
        window = (settings or StageAnomalySettings()).support_window
        return drop_older_than(state, now_ms - window)

    def compact_state(self, state: State, now_ms: int, policy: Policy) -> int:
        """`compact` with the policy's `stage_anomaly.support_window`: what the stages call once per
        `pipeline.COMPACT_EVERY_MS` of event time."""
        return self.compact(state, now_ms, policy.detectors.stage_anomaly)


def _severity(settings: StageAnomalySettings, reason: str) -> Severity:
    """The configured severity of a reason; reasons the policy does not name keep the shipped one."""
    return Severity(settings.severities.get(reason) or DEFAULT_STAGE_SEVERITIES.get(reason, "warning"))


def _marked(obs: Observation, markers: list[tuple[str, re.Pattern[str]]]) -> bool:
    if not markers:
        return False
    for change in obs.event.changes:
        if isinstance(change.new, str):
            low = change.field.lower()
            for field, pattern in markers:
                if field == low and pattern.search(change.new):
                    return True
    return False


class StageEscalationDetector:
    """ACTOR stage: repeated stage anomalies by one agent become critical (see module docstring)."""

    name: ClassVar[str] = "stage_anomaly_escalation"
    stage: ClassVar[Stage] = Stage.ACTOR

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        """Nothing per ordinary event: this detector learns from stage_anomaly findings."""
        return []

    def on_finding(self, finding: Finding, state: State, policy: Policy) -> list[Finding]:
        settings = policy.detectors.stage_anomaly
        if (
            not settings.enabled
            or finding.detector != DETECTOR
            or finding.group == "repeated"
            or finding.severity is Severity.INFO
            or finding.actor_kind is not _AGENT
            or not finding.agent
        ):
            return []
        key = finding.actor_key
        now = finding.occurred_at
        entry = state.get(key)
        if entry is None:
            entry = {"r": {}}
        deals: dict[str, int] = entry["r"]
        horizon = now - settings.escalate_window
        for deal in [d for d, at in deals.items() if at <= horizon]:
            del deals[deal]
        fresh = finding.record_key not in deals
        if fresh:
            deals[finding.record_key] = now
            cap = max(64, 2 * settings.escalate_after)
            while len(deals) > cap:
                del deals[next(iter(deals))]
        elif deals[finding.record_key] < now:
            deals[finding.record_key] = now
        state[key] = entry
        count = len(deals)
        if not fresh or count < settings.escalate_after:
            return []
        hours = settings.escalate_window / 3_600_000
        pause = settings.pause_on_escalation and policy.pauses_on_breach(finding.agent)
        return [
            finding_from(
                finding,
                DETECTOR,
                Severity.CRITICAL,
                f"agent {finding.agent} made wrong-looking stage moves on {count} deals within {hours:g}h "
                f"(latest: {finding.group})",
                group="repeated",
                pause=pause,
                details={
                    "deals": count,
                    "window_ms": settings.escalate_window,
                    "latest_reason": finding.group,
                    "sample_deals": list(deals)[-5:],
                },
            )
        ]
