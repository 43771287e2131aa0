"""HubSpot objects read with propertiesWithHistory to events (the backtest on a portal's own history)."""

from __future__ import annotations

from typing import Any

import pytest

from app.adapters import detect_source, normalize, normalize_with_errors
from detectors.events import ActorKind, ObjectType

T = "2025-03-04T01:54:28.858Z"


def entry(value: Any, at: str, source: str = "INTEGRATION", source_id: str | None = "1850301", **kw: Any) -> dict[str, Any]:
    data = {"value": value, "timestamp": at, "sourceType": source, **kw}
    if source_id is not None:
        data["sourceId"] = source_id
    return data


def contact(**history: list[dict[str, Any]]) -> dict[str, Any]:
    """As GET /crm/v3/objects/contacts/{id}?propertiesWithHistory=... answers (newest first)."""
    return {"id": "512", "properties": {"jobtitle": "VP", "hs_object_id": "512"}, "propertiesWithHistory": history,
            "createdAt": "2025-03-01T09:00:00Z", "updatedAt": T, "archived": False}


def test_each_version_is_a_change_with_the_older_version_as_its_old_value() -> None:
    obj = contact(jobtitle=[entry("Enriched", T), entry("Engineer", "2025-03-01T09:00:00Z", "CRM_UI", "userId:77")],
                  lastmodifieddate=[entry(T, T)])
    assert detect_source(obj) == "hubspot-history"
    events = sorted(normalize(obj), key=lambda e: (e.occurred_at, e.operation != "create"))
    created, first, agent = events
    assert (created.operation, created.object_type, created.record_id) == ("create", ObjectType.CONTACT, "512")
    assert (first.changes[0].new, first.changes[0].has_old) == ("Engineer", False)  # the oldest kept: old unknown
    assert first.actor.kind is ActorKind.HUMAN and first.actor.identity.user_id == "77"
    (change,) = agent.changes
    assert (change.field, change.old, change.new, change.has_old) == ("jobtitle", "Engineer", "Enriched", True)
    assert agent.actor.identity.app_id == "1850301" and agent.actor.identity.change_source == "INTEGRATION"
    assert agent.event_id == "hubspot:history:contact:512:1741053268858:INTEGRATION:1850301"


def test_versions_of_one_save_are_one_event_and_imports_are_bulk() -> None:
    obj = contact(jobtitle=[entry("CTO", T)], city=[entry("Oslo", T)],
                  phone=[entry("+47 2222 3333", "2025-03-02T10:00:00Z", "IMPORT", "import-9")])
    events = [e for e in normalize(obj) if e.operation == "update"]
    saved = next(e for e in events if len(e.changes) == 2)
    assert [c.field for c in saved.changes] == ["city", "jobtitle"]
    assert next(e for e in events if e.changes[0].field == "phone").bulk is True


def test_the_object_type_comes_from_the_export_else_from_the_properties() -> None:
    deal = {"id": "9", "properties": {"dealstage": "closedwon"}, "propertiesWithHistory": {
        "dealstage": [entry("closedwon", T)]}, "objectType": "deals"}
    assert {e.object_type for e in normalize(deal)} == {ObjectType.DEAL}
    neutral = {"id": "10", "propertiesWithHistory": {"hs_custom_score": [entry("7", T)]}}
    page = {"results": [neutral], "objectType": "0-5"}  # the page says what its objects are
    assert detect_source(page) == "hubspot-history" and normalize(page)[0].source_object_type == "ticket"
    inferred = {"id": "3", "propertiesWithHistory": {"domain": [entry("acme.io", T)]}}
    assert normalize(inferred)[0].object_type is ObjectType.COMPANY


def test_updated_by_user_id_stands_in_for_a_missing_source_id() -> None:
    obj = contact(jobtitle=[entry("CTO", T, "CRM_UI", None, updatedByUserId=4242)])
    (event,) = [e for e in normalize(obj) if e.operation == "update"]
    assert event.actor.identity.user_id == "4242"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"id": "1", "propertiesWithHistory": {"foo": [entry("x", T)]}}, "unknown_object_type"),
        ({**contact(jobtitle=[{"value": "x"}])}, "missing_field:timestamp"),
        ({**contact(jobtitle=[entry("x", "soon")])}, "bad_type:timestamp"),
        ({**contact(jobtitle="CTO")}, "bad_type:propertiesWithHistory.jobtitle"),
    ],
)
def test_a_bad_object_is_its_own_error_and_the_rest_of_the_page_goes_on(bad: dict[str, Any], reason: str) -> None:
    events, errors = normalize_with_errors({"results": [contact(city=[entry("Oslo", T)]), bad]})
    assert {e.record_id for e in events} == {"512"}
    assert len(errors) == 1 and errors[0].index == 1 and errors[0].reason == reason


def test_a_creation_is_an_event_only_when_its_creator_is_known() -> None:
    later = contact(jobtitle=[entry("CTO", T)])  # nothing set at createdAt, no createdate history
    assert [e.operation for e in normalize(later)] == ["update"]
    told = contact(jobtitle=[entry("CTO", T)],
                   createdate=[entry("2025-03-01T09:00:00Z", "2025-03-01T09:00:00Z", "IMPORT", "import-3")])
    (created,) = [e for e in normalize(told) if e.operation == "create"]
    assert created.actor.identity.change_source == "IMPORT" and created.occurred_at == 1740819600000
