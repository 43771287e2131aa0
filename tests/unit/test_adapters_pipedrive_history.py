"""Pipedrive changelogs (GET /v1/{deals,persons,organizations}/{id}/changelog, with entity and id added)."""

from __future__ import annotations

from typing import Any

import pytest

from app.adapters import AdapterError, detect_source, normalize, normalize_with_errors
from detectors.events import ActorKind, ObjectType


def item(field: str, old: Any, new: Any, time: str = "2024-02-12 09:14:35", user: int = 26,
         source: str = "app", bulk: bool = False) -> dict[str, Any]:
    return {"field_key": field, "old_value": old, "new_value": new, "actor_user_id": user, "time": time,
            "change_source": source, "change_source_user_agent": "Mozilla/5.0", "is_bulk_update_flag": bulk}


def export(entity: str, record: int, *items: dict[str, Any]) -> dict[str, Any]:
    """The endpoint's answer with the record the export adds (`jq '{entity: "deal", id: 42} + .'`)."""
    return {"entity": entity, "id": record, "success": True, "data": list(items),
            "additional_data": {"next_cursor": None}}


def test_the_documented_response_becomes_one_event_per_save_with_old_values() -> None:
    payload = export("deal", 42, item("title", "My Deel", "My Deal"), item("stage_id", "1", "3"),
                     item("value", "0", "100", time="2024-02-12 09:10:12"), item("update_time", "a", "b"))
    assert detect_source(payload) == "pipedrive-history"
    late, early = sorted(normalize(payload), key=lambda e: -e.occurred_at)
    assert (late.object_type, late.record_id, late.occurred_at) == (ObjectType.DEAL, "42", 1707729275000)
    assert [(c.field, c.old, c.new, c.has_old) for c in late.changes] == [
        ("stage_id", "1", "3", True), ("title", "My Deel", "My Deal", True)]  # update_time: derived, dropped
    assert late.actor.kind is ActorKind.HUMAN and late.actor.identity.user_id == "26"
    assert [c.field for c in early.changes] == ["value"]
    assert late.event_id == "pipedrive:changelog:deal:42:1707729275000:26:app"


def test_api_changes_bulk_edits_and_plural_entities() -> None:
    (event,) = normalize(export("persons", 7, item("email", "a@x.io", "b@x.io", source="api", user=13000101,
                                                   bulk=True)))
    assert event.object_type is ObjectType.CONTACT and event.source_object_type == "person"
    assert event.actor.kind is ActorKind.UNKNOWN and event.bulk is True  # api: the policy names the user


@pytest.mark.parametrize(
    ("entry", "reason"),
    [({"old_value": 1, "new_value": 2, "time": "2024-02-12 09:14:35"}, "missing_field:field_key"),
     ({"field_key": "title", "new_value": "x"}, "missing_field:time"),
     ("not an object", "bad_type:data[]")],
)
def test_a_bad_entry_is_its_own_error(entry: Any, reason: str) -> None:
    events, errors = normalize_with_errors(export("organization", 5, item("name", "Acme", "ACME"), entry))
    assert [e.object_type for e in events] == [ObjectType.COMPANY]
    assert len(errors) == 1 and errors[0].reason == reason and errors[0].index == 1


def test_an_unknown_entity_is_refused() -> None:
    with pytest.raises(AdapterError, match="deal, person or organization"):
        normalize(export("product", 1, item("name", "a", "b")))
