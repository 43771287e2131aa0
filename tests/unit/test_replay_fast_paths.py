"""The replay's fast paths change nothing: unvalidated models equal validated ones, the reorder
buffer orders like a heap, and two processes write the same bytes as one (bench/replay_speed.py)."""

from __future__ import annotations

import gc
import heapq
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.adapters import decode_line, normalize_with_errors
from app.policy_file import load_policy
from app.replay import ReplayStats, _reordered, run_replay
from detectors.events import (
    Actor,
    ActorKind,
    ChangeEvent,
    FieldChange,
    ObjectType,
    RelatedRecord,
    SourceIdentity,
    trusted_change,
    trusted_change_old,
    trusted_event,
    trusted_related,
)

DEMO = Path(__file__).resolve().parents[2] / "app" / "demo"
ACTOR = Actor(kind=ActorKind.HUMAN, id="7", identity=SourceIdentity(vendor="hubspot", user_id="7"))


def same_model(fast: Any, slow: Any) -> None:
    """Equal, and indistinguishable: field order, fields set, no extra/private, repr, JSON, hash."""
    assert fast == slow
    assert type(fast) is type(slow)
    assert list(fast.__dict__) == list(slow.__dict__) == list(type(slow).model_fields)
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    assert repr(fast) == repr(slow)
    assert fast.model_dump_json() == slow.model_dump_json()
    assert hash(fast) == hash(slow)


def test_trusted_builders_equal_validation() -> None:
    same_model(trusted_change("utm_source", "google"), FieldChange(field="utm_source", new="google"))
    same_model(
        trusted_change_old("stage", "won", "open", True),
        FieldChange(field="stage", new="won", old="open", has_old=True),
    )
    same_model(
        trusted_related(ObjectType.COMPANY, "42"),
        RelatedRecord(object_type=ObjectType.COMPANY, record_id="42"),
    )
    same_model(
        trusted_related(ObjectType.DEAL, "9", True),
        RelatedRecord(object_type=ObjectType.DEAL, record_id="9", removed=True),
    )
    fields: dict[str, Any] = {
        "event_id": "hubspot:1:2:x", "source": "hubspot", "source_event_id": "2",
        "occurred_at": 1_740_000_000_000, "object_type": ObjectType.CONTACT, "source_object_type": "contact",
        "record_id": "5", "operation": "update",
        "changes": (trusted_change("x", "y"),), "actor": ACTOR, "merged_record_ids": ("4",),
        "related": (trusted_related(ObjectType.COMPANY, "42"),), "bulk": True,
    }
    same_model(trusted_event(**fields), ChangeEvent(**fields))
    partial = {k: v for k, v in fields.items() if k != "merged_record_ids"}
    same_model(
        trusted_event(**partial, fields_set=frozenset(partial)), ChangeEvent(**partial)
    )


@pytest.mark.parametrize("vendor", ["hubspot", "salesforce", "pipedrive"])
def test_adapter_events_survive_revalidation(vendor: str) -> None:
    """What the adapters build without validation is what validation would have built."""
    count = 0
    for raw in (DEMO / f"{vendor}.jsonl").read_bytes().splitlines():
        events, errors = normalize_with_errors(decode_line(raw), "auto")
        assert not errors
        for event in events:
            again = ChangeEvent.model_validate(event.model_dump())
            assert again == event
            assert again.model_dump_json() == event.model_dump_json()
            assert type(event.occurred_at) is int and type(event.record_id) is str
            assert all(type(c.field) is str for c in event.changes)
            count += 1
    assert count > 100


def _heap_reference(items: list[tuple[int, int, int, int, str]], window: int) -> tuple[list[Any], int]:
    """The reorder buffer as it was written first (a heap): the order the replay must keep."""
    heap: list[Any] = []
    out: list[Any] = []
    late = 0
    emitted_up_to = newest = None
    for item in items:
        if emitted_up_to is not None and item[0] < emitted_up_to:
            late += 1
            out.append(item)
            continue
        heapq.heappush(heap, item)
        newest = item[0] if newest is None else max(newest, item[0])
        while heap and heap[0][0] <= newest - window:
            first = heapq.heappop(heap)
            emitted_up_to = first[0]
            out.append(first)
    while heap:
        out.append(heapq.heappop(heap))
    return out, late


@pytest.mark.parametrize("seed", range(8))
def test_reorder_buffer_orders_like_a_heap(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    items = []
    t = 0
    for line in range(20_000):
        t += rng.choice((0, 0, 1, 5, 40))
        at = t - (rng.randrange(0, 400) if rng.random() < 0.05 else 0)  # stragglers, some beyond the window
        items.append((at, 0, line, 0, f"e{line}"))
    stats = ReplayStats()
    got = list(_reordered(iter(items), 100, stats))
    want, late = _heap_reference(items, 100)
    assert got == want
    assert stats.late == late > 0


def _edge_corpus(tmp: Path) -> list[Path]:
    """The demo plus what replays meet: redeliveries long after (duplicates and late events), a
    redelivery with new ids (late only), garbage, canonical events (one broken)."""
    hubspot = (DEMO / "hubspot.jsonl").read_bytes().splitlines()
    lines = list(hubspot)
    lines += hubspot[::40]
    moved = orjson.loads(hubspot[7])
    for note in moved:
        note["eventId"] = int(note["eventId"]) + 10**9
    lines.insert(300, orjson.dumps(moved))
    lines += [b"not json", b"[1, 2]", b'{"foo": 1}']
    canonical = []
    for raw in (DEMO / "salesforce.jsonl").read_bytes().splitlines()[:40]:
        for event in normalize_with_errors(decode_line(raw), "auto")[0]:
            data = event.model_dump(mode="json")
            data["event_id"] = "canon:" + data["event_id"]
            canonical.append(orjson.dumps(data))
    canonical.append(b'{"event_id": "x", "record_id": "1", "operation": "update"}')
    files = {"hubspot.jsonl": lines, "canonical.jsonl": canonical}
    paths = []
    for name, content in files.items():
        path = tmp / name
        path.write_bytes(b"\n".join(content) + b"\n")
        paths.append(path)
    return paths + [DEMO / "salesforce.jsonl", DEMO / "pipedrive.jsonl"]


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_two_processes_write_the_same_bytes_as_one(tmp_path: Path) -> None:
    policy = load_policy(DEMO / "policy.yaml")
    paths = _edge_corpus(tmp_path)
    one = run_replay(paths, tmp_path / "one", policy)
    two = run_replay(paths, tmp_path / "two", policy, workers=2)
    assert one == two
    assert one["deadletters"] >= 4 and one["duplicates_skipped"] > 0 and one["late_events"] > 0
    assert one["alerts"] > 0 and one["paused_agents"]
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_failing_worker_fails_the_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detectors.velocity_cap import VelocityCapDetector

    def explode(self: Any, obs: Any, state: Any, policy: Any) -> list[Any]:
        raise ValueError("detector exploded")

    monkeypatch.setattr(VelocityCapDetector, "observe", explode)
    with pytest.raises(RuntimeError, match="detector exploded"):
        run_replay([DEMO / "hubspot.jsonl"], tmp_path / "out", load_policy(DEMO / "policy.yaml"), workers=2)
    assert gc.isenabled()


def test_workers_must_be_one_or_two(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        run_replay([DEMO / "hubspot.jsonl"], tmp_path / "out", load_policy(DEMO / "policy.yaml"), workers=3)
