"""insert_near_end: a late entry goes in after every entry no later than it; the window keeps time
order; more than NEAR_END later entries leave the window unchanged (callers rebuild)."""

from __future__ import annotations

import random
from operator import itemgetter

from detectors.time_order import NEAR_END, insert_in_time_order, insert_near_end


def test_a_late_entry_goes_after_every_entry_no_later_than_it() -> None:
    rng = random.Random(4)  # noqa: S311 - test data
    for _ in range(2000):
        times = sorted(rng.randint(0, 100) for _ in range(rng.randint(0, 80)))
        window = {f"k{i}": [t, "x"] for i, t in enumerate(times)}
        at = rng.randint(-5, 105)
        later = sum(1 for t in times if t > at)
        done = insert_near_end(window, "new", [at, "y"], at, itemgetter(0))
        assert done == (later <= NEAR_END)
        if done:
            held = [v[0] for v in window.values()]
            assert held == sorted(held) and list(window).index("new") == len(times) - later
        else:
            assert "new" not in window and [v[0] for v in window.values()] == times


def test_values_that_are_times() -> None:
    window = {"a": 1, "b": 3, "c": 3, "d": 7}
    assert insert_near_end(window, "x", 3, 3)
    assert list(window.items()) == [("a", 1), ("b", 3), ("c", 3), ("x", 3), ("d", 7)]


def test_insert_in_time_order_near_the_end_and_far_back() -> None:
    rng = random.Random(8)  # noqa: S311 - test data
    for _ in range(500):
        times = sorted(rng.randint(0, 1000) for _ in range(rng.randint(1, 300)))
        window = {f"k{i}": t for i, t in enumerate(times)}
        at = rng.randint(-5, 1005)
        insert_in_time_order(window, "new", at, at)
        held = list(window.values())
        assert held == sorted(held) and len(window) == len(times) + 1
        assert list(window).index("new") == sum(1 for t in times if t <= at)  # after equal times
