"""The vendor-neutral vocabulary of the simulation: actors, records and changes.

The generator simulates one CRM per vendor in a canonical vocabulary (objects `person`,
`contact`, `company`, `deal`, `ticket`, `activity`, `note`; fields such as `email`, `stage`,
`utm_source`); app/scenario/vendors.py turns each `Change` into the payloads that vendor really
delivers. Keeping the simulation neutral is what lets one fault plan play out identically in
HubSpot, Salesforce and Pipedrive formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HUMAN = "human"
AGENT = "agent"
AUTOMATION = "automation"
IMPORT = "import"
INTEGRATION = "integration"
UNKNOWN = "unknown"

OPEN_STAGES = 5
WON = "won"
LOST = "lost"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, with the identity the vendor reports for it.

    HubSpot: `change_source` is changeSource, `user_id` becomes sourceId `userId:N`, else `app_id`
    is the sourceId. Salesforce: `user_id` is commitUser, `change_source` the full changeOrigin.
    Pipedrive: `user_id` is meta.user_id, `change_source` meta.change_source (`app` or `api`).
    """

    name: str
    kind: str
    role: str
    vendor: str
    change_source: str | None = None
    user_id: str | None = None
    app_id: str | None = None

    def identity(self) -> dict[str, str]:
        """The identity fields as the adapters read them (for truth.json and the policy file)."""
        out = {"vendor": self.vendor}
        if self.vendor == "salesforce":
            client = None
            if self.change_source and ";client=" in self.change_source:
                client = self.change_source.split(";client=", 1)[1].rstrip("/") or None
            if self.user_id:
                out["user_id"] = self.user_id
            if client:
                out["app_id"] = client
            return out
        if self.change_source:
            out["change_source"] = self.change_source
        if self.user_id:
            out["user_id"] = self.user_id
        if self.app_id and not self.user_id:
            out["app_id"] = self.app_id
        return out

    def actor_key(self) -> str:
        """The guard's actor key for a non-agent (`kind:vendor:id`, see detectors/base.actor_key)."""
        ident = self.identity()
        vendor_id = ident.get("user_id") or ident.get("app_id") or ident.get("change_source") or "unknown"
        return f"{self.kind}:{self.vendor}:{vendor_id}"


@dataclass(slots=True)
class Record:
    """One CRM record's current canonical values; `last_actor` is who saved it last (Salesforce
    sends LastModifiedById only when that changes)."""

    obj: str
    rid: str
    values: dict[str, Any]
    created_at: int
    last_actor: str = ""
    deleted: bool = False


@dataclass(slots=True)
class Change:
    """One write by one actor: a create, update, delete, merge or association.

    `rids` has one record id, or several for a bulk edit that sets the same values on each (a
    HubSpot bulk action, a Salesforce event with several recordIds, Pipedrive's is_bulk_edit).
    `old` holds, per record id, the previous values of the fields in `new` (Pipedrive sends them;
    the truth file records them). `links` are associations the change adds: (object, record id).
    """

    at: int
    op: str
    obj: str
    rids: list[str]
    actor: Actor
    new: dict[str, Any] = field(default_factory=dict)
    old: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    bulk: bool = False
