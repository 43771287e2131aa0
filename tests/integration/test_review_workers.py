"""Two workers, one review queue: each worker's review service follows guard.decisions, so a
proposal submitted on one is listed and decided on the other, and trust moves everywhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from app.config import Settings
from app.review.service import AlreadyDecided, ReviewService
from tests.e2e.review_support import POLICY, create_topics, current_value, make_settings, proposal
from tests.integration.helpers_stream import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def review_workers(settings: Settings, count: int) -> AsyncIterator[list[ReviewService]]:
    """`count` started review services on the same topics (workers of one guard), stopped after."""
    started: list[ReviewService] = []
    try:
        for _ in range(count):
            service = ReviewService(settings, POLICY, current_value=current_value,
                                    registry=CollectorRegistry())
            await service.start()
            started.append(service)
        yield started
    finally:
        for service in started:
            await service.stop()


def status(service: ReviewService, pid: str) -> str | None:
    record = service.store.get(pid)
    return None if record is None else record.status.value


async def test_a_proposal_submitted_on_one_worker_is_decided_on_the_other(kafka_bootstrap: str, unique: str) -> None:
    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)
    registries = [CollectorRegistry(), CollectorRegistry()]
    a, b = (ReviewService(settings, POLICY, current_value=current_value, registry=r) for r in registries)
    await a.start()
    await b.start()
    try:
        await a.submit(proposal("p-101", "101", {"jobtitle": "CTO"}))
        await a.submit(proposal("p-102", "102", {"jobtitle": "Head of Data"}))
        await until(lambda: status(b, "p-102") == "pending")
        assert [g["count"] for g in (await b.list_view())["groups"]] == [2]
        backlog = registries[1].get_sample_value
        assert backlog("crm_guard_review_backlog", {"agent": "enricher"}) == 2  # b's gauge follows too

        await b.approve("p-101", "ann", "checked the site")
        await until(lambda: status(a, "p-101") == "approved")
        assert a.store.get("p-101").decided_by == "ann"  # type: ignore[union-attr]
        with pytest.raises(AlreadyDecided):
            await a.approve("p-101", "bob", "again")  # decided once, whichever worker is asked
        await until(lambda: a.trust_snapshot("enricher")["tiers"]["low"]["counts"]["approved"] == 1)
        assert registries[0].get_sample_value("crm_guard_review_backlog", {"agent": "enricher"}) == 1

        await a.reject("p-102", "carl", "not on the site", "wrong_value")
        await until(lambda: status(b, "p-102") == "rejected")
        await until(lambda: b.trust_snapshot("enricher")["tiers"]["low"]["counts"].get("rejected") == 1)
        assert b.trust_snapshot("enricher")["tiers"]["low"]["counts"]["approved"] == 1  # neither update lost
    finally:
        await a.stop()
        await b.stop()


async def test_two_people_deciding_one_proposal_at_once_on_two_workers_get_one_decision(
        kafka_bootstrap: str, unique: str) -> None:
    """Both workers find p-201 pending and both write a decision: the first in guard.decisions
    counts everywhere; the other person gets AlreadyDecided and nothing of theirs reaches
    crm.approved, guard.feedback or trust. A third worker started afterwards (a restart) agrees."""
    from tests.integration.helpers_stream import read_topic

    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)
    async with review_workers(settings, 2) as (a, b):
        for n in range(3):
            await a.submit(proposal(f"p-20{n}", f"10{n}", {"jobtitle": f"VP {n}"}))
        await until(lambda: all(status(b, f"p-20{n}") == "pending" for n in range(3)))
        outcomes: dict[str, list[str]] = {}
        for n in range(3):
            pid = f"p-20{n}"
            results = await asyncio.gather(a.approve(pid, "ann", "checked"),
                                           b.reject(pid, "bob", "not on the site", "wrong_value"),
                                           return_exceptions=True)
            assert sum(isinstance(r, AlreadyDecided) for r in results) == 1, results
            winner = next(r for r in results if not isinstance(r, BaseException))
            outcomes[pid] = [winner.status.value, str(winner.decided_by)]
            await until(lambda pid=pid, won=winner.status.value: status(a, pid) == status(b, pid) == won)
            assert a.store.get(pid).decided_by == b.store.get(pid).decided_by  # type: ignore[union-attr]

        await a.submit(proposal("p-203", "103", {"jobtitle": "VP 3"}))
        await until(lambda: status(b, "p-203") == "pending")
        single, batch = await asyncio.gather(b.reject("p-203", "bob", "not on the site", "wrong_value"),
                                             a.batch_approve("ann", "checked", ids=["p-203"]),
                                             return_exceptions=True)
        if isinstance(single, AlreadyDecided):  # the batch's approval came first
            assert isinstance(batch, dict) and batch["approved"] == ["p-203"]
            outcomes["p-203"] = ["approved", "ann"]
        else:  # the rejection came first (the likelier order): the batch skips p-203 and says why
            assert isinstance(batch, dict) and batch["approved"] == []
            assert "already rejected (by bob" in batch["skipped"][0]["reason"]
            outcomes["p-203"] = ["rejected", "bob"]
        await until(lambda: status(a, "p-203") == status(b, "p-203") == outcomes["p-203"][0])

        approved = await read_topic(kafka_bootstrap, settings.topics.approved)
        feedback = await read_topic(kafka_bootstrap, settings.topics.feedback)
        approved_ids = sorted(orjson.loads(r.value)["proposal_id"] for r in approved)
        assert approved_ids == sorted(p for p, (s, _) in outcomes.items() if s == "approved")
        decisions = [orjson.loads(r.value) for r in feedback if orjson.loads(r.value).get("type") == "review"]
        assert sorted((d["proposal_id"], d["decision"]) for d in decisions) == sorted(
            (p, s) for p, (s, _) in outcomes.items())
        await until(lambda: a.trust_snapshot("enricher")["tiers"]["low"]["counts"] ==
                    b.trust_snapshot("enricher")["tiers"]["low"]["counts"])
        counts = a.trust_snapshot("enricher")["tiers"]["low"]["counts"]
        assert sum(counts.get(k, 0) for k in ("approved", "rejected")) == 4  # one outcome each, not two

    async with review_workers(settings, 1) as (c,):  # a restarted worker rebuilds the same
        for pid, (state, by) in outcomes.items():
            held = c.store.get(pid)
            assert held is not None and [held.status.value, held.decided_by] == [state, by] and held.done


async def test_trust_moved_on_two_workers_at_the_same_instant_keeps_both_outcomes(
        kafka_bootstrap: str, unique: str) -> None:
    """ann approves p-301 on one worker while bob rejects p-302 of the same agent and tier on the
    other: each worker updates the agent's trust from what it held and writes it; the one whose
    write came second merges its outcome into the first one's state, so both count everywhere
    (and in what a restarted worker rebuilds)."""
    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)

    def counts(service: ReviewService) -> dict[str, int]:
        tiers = service.trust_snapshot("enricher")["tiers"]
        return {k: n for k, n in tiers["low"]["counts"].items() if n} if "low" in tiers else {}

    expected = {"approved": 3, "rejected": 1}
    async with review_workers(settings, 2) as (a, b):
        for n in range(1, 5):
            await a.submit(proposal(f"p-30{n}", f"30{n}", {"jobtitle": f"Head {n}"}))
        await until(lambda: all(status(b, f"p-30{n}") == "pending" for n in range(1, 5)))
        await asyncio.gather(a.approve("p-301", "ann", "checked"), b.reject("p-302", "bob", "wrong", "wrong_value"))
        await asyncio.gather(b.approve("p-303", "bob", "checked"), a.approve("p-304", "ann", "checked"))
        await until(lambda: counts(a) == counts(b) == expected)
    async with review_workers(settings, 1) as (c,):
        assert counts(c) == expected


async def test_a_level_move_made_on_two_workers_at_once_is_published_once(
        kafka_bootstrap: str, unique: str) -> None:
    """Two rejections in a row, then a third on each worker at the same instant: each worker sees
    the third consecutive failure and demotes the agent. The write that lands second is merged
    into the first (which already demoted and reset the streak), so its own demotion never
    happened: guard.feedback carries one demotion, not two, and the level is observe."""
    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)
    async with review_workers(settings, 2) as (a, b):
        for n in range(1, 5):
            await a.submit(proposal(f"p-40{n}", f"40{n}", {"jobtitle": f"Head {n}"}))
        await until(lambda: all(status(b, f"p-40{n}") == "pending" for n in range(1, 5)))
        await a.reject("p-401", "ann", "wrong", "wrong_value")
        await a.reject("p-402", "ann", "wrong", "wrong_value")

        def rejected(service: ReviewService) -> int:
            tiers = service.trust_snapshot("enricher")["tiers"]
            return tiers["low"]["counts"].get("rejected", 0)

        await until(lambda: rejected(b) == 2)
        await asyncio.gather(a.reject("p-403", "ann", "wrong", "wrong_value"),
                             b.reject("p-404", "bob", "wrong", "wrong_value"))
        await until(lambda: rejected(a) == rejected(b) == 4)
        for service in (a, b):
            assert service.trust_snapshot("enricher")["tiers"]["low"]["level"] == "observe"
    feedback = [orjson.loads(r.value) for r in await read_topic(settings.bootstrap_servers, settings.topics.feedback)]
    moves = [m for m in feedback if m.get("type") == "autonomy" and m.get("tier") == "low"]
    assert [(m["kind"], m["from"], m["to"]) for m in moves] == [("demotion", "propose", "observe")], moves
