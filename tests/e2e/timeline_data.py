"""A small incident on the timeline, shared by the timeline API, CLI and browser tests.

hubspot/contact/101  a human sets e-mail and utm_source; agent `enricher` overwrites utm_source
                     (a mass_overwrite finding) and writes a phone number; the human puts utm_source
                     back (an override); a workflow sets lifecyclestage.
hubspot/contact/102  enricher overwrites utm_source; nobody fixes it.
hubspot/deal/9       enricher moves dealstage after an approved proposal.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from app.timeline.store import TimelineEntry, TimelineStore
from app.web import keys
from app.web.timeline import add_routes

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
M = 60_000
H = 3_600_000
EMAIL = "ann.smith@example.com"
PHONE = "+1 415 555 4567"


def _e(record: str, field: str, new: Any, at: int, by: str, kind: str, event_id: str, *,
       object_type: str = "contact", old: Any = None, has_old: bool = False, **extra: Any) -> TimelineEntry:
    return TimelineEntry(event_id=event_id, record_key=f"hubspot/{object_type}/{record}", source="hubspot",
                         object_type=object_type, record_id=record, occurred_at=T0 + at, field=field, old=old,
                         has_old=has_old, new=new, actor_id=by, actor_kind=kind, operation="update", **extra)


def entries() -> list[TimelineEntry]:
    return [
        _e("101", "email", EMAIL, 0, "user-7", "human", "ev-h1"),
        _e("101", "utm_source", "google", 0, "user-7", "human", "ev-h1"),
        _e("101", "utm_source", "enriched", H, "enricher", "agent", "ev-a1", old="google", has_old=True),
        _e("101", "mobilephone", PHONE, H, "enricher", "agent", "ev-a1"),
        _e("101", "utm_source", "google", 3 * H, "user-7", "human", "ev-h2", old="enriched", has_old=True),
        _e("101", "lifecyclestage", "lead", 4 * H, "workflow-12", "automation", "ev-w1"),
        _e("102", "utm_source", "newsletter", 0, "user-8", "human", "ev-h3"),
        _e("102", "utm_source", "enriched", H + M, "enricher", "agent", "ev-a2", old="newsletter", has_old=True),
        _e("9", "dealstage", "qualifiedtobuy", 0, "user-7", "human", "ev-h4", object_type="deal"),
        _e("9", "dealstage", "closedwon", 2 * H, "enricher", "agent", "ev-a3", object_type="deal",
           old="qualifiedtobuy", has_old=True, proposal_id="p-9"),
    ]


def filled_store() -> TimelineStore:
    store = TimelineStore()
    for entry in entries():
        store.append(entry)
    store.attach_finding({"detector": "mass_overwrite", "severity": "warning", "summary": "enricher overwrote "
                          "utm_source on 2 records", "group": "utm_source", "event_id": "ev-a1",
                          "record_key": "hubspot/contact/101", "agent": "enricher", "actor_key": "enricher",
                          "occurred_at": T0 + H, "details": {"field": "utm_source"}})
    store.attach_finding({"detector": "override", "severity": "info", "summary": "a human set utm_source back",
                          "group": "utm_source", "event_id": "ev-h2", "record_key": "hubspot/contact/101",
                          "agent": "enricher", "actor_key": "human:hubspot:user-7", "occurred_at": T0 + 3 * H,
                          "details": {"field": "utm_source", "agent": "enricher", "agent_event_id": "ev-a1",
                                      "agent_value": "enriched", "human_value": "google"}})
    store.attach_decision({"proposal_id": "p-9", "record_key": "hubspot/deal/9", "decision": "review",
                           "decided_at": T0 + H, "decided_by": "gate", "reason": "high tier field"})
    store.attach_decision({"proposal_id": "p-9", "record_key": "hubspot/deal/9", "decision": "approved",
                           "decided_at": T0 + H + 30 * M, "decided_by": "ann", "reason": "customer signed"})
    return store


ALERTS = [{
    "alert_id": "abc", "dedup_key": "mass_overwrite:abc", "kind": "mass_overwrite", "severity": "critical",
    "status": "open", "actor_key": "enricher", "actor_kind": "agent", "agent": "enricher",
    "sample_record_keys": ["hubspot/contact/101", "hubspot/contact/102"], "count": 2, "records": 2,
    "first_event_at": T0 + H, "last_event_at": T0 + H + M, "detected_at": T0 + H + M,
    "summary": "enricher overwrote utm_source on 2 records", "action": "paused",
}]
TRUST = {"enricher": {"low": {"trust": 0.82, "approvals": 40, "overrides": 2}, "high": 0.31}}


def timeline_app(show_pii: bool = False, **extra: Any) -> web.Application:
    app = web.Application()
    app[keys.TIMELINE] = filled_store()
    app[keys.SHOW_PII] = show_pii
    app[keys.ALERTS] = ALERTS
    app[keys.TRUST] = TRUST
    for key, value in extra.items():
        app[key] = value
    add_routes(app)
    return app
