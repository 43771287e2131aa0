"""override: humans reverting or correcting agents' changes within the window, and look-alikes."""

from __future__ import annotations

from detectors.base import Severity
from detectors.events import ActorKind, ObjectType
from detectors.override import OverrideDetector
from detectors.settings import OverrideSettings
from tests.unit.helpers_events import HUMAN, H, M, Run, agents_policy, event

DEAL = ObjectType.DEAL


def run(**settings) -> Run:
    return Run(OverrideDetector(), policy=agents_policy("enricher", "other", override=settings))


def test_revert_is_an_override_signal_for_the_agent():
    r = run()
    r.feed(event("1", {"utm_source": "google"}, by="rep", kind=HUMAN))
    r.feed(event("1", {"utm_source": "enriched"}, at=H))
    r.feed(event("1", {"utm_source": "google"}, at=3 * H, by="rep", kind=HUMAN))
    (f,) = r.of("override")
    assert f.severity is Severity.INFO and f.pause is False
    assert f.actor_key == "enricher" and f.actor_kind is ActorKind.AGENT and f.agent == "enricher"
    d = f.details
    assert d["kind"] == "revert" and d["agent_value"] == "enriched" and d["human_value"] == "google"
    assert d["previous_value"] == "google" and d["delay_ms"] == 2 * H and d["tier"] == "high"
    assert d["human"] == {"id": "rep", "kind": "human", "source": "hubspot"}
    assert f.group == "utm_source" and f.record_key == "hubspot/contact/1"


def test_correct_to_a_different_value_and_blanking():
    r = run()
    r.feed(event("1", {"jobtitle": "Engineer", "city": "Paris"}, by="rep", kind=HUMAN))
    r.feed(event("1", {"jobtitle": "CTO", "city": "Lyon"}, at=H))
    r.feed(event("1", {"jobtitle": "Staff Engineer", "city": ""}, at=2 * H, by="rep", kind=HUMAN))
    kinds = {f.group: f.details["kind"] for f in r.of("override")}
    assert kinds == {"jobtitle": "correct", "city": "correct"}


def test_window_boundary_is_inclusive():
    r = run()
    r.feed(event("1", {"jobtitle": "Engineer"}, by="rep", kind=HUMAN), event("1", {"jobtitle": "CTO"}, at=H))
    r.feed(event("1", {"jobtitle": "Engineer"}, at=H + 72 * H, by="rep", kind=HUMAN))
    assert len(r.of("override")) == 1
    r2 = run()
    r2.feed(event("1", {"jobtitle": "Engineer"}, by="rep", kind=HUMAN), event("1", {"jobtitle": "CTO"}, at=H))
    r2.feed(event("1", {"jobtitle": "Engineer"}, at=H + 72 * H + 1, by="rep", kind=HUMAN))
    assert r2.of("override") == []
    assert r2.states["override"] == {}


def test_humans_correcting_humans_is_not_an_override():
    r = run()
    r.feed(event("1", {"jobtitle": "Engineer"}, by="rep", kind=HUMAN))
    r.feed(event("1", {"jobtitle": "CTO"}, at=H, by="manager", kind=HUMAN))
    r.feed(event("1", {"jobtitle": "Engineer"}, at=2 * H, by="rep", kind=HUMAN))
    assert r.of("override") == [] and r.states["override"] == {}


def test_confirmation_and_other_writers_end_the_watch():
    r = run()
    r.feed(event("1", {"jobtitle": "CTO"}, at=H))
    r.feed(event("1", {"jobtitle": "CTO"}, at=2 * H, by="rep", kind=HUMAN))  # the human confirms it
    r.feed(event("1", {"jobtitle": "VP"}, at=3 * H, by="rep", kind=HUMAN))
    r.feed(event("2", {"jobtitle": "CTO"}, at=H))
    r.feed(event("2", {"jobtitle": "Head"}, at=2 * H, by="wf", kind=ActorKind.AUTOMATION))
    r.feed(event("2", {"jobtitle": "VP"}, at=3 * H, by="rep", kind=HUMAN))
    r.feed(event("3", {"jobtitle": "CTO"}, at=H))
    r.feed(event("3", {"jobtitle": "VP"}, at=2 * H, by="csv", kind=ActorKind.IMPORT))
    assert r.of("override") == []


def test_agent_changing_twice_keeps_the_original_previous_value():
    r = run()
    r.feed(event("1", {"lifecyclestage": "lead"}, by="rep", kind=HUMAN))
    r.feed(event("1", {"lifecyclestage": "mql"}, at=H))
    r.feed(event("1", {"lifecyclestage": "sql"}, at=2 * H))
    r.feed(event("1", {"lifecyclestage": "lead"}, at=3 * H, by="rep", kind=HUMAN))
    (f,) = r.of("override")
    assert f.details["kind"] == "revert" and f.details["agent_value"] == "sql"
    assert f.details["previous_value"] == "lead" and f.details["delay_ms"] == H


def test_a_second_agent_takes_over_the_field():
    r = run()
    r.feed(event("1", {"jobtitle": "Engineer"}, by="rep", kind=HUMAN))
    r.feed(event("1", {"jobtitle": "CTO"}, at=H))
    r.feed(event("1", {"jobtitle": "Chief"}, at=2 * H, by="other"))
    r.feed(event("1", {"jobtitle": "Engineer"}, at=3 * H, by="rep", kind=HUMAN))
    (f,) = r.of("override")
    assert f.agent == "other" and f.details["previous_value"] == "CTO" and f.details["kind"] == "correct"


def test_unknown_previous_value():
    r = run()
    r.feed(event("1", {"jobtitle": "CTO"}, at=H))  # the guard never saw the field before
    r.feed(event("1", {"jobtitle": "Engineer"}, at=2 * H, by="rep", kind=HUMAN))
    (f,) = r.of("override")
    assert f.details["previous_known"] is False and f.details["previous_value"] is None
    assert f.details["kind"] == "correct"


def test_out_of_order_human_change_is_not_a_reaction():
    r = run()
    r.feed(event("1", {"jobtitle": "CTO"}, at=2 * H))
    older = event("1", {"jobtitle": "Engineer"}, at=H, by="rep", kind=HUMAN)
    r.feed(older)
    assert r.of("override") == []


def test_redelivery_gives_one_signal():
    r = run()
    r.feed(event("1", {"jobtitle": "Engineer"}, by="rep", kind=HUMAN), event("1", {"jobtitle": "CTO"}, at=H))
    r.feed(event("1", {"jobtitle": "Engineer"}, at=2 * H, by="rep", kind=HUMAN))
    det: OverrideDetector = r.detectors[0]
    assert det.observe(r.last_obs, r.states["override"], r.policy) == []
    assert len(r.of("override")) == 1


def test_pii_values_are_masked_but_comparable():
    r = run()
    r.feed(event("1", {"email": "ann@example.com"}, by="rep", kind=HUMAN))
    r.feed(event("1", {"email": "ann.lee@example.com"}, at=H))
    r.feed(event("1", {"email": "ann@example.com"}, at=2 * H, by="rep", kind=HUMAN))
    (f,) = r.of("override")
    assert "example.com" not in repr(f.to_dict())
    assert f.details["kind"] == "revert" and f.details["human_value"] == f.details["previous_value"]
    assert f.details["human_value"].startswith("masked:")


def test_state_bounded_and_compacted():
    settings = OverrideSettings()
    r = run()
    r.feed(event("1", {f"custom_{i}": "x" for i in range(200)}, at=H))
    r.feed(event("1", {"notes": "y" * 5000}, at=H + 1))
    entry = r.states["override"]["hubspot/contact/1"]
    assert len(entry["f"]) == settings.max_fields_per_record
    assert len(entry["f"]["notes"][2]) == settings.max_value_chars
    r.feed(*[event(str(i), {"jobtitle": "CTO"}, at=2 * H + i) for i in range(100)])
    assert len(r.states["override"]) == 100
    # humans' edits of other records do not grow it; expiry on touch, compaction for the rest
    r.feed(*[event(f"h{i}", {"jobtitle": "VP"}, at=3 * H, by="rep", kind=HUMAN) for i in range(100)])
    assert len(r.states["override"]) == 100
    r.feed(event("5", {"city": "Rome"}, at=100 * H, by="rep", kind=HUMAN))
    assert "hubspot/contact/5" not in r.states["override"]
    assert OverrideDetector.compact(r.states["override"], 100 * H + r.last_obs.event.occurred_at) == 99


def test_deterministic():
    def go() -> list[dict]:
        r = run()
        for i in range(30):
            r.feed(event(str(i), {"jobtitle": "A"}, at=i * M, by="rep", kind=HUMAN))
            r.feed(event(str(i), {"jobtitle": "B"}, at=H + i * M))
            r.feed(event(str(i), {"jobtitle": "A" if i % 2 else "C"}, at=2 * H + i * M, by="rep", kind=HUMAN))
        return [f.to_dict() for f in r.findings]

    assert go() == go() and len(go()) == 30


def deal(rid, stage, at, by="enricher", kind=ActorKind.AGENT, source="hubspot", **extra):
    field = {"hubspot": "dealstage", "salesforce": "StageName", "pipedrive": "stage_id"}[source]
    return event(rid, {field: stage, **extra}, at=at, by=by, kind=kind, source=source, object_type=DEAL)


def test_rep_moving_the_deal_further_or_closing_it_is_not_an_override():
    r = run()
    for rid, later in (
        ("1", "decisionmakerboughtin"),
        ("2", "contractsent"),
        ("3", "closedwon"),
        ("4", "closedlost"),
    ):
        r.feed(deal(rid, "qualifiedtobuy", 0, by="rep", kind=HUMAN))
        r.feed(deal(rid, "presentationscheduled", H))  # the agent: one stage on after a call
        r.feed(deal(rid, later, 5 * H, by="rep", kind=HUMAN))
    assert r.of("override") == []
    assert r.states["override"] == {}  # the rep's move ends the watch


def test_rep_moving_the_deal_back_is_an_override():
    r = run()
    r.feed(deal("1", "qualifiedtobuy", 0, by="rep", kind=HUMAN), deal("1", "presentationscheduled", H))
    r.feed(deal("1", "qualifiedtobuy", 5 * H, by="rep", kind=HUMAN))  # back where it was
    r.feed(deal("2", "qualifiedtobuy", 0, by="rep", kind=HUMAN), deal("2", "presentationscheduled", H))
    r.feed(deal("2", "appointmentscheduled", 5 * H, by="rep", kind=HUMAN))  # back past where it was
    r.feed(deal("3", "contractsent", 0, by="rep", kind=HUMAN), deal("3", "closedwon", H))
    r.feed(deal("3", "contractsent", 5 * H, by="rep", kind=HUMAN))  # reopened the agent's close
    r.feed(deal("4", "contractsent", 0, by="rep", kind=HUMAN), deal("4", "closedwon", H))
    r.feed(deal("4", "closedlost", 5 * H, by="rep", kind=HUMAN))  # won -> lost: same rank, a correction
    kinds = {f.record_key.rsplit("/", 1)[1]: f.details["kind"] for f in r.of("override")}
    assert kinds == {"1": "revert", "2": "correct", "3": "revert", "4": "correct"}


def test_revert_wins_even_when_the_agent_moved_the_deal_back():
    r = run()
    r.feed(deal("1", "contractsent", 0, by="rep", kind=HUMAN), deal("1", "qualifiedtobuy", H))
    r.feed(deal("1", "contractsent", 5 * H, by="rep", kind=HUMAN))  # forward, but to the value before
    (f,) = r.of("override")
    assert f.details["kind"] == "revert"


def test_stage_orders_come_from_stage_anomaly_settings_and_vendor_defaults():
    sf = {
        "salesforce": {
            "sales": {"stages": ["Discovery", "Demo", "Proposal"], "won": ["Won"], "lost": ["Lost"]}
        }
    }
    r = Run(
        OverrideDetector(),
        policy=agents_policy("enricher", stage_anomaly={"pipelines": sf, "stage_fields": {"acme": "phase"}}),
    )
    r.feed(deal("1", "Discovery", 0, by="rep", kind=HUMAN, source="salesforce"))
    r.feed(
        deal("1", "Demo", H, source="salesforce"),
        deal("1", "Proposal", 2 * H, by="rep", kind=HUMAN, source="salesforce"),
    )
    r.feed(deal("2", 2, 0, by="rep", kind=HUMAN, source="pipedrive"), deal("2", 3, H, source="pipedrive"))
    r.feed(deal("2", "4", 2 * H, by="rep", kind=HUMAN, source="pipedrive"))  # ids as int or text
    assert r.of("override") == []
    r.feed(deal("3", 2, 0, by="rep", kind=HUMAN, source="pipedrive"), deal("3", 3, H, source="pipedrive"))
    r.feed(deal("3", 1, 2 * H, by="rep", kind=HUMAN, source="pipedrive"))
    # a stage no pipeline knows: cannot tell progress from a correction, so it counts
    r.feed(
        deal("4", "Discovery", 0, by="rep", kind=HUMAN, source="salesforce"),
        deal("4", "Demo", H, source="salesforce"),
    )
    r.feed(deal("4", "Legal Review", 2 * H, by="rep", kind=HUMAN, source="salesforce"))
    # a configured stage field of another vendor
    r.feed(event("5", {"phase": "Discovery"}, by="rep", kind=HUMAN, source="acme", object_type=DEAL))
    r.feed(event("5", {"phase": "Demo"}, at=H, source="acme", object_type=DEAL))
    r.feed(
        event("5", {"phase": "Discovery"}, at=2 * H, by="rep", kind=HUMAN, source="acme", object_type=DEAL)
    )
    assert sorted(f.record_key for f in r.of("override")) == [
        "acme/deal/5",
        "pipedrive/deal/3",
        "salesforce/deal/4",
    ]


def test_only_deal_stage_fields_are_judged_by_progress():
    r = run()
    # a contact's lifecycle stage, and a deal field that is not the stage: any change is an override
    r.feed(
        event("1", {"lifecyclestage": "lead"}, by="rep", kind=HUMAN),
        event("1", {"lifecyclestage": "mql"}, at=H),
    )
    r.feed(event("1", {"lifecyclestage": "customer"}, at=2 * H, by="rep", kind=HUMAN))
    r.feed(deal("2", "qualifiedtobuy", 0, by="rep", kind=HUMAN, amount="100"))
    r.feed(deal("2", "presentationscheduled", H, amount="200"))
    r.feed(deal("2", "contractsent", 2 * H, by="rep", kind=HUMAN, amount="300"))
    assert sorted(f.group for f in r.of("override")) == ["amount", "lifecyclestage"]
    # and the old behaviour on request
    old = run(stage_progress_is_override=True)
    old.feed(deal("1", "qualifiedtobuy", 0, by="rep", kind=HUMAN), deal("1", "presentationscheduled", H))
    old.feed(deal("1", "closedwon", 5 * H, by="rep", kind=HUMAN))
    assert [f.details["kind"] for f in old.of("override")] == ["correct"]


def test_salesforce_probability_and_forecast_category_follow_the_stage():
    def sf(rid, stage, prob, cat, at, **kw):
        fields = {"StageName": stage, "Probability": prob, "ForecastCategoryName": cat}
        return event(rid, fields, at=at, source="salesforce", object_type=DEAL, **kw)

    r = run()
    r.feed(sf("1", "Qualification", 10, "Pipeline", 0, by="rep", kind=HUMAN))
    r.feed(sf("1", "Needs Analysis", 20, "Pipeline", H))
    r.feed(sf("1", "Value Proposition", 50, "BestCase", 5 * H, by="rep", kind=HUMAN))  # on: progress
    assert r.of("override") == []
    r.feed(sf("2", "Qualification", 10, "Pipeline", 0, by="rep", kind=HUMAN))
    r.feed(sf("2", "Needs Analysis", 20, "BestCase", H))
    # back: a revert of all three
    r.feed(sf("2", "Qualification", 10, "Pipeline", 5 * H, by="rep", kind=HUMAN))
    assert sorted((f.group, f.details["kind"]) for f in r.of("override")) == [
        ("ForecastCategoryName", "revert"),
        ("Probability", "revert"),
        ("StageName", "revert"),
    ]
    # a probability edited by hand, without a stage move, is a correction as before
    r.feed(
        sf("3", "Qualification", 10, "Pipeline", 0, by="rep", kind=HUMAN),
        sf("3", "Needs Analysis", 20, "Pipeline", H),
    )
    r.feed(
        event("3", {"Probability": 35}, at=5 * H, by="rep", kind=HUMAN, source="salesforce", object_type=DEAL)
    )
    assert [f.details["kind"] for f in r.of("override") if f.record_key.endswith("/3")] == ["correct"]


def test_an_entry_read_back_from_json_is_equal_and_shares_agent_and_event_ids():
    import orjson

    r = run()
    r.feed(event("1", {"jobtitle": "CTO", "city": "Lyon"}, at=H), event("2", {"city": "Oslo"}, at=H + M))
    kept = r.states["override"]
    back = {k: OverrideDetector.loaded(orjson.loads(orjson.dumps(v))) for k, v in kept.items()}
    assert back == kept
    one, two = back["hubspot/contact/1"]["f"], back["hubspot/contact/2"]["f"]
    assert one["city"][0] is one["jobtitle"][0] is two["city"][0]  # one agent id string
    assert one["city"][5] is one["jobtitle"][5]  # one event id per event
