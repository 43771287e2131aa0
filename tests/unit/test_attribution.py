"""Attribution: agents first, then human/automation/import rules, then vendor hints, else unknown."""

from __future__ import annotations

from detectors.attribution import Attributor
from detectors.events import Actor, ActorKind, ChangeEvent, ObjectType, SourceIdentity
from tests.unit.test_policy import FULL
from app.policy_file import parse_policy


def hinted(kind: ActorKind, **identity: str) -> ChangeEvent:
    ident = SourceIdentity(**identity)
    return ChangeEvent(
        event_id="e", source=ident.vendor, source_event_id="e", occurred_at=0, object_type=ObjectType.CONTACT,
        source_object_type="contact", record_id="1", operation="update",
        actor=Actor(kind=kind, id=ident.user_id or ident.app_id or "?", identity=ident),
    )


def test_agent_identities_per_vendor() -> None:
    attributor = Attributor(parse_policy(FULL))
    hub = attributor.attribute(hinted(ActorKind.UNKNOWN, vendor="hubspot", change_source="INTEGRATION", app_id="4242"))
    sf = attributor.attribute(hinted(ActorKind.UNKNOWN, vendor="salesforce", user_id="005xx0000012345", app_id="EnrichBot"))
    pd = attributor.attribute(hinted(ActorKind.UNKNOWN, vendor="pipedrive", user_id="12345", change_source="API"))
    assert {(e.actor.kind, e.actor.id) for e in (hub, sf, pd)} == {(ActorKind.AGENT, "enrich-bot")}
    assert hub.actor.identity.app_id == "4242"  # the raw identity is kept


def test_rules_then_hints_then_unknown() -> None:
    attributor = Attributor(parse_policy(FULL))
    wf = attributor.attribute(hinted(ActorKind.UNKNOWN, vendor="hubspot", change_source="WORKFLOWS", app_id="9"))
    assert wf.actor.kind is ActorKind.AUTOMATION
    human = attributor.attribute(hinted(ActorKind.HUMAN, vendor="salesforce", user_id="005A"))
    assert human.actor.kind is ActorKind.HUMAN and human.actor.id == "005A"
    other_app = attributor.attribute(hinted(ActorKind.UNKNOWN, vendor="hubspot", change_source="INTEGRATION", app_id="777"))
    assert other_app.actor.kind is ActorKind.UNKNOWN and other_app.actor.id == "777"
    forged_hint = attributor.attribute(hinted(ActorKind.AGENT, vendor="pipedrive", user_id="1", change_source="api"))
    assert forged_hint.actor.kind is ActorKind.UNKNOWN  # only the policy names agents
