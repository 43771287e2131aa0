"""Salesforce Change Data Capture events to canonical change events.

Accepted shapes (one CDC event per payload):
* CometD / Streaming API: `{"data": {"schema", "payload": {"ChangeEventHeader": ..., fields}, "event":
  {"replayId"}}, "channel": "/data/AccountChangeEvent"}`, the newer `{"schema", "payload", "event"}`
  form, and the bare payload `{"ChangeEventHeader": ..., fields}`.
* Pub/Sub API, Avro decoded to JSON by a bridge: every schema field present (null when unchanged),
  `changedFields`/`nulledFields`/`diffFields` as bitmap strings (`"0x400080"`, `"4-0x02"`).

One event per record id: Salesforce merges identical changes to several records into one event
(`recordIds` has them all), so each id gets its own ChangeEvent with the same changes and
`bulk=True`. changeType CREATE/UPDATE/DELETE/UNDELETE map to create/update/delete/restore; every
GAP_* change type maps to operation `gap` with one FieldChange `__gap__` holding the original
change type (detectors/source_gap.py reads it); a GAP_OVERFLOW without record ids becomes one gap
event on record `*` so it is never dropped.

Changed fields: on UPDATE the header's field names, `Compound.Component` names flattened to the
object's field name (Name.LastName -> LastName, BillingAddress.City -> BillingCity, Loc__c.Latitude
-> Loc__Latitude__s); enriched fields that did not change are ignored. Bitmaps are decoded against
the payload's own key order when it is the Avro schema order (ChangeEventHeader first, as an Avro
decoder emits it, and LastModifiedDate among the decoded changes); otherwise the changes are
inferred from the non-null fields. CREATE and UNDELETE carry every non-blank field. System fields
(LastModifiedDate, SystemModstamp, LastModifiedById, CreatedDate, CreatedById, IsDeleted) are not
changes. Large text fields listed in diffFields keep the diff Salesforce sent as their value.

event_id: `salesforce:{transactionKey}:{sequenceNumber}:{recordId}` (the same on every channel),
else `salesforce:replay:{channel}:{replayId}:{recordId}`.
"""

from __future__ import annotations

import re
from typing import Any

from app.adapters.common import make_actor, opt_id, opt_str, require_dict, to_ms
from app.adapters.errors import AdapterError, bad_type, missing
from detectors.events import (
    ALL_EVENT_FIELDS,
    Actor,
    ActorKind,
    ChangeEvent,
    FieldChange,
    ObjectType,
    RelatedRecord,
    is_blank,
    trusted_change,
    trusted_event,
    trusted_related,
)

VENDOR = "salesforce"
HEADER = "ChangeEventHeader"

OBJECT_TYPES: dict[str, ObjectType] = {
    "Contact": ObjectType.CONTACT,
    "Account": ObjectType.COMPANY,
    "Opportunity": ObjectType.DEAL,
    "Case": ObjectType.TICKET,
    "Lead": ObjectType.LEAD,
    "Task": ObjectType.ACTIVITY,
    "Event": ObjectType.ACTIVITY,
}
_OPERATIONS = {"CREATE": "create", "UPDATE": "update", "DELETE": "delete", "UNDELETE": "restore"}
SYSTEM_FIELDS = frozenset(
    {
        "LastModifiedDate",
        "SystemModstamp",
        "LastModifiedById",
        "CreatedDate",
        "CreatedById",
        "IsDeleted",
    }
)
# Record id key prefixes of the objects the guard relates records through.
_ID_PREFIXES = {
    "001": ObjectType.COMPANY,
    "003": ObjectType.CONTACT,
    "006": ObjectType.DEAL,
    "00Q": ObjectType.LEAD,
    "500": ObjectType.TICKET,
    "00T": ObjectType.ACTIVITY,
    "00U": ObjectType.ACTIVITY,
}
SF_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
"""A Salesforce record id: 15 characters (case-sensitive) or 18."""
_ORIGIN = re.compile(r"^com/salesforce/api/([^/;]+)(?:/[^;]*)?(?:;client=(.*))?$")
_BITMAP = re.compile(r"^(?:(\d+)-)?0[xX]([0-9a-fA-F]+)$")
_AVRO_PRIMITIVES = frozenset({"string", "long", "int", "double", "float", "boolean", "bytes"})
EMPTY_RECORD_IDS = frozenset({"000000000000000AAA", "000000000000000"})
"""Salesforce's empty record id: the only id of a GAP_OVERFLOW event, which stands for every record
of its entity (Change Data Capture Developer Guide, "Overflow Events")."""
_EVENT_FIELDS_SET = ALL_EVENT_FIELDS - {"merged_record_ids"}  # the fields `normalize` names


def looks_like(payload: Any) -> bool:
    """A CDC event in one of the accepted envelopes."""
    return _locate(payload) is not None


def _locate(payload: Any) -> tuple[dict[str, Any], Any, str | None] | None:
    """(the event body holding ChangeEventHeader, replayId, channel), or None."""
    if not isinstance(payload, dict):
        return None
    channel = payload.get("channel") if isinstance(payload.get("channel"), str) else None
    node = payload
    data = node.get("data")
    if (
        HEADER not in node
        and isinstance(data, dict)
        and (HEADER in data or isinstance(data.get("payload"), dict))
    ):
        node = data
    raw_event = node.get("event")
    event: dict[str, Any] = raw_event if isinstance(raw_event, dict) else {}
    replay = node.get("replayId", event.get("replayId"))
    if HEADER in node:
        return node, replay, channel
    inner = node.get("payload")
    if isinstance(inner, dict) and HEADER in inner:
        return inner, replay, channel
    inner = event.get("payload")
    if isinstance(inner, dict) and HEADER in inner:
        return inner, replay, channel
    return None


def normalize(payload: Any) -> tuple[list[ChangeEvent], list[AdapterError]]:
    """One CDC event to one ChangeEvent per record id. Whole-payload problems raise AdapterError."""
    located = _locate(payload)
    if located is None:
        raise AdapterError("unknown_shape", "not a Salesforce change event (no ChangeEventHeader)")
    body, replay, channel = located
    header = {
        _lower(k): v if v.__class__ is not dict else _unwrap(v)
        for k, v in require_dict(body[HEADER], HEADER).items()
    }

    entity = opt_str(header.get("entityname")) or _entity_from_channel(channel)
    if entity is None:
        raise missing("entityName", "ChangeEventHeader")
    change_type = opt_str(header.get("changetype"))
    if change_type is None:
        raise missing("changeType", "ChangeEventHeader")
    change_type = change_type.upper()
    gap = change_type.startswith("GAP_")
    operation = "gap" if gap else _OPERATIONS.get(change_type)
    if operation is None:
        raise AdapterError("unknown_change_type", f"changeType {change_type[:32]} is not a record change")
    if header.get("committimestamp") is None:
        raise missing("commitTimestamp", "ChangeEventHeader")
    occurred_at = to_ms(header.get("committimestamp"), "commitTimestamp")
    record_ids = _record_ids(header.get("recordids"))
    if gap:  # an overflow names the empty record id: the gap is the whole object type
        record_ids = [r for r in record_ids if r not in EMPTY_RECORD_IDS]
    if not record_ids:
        if not gap:
            raise missing("recordIds", "ChangeEventHeader")
        record_ids = ["*"]
    base_id, source_event_id = _event_ids(header, replay, channel, entity, occurred_at, change_type)

    origin = opt_str(header.get("changeorigin"))
    api, client = parse_change_origin(origin)
    actor = _actor(origin, api, client, opt_id(header.get("commituser"), "commitUser"))

    # Field names are str (header names are str()-ed by _names, body keys are JSON object keys), so
    # the events are built without validation (see detectors/events.py).
    if gap:
        changes: tuple[FieldChange, ...] = (trusted_change("__gap__", change_type),)
    elif operation in ("create", "restore"):
        changes = tuple([trusted_change(f, v) for f, v in _all_fields(body)])
    elif operation == "update":
        changes = tuple([trusted_change(f, v) for f, v in _update_fields(body, header)])
    else:
        changes = ()
    related = _related(changes)
    bulk = len(record_ids) > 1 or (api or "").lower().startswith("bulk")
    object_type = OBJECT_TYPES.get(entity, ObjectType.OTHER)
    events = [
        trusted_event(
            event_id=f"{base_id}:{record_id}",
            source=VENDOR,
            source_event_id=source_event_id,
            occurred_at=occurred_at,
            object_type=object_type,
            source_object_type=entity,
            record_id=record_id,
            operation=operation,  # type: ignore[arg-type]
            changes=changes,
            actor=actor,
            related=related,
            bulk=bulk,
            fields_set=_EVENT_FIELDS_SET,
        )
        for record_id in record_ids
    ]
    return events, []


_LOWER: dict[str, str] = {}


def _lower(key: Any) -> str:
    """str(key).lower(), remembered for the few header names there are (bounded)."""
    low = _LOWER.get(key) if key.__class__ is str else None
    if low is None:
        low = str(key).lower()
        if key.__class__ is str and len(_LOWER) < 1024:
            _LOWER[key] = low
    return low


def parse_change_origin(origin: str | None) -> tuple[str | None, str | None]:
    """(API name, client id) from `com/salesforce/api/soap/58.0;client=SfdcInternalAPI/`.

    The client loses its trailing slash (`SfdcInternalAPI`), so policy rules name it plainly.
    """
    if not origin:
        return None, None
    match = _ORIGIN.match(origin.strip())
    if match:
        api, client = match.group(1), match.group(2)
    else:
        api, client = None, origin.split(";client=", 1)[1] if ";client=" in origin else None
    client = (client or "").strip().rstrip("/").strip() or None
    return api, client


def kind_for_origin(origin: str | None, client: str | None, commit_user: str | None) -> ActorKind:
    """Lightning UI (SfdcInternalAPI) or an empty origin with a user: human; Data Loader: import."""
    if client is not None:
        low = client.lower()
        if low == "sfdcinternalapi":
            return ActorKind.HUMAN
        if low.startswith("dataloader"):
            return ActorKind.IMPORT
        return ActorKind.UNKNOWN
    if not origin and commit_user:
        return ActorKind.HUMAN
    return ActorKind.UNKNOWN


def _actor(origin: str | None, api: str | None, client: str | None, user: str | None) -> Actor:
    return make_actor(
        VENDOR,
        kind_for_origin(origin, client, user),
        change_source=api,
        user_id=user,
        app_id=client,
        raw=origin or "",
    )


def _entity_from_channel(channel: str | None) -> str | None:
    """`/data/AccountChangeEvent` -> Account, `/data/Employee__ChangeEvent` -> Employee__c."""
    if not channel:
        return None
    name = channel.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith("__ChangeEvent"):
        return name[: -len("__ChangeEvent")] + "__c"
    if name.endswith("ChangeEvent") and name != "ChangeEvents":
        return name[: -len("ChangeEvent")] or None
    return None


def _record_ids(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise bad_type("recordIds", "a list of record ids")
    ids: list[str] = []
    for item in value:
        one = opt_id(item, "recordIds")
        if one is not None and one not in ids:
            ids.append(one)
    return ids


def _event_ids(
    header: dict[str, Any],
    replay: Any,
    channel: str | None,
    entity: str,
    occurred_at: int,
    change_type: str,
) -> tuple[str, str]:
    key = opt_str(header.get("transactionkey"))
    seq = opt_id(header.get("sequencenumber"), "sequenceNumber")
    if key is not None and seq is not None:
        return f"salesforce:{key}:{seq}", f"{key}:{seq}"
    replay_id = opt_id(replay, "replayId") if not isinstance(replay, (dict, list)) else None
    if replay_id is not None:
        return f"salesforce:replay:{channel or entity}:{replay_id}", replay_id
    commit = opt_id(header.get("commitnumber"), "commitNumber")
    if commit is not None:
        return f"salesforce:commit:{entity}:{commit}:{occurred_at}:{change_type}", commit
    raise missing("transactionKey", "ChangeEventHeader (no transactionKey, replayId or commitNumber)")


def _unwrap(value: Any) -> Any:
    """Avro JSON encodes a union value as {"string": "Acme"}; take the value out."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key in _AVRO_PRIMITIVES:
            return inner
    return value


def flat_name(parent: str, component: str) -> str:
    """The object field a compound component stands for."""
    if parent == "Name":
        return component
    if parent.endswith("Address"):
        return parent[: -len("Address")] + component
    if parent.endswith("__c"):
        return f"{parent[:-3]}__{component}__s"
    return f"{parent}.{component}"


def _all_fields(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every non-blank field (compound fields flattened): the content of a CREATE or UNDELETE."""
    out: list[tuple[str, Any]] = []
    for name, raw in body.items():
        if name == HEADER:
            continue
        value = _unwrap(raw)
        if isinstance(value, dict):
            for comp, comp_raw in value.items():
                comp_value = _unwrap(comp_raw)
                field = flat_name(name, comp)
                if not is_blank(comp_value) and field not in SYSTEM_FIELDS:
                    out.append((field, comp_value))
        elif not is_blank(value) and name not in SYSTEM_FIELDS:
            out.append((name, value))
    return out


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [str(v).strip() for v in value if isinstance(v, (str, int)) and str(v).strip()]


def _decode(entries: list[str], body: dict[str, Any], keys: list[str]) -> list[str] | None:
    """Field paths from names and bitmaps; None when a bitmap cannot be read against `keys`."""
    paths: list[str] = []
    for entry in entries:
        match = _BITMAP.match(entry)
        if match is None:
            paths.append(entry)
            continue
        if not keys:
            return None
        bits = int(match.group(2), 16)
        if match.group(1) is None:
            names = keys
            prefix = ""
        else:
            parent_pos = int(match.group(1))
            if parent_pos >= len(keys):
                return None
            parent = keys[parent_pos]
            nested = _unwrap(body.get(parent))
            if not isinstance(nested, dict):
                return None
            names = list(nested.keys())
            prefix = parent + "."
        position = 0
        while bits:
            if bits & 1:
                if position >= len(names):
                    return None
                paths.append(prefix + names[position])
            bits >>= 1
            position += 1
    # A compound named at the top level and in a nested bitmap changed only in those components.
    nested_parents = {p.split(".", 1)[0] for p in paths if "." in p}
    return [p for p in paths if "." in p or p not in nested_parents]


def _update_fields(body: dict[str, Any], header: dict[str, Any]) -> list[tuple[str, Any]]:
    keys = list(body.keys())
    schema_order = bool(keys) and keys[0] == HEADER
    order = keys if schema_order else []
    changed_entries = _names(header.get("changedfields"))
    nulled_entries = _names(header.get("nulledfields"))
    diff_entries = _names(header.get("difffields"))

    changed = _decode(changed_entries, body, order)
    if changed is not None and order and any(_BITMAP.match(e) for e in changed_entries):
        top = {p.split(".", 1)[0] for p in changed}
        if "LastModifiedDate" in body and "LastModifiedDate" not in top:
            changed = None  # the key order is not the schema order: do not trust the decoding
    nulled = _decode(nulled_entries, body, order) or []
    diff = _decode(diff_entries, body, order) or []

    result: dict[str, Any] = {}
    if changed is None or (not changed_entries and not nulled):
        for field, value in _all_fields(body):
            result[field] = value
    else:
        for path in changed:
            for field, value in _expand(path, body, nulled=False):
                result[field] = value
    for path in nulled:
        for field, _ in _expand(path, body, nulled=True):
            result[field] = None
    for path in diff:
        for field, value in _expand(path, body, nulled=False):
            result.setdefault(field, value)
    return [(f, v) for f, v in result.items() if f not in SYSTEM_FIELDS]


def _expand(path: str, body: dict[str, Any], nulled: bool) -> list[tuple[str, Any]]:
    """(field, value) pairs for a changed path; a whole compound expands to its components."""
    parent, dot, comp = path.partition(".")
    value = _unwrap(body.get(parent))
    if dot:
        component = _unwrap(value.get(comp)) if isinstance(value, dict) else None
        return [(flat_name(parent, comp), None if nulled else component)]
    if isinstance(value, dict):
        return [
            (flat_name(parent, c), None if nulled else _unwrap(v))
            for c, v in value.items()
            if nulled or _unwrap(v) is not None
        ]
    return [(parent, None if nulled else value)]


def _related(changes: tuple[FieldChange, ...]) -> tuple[RelatedRecord, ...]:
    """Records named by changed lookup fields (AccountId, WhoId, WhatId, ...), typed by id prefix."""
    out: list[RelatedRecord] = []
    seen: set[str] = set()
    for change in changes:
        value = change.new
        if change.field == "Id" or not change.field.endswith("Id") or not isinstance(value, str):
            continue
        if not SF_ID.match(value) or value in seen:
            continue
        kind = _ID_PREFIXES.get(value[:3])
        if kind is not None:
            seen.add(value)
            out.append(trusted_related(kind, value))
    return tuple(out)
