"""Payload writers: canonical `Change`s to what HubSpot, Salesforce and Pipedrive really deliver.

* HubSpot webhooks (v3 request body): a JSON array of up to 100 notifications per POST. Legacy
  subscription types for CRM objects (`contact.creation`, `contact.propertyChange` with one
  propertyName/propertyValue each, `deal.associationChange` with associationType/fromObjectId/
  toObjectId, `contact.merge` with primaryObjectId/mergedObjectIds/newObjectId, `*.deletion`), and
  the generic `object.*` types with `objectTypeId` for engagements (calls 0-48, meetings 0-47,
  notes 0-46), which have no legacy type. Property values are strings (dates as epoch ms).
  changeSource plus sourceId (`userId:N` for a person, an app/workflow/import id otherwise).
  Notifications close in time share a batch; a few batches are redelivered (attemptNumber 1).
* Salesforce Change Data Capture as a CometD client receives it: `{"data": {"schema", "payload":
  {"ChangeEventHeader": {...}, fields}, "event": {"replayId"}}, "channel": "/data/ChangeEvents"}`.
  CREATE carries every non-empty field plus system fields, UPDATE only the changed fields plus
  LastModifiedDate (compound fields nested, listed as `Name.LastName` in changedFields, nulled
  fields in nulledFields), DELETE no fields. A bulk edit is one event with several recordIds.
  changeOrigin `com/salesforce/api/soap/58.0;client=SfdcInternalAPI/` for Lightning users,
  `com/salesforce/api/rest/58.0;client=<App>` for API clients.
* Pipedrive webhooks v2: `{"meta": {...}, "data": current object | null, "previous": old values
  of the changed fields | full object on delete | null}`; custom fields under `custom_fields`
  keyed by 40-character hashes with typed envelopes; merges as a delete with `merged_to_id` plus a
  change with `merged_from_id`.

Each writer streams lines to its file (orjson) and keeps only the current HubSpot batch and a
few pending redeliveries in memory. `emit` returns the canonical event ids the adapters will
derive (app/adapters), so truth.json can name the exact faulty events.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from app.scenario.model import LOST, WON, Actor, Change, Record
from app.scenario.pools import uuid4

EventRef = tuple[str, str | None, str]
"""(record id, canonical field or None, canonical event id)."""


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _iso(ms: int, millis: bool = False) -> str:
    text = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def custom_hash(name: str) -> str:
    """A Pipedrive custom field key: 40 hex characters (stable per field name)."""
    return hashlib.sha1(f"crm-guard-scenario/{name}".encode(), usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------------------------
# Field names per vendor. Canonical objects: person (marketing lead), contact, company, deal,
# ticket, activity, note. `None` means the vendor carries the field as an association/lookup.
# ---------------------------------------------------------------------------------------------

HUBSPOT_OBJECT = {
    "person": "contact",
    "contact": "contact",
    "company": "company",
    "deal": "deal",
    "ticket": "ticket",
}
HUBSPOT_ENGAGEMENT_TYPE = {"call": "0-48", "meeting": "0-47", "note": "0-46", "support": "0-48"}
HUBSPOT_FIELDS: dict[str, dict[str, str]] = {
    "contact": {
        "first": "firstname",
        "last": "lastname",
        "email": "email",
        "phone": "phone",
        "title": "jobtitle",
        "industry": "industry",
        "city": "city",
        "company_name": "company",
        "utm_source": "utm_source",
        "utm_medium": "utm_medium",
        "utm_campaign": "utm_campaign",
        "lifecycle": "lifecyclestage",
        "lead_status": "hs_lead_status",
        "owner": "hubspot_owner_id",
        "sync_status": "sync_status",
    },
    "company": {
        "name": "name",
        "domain": "domain",
        "industry": "industry",
        "employees": "numberofemployees",
        "city": "city",
        "phone": "phone",
        "owner": "hubspot_owner_id",
        "billing_status": "billing_status",
    },
    "deal": {
        "name": "dealname",
        "stage": "dealstage",
        "amount": "amount",
        "closedate": "closedate",
        "owner": "hubspot_owner_id",
        "pipeline": "pipeline",
        "next_step": "ai_next_step",
    },
    "ticket": {
        "subject": "subject",
        "status": "hs_pipeline_stage",
        "priority": "hs_ticket_priority",
        "body": "content",
        "owner": "hubspot_owner_id",
        "pipeline": "hs_pipeline",
    },
    "call": {
        "subject": "hs_call_title",
        "date": "hs_timestamp",
        "owner": "hubspot_owner_id",
        "done": "hs_call_status",
    },
    "meeting": {
        "subject": "hs_meeting_title",
        "date": "hs_timestamp",
        "owner": "hubspot_owner_id",
        "done": "hs_meeting_outcome",
    },
    "note": {"body": "hs_note_body", "date": "hs_timestamp", "owner": "hubspot_owner_id"},
}
HUBSPOT_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
)
HUBSPOT_TICKET_STAGES = {"new": "1", "open": "2", "closed": "4"}

SALESFORCE_OBJECT = {
    "person": "Lead",
    "contact": "Contact",
    "company": "Account",
    "deal": "Opportunity",
    "ticket": "Case",
    "activity": "Task",
    "note": "Task",
}
SALESFORCE_PREFIX = {
    "Lead": "00Q",
    "Contact": "003",
    "Account": "001",
    "Opportunity": "006",
    "Case": "500",
    "Task": "00T",
}
SALESFORCE_FIELDS: dict[str, dict[str, str]] = {
    "Lead": {
        "first": "Name.FirstName",
        "last": "Name.LastName",
        "email": "Email",
        "phone": "Phone",
        "title": "Title",
        "industry": "Industry",
        "city": "Address.City",
        "company_name": "Company",
        "utm_source": "UTM_Source__c",
        "utm_medium": "UTM_Medium__c",
        "utm_campaign": "UTM_Campaign__c",
        "lifecycle": "Rating",
        "lead_status": "Status",
        "owner": "OwnerId",
        "sync_status": "Sync_Status__c",
    },
    "Contact": {
        "first": "Name.FirstName",
        "last": "Name.LastName",
        "email": "Email",
        "phone": "Phone",
        "title": "Title",
        "city": "MailingAddress.City",
        "company_id": "AccountId",
        "owner": "OwnerId",
        "sync_status": "Sync_Status__c",
    },
    "Account": {
        "name": "Name",
        "domain": "Website",
        "industry": "Industry",
        "employees": "NumberOfEmployees",
        "city": "BillingAddress.City",
        "phone": "Phone",
        "owner": "OwnerId",
        "billing_status": "Billing_Status__c",
    },
    "Opportunity": {
        "name": "Name",
        "stage": "StageName",
        "amount": "Amount",
        "closedate": "CloseDate",
        "owner": "OwnerId",
        "company_id": "AccountId",
        "contact_id": "ContactId",
        "next_step": "AI_Next_Step__c",
    },
    "Case": {
        "subject": "Subject",
        "status": "Status",
        "priority": "Priority",
        "body": "Description",
        "company_id": "AccountId",
        "contact_id": "ContactId",
        "owner": "OwnerId",
    },
    "Task": {
        "subject": "Subject",
        "kind": "Type",
        "deal_id": "WhatId",
        "contact_id": "WhoId",
        "company_id": "AccountId",
        "owner": "OwnerId",
        "done": "Status",
        "date": "ActivityDate",
        "body": "Description",
    },
}
SALESFORCE_STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
)
SALESFORCE_STAGE_EXTRA = {  # what Salesforce recalculates when StageName changes
    0: (10, "Pipeline"),
    1: (20, "Pipeline"),
    2: (40, "Pipeline"),
    3: (75, "BestCase"),
    4: (90, "Commit"),
    WON: (100, "Closed"),
    LOST: (0, "Omitted"),
}
SALESFORCE_LEAD_STATUS = {
    "NEW": "Open - Not Contacted",
    "OPEN": "Working - Contacted",
    "IN_PROGRESS": "Working - Engaged",
    "ATTEMPTED_TO_CONTACT": "Working - Attempted",
    "CONNECTED": "Working - Connected",
    "UNQUALIFIED": "Closed - Not Converted",
}
SALESFORCE_RATING = {
    "subscriber": "Cold",
    "lead": "Cold",
    "marketingqualifiedlead": "Warm",
    "salesqualifiedlead": "Hot",
    "opportunity": "Hot",
    "customer": "Hot",
}
SALESFORCE_CASE_STATUS = {"new": "New", "open": "Working", "closed": "Closed"}
SALESFORCE_SCHEMAS = {
    "Lead": "bHd8Tq0y3nJrRv6iN7VwKg",
    "Contact": "IeRuaY6cbI_HsV8Rv1Mc5g",
    "Account": "Jx8Hz9ElkIUaBf-heF1ShA",
    "Opportunity": "q3Wk1tYb0c9PxLmZ2sAeRg",
    "Case": "Vn5cQ2hJ8dKx1TzR0pYwLw",
    "Task": "Dp7sU4fG1aHk9MwE3rNbVQ",
}

PIPEDRIVE_OBJECT = {
    "person": "person",
    "contact": "person",
    "company": "organization",
    "deal": "deal",
    "ticket": "activity",
    "activity": "activity",
    "note": "note",
}
PIPEDRIVE_CUSTOM = {
    "person": (
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "industry",
        "city",
        "company_name",
        "lifecycle",
        "lead_status",
        "sync_status",
    ),
    "organization": ("domain", "industry", "employees", "city", "billing_status"),
    "deal": ("next_step",),
}
PIPEDRIVE_FIELDS: dict[str, dict[str, str]] = {
    "person": {
        "first": "first_name",
        "last": "last_name",
        "email": "emails",
        "phone": "phones",
        "title": "job_title",
        "owner": "owner_id",
        "company_id": "org_id",
    },
    "organization": {"name": "name", "owner": "owner_id", "phone": "phone"},
    "deal": {
        "name": "title",
        "stage": "stage_id",
        "amount": "value",
        "closedate": "expected_close_date",
        "owner": "owner_id",
        "company_id": "org_id",
        "contact_id": "person_id",
        "pipeline": "pipeline_id",
    },
    "activity": {
        "subject": "subject",
        "kind": "type",
        "deal_id": "deal_id",
        "company_id": "org_id",
        "contact_id": "person_id",
        "owner": "owner_id",
        "done": "done",
        "date": "due_date",
    },
    "note": {
        "body": "content",
        "deal_id": "deal_id",
        "company_id": "org_id",
        "contact_id": "person_id",
        "owner": "user_id",
    },
}
for _obj, _names in PIPEDRIVE_CUSTOM.items():
    for _name in _names:
        PIPEDRIVE_FIELDS[_obj][_name] = custom_hash(f"{_obj}.{_name}")


def native_field(vendor: str, obj: str, field: str, kind: str | None = None) -> str:
    """The vendor's field name for a canonical object field, as the adapters report it.

    Salesforce compound components are flattened the way app/adapters/salesforce.py does
    (`Name.LastName` -> `LastName`, `Address.City` -> `City`, `MailingAddress.City` -> `MailingCity`).
    """
    if vendor == "hubspot":
        if obj in ("activity", "note"):
            table = HUBSPOT_FIELDS["note" if obj == "note" else (kind or "call")]
        else:
            table = HUBSPOT_FIELDS[HUBSPOT_OBJECT[obj]]
        return table.get(field, field)
    if vendor == "salesforce":
        name = SALESFORCE_FIELDS[SALESFORCE_OBJECT[obj]].get(field, field)
        parent, dot, comp = name.partition(".")
        if not dot:
            return name
        if parent == "Name":
            return comp
        return parent[: -len("Address")] + comp
    return PIPEDRIVE_FIELDS[PIPEDRIVE_OBJECT[obj]].get(field, field)


class TenantInfo:
    """Per-vendor constants the payloads repeat: account ids and the owners' native ids."""

    def __init__(
        self,
        vendor: str,
        owners: dict[str, str],
        portal_id: int = 0,
        app_id: int = 0,
        company_id: int = 0,
        host: str = "",
    ) -> None:
        self.vendor = vendor
        self.owners = owners
        self.portal_id = portal_id
        self.app_id = app_id
        self.company_id = company_id
        self.host = host


class Writer:
    """Base: a JSON Lines sink with counters."""

    vendor = ""

    def __init__(self, handle: IO[bytes], info: TenantInfo, rng: random.Random) -> None:
        self.out = handle
        self.info = info
        self.rng = rng
        self.lines = 0
        self.events = 0
        self.bytes = 0

    def _write(self, payload: Any) -> None:
        data = orjson.dumps(payload) + b"\n"
        self.out.write(data)
        self.lines += 1
        self.bytes += len(data)

    def owner(self, name: Any) -> str | None:
        if name is None or name == "":
            return None
        return self.info.owners.get(str(name), str(name))

    def emit(self, ch: Change, recs: list[Record], want_ids: bool = False) -> list[EventRef]:
        raise NotImplementedError

    def close(self) -> None:
        """Flush anything buffered."""


# ---------------------------------------------------------------------------------------------
# HubSpot
# ---------------------------------------------------------------------------------------------

_HS_ASSOC_NAMES = {
    "person": "CONTACT",
    "contact": "CONTACT",
    "company": "COMPANY",
    "deal": "DEAL",
    "ticket": "TICKET",
    "call": "CALL",
    "meeting": "MEETING",
    "note": "NOTE",
}
_HS_TYPE_IDS = {
    "contact": "0-1",
    "company": "0-2",
    "deal": "0-3",
    "ticket": "0-5",
    "call": "0-48",
    "meeting": "0-47",
    "note": "0-46",
}
_HS_BATCH_GAP_MS = 1_000
_HS_REDELIVERY_RATE = 0.004


class HubSpotWriter(Writer):
    """Webhook batches (see module docstring). Batch ids: eventId grows, subscriptionId per type+property."""

    vendor = "hubspot"

    def __init__(self, handle: IO[bytes], info: TenantInfo, rng: random.Random) -> None:
        super().__init__(handle, info, rng)
        self.batch: list[dict[str, Any]] = []
        self.batch_start = 0
        self.event_seq = 3_816_279_340
        self.subscriptions: dict[str, int] = {}
        self.redeliveries: list[tuple[int, list[dict[str, Any]]]] = []

    def _subscription(self, key: str) -> int:
        sid = self.subscriptions.get(key)
        if sid is None:
            sid = 1_903_000 + len(self.subscriptions) * 7
            self.subscriptions[key] = sid
        return sid

    def _source(self, actor: Actor) -> dict[str, Any]:
        out: dict[str, Any] = {"changeSource": actor.change_source or "API"}
        if actor.user_id:
            out["sourceId"] = f"userId:{actor.user_id}"
        elif actor.app_id:
            out["sourceId"] = str(actor.app_id)
        return out

    def _note(
        self, at: int, sub_type: str, object_id: str, actor: Actor, extra: dict[str, Any], sub_key: str
    ) -> tuple[dict[str, Any], str]:
        self.event_seq += 1 + self.rng.randrange(40)
        note: dict[str, Any] = {
            "eventId": self.event_seq,
            "subscriptionId": self._subscription(sub_key),
            "portalId": self.info.portal_id,
            "appId": self.info.app_id,
            "occurredAt": at,
            "subscriptionType": sub_type,
            "attemptNumber": 0,
            "objectId": int(object_id),
        }
        note.update(extra)
        note.update(self._source(actor))
        self._add(note)
        self.events += 1
        return note, f"hubspot:{self.info.portal_id}:{self.event_seq}"

    def _add(self, note: dict[str, Any]) -> None:
        at = note["occurredAt"]
        if self.batch and (len(self.batch) >= 100 or at - self.batch_start > _HS_BATCH_GAP_MS):
            self._flush(at)
        if not self.batch:
            self.batch_start = at
        self.batch.append(note)

    def _flush(self, now: int) -> None:
        if self.batch:
            self._write(self.batch)
            if self.rng.random() < _HS_REDELIVERY_RATE:
                again = [dict(n, attemptNumber=1) for n in self.batch]
                self.redeliveries.append((now + 60_000 * (1 + self.rng.randrange(10)), again))
            self.batch = []
        if self.redeliveries:
            due = [r for r in self.redeliveries if r[0] <= now]
            if due:
                self.redeliveries = [r for r in self.redeliveries if r[0] > now]
                for _, again in due:
                    self._write(again)

    def close(self) -> None:
        self._flush(2**62)

    def _value(self, obj: str, field: str, value: Any) -> str:
        if value is None:
            return ""
        if field == "stage":
            if value == WON:
                return "closedwon"
            if value == LOST:
                return "closedlost"
            return HUBSPOT_STAGES[int(value)]
        if field == "status" and obj == "ticket":
            return HUBSPOT_TICKET_STAGES[str(value)]
        if field == "owner":
            return self.owner(value) or ""
        if field == "done":
            return "COMPLETED" if value else "SCHEDULED"
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def emit(self, ch: Change, recs: list[Record], want_ids: bool = False) -> list[EventRef]:
        refs: list[EventRef] = []
        engagement = ch.obj in ("activity", "note")
        for rec in recs:
            kind = (
                "note"
                if ch.obj == "note"
                else str(rec.values.get("kind", "call"))
                if ch.obj == "activity"
                else ""
            )
            if kind == "support":
                kind = "call"
            if engagement:
                type_id = HUBSPOT_ENGAGEMENT_TYPE.get(kind, "0-48")
                prefix = "object"
                table = HUBSPOT_FIELDS["note" if ch.obj == "note" else kind]
                base: dict[str, Any] = {"objectTypeId": type_id}
                assoc_name = _HS_ASSOC_NAMES[kind]
            else:
                prefix = HUBSPOT_OBJECT[ch.obj]
                table = HUBSPOT_FIELDS[prefix]
                base = {}
                assoc_name = _HS_ASSOC_NAMES[ch.obj]
            at = ch.at
            if ch.op == "create":
                _, eid = self._note(
                    at, f"{prefix}.creation", rec.rid, ch.actor, dict(base), f"{prefix}.creation"
                )
                refs.append((rec.rid, None, eid))
                for field, value in ch.new.items():
                    name = table.get(field)
                    if name is None or value is None or value == "":
                        continue
                    at += 1 if self.rng.random() < 0.3 else 0
                    extra = dict(base, propertyName=name, propertyValue=self._value(ch.obj, field, value))
                    _, eid = self._note(
                        at,
                        f"{prefix}.propertyChange",
                        rec.rid,
                        ch.actor,
                        extra,
                        f"{prefix}.propertyChange.{name}",
                    )
                    refs.append((rec.rid, field, f"{eid}:{name}"))
            elif ch.op == "update":
                for field, value in ch.new.items():
                    name = table.get(field)
                    if name is None:
                        continue
                    extra = dict(base, propertyName=name, propertyValue=self._value(ch.obj, field, value))
                    _, eid = self._note(
                        at,
                        f"{prefix}.propertyChange",
                        rec.rid,
                        ch.actor,
                        extra,
                        f"{prefix}.propertyChange.{name}",
                    )
                    refs.append((rec.rid, field, f"{eid}:{name}"))
            elif ch.op == "delete":
                _, eid = self._note(
                    at, f"{prefix}.deletion", rec.rid, ch.actor, dict(base), f"{prefix}.deletion"
                )
                refs.append((rec.rid, None, eid))
            elif ch.op == "merge":
                extra = dict(
                    base,
                    primaryObjectId=int(rec.rid),
                    mergedObjectIds=[int(m) for m in ch.merged],
                    newObjectId=int(rec.rid),
                    numberOfPropertiesMoved=3 + self.rng.randrange(20),
                )
                _, eid = self._note(at, f"{prefix}.merge", rec.rid, ch.actor, extra, f"{prefix}.merge")
                refs.append((rec.rid, None, eid))
            for link_obj, link_id in ch.links:
                to_name = _HS_ASSOC_NAMES[link_obj]
                extra = dict(
                    base,
                    associationType=f"{assoc_name}_TO_{to_name}",
                    fromObjectId=int(rec.rid),
                    toObjectId=int(link_id),
                    associationRemoved=False,
                    isPrimaryAssociation=True,
                )
                if engagement:
                    extra["toObjectTypeId"] = _HS_TYPE_IDS[link_obj if link_obj != "person" else "contact"]
                _, eid = self._note(
                    at, f"{prefix}.associationChange", rec.rid, ch.actor, extra, f"{prefix}.associationChange"
                )
                refs.append((rec.rid, f"link:{link_obj}", f"{eid}:{link_id}"))
        return refs if want_ids else []


# ---------------------------------------------------------------------------------------------
# Salesforce
# ---------------------------------------------------------------------------------------------

_SF_SYSTEM = ("CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById")
_SF_BULK_CHUNK = 50


class SalesforceWriter(Writer):
    """CDC events as a CometD client receives them (see module docstring)."""

    vendor = "salesforce"

    def __init__(self, handle: IO[bytes], info: TenantInfo, rng: random.Random) -> None:
        super().__init__(handle, info, rng)
        self.replay_id = 18_000_000 + rng.randrange(1000)
        self.commit_number = 10_716_283_339_728

    def _value(self, entity: str, field: str, value: Any) -> Any:
        if value is None or value == "":
            return None
        if field == "stage":
            if value == WON:
                return "Closed Won"
            if value == LOST:
                return "Closed Lost"
            return SALESFORCE_STAGES[int(value)]
        if field in ("closedate", "date"):
            return _day(int(value))
        if field == "amount":
            return float(value)
        if field == "owner":
            return self.owner(value)
        if field == "lead_status":
            return SALESFORCE_LEAD_STATUS.get(str(value), str(value))
        if field == "lifecycle":
            return SALESFORCE_RATING.get(str(value), "Cold")
        if field == "status" and entity == "Case":
            return SALESFORCE_CASE_STATUS[str(value)]
        if field == "done":
            return "Completed" if value else "Not Started"
        if field == "domain":
            return f"https://www.{value}"
        if field == "kind":
            return {"call": "Call", "meeting": "Meeting", "note": "Other"}.get(str(value), "Other")
        return value

    def _fields(
        self, entity: str, values: dict[str, Any], ch_obj: str
    ) -> tuple[dict[str, Any], list[str], list[str]]:
        """(body fields with compounds nested, changed paths, nulled paths)."""
        table = SALESFORCE_FIELDS[entity]
        body: dict[str, Any] = {}
        changed: list[str] = []
        nulled: list[str] = []
        for field, value in values.items():
            name = table.get(field)
            if name is None:
                continue
            native = self._value(entity, field, value)
            parent, dot, comp = name.partition(".")
            if dot:
                body.setdefault(parent, {})[comp] = native
            else:
                body[name] = native
            changed.append(name)
            if native is None:
                nulled.append(name)
            if field == "stage" and entity == "Opportunity":
                prob, forecast = SALESFORCE_STAGE_EXTRA[value if value in (WON, LOST) else int(value)]
                body["Probability"] = float(prob)
                body["ForecastCategoryName"] = forecast
                changed += ["Probability", "ForecastCategoryName"]
        return body, changed, nulled

    def _event(
        self,
        ch: Change,
        entity: str,
        rids: list[str],
        change_type: str,
        body: dict[str, Any],
        changed: list[str],
        nulled: list[str],
    ) -> str:
        self.replay_id += 1
        self.commit_number += 1 + self.rng.randrange(5000)
        tx = uuid4(self.rng)
        tx = "000" + tx[3:]  # Salesforce transaction keys look like 0002343d-9d90-...
        header = {
            "entityName": entity,
            "recordIds": rids,
            "changeType": change_type,
            "changeOrigin": ch.actor.change_source or "",
            "transactionKey": tx,
            "sequenceNumber": 1,
            "commitTimestamp": ch.at,
            "commitNumber": self.commit_number,
            "commitUser": ch.actor.user_id,
            "nulledFields": nulled,
            "diffFields": [],
            "changedFields": changed,
        }
        payload = {"ChangeEventHeader": header, **body}
        self._write(
            {
                "data": {
                    "schema": SALESFORCE_SCHEMAS[entity],
                    "payload": payload,
                    "event": {"replayId": self.replay_id},
                },
                "channel": "/data/ChangeEvents",
            }
        )
        self.events += len(rids)
        return f"salesforce:{tx}:1"

    def emit(self, ch: Change, recs: list[Record], want_ids: bool = False) -> list[EventRef]:
        entity = SALESFORCE_OBJECT[ch.obj]
        refs: list[EventRef] = []
        if ch.op == "create":
            for rec in recs:
                values = dict(rec.values)
                body, _, _ = self._fields(
                    entity, {k: v for k, v in values.items() if v not in (None, "")}, ch.obj
                )
                if entity == "Lead":
                    body.setdefault("LeadSource", "Web")
                if entity == "Case":
                    body.setdefault("Origin", "Email")
                if entity == "Task":
                    body.setdefault(
                        "TaskSubtype", "Call" if values.get("kind") in ("call", "meeting") else "Task"
                    )
                    body.setdefault("Priority", "Normal")
                iso = _iso(ch.at)
                body.update(
                    {
                        "CreatedDate": iso,
                        "CreatedById": ch.actor.user_id,
                        "LastModifiedDate": iso,
                        "LastModifiedById": ch.actor.user_id,
                    }
                )
                eid = self._event(ch, entity, [rec.rid], "CREATE", body, [], [])
                refs.extend((rec.rid, f, f"{eid}:{rec.rid}") for f in [None, *ch.new])
        elif ch.op == "update":
            body, changed, nulled = self._fields(entity, ch.new, ch.obj)
            body["LastModifiedDate"] = _iso(ch.at)
            changed.append("LastModifiedDate")
            if any(rec.last_actor != ch.actor.name for rec in recs):
                body["LastModifiedById"] = ch.actor.user_id
                changed.append("LastModifiedById")
            for start in range(0, len(recs), _SF_BULK_CHUNK):
                chunk = [rec.rid for rec in recs[start : start + _SF_BULK_CHUNK]]
                eid = self._event(ch, entity, chunk, "UPDATE", dict(body), list(changed), list(nulled))
                refs.extend((rid, f, f"{eid}:{rid}") for rid in chunk for f in ch.new)
        elif ch.op in ("delete", "merge"):
            losers = ch.merged if ch.op == "merge" else [rec.rid for rec in recs]
            for rid in losers:
                eid = self._event(ch, entity, [rid], "DELETE", {}, [], [])
                refs.append((rid, None, f"{eid}:{rid}"))
        return refs if want_ids else []


# ---------------------------------------------------------------------------------------------
# Pipedrive
# ---------------------------------------------------------------------------------------------

_PD_CUSTOM_TYPES = {"employees": "double"}


def _pd_stage(value: Any) -> int | None:
    """Pipedrive stage_id of a canonical stage (a closed deal stays in the last stage)."""
    if value is None:
        return None
    return 5 if value in (WON, LOST) else 1 + int(value)


class PipedriveWriter(Writer):
    """Webhooks v2 bodies (see module docstring). data is rebuilt from the record's state."""

    vendor = "pipedrive"

    def __init__(self, handle: IO[bytes], info: TenantInfo, rng: random.Random) -> None:
        super().__init__(handle, info, rng)
        self.webhook_id = str(4_710_000 + rng.randrange(9999))
        self.owner_id = next(iter(info.owners.values()), "1")

    def _native(self, entity: str, field: str, value: Any) -> Any:
        if field == "stage":
            return _pd_stage(value)
        if field in ("closedate", "date"):
            return None if value in (None, "") else _day(int(value))
        if field == "owner":
            owner = self.owner(value)
            return int(owner) if owner else None
        if field in ("company_id", "contact_id", "deal_id"):
            return int(value) if value not in (None, "") else None
        if field == "email":
            return [{"label": "work", "value": value, "primary": True}] if value else []
        if field == "phone":
            return [{"label": "work", "value": value, "primary": True}] if value else []
        if field == "kind":
            return str(value)
        if value == "":
            return None
        return value

    def _custom(self, field: str, value: Any) -> Any:
        if value in (None, ""):
            return None
        return {"type": _PD_CUSTOM_TYPES.get(field, "varchar"), "value": value}

    def data(self, ch_obj: str, rec: Record, at: int) -> dict[str, Any]:
        """The full v2 `data` object of a record in its current state."""
        entity = PIPEDRIVE_OBJECT[ch_obj]
        values = rec.values
        customs = PIPEDRIVE_CUSTOM.get(entity, ())
        custom_fields: dict[str, Any] = {}
        rid: Any = int(rec.rid)
        out: dict[str, Any] = {"id": rid, "add_time": _iso(rec.created_at), "update_time": _iso(at)}
        table = PIPEDRIVE_FIELDS[entity]
        for field, name in table.items():
            if field in customs:
                custom_fields[name] = self._custom(field, values.get(field))
            else:
                out[name] = self._native(entity, field, values.get(field))
        if entity == "person":
            first = values.get("first") or ""
            last = values.get("last") or ""
            out["name"] = f"{first} {last}".strip()
            out.update({"label": None, "visible_to": "3"})
        elif entity == "organization":
            out.update(
                {"address": None, "country_code": None, "label": None, "picture_id": None, "visible_to": "3"}
            )
        elif entity == "deal":
            stage = values.get("stage")
            status = "won" if stage == WON else "lost" if stage == LOST else "open"
            out.update(
                {
                    "currency": "USD",
                    "status": status,
                    "probability": None,
                    "channel": None,
                    "channel_id": None,
                    "origin": "ManuallyCreated",
                    "origin_id": None,
                    "label_ids": [],
                    "visible_to": "3",
                    "close_time": _iso(at) if status != "open" else None,
                    "won_time": _iso(at) if status == "won" else None,
                    "lost_time": _iso(at) if status == "lost" else None,
                    "lost_reason": None,
                    "first_won_time": None,
                    "stage_change_time": None,
                    "creator_user_id": int(self.owner_id),
                }
            )
        elif entity == "activity":
            out.update(
                {
                    "active_flag": True,
                    "busy_flag": None,
                    "due_time": None,
                    "duration": None,
                    "lead_id": None,
                    "location": None,
                    "public_description": "",
                    "update_user_id": None,
                }
            )
            out["done"] = bool(values.get("done"))
        elif entity == "note":
            out.update(
                {
                    "lead_id": None,
                    "project_id": None,
                    "active_flag": True,
                    "pinned_to_deal_flag": False,
                    "pinned_to_person_flag": False,
                    "pinned_to_organization_flag": False,
                }
            )
        if entity != "note":
            out["custom_fields"] = {k: v for k, v in custom_fields.items() if v is not None}
        return out

    def _previous(
        self, entity: str, old: dict[str, Any], new: dict[str, Any], last_at: int
    ) -> dict[str, Any]:
        table = PIPEDRIVE_FIELDS[entity]
        customs = PIPEDRIVE_CUSTOM.get(entity, ())
        prev: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        for field, value in old.items():
            name = table.get(field)
            if name is None:
                continue
            if field in customs:
                custom[name] = self._custom(field, value)
            elif field == "stage":
                after = new.get("stage")
                if value in (WON, LOST) or after in (WON, LOST):
                    prev["status"] = value if value in (WON, LOST) else "open"
                if _pd_stage(value) != _pd_stage(after):
                    prev["stage_id"] = _pd_stage(value)
            else:
                prev[name] = self._native(entity, field, value)
        if custom:
            prev["custom_fields"] = custom
        prev["update_time"] = _iso(last_at)
        return prev

    def _meta(
        self, ch: Change, action: str, entity: str, rid: str, extra: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], str]:
        event_id = uuid4(self.rng)
        meta = {
            "action": action,
            "company_id": str(self.info.company_id),
            "correlation_id": uuid4(self.rng),
            "entity_id": rid,
            "entity": entity,
            "id": event_id,
            "is_bulk_edit": bool(ch.bulk),
            "timestamp": _iso(ch.at, millis=True),
            "type": "general",
            "user_id": str(ch.actor.user_id),
            "version": "2.0",
            "webhook_id": self.webhook_id,
            "webhook_owner_id": self.owner_id,
            "change_source": ch.actor.change_source or "api",
            "attempt": 1,
            "host": self.info.host,
        }
        if extra:
            meta.update(extra)
        return meta, f"pipedrive:{self.info.company_id}:{event_id}"

    def _send(self, body: dict[str, Any]) -> None:
        self._write(body)
        self.events += 1
        if self.rng.random() < 0.003:  # a retried delivery: same meta.id, attempt 2
            again = dict(body)
            again["meta"] = dict(body["meta"], attempt=2)
            self._write(again)

    def emit(self, ch: Change, recs: list[Record], want_ids: bool = False) -> list[EventRef]:
        entity = PIPEDRIVE_OBJECT[ch.obj]
        refs: list[EventRef] = []
        for rec in recs:
            if ch.op == "create":
                meta, eid = self._meta(ch, "create", entity, rec.rid)
                self._send({"meta": meta, "data": self.data(ch.obj, rec, ch.at), "previous": None})
                refs.extend((rec.rid, f, eid) for f in [None, *ch.new])
            elif ch.op == "update":
                old = ch.old.get(rec.rid, {})
                meta, eid = self._meta(ch, "change", entity, rec.rid)
                previous = self._previous(entity, old, ch.new, ch.at - 60_000)
                self._send({"meta": meta, "data": self.data(ch.obj, rec, ch.at), "previous": previous})
                refs.extend((rec.rid, f, eid) for f in ch.new)
            elif ch.op == "delete":
                meta, eid = self._meta(ch, "delete", entity, rec.rid)
                self._send({"meta": meta, "data": None, "previous": self.data(ch.obj, rec, ch.at)})
                refs.append((rec.rid, None, eid))
            elif ch.op == "merge":
                for loser in ch.merged:
                    meta, eid = self._meta(ch, "delete", entity, loser, {"merged_to_id": rec.rid})
                    ghost = Record(ch.obj, loser, dict(rec.values), rec.created_at)
                    self._send({"meta": meta, "data": None, "previous": self.data(ch.obj, ghost, ch.at)})
                    refs.append((loser, None, eid))
                meta, eid = self._meta(ch, "change", entity, rec.rid, {"merged_from_id": ch.merged[0]})
                self._send(
                    {
                        "meta": meta,
                        "data": self.data(ch.obj, rec, ch.at),
                        "previous": {"update_time": _iso(ch.at - 60_000)},
                    }
                )
                refs.append((rec.rid, None, eid))
        return refs if want_ids else []


WRITERS = {"hubspot": HubSpotWriter, "salesforce": SalesforceWriter, "pipedrive": PipedriveWriter}
