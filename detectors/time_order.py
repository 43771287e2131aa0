"""Windows kept as dicts in time order (insertion order = time order), and the late change.

velocity_cap and mass_overwrite hold, per agent, a dict whose insertion order is time order, so
expiry pops from the front and counts are bisections. A change that arrives after later ones
(partitions interleave, so a few milliseconds late is common) must go in at its place. Rebuilding
the dict costs O(window) (1.2 ms at 10,000 entries); taking the few later entries off the end
and putting them back costs O(entries after it). `insert_in_time_order` does the latter when it
can and the rebuild otherwise.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

NEAR_END = 64
"""At most this many later entries are taken off the end; beyond, callers rebuild."""


def insert_near_end(
    window: dict[str, Any], key: str, value: Any, at: int, time_of: Callable[[Any], int] | None = None
) -> bool:
    """Insert `key: value` (time `at`) after every entry no later than `at`: the later entries are
    taken off the end and put back behind it. `time_of(value)` is an entry's time (the value
    itself when None). False, with the window unchanged, when more than NEAR_END are later.
    `key` must not be in the window."""
    later: list[tuple[str, Any]] = []
    while window:
        held_key, held = window.popitem()
        if (held if time_of is None else time_of(held)) <= at:
            window[held_key] = held
            break
        later.append((held_key, held))
        if len(later) > NEAR_END:
            break
    if len(later) <= NEAR_END:
        window[key] = value
    for held_key, held in reversed(later):
        window[held_key] = held
    return len(later) <= NEAR_END


def insert_in_time_order(window: dict[str, Any], key: str, value: Any, at: int,
                         time_of: Callable[[Any], int] | None = None) -> None:
    """Insert `key: value` (time `at`) after every entry no later than `at`: near the end when few
    entries are later, else by rebuilding the dict (in C: list, insert, update). `key` must not
    be in the window."""
    if insert_near_end(window, key, value, at, time_of):
        return
    items = list(window.items())
    if time_of is None:
        place = bisect_right(items, at, key=lambda item: item[1])
    else:
        place = bisect_right(items, at, key=lambda item: time_of(item[1]))
    items.insert(place, (key, value))
    window.clear()
    window.update(items)
