"""HubSpot property history (CRM objects read with `propertiesWithHistory`) to events, for backtests.

Webhooks are delivered once; what a portal keeps is each property's history. Read it with the CRM
API, e.g. `GET /crm/v3/objects/contacts?propertiesWithHistory=jobtitle,utm_source,lifecyclestage`
(pages of 50) or `POST /crm/v3/objects/contacts/batch/read` with `propertiesWithHistory`, and give
the objects to `crm-guard replay`, one object or one response page (`{"results": [...]}`) per
line. An object is `{"id", "properties", "propertiesWithHistory": {name: [{"value", "timestamp",
"sourceType", "sourceId", "sourceLabel", "updatedByUserId"}, ... newest first]}, "createdAt",
"updatedAt", "archived"}`.

The object type is not in the object: put it there (`"objectType": "contacts"`, or an
objectTypeId such as `"0-3"`, on the object or the page; `jq -c '.results[] + {objectType:
"contacts"}'`), else it is inferred from the properties (dealstage/dealname: deal; email or
firstname: contact; domain: company; hs_pipeline_stage/subject: ticket), else the object is
dead-lettered `unknown_object_type`.

Mapping: history entries of one object with the same timestamp and source are one save, one
update event with a FieldChange per property; the old value is the property's next older entry
(`has_old`), none for its oldest (the history may be cut short). `createdAt` is a create event
when its creator is known: the source of the `createdate` history, else the one source of the
versions set at `createdAt` (no create event otherwise: an unknown creator would only raise an
unattributed-identity warning, and the values still reach the record state as updates).
sourceType and sourceId mean what webhooks' changeSource and sourceId mean
(app/adapters/hubspot.py: `userId:123` a user, else an app); `updatedByUserId` stands in for a
missing sourceId. Bookkeeping properties
(`lastmodifieddate`, `hs_lastmodifieddate`, `hs_object_id`, `createdate`) are not changes.

event_id: `hubspot:history:{object type}:{id}:{timestamp ms}:{sourceType}:{sourceId}`, and
`...:{id}:created` for the creation: the same on every export. Objects come grouped by record:
the replay orders a history file by event time before it reads it (app/replay.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.adapters.common import id_str, opt_str, page_items, to_ms
from app.adapters.errors import AdapterError, bad_type, missing
from app.adapters.hubspot import BULK_SOURCES, NAMED_TYPES, OBJECT_TYPE_IDS, VENDOR, actor_for
from detectors.events import ChangeEvent, FieldChange, ObjectType

BOOKKEEPING = frozenset({"lastmodifieddate", "hs_lastmodifieddate", "hs_object_id", "createdate"})
_PLURALS = {"contacts": "contact", "companies": "company", "deals": "deal", "tickets": "ticket",
            "leads": "lead"}
_HINTS = (  # (properties that say it, object type), first match wins
    (("dealstage", "dealname"), "deal"),
    (("hs_pipeline_stage", "hs_ticket_priority"), "ticket"),
    (("email", "firstname", "lastname", "jobtitle"), "contact"),
    (("domain",), "company"),
)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("propertiesWithHistory"), dict) and "id" in value


def looks_like(payload: Any) -> bool:
    """An object read with propertiesWithHistory, or a page whose first result is one."""
    if isinstance(payload, dict) and isinstance(payload.get("results"), list):
        results = payload["results"]
        return bool(results) and _is_object(results[0])
    return _is_object(payload)


def normalize(payload: Any) -> tuple[list[ChangeEvent], list[AdapterError]]:
    """Objects (one, an array, or a page) to events; a bad object is its own error."""
    page_type = payload.get("objectType") if isinstance(payload, dict) else None
    events: list[ChangeEvent] = []
    errors: list[AdapterError] = []
    for index, obj in enumerate(page_items(payload, "results")):
        try:
            events.extend(_object_events(obj, page_type))
        except AdapterError as err:
            errors.append(err.at(index))
        except ValidationError as exc:
            errors.append(AdapterError("bad_value", exc.errors()[0]["msg"]).at(index))
    return events, errors


def object_name(obj: dict[str, Any], given: Any = None) -> str:
    """contact, deal ... from `objectType`/`objectTypeId`, else from the properties it has."""
    named = next((v for v in (obj.get("objectType"), obj.get("objectTypeId"), given) if v is not None), None)
    if named is not None:
        text = id_str(named, "objectType").lower()
        return OBJECT_TYPE_IDS.get(text, _PLURALS.get(text, text))
    names = set(obj.get("properties") or {}) | set(obj["propertiesWithHistory"])
    for hints, name in _HINTS:
        if names.intersection(hints):
            return name
    raise AdapterError("unknown_object_type",
                       "the object's type is not given (objectType) and its properties do not tell it")


def _object_events(obj: Any, page_type: Any) -> list[ChangeEvent]:
    if not _is_object(obj):
        raise AdapterError("unknown_shape", "not a HubSpot object read with propertiesWithHistory")
    record_id = id_str(obj.get("id"), "id")
    name = object_name(obj, page_type)
    object_type = NAMED_TYPES.get(name, ObjectType.OTHER)
    saves: dict[tuple[int, str, str], list[FieldChange]] = {}
    creator: tuple[str | None, str | None] | None = None
    for prop, entries in obj["propertiesWithHistory"].items():
        if not isinstance(entries, list):
            raise bad_type(f"propertiesWithHistory.{prop}", "a list of versions")
        versions = [_version(entry, prop) for entry in entries]
        if prop == "createdate" and versions:
            oldest = min(versions, key=lambda v: v[0])
            creator = oldest[1], oldest[2]
        if prop in BOOKKEEPING:
            continue
        versions.sort(key=lambda v: v[0])  # oldest first, whatever order the export kept
        for position, (at, source, source_id, value) in enumerate(versions):
            old = versions[position - 1][3] if position else None
            change = FieldChange(field=prop, new=value, old=old, has_old=position > 0)
            saves.setdefault((at, source or "", source_id or ""), []).append(change)
    events = [_event(name, object_type, record_id, key, tuple(sorted(changes, key=lambda c: c.field)))
              for key, changes in saves.items()]
    created = obj.get("createdAt")
    if created is not None:
        at = to_ms(created, "createdAt")
        if creator is None:  # who set the values the record was created with, when that is one source
            sources = {(source or None, source_id or None) for (when, source, source_id) in saves
                       if when == at}
            creator = sources.pop() if len(sources) == 1 else None
        if creator is not None:  # an unknown creator would only be an unattributed identity to warn about
            events.append(ChangeEvent(
                event_id=f"hubspot:history:{name}:{record_id}:created", source=VENDOR,
                source_event_id=f"{record_id}:created", occurred_at=at, object_type=object_type,
                source_object_type=name, record_id=record_id, operation="create",
                actor=actor_for(creator[0], creator[1]),
            ))
    return events


def _version(entry: Any, prop: str) -> tuple[int, str | None, str | None, Any]:
    """(time, sourceType, sourceId, value) of one history entry."""
    if not isinstance(entry, dict):
        raise bad_type(f"propertiesWithHistory.{prop}[]", "an object")
    if "timestamp" not in entry:
        raise missing("timestamp", f"propertiesWithHistory.{prop}[]")
    source_id = opt_str(entry.get("sourceId"))
    if source_id is None and entry.get("updatedByUserId") is not None:
        source_id = f"userId:{id_str(entry['updatedByUserId'], 'updatedByUserId')}"
    value = entry.get("value")
    return to_ms(entry["timestamp"], "timestamp"), opt_str(entry.get("sourceType")), source_id, value


def _event(name: str, object_type: ObjectType, record_id: str, key: tuple[int, str, str],
           changes: tuple[FieldChange, ...]) -> ChangeEvent:
    at, source, source_id = key
    return ChangeEvent(
        event_id=f"hubspot:history:{name}:{record_id}:{at}:{source}:{source_id}",
        source=VENDOR,
        source_event_id=f"{record_id}:{at}",
        occurred_at=at,
        object_type=object_type,
        source_object_type=name,
        record_id=record_id,
        operation="update",
        changes=changes,
        actor=actor_for(source or None, source_id or None),
        bulk=source.upper() in BULK_SOURCES,
    )
