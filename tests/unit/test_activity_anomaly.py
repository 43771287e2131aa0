"""activity_anomaly: warm-up, sustained high scores, benign traffic silent, snapshot/restore."""

from __future__ import annotations

import json
import random

import pytest

from detectors.activity_anomaly import ActivityAnomalyDetector, window_features
from detectors.base import Severity
from tests.unit.helpers_events import HUMAN, T0, D, H, M, Run, agents_policy, event

DAY0 = (T0 // D + 1) * D - T0  # offset of the next UTC midnight from T0
W = 5 * M


def benign_day(rng: random.Random, day: int, by: str = "enricher") -> list:
    """An enrichment agent's working day, 09:00-17:00 UTC: a few fills per 5 minutes."""
    out = []
    for w in range(96):
        start = DAY0 + day * D + 9 * H + w * W
        for i in range(rng.randint(3, 20)):
            rid = f"c{day}-{w}-{rng.randint(0, 8)}"
            field = rng.choice(["jobtitle", "city", "industry", "website"])
            out.append(event(rid, {field: f"v{rng.randint(0, 9)}"}, at=start + i * 10_000, by=by))
    return out


def burst_windows(day: int, hour: int, windows: int, by: str = "enricher") -> list:
    """Many overwrites of a high-tier field on many records, per 5-minute window."""
    out = []
    for w in range(windows):
        start = DAY0 + day * D + hour * H + w * W
        for i in range(150):
            out.append(event(f"b{w}-{i}", {"utm_source": "enriched"}, at=start + i * 1000, by=by))
    return out


def seed_priors(day: int, windows: int) -> list:
    """Humans set the utm_source values the burst will overwrite."""
    return [
        event(f"b{w}-{i}", {"utm_source": "google"}, at=DAY0 + day * D + 30 * M, by="rep", kind=HUMAN)
        for w in range(windows)
        for i in range(150)
    ]


def warmed(days: int = 3) -> Run:
    rng = random.Random(7)  # noqa: S311 - test data
    r = Run(ActivityAnomalyDetector(), policy=agents_policy("enricher"))
    for day in range(days):
        r.feed(*benign_day(rng, day))
    return r


def test_benign_days_stay_silent_and_warm_up_counts_windows():
    r = warmed(4)
    assert r.of("activity_anomaly") == []
    det: ActivityAnomalyDetector = r.detectors[0]
    assert det._models["enricher"].learned >= 4 * 96 - 4


def test_sustained_burst_warns_on_the_third_window():
    r = warmed()
    r.feed(*seed_priors(3, 3))
    r.feed(*burst_windows(3, 10, 3))
    assert r.of("activity_anomaly") == []  # two windows closed so far: streak 2
    third_end = DAY0 + 3 * D + 10 * H + 3 * W
    r.feed(event("next", {"city": "x"}, at=third_end + 2 * M - 1))  # the third still waits for late events
    assert r.of("activity_anomaly") == []
    r.feed(event("later", {"city": "x"}, at=third_end + 2 * M))  # 2 min (allowed_lateness) past it: closed
    (f,) = r.of("activity_anomaly")
    assert f.severity is Severity.WARNING and f.pause is False and f.agent == "enricher"
    assert f.details["streak"] == 3 and f.details["changes"] == 150
    assert f.details["overwrite_share"] == 1.0 and f.details["high_tier_share"] == 1.0
    assert f.record_key.startswith("hubspot/contact/b2-")


def test_two_anomalous_windows_are_not_sustained():
    r = warmed()
    r.feed(*seed_priors(3, 2))
    r.feed(*burst_windows(3, 10, 2))
    r.feed(*benign_day(random.Random(3), 4))  # noqa: S311
    assert r.of("activity_anomaly") == []


def test_no_scores_during_warm_up():
    r = Run(ActivityAnomalyDetector(), policy=agents_policy("enricher"))
    r.feed(*seed_priors(0, 5))
    r.feed(*burst_windows(0, 10, 5))
    r.feed(event("late", {"city": "x"}, at=DAY0 + 11 * H))
    assert r.of("activity_anomaly") == []


def test_humans_are_not_modelled():
    r = Run(ActivityAnomalyDetector(), policy=agents_policy("enricher"))
    r.feed(*[event(str(i), {"city": "x"}, at=i * M, by="rep", kind=HUMAN) for i in range(30)])
    assert r.states["activity_anomaly"] == {} and r.detectors[0].agents() == []


def test_flush_closes_an_idle_window():
    r = warmed()
    r.feed(*seed_priors(3, 3))
    r.feed(*burst_windows(3, 10, 3))
    det: ActivityAnomalyDetector = r.detectors[0]
    state = r.states["activity_anomaly"]
    assert (
        det.flush("enricher", T0 + DAY0 + 3 * D + 10 * H + 3 * W - 1, state, r.policy) == []
    )  # not over yet
    (f,) = det.flush("enricher", T0 + DAY0 + 3 * D + 10 * H + 3 * W, state, r.policy)
    assert f.details["streak"] == 3
    assert det.flush("enricher", T0 + DAY0 + 4 * D, state, r.policy) == []  # empty window: nothing to score


def test_redelivery_not_counted_twice_and_state_is_json_and_bounded():
    r = Run(ActivityAnomalyDetector(), policy=agents_policy("enricher"))
    r.feed(*[event(f"r{i}", {f"f{i % 300}": "x"}, at=i) for i in range(3000)])
    det: ActivityAnomalyDetector = r.detectors[0]
    state = r.states["activity_anomaly"]
    (window,) = state["enricher"]["o"]
    before = window["n"]
    det.observe(r.last_obs, state, r.policy)
    assert state["enricher"]["o"][0]["n"] == before == 3000
    assert len(window["r"]) == 2000 and len(window["f"]) == 256 and len(state["enricher"]["e"]) == 64
    json.dumps(state)
    assert window_features(window, r.policy.detectors.activity_anomaly)["distinct_records"] == 2000


def test_snapshot_restore_gives_the_same_findings():
    r = warmed()
    det: ActivityAnomalyDetector = r.detectors[0]
    blob = det.snapshot("enricher")
    assert isinstance(blob, bytes) and det.snapshot("nobody") is None
    twin = ActivityAnomalyDetector()
    twin.restore("enricher", blob)
    twin_state = json.loads(json.dumps(r.states["activity_anomaly"]))
    tail = (
        seed_priors(3, 3) + burst_windows(3, 10, 3) + [event("late", {"city": "x"}, at=DAY0 + 3 * D + 11 * H)]
    )
    r2 = Run(twin, policy=r.policy)
    r2.states["activity_anomaly"] = twin_state
    r2.states["record_state"] = json.loads(json.dumps(r.states["record_state"]))
    a = [f.to_dict() for f in r.feed(*tail)]
    b = [f.to_dict() for f in r2.feed(*tail)]
    assert a and a == b


def test_deterministic():
    def go() -> list[dict]:
        r = warmed()
        r.feed(*seed_priors(3, 4))
        r.feed(*burst_windows(3, 10, 4))
        r.feed(event("late", {"city": "x"}, at=DAY0 + 3 * D + 12 * H))
        return [f.to_dict() for f in r.findings]

    first = go()
    assert first and first == go()


def backlog_windows(day: int, hour: int, windows: int, overwrite: bool = False, by: str = "enricher") -> list:
    """An import backlog worked flat out: ~4 records per 5 minutes around the clock, filling
    empty fields (or, with `overwrite`, replacing set ones), far more than the daytime trickle."""
    out = []
    for w in range(windows):
        start = DAY0 + day * D + hour * H + w * W
        for i in range(12):
            rid = f"k{day}-{w}-{i}"
            out.append(
                event(
                    rid,
                    {"industry": "Retail", "jobtitle": "CTO", "city": "Oslo"},
                    at=start + i * 20_000,
                    by=by,
                )
            )
    return out


def seed_backlog(day: int, hour: int, windows: int, value: str) -> list:
    return [
        event(
            f"k{day}-{w}-{i}",
            {"industry": value, "jobtitle": value, "city": value},
            at=DAY0 + day * D + 30 * M,
            by="rep",
            kind=HUMAN,
        )
        for w in range(windows)
        for i in range(12)
    ]


def test_volume_alone_is_the_velocity_caps_job_but_a_shift_in_mix_warns():
    # the benign look-alike: a backlog at night at four times the volume, all fills: silent
    r = warmed()
    r.feed(*seed_backlog(3, 2, 6, ""))
    r.feed(*backlog_windows(3, 2, 6))
    r.feed(event("late", {"city": "x"}, at=DAY0 + 3 * D + 9 * H))
    assert r.of("activity_anomaly") == []
    # the same windows scored on volume alone (the old rule) do warn
    old = Run(
        ActivityAnomalyDetector(),
        policy=agents_policy("enricher", activity_anomaly={"require_composition_change": False}),
    )
    rng = random.Random(7)  # noqa: S311 - test data
    for day in range(3):
        old.feed(*benign_day(rng, day))
    old.feed(*seed_backlog(3, 2, 6, ""))
    old.feed(*backlog_windows(3, 2, 6))
    old.feed(event("late", {"city": "x"}, at=DAY0 + 3 * D + 9 * H))
    assert old.of("activity_anomaly")
    # the same volume replacing values people set: the mix changed too, so it warns
    bad = warmed()
    bad.feed(*seed_backlog(3, 2, 6, "set"))
    bad.feed(*backlog_windows(3, 2, 6))
    bad.feed(event("late", {"city": "x"}, at=DAY0 + 3 * D + 9 * H))
    found = bad.of("activity_anomaly")
    assert (
        found and found[0].details["overwrite_share"] == 1.0 and found[0].details["composition_shift"] > 0.9
    )
    assert found[0].details["usual_overwrite_share"] == 0.0


def test_composition_shift_discounts_tiny_windows():
    from detectors.activity_anomaly import composition_shift, wilson_lower

    usual = [0.1, 0.0, 500]
    assert composition_shift(1, 0, 1, usual) < 0.25  # one overwrite out of one change: chance
    assert composition_shift(2, 0, 3, usual) < 0.25
    assert composition_shift(20, 0, 20, usual) > 0.7
    assert composition_shift(0, 6, 10, [0.0, 0.5, 500]) < 0.25  # high-tier share as usual
    assert composition_shift(0, 10, 10, [0.0, 0.5, 500]) > 0.25  # all high tier: more than usual
    assert composition_shift(0, 0, 5, None) == 1.0  # no history: nothing is usual
    assert wilson_lower(0, 0, 1.64) == 0.0 and 0.98 < wilson_lower(150, 150, 1.64) < 1.0


def test_usual_mix_is_learned_from_ordinary_windows_only_and_kept_in_state():
    r = warmed()
    usual = r.states["activity_anomaly"]["enricher"]["cb"]
    assert usual[0] == 0.0 and usual[2] > 250  # fills only: no overwrites are usual
    r.feed(*seed_priors(3, 4))
    r.feed(*burst_windows(3, 10, 4))
    r.feed(event("late", {"city": "x"}, at=DAY0 + 3 * D + 12 * H))
    assert len(r.of("activity_anomaly")) == 2  # windows 3 and 4 of the streak
    after = r.states["activity_anomaly"]["enricher"]["cb"]
    assert after[0] < 0.05  # the anomalous windows did not teach the agent that overwriting is usual
    json.dumps(r.states["activity_anomaly"])


def test_a_restored_model_of_another_shape_starts_again():
    """A checkpoint from before the policy changed the trees (height 8 -> 6) is not used with
    the new settings: that agent's model warms up again."""
    r = warmed(1)
    det: ActivityAnomalyDetector = r.detectors[0]
    twin = ActivityAnomalyDetector()
    twin.restore("enricher", det.snapshot("enricher"))
    assert twin.learned("enricher") == det.learned("enricher") > 50
    same = Run(twin, policy=agents_policy("enricher"))
    same.feed(*benign_day(random.Random(5), 1)[:40])  # noqa: S311
    assert twin.learned("enricher") > det.learned("enricher")  # went on with the restored model
    other = ActivityAnomalyDetector()
    other.restore("enricher", det.snapshot("enricher"))
    reshaped = Run(other, policy=agents_policy("enricher", activity_anomaly={"height": 6}))
    reshaped.feed(*benign_day(random.Random(5), 1)[:40])  # noqa: S311
    assert 0 < other.learned("enricher") < 10
    assert other._models["enricher"].trees.height == 6


B = (T0 // W + 1) * W - T0  # offset of the first 5-minute window boundary after T0


def open_windows(r: Run) -> list[tuple[int, int]]:
    """(start relative to B, changes) of the agent's open windows."""
    return [(w["w"] - T0 - B, w["n"]) for w in r.states["activity_anomaly"]["enricher"]["o"]]


def test_a_change_late_by_less_than_allowed_lateness_counts_in_its_own_window():
    r = Run(ActivityAnomalyDetector(), policy=agents_policy("enricher"))
    r.feed(event("a", {"city": "x"}, at=B + W - M), event("b", {"city": "y"}, at=B + W + M))
    r.feed(event("late", {"city": "z"}, at=B + W - 1))  # delivered after a change of the next window
    assert open_windows(r) == [(0, 2), (W, 1)]
    r.feed(event("c", {"city": "x"}, at=B + W + 2 * M - 1))
    assert open_windows(r)[0] == (0, 2)  # still waiting: the watermark is < 2 min past its end
    r.feed(event("d", {"city": "x"}, at=B + W + 2 * M))
    assert open_windows(r) == [(W, 3)]  # the first closed with all of its changes
    assert r.detectors[0].learned("enricher") == 1


def test_a_change_later_than_allowed_lateness_is_counted_not_dropped():
    r = Run(ActivityAnomalyDetector(), policy=agents_policy("enricher"))
    r.feed(event("a", {"city": "x"}, at=B + M), event("b", {"city": "y"}, at=B + 2 * W + 3 * M))
    assert open_windows(r) == [(2 * W, 1)] and r.detectors[0].learned("enricher") == 1
    r.feed(event("stale", {"city": "z"}, at=B + 2 * M))  # its window was scored already
    assert open_windows(r) == [(2 * W, 2)]


class Recording(ActivityAnomalyDetector):
    """Keeps the features of every window it closes."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[dict] = []

    def _close(self, agent, entry, window, policy, settings):  # type: ignore[no-untyped-def]
        if window["n"]:
            self.closed.append(window_features(window, settings))
        return super()._close(agent, entry, window, policy, settings)


def test_disorder_within_allowed_lateness_closes_the_same_windows(lateness: str = "2m"):
    rng = random.Random(11)  # noqa: S311 - test data
    days = sorted(  # an agent's working hours, changes anywhere in a window
        (
            event(f"c{w}-{i}", {"city": "x"}, at=DAY0 + 9 * H + w * W + rng.randrange(W), by="enricher")
            for w in range(200)
            for i in range(rng.randint(3, 20))
        ),
        key=lambda e: e.occurred_at,
    )
    jittered = sorted(days, key=lambda e: e.occurred_at + rng.randint(0, 90_000))  # up to 90 s late
    assert jittered != days
    policy = agents_policy("enricher", activity_anomaly={"allowed_lateness": lateness})
    in_order, shuffled = Run(Recording(), policy=policy), Run(Recording(), policy=policy)
    in_order.feed(*days)
    shuffled.feed(*jittered)
    a, b = in_order.detectors[0], shuffled.detectors[0]
    assert len(a.closed) > 150 and a.closed == b.closed
    assert a.snapshot("enricher") == b.snapshot("enricher")
    assert open_windows(in_order) == open_windows(shuffled)


def test_without_allowed_lateness_late_changes_land_in_the_next_window():
    with pytest.raises(AssertionError):
        test_disorder_within_allowed_lateness_closes_the_same_windows("0s")


def test_an_entry_written_before_windows_waited_is_converted():
    r = Run(ActivityAnomalyDetector(), policy=agents_policy("enricher"))
    r.states["activity_anomaly"]["enricher"] = {
        "cb": [0.1, 0.2, 5], "w": T0 + B, "n": 4, "r": {"hubspot/contact/a": 1}, "f": {"city": 1},
        "ow": 1, "hi": 0, "k": 0, "pw": T0 + B - W, "le": "ev-a", "lt": T0 + B + M, "lr": "hubspot/contact/a",
        "lo": "contact", "e": {"ev-a": 1},
    }
    r.feed(event("b", {"city": "y"}, at=B + 2 * M))
    assert open_windows(r) == [(0, 5)]
    r.feed(event("c", {"city": "y"}, at=B + W + 2 * M))
    entry = r.states["activity_anomaly"]["enricher"]
    assert open_windows(r) == [(W, 1)] and entry["pw"] == T0 + B and entry["cb"][2] == 6
    json.dumps(entry)


def test_a_burst_that_stops_warns_when_event_time_moves_on():
    """The agent goes quiet after three anomalous windows: its last window closes once other
    actors' changes take event time `allowed_lateness` past it (advance), not at its next change."""
    r = warmed()
    r.feed(*seed_priors(3, 3))
    r.feed(*burst_windows(3, 10, 3))
    det: ActivityAnomalyDetector = r.detectors[0]
    state = r.states["activity_anomaly"]
    third_end = T0 + DAY0 + 3 * D + 10 * H + 3 * W
    assert det.advance(third_end + 2 * M - 1, state, r.policy) == []  # within the lateness
    (f,) = det.advance(third_end + 2 * M, state, r.policy)
    assert f.details["streak"] == 3 and f.agent == "enricher"
    assert state["enricher"]["o"] == [] and state["enricher"]["wm"] == third_end + 2 * M
    assert det.advance(third_end + H, state, r.policy) == []  # nothing left to close
    r.feed(event("late", {"city": "x"}, at=DAY0 + 3 * D + 10 * H + 2 * W + 1))  # of the closed window
    assert open_windows(r) == [(DAY0 + 3 * D + 10 * H + 3 * W - B, 1)]  # counted in the current one


def test_guard_replay_advances_event_time_for_quiet_agents():
    from detectors.pipeline import Guard

    guard = Guard(agents_policy("enricher"))
    rng = random.Random(7)  # noqa: S311 - test data
    for day in range(3):
        for ev in benign_day(rng, day):
            guard.process(ev)
    for ev in seed_priors(3, 3) + burst_windows(3, 10, 3):
        guard.process(ev)
    # the agent stops; a human keeps working: event time moves on without the agent
    found = []
    for minute in range(10):
        at = DAY0 + 3 * D + 10 * H + 3 * W + minute * M
        found += guard.process(event(f"h{minute}", {"city": "x"}, at=at, by="rep", kind=HUMAN)).findings
    assert [f.details["streak"] for f in found if f.detector == "activity_anomaly"] == [3]
