"""duplicate_index (LINK) and duplicate_spike (ACTOR): matches after normalization, merges,
moves, the per-agent spike against its baseline, redelivery, bounds."""

from __future__ import annotations

from detectors.base import Finding, Severity
from detectors.duplicate_spike import DAY_MS, DuplicateIndexDetector, DuplicateSpikeDetector
from detectors.events import ActorKind, ObjectType
from detectors.policy import Policy
from tests.unit.helpers_events import HUMAN, H, M, Run, agents_policy, event

C = ObjectType.CONTACT


def run(**settings) -> Run:
    return Run(
        DuplicateIndexDetector(),
        DuplicateSpikeDetector(),
        policy=agents_policy("enricher", duplicate_spike=settings),
    )


def human_contacts(n: int, at: int = 0) -> list:
    return [
        event(
            f"h{i}",
            {"email": f"person{i}@example.com", "firstname": "P", "lastname": str(i)},
            at=at,
            by="rep",
            kind=HUMAN,
            operation="create",
        )
        for i in range(n)
    ]


def test_agent_creating_a_gmail_variant_is_a_duplicate():
    r = run()
    r.feed(event("1", {"email": "ann.lee@gmail.com"}, by="rep", kind=HUMAN, operation="create"))
    r.feed(event("2", {"email": "Ann.Lee+crm@GoogleMail.com "}, at=M, operation="create"))
    (f,) = r.of("duplicate_created")
    assert f.severity is Severity.INFO and f.agent == "enricher" and f.actor_key == "enricher"
    assert f.details["matched_record_keys"] == ["hubspot/contact/1"]
    assert f.details["identity_kind"] == "email" and f.group == "email"
    assert "gmail" not in repr(f.to_dict()).lower()


def test_hubspot_style_create_then_property_change_counts():
    r = run()
    r.feed(event("1", {"email": "ann@example.com"}, by="rep", kind=HUMAN, operation="create"))
    r.feed(event("2", {}, at=M, operation="create"))
    r.feed(event("2", {"email": "ann@example.com"}, at=M + 10))
    (f,) = r.of("duplicate_created")
    assert f.details["via"] == "update"


def test_name_plus_phone_in_e164_matches_across_formats():
    r = run()
    r.feed(
        event(
            "1",
            {"firstname": "Ann", "lastname": "Lee", "phone": "(415) 555-0100"},
            by="rep",
            kind=HUMAN,
            operation="create",
        )
    )
    r.feed(
        event(
            "2", {"firstname": "ann", "lastname": "LEE", "phone": "+1 415 555 0100"}, at=M, operation="create"
        )
    )
    (f,) = r.of("duplicate_created")
    assert f.details["identity_kind"] == "namephone"
    # colleagues sharing the switchboard number are not duplicates
    r.feed(
        event(
            "3",
            {"firstname": "Bob", "lastname": "Roe", "phone": "415-555-0100"},
            at=2 * M,
            operation="create",
        )
    )
    assert len(r.of("duplicate_created")) == 1


def test_cross_object_and_cross_vendor():
    r = run()
    r.feed(
        event(
            "003A",
            {"Email": "ann@example.com"},
            source="salesforce",
            by="rep",
            kind=HUMAN,
            operation="create",
        )
    )
    r.feed(
        event(
            "00QB",
            {"Email": "ann@example.com"},
            source="salesforce",
            object_type=ObjectType.LEAD,
            at=M,
            operation="create",
        )
    )
    assert len(r.of("duplicate_created")) == 1  # a lead duplicating a contact
    r.feed(event("9", {"email": "ann@example.com"}, source="hubspot", at=2 * M, operation="create"))
    assert len(r.of("duplicate_created")) == 1  # another vendor is another CRM


def test_humans_creating_duplicates_are_not_watched_by_default():
    r = run()
    r.feed(event("1", {"email": "ann@example.com"}, by="rep", kind=HUMAN, operation="create"))
    r.feed(event("2", {"email": "ann@example.com"}, by="rep2", kind=HUMAN, operation="create"))
    assert r.of("duplicate_created") == []


def test_merge_is_not_a_duplicate_and_removes_the_merged_id():
    r = run()
    r.feed(event("1", {"email": "ann@example.com"}, by="rep", kind=HUMAN, operation="create"))
    r.feed(event("2", {"email": "ann@example.com"}, at=M, operation="create"))
    assert len(r.of("duplicate_created")) == 1
    r.feed(event("1", {"email": "ann@example.com"}, at=2 * M, operation="merge", merged=["2"]))
    assert len(r.of("duplicate_created")) == 1
    (entry,) = r.states["duplicate_index"].values()
    assert list(entry["r"]) == ["contact/1"]
    # an agent merging duplicates itself is not creating one either
    r.feed(event("1", {"email": "ann@example.com"}, at=3 * M, operation="merge", merged=["5"]))
    assert len(r.of("duplicate_created")) == 1


def test_changed_email_moves_the_record_and_delete_with_fields_removes_it():
    r = run()
    r.feed(event("1", {"email": "old@example.com"}, by="rep", kind=HUMAN, operation="create"))
    r.feed(event("1", {"email": "new@example.com"}, at=M, by="rep", kind=HUMAN))
    r.feed(event("2", {"email": "old@example.com"}, at=2 * M, operation="create"))
    assert r.of("duplicate_created") == []
    # Pipedrive deletes carry the record's fields: the identity is released
    r.feed(event("1", {"email": "new@example.com"}, at=3 * M, by="rep", kind=HUMAN, operation="delete"))
    r.feed(event("3", {"email": "new@example.com"}, at=4 * M, operation="create"))
    assert r.of("duplicate_created") == []


def test_delete_without_fields_releases_the_identities_the_record_state_knew():
    """HubSpot and Salesforce deletions carry no values: the record state's last known ones
    stand in, so a record re-created after its deletion is not a duplicate of its deleted self."""
    r = run()
    r.feed(event("1", {"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee", "company": "Acme"},
                 by="rep", kind=HUMAN, operation="create"))
    r.feed(event("1", {}, at=M, by="rep", kind=HUMAN, operation="delete"))
    r.feed(event("2", {"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee", "company": "Acme"},
                 at=2 * M, operation="create"))
    assert r.of("duplicate_created") == []
    # a record that still exists keeps its identities: a copy of it is a duplicate
    r.feed(event("3", {"email": "ann@example.com"}, at=3 * M, operation="create"))
    (found,) = r.of("duplicate_created")
    assert found.details["matched_record_keys"] == ["hubspot/contact/2"]


def test_redelivered_create_is_not_a_second_duplicate():
    r = run()
    r.feed(event("1", {"email": "ann@example.com"}, by="rep", kind=HUMAN, operation="create"))
    dup = event("2", {"email": "ann@example.com"}, at=M, operation="create")
    r.feed(dup)
    det: DuplicateIndexDetector = r.detectors[0]
    obs = r.last_obs
    for key in det.link_keys(obs, r.policy):
        assert det.observe_link(key, obs, r.states["duplicate_index"], r.policy) == []


def spike_findings(r: Run) -> list[Finding]:
    return r.of("duplicate_spike")


def test_spike_threshold_minus_one_and_threshold():
    r = run()
    r.feed(*human_contacts(5))
    r.feed(
        *[
            event(f"a{i}", {"email": f"person{i}@example.com"}, at=H + i * M, operation="create")
            for i in range(2)
        ]
    )
    assert spike_findings(r) == []
    r.feed(event("a2", {"email": "person2@example.com"}, at=H + 2 * M, operation="create"))
    (f,) = spike_findings(r)
    assert f.severity is Severity.WARNING and f.pause is False and f.details["count"] == 3
    assert f.actor_key == "enricher"


def test_spike_window_edge():
    r = run()
    r.feed(*human_contacts(5))
    # three duplicates spread over exactly 24h: the first has left the (t-24h, t] window
    r.feed(
        *[
            event(f"a{i}", {"email": f"person{i}@example.com"}, at=H + i * 12 * H, operation="create")
            for i in range(3)
        ]
    )
    assert spike_findings(r) == []


def dup_finding(at: int, n: int, agent: str = "enricher") -> Finding:
    return Finding(
        detector="duplicate_created",
        severity=Severity.INFO,
        actor_key=agent,
        actor_kind=ActorKind.AGENT,
        agent=agent,
        event_id=f"e{at}-{n}",
        occurred_at=at,
        record_key=f"hubspot/contact/{at}-{n}",
        object_type="contact",
        summary="dup",
        group="email",
        details={"identity_kind": "email"},
    )


def test_spike_is_relative_to_the_agents_own_baseline():
    det = DuplicateSpikeDetector()
    policy = Policy()
    state: dict = {}
    t0 = 1_700_006_400_000 // DAY_MS * DAY_MS
    warned_days = []
    for day in range(40):  # an agent whose normal is 6 duplicates a day
        out = []
        for n in range(6):
            out += det.on_finding(dup_finding(t0 + day * DAY_MS + n * H, n), state, policy)
        if out:
            warned_days.append(day)
    # learns its normal, one threshold at a time (each day teaches at most that day's threshold)
    assert warned_days and warned_days[0] == 0 and warned_days[-1] < 10
    assert state["enricher"]["b"] > 4
    out = []
    for n in range(30):  # then a day five times its normal: warns at the ceiling (10), not at 3 x 6
        out += det.on_finding(dup_finding(t0 + 41 * DAY_MS + n * M, n), state, policy)
    assert out and out[0].details["count"] == 10 and out[0].details["threshold"] == 10


def learned_normal(
    policy: Policy, per_day: int = 6, days: int = 40
) -> tuple[DuplicateSpikeDetector, dict, int]:
    det = DuplicateSpikeDetector()
    state: dict = {}
    t0 = 1_700_006_400_000 // DAY_MS * DAY_MS
    for day in range(days):
        for n in range(per_day):
            det.on_finding(dup_finding(t0 + day * DAY_MS + n * H, n), state, policy)
    return det, state, t0 + (days + 1) * DAY_MS


def test_ceiling_caps_what_a_learned_normal_excuses():
    policy = Policy()
    det, state, day = learned_normal(policy)
    out = [f for n in range(9) for f in det.on_finding(dup_finding(day + n * M, n), state, policy)]
    assert out == []  # nine in a day: above its normal of 6, below the ceiling
    det, state, day = learned_normal(policy)
    out = [f for n in range(10) for f in det.on_finding(dup_finding(day + n * M, n), state, policy)]
    assert len(out) == 1 and out[0].details["count"] == 10
    # without the ceiling (set high) the bar is k x the learned baseline, as before
    loose = agents_policy("enricher", duplicate_spike={"ceiling_count": 1000})
    det, state, day = learned_normal(loose)
    out = [f for n in range(30) for f in det.on_finding(dup_finding(day + n * M, n), state, loose)]
    assert out and out[0].details["count"] >= 3 * 5


def test_a_burst_does_not_teach_the_baseline_so_the_next_burst_warns_at_the_third():
    # intake-agent is one actor across vendors: its HubSpot burst must not excuse its Salesforce one
    det, state, policy = DuplicateSpikeDetector(), {}, Policy()
    t0 = 1_700_006_400_000 // DAY_MS * DAY_MS
    first = [f for n in range(30) for f in det.on_finding(dup_finding(t0 + n * 40 * M, n), state, policy)]
    assert first and first[0].details["count"] == 3
    later = t0 + 6 * DAY_MS
    second = [
        (n, f)
        for n in range(30)
        for f in det.on_finding(dup_finding(later + n * 40 * M, 100 + n), state, policy)
    ]
    assert second and second[0][0] == 2 and second[0][1].details["count"] == 3  # the third duplicate
    assert state["enricher"]["b"] < 1  # the two burst days taught at most their threshold (3) each
    # the benign look-alike: two duplicates a day, day after day, never warn
    det, state = DuplicateSpikeDetector(), {}
    quiet = [
        f
        for day in range(30)
        for n in range(2)
        for f in det.on_finding(dup_finding(t0 + day * DAY_MS + n * 11 * H, n), state, policy)
    ]
    assert quiet == []


def test_ceiling_below_the_floor_is_refused():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        agents_policy("enricher", duplicate_spike={"min_count": 5, "ceiling_count": 4})


def test_baseline_decays_over_idle_days_and_one_event_with_two_identities_counts_once():
    det = DuplicateSpikeDetector()
    policy = Policy()
    state: dict = {}
    t0 = 1_700_006_400_000 // DAY_MS * DAY_MS
    for day in range(20):
        for n in range(6):
            det.on_finding(dup_finding(t0 + day * DAY_MS + n * H, n), state, policy)
    high = state["enricher"]["b"]
    det.on_finding(dup_finding(t0 + 200 * DAY_MS, 0), state, policy)
    assert state["enricher"]["b"] < high / 100
    f = dup_finding(t0 + 201 * DAY_MS, 1)
    det.on_finding(f, state, policy)
    before = list(state["enricher"]["w"])
    assert det.on_finding(f, state, policy) == []  # the same event again (another identity, or redelivery)
    assert state["enricher"]["w"] == before


def test_other_findings_are_ignored():
    det = DuplicateSpikeDetector()
    f = dup_finding(0, 0)
    f.detector = "override"
    assert det.on_finding(f, {}, Policy()) == []


def test_state_bounded_under_many_records_and_keys():
    r = run()
    r.feed(
        *[
            event(f"x{i}", {"email": "shared@example.com"}, at=i, by="rep", kind=HUMAN, operation="create")
            for i in range(100)
        ]
    )
    (entry,) = r.states["duplicate_index"].values()
    assert len(entry["r"]) == 16
    r.feed(
        *[
            event(f"y{i}", {"email": f"u{i}@example.com"}, at=i, by="rep", kind=HUMAN, operation="create")
            for i in range(500)
        ]
    )
    assert len(r.states["duplicate_index"]) == 501
    dropped = DuplicateIndexDetector.compact(
        r.states["duplicate_index"], r.last_obs.event.occurred_at + 366 * DAY_MS
    )
    assert dropped == 501 and r.states["duplicate_index"] == {}
    det = DuplicateSpikeDetector()
    state: dict = {}
    for n in range(1000):
        det.on_finding(dup_finding(n * 1000, n), state, Policy())
    assert len(state["enricher"]["w"]) <= 256 and len(state["enricher"]["e"]) <= 64


def test_deterministic():
    def go() -> list[dict]:
        r = run()
        r.feed(*human_contacts(20))
        r.feed(
            *[
                event(f"a{i}", {"email": f"person{i}@example.com"}, at=H + i * M, operation="create")
                for i in range(20)
            ]
        )
        return [f.to_dict() for f in r.findings]

    assert go() == go()
