"""Salesforce field history (the `...History` objects) to canonical change events, for backtests.

CDC events are kept three days; field history is what an org has of the weeks before (for the
fields with history tracking on, up to 18 months). Export it with SOQL, e.g.

    SELECT Id, ContactId, Field, DataType, OldValue, NewValue, CreatedById, CreatedDate
    FROM ContactHistory WHERE CreatedDate >= 2025-03-01T00:00:00Z

(`sf data query --json`, Data Loader, the REST `query` resource) and give the rows to
`crm-guard replay`, one JSON row per line or whole query pages (`{"totalSize", "done",
"records": [...]}`). Each row carries its type (`attributes.type`: ContactHistory, AccountHistory,
LeadHistory, CaseHistory, OpportunityFieldHistory, Custom__History); the record is the row's
parent id field (ContactId for ContactHistory, OpportunityId for OpportunityFieldHistory ..., else
ParentId, as custom objects have it).

Mapping: rows of one page with the same record, CreatedDate and CreatedById are one save: one
update event with a FieldChange per field, old and new value both known (`has_old`). Field
`created` is the record's creation (a create event without values); `ownerAssignment` is an
OwnerId change. A lookup change is stored twice (ids and names, same Field): the id row is kept.
History does not say how a user saved (UI, API, Data Loader): the actor is the user
(`user_id` = CreatedById) with the human hint, as a CDC event without changeOrigin; agents
running as integration users are named by `user_id` in the policy (an identity rule that also
requires `app_id` does not match history rows).

event_id: `salesforce:history:{the smallest row Id of the save}`, the same on every export.
History rows of one record arrive grouped by record, not by time: the replay orders a history
file by event time before it reads it (app/replay.py).
"""

from __future__ import annotations

from typing import Any

from app.adapters.common import events_per_save, make_actor, opt_id, page_items, to_ms
from app.adapters.errors import AdapterError, missing
from app.adapters.salesforce import OBJECT_TYPES, SF_ID, SYSTEM_FIELDS
from detectors.events import ActorKind, ChangeEvent, FieldChange, ObjectType

VENDOR = "salesforce"
_FIELD_ALIASES = {"ownerAssignment": "OwnerId", "Owner": "OwnerId"}


def history_type(row: Any) -> str | None:
    """`ContactHistory` for a Contact field-history row (from attributes.type), else None."""
    if not isinstance(row, dict):
        return None
    attributes = row.get("attributes")
    kind = attributes.get("type") if isinstance(attributes, dict) else None
    if isinstance(kind, str) and kind.endswith("History") and "Field" in row:
        return kind
    return None


def looks_like(payload: Any) -> bool:
    """A field-history row, or a query page whose first record is one."""
    if isinstance(payload, dict) and isinstance(payload.get("records"), list):
        records = payload["records"]
        return bool(records) and history_type(records[0]) is not None
    return history_type(payload) is not None


def object_of(kind: str) -> tuple[str, ObjectType]:
    """ContactHistory -> Contact, OpportunityFieldHistory -> Opportunity, Thing__History -> Thing__c."""
    if kind.endswith("__History"):
        name = kind[: -len("__History")] + "__c"
    elif kind.endswith("FieldHistory"):
        name = kind[: -len("FieldHistory")]
    else:
        name = kind[: -len("History")]
    return name, OBJECT_TYPES.get(name, ObjectType.OTHER)


def normalize(payload: Any) -> tuple[list[ChangeEvent], list[AdapterError]]:
    """Rows (one, an array, or a query page) to one event per save; a bad row is its own error."""
    return events_per_save(page_items(payload, "records"), _save_key, _event,
                           lambda key: f"{key[0]} {key[1]}")


def _save_key(row: Any) -> tuple[str, str, int, str]:
    """(history type, record id, time, user): what makes rows one save."""
    kind = history_type(row)
    if kind is None:
        raise AdapterError("unknown_shape",
                           "not a Salesforce field-history row (attributes.type ...History, Field)")
    name, _ = object_of(kind)
    parent = "ParentId" if name.endswith("__c") else f"{name}Id"
    record_id = opt_id(row.get(parent), parent) or opt_id(row.get("ParentId"), "ParentId")
    if record_id is None:
        raise missing(parent, kind)
    if not isinstance(row.get("Field"), str) or not row["Field"].strip():
        raise missing("Field", kind)
    if row.get("Id") is None:
        raise missing("Id", kind)
    opt_id(row.get("Id"), "Id")
    user = opt_id(row.get("CreatedById"), "CreatedById") or ""
    return kind, record_id, to_ms(row.get("CreatedDate"), "CreatedDate"), user


def _event(key: tuple[str, str, int, str], rows: list[dict[str, Any]]) -> ChangeEvent:
    kind, record_id, at, user = key
    source_object, object_type = object_of(kind)
    first_id = min(str(row["Id"]) for row in rows)
    by_field: dict[str, dict[str, Any]] = {}
    created = False
    for row in rows:
        field = row["Field"].strip()
        if field == "created" or field.endswith("CreatedFromLead"):
            created = True
            continue
        field = _FIELD_ALIASES.get(field, field)
        if field in SYSTEM_FIELDS or field[:1].islower():
            continue  # locked, unlocked, leadConverted, feedEvent ...: not field values
        held = by_field.get(field)
        if held is None or (_is_id(row.get("NewValue")) and not _is_id(held.get("NewValue"))):
            by_field[field] = row  # of a lookup's id row and name row, the id row
    changes: tuple[FieldChange, ...] = tuple(
        FieldChange(field=field, new=row.get("NewValue"), old=row.get("OldValue"), has_old=True)
        for field, row in sorted(by_field.items())
    )
    actor = make_actor(VENDOR, ActorKind.HUMAN if user else ActorKind.UNKNOWN, user_id=user or None,
                       raw=f"history;CreatedById={user}")
    return ChangeEvent(
        event_id=f"salesforce:history:{first_id}",
        source=VENDOR,
        source_event_id=first_id,
        occurred_at=at,
        object_type=object_type,
        source_object_type=source_object,
        record_id=record_id,
        operation="create" if created and not changes else "update",
        changes=changes,
        actor=actor,
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(SF_ID.match(value))
