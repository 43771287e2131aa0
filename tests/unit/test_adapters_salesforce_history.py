"""Salesforce field history rows (SOQL on ContactHistory, OpportunityFieldHistory, ...) to events."""

from __future__ import annotations

from typing import Any

import pytest

from app.adapters import AdapterError, detect_source, normalize, normalize_with_errors
from app.adapters.salesforce_history import object_of
from detectors.events import ActorKind, ObjectType

AGENT = "0055g00000002MnAAI"
HUMAN = "0055g00000001AbAAI"


def row(n: int, kind: str, parent: dict[str, str], field: str, old: Any, new: Any, by: str = AGENT,
        at: str = "2025-03-04T01:54:28.000+0000", data_type: str = "Text") -> dict[str, Any]:
    """A row as the REST query resource returns it."""
    return {"attributes": {"type": kind, "url": f"/services/data/v62.0/sobjects/{kind}/0175g{n:010d}"},
            "Id": f"0175g{n:010d}AAA", **parent, "Field": field, "DataType": data_type, "OldValue": old,
            "NewValue": new, "CreatedById": by, "CreatedDate": at, "IsDeleted": False}


CONTACT = {"ContactId": "0035g00000000GLAAY"}


def test_one_row_is_one_update_with_the_old_value_and_the_user_as_actor() -> None:
    (event,) = normalize(row(1, "ContactHistory", CONTACT, "Title", "Engineer", "CTO"))
    assert (event.source, event.object_type, event.source_object_type) == ("salesforce", ObjectType.CONTACT, "Contact")
    assert (event.record_id, event.operation, event.occurred_at) == ("0035g00000000GLAAY", "update", 1741053268000)
    (change,) = event.changes
    assert (change.field, change.old, change.new, change.has_old) == ("Title", "Engineer", "CTO", True)
    assert event.actor.identity.user_id == AGENT and event.actor.kind is ActorKind.HUMAN  # a hint: policy decides
    assert event.event_id == "salesforce:history:0175g0000000001AAA"


def test_a_query_page_groups_the_rows_of_one_save_and_keeps_a_lookups_id_row() -> None:
    page = {"totalSize": 5, "done": True, "records": [
        row(1, "OpportunityFieldHistory", {"OpportunityId": "0065g00000000GEAAY"}, "StageName", "Prospecting",
            "Closed Won", data_type="Picklist"),
        row(2, "OpportunityFieldHistory", {"OpportunityId": "0065g00000000GEAAY"}, "Owner", "0055g00000000AAAAY",
            "0055g00000000BBBAY", data_type="EntityId"),
        row(3, "OpportunityFieldHistory", {"OpportunityId": "0065g00000000GEAAY"}, "Owner", "Ann Lee", "Bo Chen"),
        row(4, "OpportunityFieldHistory", {"OpportunityId": "0065g00000000GEAAY"}, "Amount", 1000, 250000,
            data_type="Currency"),
        row(5, "OpportunityFieldHistory", {"OpportunityId": "0065g00000000GEAAY"}, "Amount", 250000, 1,
            at="2025-03-04T02:00:00.000+0000"),
    ]}
    assert detect_source(page) == "salesforce-history"
    first, second = normalize(page)
    assert first.object_type is ObjectType.DEAL and first.source_object_type == "Opportunity"
    assert {c.field: (c.old, c.new) for c in first.changes} == {
        "Amount": (1000, 250000), "OwnerId": ("0055g00000000AAAAY", "0055g00000000BBBAY"),
        "StageName": ("Prospecting", "Closed Won")}
    assert [c.field for c in second.changes] == ["Amount"] and second.occurred_at > first.occurred_at


def test_created_rows_custom_objects_and_rows_that_are_not_values() -> None:
    rows = [row(1, "LeadHistory", {"LeadId": "00Q5g00000000HGEAY"}, "created", None, None, by=HUMAN),
            row(2, "LeadHistory", {"LeadId": "00Q5g00000000HGEAY"}, "locked", None, None, by=HUMAN,
                at="2025-03-05T00:00:00.000+0000")]
    created, locked = normalize(rows)
    assert (created.operation, created.changes, created.object_type) == ("create", (), ObjectType.LEAD)
    assert (locked.operation, locked.changes) == ("update", ())  # nothing a detector reads
    assert object_of("Invoice__History") == ("Invoice__c", ObjectType.OTHER)
    (custom,) = normalize(row(3, "Invoice__History", {"ParentId": "a015g00000000AAAAY"}, "Total__c", 1, 2))
    assert custom.record_id == "a015g00000000AAAAY" and custom.source_object_type == "Invoice__c"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({**row(1, "ContactHistory", CONTACT, "Title", "a", "b"), "ContactId": None}, "missing_field:ContactId"),
        ({**row(1, "ContactHistory", CONTACT, "Title", "a", "b"), "CreatedDate": "yesterday"}, "bad_type:CreatedDate"),
        ({**row(1, "ContactHistory", CONTACT, "Title", "a", "b"), "Field": ""}, "missing_field:Field"),
        ({**row(1, "ContactHistory", CONTACT, "Title", "a", "b"), "Id": None}, "missing_field:Id"),
    ],
)
def test_a_bad_row_is_its_own_error_and_the_rest_of_the_page_goes_on(bad: dict[str, Any], reason: str) -> None:
    good = row(2, "ContactHistory", CONTACT, "Phone", None, "+1 617 555 0142")
    events, errors = normalize_with_errors({"records": [bad, good], "done": True})
    assert [e.changes[0].field for e in events] == ["Phone"]
    assert len(errors) == 1 and errors[0].index == 0 and errors[0].reason == reason


def test_other_sobject_rows_are_not_taken_for_history() -> None:
    with pytest.raises(AdapterError):
        detect_source({"attributes": {"type": "Contact"}, "Id": "0035g00000000GLAAY", "Title": "CTO"})
