"""Salesforce CDC events (CometD and Pub/Sub-decoded) -> ChangeEvents."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from app.adapters import AdapterError, detect_source, normalize
from app.adapters.salesforce import flat_name, kind_for_origin, parse_change_origin
from detectors.events import ActorKind, ObjectType

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vendors"


def load(name: str):
    return json.loads((FIXTURES / name).read_text())


def changes(event):
    return {c.field: c.new for c in event.changes}


def bare(change_type="UPDATE", fields=None, **header):
    head = {
        "entityName": "Contact",
        "recordIds": ["0035e00000AbCdEAAV"],
        "changeType": change_type,
        "changeOrigin": "com/salesforce/api/soap/58.0;client=SfdcInternalAPI/",
        "transactionKey": "00aa-bb",
        "sequenceNumber": 1,
        "commitTimestamp": 1714172795000,
        "commitNumber": 1,
        "commitUser": "005ZM000000M6o1YAC",
        "changedFields": [],
    }
    head.update(header)
    head = {k: v for k, v in head.items() if v is not ...}
    return {"ChangeEventHeader": head, **(fields or {})}


def test_cometd_update_uses_changed_fields_not_enriched_ones():
    (event,) = normalize(load("salesforce_cometd_account_update.json"))
    assert detect_source(load("salesforce_cometd_account_update.json")) == "salesforce"
    assert event.source == "salesforce" and event.operation == "update"
    assert event.object_type is ObjectType.COMPANY and event.source_object_type == "Account"
    assert event.record_id == "001RM000004UF9sYAG"
    assert event.occurred_at == 1608073758000
    assert changes(event) == {"Fax": "4155551212"}  # LastModifiedDate is a system field; Industry is enriched
    assert event.event_id == "salesforce:0005e192-9e62-2554-3880-3c3718bd6308:1:001RM000004UF9sYAG"
    assert event.source_event_id == "0005e192-9e62-2554-3880-3c3718bd6308:1"
    identity = event.actor.identity
    assert event.actor.kind is ActorKind.HUMAN
    assert (identity.user_id, identity.app_id, identity.change_source) == (
        "005RM000001hv4SYAQ",
        "SfdcInternalAPI",
        "soap",
    )
    assert identity.raw == "com/salesforce/api/soap/51.0;client=SfdcInternalAPI/"


def test_one_event_per_record_id_with_compound_names_flattened():
    payload = load("salesforce_cometd_contact_multi.json")
    first, second = normalize(payload)
    assert [first.record_id, second.record_id] == ["0035e00000AbCdEAAV", "0035e00000AbCdFAAV"]
    assert first.event_id != second.event_id and first.source_event_id == second.source_event_id
    assert first.changes == second.changes and first.bulk and second.bulk
    assert changes(first) == {"LastName": "Lee", "Title": None, "AccountId": "0015e00002JUXA8AAP"}
    assert [(r.object_type, r.record_id) for r in first.related] == [
        (ObjectType.COMPANY, "0015e00002JUXA8AAP")
    ]
    assert first.actor.kind is ActorKind.UNKNOWN and first.actor.identity.app_id == "enrich-agent"
    assert first.actor.identity.change_source == "rest"


def test_same_event_in_any_envelope_gets_the_same_ids():
    payload = load("salesforce_cometd_contact_multi.json")
    inner = payload["data"]["payload"]
    assert normalize(payload) == normalize(copy.deepcopy(payload))
    assert [e.event_id for e in normalize(inner)] == [e.event_id for e in normalize(payload)]
    assert [e.event_id for e in normalize({"schema": "x", "payload": inner, "event": {"replayId": 1}})] == [
        e.event_id for e in normalize(payload)
    ]


def test_pubsub_create_carries_non_blank_fields_flattened():
    (event,) = normalize(load("salesforce_pubsub_account_create.json"))
    assert event.operation == "create"
    assert changes(event) == {
        "Name": "Acme",
        "BillingStreet": "415 Mission Street",
        "BillingCity": "San Francisco",
        "BillingState": "CA",
        "BillingPostalCode": "94105",
        "BillingCountry": "United States",
        "OwnerId": "0055f000005mc66AAA",
    }


def test_pubsub_bitmap_decoded_against_schema_order():
    (event,) = normalize(load("salesforce_pubsub_account_update_bitmap.json"))
    assert changes(event) == {"Fax": "4155551212"}


def test_bitmap_without_schema_order_falls_back_to_non_null_fields():
    payload = load("salesforce_pubsub_account_update_bitmap.json")
    shuffled = dict(sorted(payload.items()))  # a bridge that sorts keys loses the Avro order
    (event,) = normalize(shuffled)
    found = changes(event)
    assert found["Fax"] == "4155551212"
    assert "LastModifiedDate" not in found and "Name" not in found
    assert (
        found["Industry"] == "Biotechnology"
    )  # enriched fields cannot be told apart: documented over-report


def test_bitmap_with_a_key_out_of_place_is_not_trusted():
    payload = load("salesforce_pubsub_account_update_bitmap.json")
    moved = {k: v for k, v in payload.items() if k != "Phone"}
    moved["Phone"] = None  # Fax is now at position 6 and bit 22 is no longer LastModifiedDate
    (event,) = normalize(moved)
    assert changes(event)["Fax"] == "4155551212"  # the inference path, not a wrong decoding
    assert "AccountNumber" not in changes(event)


def test_nested_and_nulled_bitmaps():
    payload = load("salesforce_pubsub_account_update_bitmap.json")
    header = payload["ChangeEventHeader"]
    header["changedFields"] = ["0x400010", "4-0x02"]  # BillingAddress (4) + LastModifiedDate (22); City
    header["nulledFields"] = ["0x40"]  # Phone (6)
    (event,) = normalize(payload)
    assert changes(event) == {"BillingCity": "San Francisco", "Phone": None}
    header["changedFields"] = ["0x400000"]
    header["nulledFields"] = ["4-0x01"]  # BillingAddress.Street nulled
    assert changes(normalize(payload)[0]) == {"BillingStreet": None}


def test_bitmap_beyond_the_payload_falls_back():
    payload = load("salesforce_pubsub_account_update_bitmap.json")
    payload["ChangeEventHeader"]["changedFields"] = ["0x" + "f" * 40]
    (event,) = normalize(payload)
    assert changes(event)["Fax"] == "4155551212"


@pytest.mark.parametrize("gap", ["GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW"])
def test_gap_events_keep_the_change_type(gap):
    (event,) = normalize(bare(gap))
    assert event.operation == "gap"
    assert [(c.field, c.new) for c in event.changes] == [("__gap__", gap)]


def test_gap_fixtures_and_overflow_without_record_ids():
    update, overflow = (normalize(p)[0] for p in load("salesforce_gap_events.json"))
    assert update.operation == "gap" and update.object_type is ObjectType.DEAL
    assert overflow.record_id == "*" and overflow.source_object_type == "Account"
    assert overflow.changes[0].new == "GAP_OVERFLOW"
    assert overflow.event_id.endswith(":*")


def test_delete_and_undelete():
    (deleted,) = normalize(bare("DELETE"))
    assert deleted.operation == "delete" and deleted.changes == ()
    (restored,) = normalize(bare("UNDELETE", {"LastName": "Lee", "Email": None}))
    assert restored.operation == "restore" and changes(restored) == {"LastName": "Lee"}


def test_update_names_nulled_and_system_fields():
    event = normalize(
        bare(
            fields={"Phone": None, "Title": "CTO", "SystemModstamp": "x", "LastModifiedById": "005"},
            changedFields=["Title", "LastModifiedDate", "SystemModstamp", "LastModifiedById"],
            nulledFields=["Phone"],
        )
    )[0]
    assert changes(event) == {"Title": "CTO", "Phone": None}


def test_update_without_changed_fields_uses_the_fields_sent():
    event = normalize(bare(fields={"Title": "CTO", "Department": None}, changedFields=...))[0]
    assert changes(event) == {"Title": "CTO"}


def test_avro_union_values_are_unwrapped():
    event = normalize(bare("CREATE", {"LastName": {"string": "Lee"}, "NumberOfEmployees": {"long": 5}}))[0]
    assert changes(event) == {"LastName": "Lee", "NumberOfEmployees": 5}


def test_activity_lookups_become_related_records():
    task = normalize(
        bare(
            "CREATE",
            {
                "Subject": "Call",
                "WhoId": "00Q5e00000XyZabEAF",
                "WhatId": "0065e00000AbCdEAAV",
                "OwnerId": "005ZM000000M6o1YAC",
            },
            entityName="Task",
        )
    )[0]
    assert task.object_type is ObjectType.ACTIVITY
    assert {(r.object_type, r.record_id) for r in task.related} == {
        (ObjectType.LEAD, "00Q5e00000XyZabEAF"),
        (ObjectType.DEAL, "0065e00000AbCdEAAV"),
    }


@pytest.mark.parametrize(
    ("entity", "expected"),
    [
        ("Contact", ObjectType.CONTACT),
        ("Account", ObjectType.COMPANY),
        ("Opportunity", ObjectType.DEAL),
        ("Case", ObjectType.TICKET),
        ("Lead", ObjectType.LEAD),
        ("Task", ObjectType.ACTIVITY),
        ("Event", ObjectType.ACTIVITY),
        ("Employee__c", ObjectType.OTHER),
    ],
)
def test_object_types(entity, expected):
    (event,) = normalize(bare(entityName=entity))
    assert event.object_type is expected and event.source_object_type == entity


@pytest.mark.parametrize(
    ("origin", "user", "api", "client", "kind"),
    [
        (
            "com/salesforce/api/soap/58.0;client=SfdcInternalAPI/",
            "005A",
            "soap",
            "SfdcInternalAPI",
            ActorKind.HUMAN,
        ),
        ("", "005A", None, None, ActorKind.HUMAN),
        (None, "005A", None, None, ActorKind.HUMAN),
        (
            "com/salesforce/api/bulkapi/58.0;client=DataLoaderBulkUI/",
            "005A",
            "bulkapi",
            "DataLoaderBulkUI",
            ActorKind.IMPORT,
        ),
        ("com/salesforce/api/rest/58.0", "005A", "rest", None, ActorKind.UNKNOWN),
        ("com/salesforce/api/rest/61.0;client=my-agent", "005A", "rest", "my-agent", ActorKind.UNKNOWN),
        ("something odd;client=Astro", "005A", None, "Astro", ActorKind.UNKNOWN),
        ("", None, None, None, ActorKind.UNKNOWN),
    ],
)
def test_change_origin(origin, user, api, client, kind):
    assert parse_change_origin(origin) == (api, client)
    assert kind_for_origin(origin, client, user) is kind


def test_bulk_api_and_string_record_ids():
    (event,) = normalize(
        bare(
            recordIds="0035e00000AbCdEAAV",
            changeOrigin="com/salesforce/api/bulkapi/58.0;client=DataLoaderBulkUI/",
        )
    )
    assert event.bulk and event.actor.kind is ActorKind.IMPORT and event.record_id == "0035e00000AbCdEAAV"


def test_timestamps_and_header_spelling_vary():
    a = normalize(bare(commitTimestamp="1714172795000"))[0]
    b = normalize(bare(commitTimestamp="2024-04-26T23:06:35Z"))[0]
    assert a.occurred_at == b.occurred_at == 1714172795000
    lower = {"ChangeEventHeader": {k.lower(): v for k, v in bare()["ChangeEventHeader"].items()}}
    assert normalize(lower)[0].event_id == normalize(bare())[0].event_id


def test_event_id_fallbacks():
    replayed = normalize(
        {
            "data": {"payload": bare(transactionKey=..., sequenceNumber=...), "event": {"replayId": 77}},
            "channel": "/data/ContactChangeEvent",
        }
    )[0]
    assert replayed.event_id == "salesforce:replay:/data/ContactChangeEvent:77:0035e00000AbCdEAAV"
    committed = normalize(bare(transactionKey=..., sequenceNumber=...))[0]
    assert committed.event_id.startswith("salesforce:commit:Contact:1:1714172795000:UPDATE")
    with pytest.raises(AdapterError) as err:
        normalize(bare(transactionKey=..., sequenceNumber=..., commitNumber=...))
    assert err.value.reason == "missing_field:transactionKey"


def test_entity_from_channel():
    payload = {
        "data": {"payload": bare(entityName=...), "event": {"replayId": 3}},
        "channel": "/data/Employee__ChangeEvent",
    }
    assert normalize(payload)[0].source_object_type == "Employee__c"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"entityName": ...}, "missing_field:entityName"),
        ({"changeType": ...}, "missing_field:changeType"),
        ({"changeType": "SNAPSHOT"}, "unknown_change_type"),
        ({"commitTimestamp": ...}, "missing_field:commitTimestamp"),
        ({"commitTimestamp": "soon"}, "bad_type:commitTimestamp"),
        ({"recordIds": ...}, "missing_field:recordIds"),
        ({"recordIds": []}, "missing_field:recordIds"),
        ({"recordIds": {"a": 1}}, "bad_type:recordIds"),
    ],
)
def test_unusable_events(header, reason):
    with pytest.raises(AdapterError) as err:
        normalize(bare(**header))
    assert err.value.reason == reason


def test_not_a_change_event():
    with pytest.raises(AdapterError) as err:
        normalize({"data": {"payload": {"Name": "x"}}}, "salesforce")
    assert err.value.reason == "unknown_shape"
    with pytest.raises(AdapterError) as err:
        normalize({"ChangeEventHeader": "text"}, "salesforce")
    assert err.value.reason == "bad_type:ChangeEventHeader"


@pytest.mark.parametrize(
    ("parent", "component", "field"),
    [
        ("Name", "LastName", "LastName"),
        ("BillingAddress", "City", "BillingCity"),
        ("Address", "Street", "Street"),
        ("MailingAddress", "PostalCode", "MailingPostalCode"),
        ("Loc__c", "Latitude", "Loc__Latitude__s"),
        ("Other", "Part", "Other.Part"),
    ],
)
def test_flat_names(parent, component, field):
    assert flat_name(parent, component) == field
