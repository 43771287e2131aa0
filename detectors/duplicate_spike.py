"""duplicate_spike: agents creating records that already exist, and a rise in doing so.

Two detectors, one per stage:

`DuplicateIndexDetector` (LINK, `duplicate_index`). Keyed by hashed identity (identity.py):
`email:..`, `name:..` (person name + company), `namephone:..` (person name + phone) for contacts
and leads; `domain:..`, `org:..`, `phone:..` for companies; scoped per vendor and per class
(a lead can duplicate a contact, never a company). Each key remembers which records carry that
identity. When a watched actor (`watch_kinds`: agents, integrations, unknown) creates a record, or
attaches an identity to one (HubSpot sends a contact's e-mail as a property change after the
creation), and another record already carries it, the result is an `info` finding
`duplicate_created` (group: the identity kind; details: matched record keys, hashed key). A
changed identity moves the record from the old key to the new one (old values from the record
state's priors); a merge removes the merged record ids from every key the merge event names; a
deletion removes the record from the keys of its values: those the event names (Pipedrive sends
them) or, when it names none (HubSpot, Salesforce), the record state's last known ones, which
it hands over as the deletion's priors. A merged-away record whose identities differ from the
survivor's stays in those keys until `retention` (merge events name the survivor's values only).
State: one entry per identity key, `{"r": {object_type/record_id: first_seen_ms}, "t": last_ms}`,
at most `max_records_per_identity` (16) ids, oldest dropped; `compact()` drops keys untouched for
`retention` (365d). Cost per event: only contacts, leads and companies with identity fields;
one sha256 per identity, ~20 us per phone number parsed.

`DuplicateSpikeDetector` (ACTOR, `duplicate_spike`, on_finding). Per actor key, the times of its
`duplicate_created` findings in a rolling `window` (24h) and an EWMA baseline of its daily count
(`baseline_alpha` 0.1 per day, starting at 0, decayed over idle days). Warning `duplicate_spike`
when the count in the window >= min(max(`min_count` (3), `k` (3) x baseline scaled to the window),
max(`min_count`, `ceiling_count` (10))), on that finding and every further one while it holds.
Statistical: never pauses.
The baseline must not learn a fault as normal: a day's count enters it at most at the threshold in
force that day (a burst of 30 duplicates teaches what 3 would), so the agent's next burst, on any
vendor, still warns at the third duplicate; and the ceiling caps what any history can excuse. A
genuinely higher normal is still learned, one threshold at a time (6 a day: silent after ~10 days).
State: `{"w": [times], "b": baseline, "d": day, "n": count that day, "e": recent event ids}`,
`w` capped at `max_times` (256). Cost: O(1) per duplicate finding; nothing per ordinary event.
"""

from __future__ import annotations

import bisect
from typing import Any, ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State, drop_older_than, finding_for
from detectors.identity import IdentityFields, extract, identity_class, identity_key
from detectors.policy import Policy
from detectors.settings import DuplicateSpikeSettings
from detectors.values import finding_from, first_seen

DAY_MS = 86_400_000
_OPERATIONS = frozenset({"create", "update", "merge", "delete", "restore"})
_CUR = "cur"
_OLD = "old"


class DuplicateIndexDetector:
    """LINK stage: the identity index, and `duplicate_created` findings (see module docstring)."""

    name: ClassVar[str] = "duplicate_index"
    stage: ClassVar[Stage] = Stage.LINK

    def __init__(self) -> None:
        self._fields: tuple[DuplicateSpikeSettings, IdentityFields, frozenset[str]] | None = None
        self._last: tuple[str, int, dict[str, tuple[str, str]]] | None = None
        self._is_identity: dict[str, bool] = {}

    def _identity_fields(self, settings: DuplicateSpikeSettings) -> tuple[IdentityFields, frozenset[str]]:
        held = self._fields
        if held is None or held[0] is not settings:
            fields = IdentityFields.of(
                email=settings.email_fields,
                phone=settings.phone_fields,
                first_name=settings.first_name_fields,
                last_name=settings.last_name_fields,
                full_name=settings.full_name_fields,
                company=settings.company_fields,
                domain=settings.domain_fields,
                org_name=settings.org_name_fields,
            )
            held = (settings, fields, fields.all_names())
            self._fields = held
            self._is_identity = {}
        return held[1], held[2]

    def _plan(self, obs: Observation, policy: Policy) -> dict[str, tuple[str, str]]:
        """Identity key -> (kind, role): `cur` for identities the record now has, `old` for left ones.

        Cached for the last event: the runtime calls link_keys and then observe_link per key.
        """
        event = obs.event
        held = self._last
        if held is not None and held[0] == event.event_id and held[1] == id(policy):
            return held[2]
        plan = self._compute(obs, policy)
        self._last = (event.event_id, id(policy), plan)
        return plan

    def _compute(self, obs: Observation, policy: Policy) -> dict[str, tuple[str, str]]:
        settings = policy.detectors.duplicate_spike
        event = obs.event
        klass = identity_class(event.object_type)
        if not settings.enabled or klass is None or event.operation not in _OPERATIONS:
            return {}
        fields, names = self._identity_fields(settings)
        known = self._is_identity
        hit = False
        for change in event.changes:  # priors name changed fields (and, on a delete, every known one)
            flag = known.get(change.field)
            if flag is None:
                flag = known[change.field] = change.field.lower() in names
            hit = hit or flag
        if event.operation == "delete":
            for name in obs.priors:
                flag = known.get(name)
                if flag is None:
                    flag = known[name] = name.lower() in names
                hit = hit or flag
        if not hit:
            return {}
        new_values = {c.field: c.new for c in event.changes if known[c.field]}
        old_values = {f: p.value for f, p in obs.priors.items() if p is not None and known.get(f)}
        scope = f"{event.source}|{klass}"
        region = settings.default_region
        plan: dict[str, tuple[str, str]] = {}
        if event.operation != "delete":
            for kind, value in extract(event.object_type, new_values, fields, region):
                plan[identity_key(kind, value, scope, settings.salt)] = (kind, _CUR)
        else:
            old_values = {**old_values, **new_values}
        if old_values:
            for kind, value in extract(event.object_type, old_values, fields, region):
                key = identity_key(kind, value, scope, settings.salt)
                plan.setdefault(key, (kind, _OLD))
        return plan

    def link_keys(self, obs: Observation, policy: Policy) -> list[str]:
        """The hashed identity keys this event adds the record to or removes it from."""
        return list(self._plan(obs, policy))

    def observe_link(self, key: str, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        item = self._plan(obs, policy).get(key)
        if item is None:
            return []
        kind, role = item
        settings = policy.detectors.duplicate_spike
        event = obs.event
        now = event.occurred_at
        record = f"{event.object_type.value}/{event.record_id}"
        entry = state.get(key)
        if role == _OLD:
            if entry is not None and record in entry["r"]:
                del entry["r"][record]
                if entry["r"]:
                    state[key] = entry
                else:
                    del state[key]
            return []
        if entry is None:
            entry = {"r": {}, "t": now}
        records: dict[str, int] = entry["r"]
        for merged in event.merged_record_ids:
            records.pop(f"{event.object_type.value}/{merged}", None)
        findings: list[Finding] = []
        if record not in records:
            others = [r for r in records if r != record]
            if (
                others
                and event.operation in ("create", "update")
                and event.actor.kind.value in settings.watch_kinds
            ):
                findings.append(self._finding(obs, key, kind, others, settings))
            records[record] = now
            while len(records) > settings.max_records_per_identity:
                del records[next(iter(records))]
        entry["t"] = max(entry["t"], now)
        state[key] = entry
        return findings

    def _finding(
        self, obs: Observation, key: str, kind: str, others: list[str], settings: DuplicateSpikeSettings
    ) -> Finding:
        event = obs.event
        actor = event.actor
        who = f"agent {actor.id}" if actor.kind.value == "agent" else f"{actor.kind.value} {actor.id}"
        matched = [f"{event.source}/{r}" for r in others[-settings.max_matches_reported :]]
        verb = "created" if event.operation == "create" else "gave"
        summary = (
            f"{who} {verb} {event.object_type.value} {event.record_id} "
            f"{'matching' if verb == 'created' else 'an identity of'} "
            f"{len(others)} existing record(s) by {kind}"
        )
        return finding_for(
            obs,
            "duplicate_created",
            Severity.INFO,
            summary,
            group=kind,
            details={
                "identity_kind": kind,
                "identity_key": key,
                "matched_record_keys": matched,
                "matches": len(others),
                "via": event.operation,
            },
        )

    @staticmethod
    def compact(state: State, now_ms: int, settings: DuplicateSpikeSettings | None = None) -> int:
        """Drop identity keys untouched for `retention`; returns how many were dropped."""
        retention = (settings or DuplicateSpikeSettings()).retention
        return drop_older_than(state, now_ms - retention)

    def compact_state(self, state: State, now_ms: int, policy: Policy) -> int:
        """`compact` with the policy's `duplicate_spike.retention`: what the stages call once per
        `pipeline.COMPACT_EVERY_MS` of event time."""
        return self.compact(state, now_ms, policy.detectors.duplicate_spike)


class DuplicateSpikeDetector:
    """ACTOR stage: duplicate creations per actor against its own baseline (see module docstring)."""

    name: ClassVar[str] = "duplicate_spike"
    stage: ClassVar[Stage] = Stage.ACTOR

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        """Nothing per ordinary event: this detector learns from `duplicate_created` findings."""
        return []

    def on_finding(self, finding: Finding, state: State, policy: Policy) -> list[Finding]:
        settings = policy.detectors.duplicate_spike
        if finding.detector != "duplicate_created" or not settings.enabled:
            return []
        key = finding.actor_key
        now = finding.occurred_at
        day = now // DAY_MS
        entry: dict[str, Any] | None = state.get(key)
        if entry is None:
            entry = {"w": [], "b": 0.0, "d": day, "n": 0, "e": {}}
        if not first_seen(entry["e"], finding.event_id):
            return []  # several identities of one event, or a redelivery: one creation
        if day > entry["d"]:
            alpha = settings.baseline_alpha
            learned = min(float(entry["n"]), _threshold(entry["b"], settings) * DAY_MS / settings.window)
            baseline = alpha * learned + (1 - alpha) * entry["b"]
            idle_days = min(day - entry["d"] - 1, 3650)
            entry["b"] = baseline * (1 - alpha) ** idle_days
            entry["d"] = day
            entry["n"] = 0
        entry["n"] += 1
        times: list[int] = entry["w"]
        bisect.insort(times, now)
        horizon = now - settings.window
        cut = bisect.bisect_right(times, horizon)
        if cut:
            del times[:cut]
        if len(times) > settings.max_times:
            del times[: len(times) - settings.max_times]
        count = len(times)
        expected = entry["b"] * settings.window / DAY_MS
        threshold = _threshold(entry["b"], settings)
        state[key] = entry
        if count < threshold:
            return []
        who = f"agent {finding.agent}" if finding.agent else finding.actor_key
        hours = settings.window / 3_600_000
        return [
            finding_from(
                finding,
                self.name,
                Severity.WARNING,
                f"{who} created {count} duplicate records in {hours:g}h "
                f"(baseline {expected:.2f} per {hours:g}h)",
                details={
                    "count": count,
                    "window_ms": settings.window,
                    "threshold": round(threshold, 3),
                    "baseline_per_day": round(entry["b"], 4),
                    "identity_kind": finding.details.get("identity_kind"),
                    "matched_record_keys": finding.details.get("matched_record_keys", []),
                },
            )
        ]


def _threshold(baseline_per_day: float, settings: DuplicateSpikeSettings) -> float:
    """Duplicates in one window that make a spike: k x the baseline, floored at `min_count` and
    capped at `ceiling_count` (never below the floor)."""
    expected = baseline_per_day * settings.window / DAY_MS
    floor = float(settings.min_count)
    return min(max(floor, settings.k * expected), max(floor, float(settings.ceiling_count)))
