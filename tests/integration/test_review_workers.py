"""Two workers, one review queue: each worker's review service follows guard.decisions, so a
proposal submitted on one is listed and decided on the other, and trust moves everywhere."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from app.review.service import AlreadyDecided, ReviewService
from tests.e2e.review_support import POLICY, create_topics, current_value, make_settings, proposal

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


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
