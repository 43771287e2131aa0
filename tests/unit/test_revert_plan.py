"""Revert plans: restore exactly the agent's changes since a time, never what a human did after it."""

from __future__ import annotations

import csv
import io
import json
import random

from detectors.events import ActorKind, ObjectType
from detectors.policy import Policy
from detectors.record_state import RecordState
from detectors.revert_plan import Plan, revert_plan

T0 = 1_700_000_000_000
M = 60_000
H = 3_600_000
_seq = iter(range(1, 1_000_000))


def row(record: str, field: str | None, new, *, at: int, by: str = "enricher", kind: str = "agent",
        source: str = "hubspot", object_type: str = "contact", old=None, has_old: bool = False,
        operation: str = "update", event_id: str | None = None, source_object_type: str | None = None) -> dict:
    """A timeline.jsonl row (plain dict)."""
    data = {
        "event_id": event_id or f"ev-{next(_seq)}",
        "record_key": f"{source}/{object_type}/{record}",
        "source": source,
        "object_type": object_type,
        "record_id": record,
        "occurred_at": T0 + at,
        "field": field,
        "old": old,
        "has_old": has_old,
        "new": new,
        "actor_id": by,
        "actor_kind": kind,
        "operation": operation,
    }
    if source_object_type:
        data["source_object_type"] = source_object_type
    return data


def human(record: str, field: str, new, at: int, **kw) -> dict:
    return row(record, field, new, at=at, by=kw.pop("by", "user-7"), kind="human", **kw)


def rows_of(csv_text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(csv_text)))


def test_restores_value_before_the_agents_first_change_and_writes_hubspot_csv():
    entries = []
    for rid in ("101", "102", "103"):
        entries.append(human(rid, "utm_source", "google", at=0))
        entries.append(row(rid, "utm_source", "enriched", at=2 * H))
    plan = revert_plan(entries, "enricher", T0 + H)
    assert [(i.record_id, i.field, i.restore_value, i.agent_value) for i in plan.items] == [
        ("101", "utm_source", "google", "enriched"),
        ("102", "utm_source", "google", "enriched"),
        ("103", "utm_source", "google", "enriched"),
    ]
    files = plan.csv_files()
    assert list(files) == ["hubspot-contacts.csv"]
    assert rows_of(files["hubspot-contacts.csv"]) == [
        ["Record ID", "utm_source"], ["101", "google"], ["102", "google"], ["103", "google"],
    ]


def test_field_a_human_changed_after_the_agent_is_skipped_and_never_in_the_csv():
    entries = [
        human("1", "dealstage", "qualified", at=0, object_type="deal"),
        row("1", "dealstage", "closedlost", at=H, object_type="deal"),
        human("1", "dealstage", "presentation", at=3 * H, object_type="deal", by="rep-2"),
        human("2", "dealstage", "qualified", at=0, object_type="deal"),
        row("2", "dealstage", "closedlost", at=H, object_type="deal"),
    ]
    plan = revert_plan(entries, "enricher", T0)
    assert [(i.record_id, i.restore_value) for i in plan.items] == [("2", "qualified")]
    [skip] = plan.skipped_human_changed
    assert (skip.record_id, skip.field, skip.reason) == ("1", "dealstage", "human_changed_after_agent")
    assert (skip.human_actor_id, skip.human_value, skip.human_changed_at) == ("rep-2", "presentation", T0 + 3 * H)
    assert skip.agent_value == "closedlost" and skip.restore_value == "qualified"
    assert rows_of(plan.csv_files()["hubspot-deals.csv"]) == [["Record ID", "dealstage"], ["2", "qualified"]]


def test_human_change_between_two_agent_changes_still_protects_the_field():
    entries = [
        human("1", "lifecyclestage", "lead", at=0),
        row("1", "lifecyclestage", "customer", at=H),
        human("1", "lifecyclestage", "opportunity", at=2 * H),
        row("1", "lifecyclestage", "customer", at=3 * H),
    ]
    plan = revert_plan(entries, "enricher", T0)
    assert plan.items == []
    assert plan.skipped_human_changed[0].human_value == "opportunity"
    assert plan.skipped_human_changed[0].current_value == "customer"


def test_span_starts_at_since_and_restore_is_the_value_just_before_the_first_change_in_it():
    entries = [
        human("1", "jobtitle", "CEO", at=0),
        row("1", "jobtitle", "Chief", at=H),            # before since: not part of the plan
        row("1", "jobtitle", "Chief Exec", at=3 * H),   # first in span
        row("1", "jobtitle", "C.E.O.", at=4 * H),
    ]
    plan = revert_plan(entries, "enricher", T0 + 2 * H)
    [item] = plan.items
    assert item.restore_value == "Chief"
    assert item.agent_value == "C.E.O." and item.current_value == "C.E.O."
    assert item.first_agent_change_at == T0 + 3 * H and item.last_agent_change_at == T0 + 4 * H
    assert len(item.agent_event_ids) == 2
    # the boundary is inclusive: since exactly at the first change
    assert revert_plan(entries, "enricher", T0 + H).items[0].restore_value == "CEO"
    # nothing after since: empty plan
    assert revert_plan(entries, "enricher", T0 + 5 * H).items == []


def test_until_bounds_the_span():
    entries = [human("1", "city", "Oslo", at=0), row("1", "city", "Bergen", at=H), row("1", "city", "Tromsø", at=3 * H)]
    plan = revert_plan(entries, "enricher", T0, until_ms=T0 + 2 * H)
    [item] = plan.items
    assert item.restore_value == "Oslo" and item.agent_event_ids == [entries[1]["event_id"]]


def test_other_actors_later_changes_are_noted_and_the_item_stays():
    entries = [
        human("1", "industry", "Retail", at=0),
        row("1", "industry", "Software", at=H),
        row("1", "industry", "SaaS", at=2 * H, by="workflow-9", kind="automation"),
        row("1", "industry", "Tech", at=3 * H, by="other-agent"),
    ]
    plan = revert_plan(entries, "enricher", T0)
    [item] = plan.items
    assert item.restore_value == "Retail" and item.current_value == "Tech"
    assert [(c["actor_id"], c["actor_kind"]) for c in item.later_changes] == [
        ("workflow-9", "automation"), ("other-agent", "agent")]


def test_other_agents_changes_are_not_reverted():
    entries = [human("1", "city", "Oslo", at=0), row("1", "city", "Bergen", at=H, by="other-agent")]
    assert revert_plan(entries, "enricher", T0).items == []


def test_old_value_from_the_source_is_used_when_the_guard_saw_no_earlier_change():
    entries = [row("7", "value", 1000, at=H, source="pipedrive", object_type="deal", old=5000, has_old=True)]
    plan = revert_plan(entries, "enricher", T0)
    assert plan.items[0].restore_value == 5000
    assert rows_of(plan.csv_files()["pipedrive-deals.csv"]) == [["ID", "value"], ["7", "5000"]]


def test_unknown_prior_is_reported_not_guessed():
    plan = revert_plan([row("1", "phone", "+1 555 0100", at=H)], "enricher", T0)
    assert plan.items == [] and plan.csv_files() == {}
    assert [(s.field, s.reason) for s in plan.skipped] == [("phone", "unknown_prior")]


def test_field_already_back_at_the_restore_value_is_skipped_as_unchanged():
    entries = [
        human("1", "city", "Oslo", at=0),
        row("1", "city", "Bergen", at=H),
        row("1", "city", "Oslo", at=2 * H, by="sync", kind="integration"),
    ]
    plan = revert_plan(entries, "enricher", T0)
    assert plan.items == [] and [s.reason for s in plan.skipped] == ["unchanged"]


def test_records_created_by_the_agent_are_listed_not_blanked_and_deletes_are_noted():
    entries = [
        row("9", "email", "dup@example.com", at=H, operation="create"),
        row("9", "firstname", "Ann", at=H, operation="create", event_id="ev-create"),
        human("5", "city", "Oslo", at=0),
        row("5", None, None, at=2 * H, operation="delete"),
    ]
    entries[0]["event_id"] = "ev-create"
    plan = revert_plan(entries, "enricher", T0)
    assert plan.items == []
    assert [(r.record_id, r.operation, r.event_id) for r in plan.created_records] == [("9", "create", "ev-create")]
    assert [(r.record_id, r.operation) for r in plan.deleted_records] == [("5", "delete")]


def test_blank_restore_value_is_cleared_by_hand_not_written_as_an_ignored_blank_cell():
    entries = [human("1", "website", "", at=0), row("1", "website", "https://x.test", at=H),
               human("2", "website", "https://b.test", at=0), row("2", "website", "https://x.test", at=H)]
    plan = revert_plan(entries, "enricher", T0)
    assert [(i.record_id, i.clear) for i in plan.items] == [("1", True), ("2", False)]
    assert plan.summary["fields_to_clear_by_hand"] == 1 and plan.summary["fields_to_restore"] == 1
    assert rows_of(plan.csv_files()["hubspot-contacts.csv"]) == [["Record ID", "website"], ["2", "https://b.test"]]


def test_field_filter():
    entries = [human("1", "a", "x", at=0), human("1", "b", "y", at=0), row("1", "a", "X", at=H), row("1", "b", "Y", at=H)]
    plan = revert_plan(entries, "enricher", T0, fields=["b"])
    assert [(i.field, i.restore_value) for i in plan.items] == [("b", "y")]
    assert plan.fields == ["b"]


def test_salesforce_and_pipedrive_import_shapes_one_file_per_object_type():
    entries = [
        human("0061", "StageName", "Prospecting", at=0, source="salesforce", object_type="deal",
              source_object_type="Opportunity"),
        row("0061", "StageName", "Closed Lost", at=H, source="salesforce", object_type="deal",
            source_object_type="Opportunity"),
        human("0061", "Amount", 900, at=0, source="salesforce", object_type="deal", source_object_type="Opportunity"),
        row("0061", "Amount", 0, at=H, source="salesforce", object_type="deal", source_object_type="Opportunity"),
        human("0031", "LeadSource", "Web", at=0, source="salesforce", object_type="contact",
              source_object_type="Contact"),
        row("0031", "LeadSource", "Other", at=H, source="salesforce", object_type="contact",
            source_object_type="Contact"),
        human("44", "emails", [{"value": "a@x.test", "primary": True}], at=0, source="pipedrive"),
        row("44", "emails", [{"value": "b@x.test", "primary": True}], at=H, source="pipedrive"),
        human("12", "hs_marketable", True, at=0, object_type="contact"),
        row("12", "hs_marketable", False, at=H, object_type="contact"),
        human("12", "hs_buying_role", ["DECISION_MAKER", "CHAMPION"], at=0),
        row("12", "hs_buying_role", ["OTHER"], at=H),
    ]
    files = revert_plan(entries, "enricher", T0).csv_files()
    assert sorted(files) == ["hubspot-contacts.csv", "pipedrive-persons.csv", "salesforce-Contact.csv",
                             "salesforce-Opportunity.csv"]
    assert rows_of(files["salesforce-Opportunity.csv"]) == [["Id", "Amount", "StageName"], ["0061", "900", "Prospecting"]]
    assert rows_of(files["salesforce-Contact.csv"]) == [["Id", "LeadSource"], ["0031", "Web"]]
    assert rows_of(files["pipedrive-persons.csv"]) == [["ID", "emails"], ["44", "a@x.test"]]
    assert rows_of(files["hubspot-contacts.csv"]) == [
        ["Record ID", "hs_buying_role", "hs_marketable"], ["12", "DECISION_MAKER;CHAMPION", "true"]]


def test_rows_of_one_record_share_a_line_and_untouched_cells_stay_blank():
    entries = [human("1", "a", "x", at=0), human("1", "b", "y", at=0), row("1", "a", "X", at=H), row("1", "b", "Y", at=H),
               human("2", "a", "z", at=0), row("2", "a", "Z", at=H)]
    text = revert_plan(entries, "enricher", T0).csv_files()["hubspot-contacts.csv"]
    assert rows_of(text) == [["Record ID", "a", "b"], ["1", "x", "y"], ["2", "z", ""]]


def test_input_order_and_duplicates_do_not_change_the_plan():
    entries = []
    for rid in range(20):
        entries.append(human(str(rid), "utm_campaign", f"spring-{rid}", at=rid * M))
        entries.append(row(str(rid), "utm_campaign", "enriched", at=H + rid * M))
        if rid % 3 == 0:
            entries.append(human(str(rid), "utm_campaign", f"fixed-{rid}", at=2 * H))
    expected = revert_plan(entries, "enricher", T0).to_dict()
    shuffled = entries + entries[:10]  # redelivered rows
    random.Random(7).shuffle(shuffled)
    assert revert_plan(shuffled, "enricher", T0).to_dict() == expected
    assert expected["summary"]["fields_to_restore"] == 13 and expected["summary"]["skipped_human_changed"] == 7


def test_json_round_trip_and_plan_is_json_serializable():
    entries = [human("1", "city", "Oslo", at=0), row("1", "city", "Bergen", at=H),
               human("2", "city", "Rome", at=0), row("2", "city", "Milan", at=H), human("2", "city", "Turin", at=2 * H)]
    plan = revert_plan(entries, "enricher", T0)
    data = json.loads(json.dumps(plan.to_dict()))
    again = Plan.from_dict(data)
    assert again.to_dict() == plan.to_dict()
    assert again.csv_files() == plan.csv_files()


def test_end_to_end_through_record_state_priors():
    """Events as the guard sees them (HubSpot sends no old values): priors from record state feed the plan."""
    from app.timeline.store import entries_from_event
    from tests.unit.helpers_events import event

    state: dict = {}
    rs = RecordState(Policy().detectors.record_state)
    events = [
        event("1", {"utm_source": "google", "utm_medium": "cpc"}, at=0, by="user-1", kind=ActorKind.HUMAN),
        event("2", {"utm_source": "newsletter"}, at=M, by="user-1", kind=ActorKind.HUMAN),
        event("1", {"utm_source": "enriched"}, at=H),                        # fault
        event("2", {"utm_source": "enriched"}, at=H + M),                    # fault, then fixed by a human
        event("2", {"utm_source": "newsletter"}, at=2 * H, by="user-2", kind=ActorKind.HUMAN),
        event("3", {"jobtitle": "CTO"}, at=H, operation="create", object_type=ObjectType.CONTACT),
    ]
    entries = []
    for ev in events:
        obs = rs.apply(ev, state)
        assert obs is not None
        entries.extend(entries_from_event(ev, obs.priors))
    plan = revert_plan(entries, "enricher", T0 + 30 * M)
    assert [(i.record_id, i.field, i.restore_value) for i in plan.items] == [("1", "utm_source", "google")]
    assert [(s.record_id, s.human_actor_id) for s in plan.skipped_human_changed] == [("2", "user-2")]
    assert [r.record_id for r in plan.created_records] == ["3"]
