"""Checkpoints of activity_anomaly's models: when they are due, that they restore the same model,
and that a checkpoint not signed by this deployment's key is never unpickled."""

from __future__ import annotations

import pickle
import random
import zlib

from app.runtime.model_checkpoints import MAGIC, ModelCheckpoints, agent_of, key_of
from detectors.activity_anomaly import ActivityAnomalyDetector
from tests.unit.helpers_events import Run, agents_policy
from tests.unit.test_activity_anomaly import benign_day

SECRET = b"s" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trained(days: int = 1) -> ActivityAnomalyDetector:
    rng = random.Random(7)  # noqa: S311 - test data
    r = Run(ActivityAnomalyDetector(), policy=agents_policy("enricher"))
    for day in range(days):
        r.feed(*benign_day(rng, day))
    det: ActivityAnomalyDetector = r.detectors[0]
    assert det.learned("enricher") > 50
    return det


def test_due_when_learned_and_not_written_within_the_interval() -> None:
    det = trained()
    clock = Clock()
    cp = ModelCheckpoints(det, SECRET, interval_s=60, clock=clock)
    assert cp.due({0, 1}) == []  # no agent seen on an owned partition yet
    cp.seen("enricher", 1)
    assert cp.due({0}) == []  # partition 1 is not owned
    ((partition, key, value),) = cp.due({0, 1})
    assert partition == 1 and agent_of(key) == "enricher" and value.startswith(MAGIC)
    assert cp.due({1}) == []  # nothing learned since
    det._models["enricher"].learned += 1
    assert cp.due({1}) == []  # learned, but written 0 s ago
    assert len(cp.due({1}, force=True)) == 1  # a stop or revocation writes regardless of time
    det._models["enricher"].learned += 1
    clock.now += 61
    assert len(cp.due({1})) == 1
    cp.forget([1])
    det._models["enricher"].learned += 1
    assert cp.due({0, 1}, force=True) == []  # partition given up: not this worker's to write


def first_checkpoint(det: ActivityAnomalyDetector, partition: int) -> tuple[bytes, bytes]:
    """(key, value) of the enricher's model as the worker owning `partition` writes it."""
    cp = ModelCheckpoints(det, SECRET)
    cp.seen("enricher", partition)
    ((written_to, key, value),) = cp.due({partition})
    assert written_to == partition
    return key, value


def test_a_restored_model_is_the_same_model() -> None:
    det = trained()
    key, value = first_checkpoint(det, 2)
    twin = ActivityAnomalyDetector()
    other = ModelCheckpoints(twin, SECRET)
    assert other.apply(agent_of(key), 2, value)
    assert twin.learned("enricher") == det.learned("enricher")
    x = {"changes_per_min": 0.3, "distinct_records": 0.2, "distinct_fields": 0.1, "overwrite_share": 0.9,
         "high_tier_share": 0.8, "hour_sin": 0.0, "hour_cos": 1.0}
    assert twin._models["enricher"].trees.score_one(x) == det._models["enricher"].trees.score_one(x)
    assert other.due({2}) == []  # what was just restored is not written back
    assert other.partition_of == {"enricher": 2}


RAN: list[str] = []


def _side_effect() -> None:
    RAN.append("code ran")


class Boom:
    """Unpickling this runs code: what a forged checkpoint would do."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_side_effect, ())


def test_unsigned_forged_or_broken_checkpoints_are_skipped() -> None:
    _, value = first_checkpoint(trained(), 0)
    target = ActivityAnomalyDetector()
    other = ModelCheckpoints(target, b"another deployment's key".ljust(32))
    assert not other.apply("enricher", 0, value)  # signed with another key
    payload = zlib.compress(pickle.dumps(Boom()))
    forged = MAGIC + b"\0" * 32 + payload
    assert not ModelCheckpoints(target, SECRET).apply("enricher", 0, forged)
    assert not other.apply("enricher", 0, other.encode(payload)[:4] + b"\1" * 32 + payload)
    assert RAN == []  # never unpickled
    tampered = value[:-10] + bytes(10)
    assert not ModelCheckpoints(target, SECRET).apply("enricher", 0, tampered)
    not_a_model = ModelCheckpoints(target, SECRET).encode(zlib.compress(b"not a pickle"))
    assert not ModelCheckpoints(target, SECRET).apply("enricher", 0, not_a_model)
    assert not ModelCheckpoints(target, SECRET).apply("enricher", 0, None)  # tombstone
    assert not ModelCheckpoints(target, SECRET).apply("enricher", 0, b"CG")
    assert target.learned("enricher") == 0


def test_checkpoint_keys_do_not_collide_with_state_keys() -> None:
    assert agent_of(key_of("deal-bot")) == "deal-bot"
    assert agent_of(b"activity_anomaly\x1fdeal-bot") is None  # the JSON state of the same detector
    assert agent_of(b"velocity_cap\x1fdeal-bot") is None
