"""HubSpot webhook notifications -> ChangeEvents (fixtures mirror HubSpot's published examples)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from app.adapters import AdapterError, detect_source, normalize, normalize_with_errors
from app.adapters.hubspot import kind_for_source
from detectors.events import ActorKind, ObjectType

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vendors"


def load(name: str):
    return json.loads((FIXTURES / name).read_text())


def note(**overrides):
    base = {
        "eventId": 100,
        "subscriptionId": 1,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": 1564113600000,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 123,
        "propertyName": "email",
        "propertyValue": "ann@example.com",
        "changeSource": "CRM_UI",
        "sourceId": "userId:9",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def test_docs_batch_maps_every_element():
    events = normalize(load("hubspot_batch.json"))
    assert [(e.operation, e.object_type, e.record_id) for e in events] == [
        ("update", ObjectType.CONTACT, "1246965"),
        ("create", ObjectType.CONTACT, "1246978"),
        ("create", ObjectType.CONTACT, "65059681032"),
        ("update", ObjectType.DEAL, "9876543210"),
    ]
    first = events[0]
    assert first.source == "hubspot" and first.source_object_type == "contact"
    assert first.occurred_at == 1462216307945
    assert first.event_id == "hubspot:33:3816279340:lifecyclestage"
    assert first.source_event_id == "3816279340"
    assert [(c.field, c.new, c.has_old) for c in first.changes] == [("lifecyclestage", "subscriber", False)]
    # IMPORT: an import, part of a bulk load; CRM_UI with a user: a person; INTEGRATION: unknown app
    assert events[1].actor.kind is ActorKind.IMPORT and events[1].bulk
    ui = events[2].actor
    assert ui.kind is ActorKind.HUMAN and ui.id == "45678"
    assert (
        ui.identity.user_id == "45678"
        and ui.identity.change_source == "CRM_UI"
        and ui.identity.app_id is None
    )
    integration = events[3].actor
    assert integration.kind is ActorKind.UNKNOWN
    assert integration.identity.app_id == "1160452" and integration.identity.user_id is None
    assert events[3].changes[0].new == "closedwon"


def test_values_are_kept_as_sent():
    event = normalize([note(propertyName="amount", propertyValue="15000.50")])[0]
    assert event.changes[0].new == "15000.50"  # HubSpot sends strings; no coercion
    cleared = normalize([note(propertyName="phone", propertyValue="")])[0]
    assert cleared.changes[0].new == ""
    absent = normalize([note(propertyName="phone", propertyValue=...)])[0]
    assert absent.changes[0].new is None


def test_ids_and_times_as_numbers_or_strings_give_the_same_event():
    as_numbers = normalize([note()])[0]
    as_strings = normalize(
        [note(eventId="100", portalId="62515", objectId="123", occurredAt="1564113600000")]
    )[0]
    as_iso = normalize([note(occurredAt="2019-07-26T04:00:00Z")])[0]
    assert as_numbers == as_strings == as_iso
    assert as_numbers.record_id == "123" and as_numbers.occurred_at == 1564113600000


def test_same_payload_same_ids_and_property_suffix_keeps_distinct_changes_apart():
    batch = load("hubspot_batch.json")
    assert normalize(batch) == normalize(copy.deepcopy(batch))
    # HubSpot says eventId is not guaranteed unique: two property changes must not collide on one record
    pair = normalize([note(propertyName="firstname"), note(propertyName="lastname")])
    assert pair[0].event_id != pair[1].event_id
    assert pair[0].event_id == "hubspot:62515:100:firstname"
    retry = normalize([note(propertyName="firstname", attemptNumber=3)])[0]
    assert retry.event_id == pair[0].event_id  # a redelivery is recognised


def test_one_bad_element_is_its_own_dead_letter():
    batch = load("hubspot_batch.json")
    batch.insert(1, note(objectId=...))
    batch.append(note(occurredAt="yesterday"))
    events, errors = normalize_with_errors(batch, "hubspot")
    assert len(events) == 4
    assert [(e.reason, e.index) for e in errors] == [
        ("missing_field:objectId", 1),
        ("bad_type:occurredAt", 5),
    ]
    assert "element 1" in str(errors[0])
    with pytest.raises(AdapterError) as strict:
        normalize(batch)
    assert strict.value.reason == "missing_field:objectId"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"objectId": ...}, "missing_field:objectId"),
        ({"eventId": ...}, "missing_field:eventId"),
        ({"occurredAt": ...}, "missing_field:occurredAt"),
        ({"occurredAt": "not a time"}, "bad_type:occurredAt"),
        ({"occurredAt": True}, "bad_type:occurredAt"),
        ({"objectId": {"id": 1}}, "bad_type:objectId"),
        ({"objectId": 12.5}, "bad_type:objectId"),
        ({"subscriptionType": ...}, "missing_field:subscriptionType"),
        ({"subscriptionType": 7}, "bad_type:subscriptionType"),
        ({"subscriptionType": "contact.somethingNew"}, "unknown_subscription_type"),
        ({"subscriptionType": "conversation.newMessage"}, "unknown_subscription_type"),
        ({"propertyName": ...}, "missing_field:propertyName"),
        ({"propertyName": ""}, "bad_type:propertyName"),
    ],
)
def test_unusable_elements(overrides, reason):
    events, errors = normalize_with_errors([note(**overrides)], "hubspot")
    assert events == [] and [e.reason for e in errors] == [reason]


def test_non_object_element_and_messages_carry_no_values():
    events, errors = normalize_with_errors([note(), "junk", note(occurredAt="ann@example.com")], "hubspot")
    assert len(events) == 1
    assert [e.reason for e in errors] == ["bad_type:element", "bad_type:occurredAt"]
    assert all("@" not in str(e) for e in errors)


def test_empty_batch_and_single_notification():
    assert normalize([], "hubspot") == []
    assert normalize(note())[0].record_id == "123"  # a bare notification object is a batch of one
    assert detect_source(note()) == "hubspot"


def test_merge_restore_association_deletion():
    merge, restore, assoc_add, assoc_removed, deletion = normalize(
        load("hubspot_merge_restore_association.json")
    )
    assert merge.operation == "merge" and merge.record_id == "501" and merge.merged_record_ids == ("502",)
    assert restore.operation == "restore" and restore.object_type is ObjectType.COMPANY
    assert assoc_add.operation == "associate" and assoc_add.record_id == "501"
    assert [(r.object_type, r.record_id, r.removed) for r in assoc_add.related] == [
        (ObjectType.COMPANY, "601", False)
    ]
    assert assoc_add.actor.kind is ActorKind.HUMAN  # changeSource USER
    assert assoc_removed.record_id == "701" and assoc_removed.object_type is ObjectType.DEAL
    assert [(r.object_type, r.record_id, r.removed) for r in assoc_removed.related] == [
        (ObjectType.CONTACT, "501", True)
    ]
    assert deletion.operation == "delete" and deletion.object_type is ObjectType.TICKET
    assert deletion.actor.kind is ActorKind.AUTOMATION and deletion.actor.identity.app_id == "123456"


def test_merge_into_a_new_record_lists_every_merged_id():
    event = normalize(
        [
            note(
                subscriptionType="company.merge",
                propertyName=...,
                propertyValue=...,
                primaryObjectId=10,
                mergedObjectIds=[11, "12"],
                newObjectId=99,
            )
        ]
    )[0]
    assert event.record_id == "99" and event.merged_record_ids == ("10", "11", "12")
    missing = normalize_with_errors(
        [note(subscriptionType="company.merge", objectId=..., primaryObjectId=None)]
    )
    assert missing[1][0].reason == "missing_field:primaryObjectId"


def test_association_add_and_remove_of_the_same_pair_are_distinct_events():
    base = dict(
        subscriptionType="contact.associationChange",
        objectId=...,
        propertyName=...,
        propertyValue=...,
        associationType="CONTACT_TO_COMPANY",
        fromObjectId=1,
        toObjectId=2,
    )
    added, removed = normalize(
        [note(associationRemoved=False, **base), note(associationRemoved=True, **base)]
    )
    assert added.event_id != removed.event_id
    assert removed.related[0].removed and not added.related[0].removed
    assert (
        normalize_with_errors([note(**{**base, "toObjectId": ...})])[1][0].reason
        == "missing_field:toObjectId"
    )


@pytest.mark.parametrize(
    ("association_type", "expected"),
    [
        ("CONTACT_TO_COMPANY", ObjectType.COMPANY),
        ("COMPANY_TO_CONTACT", ObjectType.CONTACT),
        ("DEAL_TO_LINE_ITEM", ObjectType.OTHER),
        ("TICKET_TO_DEAL", ObjectType.DEAL),
        ("PARENT_COMPANY_TO_CHILD_COMPANY", ObjectType.COMPANY),
        ("CONTACT_TO_TICKET", ObjectType.TICKET),
        ("SOMETHING_ELSE", ObjectType.OTHER),
    ],
)
def test_association_target_types(association_type, expected):
    event = normalize(
        [
            note(
                subscriptionType="deal.associationChange",
                objectId=...,
                fromObjectId=5,
                toObjectId=6,
                associationType=association_type,
            )
        ]
    )[0]
    assert event.related[0].object_type is expected


def test_generic_object_subscriptions():
    created, amount, task = normalize(load("hubspot_generic.json"))
    assert created.object_type is ObjectType.CONTACT and created.source_object_type == "contact"
    assert amount.object_type is ObjectType.DEAL and amount.changes[0].field == "amount"
    assert amount.actor.kind is ActorKind.UNKNOWN and amount.actor.identity.change_source == "API"
    assert task.object_type is ObjectType.ACTIVITY and task.actor.kind is ActorKind.AUTOMATION
    custom = normalize([note(subscriptionType="object.creation", objectTypeId="2-3453932")])[0]
    assert custom.object_type is ObjectType.OTHER and custom.source_object_type == "2-3453932"
    association = normalize(
        [
            note(
                subscriptionType="object.associationChange",
                objectTypeId="0-1",
                objectId=...,
                fromObjectId=1,
                toObjectId=2,
                toObjectTypeId="0-3",
            )
        ]
    )[0]
    assert association.related[0].object_type is ObjectType.DEAL
    errors = normalize_with_errors([note(subscriptionType="object.propertyChange")])[1]
    assert errors[0].reason == "missing_field:objectTypeId"


def test_deletion_kinds():
    gdpr = normalize([note(subscriptionType="contact.privacyDeletion", propertyName=...)])[0]
    assert gdpr.operation == "delete" and gdpr.changes == ()


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("CRM_UI", ActorKind.HUMAN),
        ("CRM", ActorKind.HUMAN),
        ("MOBILE_IOS", ActorKind.HUMAN),
        ("MOBILE_ANDROID", ActorKind.HUMAN),
        ("SALES", ActorKind.HUMAN),
        ("CRM_UI_BULK_ACTION", ActorKind.HUMAN),
        ("IMPORT", ActorKind.IMPORT),
        ("WORKFLOWS", ActorKind.AUTOMATION),
        ("AUTOMATION_PLATFORM", ActorKind.AUTOMATION),
        ("CALCULATED", ActorKind.AUTOMATION),
        ("API", ActorKind.UNKNOWN),
        ("INTEGRATION", ActorKind.UNKNOWN),
        ("AI_GROUP", ActorKind.UNKNOWN),
        ("SOMETHING_NEW", ActorKind.UNKNOWN),
        (None, ActorKind.UNKNOWN),
    ],
)
def test_change_source_kinds(source, kind):
    assert kind_for_source(source) is kind


def test_source_ids_and_identity():
    no_source = normalize([note(changeSource=..., sourceId=...)])[0]
    assert no_source.actor.kind is ActorKind.UNKNOWN and no_source.actor.id == "unknown"
    workflow = normalize([note(changeSource="WORKFLOWS", sourceId="workflowId:77")])[0]
    assert workflow.actor.identity.app_id == "workflowId:77" and workflow.actor.id == "workflowId:77"
    emailish = normalize([note(changeSource="BCC_TO_CRM", sourceId="ann@example.com")])[0]
    assert "@" not in (emailish.actor.identity.app_id or "") and "@" not in emailish.actor.identity.raw
    assert emailish.actor.identity.app_id.startswith("redacted-")
    bulk = normalize([note(changeSource="CRM_UI_BULK_ACTION")])[0]
    assert bulk.bulk and bulk.actor.kind is ActorKind.HUMAN


def test_not_a_batch():
    with pytest.raises(AdapterError) as err:
        normalize_with_errors("text", "hubspot")
    assert err.value.reason == "unknown_shape"
