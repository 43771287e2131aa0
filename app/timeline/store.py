"""The timeline store: every change of every record, in order, with what the guard concluded about it.

Root-cause analysis needs one answer fast: who changed this field, when, from what to what, and did
anyone object. The store keeps, per record, one `TimelineEntry` per changed field (an event that
changes no field, such as a delete or merge, gives one entry with `field == ""`), and attaches to
each change the findings and override signals about it (by event id) and the proposal and review
decisions behind it (by event id or proposal id).

Indexes (in memory, rebuilt on start from the guard.timeline topic, see app/timeline/log.py):
* by record: entries sorted by (occurred_at, event_id, field), plus attachments;
* by agent: the records each agent changed, so an agent's timeline spans records.

Retention (documented in docs/observability.md):
* at most `max_entries_per_record` entries per record (default 500): the oldest are dropped first;
* entries older than `retention_ms` (default 90 days) before the newest event time seen are
  dropped (event time, so a replay of old history is not emptied by the wall clock). The sweep
  that drops them visits every record, so it runs when event time moved `prune_every_ms` (1 h)
  since the last one *and* at least as many entries were appended since as that sweep visited
  records: O(1) per append amortized, also when a rebuild or a backlog moves event time by days a
  second (a sweep per event hour made rebuilding 90 days of 200,000 records quadratic); and in
  any case once event time moved a tenth of the retention (9 days), so a quiet store keeps
  expired entries at most that much longer. They are never added (append refuses what is past
  retention already);
* at most `max_records` records (default 200,000): the least recently changed go first.
Memory: about 1 KB per entry in CPython (pydantic model plus index), so the defaults bound a
full store at roughly max_records x average entries per record.

Append is idempotent per (event_id, field): redelivered events and a rebuild over entries already
held change nothing. Cost: append O(log n + shift) within one record; a record query O(entries of
the record); an agent query O(entries of the records the agent touched).
"""

from __future__ import annotations

import base64
import bisect
import heapq
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.timeline.masking import mask_details, mask_value
from detectors.base import Finding, Prior
from detectors.events import ActorKind, ChangeEvent, JsonValue

DAY_MS = 86_400_000


class TimelineEntry(BaseModel):
    """One field change of one record: the unit of the timeline, of timeline.jsonl and of revert plans.

    Schema of `timeline.jsonl` (one JSON object per line, written by `crm-guard replay --out DIR`)
    and of the `entries` of a guard.timeline message:

    ============== ======================================================================
    event_id       the canonical event's id (deterministic; same id on redelivery)
    record_key     `source/object_type/record_id`, e.g. `hubspot/contact/123`
    source         hubspot | salesforce | pipedrive | ...
    object_type    canonical object type (contact, company, deal, ticket, lead, ...)
    record_id      the vendor's record id
    occurred_at    event time, integer ms since the Unix epoch, UTC
    field          the field's internal name / API name / key; "" (or null) for an event without fields
    old            the value before: the source's old value where it sends one (Pipedrive), else
                   the guard's last known value of the field
    has_old        whether `old` is known (false: the guard never saw the field before)
    new            the value after
    actor_id       the agent name for agents, else the vendor-scoped user or app id
    actor_kind     human | agent | automation | import | integration | unknown
    operation      create | update | delete | merge | restore | associate | gap
    ============== ======================================================================

    Optional: `source_object_type` (the vendor's object name, e.g. Opportunity; used for import
    file names) and `proposal_id` (when the change applied an approved proposal).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    record_key: str
    source: str
    object_type: str
    record_id: str
    occurred_at: int
    field: str = ""
    old: JsonValue = None
    has_old: bool = False
    new: JsonValue = None
    actor_id: str
    actor_kind: ActorKind
    operation: str = "update"
    source_object_type: str | None = None
    proposal_id: str | None = None

    @field_validator("field", mode="before")
    @classmethod
    def _no_field_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @property
    def sort_key(self) -> tuple[int, str, str]:
        """Timeline order: event time, then event id and field for a stable tie-break."""
        return (self.occurred_at, self.event_id, self.field)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object written to timeline.jsonl and the timeline topic (None optionals left out)."""
        data = self.model_dump(mode="json")
        for optional in ("source_object_type", "proposal_id"):
            if data.get(optional) is None:
                data.pop(optional, None)
        return data


class TimelineDecision(BaseModel):
    """A proposal's gate decision (act, review, reject) or review decision (approved, modified,
    rejected, expired), attached to the change it concerns (`event_id`) or to its proposal."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    proposal_id: str
    record_key: str
    decision: str
    decided_at: int
    reason: str = ""
    decided_by: str = ""
    agent: str | None = None
    event_id: str | None = None
    fields: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class TimelineSettings(BaseModel):
    """Bounds of the store (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_entries_per_record: int = Field(default=500, gt=0)
    retention_ms: int = Field(default=90 * DAY_MS, gt=0)
    max_records: int = Field(default=200_000, gt=0)
    prune_every_ms: int = Field(default=3_600_000, gt=0)


def entries_from_event(event: ChangeEvent, priors: Mapping[str, Prior | None] | None = None) -> list[TimelineEntry]:
    """The entries of one canonical event: the source's old value where it sends one, else the prior
    (Observation.priors from the record stage), as app/replay.py `timeline_rows` writes them."""
    actor = event.actor
    base: dict[str, Any] = {
        "event_id": event.event_id,
        "record_key": event.record_key,
        "source": event.source,
        "object_type": event.object_type.value,
        "record_id": event.record_id,
        "occurred_at": event.occurred_at,
        "actor_id": actor.id,
        "actor_kind": actor.kind,
        "operation": event.operation,
        "source_object_type": event.source_object_type,
    }
    if not event.changes:
        return [TimelineEntry(**base)]
    out = []
    for change in event.changes:
        prior = (priors or {}).get(change.field)
        if change.has_old:
            old, has_old = change.old, True
        elif prior is not None:
            old, has_old = prior.value, True
        else:
            old, has_old = None, False
        out.append(TimelineEntry(**base, field=change.field, old=old, has_old=has_old, new=change.new))
    return out


@dataclass
class Page:
    """One page of a query: `next_cursor` continues after the last item (None at the end)."""

    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor, "total": self.total}


@dataclass
class Query:
    """Filters shared by record and agent timelines. `kinds`/`fields`/`actors` empty means all."""

    fields: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    actors: frozenset[str] = frozenset()
    since: int | None = None
    until: int | None = None

    def matches(self, entry: TimelineEntry) -> bool:
        if self.since is not None and entry.occurred_at < self.since:
            return False
        if self.until is not None and entry.occurred_at >= self.until:
            return False
        if self.fields and entry.field not in self.fields:
            return False
        if self.kinds and entry.actor_kind.value not in self.kinds:
            return False
        return not (self.actors and entry.actor_id not in self.actors)


@dataclass
class _Record:
    entries: list[TimelineEntry] = field(default_factory=list)
    keys: set[tuple[str, str]] = field(default_factory=set)
    attachments: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    proposals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    last_at: int = 0


class TimelineStore:
    """In-memory timeline with record and agent indexes. Not thread-safe: one event loop owns it."""

    def __init__(self, settings: TimelineSettings | None = None) -> None:
        self.settings = settings or TimelineSettings()
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._agents: dict[str, OrderedDict[str, int]] = {}
        self._agent_changes: dict[str, int] = {}
        self._clock = 0
        self._pruned_at = 0
        self._appended = 0  # entries appended since the last sweep (see the module docstring)
        self._swept = 0  # records the last sweep visited

    # ---- writing ----

    def append(self, entry: TimelineEntry | Mapping[str, Any]) -> bool:
        """Add one entry; False when (event_id, field) is already held or it is past retention."""
        if not isinstance(entry, TimelineEntry):
            entry = TimelineEntry.model_validate(entry)
        self._advance(entry.occurred_at)
        if entry.occurred_at < self._clock - self.settings.retention_ms:
            return False
        rec = self._records.get(entry.record_key)
        if rec is None:
            rec = self._records[entry.record_key] = _Record()
        ident = (entry.event_id, entry.field)
        if ident in rec.keys:
            return False
        rec.keys.add(ident)
        self._appended += 1
        entries = rec.entries
        if not entries or entries[-1].sort_key <= entry.sort_key:
            entries.append(entry)  # the usual case: in time order (insort would call the key ~9 times)
        else:
            bisect.insort(entries, entry, key=lambda e: e.sort_key)
        if entry.occurred_at >= rec.last_at:
            rec.last_at = entry.occurred_at
            self._records.move_to_end(entry.record_key)
        if entry.actor_kind is ActorKind.AGENT:
            records = self._agents.setdefault(entry.actor_id, OrderedDict())
            records[entry.record_key] = max(records.get(entry.record_key, 0), entry.occurred_at)
            records.move_to_end(entry.record_key)
            self._agent_changes[entry.actor_id] = self._agent_changes.get(entry.actor_id, 0) + 1
        if len(rec.entries) > self.settings.max_entries_per_record:
            self._drop(entry.record_key, rec, len(rec.entries) - self.settings.max_entries_per_record)
        if len(self._records) > self.settings.max_records:
            self._evict_records(len(self._records) - self.settings.max_records)
        return True

    def append_event(self, event: ChangeEvent, priors: Mapping[str, Prior | None] | None = None) -> list[TimelineEntry]:
        """Add every entry of an event (see `entries_from_event`); returns the entries that were new."""
        return [e for e in entries_from_event(event, priors) if self.append(e)]

    def attach_finding(self, finding: Finding | Mapping[str, Any]) -> bool:
        """Attach a finding (an `override` finding becomes an override) to the change it concerns."""
        data = finding.to_dict() if isinstance(finding, Finding) else dict(finding)
        record_key, event_id = data.get("record_key"), data.get("event_id")
        if not record_key or not event_id:
            return False
        slot = "overrides" if data.get("detector") == "override" else "findings"
        kept = {k: data.get(k) for k in _FINDING_KEYS}
        attached = self._attach(record_key, str(event_id), slot, kept, (kept["detector"], kept["group"]))
        # An override also concerns the agent change it undid, when the detector names it.
        details = data.get("details") or {}
        agent_event = details.get("agent_event_id") if isinstance(details, dict) else None
        if slot == "overrides" and agent_event and agent_event != event_id:
            self._attach(record_key, str(agent_event), "overridden_by", kept, (kept["detector"], str(event_id)))
        return attached

    def attach_decision(self, decision: TimelineDecision | Mapping[str, Any]) -> bool:
        """Attach a proposal decision to its change (by event id) and to its proposal (by proposal id)."""
        if not isinstance(decision, TimelineDecision):
            decision = TimelineDecision.model_validate(decision)
        data = decision.model_dump(mode="json")
        rec = self._records.get(decision.record_key)
        if rec is None:
            rec = self._records[decision.record_key] = _Record()
        held = rec.proposals.setdefault(decision.proposal_id, [])
        ident = (decision.decision, decision.decided_at, decision.decided_by)
        if any((d["decision"], d["decided_at"], d["decided_by"]) == ident for d in held):
            return False
        held.append(data)
        held.sort(key=lambda d: d["decided_at"])
        if decision.event_id:
            self._attach(decision.record_key, decision.event_id, "decisions", data,
                         (decision.proposal_id, decision.decision, decision.decided_at))
        return True

    def apply_batch(self, batch: Mapping[str, Any] | list[Any]) -> int:
        """Apply one guard.timeline message value (see app/timeline/log.py): a batch object, or a plain
        list of entry rows (what the record stage emits); returns the items that were new."""
        if isinstance(batch, list):
            return sum(self.append(entry) for entry in batch)
        added = 0
        for entry in batch.get("entries") or ():
            added += self.append(entry)
        for finding in batch.get("findings") or ():
            added += self.attach_finding(finding)
        for decision in batch.get("decisions") or ():
            added += self.attach_decision(decision)
        return added

    def prune(self, now_ms: int | None = None) -> int:
        """Drop entries older than the retention before `now_ms` (default: newest event time seen)."""
        now = self._clock if now_ms is None else now_ms
        cutoff = now - self.settings.retention_ms
        dropped = 0
        self._swept = len(self._records)
        for key in list(self._records):
            rec = self._records[key]
            stale = bisect.bisect_left(rec.entries, cutoff, key=lambda e: e.occurred_at)
            if stale:
                dropped += stale
                self._drop(key, rec, stale)
        self._pruned_at = now
        self._appended = 0
        return dropped

    # ---- reading ----

    def __len__(self) -> int:
        return sum(len(r.entries) for r in self._records.values())

    def has_record(self, record_key: str) -> bool:
        rec = self._records.get(record_key)
        return rec is not None and bool(rec.entries or rec.proposals)

    def record_entries(self, record_key: str) -> list[TimelineEntry]:
        """Every entry of a record, oldest first (raw values: for revert plans, not for display)."""
        rec = self._records.get(record_key)
        return list(rec.entries) if rec else []

    def last_value(self, record_key: str, field: str) -> tuple[bool, JsonValue]:
        """The newest value the timeline holds for one field of a record: (True, value), or
        (False, None) when it holds none (never seen, or past retention). The review queue's
        "current value" where the record state lives in another process."""
        rec = self._records.get(record_key)
        if rec is not None:
            for entry in reversed(rec.entries):
                if entry.field == field:
                    return True, entry.new
        return False, None

    def agent_records(self, agent: str) -> list[str]:
        """Records the agent changed, most recently changed last."""
        return list(self._agents.get(agent, ()))

    def entries_for_agent(self, agent: str) -> list[TimelineEntry]:
        """Every entry (all actors) of every record the agent changed: the input of a revert plan."""
        out: list[TimelineEntry] = []
        for key in self.agent_records(agent):
            out.extend(self.record_entries(key))
        return out

    def record_timeline(
        self, record_key: str, query: Query | None = None, *, cursor: str | None = None, limit: int = 100,
        newest_first: bool = False, show_pii: bool = False,
    ) -> Page:
        """A record's changes with their attachments, masked unless show_pii."""
        rec = self._records.get(record_key)
        entries = rec.entries if rec else []
        return self._page(entries, query or Query(), cursor, limit, newest_first, show_pii)

    def agent_timeline(
        self, agent: str, query: Query | None = None, *, only_agent: bool = False, cursor: str | None = None,
        limit: int = 100, newest_first: bool = True, show_pii: bool = False,
    ) -> Page:
        """Changes on every record the agent touched (its own and everyone else's, so the people who
        corrected it show too); `only_agent` keeps the agent's own changes."""
        query = query or Query()
        if only_agent:
            query = Query(query.fields, frozenset({ActorKind.AGENT.value}), frozenset({agent}), query.since, query.until)
        merged: list[TimelineEntry] = []
        for key in self.agent_records(agent):
            merged.extend(e for e in self._records[key].entries if query.matches(e))
        merged.sort(key=lambda e: e.sort_key)
        return self._page(merged, Query(), cursor, limit, newest_first, show_pii)

    def record_proposals(self, record_key: str, show_pii: bool = False) -> dict[str, list[dict[str, Any]]]:
        """Every proposal decision known for a record, by proposal id (including proposals never applied)."""
        rec = self._records.get(record_key)
        if rec is None:
            return {}
        return {pid: [mask_details(d, show_pii=show_pii) for d in ds] for pid, ds in rec.proposals.items()}

    def recent_records(self, limit: int = 50) -> list[dict[str, Any]]:
        """The records with the newest changes (event time), newest first, with who touched them."""
        newest = heapq.nlargest(limit, ((rec.last_at, key) for key, rec in self._records.items() if rec.entries))
        out = []
        for last_at, key in newest:
            rec = self._records[key]
            kinds = sorted({e.actor_kind.value for e in rec.entries})
            agents = sorted({e.actor_id for e in rec.entries if e.actor_kind is ActorKind.AGENT})
            findings = sum(len(a.get("findings", ())) + len(a.get("overrides", ())) for a in rec.attachments.values())
            out.append({"record_key": key, "last_at": last_at, "changes": len(rec.entries),
                        "kinds": kinds, "agents": agents, "findings": findings})
        return out

    def agents(self) -> list[dict[str, Any]]:
        """Every agent seen, most recently active first: records touched, changes held, last change."""
        out = [{"agent": name, "records": len(recs), "changes": self._agent_changes.get(name, 0),
                "last_at": max(recs.values(), default=0)} for name, recs in self._agents.items() if recs]
        return sorted(out, key=lambda a: (-a["last_at"], a["agent"]))

    def stats(self) -> dict[str, int]:
        """Sizes, for the state-size metric (`crm_guard_state_entries{store="timeline"}`)."""
        return {"records": len(self._records), "entries": len(self), "agents": len(self._agents)}

    # ---- internals ----

    def _advance(self, at: int) -> None:
        if at > self._clock:
            self._clock = at
            moved = self._clock - self._pruned_at
            if moved >= self.settings.prune_every_ms and (
                    self._appended >= self._swept or moved >= self.settings.retention_ms // 10):
                self.prune()

    def _attach(self, record_key: str, event_id: str, slot: str, data: dict[str, Any], ident: tuple[Any, ...]) -> bool:
        rec = self._records.get(record_key)
        if rec is None:
            rec = self._records[record_key] = _Record()
        slots = rec.attachments.setdefault(event_id, {})
        held = slots.setdefault(slot, [])
        if any(_ident(slot, h) == ident for h in held):
            return False
        held.append(data)
        cap = 2 * self.settings.max_entries_per_record
        while len(rec.attachments) > cap:  # findings for events never seen as entries: bounded too
            del rec.attachments[next(iter(rec.attachments))]
        return True

    def _drop(self, record_key: str, rec: _Record, count: int) -> None:
        gone, rec.entries = rec.entries[:count], rec.entries[count:]
        remaining_events = {e.event_id for e in rec.entries}
        for entry in gone:
            rec.keys.discard((entry.event_id, entry.field))
            if entry.event_id not in remaining_events:
                rec.attachments.pop(entry.event_id, None)
            if entry.actor_kind is ActorKind.AGENT and entry.actor_id in self._agent_changes:
                self._agent_changes[entry.actor_id] -= 1
        for agent in {e.actor_id for e in gone if e.actor_kind is ActorKind.AGENT}:
            if not any(e.actor_kind is ActorKind.AGENT and e.actor_id == agent for e in rec.entries):
                self._forget_agent_record(agent, record_key)
        if not rec.entries and not rec.proposals:
            self._records.pop(record_key, None)

    def _evict_records(self, count: int) -> None:
        """Drop the `count` least recently changed records. The oldest is the first key: taken one
        at a time, never by listing all keys (at the 200,000-record cap that list cost 34 ms, and
        every new record past the cap paid it)."""
        records = self._records
        for _ in range(min(count, len(records))):
            key, rec = next(iter(records.items()))
            self._drop(key, rec, len(rec.entries))
            records.pop(key, None)

    def _forget_agent_record(self, agent: str, record_key: str) -> None:
        records = self._agents.get(agent)
        if records is not None:
            records.pop(record_key, None)
            if not records:
                del self._agents[agent]
                self._agent_changes.pop(agent, None)

    def _page(
        self, entries: list[TimelineEntry], query: Query, cursor: str | None, limit: int,
        newest_first: bool, show_pii: bool,
    ) -> Page:
        matching = [e for e in entries if query.matches(e)]
        if newest_first:
            matching.reverse()
        start = 0
        if cursor:
            after = decode_cursor(cursor)
            if newest_first:
                start = next((i for i, e in enumerate(matching) if e.sort_key < after), len(matching))
            else:
                start = next((i for i, e in enumerate(matching) if e.sort_key > after), len(matching))
        limit = max(1, limit)
        chosen = matching[start:start + limit]
        more = start + limit < len(matching)
        items = [self._view(e, show_pii) for e in chosen]
        next_cursor = encode_cursor(chosen[-1].sort_key) if (more and chosen) else None
        return Page(items=items, next_cursor=next_cursor, total=len(matching))

    def _view(self, entry: TimelineEntry, show_pii: bool) -> dict[str, Any]:
        data = entry.model_dump(mode="json")
        data["old"] = mask_value(entry.old, entry.field, entry.source, show_pii)
        data["new"] = mask_value(entry.new, entry.field, entry.source, show_pii)
        rec = self._records.get(entry.record_key)
        slots = rec.attachments.get(entry.event_id, {}) if rec else {}
        for slot in ("findings", "overrides", "overridden_by", "decisions"):
            data[slot] = [mask_details(a, entry.field, entry.source, show_pii) for a in slots.get(slot, ())]
        if entry.proposal_id and rec and entry.proposal_id in rec.proposals:
            known = {(d["proposal_id"], d["decision"], d["decided_at"]) for d in data["decisions"]}
            data["decisions"] += [mask_details(d, entry.field, entry.source, show_pii)
                                  for d in rec.proposals[entry.proposal_id]
                                  if (d["proposal_id"], d["decision"], d["decided_at"]) not in known]
        return data


_FINDING_KEYS = ("detector", "severity", "summary", "group", "pause", "event_id", "occurred_at",
                 "record_key", "agent", "actor_key", "details")


def _ident(slot: str, held: dict[str, Any]) -> tuple[Any, ...]:
    if slot == "decisions":
        return (held["proposal_id"], held["decision"], held["decided_at"])
    if slot == "overridden_by":
        return (held["detector"], str(held["event_id"]))
    return (held["detector"], held["group"])


def encode_cursor(sort_key: tuple[int, str, str]) -> str:
    """An opaque, URL-safe cursor for the position after `sort_key`."""
    return base64.urlsafe_b64encode(orjson.dumps(list(sort_key))).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, str]:
    """Inverse of encode_cursor; ValueError on a cursor that is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, event_id, field_name = orjson.loads(raw)
        return (int(at), str(event_id), str(field_name))
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc


def load_jsonl(lines: Iterable[str]) -> Iterable[TimelineEntry]:
    """Entries from timeline.jsonl lines; ValueError naming the line number on a bad line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield TimelineEntry.model_validate(orjson.loads(line))
        except (orjson.JSONDecodeError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise ValueError(f"line {number}: not a timeline entry ({first})") from exc
