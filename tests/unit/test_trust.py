"""Trust calibration: the Beta posterior with decay, and the autonomy moves (detectors/trust.py)."""

from __future__ import annotations

import json

import pytest

from detectors.policy import AgentPolicy, Autonomy, Policy, Tier
from detectors.settings import TrustSettings
from detectors.trust import TrustModel

DAY = 86_400_000
T0 = 1_700_000_000_000


def policy(**agent: object) -> Policy:
    return Policy(agents={"enricher": AgentPolicy(**agent)})


def feed(model: TrustModel, state: dict, pol: Policy, outcomes: list[str], tier: Tier = Tier.HIGH,
         start: int = T0, step: int = 60_000, prefix: str = "o") -> list[dict]:
    events = []
    for i, outcome in enumerate(outcomes):
        update = model.record(state, pol, "enricher", tier, outcome, start + i * step, f"{prefix}{i}")  # type: ignore[arg-type]
        events.extend(update.events)
    return events


def test_trust_starts_at_0_3_for_every_tier() -> None:
    model = TrustModel()
    for tier in Tier:
        assert model.trust({}, "enricher", tier) == pytest.approx(0.3)
    snap = model.snapshot({}, policy(), "enricher")
    assert snap["tiers"]["high"]["trust"] == pytest.approx(0.3)
    assert snap["tiers"]["high"]["alpha"] == pytest.approx(0.6)
    assert snap["tiers"]["high"]["beta"] == pytest.approx(1.4)


def test_posterior_counts_approvals_modifications_and_failures() -> None:
    model, state, pol = TrustModel(), {}, policy()
    # Same timestamp: no decay between outcomes, so the formula is exact.
    for i, outcome in enumerate(["approved", "approved", "modified", "rejected", "override"]):
        model.record(state, pol, "enricher", Tier.MEDIUM, outcome, T0, f"x{i}")  # type: ignore[arg-type]
    alpha, beta = model.posterior(state, "enricher", Tier.MEDIUM, T0)
    assert alpha == pytest.approx(0.6 + 2 + 0.5)
    assert beta == pytest.approx(1.4 + 0.5 + 2)
    counts = model.snapshot(state, pol, "enricher", T0)["tiers"]["medium"]["counts"]
    assert counts == {"approved": 2, "modified": 1, "rejected": 1, "override": 1}


def test_evidence_fades_by_half_per_halflife_back_to_the_prior() -> None:
    model, state, pol = TrustModel(TrustSettings(halflife="10d")), {}, policy()
    for i in range(10):
        model.record(state, pol, "enricher", Tier.LOW, "approved", T0, f"a{i}")
    alpha_now, _ = model.posterior(state, "enricher", Tier.LOW, T0)
    alpha_later, beta_later = model.posterior(state, "enricher", Tier.LOW, T0 + 10 * DAY)
    assert alpha_now == pytest.approx(10.6)
    assert alpha_later == pytest.approx(0.6 + 5.0)
    assert beta_later == pytest.approx(1.4)
    assert model.trust(state, "enricher", Tier.LOW, T0 + 365 * DAY) == pytest.approx(0.3, abs=1e-6)
    # A new outcome after a halflife counts fully while the old ones count half.
    model.record(state, pol, "enricher", Tier.LOW, "rejected", T0 + 10 * DAY, "r1")
    alpha, beta = model.posterior(state, "enricher", Tier.LOW, T0 + 10 * DAY)
    assert (alpha, beta) == (pytest.approx(5.6), pytest.approx(2.4))


def test_out_of_order_outcome_counts_with_its_faded_weight() -> None:
    model, state, pol = TrustModel(TrustSettings(halflife="1d")), {}, policy()
    model.record(state, pol, "enricher", Tier.LOW, "approved", T0 + DAY, "late-ref")
    model.record(state, pol, "enricher", Tier.LOW, "override", T0, "early")
    _, beta = model.posterior(state, "enricher", Tier.LOW, T0 + DAY)
    assert beta == pytest.approx(1.4 + 0.5)


def test_redelivered_outcome_is_a_no_op() -> None:
    model, state, pol = TrustModel(), {}, policy()
    first = model.record(state, pol, "enricher", Tier.LOW, "approved", T0, "same")
    again = model.record(state, pol, "enricher", Tier.LOW, "approved", T0, "same")
    assert first.applied and not again.applied
    assert model.posterior(state, "enricher", Tier.LOW, T0)[0] == pytest.approx(1.6)


def test_promotion_to_act_after_20_approvals_above_80_percent() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.HIGH: Autonomy.PROPOSE}, high_tier_allowed=True)
    events = feed(model, state, pol, ["approved"] * 19)
    assert events == []
    assert model.level(state, pol, "enricher", Tier.HIGH) is Autonomy.PROPOSE
    events = feed(model, state, pol, ["approved"], start=T0 + 19 * 60_000, prefix="last")
    assert [(e["from"], e["to"], e["kind"]) for e in events] == [("propose", "act", "promotion")]
    assert events[0]["agent"] == "enricher" and events[0]["tier"] == "high" and events[0]["type"] == "autonomy"
    assert "20 approvals at 100 %" in events[0]["reason"]
    assert model.level(state, pol, "enricher", Tier.HIGH) is Autonomy.ACT
    snap = model.snapshot(state, pol, "enricher")
    assert snap["history"][-1]["to"] == "act" and "propose -> act" in snap["history"][-1]["line"]
    json.dumps(state)  # JSON-able, as the changelog needs


def test_no_promotion_at_or_below_80_percent() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.HIGH: Autonomy.PROPOSE})
    # 20 approvals and 5 rejections: 80 %, not above it (and trust 20.6/27 < 0.8).
    pattern = (["approved"] * 4 + ["rejected"]) * 5
    assert feed(model, state, pol, pattern) == []
    assert model.level(state, pol, "enricher", Tier.HIGH) is Autonomy.PROPOSE


def test_promotion_needs_trust_too_not_only_the_raw_rate() -> None:
    # Rate above 80 % but trust below the act threshold because of a strong pessimistic prior.
    model, state = TrustModel(TrustSettings(prior_strength=40)), {}
    pol = policy(autonomy={Tier.LOW: Autonomy.PROPOSE})
    assert feed(model, state, pol, ["approved"] * 20, tier=Tier.LOW) == []
    assert model.trust(state, "enricher", Tier.LOW, T0 + 20 * 60_000) < 0.8


def test_demotion_after_3_consecutive_overrides() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.LOW: Autonomy.ACT})
    feed(model, state, pol, ["approved"] * 30, tier=Tier.LOW)
    assert model.level(state, pol, "enricher", Tier.LOW) is Autonomy.ACT
    events = feed(model, state, pol, ["override", "override"], tier=Tier.LOW, start=T0 + DAY, prefix="ov")
    assert events == []
    events = feed(model, state, pol, ["override"], tier=Tier.LOW, start=T0 + DAY + 10 * 60_000, prefix="ov3")
    assert [(e["from"], e["to"], e["kind"]) for e in events] == [("act", "propose", "demotion")]
    assert "3 consecutive" in events[0]["reason"]
    assert model.level(state, pol, "enricher", Tier.LOW) is Autonomy.PROPOSE


def test_an_approval_breaks_the_run_of_failures_and_a_modification_does_not() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.LOW: Autonomy.ACT})
    feed(model, state, pol, ["approved"] * 30, tier=Tier.LOW)
    assert feed(model, state, pol, ["override", "override", "approved", "override", "rejected"], tier=Tier.LOW,
                start=T0 + DAY, prefix="a") == []
    events = feed(model, state, pol, ["modified", "override"], tier=Tier.LOW, start=T0 + 2 * DAY, prefix="b")
    assert [e["to"] for e in events] == ["propose"]


def test_demoted_agent_must_re_earn_20_approvals() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.LOW: Autonomy.PROPOSE})
    feed(model, state, pol, ["approved"] * 20, tier=Tier.LOW)
    feed(model, state, pol, ["override"] * 3, tier=Tier.LOW, start=T0 + DAY, prefix="ovr")
    assert model.level(state, pol, "enricher", Tier.LOW) is Autonomy.PROPOSE
    assert feed(model, state, pol, ["approved"] * 19, tier=Tier.LOW, start=T0 + 2 * DAY, prefix="p") == []
    events = feed(model, state, pol, ["approved"], tier=Tier.LOW, start=T0 + 3 * DAY, prefix="q")
    assert [e["to"] for e in events] == ["act"]


def test_act_demotes_when_trust_falls_below_the_propose_band() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.LOW: Autonomy.ACT})
    # alternating outcomes never make three failures in a row, but trust sinks under 0.5
    pattern = ["override", "approved", "rejected", "approved"] * 2 + ["override", "approved"]
    assert feed(model, state, pol, pattern[:9], tier=Tier.LOW) == []  # under 10 outcomes: no verdict yet
    events = feed(model, state, pol, pattern[9:], tier=Tier.LOW, start=T0 + DAY, prefix="tenth")
    assert events and events[0]["to"] == "propose" and "fell below" in events[0]["reason"]


def test_a_new_agent_at_act_is_not_demoted_by_one_early_override() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.LOW: Autonomy.ACT})
    assert feed(model, state, pol, ["override", "override"], tier=Tier.LOW) == []
    assert model.trust(state, "enricher", Tier.LOW, T0) < 0.2
    assert model.level(state, pol, "enricher", Tier.LOW) is Autonomy.ACT


def test_observe_promotes_to_propose_once_trust_reaches_0_5() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.MEDIUM: Autonomy.OBSERVE})
    assert model.level(state, pol, "enricher", Tier.MEDIUM) is Autonomy.OBSERVE
    assert feed(model, state, pol, ["approved", "approved"], tier=Tier.MEDIUM) == []
    events = feed(model, state, pol, ["approved"], tier=Tier.MEDIUM, start=T0 + DAY, prefix="z")
    assert [(e["from"], e["to"]) for e in events] == [("observe", "propose")]


def test_runtime_pin_freezes_the_level_and_unpin_restores_it() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.LOW: Autonomy.ACT})
    event = model.pin(state, pol, "enricher", Tier.LOW, Autonomy.OBSERVE, T0, by="ops", reason="incident 42")
    assert event["kind"] == "pin" and event["to"] == "observe" and event["by"] == "ops"
    assert model.level_and_source(state, pol, "enricher", Tier.LOW) == (Autonomy.OBSERVE, "pin")
    assert feed(model, state, pol, ["override"] * 5, tier=Tier.LOW, start=T0 + 1) == []
    model.pin(state, pol, "enricher", Tier.LOW, None, T0 + DAY, by="ops")
    # the managed level did not move while pinned
    assert model.level_and_source(state, pol, "enricher", Tier.LOW) == (Autonomy.ACT, "trust")
    assert [h["kind"] for h in model.snapshot(state, pol, "enricher")["history"]] == ["pin", "pin"]


def test_policy_pin_wins_over_trust() -> None:
    model, state = TrustModel(), {}
    pol = policy(autonomy={Tier.LOW: Autonomy.PROPOSE}, pinned_autonomy={Tier.LOW: Autonomy.PROPOSE})
    assert feed(model, state, pol, ["approved"] * 30, tier=Tier.LOW) == []
    assert model.level_and_source(state, pol, "enricher", Tier.LOW) == (Autonomy.PROPOSE, "policy_pin")


def test_policy_level_change_restarts_the_managed_level() -> None:
    model, state = TrustModel(), {}
    before = policy(autonomy={Tier.LOW: Autonomy.ACT})
    feed(model, state, before, ["override"] * 3, tier=Tier.LOW)
    assert model.level(state, before, "enricher", Tier.LOW) is Autonomy.PROPOSE
    after = policy(autonomy={Tier.LOW: Autonomy.OBSERVE})
    assert model.level_and_source(state, after, "enricher", Tier.LOW) == (Autonomy.OBSERVE, "policy")


def test_history_is_bounded() -> None:
    model, state = TrustModel(TrustSettings(history_limit=3)), {}
    pol = policy()
    for i in range(6):
        model.pin(state, pol, "enricher", Tier.LOW, Autonomy.OBSERVE if i % 2 else None, T0 + i, by="ops")
    assert len(state["enricher"]["history"]) == 3
