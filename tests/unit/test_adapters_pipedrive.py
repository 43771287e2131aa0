"""Pipedrive webhooks (v2 and v1) -> ChangeEvents (fixtures from Pipedrive's migration guide examples)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from app.adapters import AdapterError, detect_source, normalize
from app.adapters.pipedrive import custom_value, kind_for_source
from detectors.events import ActorKind, ObjectType

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vendors"
EXAMPLES = json.loads((FIXTURES / "pipedrive_v2_examples.json").read_text())
ACTIVITY_CREATE, DEAL_CHANGE, LEAD_CHANGE, PERSON_CHANGE, ORG_DELETE, USER_CHANGE = EXAMPLES


def one(payload, source="auto"):
    (event,) = normalize(copy.deepcopy(payload), source)
    return event


def with_meta(payload, **meta):
    body = copy.deepcopy(payload)
    body["meta"].update(meta)
    body["meta"] = {k: v for k, v in body["meta"].items() if v is not ...}
    return body


def test_create_takes_every_non_blank_field():
    event = one(ACTIVITY_CREATE)
    assert detect_source(ACTIVITY_CREATE) == "pipedrive"
    assert event.source == "pipedrive" and event.operation == "create"
    assert event.object_type is ObjectType.ACTIVITY and event.source_object_type == "activity"
    assert event.record_id == "2"
    assert event.occurred_at == 1669303544461
    assert event.event_id == "pipedrive:8087566:bbba59e9-1d1f-4794-9472-72540d421386"
    fields = {c.field: c.new for c in event.changes}
    assert fields == {
        "active_flag": True,
        "deal_id": 10,
        "done": False,
        "due_date": "2022-11-24",
        "owner_id": 12415231,
        "person_id": 10,
        "subject": "Call with friends",
        "type": "meeting",
    }
    assert not any(c.has_old for c in event.changes)
    assert {(r.object_type, r.record_id, r.removed) for r in event.related} == {
        (ObjectType.DEAL, "10", False),
        (ObjectType.CONTACT, "10", False),
    }
    actor = event.actor
    assert actor.kind is ActorKind.HUMAN and actor.id == "12415231"
    assert (actor.identity.change_source, actor.identity.user_id) == ("app", "12415231")


def test_change_has_old_values_for_previous_fields_only():
    event = one(PERSON_CHANGE)
    assert event.operation == "update" and event.object_type is ObjectType.CONTACT
    assert [(c.field, c.old, c.new, c.has_old) for c in event.changes] == [
        ("first_name", "Sample", "Sample Person", True),
        ("name", "Sample", "Sample Person", True),
    ]
    assert [(r.object_type, r.record_id) for r in event.related] == [(ObjectType.COMPANY, "1")]


def test_custom_fields_flatten_to_their_keys():
    event = one(DEAL_CHANGE)
    (change,) = event.changes
    assert change.field == "3d0fa3429dfa2d3dec265b4fc5dc8258ab66cdf3"
    assert change.has_old and change.old is None
    assert change.new["value"] == "Tallinn, Estonia" and "type" not in change.new
    assert {(r.object_type, r.record_id) for r in event.related} == {
        (ObjectType.CONTACT, "8"),
        (ObjectType.COMPANY, "1"),
    }


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ({"type": "varchar", "value": "text"}, "text"),
        ({"type": "double", "value": 123}, 123),
        ({"type": "time", "value": "00:45:00", "timezone_id": 310}, "00:45:00"),
        ({"id": 17818, "type": "people"}, 17818),
        ({"id": 17, "type": "enum"}, 17),
        ({"values": [{"id": 13}, {"id": 14}], "type": "set"}, [13, 14]),
        ({"currency": "EUR", "type": "monetary", "value": 200}, {"currency": "EUR", "value": 200}),
        (
            {"from": "2023-06-06", "until": "2023-06-14", "type": "daterange"},
            {"from": "2023-06-06", "until": "2023-06-14"},
        ),
        (None, None),
        ("plain", "plain"),
    ],
)
def test_custom_field_envelopes(raw, value):
    assert custom_value(raw) == value


def test_lead_change_skips_derived_fields_and_keeps_dict_values():
    event = one(LEAD_CHANGE)
    assert event.object_type is ObjectType.LEAD and event.record_id == "b1810230-6c0d-11ed-9826-a53d0eb706a5"
    assert [(c.field, c.old, c.new) for c in event.changes] == [
        ("is_archived", True, False),
        ("value", {"amount": 300, "currency": "EUR"}, {"amount": 500, "currency": "EUR"}),
    ]
    assert {(r.object_type, r.record_id) for r in event.related} == {
        (ObjectType.CONTACT, "11"),
        (ObjectType.COMPANY, "2"),
    }


def test_delete_and_merge_delete():
    event = one(ORG_DELETE)
    assert event.operation == "delete" and event.object_type is ObjectType.COMPANY and event.record_id == "1"
    assert event.changes == () and event.related == ()
    merged = one(with_meta(ORG_DELETE, merged_to_id="7"))
    assert merged.operation == "merge" and merged.record_id == "7" and merged.merged_record_ids == ("1",)
    assert merged.event_id == event.event_id


def test_user_event_without_event_uuid_and_epoch_seconds():
    event = one(USER_CHANGE)
    assert event.object_type is ObjectType.OTHER and event.occurred_at == 1669304542000
    assert event.event_id == (
        "pipedrive:8087566:user:12415231:change:1669304542000:9ab5f99c-3c16-4e2c-8ef3-1c80c4327d98"
    )
    assert [(c.field, c.old, c.new) for c in event.changes] == [
        ("lang", "en-GB", "en-US")
    ]  # `modified` is derived


def test_deterministic_and_ids_as_numbers_or_strings():
    assert normalize(copy.deepcopy(DEAL_CHANGE)) == normalize(copy.deepcopy(DEAL_CHANGE))
    numeric = one(with_meta(PERSON_CHANGE, entity_id=8, company_id=8087566, user_id=12415231))
    assert numeric == one(PERSON_CHANGE)


def test_bulk_edits_and_relation_moves():
    body = with_meta(PERSON_CHANGE, is_bulk_edit=True, change_source="api")
    body["previous"]["org_id"] = 5
    event = one(body)
    assert event.bulk and event.actor.kind is ActorKind.UNKNOWN
    assert [(c.field, c.old, c.new) for c in event.changes][-1] == ("org_id", 5, 1)
    assert {(r.object_type, r.record_id, r.removed) for r in event.related} == {
        (ObjectType.COMPANY, "1", False),
        (ObjectType.COMPANY, "5", True),
    }


def test_change_without_previous_is_an_update_without_values():
    body = copy.deepcopy(PERSON_CHANGE)
    body["previous"] = None
    event = one(body)
    assert event.operation == "update" and event.changes == ()


def test_record_id_from_data_when_meta_lacks_it():
    assert one(with_meta(PERSON_CHANGE, entity_id=...)).record_id == "8"
    body = with_meta(PERSON_CHANGE, entity_id=...)
    body["data"] = None
    body["previous"] = {"first_name": "x"}
    with pytest.raises(AdapterError) as err:
        normalize(body)
    assert err.value.reason == "missing_field:meta.entity_id"


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"action": "archive"}, "unknown_action"),
        ({"timestamp": ...}, "missing_field:meta.timestamp"),
        ({"timestamp": "late"}, "bad_type:meta.timestamp"),
        ({"entity_id": {"x": 1}}, "bad_type:meta.entity_id"),
    ],
)
def test_unusable_v2_payloads(meta, reason):
    with pytest.raises(AdapterError) as err:
        normalize(with_meta(PERSON_CHANGE, **meta))
    assert err.value.reason == reason


def test_shape_errors():
    no_entity = with_meta(PERSON_CHANGE, entity=...)
    with pytest.raises(AdapterError) as err:
        normalize(no_entity)  # no entity/object: not recognisable as Pipedrive
    assert err.value.reason == "unknown_shape"
    with pytest.raises(AdapterError) as err:
        normalize(no_entity, "pipedrive")
    assert err.value.reason == "missing_field:meta.entity"
    with pytest.raises(AdapterError) as err:
        normalize({"meta": "x"}, "pipedrive")
    assert err.value.reason == "bad_type:meta"
    body = copy.deepcopy(PERSON_CHANGE)
    body["data"] = ["not", "an", "object"]
    with pytest.raises(AdapterError) as err:
        normalize(body)
    assert err.value.reason == "bad_type:data"


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("app", ActorKind.HUMAN),
        ("APP", ActorKind.HUMAN),
        ("api", ActorKind.UNKNOWN),
        ("automation", ActorKind.AUTOMATION),
        ("workflow", ActorKind.AUTOMATION),
        ("import", ActorKind.IMPORT),
        ("marketplace_app", ActorKind.UNKNOWN),
        (None, ActorKind.UNKNOWN),
    ],
)
def test_change_source_kinds(source, kind):
    assert kind_for_source(source) is kind


def test_v1_updated_compares_current_and_previous():
    payload = json.loads((FIXTURES / "pipedrive_v1_deal_updated.json").read_text())
    event = one(payload)
    assert event.operation == "update" and event.object_type is ObjectType.DEAL and event.record_id == "8"
    assert event.occurred_at == 1523440213384  # from timestamp_micro
    assert event.event_id == "pipedrive:8087566:deal:8:updated:1523440213384700"
    assert event.bulk and event.actor.kind is ActorKind.UNKNOWN
    assert [(c.field, c.old, c.new, c.has_old) for c in event.changes] == [
        ("value", 100, 250, True),
        ("stage_id", 2, 3, True),
        ("org_id", {"value": 1, "name": "Sample Org"}, {"value": 2, "name": "Other Org"}, True),
        ("9dc80c50d78a15643bfc4ca79d76156a73a1ca0e", None, "utm-x", True),
    ]
    assert {(r.object_type, r.record_id, r.removed) for r in event.related} == {
        (ObjectType.CONTACT, "8", False),
        (ObjectType.COMPANY, "2", False),
        (ObjectType.COMPANY, "1", True),
    }


def test_v1_added_deleted_merged():
    base = json.loads((FIXTURES / "pipedrive_v1_deal_updated.json").read_text())
    added = copy.deepcopy(base)
    added["meta"]["action"] = "added"
    added["previous"] = None
    created = one(added)
    assert created.operation == "create" and {"title", "value", "stage_id"} <= {
        c.field for c in created.changes
    }
    deleted = copy.deepcopy(base)
    deleted["meta"]["action"] = "deleted"
    deleted["current"] = None
    assert one(deleted).operation == "delete" and one(deleted).changes == ()
    merged = copy.deepcopy(base)
    merged["meta"]["action"] = "merged"
    merged["previous"]["id"] = 9
    event = one(merged)
    assert event.operation == "merge" and event.record_id == "8" and event.merged_record_ids == ("9",)
    assert created.event_id != event.event_id != one(deleted).event_id
