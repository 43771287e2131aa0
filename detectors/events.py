"""The canonical change event: the one shape every vendor payload is normalized into.

Adapters (app/adapters) build these from HubSpot, Salesforce and Pipedrive payloads; detectors
read nothing else. Times are integer milliseconds since the Unix epoch, UTC: every vendor gives
them (HubSpot occurredAt, Salesforce commitTimestamp) or an ISO string that converts exactly, and
integer arithmetic keeps event-time windows free of naive-datetime bugs.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

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
        return f"{self.source}/{self.object_type.value}/{self.record_id}"


def is_blank(value: JsonValue) -> bool:
    """True for the values a CRM shows as empty: None, "", whitespace, [] and {}."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, dict, tuple)):
        return len(value) == 0
    return False
