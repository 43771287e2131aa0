"""The proposal gate and the autonomy_breach rule for direct writes (detectors/gate.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from detectors.base import Observation, Prior
from detectors.events import Actor, ActorKind, ChangeEvent, FieldChange, ObjectType, SourceIdentity
from detectors.gate import AutonomyBreachDetector, Proposal, autonomy_breach, change_tier, decide, kind_of
from detectors.policy import AgentPolicy, Autonomy, Policy, Tier, VelocityCap
from detectors.trust import TrustModel

T0 = 1_700_000_000_000


def change(fields: dict[str, Any], *, agent: str = "enricher", obj: ObjectType = ObjectType.CONTACT,
           op: str = "update", at: int = T0) -> ChangeEvent:
    return ChangeEvent(
        event_id=f"ev-{at}", source="hubspot", source_event_id=f"s-{at}", occurred_at=at, object_type=obj,
        source_object_type=obj.value, record_id="101", operation=op,  # type: ignore[arg-type]
        changes=tuple(FieldChange(field=k, new=v) for k, v in fields.items()),
        actor=Actor(kind=ActorKind.AGENT, id=agent, identity=SourceIdentity(vendor="hubspot", app_id="9")),
    )


def proposal(fields: dict[str, Any], **kw: Any) -> Proposal:
    return Proposal(proposal_id="p1", agent=kw.pop("proposer", "enricher"), change=change(fields, **kw),
                    reason="found on LinkedIn", evidence={"url": "x"}, confidence=0.9, proposed_at=T0)


def make_policy(**agent: Any) -> Policy:
    return Policy(agents={"enricher": AgentPolicy(**agent)})


def test_defaults_low_tier_acts_medium_reviews() -> None:
    pol = make_policy()
    low = decide(proposal({"jobtitle": "CTO"}), pol, {})
    assert (low.action, low.tier, low.level) == ("act", Tier.LOW, Autonomy.ACT)
    assert low.trust == pytest.approx(0.3)
    medium = decide(proposal({"jobtitle": "CTO", "lifecyclestage": "lead"}), pol, {})
    assert (medium.action, medium.tier) == ("review", Tier.MEDIUM)
    assert "needs review" in medium.reason


def test_a_paused_agents_proposals_wait_for_a_person_whatever_its_autonomy() -> None:
    """A pause stops the agent's writes: proposals the gate would apply go to review instead,
    until it is resumed; out-of-scope proposals are still rejected."""
    pol = make_policy()
    held = decide(proposal({"jobtitle": "CTO"}), pol, {}, paused="mass_overwrite of utm_source")
    assert held.action == "review" and "enricher is paused (mass_overwrite of utm_source)" in held.reason
    assert decide(proposal({"jobtitle": "CTO"}), pol, {}, paused=None).action == "act"
    denied = decide(proposal({"jobtitle": "x"}, obj=ObjectType.DEAL), make_policy(allowed_object_types=["contact"]),
                    {}, paused="cap")
    assert denied.action == "reject"


def test_highest_tier_among_fields_decides() -> None:
    pol = make_policy(high_tier_allowed=True, autonomy={Tier.LOW: Autonomy.ACT, Tier.HIGH: Autonomy.PROPOSE})
    decision = decide(proposal({"jobtitle": "CTO", "email": "a@b.c"}), pol, {})
    assert decision.action == "review" and decision.tier is Tier.HIGH


def test_unknown_agent_and_mismatched_actor_are_rejected() -> None:
    pol = make_policy()
    assert decide(proposal({"jobtitle": "x"}, proposer="ghost"), pol, {}).violations == ("unknown_agent",)
    other = Policy(agents={"enricher": AgentPolicy(), "scorer": AgentPolicy()})
    mismatch = decide(proposal({"jobtitle": "x"}, proposer="scorer"), other, {})
    assert mismatch.action == "reject" and mismatch.violations == ("agent_mismatch",)


@pytest.mark.parametrize("agent_kw, fields, obj, violation", [
    ({"denied_fields": ["utm_*"]}, {"utm_source": "x"}, ObjectType.CONTACT, "utm_source:denied_field"),
    ({"allowed_fields": ["jobtitle"]}, {"city": "Oslo"}, ObjectType.CONTACT, "city:not_allowed_field"),
    ({}, {"dealstage": "closedwon"}, ObjectType.DEAL, "dealstage:high_tier_field"),
    ({"denied_object_types": ["deal"]}, {"dealname": "x"}, ObjectType.DEAL, "denied_object_type"),
    ({"allowed_object_types": ["contact"]}, {"name": "x"}, ObjectType.COMPANY, "not_allowed_object_type"),
])
def test_out_of_scope_is_rejected(agent_kw: dict, fields: dict, obj: ObjectType, violation: str) -> None:
    decision = decide(proposal(fields, obj=obj), make_policy(**agent_kw), {})
    assert decision.action == "reject"
    assert violation in decision.violations


def test_high_tier_allowed_by_name_is_in_scope() -> None:
    pol = make_policy(allowed_fields=["jobtitle", "dealstage"])
    decision = decide(proposal({"dealstage": "closedwon"}, obj=ObjectType.DEAL), pol, {})
    assert decision.action == "review" and decision.tier is Tier.HIGH


def test_velocity_cap_breach_rejects_at_the_exact_boundary() -> None:
    pol = make_policy(velocity_caps=[VelocityCap(max_records=10, window="1h")])
    cap = pol.caps_for("enricher")[0].name
    assert decide(proposal({"jobtitle": "x"}), pol, {}, velocity_counts={cap: 9}).action == "act"
    breach = decide(proposal({"jobtitle": "x"}), pol, {}, velocity_counts={cap: 10})
    assert breach.action == "reject" and breach.violations == (f"velocity_cap:{cap}",)


def test_velocity_cap_scoped_to_another_object_type_does_not_apply() -> None:
    pol = make_policy(velocity_caps=[VelocityCap(max_records=1, object_type=ObjectType.DEAL)])
    cap = pol.caps_for("enricher")[0].name
    assert decide(proposal({"jobtitle": "x"}), pol, {}, velocity_counts={cap: 5}).action == "act"


def test_trust_level_overrides_policy_autonomy() -> None:
    pol = make_policy(autonomy={Tier.MEDIUM: Autonomy.PROPOSE})
    state: dict = {}
    model = TrustModel()
    for i in range(20):
        model.record(state, pol, "enricher", Tier.MEDIUM, "approved", T0 - 1000 + i, f"a{i}")
    decision = decide(proposal({"lifecyclestage": "customer"}), pol, state)
    assert decision.action == "act" and decision.level is Autonomy.ACT and decision.trust > 0.8
    assert "(trust)" in decision.reason
    for i in range(3):
        model.record(state, pol, "enricher", Tier.MEDIUM, "override", T0 + i, f"o{i}")
    assert decide(proposal({"lifecyclestage": "customer"}), pol, state).action == "review"


def test_pins_win_over_trust_and_policy() -> None:
    pol = make_policy(pinned_autonomy={Tier.LOW: Autonomy.OBSERVE})
    decision = decide(proposal({"jobtitle": "x"}), pol, {})
    assert decision.action == "review" and "escalate" in decision.reason and "policy_pin" in decision.reason
    state: dict = {}
    TrustModel().pin(state, make_policy(), "enricher", Tier.MEDIUM, Autonomy.ACT, T0, by="ops")
    assert decide(proposal({"lifecyclestage": "x"}), make_policy(), state).action == "act"


def test_delete_and_merge_count_as_high_tier() -> None:
    pol = make_policy(autonomy={Tier.LOW: Autonomy.ACT, Tier.HIGH: Autonomy.PROPOSE})
    assert change_tier(change({}, op="delete"), pol) is Tier.HIGH
    assert decide(proposal({}, op="merge"), pol, {}).action == "review"


def test_kind_groups_by_object_and_fields() -> None:
    assert kind_of(change({"phone": 1, "jobtitle": 2})) == "contact.jobtitle+phone"
    assert kind_of(change({"firstname": "A"}, op="create")) == "contact.create"


def test_proposal_validation() -> None:
    data = proposal({"jobtitle": "x"}).model_dump(mode="json")
    assert Proposal.model_validate({**data, "proposed_at": "2023-11-14T22:13:20Z"}).proposed_at == T0
    with pytest.raises(ValidationError):
        Proposal.model_validate({**data, "proposed_at": "2023-11-14T22:13:20"})  # naive time
    with pytest.raises(ValidationError):
        Proposal.model_validate({**data, "confidence": 1.5})
    with pytest.raises(ValidationError):
        Proposal.model_validate({**data, "proposal_id": "trust:x"})


def obs(fields: dict[str, Any], priors: dict[str, Any] | None = None, **kw: Any) -> Observation:
    event = change(fields, **kw)
    return Observation(event=event, priors={
        f: (None if v is None else Prior(v, "u1", ActorKind.HUMAN, T0 - 1, "e0")) for f, v in (priors or {}).items()
    })


def test_autonomy_breach_on_direct_write_at_propose_level() -> None:
    pol = make_policy()
    finding = autonomy_breach(obs({"lifecyclestage": "customer"}), pol, {})
    assert finding is not None
    assert finding.detector == "autonomy_breach" and finding.severity.value == "warning"
    assert finding.agent == "enricher" and finding.details["tier"] == "medium"
    assert finding.details["level"] == "propose" and finding.group == "medium"
    assert finding.summary == ("agent enricher wrote medium-tier fields directly; its autonomy there is "
                               "propose, so it must propose them for review")


def test_no_breach_when_acting_is_allowed_or_nothing_changes() -> None:
    pol = make_policy()
    assert autonomy_breach(obs({"jobtitle": "CTO"}), pol, {}) is None
    assert autonomy_breach(obs({"lifecyclestage": "lead"}, priors={"lifecyclestage": "lead"}), pol, {}) is None


def test_out_of_scope_writes_are_left_to_protected_field() -> None:
    pol = make_policy(denied_fields=["lifecyclestage"])
    assert autonomy_breach(obs({"lifecyclestage": "x", "jobtitle": "y"}), pol, {}) is None
    assert autonomy_breach(obs({"amount": 5}, obj=ObjectType.DEAL), pol, {}) is None  # high tier: protected


def test_breach_uses_runtime_level_and_ignores_humans_and_unknown_agents() -> None:
    pol = make_policy()
    state: dict = {}
    TrustModel().pin(state, pol, "enricher", Tier.LOW, Autonomy.OBSERVE, T0 - 5, by="ops")
    found = autonomy_breach(obs({"jobtitle": "CTO"}), pol, state)
    assert found is not None and found.details["level"] == "observe" and found.details["level_source"] == "pin"
    assert autonomy_breach(obs({"lifecyclestage": "x"}, agent="stranger"), pol, {}) is None
    human = obs({"lifecyclestage": "x"})
    human.event = human.event.model_copy(update={"actor": Actor(kind=ActorKind.HUMAN, id="u1",
                                                               identity=SourceIdentity(vendor="hubspot"))})
    assert autonomy_breach(human, pol, {}) is None


def test_detector_wrapper_reads_shared_trust_state() -> None:
    state: dict = {}
    detector = AutonomyBreachDetector(state)
    pol = make_policy()
    assert detector.observe(obs({"jobtitle": "CTO"}), {}, pol) == []
    TrustModel().pin(state, pol, "enricher", Tier.LOW, Autonomy.PROPOSE, T0 - 5, by="ops")
    assert [f.detector for f in detector.observe(obs({"jobtitle": "CTO"}), {}, pol)] == ["autonomy_breach"]
