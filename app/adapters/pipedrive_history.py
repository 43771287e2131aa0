"""Pipedrive field changelogs (`GET /v1/{deals|persons|organizations}/{id}/changelog`) to events.

Pipedrive keeps every field update of deals, persons and organizations. The changelog endpoints
answer `{"success", "data": [{"field_key", "old_value", "new_value", "actor_user_id", "time":
"2024-02-12 09:14:35" (UTC), "change_source", "change_source_user_agent",
"is_bulk_update_flag"}], "additional_data": {"next_cursor"}}`: the record is only in the URL, so
the export adds it, one response per line:

    curl -s "https://api.pipedrive.com/v1/deals/42/changelog?limit=500&api_token=$TOKEN" \\
      | jq -c '{entity: "deal", id: 42} + .'

Mapping: entries of one line with the same time, user and change_source are one save: one update
event with a FieldChange per field, old and new value (`has_old`). The actor is what a webhook's
meta would give (app/adapters/pipedrive.py: change_source `app` a person, `api` unknown until the
policy names the user); `is_bulk_update_flag` sets `bulk`. Derived fields (update_time, activity
counters ...) are not changes, as for webhooks.

event_id: `pipedrive:changelog:{entity}:{id}:{time ms}:{user}:{change_source}`, the same on every
export. Exports come one record at a time: the replay orders a history file by event time before
it reads it (app/replay.py).
"""

from __future__ import annotations

from typing import Any

from app.adapters.common import as_bool, events_per_save, id_str, opt_id, opt_str, page_items, to_ms
from app.adapters.errors import AdapterError, bad_type, missing
from app.adapters.pipedrive import DERIVED_FIELDS, OBJECT_TYPES, VENDOR, actor_for
from detectors.events import ChangeEvent, FieldChange

_ENTITIES = {"deals": "deal", "persons": "person", "organizations": "organization"}


def looks_like(payload: Any) -> bool:
    """A changelog response with the entity and record id the export added."""
    return (isinstance(payload, dict) and isinstance(payload.get("data"), list) and "entity" in payload
            and "id" in payload and "meta" not in payload)


def normalize(payload: Any) -> tuple[list[ChangeEvent], list[AdapterError]]:
    """One record's changelog (a response with `entity` and `id`) to one event per save."""
    if not looks_like(payload):
        raise AdapterError("unknown_shape",
                           'not a Pipedrive changelog export ({"entity", "id", "data": [...]})')
    entity = _ENTITIES.get(str(payload["entity"]).lower(), str(payload["entity"]).lower())
    if entity not in OBJECT_TYPES:
        raise bad_type("entity", "deal, person or organization")
    record_id = id_str(payload["id"], "id")
    return events_per_save(page_items(payload, "data"), _save_key,
                           lambda key, entries: _event(entity, record_id, key, entries),
                           lambda key: f"{entity} {record_id}")


def _save_key(entry: Any) -> tuple[int, str, str]:
    if not isinstance(entry, dict):
        raise bad_type("data[]", "an object")
    if not isinstance(entry.get("field_key"), str) or not entry["field_key"]:
        raise missing("field_key", "changelog entry")
    if "time" not in entry:
        raise missing("time", "changelog entry")
    user = opt_id(entry.get("actor_user_id"), "actor_user_id") or ""
    return to_ms(entry["time"], "time"), user, opt_str(entry.get("change_source")) or ""


def _event(entity: str, record_id: str, key: tuple[int, str, str],
           entries: list[dict[str, Any]]) -> ChangeEvent:
    at, user, source = key
    changes = tuple(
        FieldChange(field=e["field_key"], new=e.get("new_value"), old=e.get("old_value"), has_old=True)
        for e in sorted(entries, key=lambda e: e["field_key"]) if e["field_key"] not in DERIVED_FIELDS
    )
    return ChangeEvent(
        event_id=f"pipedrive:changelog:{entity}:{record_id}:{at}:{user}:{source}",
        source=VENDOR,
        source_event_id=f"{entity}:{record_id}:{at}",
        occurred_at=at,
        object_type=OBJECT_TYPES[entity],
        source_object_type=entity,
        record_id=record_id,
        operation="update",
        changes=changes,
        actor=actor_for(source or None, user or None),
        bulk=any(as_bool(e.get("is_bulk_update_flag", False)) for e in entries),
    )
