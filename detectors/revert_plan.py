"""Revert plans: the values that undo an agent's changes since a time, in the vendors' import shapes.

Rule, per (record, field) the agent changed at or after `since` (and before `until`, when given):
* the value to restore is the last value before the agent's first change in that span: the
  change's known old value (`has_old`: the guard's prior, or the source's own old value), else
  the `new` of the field's previous change on the timeline; if neither is known the field is
  reported in `skipped` with reason `unknown_prior` (never guessed);
* a field a human changed after the agent's first change in the span is never overwritten: it is
  reported in `skipped_human_changed` with the human's value and time;
* changes by other actors (automation, integration, import, other agents, unknown) after the
  agent's are noted on the item (`later_changes`), the item stays in the plan;
* a field whose current value already equals the value to restore is skipped (`unchanged`);
* records the agent created in the span are listed in `created_records` (their fields are not
  blanked: deleting a record is a decision for a person); records it deleted or merged in
  `deleted_records`;
* a value to restore that is blank cannot be set by an import (blank cells are ignored), so such
  items carry `clear: true`, stay in the JSON and are left out of the CSV files.

Input: timeline entries (app/timeline/store.py `TimelineEntry`, or dicts with the same keys) of the
records concerned, any order. Output: a `Plan`, its JSON form, and CSV files in the import shapes:
HubSpot `Record ID` + property internal names, Salesforce `Id` + field API names (Data Loader
update), Pipedrive `ID` + field keys; one file per vendor and object type. Nothing is written to
any CRM. Pure: no I/O, no clock. Cost: O(n log n) in the number of entries.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from dataclasses import field as _field
from typing import Any

from detectors.events import JsonValue, is_blank

ID_COLUMNS = {"hubspot": "Record ID", "salesforce": "Id", "pipedrive": "ID"}
"""The record id column each vendor's import matches existing records on."""

_OBJECT_FILE_NAMES: dict[str, dict[str, str]] = {
    "hubspot": {"contact": "contacts", "company": "companies", "deal": "deals", "ticket": "tickets"},
    "salesforce": {"contact": "Contact", "company": "Account", "deal": "Opportunity", "ticket": "Case",
                   "lead": "Lead", "activity": "Task"},
    "pipedrive": {"contact": "persons", "company": "organizations", "deal": "deals", "lead": "leads",
                  "activity": "activities"},
}


@dataclass(frozen=True, slots=True)
class Change:
    """The part of a timeline entry a plan needs."""

    event_id: str
    record_key: str
    source: str
    object_type: str
    record_id: str
    occurred_at: int
    field: str
    old: JsonValue
    has_old: bool
    new: JsonValue
    actor_id: str
    actor_kind: str
    operation: str
    source_object_type: str | None = None

    @classmethod
    def of(cls, entry: Any) -> "Change":
        """From a TimelineEntry, a dict with the timeline.jsonl keys, or any object with those attributes."""
        get = _getter(entry)
        kind = get("actor_kind")
        return cls(
            event_id=str(get("event_id")),
            record_key=str(get("record_key")),
            source=str(get("source")),
            object_type=str(get("object_type")),
            record_id=str(get("record_id")),
            occurred_at=int(get("occurred_at")),
            field=str(get("field", "") or ""),
            old=get("old"),
            has_old=bool(get("has_old", False)),
            new=get("new"),
            actor_id=str(get("actor_id")),
            actor_kind=str(getattr(kind, "value", kind)),
            operation=str(get("operation", "update") or "update"),
            source_object_type=get("source_object_type"),
        )

    @property
    def order(self) -> tuple[int, str, str]:
        return (self.occurred_at, self.event_id, self.field)


def _getter(entry: Any) -> Callable[..., Any]:
    if isinstance(entry, Mapping):
        def from_mapping(key: str, default: Any = None) -> Any:
            return entry.get(key, default)
        return from_mapping

    def from_object(key: str, default: Any = None) -> Any:
        return getattr(entry, key, default)
    return from_object


@dataclass(frozen=True, slots=True)
class RevertItem:
    """One field of one record to set back."""

    record_key: str
    source: str
    object_type: str
    record_id: str
    field: str
    restore_value: JsonValue
    agent_value: JsonValue
    current_value: JsonValue
    first_agent_change_at: int
    last_agent_change_at: int
    agent_event_ids: list[str]
    later_changes: list[dict[str, Any]] = _field(default_factory=list)
    clear: bool = False
    source_object_type: str | None = None


@dataclass(frozen=True, slots=True)
class SkippedField:
    """A field the plan leaves alone, and why."""

    record_key: str
    source: str
    object_type: str
    record_id: str
    field: str
    reason: str
    agent_value: JsonValue
    current_value: JsonValue
    restore_value: JsonValue = None
    first_agent_change_at: int = 0
    human_actor_id: str | None = None
    human_value: JsonValue = None
    human_changed_at: int | None = None


@dataclass(frozen=True, slots=True)
class RecordNote:
    """A record the agent created, deleted or merged: for a person to decide, not for an import."""

    record_key: str
    source: str
    object_type: str
    record_id: str
    operation: str
    event_id: str
    occurred_at: int


@dataclass
class Plan:
    """What to restore, what was left alone and why. `to_dict` is the JSON form; `csv_files` the imports."""

    agent: str
    since: int
    until: int | None
    fields: list[str] | None
    items: list[RevertItem] = _field(default_factory=list)
    skipped_human_changed: list[SkippedField] = _field(default_factory=list)
    skipped: list[SkippedField] = _field(default_factory=list)
    created_records: list[RecordNote] = _field(default_factory=list)
    deleted_records: list[RecordNote] = _field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        return {
            "fields_to_restore": sum(1 for i in self.items if not i.clear),
            "fields_to_clear_by_hand": sum(1 for i in self.items if i.clear),
            "records": len({i.record_key for i in self.items}),
            "skipped_human_changed": len(self.skipped_human_changed),
            "skipped": len(self.skipped),
            "created_records": len(self.created_records),
            "deleted_records": len(self.deleted_records),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "since": self.since,
            "until": self.until,
            "fields": self.fields,
            "summary": self.summary,
            "items": [asdict(i) for i in self.items],
            "skipped_human_changed": [asdict(s) for s in self.skipped_human_changed],
            "skipped": [asdict(s) for s in self.skipped],
            "created_records": [asdict(r) for r in self.created_records],
            "deleted_records": [asdict(r) for r in self.deleted_records],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        """Inverse of to_dict (the CLI reads the guard's API answer with it)."""
        return cls(
            agent=str(data["agent"]),
            since=int(data["since"]),
            until=None if data.get("until") is None else int(data["until"]),
            fields=None if data.get("fields") is None else list(data["fields"]),
            items=[RevertItem(**i) for i in data.get("items", ())],
            skipped_human_changed=[SkippedField(**s) for s in data.get("skipped_human_changed", ())],
            skipped=[SkippedField(**s) for s in data.get("skipped", ())],
            created_records=[RecordNote(**r) for r in data.get("created_records", ())],
            deleted_records=[RecordNote(**r) for r in data.get("deleted_records", ())],
        )

    def csv_files(self) -> dict[str, str]:
        """File name -> CSV text, one file per vendor and object type, in the vendor's import shape."""
        groups: dict[tuple[str, str], list[RevertItem]] = {}
        for item in self.items:
            if item.clear:
                continue
            groups.setdefault((item.source, import_object_name(item)), []).append(item)
        files = {}
        for (source, object_name), items in sorted(groups.items()):
            files[f"{source}-{object_name}.csv"] = _csv_text(source, items)
        return files


def import_object_name(item: RevertItem) -> str:
    """The vendor's name of the item's object type (file names): contacts, Opportunity, persons ..."""
    if item.source == "salesforce" and item.source_object_type:
        return item.source_object_type
    return _OBJECT_FILE_NAMES.get(item.source, {}).get(item.object_type, item.object_type)


def revert_plan(
    entries: Iterable[Any],
    agent: str,
    since_ms: int,
    fields: Iterable[str] | None = None,
    until_ms: int | None = None,
) -> Plan:
    """The plan that undoes `agent`'s changes made at or after `since_ms` (see the module docstring)."""
    wanted = None if fields is None else sorted(set(fields))
    plan = Plan(agent=agent, since=since_ms, until=until_ms, fields=wanted)
    by_record: dict[str, list[Change]] = {}
    for entry in entries:
        change = Change.of(entry)
        by_record.setdefault(change.record_key, []).append(change)

    def in_span(c: Change) -> bool:
        return c.occurred_at >= since_ms and (until_ms is None or c.occurred_at < until_ms)

    def by_agent(c: Change) -> bool:
        return c.actor_kind == "agent" and c.actor_id == agent and in_span(c)

    for record_key in sorted(by_record):
        changes = sorted(_unique(by_record[record_key]), key=lambda c: c.order)
        created = next((c for c in changes if by_agent(c) and c.operation == "create"), None)
        if created is not None:
            plan.created_records.append(_note(created))
        seen_ops: set[str] = set()
        for c in changes:
            if by_agent(c) and c.operation in ("delete", "merge") and c.event_id not in seen_ops:
                seen_ops.add(c.event_id)
                plan.deleted_records.append(_note(c))
        if created is not None:
            continue
        per_field: dict[str, list[Change]] = {}
        for c in changes:
            if c.field and (wanted is None or c.field in wanted):
                per_field.setdefault(c.field, []).append(c)
        for name in sorted(per_field):
            _plan_field(plan, per_field[name], by_agent)
    return plan


def _plan_field(plan: Plan, history: list[Change], by_agent: Callable[[Change], bool]) -> None:
    first_index = next((i for i, c in enumerate(history) if by_agent(c)), None)
    if first_index is None:
        return
    first = history[first_index]
    mine = [c for c in history[first_index:] if by_agent(c)]
    later_others = [c for c in history[first_index + 1:] if not by_agent(c)]
    current = history[-1].new
    agent_value = mine[-1].new
    known, restore = _value_before(history, first_index)
    humans = [c for c in later_others if c.actor_kind == "human"]
    base: dict[str, Any] = {
        "record_key": first.record_key, "source": first.source, "object_type": first.object_type,
        "record_id": first.record_id, "field": first.field,
    }
    if humans:
        last_human = humans[-1]
        plan.skipped_human_changed.append(SkippedField(
            **base, reason="human_changed_after_agent", agent_value=agent_value, current_value=current,
            restore_value=restore if known else None, first_agent_change_at=first.occurred_at,
            human_actor_id=last_human.actor_id, human_value=last_human.new,
            human_changed_at=last_human.occurred_at,
        ))
        return
    if not known:
        plan.skipped.append(SkippedField(**base, reason="unknown_prior", agent_value=agent_value,
                                         current_value=current, first_agent_change_at=first.occurred_at))
        return
    if _same(current, restore):
        plan.skipped.append(SkippedField(**base, reason="unchanged", agent_value=agent_value, current_value=current,
                                         restore_value=restore, first_agent_change_at=first.occurred_at))
        return
    plan.items.append(RevertItem(
        **base,
        restore_value=restore,
        agent_value=agent_value,
        current_value=current,
        first_agent_change_at=first.occurred_at,
        last_agent_change_at=mine[-1].occurred_at,
        agent_event_ids=[c.event_id for c in mine],
        later_changes=[{"actor_id": c.actor_id, "actor_kind": c.actor_kind, "at": c.occurred_at,
                        "event_id": c.event_id, "value": c.new} for c in later_others],
        clear=is_blank(restore),
        source_object_type=first.source_object_type,
    ))


def _value_before(history: list[Change], index: int) -> tuple[bool, JsonValue]:
    """(known, value) of the field just before history[index]."""
    change = history[index]
    if change.has_old:
        return True, change.old
    if index > 0:
        return True, history[index - 1].new
    return False, None


def _same(a: JsonValue, b: JsonValue) -> bool:
    if is_blank(a) and is_blank(b):
        return True
    return bool(a == b) or _cell(a) == _cell(b)


def _unique(changes: list[Change]) -> list[Change]:
    seen: dict[tuple[str, str], Change] = {}
    for c in changes:
        seen.setdefault((c.event_id, c.field), c)
    return list(seen.values())


def _note(c: Change) -> RecordNote:
    return RecordNote(record_key=c.record_key, source=c.source, object_type=c.object_type, record_id=c.record_id,
                      operation=c.operation, event_id=c.event_id, occurred_at=c.occurred_at)


def _cell(value: JsonValue) -> str:
    """A value as an import cell: strings as they are, booleans true/false, lists joined by `;`
    (HubSpot multi-select), Pipedrive `[{"value": ...}]` lists by their values, objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, (list, tuple)):
        parts = [str(v.get("value", "")) if isinstance(v, dict) else _cell(v) for v in value]
        return ";".join(p for p in parts if p)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _csv_text(source: str, items: list[RevertItem]) -> str:
    id_column = ID_COLUMNS.get(source, "id")
    columns = sorted({i.field for i in items})
    rows: dict[str, dict[str, str]] = {}
    for item in items:
        rows.setdefault(item.record_id, {})[item.field] = _cell(item.restore_value)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([id_column, *columns])
    for record_id in sorted(rows, key=_id_order):
        writer.writerow([record_id, *(rows[record_id].get(c, "") for c in columns)])
    return out.getvalue()


def _id_order(record_id: str) -> tuple[int, int | str]:
    return (0, int(record_id)) if record_id.isdigit() else (1, record_id)
