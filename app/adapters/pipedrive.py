"""Pipedrive webhooks (v2, and v1 for older subscriptions) to canonical change events.

v2 body: `{"meta": {action: create|change|delete, entity, entity_id, id, timestamp, user_id,
change_source, is_bulk_edit, company_id, correlation_id, merged_to_id?, merged_from_id?, ...},
"data": {...} | null, "previous": {...} | null}`. Pipedrive is the one vendor that sends old
values: on `change`, `previous` holds exactly the fields that changed, so each becomes a
FieldChange with `old` and `has_old=True`. On `create` every non-blank field of `data` is a
change. `custom_fields` are flattened to their keys (the 40-character field hashes) and their
typed envelope is opened: `{"type": "double", "value": 978}` -> 978, `{"id": 17, "type": "enum"}`
-> 17, `{"values": [{"id": 13}], "type": "set"}` -> [13]; multi-part ones (monetary, address,
ranges) keep their parts minus `type`. Arrays such as `emails` and `phones` are kept as sent.

A delete that is part of a merge (`meta.merged_to_id`) becomes a `merge` on the surviving record
with the deleted one in `merged_record_ids`; the companion `change` on the survivor stays an update.

v1 body: `{"meta": {action: added|updated|deleted|merged, object, id, timestamp, user_id,
change_source, is_bulk_update, ...}, "current": {...}, "previous": {...}}`; on `updated` the
changed fields are those whose value differs between `previous` and `current`.

Derived bookkeeping fields (update_time, add_time, activity counters, next/last activity ...)
are not changes: they move with every edit and would look like mass overwrites.

event_id: `pipedrive:{company_id}:{meta.id}` when meta.id is the webhook event's UUID (v2); for
payloads without one (v1, and v2 `user` events whose meta.id is the user id) it is built from
entity, entity id, action and timestamp (and correlation_id when given).
"""

from __future__ import annotations

import re
from typing import Any

from app.adapters.common import as_bool, id_str, make_actor, opt_id, opt_str, require_dict, to_ms
from app.adapters.errors import AdapterError, missing
from detectors.events import (
    Actor,
    ActorKind,
    ChangeEvent,
    FieldChange,
    ObjectType,
    RelatedRecord,
    is_blank,
    trusted_change,
    trusted_change_old,
    trusted_event,
    trusted_related,
)

VENDOR = "pipedrive"

OBJECT_TYPES: dict[str, ObjectType] = {
    "person": ObjectType.CONTACT,
    "organization": ObjectType.COMPANY,
    "deal": ObjectType.DEAL,
    "lead": ObjectType.LEAD,
    "activity": ObjectType.ACTIVITY,
    "note": ObjectType.ACTIVITY,
}
_V2_ACTIONS = {"create": "create", "change": "update", "delete": "delete"}
_V1_ACTIONS = {"added": "create", "updated": "update", "deleted": "delete", "merged": "merge"}
DERIVED_FIELDS = frozenset(
    {
        "id",
        "add_time",
        "update_time",
        "update_user_id",
        "last_update_user_id",
        "stage_change_time",
        "created",
        "modified",
        "last_activity_id",
        "last_activity_date",
        "next_activity_id",
        "next_activity_date",
        "next_activity_time",
        "next_activity_subject",
        "next_activity_type",
        "next_activity_duration",
        "next_activity_note",
        "activities_count",
        "done_activities_count",
        "undone_activities_count",
        "email_messages_count",
        "notes_count",
        "files_count",
        "followers_count",
        "participants_count",
        "products_count",
        "last_incoming_mail_time",
        "last_outgoing_mail_time",
        "weighted_value",
        "weighted_value_currency",
        "rotten_time",
        "cc_email",
        "company_id",
        "first_char",
        # counters and display copies Pipedrive recomputes when a related record changes (v1
        # bodies carry them): a deal won is not a change to its person or organization
        "open_deals_count",
        "closed_deals_count",
        "won_deals_count",
        "lost_deals_count",
        "related_open_deals_count",
        "related_closed_deals_count",
        "related_won_deals_count",
        "related_lost_deals_count",
        "participant_open_deals_count",
        "participant_closed_deals_count",
        "people_count",
        "reference_activities_count",
        "owner_name",
        "org_name",
        "person_name",
        "formatted_value",
        "formatted_weighted_value",
        "stage_order_nr",
        # v1 notes and activities: display copies of the linked records beside their *_id fields
        "person",
        "organization",
        "user",
        "deal",
    }
)
RELATION_FIELDS: dict[str, ObjectType] = {
    "person_id": ObjectType.CONTACT,
    "org_id": ObjectType.COMPANY,
    "organization_id": ObjectType.COMPANY,
    "deal_id": ObjectType.DEAL,
    "lead_id": ObjectType.LEAD,
}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

HUMAN_SOURCES = frozenset({"app", "web", "mobile", "ios", "android", "web_app", "mobile_app"})
AUTOMATION_SOURCES = frozenset({"automation", "automations", "workflow", "workflows"})
IMPORT_SOURCES = frozenset({"import", "importer"})


def kind_for_source(change_source: str | None) -> ActorKind:
    """`app` (the Pipedrive web app) is a person; `api` and anything unknown stay unknown."""
    source = (change_source or "").strip().lower()
    if source in HUMAN_SOURCES:
        return ActorKind.HUMAN
    if source in AUTOMATION_SOURCES:
        return ActorKind.AUTOMATION
    if source in IMPORT_SOURCES:
        return ActorKind.IMPORT
    return ActorKind.UNKNOWN


def looks_like(payload: Any) -> bool:
    """A webhook body with a meta block naming an action and an object."""
    if not isinstance(payload, dict):
        return False
    meta = payload.get("meta")
    return isinstance(meta, dict) and "action" in meta and ("entity" in meta or "object" in meta)


def normalize(payload: Any) -> tuple[list[ChangeEvent], list[AdapterError]]:
    """One webhook body to one event. Whole-payload problems raise AdapterError."""
    body = require_dict(payload, "payload")
    meta = require_dict(body.get("meta"), "meta")
    if "entity" in meta or str(meta.get("version", "")).startswith("2"):
        return [_v2(body, meta)], []
    return [_v1(body, meta)], []


def _v2(body: dict[str, Any], meta: dict[str, Any]) -> ChangeEvent:
    entity = _entity(meta, "entity")
    action = opt_str(meta.get("action"))
    if action is None:
        raise missing("meta.action")
    operation = _V2_ACTIONS.get(action.lower()) or _V1_ACTIONS.get(action.lower())
    if operation is None:
        raise AdapterError("unknown_action", f"meta.action {action[:32]} is not create, change or delete")
    data = _opt_dict(body.get("data"), "data")
    previous = _opt_dict(body.get("previous"), "previous")
    record_id = _record_id(meta.get("entity_id"), data, previous, "meta.entity_id")
    occurred_at = to_ms(_need(meta, "timestamp"), "meta.timestamp")
    company = opt_id(meta.get("company_id"), "meta.company_id") or "-"

    event_uuid = opt_str(meta.get("id"))
    if event_uuid is not None and _UUID.match(event_uuid):
        event_id, source_event_id = f"pipedrive:{company}:{event_uuid}", event_uuid
    else:
        correlation = opt_str(meta.get("correlation_id"))
        source_event_id = f"{entity}:{record_id}:{action.lower()}:{occurred_at}"
        if correlation:
            source_event_id += f":{correlation}"
        event_id = f"pipedrive:{company}:{source_event_id}"

    merged: tuple[str, ...] = ()
    changes: tuple[FieldChange, ...] = ()
    if operation == "create" and data is not None:
        changes = tuple([trusted_change(f, v) for f, v in _fields(data) if not is_blank(v)])
    elif operation == "update" and previous is not None:
        changes = _v2_changes(data or {}, previous)
    elif operation == "delete":
        merged_to = opt_id(meta.get("merged_to_id"), "meta.merged_to_id")
        if merged_to is not None and merged_to != record_id:
            operation, merged, record_id = "merge", (record_id,), merged_to
    elif operation == "merge":
        merged_from = opt_id(meta.get("merged_from_id"), "meta.merged_from_id")
        merged = (merged_from,) if merged_from is not None and merged_from != record_id else ()
    related = _related(data if operation != "delete" else None, previous if operation == "update" else None)
    # Field names are JSON object keys (str), ids come from id_str: built without validation.
    return trusted_event(
        event_id=event_id,
        source=VENDOR,
        source_event_id=source_event_id,
        occurred_at=occurred_at,
        object_type=OBJECT_TYPES.get(entity, ObjectType.OTHER),
        source_object_type=entity,
        record_id=record_id,
        operation=operation,  # type: ignore[arg-type]
        changes=changes,
        actor=_actor(meta),
        merged_record_ids=merged,
        related=related,
        bulk=as_bool(meta.get("is_bulk_edit", meta.get("is_bulk_update", False))),
    )


def _v1(body: dict[str, Any], meta: dict[str, Any]) -> ChangeEvent:
    entity = _entity(meta, "object")
    action = opt_str(meta.get("action"))
    if action is None:
        raise missing("meta.action")
    operation = _V1_ACTIONS.get(action.lower()) or _V2_ACTIONS.get(action.lower())
    if operation is None:
        raise AdapterError("unknown_action", f"meta.action {action[:32]} is not a record change")
    current = _opt_dict(body.get("current", body.get("data")), "current")
    previous = _opt_dict(body.get("previous"), "previous")
    record_id = _record_id(meta.get("id"), current, previous, "meta.id")
    micro = meta.get("timestamp_micro")
    if micro is None:  # some v1 bodies carry only `timestamp` (s) and `timestamp_milli`
        milli = meta.get("timestamp_milli")
        occurred_at = to_ms(milli if milli is not None else _need(meta, "timestamp"), "meta.timestamp")
        stamp = str(occurred_at)
    else:
        occurred_at = to_ms(micro, "meta.timestamp")
        stamp = id_str(micro, "meta.timestamp_micro")
    company = opt_id(meta.get("company_id"), "meta.company_id") or "-"
    source_event_id = f"{entity}:{record_id}:{action.lower()}:{stamp}"

    merged: tuple[str, ...] = ()
    changes: tuple[FieldChange, ...] = ()
    if operation == "create" and current is not None:
        changes = tuple([trusted_change(f, v) for f, v in _fields(current) if not is_blank(v)])
    elif operation == "update" and current is not None and previous is not None:
        before = dict(_fields(previous))
        changes = tuple([
            trusted_change_old(f, v, before.get(f), f in before)
            for f, v in _fields(current)
            if before.get(f) != v
        ])
    elif operation == "merge":
        loser = opt_id((previous or {}).get("id"), "previous.id")
        if current is not None and current.get("id") is not None:
            record_id = id_str(current.get("id"), "current.id")
        merged = (loser,) if loser is not None and loser != record_id else ()
    related = _related(
        current if operation != "delete" else None, previous if operation == "update" else None
    )
    return trusted_event(
        event_id=f"pipedrive:{company}:{source_event_id}",
        source=VENDOR,
        source_event_id=source_event_id,
        occurred_at=occurred_at,
        object_type=OBJECT_TYPES.get(entity, ObjectType.OTHER),
        source_object_type=entity,
        record_id=record_id,
        operation=operation,  # type: ignore[arg-type]
        changes=changes,
        actor=_actor(meta),
        merged_record_ids=merged,
        related=related,
        bulk=as_bool(meta.get("is_bulk_update", meta.get("is_bulk_edit", False))),
    )


def _need(meta: dict[str, Any], key: str) -> Any:
    if meta.get(key) is None:
        raise missing(f"meta.{key}")
    return meta[key]


def _entity(meta: dict[str, Any], key: str) -> str:
    value = opt_str(meta.get(key))
    if value is None:
        raise missing(f"meta.{key}")
    return value.lower()


def _opt_dict(value: Any, field: str) -> dict[str, Any] | None:
    return None if value is None else require_dict(value, field)


def _record_id(value: Any, data: dict[str, Any] | None, previous: dict[str, Any] | None, field: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        for source in (data, previous):
            if source is not None and source.get("id") is not None:
                return id_str(source.get("id"), "data.id")
        raise missing(field)
    return id_str(value, field)


def _actor(meta: dict[str, Any]) -> Actor:
    return actor_for(opt_str(meta.get("change_source")), opt_id(meta.get("user_id"), "meta.user_id"))


def actor_for(change_source: str | None, user_id: str | None) -> Actor:
    """The actor hint for a change_source and user id (webhook meta, changelog entries alike)."""
    raw = f"change_source={change_source or ''};user_id={user_id or ''}"
    return make_actor(
        VENDOR, kind_for_source(change_source), change_source=change_source, user_id=user_id, raw=raw
    )


def custom_value(value: Any) -> Any:
    """A v2 custom field's value out of its typed envelope."""
    if not isinstance(value, dict) or "type" not in value:
        return value
    if "value" in value and len(value.keys() - {"type", "value", "timezone_id"}) == 0:
        return value["value"]
    if "id" in value and len(value) == 2:
        return value["id"]
    if "values" in value and len(value) == 2 and isinstance(value["values"], list):
        return [v.get("id", v) if isinstance(v, dict) else v for v in value["values"]]
    return {k: v for k, v in value.items() if k != "type"}


def _fields(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    """(field, value) for every non-derived field, custom_fields flattened."""
    out: list[tuple[str, Any]] = []
    for name, value in obj.items():
        if name == "custom_fields":
            if isinstance(value, dict):
                out.extend((key, custom_value(v)) for key, v in value.items())
            continue
        if name not in DERIVED_FIELDS:
            out.append((name, value))
    return out


def _v2_changes(data: dict[str, Any], previous: dict[str, Any]) -> tuple[FieldChange, ...]:
    changes: list[FieldChange] = []
    raw_custom = data.get("custom_fields")
    current_custom: dict[str, Any] = raw_custom if isinstance(raw_custom, dict) else {}
    for name, old in previous.items():
        if name == "custom_fields":
            if isinstance(old, dict):
                for key, old_value in old.items():
                    new = custom_value(current_custom.get(key))
                    changes.append(trusted_change_old(key, new, custom_value(old_value), True))
            continue
        if name in DERIVED_FIELDS:
            continue
        changes.append(trusted_change_old(name, data.get(name), old, True))
    return tuple(changes)


def _ref(value: Any) -> str | None:
    """A relation id: 12, "12", or v1's {"value": 12, "name": ...}."""
    if isinstance(value, dict):
        value = value.get("value", value.get("id"))
    if isinstance(value, (dict, list)):
        return None
    try:
        return opt_id(value, "relation")
    except AdapterError:
        return None


def _related(data: dict[str, Any] | None, previous: dict[str, Any] | None) -> tuple[RelatedRecord, ...]:
    """deal -> person/org, person -> org, activity/note -> deal/person/org/lead; old links removed."""
    out: list[RelatedRecord] = []
    for field, kind in RELATION_FIELDS.items():
        new_id = _ref(data.get(field)) if data is not None else None
        if new_id is not None:
            out.append(trusted_related(kind, new_id))
        if previous is not None and field in previous:
            old_id = _ref(previous.get(field))
            if old_id is not None and old_id != new_id:
                out.append(trusted_related(kind, old_id, True))
    return tuple(out)
