"""override_rate: overrides per change per agent and tier, minimum count, baseline, ceiling, window."""

from __future__ import annotations

from detectors.base import Finding, Severity
from detectors.events import ActorKind
from detectors.override import OverrideDetector
from detectors.override_rate import DAY_MS, OverrideRateDetector
from detectors.policy import Policy
from tests.unit.helpers_events import HUMAN, T0, H, M, Run, agents_policy, event

DAY0 = T0 // DAY_MS * DAY_MS + DAY_MS  # a day boundary after T0


def override(at: int, n: int, tier: str = "low", agent: str = "enricher", field: str = "jobtitle") -> Finding:
    return Finding(
        detector="override",
        severity=Severity.INFO,
        actor_key=agent,
        actor_kind=ActorKind.AGENT,
        agent=agent,
        event_id=f"h{at}-{n}",
        occurred_at=at,
        record_key=f"hubspot/contact/{n}",
        object_type="contact",
        summary="override",
        group=field,
        details={"tier": tier},
    )


def agent_changes(
    det: OverrideRateDetector,
    state: dict,
    policy: Policy,
    at: int,
    n: int,
    field: str = "jobtitle",
    start: int = 0,
) -> None:
    r = Run(det, policy=policy)
    r.states["override_rate"] = state
    r.feed(*[event(f"c{start + i}", {field: f"v{start + i}"}, at=at - T0 + i) for i in range(n)])


def test_minimum_overrides_then_rate_over_min_rate():
    det, state, policy = OverrideRateDetector(), {}, Policy()
    agent_changes(det, state, policy, DAY0, 20)
    out = [f for i in range(4) for f in det.on_finding(override(DAY0 + H + i, i), state, policy)]
    assert out == []  # 4 overrides: below min_overrides even at 20 %
    (f,) = det.on_finding(override(DAY0 + H + 4, 4), state, policy)
    assert f.detector == "override_rate" and f.severity is Severity.WARNING and f.pause is False
    assert f.group == "low" and f.details["overrides"] == 5 and f.details["changes"] == 20
    assert f.actor_key == "enricher"


def test_rate_at_or_below_min_rate_is_quiet():
    det, state, policy = OverrideRateDetector(), {}, Policy()
    agent_changes(det, state, policy, DAY0, 25)
    out = [f for i in range(5) for f in det.on_finding(override(DAY0 + H + i, i), state, policy)]
    assert out == []  # 5/25 = 0.2, not above


def test_tiers_are_separate():
    det, state, policy = OverrideRateDetector(), {}, Policy()
    agent_changes(det, state, policy, DAY0, 10, field="utm_source")
    agent_changes(det, state, policy, DAY0 + 1000, 100, field="jobtitle", start=10)
    out = [f for i in range(6) for f in det.on_finding(override(DAY0 + H + i, i, tier="low"), state, policy)]
    assert out == []  # 6/100 low-tier
    out = [
        f
        for i in range(5)
        for f in det.on_finding(
            override(DAY0 + H + 10 + i, 10 + i, tier="high", field="utm_source"), state, policy
        )
    ]
    assert out and out[-1].group == "high"


def test_baseline_raises_the_bar_up_to_the_ceiling():
    det, state, policy = OverrideRateDetector(), {}, Policy()
    for day in range(30):  # an agent people override 30 % of the time, every day
        t = DAY0 + day * DAY_MS
        agent_changes(det, state, policy, t, 20, start=day * 100)
        for i in range(6):
            det.on_finding(override(t + H + i, day * 100 + i), state, policy)
    assert 0.25 < state["enricher"]["b"]["low"] < 0.31
    t = DAY0 + 31 * DAY_MS
    state["enricher"]["o"] = {}
    state["enricher"]["c"] = {}
    agent_changes(det, state, policy, t, 20, start=9000)
    out = [f for i in range(8) for f in det.on_finding(override(t + H + i, 9000 + i), state, policy)]
    assert out == []  # 40 % <= min(2 x 0.3, 0.5)
    out = [f for i in range(8, 12) for f in det.on_finding(override(t + H + i, 9000 + i), state, policy)]
    assert out and out[0].details["rate"] > 0.5 and out[0].details["threshold"] == 0.5


def test_window_forgets_old_overrides():
    det, state, policy = OverrideRateDetector(), {}, Policy()
    agent_changes(det, state, policy, DAY0, 10)
    for i in range(4):
        det.on_finding(override(DAY0 + H + i, i), state, policy)
    later = DAY0 + 8 * DAY_MS
    agent_changes(det, state, policy, later, 10, start=100)
    assert det.on_finding(override(later + H, 100), state, policy) == []
    assert all(int(h) > later // H - 168 for h in state["enricher"]["o"]["low"])


def test_redelivered_override_and_humans_are_not_counted():
    det, state, policy = OverrideRateDetector(), {}, Policy()
    agent_changes(det, state, policy, DAY0, 10)
    f = override(DAY0 + H, 1)
    for _ in range(6):
        det.on_finding(f, state, policy)
    assert sum(state["enricher"]["o"]["low"].values()) == 1
    r = Run(det, policy=policy)
    r.feed(event("9", {"jobtitle": "x"}, by="rep", kind=HUMAN))
    assert r.states["override_rate"] == {}


def test_end_to_end_with_the_override_detector():
    r = Run(OverrideDetector(), OverrideRateDetector(), policy=agents_policy("enricher"))
    for i in range(10):
        r.feed(event(str(i), {"jobtitle": "Engineer"}, at=i, by="rep", kind=HUMAN))
        r.feed(event(str(i), {"jobtitle": "CTO"}, at=H + i * M))
    for i in range(5):
        r.feed(event(str(i), {"jobtitle": "Engineer"}, at=2 * H + i * M, by="rep", kind=HUMAN))
    assert len(r.of("override")) == 5
    (f,) = r.of("override_rate")
    assert f.details["rate"] == 0.5 and f.agent == "enricher"


def test_state_bounded_over_months():
    det, state, policy = OverrideRateDetector(), {}, Policy()
    for day in range(60):
        t = DAY0 + day * DAY_MS
        for hour in range(0, 24, 3):
            agent_changes(det, state, policy, t + hour * H, 2, start=day * 1000 + hour * 10)
            det.on_finding(override(t + hour * H + 5, day * 1000 + hour), state, policy)
    entry = state["enricher"]
    assert len(entry["c"]["low"]) <= 168 and len(entry["o"]["low"]) <= 168 and len(entry["e"]) <= 64


def test_deterministic():
    def go() -> list[dict]:
        det, state, policy = OverrideRateDetector(), {}, Policy()
        agent_changes(det, state, policy, DAY0, 15)
        return [
            f.to_dict() for i in range(10) for f in det.on_finding(override(DAY0 + H + i, i), state, policy)
        ]

    assert go() == go() and go()


def test_reps_moving_deals_on_after_the_agent_are_not_overrides_but_moving_them_back_are():
    from detectors.events import ObjectType

    def deal(rid: int, stage: str, at: int, **kw) -> object:
        return event(str(rid), {"dealstage": stage}, at=at, object_type=ObjectType.DEAL, **kw)

    def week(back: bool) -> Run:
        r = Run(OverrideDetector(), OverrideRateDetector(), policy=agents_policy("enricher"))
        for i in range(20):  # the agent moves 20 deals a stage on; reps then act on 6 of them
            r.feed(deal(i, "qualifiedtobuy", i * M, by="rep", kind=HUMAN))
            r.feed(deal(i, "presentationscheduled", H + i * M))
        for i in range(6):
            later = "qualifiedtobuy" if back else ("closedwon" if i % 2 else "decisionmakerboughtin")
            r.feed(deal(i, later, 5 * H + i * M, by="rep", kind=HUMAN))
        return r

    forward = week(back=False)
    assert forward.of("override") == [] and forward.of("override_rate") == []
    backward = week(back=True)
    assert len(backward.of("override")) == 6
    assert backward.of("override_rate")[0].details["rate"] == 0.25  # 5 of 20 on the fifth revert


def test_one_warning_per_episode_then_evidence_until_the_rate_falls_back():
    det, state, policy = OverrideRateDetector(), {}, Policy()
    agent_changes(det, state, policy, DAY0, 20)
    first = [f for i in range(8) for f in det.on_finding(override(DAY0 + H + i, i), state, policy)]
    assert [f.severity for f in first] == [Severity.WARNING, Severity.INFO, Severity.INFO, Severity.INFO]
    assert "still above" in first[-1].summary
    # a week later the incident's overrides have left the window; normal work, one override: re-armed
    later = DAY0 + 8 * DAY_MS
    agent_changes(det, state, policy, later, 40, start=100)
    assert det.on_finding(override(later + H, 100), state, policy) == []
    assert "low" not in state["enricher"]["a"]
    # a new episode warns again
    again = [
        f for i in range(1, 12) for f in det.on_finding(override(later + 2 * H + i, 100 + i), state, policy)
    ]
    assert again and again[0].severity is Severity.WARNING
    assert [f.severity for f in again].count(Severity.WARNING) == 1
