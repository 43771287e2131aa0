"""Vendor payloads mutated at random (keys dropped, values of another JSON type, blank, huge, upper-cased,
wrapped in a list) never break the guard: each either normalizes to events that cross the wire
unchanged and run through every detector, or is refused with an AdapterError (the dead-letter
reason). Any other exception here would be a payload the product loses with a stack trace."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.adapters import AdapterError, decode_line, normalize_with_errors
from app.policy_file import load_policy
from app.runtime.codec import encode_event
from detectors.events import ChangeEvent
from detectors.pipeline import Guard

DEMO = Path(__file__).resolve().parents[2] / "app" / "demo"
ODD_VALUES: list[Any] = [None, True, False, 0, -1, 1.5, 10**30, -(10**20), 1e308, "", " ", "x", "2025-13-45",
                         "1e9999", "null", "\u0000", [], {}, [None], {"a": 1}]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:5]):
            yield from _paths(item, prefix + (index,))


def _mutated(payload: Any, rng: random.Random) -> Any:
    payload = copy.deepcopy(payload)
    places = [p for p in _paths(payload) if p]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(places)
        parent = payload
        try:
            for key in path[:-1]:
                parent = parent[key]
            key = path[-1]
            value = parent[key]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this place
        roll = rng.random()
        if roll < 0.3 and isinstance(parent, dict):
            del parent[key]
        elif roll < 0.7:
            parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif isinstance(value, str):
            parent[key] = value.upper() if rng.random() < 0.5 else value * 3
        elif isinstance(value, int) and not isinstance(value, bool):
            parent[key] = str(value)
        else:
            parent[key] = [value]
    return payload


@pytest.mark.parametrize("vendor", ["hubspot", "salesforce", "pipedrive"])
def test_mutated_vendor_payloads_become_events_or_adapter_errors(vendor: str) -> None:
    payloads = [orjson.loads(line) for line in (DEMO / f"{vendor}.jsonl").read_bytes().splitlines()]
    guard = Guard(load_policy(DEMO / "policy.yaml"))
    rng = random.Random(f"fuzz-{vendor}")
    outcomes = {"events": 0, "refused": 0}
    for _ in range(1500):
        raw = json.dumps(_mutated(rng.choice(payloads), rng)).encode()  # as it would arrive: bytes
        try:
            events, errors = normalize_with_errors(decode_line(raw), "auto")
        except AdapterError:
            outcomes["refused"] += 1
            continue
        outcomes["refused"] += len(errors)
        for event in events:
            assert ChangeEvent.model_validate_json(encode_event(event)) == event
            guard.process(event)
            outcomes["events"] += 1
    assert outcomes["events"] > 500 and outcomes["refused"] > 100, outcomes
