"""Payloads published by the vendors or recorded in public code, through the adapters.

Each one once came out wrong: an overflow event on Salesforce's empty record id, HubSpot's own
enrichment taken for an unknown integration, Pipedrive v1 counters and placeholder arrays taken
for changes, a v1 body whose only precise time is `timestamp_milli`.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.adapters import normalize_with_errors
from app.adapters.errors import AdapterError
from detectors.events import ActorKind, ChangeEvent, is_blank


def one(payload: Any) -> ChangeEvent:
    events, errors = normalize_with_errors(payload, "auto")
    assert not errors and len(events) == 1
    return events[0]


def test_salesforce_overflow_on_the_empty_record_id_is_a_gap_on_the_whole_entity() -> None:
    # Change Data Capture Developer Guide, "Overflow Events" (the example's null fields trimmed)
    payload = {"ChangeEventHeader": {
        "entityName": "Account", "recordIds": ["000000000000000AAA"], "changeType": "GAP_OVERFLOW",
        "changeOrigin": "com/salesforce/api/soap/61.0;client=Workbench/",
        "transactionKey": "000a5148-405c-21fe-86ce-03205d7404ad", "sequenceNumber": 6,
        "commitTimestamp": 1714417568000, "commitNumber": 72784848482, "commitUser": "005ZM000000M6o1YAC",
        "nulledFields": [], "diffFields": [], "changedFields": []},
        "Name": None, "Industry": None, "OwnerId": None}
    event = one(payload)
    assert (event.operation, event.record_id) == ("gap", "*")
    assert [(c.field, c.new) for c in event.changes] == [("__gap__", "GAP_OVERFLOW")]


def test_hubspot_internal_enrichment_is_automation_not_an_unknown_integration() -> None:
    # sesam-io/hubspot-connector README, "Example change event"
    payload = [{"appId": 1305300, "attemptNumber": 0, "changeSource": "HUBSPOT_INTERNAL",
                "eventId": 2931120501, "objectId": 6682673371, "occurredAt": 1670945968638,
                "portalId": 26525078,
                "propertyName": "twitterhandle", "propertyValue": "avisaGD",
                "sourceId": "CompanyInsightsPropertyMappings", "subscriptionId": 1876067,
                "subscriptionType": "company.propertyChange"}]
    event = one(payload)
    assert event.actor.kind is ActorKind.AUTOMATION
    assert [(c.field, c.new) for c in event.changes] == [("twitterhandle", "avisaGD")]


PIPEDRIVE_V1_PERSON = {  # PipedreamHQ/pipedream, pipedrive new-person-instant test event (trimmed)
    "v": 1, "meta": {"action": "added", "change_source": "api", "company_id": 1234567890, "id": 10,
                     "is_bulk_update": False, "object": "person", "timestamp": 1739826941,
                     "timestamp_micro": 1739826941509060, "user_id": 1234567890, "v": 1},
    "current": {"related_closed_deals_count": 0, "email_messages_count": 0, "cc_email": "x@pipedrivemail.com",
                "owner_id": 1234567890, "open_deals_count": 0, "participant_open_deals_count": 0, "id": 10,
                "job_title": None, "owner_name": "Owner Name", "im": [{"value": "", "primary": True}],
                "related_won_deals_count": 0, "label_ids": [], "phone": [{"value": "", "primary": True}],
                "visible_to": "3", "org_id": None, "notes_count": 0, "name": "Person Name",
                "participant_closed_deals_count": 0, "lost_deals_count": 0, "active_flag": True,
                "update_time": "2025-02-17 21:15:41", "activities_count": 0, "org_name": None,
                "first_name": "Person Name", "email": [{"value": "", "primary": True}], "won_deals_count": 0,
                "files_count": 0, "company_id": 1234567890, "first_char": "p", "closed_deals_count": 0,
                "last_name": "02", "related_lost_deals_count": 0, "related_open_deals_count": 0,
                "followers_count": 0, "add_time": "2025-02-17 21:15:41", "done_activities_count": 0},
    "previous": None, "retry": 0, "event": "added.person"}


def test_pipedrive_v1_counters_display_copies_and_empty_placeholders_are_not_changes() -> None:
    event = one(PIPEDRIVE_V1_PERSON)
    fields = {c.field for c in event.changes}
    assert fields == {"owner_id", "visible_to", "name", "active_flag", "first_name", "last_name"}
    assert is_blank([{"value": "", "primary": True}]) and is_blank({"value": None})
    assert not is_blank([{"value": "+4915112345678", "primary": True}])
    assert not is_blank({"value": 5, "name": "X"})


def test_pipedrive_v1_time_from_timestamp_milli_when_there_is_no_micro() -> None:
    # a v1 `added.note` body as recorded in a public Django project's tests
    payload = {"v": 1, "matches_filters": None, "meta": {
        "v": 1, "action": "added", "object": "note", "id": 995, "company_id": 1689563, "user_id": 2428657,
        "host": "example.pipedrive.com", "timestamp": 1492687681, "timestamp_milli": 1492687681417,
        "permitted_user_ids": ["*"], "trans_pending": False, "is_bulk_update": False},
        "retry": 0, "current": {
            "id": 995, "user_id": 2428657, "deal_id": None, "person_id": 994, "org_id": None,
            "content": "This is an example note", "add_time": "2017-04-20 11:28:01",
            "update_time": "2017-04-20 11:28:01", "active_flag": True, "last_update_user_id": None,
            "organization": None, "person": {"name": "TEST_PERSON"}, "deal": None,
            "user": {"email": "user@example.com", "name": "TEST_USER", "icon_url": None, "is_you": True}},
        "previous": None, "event": "added.note"}
    event = one(payload)
    assert event.occurred_at == 1492687681417
    assert {c.field for c in event.changes} == {"user_id", "person_id", "content", "active_flag"}


def test_hubspot_conversations_inbox_events_are_not_crm_changes() -> None:
    # simstudioai/sim, HubSpot conversation trigger payload examples: chat threads, not CRM records
    base = {"subscriptionId": 4629980, "portalId": 244315265, "appId": 23608917, "occurredAt": 1762659213730,
            "attemptNumber": 0, "objectId": 316126906055}
    user = {"changeSource": "CRM_UI", "sourceId": "userId:84916424"}
    batch = [
        {**base, "eventId": 3181526820, "subscriptionType": "conversation.creation", "changeSource": "EMAIL"},
        {**base, **user, "eventId": 3181526824, "subscriptionType": "conversation.propertyChange",
         "propertyName": "status", "propertyValue": "closed"},
        {**base, **user, "eventId": 3181526821, "subscriptionType": "conversation.deletion"},
        {**base, **user, "eventId": 3181526825, "subscriptionType": "contact.propertyChange",
         "propertyName": "jobtitle", "propertyValue": "CTO"},
    ]
    events, errors = normalize_with_errors(batch, "auto")
    assert [e.source_object_type for e in events] == ["contact"]  # the CRM change in the same delivery
    assert [(e.index, e.reason) for e in errors] == [(0, "unknown_subscription_type"),
                                                     (1, "unknown_subscription_type"),
                                                     (2, "unknown_subscription_type")]


def test_a_hubspot_webhooks_journal_page_is_refused_with_what_to_send_instead() -> None:
    # The page at the journal's pre-signed URL (API 2026-03), in the shape usertour/usertour's
    # hubspot-journal-api.ts says it verified against the live API: {offset, journalEvents, publishedAt}.
    page = {
        "offset": "550e8400-e29b-41d4-a716-446655440000",
        "journalEvents": [{"type": "crmObject", "portalId": 62515, "occurredAt": "2026-03-02T09:59:58.120Z",
                           "action": "UPDATE", "objectTypeId": "0-1", "objectId": 101,
                           "propertyChanges": {"utm_source": "enriched"}}],
        "publishedAt": "2026-03-02T10:00:00Z",
    }
    for source in ("auto", "hubspot"):
        with pytest.raises(AdapterError) as raised:
            normalize_with_errors(page, source)
        assert raised.value.reason == "unsupported_format:hubspot_journal"
        assert "changeSource" in raised.value.message and "/webhooks/hubspot" in raised.value.message
    # a HubSpot notification that merely has an `offset` property is still a notification
    note = {"eventId": 1, "subscriptionId": 2, "portalId": 62515, "appId": 4242, "occurredAt": 1767225600000,
            "subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": 101,
            "changeSource": "CRM_UI", "sourceId": "userId:7", "propertyName": "offset", "propertyValue": "3"}
    assert one(note).changes[0].field == "offset"
