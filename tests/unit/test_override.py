"""override: humans reverting or correcting agents' changes within the window, and look-alikes."""

from __future__ import annotations

from detectors.base import Severity
from detectors.events import ActorKind
from detectors.override import OverrideDetector
from detectors.settings import OverrideSettings
from tests.unit.helpers_events import HUMAN, H, M, Run, agents_policy, event


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
