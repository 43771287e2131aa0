"""HubSpot webhooks (Webhooks API v3 payloads) to canonical change events.

A delivery is a JSON array of notifications; each one names one record. Both subscription
styles are accepted: the legacy `contact.propertyChange` form (object in the name) and the
generic `object.propertyChange` form (object in `objectTypeId`, e.g. `0-1`). Mapping:

    *.creation -> create          *.propertyChange -> update (one FieldChange, new value only)
    *.deletion, *.privacyDeletion -> delete       *.restore -> restore
    *.merge -> merge (record = newObjectId or primaryObjectId; merged ids = the others)
    *.associationChange -> associate (RelatedRecord to toObjectId; removed when associationRemoved)

Each element is normalized on its own, so one bad element is one dead letter and the rest of the
batch goes on. Values are kept as HubSpot sends them (property values are strings).

event_id: `hubspot:{portalId}:{eventId}`, plus `:{propertyName}` for property changes and
`:{toObjectId}` for association changes: HubSpot documents eventId as "not guaranteed to be
unique", and a collision on one record would make the record state drop a real change as a
redelivery; the suffixes come from the payload, so a redelivery still gets the same id.
"""

from __future__ import annotations

from typing import Any

from app.adapters.common import as_bool, id_str, make_actor, opt_id, opt_str, require_dict, to_ms
from app.adapters.errors import AdapterError, bad_type, missing
from detectors.events import (
    ALL_EVENT_FIELDS,
    Actor,
    ActorKind,
    ChangeEvent,
    FieldChange,
    ObjectType,
    RelatedRecord,
    trusted_change,
    trusted_event,
    trusted_related,
)

VENDOR = "hubspot"

_ACTIONS = {
    "creation": "create",
    "propertyChange": "update",
    "deletion": "delete",
    "privacyDeletion": "delete",
    "merge": "merge",
    "restore": "restore",
    "associationChange": "associate",
}

NAMED_TYPES: dict[str, ObjectType] = {
    "contact": ObjectType.CONTACT,
    "company": ObjectType.COMPANY,
    "deal": ObjectType.DEAL,
    "ticket": ObjectType.TICKET,
    "lead": ObjectType.LEAD,
    "task": ObjectType.ACTIVITY,
    "call": ObjectType.ACTIVITY,
    "meeting": ObjectType.ACTIVITY,
    "note": ObjectType.ACTIVITY,
    "email": ObjectType.ACTIVITY,
    "communication": ObjectType.ACTIVITY,
    "postal_mail": ObjectType.ACTIVITY,
}

# objectTypeId values from HubSpot's "Understanding the CRM" object type id table.
OBJECT_TYPE_IDS: dict[str, str] = {
    "0-1": "contact",
    "0-2": "company",
    "0-3": "deal",
    "0-5": "ticket",
    "0-136": "lead",
    "0-27": "task",
    "0-46": "note",
    "0-47": "meeting",
    "0-48": "call",
    "0-49": "email",
    "0-18": "communication",
    "0-116": "postal_mail",
    "0-7": "product",
    "0-8": "line_item",
    "0-14": "quote",
}

# changeSource -> actor hint. The list of sources is HubSpot's property-history source enum.
HUMAN_SOURCES = frozenset(
    {
        "CRM_UI",
        "CRM",
        "CRM_UI_BULK_ACTION",
        "MOBILE_IOS",
        "MOBILE_ANDROID",
        "SALES",
        "EXTENSION",
        "BCC_TO_CRM",
        "FORWARD_TO_CRM",
        "GMAIL_INTEGRATION",
        "EMAIL_INTEGRATION",
        "SALES_MESSAGES",
        "MEETINGS",
        "USER",
    }
)
IMPORT_SOURCES = frozenset({"IMPORT"})
AUTOMATION_SOURCES = frozenset(
    {
        "WORKFLOWS",
        "AUTOMATION_PLATFORM",
        "CALCULATED",
        "WORKFLOW_CONTACT_DELETE_ACTION",
        "SEQUENCES",
        "BOT",
        "ANALYTICS",
        "FORM",
        "CONTACTS_WEB",
        "EMAIL",
        "SOCIAL",
        "ADS",
        "BEHAVIORAL_EVENTS",
        "COMPANY_INSIGHTS",
        "HUBSPOT_INTERNAL",  # HubSpot's own processes, e.g. sourceId CompanyInsightsPropertyMappings
        "DATA_ENRICHMENT",  # HubSpot's enrichment (Breeze Intelligence)
        "INTERNAL_PROCESSING",
        "MERGE_CONTACTS",
        "MERGE_COMPANIES",
        "MERGE_OBJECTS",
        "RECYCLING_BIN",
        "ASSOCIATIONS",
        "PORTAL_USER_ASSOCIATOR",
    }
)
BULK_SOURCES = frozenset({"IMPORT", "CRM_UI_BULK_ACTION", "BATCH_UPDATE"})


def kind_for_source(change_source: str | None) -> ActorKind:
    """The actor-kind hint for a HubSpot changeSource (API, INTEGRATION and unknown: unknown)."""
    source = (change_source or "").upper()
    if source in HUMAN_SOURCES:
        return ActorKind.HUMAN
    if source in IMPORT_SOURCES:
        return ActorKind.IMPORT
    if source in AUTOMATION_SOURCES:
        return ActorKind.AUTOMATION
    return ActorKind.UNKNOWN


def looks_like(payload: Any) -> bool:
    """A HubSpot notification (or a batch whose first element is one)."""
    if isinstance(payload, list):
        return not payload or (isinstance(payload[0], dict) and "subscriptionType" in payload[0])
    return (
        isinstance(payload, dict)
        and "subscriptionType" in payload
        and ("objectId" in payload or "eventId" in payload)
    )


def is_journal_page(payload: Any) -> bool:
    """A page of HubSpot's webhooks journal (API 2026-03: `{offset, journalEvents, publishedAt}`,
    fetched from the pre-signed URL the journal endpoints return), not a webhook delivery."""
    return isinstance(payload, dict) and isinstance(payload.get("journalEvents"), list) and "offset" in payload


def journal_page_error() -> AdapterError:
    """Journal pages are refused with a reason that says what to send instead. Their events, as
    published so far (no official schema; SDKs and community clients), hold `action`,
    `objectTypeId`, `objectId` and a `propertyChanges` map but no changeSource or sourceId: the
    guard could not tell an agent's change from a person's, which is the point of reading them."""
    return AdapterError(
        "unsupported_format:hubspot_journal",
        "a HubSpot webhooks-journal page (offset, journalEvents) is not read: its events name no "
        "changeSource or sourceId to attribute a change by. Send HubSpot's webhook deliveries "
        "(/webhooks/hubspot), or fetch property history with `crm-guard history hubspot`",
    )


def normalize(payload: Any) -> tuple[list[ChangeEvent], list[AdapterError]]:
    """A batch (or a single notification) to events; bad elements become errors, not exceptions."""
    if isinstance(payload, dict):
        if is_journal_page(payload):
            raise journal_page_error()
        return [normalize_one(payload)], []
    if not isinstance(payload, list):
        raise AdapterError("unknown_shape", "a HubSpot delivery is a JSON array of notifications")
    events: list[ChangeEvent] = []
    errors: list[AdapterError] = []
    for index, element in enumerate(payload):
        try:
            events.append(normalize_one(element))
        except AdapterError as err:
            errors.append(err.at(index))
    return events, errors


def normalize_one(element: Any) -> ChangeEvent:
    """One notification to one event."""
    note = element if element.__class__ is dict else require_dict(element, "element")
    sub_type = note.get("subscriptionType")
    parsed = _SUB_TYPES.get(sub_type) if sub_type.__class__ is str else None
    if parsed is None:
        if sub_type is None:
            raise missing("subscriptionType", "notification")
        if not isinstance(sub_type, str) or "." not in sub_type:
            raise bad_type("subscriptionType", "of the form object.action")
        object_name, _, action_name = sub_type.partition(".")
        operation = None if object_name in NOT_CRM_OBJECTS else _ACTIONS.get(action_name)
        if operation is None:
            raise AdapterError(
                "unknown_subscription_type", f"subscriptionType {sub_type[:64]} is not a CRM change"
            )
        if len(_SUB_TYPES) < 1024:
            _SUB_TYPES[sub_type] = (object_name, operation)
    else:
        object_name, operation = parsed
    source_object, object_type = _object_of(object_name, note)

    event_id_raw = id_str(note.get("eventId"), "eventId")
    portal = opt_id(note.get("portalId"), "portalId") or "-"
    occurred_at = to_ms(note.get("occurredAt"), "occurredAt")
    change_source = opt_str(note.get("changeSource"))
    actor = actor_for(change_source, note.get("sourceId"))

    changes: tuple[FieldChange, ...] = ()
    related: tuple[RelatedRecord, ...] = ()
    merged: tuple[str, ...] = ()
    suffix = ""
    if operation == "merge":
        record_id, merged = _merge_ids(note)
    elif operation == "associate":
        record_id = id_str(note.get("fromObjectId", note.get("objectId")), "fromObjectId")
        to_id = id_str(note.get("toObjectId"), "toObjectId")
        removed = as_bool(note.get("associationRemoved", False))
        related = (trusted_related(_association_target(note), to_id, removed),)
        suffix = f":{to_id}" + (":removed" if removed else "")
    else:
        record_id = id_str(note.get("objectId"), "objectId")
        if operation == "update":
            prop = note.get("propertyName")
            if prop is None:
                raise missing("propertyName", "propertyChange")
            if not isinstance(prop, str) or not prop.strip():
                raise bad_type("propertyName", "a property name")
            changes = (trusted_change(prop, note.get("propertyValue")),)
            suffix = f":{prop}"

    # Every value above has its field's type already: no validation needed (see detectors/events.py).
    return trusted_event(
        event_id=f"hubspot:{portal}:{event_id_raw}{suffix}",
        source=VENDOR,
        source_event_id=event_id_raw,
        occurred_at=occurred_at,
        object_type=object_type,
        source_object_type=source_object,
        record_id=record_id,
        operation=operation,  # type: ignore[arg-type]
        changes=changes,
        actor=actor,
        merged_record_ids=merged,
        related=related,
        bulk=(change_source or "").upper() in BULK_SOURCES,
        fields_set=ALL_EVENT_FIELDS,
    )


# subscriptionType -> (object name, operation), parsed once per type. Bounded: types are few.
_SUB_TYPES: dict[str, tuple[str, str]] = {}
NOT_CRM_OBJECTS = frozenset({"conversation"})
"""Subscription objects that are not CRM records: the Conversations inbox's `conversation.creation`,
`.propertyChange`, `.deletion`, `.privacyDeletion`, `.newMessage` are chat threads, dead-lettered
`unknown_subscription_type` like any other non-CRM subscription (remove them from the app)."""


def _object_of(object_name: str, note: dict[str, Any]) -> tuple[str, ObjectType]:
    if object_name == "object":
        type_id = note.get("objectTypeId")
        if type_id is None:
            raise missing("objectTypeId", "generic notification")
        type_id = id_str(type_id, "objectTypeId")
        name = OBJECT_TYPE_IDS.get(type_id, type_id)
    else:
        name = object_name
    return name, NAMED_TYPES.get(name.lower(), ObjectType.OTHER)


_ACTOR_CACHE: dict[tuple[str | None, str | None], Actor] = {}


def actor_for(change_source: str | None, source_id: Any) -> Actor:
    """The actor hint for a changeSource and sourceId (also property history's sourceType, sourceId)."""
    sid = opt_str(source_id)
    key = (change_source, sid)
    actor = _ACTOR_CACHE.get(key)
    if actor is None:
        actor = _build_actor(change_source, sid)
        if len(_ACTOR_CACHE) >= 10_000:
            _ACTOR_CACHE.clear()
        _ACTOR_CACHE[key] = actor
    return actor


def _build_actor(change_source: str | None, sid: str | None) -> Actor:
    user_id = app_id = None
    if sid is not None:
        key, sep, rest = sid.partition(":")
        if sep and key.strip().lower() in ("userid", "user") and rest.strip():
            user_id = rest.strip()
        else:
            app_id = sid
    raw = f"changeSource={change_source or ''};sourceId={sid or ''}"
    return make_actor(
        VENDOR,
        kind_for_source(change_source),
        change_source=change_source,
        user_id=user_id,
        app_id=app_id,
        raw=raw,
    )


def _merge_ids(note: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    primary = opt_id(note.get("primaryObjectId"), "primaryObjectId")
    new = opt_id(note.get("newObjectId"), "newObjectId")
    record_id = new or primary or opt_id(note.get("objectId"), "objectId")
    if record_id is None:
        raise missing("primaryObjectId", "merge")
    raw_merged = note.get("mergedObjectIds") or []
    if not isinstance(raw_merged, list):
        raw_merged = [raw_merged]
    ids: list[str] = []
    for value in [primary, *raw_merged]:
        one = opt_id(value, "mergedObjectIds")
        if one is not None and one != record_id and one not in ids:
            ids.append(one)
    return record_id, tuple(ids)


_TARGET_WORDS = (
    ("LINE_ITEM", ObjectType.OTHER),
    ("PRODUCT", ObjectType.OTHER),
    ("QUOTE", ObjectType.OTHER),
    ("CONTACT", ObjectType.CONTACT),
    ("COMPANY", ObjectType.COMPANY),
    ("DEAL", ObjectType.DEAL),
    ("TICKET", ObjectType.TICKET),
    ("LEAD", ObjectType.LEAD),
    ("CALL", ObjectType.ACTIVITY),
    ("EMAIL", ObjectType.ACTIVITY),
    ("MEETING", ObjectType.ACTIVITY),
    ("NOTE", ObjectType.ACTIVITY),
    ("TASK", ObjectType.ACTIVITY),
    ("COMMUNICATION", ObjectType.ACTIVITY),
)


def _association_target(note: dict[str, Any]) -> ObjectType:
    """The type of toObjectId: from toObjectTypeId, else the right side of CONTACT_TO_COMPANY."""
    to_type = note.get("toObjectTypeId")
    if to_type is not None and not isinstance(to_type, bool):
        name = OBJECT_TYPE_IDS.get(str(to_type).strip())
        if name is not None:
            return NAMED_TYPES.get(name, ObjectType.OTHER)
    assoc = note.get("associationType")
    if isinstance(assoc, str) and "_TO_" in assoc.upper():
        target = assoc.upper().split("_TO_", 1)[1]
        for word, kind in _TARGET_WORDS:
            if word in target:
                return kind
    return ObjectType.OTHER
