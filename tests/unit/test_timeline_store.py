"""The timeline store (order, attachments, filters, paging, retention, rebuild input) and masking."""

from __future__ import annotations

import pytest

from app.timeline.masking import looks_like_phone, mask_email, mask_phone, mask_value, pii_class
from app.timeline.store import (
    DAY_MS,
    Query,
    TimelineEntry,
    TimelineSettings,
    TimelineStore,
    decode_cursor,
    encode_cursor,
    entries_from_event,
    load_jsonl,
)
from detectors.base import Finding, Prior, Severity
from detectors.events import ActorKind
from tests.unit.helpers_events import H, M, T0, event

REC = "hubspot/contact/1"


def entry(record: str = "1", field: str = "city", new="Oslo", *, at: int = 0, by: str = "enricher",
          kind: str = "agent", event_id: str | None = None, old=None, has_old: bool = False,
          source: str = "hubspot", object_type: str = "contact", **extra) -> dict:
    return {
        "event_id": event_id or f"ev-{record}-{field}-{at}-{by}",
        "record_key": f"{source}/{object_type}/{record}",
        "source": source, "object_type": object_type, "record_id": record,
        "occurred_at": T0 + at, "field": field, "old": old, "has_old": has_old, "new": new,
        "actor_id": by, "actor_kind": kind, "operation": "update", **extra,
    }


def finding(event_id: str, detector: str = "mass_overwrite", record: str = REC, **kw) -> dict:
    return Finding(detector=detector, severity=kw.pop("severity", Severity.WARNING), actor_key="enricher",
                   actor_kind=ActorKind.AGENT, agent="enricher", event_id=event_id, occurred_at=T0,
                   record_key=record, object_type="contact", summary=kw.pop("summary", "agent overwrote"),
                   group=kw.pop("group", "utm_source"), details=kw.pop("details", {})).to_dict()


# ---------------------------------------------------------------- entries


def test_entries_from_event_take_old_from_source_then_prior():
    ev = event("1", {"utm_source": "enriched", "city": "Bergen", "new_field": "x"}, at=H,
               source="pipedrive", old={"city": "Oslo"})
    prior = Prior("google", "user-1", ActorKind.HUMAN, T0, "ev-0")
    rows = {e.field: e for e in entries_from_event(ev, {"utm_source": prior, "city": None, "new_field": None})}
    assert (rows["utm_source"].old, rows["utm_source"].has_old) == ("google", True)
    assert (rows["city"].old, rows["city"].has_old) == ("Oslo", True)
    assert (rows["new_field"].old, rows["new_field"].has_old) == (None, False)
    assert rows["city"].actor_kind is ActorKind.AGENT and rows["city"].record_key == "pipedrive/contact/1"
    assert rows["city"].occurred_at == T0 + H


def test_event_without_fields_gives_one_entry_and_null_field_is_accepted():
    ev = event("1", {}, at=0, operation="delete")
    [only] = entries_from_event(ev)
    assert only.field == "" and only.operation == "delete"
    assert TimelineEntry.model_validate(entry(field=None)).field == ""


def test_append_keeps_time_order_and_is_idempotent():
    store = TimelineStore()
    assert store.append(entry(field="b", at=2 * H))
    assert store.append(entry(field="a", at=H, by="user-1", kind="human"))
    assert not store.append(entry(field="b", at=2 * H))  # redelivery
    assert [e.field for e in store.record_entries(REC)] == ["a", "b"]
    assert len(store) == 2


def test_last_value_is_the_newest_in_event_time_whatever_the_arrival_order():
    """The review queue's current value where the record state is in another process."""
    store = TimelineStore()
    store.append(entry(field="city", new="Oslo", at=H, by="user-1", kind="human"))
    store.append(entry(field="city", new="Bergen", at=3 * H))
    store.append(entry(field="city", new="Tromso", at=2 * H, by="user-2", kind="human"))  # late
    store.append(entry(field="phone", new=None, at=4 * H))  # blanked: known, and empty
    assert store.last_value(REC, "city") == (True, "Bergen")
    assert store.last_value(REC, "phone") == (True, None)
    assert store.last_value(REC, "jobtitle") == (False, None)
    assert store.last_value("hubspot/contact/2", "city") == (False, None)


def test_agent_index_spans_records_and_agent_timeline_includes_humans_on_those_records():
    store = TimelineStore()
    store.append(entry("1", "utm_source", "enriched", at=H))
    store.append(entry("2", "utm_source", "enriched", at=2 * H))
    store.append(entry("2", "utm_source", "google", at=3 * H, by="user-1", kind="human"))
    store.append(entry("3", "city", "Oslo", at=H, by="user-1", kind="human"))  # never touched by the agent
    assert store.agent_records("enricher") == ["hubspot/contact/1", "hubspot/contact/2"]
    page = store.agent_timeline("enricher")
    assert [(i["record_id"], i["actor_kind"]) for i in page.items] == [("2", "human"), ("2", "agent"), ("1", "agent")]
    own = store.agent_timeline("enricher", only_agent=True)
    assert [i["record_id"] for i in own.items] == ["2", "1"]
    humans = store.agent_timeline("enricher", Query(kinds=frozenset({"human"})))
    assert [i["actor_id"] for i in humans.items] == ["user-1"]
    assert [a["agent"] for a in store.agents()] == ["enricher"]
    assert store.agents()[0]["records"] == 2 and store.agents()[0]["changes"] == 2


def test_filters_by_field_kind_actor_and_time_range():
    store = TimelineStore()
    for i, (field, kind, by) in enumerate([("a", "agent", "enricher"), ("b", "human", "user-1"),
                                            ("a", "automation", "wf-1"), ("b", "agent", "other")]):
        store.append(entry(field=field, at=i * H, kind=kind, by=by))
    def fields(q: Query) -> list[tuple[str, str]]:
        return [(i["field"], i["actor_id"]) for i in store.record_timeline(REC, q).items]
    assert fields(Query(fields=frozenset({"a"}))) == [("a", "enricher"), ("a", "wf-1")]
    assert fields(Query(kinds=frozenset({"agent"}))) == [("a", "enricher"), ("b", "other")]
    assert fields(Query(actors=frozenset({"user-1"}))) == [("b", "user-1")]
    assert fields(Query(since=T0 + H, until=T0 + 3 * H)) == [("b", "user-1"), ("a", "wf-1")]


@pytest.mark.parametrize("newest_first", [False, True])
def test_cursor_paging_visits_every_entry_once_even_with_appends_between_pages(newest_first):
    store = TimelineStore()
    for i in range(25):
        store.append(entry(field=f"f{i:02d}", at=i * M))
    seen, cursor = [], None
    while True:
        page = store.record_timeline(REC, cursor=cursor, limit=7, newest_first=newest_first)
        assert page.total in (25, 26)
        seen += [i["field"] for i in page.items]
        if len(seen) == 7 and not newest_first:
            store.append(entry(field="late", at=100 * M))  # appended after the cursor: shows up at the end
        cursor = page.next_cursor
        if cursor is None:
            break
    expected = [f"f{i:02d}" for i in range(25)]
    if newest_first:
        assert seen == list(reversed(expected))
    else:
        assert seen == expected + ["late"]


def test_cursor_round_trip_and_bad_cursor():
    key = (T0, "ev/1", "utm_source")
    assert decode_cursor(encode_cursor(key)) == key
    with pytest.raises(ValueError):
        decode_cursor("not-a-cursor!")


def test_findings_overrides_and_decisions_attach_to_their_change():
    store = TimelineStore()
    store.append(entry(field="utm_source", new="enriched", at=H, event_id="ev-agent", old="google", has_old=True))
    store.append(entry(field="utm_source", new="google", at=2 * H, by="user-1", kind="human", event_id="ev-human",
                       proposal_id=None))
    store.append(entry(field="city", new="Oslo", at=3 * H, event_id="ev-applied", proposal_id="p-1"))
    assert store.attach_finding(finding("ev-agent"))
    assert not store.attach_finding(finding("ev-agent"))  # same detector and group: once
    assert store.attach_finding(finding("ev-human", "override", details={"agent_event_id": "ev-agent",
                                                                         "agent_value": "enriched"}))
    assert store.attach_decision({"proposal_id": "p-1", "record_key": REC, "decision": "review",
                                  "decided_at": T0 + 2 * H, "decided_by": "gate"})
    assert store.attach_decision({"proposal_id": "p-1", "record_key": REC, "decision": "approved",
                                  "decided_at": T0 + 2 * H + M, "decided_by": "ann", "event_id": "ev-applied"})
    items = {i["event_id"]: i for i in store.record_timeline(REC).items}
    assert [f["detector"] for f in items["ev-agent"]["findings"]] == ["mass_overwrite"]
    assert [o["detector"] for o in items["ev-agent"]["overridden_by"]] == ["override"]
    assert [o["detector"] for o in items["ev-human"]["overrides"]] == ["override"]
    assert items["ev-human"]["findings"] == []
    assert [d["decision"] for d in items["ev-applied"]["decisions"]] == ["approved", "review"]
    assert list(store.record_proposals(REC)) == ["p-1"]


def test_per_record_cap_drops_oldest_with_their_attachments():
    store = TimelineStore(TimelineSettings(max_entries_per_record=3))
    for i in range(5):
        store.append(entry(field="city", new=f"c{i}", at=i * M, event_id=f"ev-{i}"))
        store.attach_finding(finding(f"ev-{i}"))
    assert [e.event_id for e in store.record_entries(REC)] == ["ev-2", "ev-3", "ev-4"]
    items = store.record_timeline(REC).items
    assert all(len(i["findings"]) == 1 for i in items)
    assert store.agents()[0]["changes"] == 3


def test_time_retention_drops_old_entries_by_event_time_and_forgets_agents():
    store = TimelineStore(TimelineSettings(retention_ms=10 * DAY_MS, prune_every_ms=DAY_MS))
    store.append(entry("1", at=0))
    store.append(entry("2", at=0, by="user-1", kind="human"))
    store.append(entry("2", field="b", at=5 * DAY_MS, by="user-1", kind="human"))
    assert store.has_record("hubspot/contact/1")
    store.append(entry("3", at=11 * DAY_MS, by="user-1", kind="human"))  # moves event time: prune
    assert not store.has_record("hubspot/contact/1")
    assert [e.field for e in store.record_entries("hubspot/contact/2")] == ["b"]
    assert store.agents() == []
    assert not store.append(entry("4", at=0))  # older than retention: refused
    assert store.prune(T0 + 30 * DAY_MS) == 2
    assert len(store) == 0


def test_sweeps_are_amortized_when_event_time_races_ahead():
    """A rebuild or a backlog moves event time by days a second. One sweep over every record per
    hour of event time made rebuilding 90 days of 200,000 records quadratic; a sweep now waits for
    as many appends as records are held, so the records a sweep visits are paid by the appends
    before it: here, with nothing to drop, sweeps come at 1, 2, 4, 8... records."""
    store = TimelineStore(TimelineSettings(retention_ms=10_000 * DAY_MS, prune_every_ms=H))
    sweeps = []
    real_prune = store.prune

    def counting_prune(now_ms=None):
        sweeps.append(len(store._records))
        return real_prune(now_ms)

    store.prune = counting_prune
    for n in range(1, 2001):  # 2,000 records, one entry each, 6 h of event time apart
        store.append(entry(str(n), at=n * 6 * H))
    assert len(store) == 2000
    assert sweeps == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], sweeps  # before: 2,000 sweeps


def test_a_quiet_store_still_sweeps_once_event_time_moved_a_tenth_of_the_retention():
    store = TimelineStore(TimelineSettings(retention_ms=10 * DAY_MS, prune_every_ms=H))
    for n in range(100):
        store.append(entry(str(n), at=n))
    store.append(entry("late", at=5 * H))  # a sweep over 100 records (nothing expired yet)
    assert store.has_record("hubspot/contact/0")
    # one append since is not 100, but event time moved more than a tenth of the retention: swept
    store.append(entry("later", at=12 * DAY_MS))
    assert not store.has_record("hubspot/contact/0") and store.has_record("hubspot/contact/later")



def test_record_cap_evicts_least_recently_changed():
    store = TimelineStore(TimelineSettings(max_records=2))
    store.append(entry("1", at=0))
    store.append(entry("2", at=M))
    store.append(entry("1", field="b", at=2 * M))
    store.append(entry("3", at=3 * M))
    assert not store.has_record("hubspot/contact/2")
    assert [r["record_key"] for r in store.recent_records()] == ["hubspot/contact/3", "hubspot/contact/1"]
    store.append(entry("4", at=M))  # older event time: listed after newer records, evicts the oldest (1)
    assert [r["record_key"] for r in store.recent_records()] == ["hubspot/contact/3", "hubspot/contact/4"]


def test_apply_batch_accepts_batch_objects_and_plain_row_lists():
    store = TimelineStore()
    rows = [entry(field="a"), entry(field="b")]
    assert store.apply_batch(rows) == 2
    batch = {"v": 1, "record_key": REC, "entries": rows + [entry(field="c")],
             "findings": [finding(rows[0]["event_id"])], "decisions": []}
    assert store.apply_batch(batch) == 2  # entries a, b already held; c and the finding are new
    assert len(store) == 3


def test_views_are_masked_unless_show_pii():
    store = TimelineStore()
    store.append(entry(field="email", new="ann.smith@example.com", old="ann@old.org", has_old=True))
    store.append(entry(field="mobilephone", new="+1 415 555 4567", at=M))
    store.append(entry(field="notes", new="call bob@corp.io on +44 20 7946 0958", at=2 * M))
    store.append(entry(field="hubspot_owner_id", new="12345678", at=3 * M))
    store.attach_finding(finding("ev-1-email-0-enricher", group="email",
                                 details={"field": "email", "agent_value": "ann.smith@example.com"}))
    masked = {i["field"]: i for i in store.record_timeline(REC).items}
    assert masked["email"]["new"] == "a***@e***.com" and masked["email"]["old"] == "a***@o***.org"
    assert masked["mobilephone"]["new"] == "+1******4567"
    assert "bob@corp.io" not in masked["notes"]["new"] and "b***@c***.io" in masked["notes"]["new"]
    assert masked["hubspot_owner_id"]["new"] == "12345678"
    assert masked["email"]["findings"][0]["details"]["agent_value"] == "a***@e***.com"
    full = {i["field"]: i for i in store.record_timeline(REC, show_pii=True).items}
    assert full["email"]["new"] == "ann.smith@example.com"
    # raw entries (revert plans) are never masked
    assert store.record_entries(REC)[0].new == "ann.smith@example.com"


def test_load_jsonl_names_the_bad_line():
    import json

    good = json.dumps(entry())
    assert len(list(load_jsonl([good, "", good]))) == 2
    with pytest.raises(ValueError, match="line 2"):
        list(load_jsonl([good, '{"event_id": 1}']))


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize(("value", "expected"), [
    ("ann.smith@example.com", "a***@e***.com"),
    ("  Bob@Sub.Example.co.uk ", "B***@S***.uk"),
    ("no-at-sign", "n***"),
])
def test_mask_email(value, expected):
    assert mask_email(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("+14155554567", "+1******4567"),
    ("+1 (415) 555-4567", "+1******4567"),
    ("0044 20 7946 0958", "+44******0958"),
    ("415-555-4567", "******4567"),
    ("12345", "***45"),
])
def test_mask_phone(value, expected):
    assert mask_phone(value) == expected


@pytest.mark.parametrize(("field", "vendor", "cls"), [
    ("email", "hubspot", "email"), ("hs_additional_emails", "hubspot", "email"), ("Email", "salesforce", "email"),
    ("PersonEmail", "salesforce", "email"), ("emails", "pipedrive", "email"), ("MobilePhone", "salesforce", "phone"),
    ("phones", "pipedrive", "phone"), ("work_phone__c", "salesforce", "phone"), ("utm_source", "hubspot", None),
    ("amount", "hubspot", None), (None, "hubspot", None),
])
def test_pii_class_by_field_name(field, vendor, cls):
    assert pii_class(field, vendor) == cls


@pytest.mark.parametrize(("text", "phone"), [
    ("+1 415 555 4567", True), ("(415) 555 4567", True), ("415-555-4567", True), ("415.555.4567", True),
    ("12345678", False), ("2024-01-15", False), ("1234567.89", False), ("2024-01-15T10:00:00Z", False),
    ("closedwon", False), ("1-2", False),
])
def test_phone_detection_by_value_leaves_ids_dates_and_amounts_alone(text, phone):
    assert looks_like_phone(text) is phone


def test_mask_value_recurses_into_vendor_lists_and_respects_show_pii():
    emails = [{"label": "work", "value": "ann@example.com", "primary": True}]
    assert mask_value(emails, "emails", "pipedrive") == [{"label": "work", "value": "a***@e***.com", "primary": True}]
    assert mask_value(4155554567, "phone", "hubspot") == "******4567"
    assert mask_value(42, "amount", "hubspot") == 42
    assert mask_value("ann@example.com", "email", "hubspot", show_pii=True) == "ann@example.com"
    assert mask_value(None, "email", "hubspot") is None
