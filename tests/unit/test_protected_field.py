"""protected_field: denied fields, allowed lists, high tier, object types; creates and no-ops."""

from __future__ import annotations

from detectors.events import ActorKind, ObjectType
from detectors.policy import Policy
from detectors.protected_field import ProtectedFieldDetector
from tests.unit.helpers_events import Run, event


def policy(**agent: object) -> Policy:
    return Policy.model_validate(
        {"agents": {"bot": {"identities": [{"vendor": "hubspot", "app_id": "1"}], **agent}}}
    )


def test_high_tier_field_is_protected_by_default() -> None:
    run = Run(ProtectedFieldDetector(), policy=policy())
    found = run.feed(event(1, {"utm_source": "enriched"}, by="bot"))
    assert [(f.group, f.details["reason"], f.pause) for f in found] == [
        ("utm_source", "high_tier_field", True)
    ]


def test_low_tier_field_is_fine_and_explicit_denial_wins() -> None:
    run = Run(ProtectedFieldDetector(), policy=policy(denied_fields=["jobtitle"]))
    assert run.feed(event(1, {"phone": "1"}, by="bot")) == []
    assert run.feed(event(1, {"jobtitle": "CEO"}, by="bot"))[0].details["reason"] == "denied_field"


def test_allowed_fields_list_restricts_everything_else() -> None:
    run = Run(ProtectedFieldDetector(), policy=policy(allowed_fields=["jobtitle", "phone"]))
    assert run.feed(event(1, {"jobtitle": "CTO"}, by="bot")) == []
    assert run.feed(event(1, {"city": "Oslo"}, by="bot"))[0].details["reason"] == "not_allowed_field"


def test_high_tier_allowed_agent_may_write_commission_inputs() -> None:
    run = Run(ProtectedFieldDetector(), policy=policy(high_tier_allowed=True))
    assert run.feed(event(1, {"amount": "100"}, by="bot", object_type=ObjectType.DEAL)) == []


def test_denied_object_type() -> None:
    run = Run(ProtectedFieldDetector(), policy=policy(denied_object_types=["deal"]))
    found = run.feed(event(1, {"dealname": "x"}, by="bot", object_type=ObjectType.DEAL))
    assert found[0].details["reason"] == "denied_object_type"


def test_creates_count_only_explicit_denials_and_no_ops_are_ignored() -> None:
    run = Run(ProtectedFieldDetector(), policy=policy(denied_fields=["hs_lead_status"]))
    assert run.feed(event(5, {"email": "a@b.c", "firstname": "A"}, by="bot", operation="create")) == []
    assert len(run.feed(event(6, {"hs_lead_status": "NEW"}, by="bot", operation="create"))) == 1
    run.feed(event(7, {"utm_source": "google"}, by="ann", kind=ActorKind.HUMAN))
    assert run.feed(event(7, {"utm_source": "google"}, by="bot", at=5)) == []


def test_unknown_agents_and_humans_are_not_checked_here() -> None:
    run = Run(ProtectedFieldDetector(), policy=policy())
    assert run.feed(event(1, {"utm_source": "x"}, by="ghost")) == []
    assert run.feed(event(1, {"utm_source": "y"}, by="ann", kind=ActorKind.HUMAN)) == []


def test_hubspot_creation_then_property_changes_by_the_creator_are_part_of_the_creation() -> None:
    # HubSpot: contact.creation, then one propertyChange per property, milliseconds apart
    run = Run(ProtectedFieldDetector(), policy=policy(allowed_fields=["email", "firstname"]))
    assert run.feed(event(5, {}, by="bot", operation="create")) == []
    assert run.feed(event(5, {"email": "a@b.c"}, by="bot", at=1)) == []
    assert run.feed(event(5, {"lifecyclestage": "lead"}, by="bot", at=2)) == []  # not allowed, but creating
    assert run.feed(event(5, {"utm_source": "form"}, by="bot", at=60_000)) == []  # high tier, at the edge
    # one millisecond past the window it is an update of its own record, judged as such
    late = run.feed(event(5, {"utm_source": "web"}, by="bot", at=60_001))
    assert [f.details["reason"] for f in late] == ["not_allowed_field"]


def test_creation_window_is_only_for_the_creator_its_record_and_never_for_denials() -> None:
    run = Run(
        ProtectedFieldDetector(),
        policy=Policy.model_validate(
            {
                "agents": {
                    "bot": {
                        "identities": [{"vendor": "hubspot", "app_id": "1"}],
                        "denied_fields": ["hs_lead_status"],
                    },
                    "other": {"identities": [{"vendor": "hubspot", "app_id": "2"}]},
                }
            }
        ),
    )
    run.feed(event(5, {}, by="bot", operation="create"))
    assert run.feed(event(6, {"utm_source": "x"}, by="bot", at=10))[0].details["reason"] == "high_tier_field"
    assert (
        run.feed(event(5, {"utm_source": "x"}, by="other", at=10))[0].details["reason"] == "high_tier_field"
    )
    assert (
        run.feed(event(5, {"hs_lead_status": "NEW"}, by="bot", at=10))[0].details["reason"] == "denied_field"
    )
    # a property change delivered before its creation cannot know a creation follows
    assert run.feed(event(7, {"utm_source": "x"}, by="bot", at=100))


def test_creation_window_is_configurable_and_state_stays_bounded() -> None:
    strict = Policy.model_validate(
        {
            "agents": {"bot": {"identities": [{"vendor": "hubspot", "app_id": "1"}]}},
            "detectors": {"protected_field": {"creation_window": "0", "max_recent_creations": 10}},
        }
    )
    run = Run(ProtectedFieldDetector(), policy=strict)
    run.feed(event(5, {}, by="bot", operation="create"))
    assert run.feed(event(5, {"utm_source": "x"}, by="bot")) == []  # same millisecond: still the creation
    assert run.feed(event(5, {"utm_source": "y"}, by="bot", at=1))
    run.feed(*[event(100 + i, {}, by="bot", at=2 + i, operation="create") for i in range(30)])
    assert len(run.states["protected_field"]["bot"]["c"]) <= 10
    loose = Run(ProtectedFieldDetector(), policy=policy())
    loose.feed(*[event(100 + i, {}, by="bot", at=i * 30_000, operation="create") for i in range(30)])
    assert len(loose.states["protected_field"]["bot"]["c"]) <= 3  # older than a minute: dropped
    assert loose.states["protected_field"].keys() == {"bot"}


UTM_KEY = "614c9a83f625649313691b3ed6400cd0dacc32a7"  # a Pipedrive custom field key


def labelled(**agent: object) -> Policy:
    return Policy.model_validate({
        "agents": {"bot": {"identities": [{"vendor": "pipedrive", "user_id": "1"}], **agent}},
        "field_labels": {"pipedrive": {UTM_KEY: "UTM source"}},
    })


def test_a_pipedrive_custom_field_is_judged_and_named_by_its_label() -> None:
    pol = labelled()
    assert pol.tier_of("pipedrive", UTM_KEY).value == "high"  # shipped `utm_*` matches `utm_source`
    assert Policy().tier_of("pipedrive", UTM_KEY).value == "low"  # without the label: an unknown field
    run = Run(ProtectedFieldDetector(), policy=pol)
    found = run.feed(event(1, {UTM_KEY: "enriched"}, by="bot", source="pipedrive"))
    assert [(f.details["reason"], f.details["field"]) for f in found] == [("high_tier_field", UTM_KEY)]
    assert "wrote protected field UTM source (high_tier_field)" in found[0].summary


def test_denied_and_allowed_patterns_match_labels_too() -> None:
    run = Run(ProtectedFieldDetector(), policy=labelled(high_tier_allowed=True, denied_fields=["utm_*"]))
    assert run.feed(event(1, {UTM_KEY: "x"}, by="bot", source="pipedrive"))[0].details["reason"] == "denied_field"
    run = Run(ProtectedFieldDetector(), policy=labelled(allowed_fields=["utm_source"]))
    assert run.feed(event(1, {UTM_KEY: "x"}, by="bot", source="pipedrive")) == []
