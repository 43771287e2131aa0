"""stage_anomaly: skips, backwards moves, closings, stale deals, moves after support, escalation."""

from __future__ import annotations

from detectors.base import Severity
from detectors.events import ActorKind, ObjectType
from detectors.pipelines_default import DEFAULT_PIPELINES, resolve
from detectors.settings import StageAnomalySettings
from detectors.stage_anomaly import StageAnomalyDetector, StageEscalationDetector, SupportContextDetector
from tests.unit.helpers_events import AGENT, HUMAN, D, H, M, Run, agents_policy, event

DEAL = ObjectType.DEAL
CO = ObjectType.COMPANY
CT = ObjectType.CONTACT


def run(pause: bool = True, **settings) -> Run:
    return Run(
        StageAnomalyDetector(),
        SupportContextDetector(),
        StageEscalationDetector(),
        policy=agents_policy("closer", pause=pause, stage_anomaly=settings),
    )


def deal(rid, stage, at, by="closer", kind=AGENT, source="hubspot", field=None, related=((CO, "42"),), **kw):
    field = field or {"hubspot": "dealstage", "salesforce": "StageName", "pipedrive": "stage_id"}[source]
    return event(
        rid, {field: stage}, at=at, by=by, kind=kind, source=source, object_type=DEAL, related=related, **kw
    )


def reasons(r: Run, severity: str | None = None) -> list[str]:
    return [f.group for f in r.of("stage_anomaly", severity)]


def test_shipped_pipelines_are_the_vendor_defaults():
    hub = DEFAULT_PIPELINES["hubspot"]["default"]
    assert hub.stages[0] == "appointmentscheduled" and hub.won == ["closedwon"] and hub.lost == ["closedlost"]
    sf = DEFAULT_PIPELINES["salesforce"]["default"]
    assert sf.stages[4] == "Id. Decision Makers" and sf.won == ["Closed Won"]
    assert DEFAULT_PIPELINES["pipedrive"]["1"].stages == ["1", "2", "3", "4", "5"]


def test_skip_boundary_one_skipped_is_fine_two_is_a_skip():
    r = run()
    r.feed(deal("1", "appointmentscheduled", 0, by="rep", kind=HUMAN))
    r.feed(deal("1", "presentationscheduled", H))  # skips qualifiedtobuy only
    assert reasons(r) == []
    r.feed(deal("2", "appointmentscheduled", 0, by="rep", kind=HUMAN))
    r.feed(deal("2", "decisionmakerboughtin", H))  # skips two
    (f,) = r.of("stage_anomaly")
    assert f.group == "skip" and f.severity is Severity.WARNING and f.details["skipped"] == 2
    assert f.pause is False and f.agent == "closer"


def test_backwards_and_reopen():
    r = run()
    r.feed(deal("1", "contractsent", 0, by="rep", kind=HUMAN), deal("1", "qualifiedtobuy", H))
    r.feed(deal("2", "closedlost", 0, by="rep", kind=HUMAN), deal("2", "appointmentscheduled", H))
    assert reasons(r) == ["backwards", "backwards"]
    assert "reopened" in r.of("stage_anomaly")[1].summary


def test_closing_by_an_agent_but_not_by_a_human():
    r = run()
    r.feed(deal("1", "contractsent", 0, by="rep", kind=HUMAN), deal("1", "closedwon", H))
    r.feed(
        deal("2", "contractsent", 0, by="rep", kind=HUMAN), deal("2", "closedwon", H, by="rep", kind=HUMAN)
    )
    r.feed(
        deal("3", "appointmentscheduled", 0, by="rep", kind=HUMAN),
        deal("3", "closedwon", H, by="rep", kind=HUMAN),
    )
    assert reasons(r) == ["closing"]


def test_salesforce_labels_and_pipedrive_ids_and_status():
    r = run()
    r.feed(
        deal("006A", "Prospecting", 0, by="u1", kind=HUMAN, source="salesforce"),
        deal("006A", "Id. Decision Makers", H, source="salesforce"),
    )
    assert r.of("stage_anomaly")[-1].details["skipped"] == 3
    r.feed(deal("7", 2, 0, by="u1", kind=HUMAN, source="pipedrive"), deal("7", 1, H, source="pipedrive"))
    assert reasons(r)[-1] == "backwards"
    r.feed(event("7", {"status": "won"}, at=2 * H, by="closer", source="pipedrive", object_type=DEAL))
    assert reasons(r)[-1] == "closing"
    assert r.of("stage_anomaly")[-1].details["to"] == "won"


def test_policy_pipelines_override_and_unknown_stages_are_not_judged():
    custom = {
        "hubspot": {"renewals": {"stages": ["r1", "r2", "r3", "r4"], "won": ["renewed"], "lost": ["churned"]}}
    }
    r = run(pipelines=custom)
    r.feed(event("1", {"pipeline": "renewals", "dealstage": "r1"}, by="rep", kind=HUMAN, object_type=DEAL))
    r.feed(deal("1", "r4", H))
    assert reasons(r) == ["skip"] and r.of("stage_anomaly")[0].details["pipeline"] == "renewals"
    r.feed(deal("2", "12345", 0, by="rep", kind=HUMAN), deal("2", "67890", H))
    assert reasons(r) == ["skip"]
    settings = StageAnomalySettings.model_validate(
        {"pipelines": {"pipedrive": {"9": {"stages": [40, 41, 42]}}}}
    )
    assert resolve(settings, "pipedrive", None, "40", "42").pipeline == "9"


def test_owner_inactive_boundary_and_first_sight():
    r = run()
    r.feed(deal("1", "appointmentscheduled", 0, by="rep", kind=HUMAN))
    r.feed(deal("1", "qualifiedtobuy", 14 * D))  # exactly 14 days: not more than
    assert reasons(r) == []
    r.feed(deal("2", "appointmentscheduled", 0, by="rep", kind=HUMAN))
    r.feed(deal("2", "qualifiedtobuy", 14 * D + 1))
    (f,) = r.of("stage_anomaly")
    assert f.group == "owner_inactive" and f.severity is Severity.INFO
    r.feed(deal("3", "qualifiedtobuy", 30 * D))  # first time the guard sees the deal: unknown
    assert len(r.of("stage_anomaly")) == 1


def test_owner_inactive_means_the_deals_owner_when_events_tie_owners_to_users():
    """Salesforce: OwnerId is the user id commitUser names. Another rep's edits are not the
    owner's; the owner's are; a reassignment starts the new owner's clock."""
    r = run()
    sf = dict(source="salesforce", object_type=DEAL)
    r.feed(event("006A", {"StageName": "Prospecting", "OwnerId": "005000000000001AAA"}, by="005000000000009", kind=HUMAN, **sf))
    r.feed(event("006A", {"Amount": 5000}, at=10 * D, by="005000000000002AAA", kind=HUMAN, **sf))  # not the owner
    r.feed(deal("006A", "Qualification", 15 * D, source="salesforce"))
    (f,) = r.of("stage_anomaly")
    assert f.group == "owner_inactive" and "its owner (005000000000001AAA) did not touch it for 15 days" in f.summary
    assert f.details["owner"] == "005000000000001AAA" and f.details["owner_acted_at"] is not None

    r.feed(event("006B", {"StageName": "Prospecting", "OwnerId": "005000000000001AAA"}, by="005000000000009", kind=HUMAN, **sf))
    r.feed(event("006B", {"Amount": 5}, at=10 * D, by="005000000000001", kind=HUMAN, **sf))  # the owner (15-char id)
    r.feed(deal("006B", "Qualification", 15 * D, source="salesforce"))
    r.feed(event("006B", {"OwnerId": "005000000000003AAA"}, at=20 * D, by="005000000000009", kind=HUMAN, **sf))
    r.feed(deal("006B", "Needs Analysis", 30 * D, source="salesforce"))  # 10 days after the assignment
    assert len(r.of("stage_anomaly")) == 1


def test_hubspot_owners_are_tied_to_users_only_through_the_policy():
    """hubspot_owner_id is an owner id, sourceId a user id: unmapped, any human stands in."""
    def feed(r: Run) -> None:
        r.feed(event("9", {"dealstage": "appointmentscheduled", "hubspot_owner_id": "77"}, by="1001", kind=HUMAN,
                     object_type=DEAL))
        r.feed(event("9", {"amount": "10"}, at=10 * D, by="2002", kind=HUMAN, object_type=DEAL))  # another rep
        r.feed(deal("9", "qualifiedtobuy", 15 * D))

    unmapped = run()
    feed(unmapped)
    assert reasons(unmapped) == []  # a human acted 5 days ago, and 77 cannot be tied to a user
    mapped = run(owner_user_ids={"hubspot": {"77": "1001"}})
    feed(mapped)
    assert reasons(mapped) == ["owner_inactive"] and "its owner (77)" in mapped.of("stage_anomaly")[0].summary


def test_pipedrive_v1_owner_objects_and_v2_owner_ids():
    r = run()
    pd = dict(source="pipedrive", object_type=DEAL)
    r.feed(event("5", {"stage_id": 1, "user_id": {"id": 42, "name": "Ann"}}, by="7", kind=HUMAN, **pd))
    r.feed(event("5", {"value": 10}, at=D, by="42", kind=HUMAN, **pd))  # Ann, the owner
    r.feed(deal("5", 2, 16 * D, source="pipedrive"))
    assert [f.details.get("owner") for f in r.of("stage_anomaly")] == ["42"]
    assert "did not touch it for 15 days" in r.of("stage_anomaly")[0].summary
    r.feed(event("6", {"stage_id": 1, "owner_id": 42}, by="7", kind=HUMAN, **pd))
    r.feed(event("6", {"value": 10}, at=10 * D, by="42", kind=HUMAN, **pd))
    r.feed(deal("6", 2, 16 * D, source="pipedrive"))
    assert len(r.of("stage_anomaly")) == 1  # the owner acted 6 days before


def test_moves_after_support_with_no_sales_activity():
    r = run()
    r.feed(
        event(
            "t1",
            {"subject": "Login broken"},
            at=0,
            by="portal",
            kind=ActorKind.INTEGRATION,
            object_type=ObjectType.TICKET,
            operation="create",
            related=[(CO, "42")],
        )
    )
    r.feed(deal("1", "appointmentscheduled", 0, by="rep", kind=HUMAN, related=[(CO, "42")]))
    assert r.states["stage_support_context"]["hubspot/company/42"]["h"] == 0  # a deal edit is not sales
    r2 = run()
    r2.feed(deal("1", "appointmentscheduled", -D, by="rep", kind=HUMAN, related=[(CO, "42")]))
    r2.feed(
        event(
            "t1",
            {"subject": "Login broken"},
            at=0,
            by="portal",
            kind=ActorKind.INTEGRATION,
            object_type=ObjectType.TICKET,
            operation="create",
            related=[(CO, "42")],
        )
    )
    r2.feed(deal("1", "qualifiedtobuy", 2 * H, related=[(CO, "42")]))
    (f,) = r2.of("stage_anomaly")
    assert f.group == "after_support" and f.severity is Severity.WARNING
    assert f.details["account"] == "hubspot/company/42" and f.details["minutes_after_support"] == 120


def test_support_email_marker_on_the_contact_and_sales_activity_clears_it():
    r = run()
    r.feed(deal("1", "appointmentscheduled", -2 * D, by="rep", kind=HUMAN, related=[(CT, "5")]))
    r.feed(
        event(
            "e1",
            {"hs_email_to_email": "support@vendor.example", "hs_email_direction": "INCOMING_EMAIL"},
            at=0,
            by="mailbox",
            kind=ActorKind.AUTOMATION,
            object_type=ObjectType.ACTIVITY,
            operation="create",
            related=[(CT, "5")],
        )
    )
    r.feed(deal("1", "qualifiedtobuy", H, related=[(CT, "5")]))
    assert reasons(r) == ["after_support"]
    assert "support@" not in repr([f.to_dict() for f in r.findings])
    r.feed(
        event(
            "c1",
            {"hs_call_title": "Discovery call"},
            at=2 * H,
            by="rep",
            kind=HUMAN,
            object_type=ObjectType.ACTIVITY,
            operation="create",
            related=[(CT, "5")],
        )
    )
    r.feed(deal("1", "presentationscheduled", 3 * H, related=[(CT, "5")]))
    assert reasons(r) == ["after_support"]


def test_support_window_edge():
    r = run()
    r.feed(deal("1", "appointmentscheduled", -20 * D, by="rep", kind=HUMAN))
    r.feed(
        event(
            "t1",
            {"subject": "x"},
            at=0,
            by="portal",
            kind=ActorKind.INTEGRATION,
            object_type=ObjectType.TICKET,
            operation="create",
            related=[(CO, "42")],
        )
    )
    r.feed(deal("1", "qualifiedtobuy", 7 * D))  # exactly the window: support has left (t-7d, t]
    assert "after_support" not in reasons(r)
    r.feed(deal("1", "presentationscheduled", 7 * D - 1 + 2, related=[(CO, "42")]))
    assert "after_support" not in reasons(r)
    r2 = run()
    r2.feed(deal("1", "appointmentscheduled", -20 * D, by="rep", kind=HUMAN))
    r2.feed(
        event(
            "t1",
            {"subject": "x"},
            at=0,
            by="portal",
            kind=ActorKind.INTEGRATION,
            object_type=ObjectType.TICKET,
            operation="create",
            related=[(CO, "42")],
        )
    )
    r2.feed(deal("1", "qualifiedtobuy", 7 * D - 1))
    assert "after_support" in reasons(r2)


def test_escalation_to_critical_and_pause_after_three_deals():
    r = run()
    for i in range(3):
        r.feed(
            deal(str(i), "contractsent", 0, by="rep", kind=HUMAN), deal(str(i), "appointmentscheduled", H + i)
        )
    crit = r.of("stage_anomaly", "critical")
    assert len(crit) == 1 and crit[0].group == "repeated" and crit[0].pause is True
    assert crit[0].details["deals"] == 3
    # the same deal again adds no new escalation
    r.feed(deal("0", "contractsent", 2 * H))
    assert len(r.of("stage_anomaly", "critical")) == 1
    quiet = run(pause=False)
    for i in range(3):
        quiet.feed(
            deal(str(i), "contractsent", 0, by="rep", kind=HUMAN), deal(str(i), "appointmentscheduled", H + i)
        )
    assert quiet.of("stage_anomaly", "critical")[0].pause is False


def test_escalation_window_and_info_findings_do_not_count():
    r = run()
    for i in range(3):
        r.feed(
            deal(str(i), "contractsent", 0, by="rep", kind=HUMAN),
            deal(str(i), "appointmentscheduled", H + i * 12 * H),
        )
    assert r.of("stage_anomaly", "critical") == []
    r2 = run()
    for i in range(5):  # owner_inactive alone is info: never escalates
        r2.feed(
            deal(str(i), "appointmentscheduled", 0, by="rep", kind=HUMAN),
            deal(str(i), "qualifiedtobuy", 20 * D + i),
        )
    assert reasons(r2) == ["owner_inactive"] * 5 and r2.of("stage_anomaly", "critical") == []


def test_an_unregistered_writer_is_judged_but_never_escalated_and_known_integrations_are_not():
    """The case we start from had no policy: an AI agent nobody registered is `unknown`. Its wrong
    moves warn (it cannot be paused: nothing tells it to stop); a known integration's do not."""
    UNKNOWN, INTEGRATION = ActorKind.UNKNOWN, ActorKind.INTEGRATION
    r = run()
    r.feed(
        event("t1", {"subject": "Login broken"}, at=0, by="portal", kind=INTEGRATION,
              object_type=ObjectType.TICKET, operation="create", related=[(CO, "42")]),
    )
    for i in range(3):
        r.feed(deal(str(i), "contractsent", -D, by="rep", kind=HUMAN),
               deal(str(i), "appointmentscheduled", H + i, by="1850303", kind=UNKNOWN))
    assert reasons(r) == ["backwards", "after_support"] * 3
    first = r.of("stage_anomaly")[0]
    assert first.summary.startswith("unknown hubspot user 1850303 moved deal 0") and first.agent is None
    assert r.of("stage_anomaly", "critical") == []  # no escalation, no pause
    known = run()
    known.feed(deal("9", "contractsent", 0, by="rep", kind=HUMAN),
               deal("9", "appointmentscheduled", H, by="cpq-sync", kind=INTEGRATION))
    assert known.findings == []
    agents_only = run(watch_kinds=["agent"])
    agents_only.feed(deal("8", "contractsent", 0, by="rep", kind=HUMAN),
                     deal("8", "appointmentscheduled", H, by="1850303", kind=UNKNOWN))
    assert agents_only.findings == []


def test_humans_and_automation_never_flagged():
    r = run()
    r.feed(deal("1", "appointmentscheduled", 0, by="rep", kind=HUMAN))
    r.feed(deal("1", "contractsent", 30 * D, by="rep", kind=HUMAN))
    r.feed(deal("1", "appointmentscheduled", 31 * D, by="wf", kind=ActorKind.AUTOMATION))
    assert r.findings == []


def test_state_bounded_and_deterministic():
    def go() -> tuple[list[dict], Run]:
        r = run()
        r.feed(
            *[
                event(
                    f"t{c}",
                    {"subject": "x"},
                    by="portal",
                    kind=ActorKind.INTEGRATION,
                    at=c,
                    object_type=ObjectType.TICKET,
                    related=[(CO, str(c))],
                )
                for c in range(7)
            ]
        )
        for i in range(200):
            r.feed(
                deal(str(i), "appointmentscheduled", i * M, by="rep", kind=HUMAN, related=[(CO, str(i % 7))])
            )
            r.feed(deal(str(i), "contractsent", D + i * M, related=[(CO, str(i % 7))]))
        return [f.to_dict() for f in r.findings], r

    a, r = go()
    assert a == go()[0]
    assert len(r.states["stage_anomaly"]) == 200 and len(r.states["stage_support_context"]) == 7
    esc = r.states["stage_anomaly_escalation"]["closer"]["r"]
    assert len(esc) <= 64
    later = r.last_obs.event.occurred_at + 91 * D
    assert StageAnomalyDetector.compact(r.states["stage_anomaly"], later) == 200
    assert SupportContextDetector.compact(r.states["stage_support_context"], later) == 7


def test_stage_progress_is_shared_with_override():
    from detectors.pipelines_default import progress, stage_field, stage_value

    s = StageAnomalySettings()
    assert progress(s, "hubspot", None, "qualifiedtobuy", "contractsent") == 1
    assert progress(s, "hubspot", None, "contractsent", "closedlost") == 1  # closing: the end of the road
    assert progress(s, "hubspot", None, "closedwon", "contractsent") == -1  # reopening
    assert progress(s, "hubspot", None, "closedwon", "closedlost") == 0
    assert progress(s, "hubspot", None, "qualifiedtobuy", "mystery") is None
    assert progress(s, "salesforce", None, stage_value(" Closed Won "), stage_value("Prospecting")) == -1
    assert progress(s, "pipedrive", "1", stage_value(3), stage_value("2")) == -1
    own = StageAnomalySettings(
        pipelines={"hubspot": {"default": {"stages": ["b", "a"], "won": ["w"]}}},
        stage_fields={"hubspot": "st"},
    )
    assert progress(own, "hubspot", "default", "a", "b") == -1 and stage_field(own, "hubspot") == "st"
    assert stage_field(s, "salesforce") == "StageName" and stage_field(s, "acme") is None
