"""The canonical change event: the one shape every vendor payload is normalized into.

Adapters (app/adapters) build these from HubSpot, Salesforce and Pipedrive payloads; detectors
read nothing else. Times are integer milliseconds since the Unix epoch, UTC: every vendor gives
them (HubSpot occurredAt, Salesforce commitTimestamp) or an ISO string that converts exactly, and
integer arithmetic keeps event-time windows free of naive-datetime bugs.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

JsonValue = Any
"""A field value as the vendor sent it: str, int, float, bool, None, list or dict."""

Operation = Literal["create", "update", "delete", "merge", "restore", "associate", "gap"]


class ActorKind(str, Enum):
    """Who made a change. `unknown` is itself a finding (unattributed_actor)."""

    HUMAN = "human"
    AGENT = "agent"
    AUTOMATION = "automation"
    IMPORT = "import"
    INTEGRATION = "integration"
    UNKNOWN = "unknown"


class ObjectType(str, Enum):
    """Vendor object types folded into the few kinds the detectors reason about."""

    CONTACT = "contact"
    COMPANY = "company"
    DEAL = "deal"
    TICKET = "ticket"
    LEAD = "lead"
    ACTIVITY = "activity"
    OTHER = "other"


class SourceIdentity(BaseModel):
    """The identity a vendor reports for a change, kept verbatim for audit.

    HubSpot: change_source=changeSource, user_id from sourceId "userId:N", app_id otherwise.
    Salesforce: user_id=commitUser, app_id=the client named in changeOrigin.
    Pipedrive: user_id=meta.user_id, change_source=meta.change_source.
    """

    model_config = ConfigDict(frozen=True)

    vendor: str
    change_source: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    raw: str = ""

    def describe(self) -> str:
        """A compact, PII-free label such as `hubspot change_source=INTEGRATION app_id=42`."""
        parts = [self.vendor]
        for name in ("change_source", "user_id", "app_id"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value}")
        return " ".join(parts)


class Actor(BaseModel):
    """The attributed actor. `id` is the agent name for agents, else a vendor-scoped user id."""

    model_config = ConfigDict(frozen=True)

    kind: ActorKind = ActorKind.UNKNOWN
    id: str = "unknown"
    identity: SourceIdentity


class FieldChange(BaseModel):
    """One field's new value; `old` only where the source gives it (`has_old`)."""

    model_config = ConfigDict(frozen=True)

    field: str
    new: JsonValue = None
    old: JsonValue = None
    has_old: bool = False


class RelatedRecord(BaseModel):
    """A record this one is associated with (deal -> company, ticket -> contact, ...)."""

    model_config = ConfigDict(frozen=True)

    object_type: ObjectType
    record_id: str
    removed: bool = False


class ChangeEvent(BaseModel):
    """One change to one CRM record, attributed to an actor.

    `event_id` is deterministic (derived from the vendor's own ids), so a redelivered payload
    yields the same id and every state update keyed by it is idempotent.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    source: str = Field(description="hubspot, salesforce, pipedrive, or another vendor name")
    source_event_id: str
    occurred_at: int = Field(description="milliseconds since the Unix epoch, UTC")
    object_type: ObjectType
    source_object_type: str = Field(description="the vendor's own object name, e.g. Opportunity")
    record_id: str
    operation: Operation
    changes: tuple[FieldChange, ...] = ()
    actor: Actor
    merged_record_ids: tuple[str, ...] = ()
    related: tuple[RelatedRecord, ...] = ()
    bulk: bool = Field(default=False, description="part of a vendor bulk edit or import batch")

    @property
    def record_key(self) -> str:
        """The partition key of everything about this record: `source/object_type/record_id`."""
        # `_value_` is the member's value without the enum descriptor (a hot path: several calls per event).
        return f"{self.source}/{self.object_type._value_}/{self.record_id}"


def is_blank(value: JsonValue) -> bool:
    """True for the values a CRM shows as empty: None, "", whitespace, [] and {}, a list of such
    values, and a `{"value": <empty>, ...}` entry: Pipedrive sends a person without a phone as
    `phone: [{"value": "", "primary": true}]`, which is as empty as no phone."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple)):
        return all(is_blank(item) for item in value)
    if isinstance(value, dict):
        return len(value) == 0 or ("value" in value and is_blank(value["value"]))
    return False


# ---- trusted construction (the adapters' hot path) ------------------------------------------------
#
# Validating a ChangeEvent costs ~2 us, a FieldChange ~1 us: a third of normalizing a HubSpot
# notification. The vendor adapters build every value with the right type themselves (ids through
# id_str, times through to_ms, enums from their own tables), so they may skip validation with these
# builders. Canonical input (app/adapters/canonical.py) and everything else still validates.
# The objects are exactly what validation gives: every field in definition order (defaults filled),
# `model_fields_set` = the fields the caller named, no extra or private values (what pydantic's own
# model_construct sets, without its per-call overhead). tests/unit/test_trusted_events.py checks
# them against validation.

_object_setattr = object.__setattr__
_new = object.__new__
# BaseModel's own slots: setting them through their descriptors skips object.__setattr__'s lookup.
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_CHANGE_SET_NEW = frozenset({"field", "new"})
_CHANGE_SET_OLD = frozenset({"field", "new", "old", "has_old"})
_RELATED_SET = frozenset({"object_type", "record_id"})
_RELATED_SET_REMOVED = frozenset({"object_type", "record_id", "removed"})


_M = TypeVar("_M", bound=BaseModel)


def _trusted(cls: type[_M], data: dict[str, Any], fields_set: frozenset[str] | set[str]) -> _M:
    obj: _M = _new(cls)
    _object_setattr(obj, "__dict__", data)
    _set_fields_set(obj, set(fields_set))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


trusted_model = _trusted
"""trusted_model(cls, data, fields_set): an instance of one of these models without validation. `data`
holds every field, in definition order, with values of the field types (it becomes the instance's
own dict); `fields_set` names the fields the caller gave. For values validated before: the replay
hands observations from one process to another with it."""


def trusted_change(field: str, new: JsonValue) -> FieldChange:
    """`FieldChange(field=field, new=new)` without validation (types already right)."""
    data = {"field": field, "new": new, "old": None, "has_old": False}
    return _trusted(FieldChange, data, _CHANGE_SET_NEW)


def trusted_change_old(field: str, new: JsonValue, old: JsonValue, has_old: bool) -> FieldChange:
    """`FieldChange(field=.., new=.., old=.., has_old=..)` without validation."""
    data = {"field": field, "new": new, "old": old, "has_old": has_old}
    return _trusted(FieldChange, data, _CHANGE_SET_OLD)


def trusted_related(object_type: ObjectType, record_id: str, removed: bool | None = None) -> RelatedRecord:
    """`RelatedRecord(object_type=.., record_id=..[, removed=..])` without validation (None: not given)."""
    if removed is None:
        data = {"object_type": object_type, "record_id": record_id, "removed": False}
        return _trusted(RelatedRecord, data, _RELATED_SET)
    data = {"object_type": object_type, "record_id": record_id, "removed": removed}
    return _trusted(RelatedRecord, data, _RELATED_SET_REMOVED)


ALL_EVENT_FIELDS = frozenset(ChangeEvent.model_fields)


def trusted_event(
    *,
    event_id: str,
    source: str,
    source_event_id: str,
    occurred_at: int,
    object_type: ObjectType,
    source_object_type: str,
    record_id: str,
    operation: Operation,
    actor: Actor,
    changes: tuple[FieldChange, ...] = (),
    merged_record_ids: tuple[str, ...] = (),
    related: tuple[RelatedRecord, ...] = (),
    bulk: bool = False,
    fields_set: frozenset[str] = ALL_EVENT_FIELDS,
) -> ChangeEvent:
    """`ChangeEvent(...)` without validation, for adapters whose values already have the field types
    (str ids, int ms, ObjectType, tuples of FieldChange / RelatedRecord / str, an Actor, a bool).
    `fields_set`: the fields the equivalent `ChangeEvent(...)` call names (all of them by default)."""
    return _trusted(
        ChangeEvent,
        {
            "event_id": event_id,
            "source": source,
            "source_event_id": source_event_id,
            "occurred_at": occurred_at,
            "object_type": object_type,
            "source_object_type": source_object_type,
            "record_id": record_id,
            "operation": operation,
            "changes": changes,
            "actor": actor,
            "merged_record_ids": merged_record_ids,
            "related": related,
            "bulk": bulk,
        },
        fields_set,
    )


def with_actor(event: ChangeEvent, actor: Actor) -> ChangeEvent:
    """`event.model_copy(update={"actor": actor})`, without its generic copy machinery."""
    data = dict(event.__dict__)
    data["actor"] = actor
    obj = _new(ChangeEvent)
    _object_setattr(obj, "__dict__", data)
    _object_setattr(obj, "__pydantic_fields_set__", event.__pydantic_fields_set__ | {"actor"})
    _object_setattr(obj, "__pydantic_extra__", event.__pydantic_extra__)
    _object_setattr(obj, "__pydantic_private__", event.__pydantic_private__)
    return obj
