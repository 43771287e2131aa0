"""velocity_cap: exact on the record that crosses the cap, rolling, per object type and tier."""

from __future__ import annotations

from detectors.events import ActorKind, ObjectType
from detectors.policy import Policy
from detectors.velocity_cap import VelocityCapDetector
from tests.unit.helpers_events import M, Run, event


def policy(caps: list[dict], pause: bool = True) -> Policy:
    return Policy.model_validate({
        "agents": {"bot": {"identities": [{"vendor": "hubspot", "app_id": "1"}], "velocity_caps": caps,
                           "pause_on_breach": pause}},
    })


def test_the_change_that_exceeds_the_cap_is_the_breach_and_pauses() -> None:
    run = Run(VelocityCapDetector(), policy=policy([{"max_records": 50, "window": "1h"}]))
    for i in range(50):
        assert run.feed(event(i, {"jobtitle": "x"}, at=i * 1000, by="bot")) == []
    breach = run.feed(event(50, {"jobtitle": "x"}, at=50_000, by="bot"))
    assert len(breach) == 1
    finding = breach[0]
    assert finding.pause is True and finding.severity.value == "critical"
    assert finding.details["count"] == 51 and finding.record_key.endswith("/50")


def test_repeated_changes_to_the_same_records_do_not_count_twice() -> None:
    run = Run(VelocityCapDetector(), policy=policy([{"max_records": 5, "window": "1h"}]))
    for rep in range(20):
        for i in range(5):
            assert run.feed(event(i, {"jobtitle": f"v{rep}"}, at=rep * 60_000 + i, by="bot")) == []


def test_window_is_rolling_records_expire_after_the_window() -> None:
    run = Run(VelocityCapDetector(), policy=policy([{"max_records": 3, "window": "1h"}]))
    for i in range(3):
        run.feed(event(i, {"jobtitle": "x"}, at=i * M, by="bot"))
    # 60 min after the first change it has left the window (t - window, t]: still 3 in window.
    assert run.feed(event(10, {"jobtitle": "x"}, at=60 * M, by="bot")) == []
    assert len(run.feed(event(11, {"jobtitle": "x"}, at=60 * M + 1, by="bot"))) == 1


def test_per_object_type_cap_counts_only_that_type() -> None:
    caps = [{"max_records": 100, "window": "1h"}, {"max_records": 2, "window": "1h", "object_type": "deal"}]
    run = Run(VelocityCapDetector(), policy=policy(caps))
    for i in range(10):
        assert run.feed(event(i, {"jobtitle": "x"}, at=i, by="bot")) == []
    run.feed(event(100, {"amount": 1}, at=20, by="bot", object_type=ObjectType.DEAL))
    run.feed(event(101, {"amount": 1}, at=21, by="bot", object_type=ObjectType.DEAL))
    third = run.feed(event(102, {"amount": 1}, at=22, by="bot", object_type=ObjectType.DEAL))
    assert [f.group for f in third] == ["2/60m object_type=deal"]


def test_per_tier_cap_counts_records_with_a_high_tier_change() -> None:
    caps = [{"max_records": 1, "window": "1h", "tier": "high"}]
    run = Run(VelocityCapDetector(), policy=policy(caps))
    assert run.feed(event(1, {"utm_source": "a"}, at=0, by="bot")) == []
    assert run.feed(event(2, {"jobtitle": "a"}, at=1, by="bot")) == []
    assert len(run.feed(event(3, {"utm_campaign": "a"}, at=2, by="bot"))) == 1


def test_humans_are_never_capped_and_no_pause_when_policy_says_so() -> None:
    run = Run(VelocityCapDetector(), policy=policy([{"max_records": 1, "window": "1h"}], pause=False))
    for i in range(5):
        assert run.feed(event(i, {"jobtitle": "x"}, at=i, by="ann", kind=ActorKind.HUMAN)) == []
    run.feed(event(10, {"jobtitle": "x"}, at=0, by="bot"))
    finding = run.feed(event(11, {"jobtitle": "x"}, at=1, by="bot"))[0]
    assert finding.pause is False


def test_state_stays_bounded_under_a_runaway_agent() -> None:
    run = Run(VelocityCapDetector(), policy=policy([{"max_records": 10, "window": "1h"}]))
    for i in range(1000):
        run.feed(event(i, {"jobtitle": "x"}, at=i, by="bot"))
    window = run.states["velocity_cap"]["bot"]["10/60m"]
    assert len(window) <= 20


def test_default_cap_is_fifty_records_per_hour() -> None:
    p = Policy()
    assert [(c.max_records, c.window) for c in p.caps_for("anyone")] == [(50, 3_600_000)]


def test_a_late_change_is_counted_as_if_it_had_arrived_in_order() -> None:
    # In order: r1@0, r2@5m, r3@10m, r4@15m: the 4th record breaches a 3-per-hour cap.
    # Arriving r1, r2, r4, r3 (r3 crossed another partition), the breach comes with r3.
    run = Run(VelocityCapDetector(), policy=policy([{"max_records": 3, "window": "1h"}]))
    for rid, minute in ((1, 0), (2, 5), (4, 15)):
        assert run.feed(event(rid, {"jobtitle": "x"}, at=minute * M, by="bot")) == []
    late = run.feed(event(3, {"jobtitle": "x"}, at=10 * M, by="bot"))
    assert [f.details["count"] for f in late] == [4]


def test_a_late_change_does_not_join_records_more_than_a_window_apart() -> None:
    # r2@61m and r3@62m, then r1@0 arrives late: no hour holds more than 2 of them.
    run = Run(VelocityCapDetector(), policy=policy([{"max_records": 2, "window": "1h"}]))
    assert run.feed(event(2, {"jobtitle": "x"}, at=61 * M, by="bot")) == []
    assert run.feed(event(3, {"jobtitle": "x"}, at=62 * M, by="bot")) == []
    assert run.feed(event(1, {"jobtitle": "x"}, at=0, by="bot")) == []
    # and the window is back in time order: the next in-order change is judged exactly
    assert len(run.feed(event(4, {"jobtitle": "x"}, at=63 * M, by="bot"))) == 1


def test_late_inserts_near_the_end_and_far_back_keep_time_order_and_count_like_in_order() -> None:
    """_insert_late takes a fast path for changes a little late (entries taken off the end and put
    back) and rebuilds the window otherwise; both must give the order and count of the rule."""
    import random
    from bisect import insort

    from detectors.velocity_cap import _insert_late

    rng = random.Random(3)  # noqa: S311 - test data
    for _ in range(3000):
        span = rng.choice([10, 100, 1000])
        times, now = [], 0
        for _ in range(rng.randint(1, 120)):
            now += rng.randint(0, 30)
            times.append(now)
        window = {f"r{i}": t for i, t in enumerate(times)}
        at = now - rng.randint(1, rng.choice([5, 50, 3000]))  # a few entries late, or most of them
        count = _insert_late(window, "late", at, span)
        expected_times = list(times)
        insort(expected_times, at)
        assert list(window.values()) == expected_times and window["late"] == at
        ends = [e for e in expected_times if at <= e < at + span]
        assert count == max(sum(1 for t in expected_times if e - span < t <= e) for e in ends)
