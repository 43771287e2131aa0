"""Proposals, review decisions, trust and feedback on a real broker (fresh topics per test)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from app.config import Settings, Topics
from app.review.consumer import ReviewServices
from app.review.models import ReviewFilter, ReviewRecord, ReviewStatus
from app.review.service import AlreadyDecided, ReviewService
from app.review.store import encode_record
from app.runtime.kafka_client import topic_partitions
from app.web.keys import REVIEW
from app.web.review import add_routes
from detectors.events import Actor, ActorKind, ChangeEvent, FieldChange, ObjectType, SourceIdentity
from detectors.gate import Proposal
from detectors.override import OverrideDetector
from detectors.pipeline import Guard
from detectors.policy import AgentPolicy, Autonomy, IdentityRule, Policy, Tier

pytestmark = pytest.mark.kafka

POLICY = Policy(agents={"enricher": AgentPolicy(
    identities=[IdentityRule(vendor="hubspot", app_id="77")],
    autonomy={Tier.LOW: Autonomy.ACT, Tier.MEDIUM: Autonomy.PROPOSE},
)})


def make_settings(bootstrap: str, unique: str) -> Settings:
    topics = Topics(proposals=f"crm.proposals.{unique}", approved=f"crm.approved.{unique}",
                    feedback=f"guard.feedback.{unique}", decisions=f"guard.decisions.{unique}",
                    deadletter=f"guard.deadletter.{unique}")
    return Settings(bootstrap_servers=bootstrap, group_id=f"review-{unique}", topics=topics)


async def create_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        t = settings.topics
        await admin.create_topics([NewTopic(name, 3, 1) for name in (t.proposals, t.approved, t.feedback)]
                                  + [NewTopic(t.deadletter, 1, 1)])
    finally:
        await admin.close()


def change(record_id: str, fields: dict[str, Any], at: int, *, human: bool = False) -> ChangeEvent:
    actor = (Actor(kind=ActorKind.HUMAN, id="5", identity=SourceIdentity(vendor="hubspot", user_id="5")) if human
             else Actor(kind=ActorKind.AGENT, id="enricher", identity=SourceIdentity(vendor="hubspot", app_id="77")))
    return ChangeEvent(
        event_id=f"ev-{record_id}-{at}-{human}", source="hubspot", source_event_id=f"s-{record_id}-{at}",
        occurred_at=at, object_type=ObjectType.CONTACT, source_object_type="contact", record_id=record_id,
        operation="update", changes=tuple(FieldChange(field=k, new=v) for k, v in fields.items()), actor=actor,
    )


def proposal(pid: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A proposal as the agent-side client produces it to crm.proposals."""
    now = int(time.time() * 1000)
    return {"proposal_id": pid, "agent": "enricher", "change": change(record_id, fields, now).model_dump(mode="json"),
            "reason": "seen on the company site", "evidence": {"activity": "call-7"}, "confidence": 0.8,
            "proposed_at": now}


async def produce(settings: Settings, topic: str, messages: list[bytes], key: bytes = b"enricher") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in messages:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def read_topic(settings: Settings, topic: str, done: Callable[[list[tuple[bytes, Any]]], bool],
                     timeout: float = 20.0) -> list[tuple[bytes, Any]]:
    """(key, decoded value) of every message from the beginning, until `done(messages)` or timeout."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[bytes, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] | None = None
        while not partitions and time.monotonic() < deadline:
            partitions = {tp.partition for tp in await topic_partitions(consumer, topic)}
            if not partitions:
                await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline and not done(out):
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend((r.key, _decode(r.value)) for r in records)
        return out
    finally:
        await consumer.stop()


def _decode(value: bytes | None) -> Any:
    try:
        return orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return value


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def of_type(kind: str) -> Callable[[list[tuple[bytes, Any]]], list[Any]]:
    return lambda msgs: [v for _, v in msgs if isinstance(v, dict) and v.get("type") == kind]


async def test_proposal_flows_to_act_or_review_by_trust(kafka_bootstrap: str, unique: str) -> None:
    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)
    registry = CollectorRegistry()
    service = ReviewService(settings, POLICY, registry=registry)
    runner = ReviewServices(service)
    await runner.start()
    try:
        low = proposal("p-low", "r0", {"jobtitle": "CTO"})
        mediums = [proposal(f"p-med-{i}", f"r{i + 1}", {"lifecyclestage": "customer"}) for i in range(20)]
        await produce(settings, settings.topics.proposals, [orjson.dumps(p) for p in [low, *mediums]])
        await until(lambda: len(service.store.records) == 21)
        assert service.store.get("p-low").status is ReviewStatus.APPROVED  # type: ignore[union-attr]
        assert service.store.get("p-low").via == "gate"  # type: ignore[union-attr]
        assert all(service.store.get(p["proposal_id"]).pending for p in mediums)  # type: ignore[union-attr]
        assert registry.get_sample_value("crm_guard_review_backlog", {"agent": "enricher"}) == 20

        result = await service.batch_approve("ann", "looks right",
                                             ReviewFilter(agent="enricher", field="lifecyclestage"))
        assert len(result["approved"]) == 20
        assert registry.get_sample_value("crm_guard_review_backlog", {"agent": "enricher"}) == 0
        assert service.model.level(service.trust_state, POLICY, "enricher", Tier.MEDIUM) is Autonomy.ACT

        # The same kind of proposal now acts without review: trust was earned.
        await produce(settings, settings.topics.proposals, [orjson.dumps(proposal("p-med-next", "r99",
                                                                                   {"lifecyclestage": "lead"}))])
        await until(lambda: service.store.get("p-med-next") is not None)
        record = service.store.get("p-med-next")
        assert record is not None and record.status is ReviewStatus.APPROVED and record.via == "gate"
        assert record.gate["level"] == "act" and record.gate["trust"] >= 0.8

        approved = await read_topic(settings, settings.topics.approved, lambda m: len(m) >= 22)
        decisions = {v["proposal_id"]: v["decision"] for _, v in approved}
        assert decisions["p-low"] == "auto" and decisions["p-med-next"] == "auto"
        assert sum(1 for d in decisions.values() if d == "approved") == 20
        assert {k for k, _ in approved} == {b"enricher"}

        feedback = await read_topic(settings, settings.topics.feedback, lambda m: bool(of_type("autonomy")(m)))
        moves = of_type("autonomy")(feedback)
        assert [(m["tier"], m["from"], m["to"]) for m in moves] == [("medium", "propose", "act")]
        reviews = of_type("review")(feedback)
        assert len(reviews) == 20 and reviews[0]["reason_category"] == "approved"
    finally:
        await runner.stop()


async def test_approving_via_the_api_publishes_to_crm_approved(kafka_bootstrap: str, unique: str) -> None:
    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)
    service = ReviewService(settings, POLICY, current_value=lambda key, field: "VP Sales")
    await service.start()
    app = web.Application()
    app[REVIEW] = service
    add_routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for pid, fields in [("a1", {"lifecyclestage": "customer"}), ("a2", {"lifecyclestage": "lead"}),
                            ("a3", {"lifecyclestage": "other"})]:
            assert (await service.submit(proposal(pid, pid, fields))).pending
        resp = await client.post("/api/review/proposals/a1/approve", json={"by": "ann", "reason": "ok"})
        assert resp.status == 200 and (await resp.json())["status"] == "approved"
        resp = await client.post("/api/review/proposals/a2/modify",
                                 json={"by": "ann", "set": {"lifecyclestage": "opportunity"}})
        assert resp.status == 200 and (await resp.json())["status"] == "modified"
        resp = await client.post("/api/review/proposals/a3/reject",
                                 json={"by": "bob", "reason": "no activity", "category": "insufficient_evidence"})
        assert resp.status == 200
        approved = await read_topic(settings, settings.topics.approved, lambda m: len(m) >= 2)
        by_id = {v["proposal_id"]: v for _, v in approved}
        assert set(by_id) == {"a1", "a2"}
        assert by_id["a1"]["change"]["changes"][0]["new"] == "customer"
        assert by_id["a2"]["decision"] == "modified"
        assert by_id["a2"]["change"]["changes"][0]["new"] == "opportunity"
        feedback = await read_topic(settings, settings.topics.feedback, lambda m: len(of_type("review")(m)) >= 3)
        rejected = [v for v in of_type("review")(feedback) if v["decision"] == "rejected"][0]
        assert rejected["reason"] == "no activity" and rejected["reason_category"] == "insufficient_evidence"
        assert rejected["fields"] == [{"field": "lifecyclestage", "agent_value": "other", "human_value": None}]
        assert "decided_by" not in rejected  # who decided stays in guard.decisions
        modified = [v for v in of_type("review")(feedback) if v["decision"] == "modified"][0]
        assert modified["fields"][0]["human_value"] == "opportunity"
    finally:
        await client.close()
        await service.stop()


def override_findings(n: int, start: int) -> list[Any]:
    """Real override findings: the agent writes a job title, a human sets it back (detectors/override.py)."""
    guard = Guard(POLICY, detectors=[OverrideDetector()])
    findings = []
    for i in range(n):
        at = start + i * 600_000
        guard.process(change(f"ov{i}", {"jobtitle": "Chief Everything"}, at))
        out = guard.process(change(f"ov{i}", {"jobtitle": "Engineer"}, at + 60_000, human=True))
        findings.extend(out.overrides)
    assert len(findings) == n
    return findings


async def test_overrides_lower_trust_and_demotion_applies_to_the_next_proposal(
    kafka_bootstrap: str, unique: str
) -> None:
    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)
    service = ReviewService(settings, POLICY)
    await service.start()
    try:
        first = await service.submit(proposal("b1", "x1", {"jobtitle": "CTO"}))
        assert first.status is ReviewStatus.APPROVED and first.via == "gate"  # low tier: act
        findings = override_findings(3, int(time.time() * 1000) - 3_600_000)

        service.notify_finding(findings[0])  # the actor stage's synchronous on_finding hook
        feedback = await read_topic(settings, settings.topics.feedback, lambda m: bool(of_type("override")(m)))
        signal = of_type("override")(feedback)[0]
        assert signal["agent"] == "enricher" and signal["field"] == "jobtitle"
        assert signal["agent_value"] == "Chief Everything" and signal["human_value"] == "Engineer"
        assert signal["override_kind"] == "correct" and signal["tier"] == "low"
        assert signal["trust"] < 0.3
        assert [k for k, v in feedback if v.get("type") == "override"] == [b"enricher"]
        assert service.trust_snapshot("enricher")["tiers"]["low"]["counts"]["override"] == 1

        await service.on_override(findings[0])  # redelivery: counted once
        for finding in findings[1:]:
            service.notify_finding(finding)
        feedback = await read_topic(settings, settings.topics.feedback, lambda m: bool(of_type("autonomy")(m)))
        move = of_type("autonomy")(feedback)[0]
        assert (move["tier"], move["from"], move["to"], move["kind"]) == ("low", "act", "propose", "demotion")
        assert service.trust_snapshot("enricher")["tiers"]["low"]["counts"]["override"] == 3

        after = await service.submit(proposal("b2", "x2", {"jobtitle": "CFO"}))
        assert after.status is ReviewStatus.PENDING and after.gate["action"] == "review"
        assert "3 consecutive" in service.trust_snapshot("enricher")["history"][-1]["reason"]
    finally:
        await service.stop()


async def test_store_rebuilds_from_its_topic_after_restart(kafka_bootstrap: str, unique: str) -> None:
    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)
    first = ReviewService(settings, POLICY)
    await first.start()
    await first.submit(proposal("c1", "y1", {"lifecyclestage": "customer"}))
    await first.submit(proposal("c2", "y2", {"lifecyclestage": "lead"}))
    await first.approve("c2", "ann", "fine")
    await first.pin("enricher", "high", "observe", by="ops", reason="new model version")
    trust_before = first.trust_snapshot("enricher")
    await first.stop()

    second = ReviewService(settings, POLICY)
    await second.start()
    try:
        assert second.store.get("c1").pending  # type: ignore[union-attr]
        c2 = second.store.get("c2")
        assert c2 is not None and c2.status is ReviewStatus.APPROVED and c2.decided_by == "ann" and c2.done
        after = second.trust_snapshot("enricher")
        assert after["tiers"]["medium"]["counts"] == trust_before["tiers"]["medium"]["counts"]
        assert after["tiers"]["high"]["pinned"] == "observe"
        with pytest.raises(AlreadyDecided):
            await second.approve("c2", "bob")
        assert (await second.approve("c1", "bob")).status is ReviewStatus.APPROVED

        # A decision recorded right before a crash, its effects not produced yet (done=False) ...
        crashed = ReviewRecord(
            proposal=Proposal.model_validate(proposal("c3", "y3", {"lifecyclestage": "lead"})),
            status=ReviewStatus.APPROVED, kind="contact.lifecyclestage", tier=Tier.MEDIUM, received_at=1,
            decided_by="ann", decided_at=int(time.time() * 1000), via="human", done=False,
            applied_change=change("y3", {"lifecyclestage": "lead"}, 1).model_dump(mode="json"))
        assert second.log is not None
        await second.log.write(*encode_record(crashed))
    finally:
        await second.stop()

    third = ReviewService(settings, POLICY)  # ... is finished by the next start
    await third.start()
    try:
        c3 = third.store.get("c3")
        assert c3 is not None and c3.done
        approved = await read_topic(settings, settings.topics.approved,
                                    lambda m: any(v["proposal_id"] == "c3" for _, v in m))
        assert [v["proposal_id"] for _, v in approved].count("c3") == 1
        assert third.trust_snapshot("enricher")["tiers"]["medium"]["counts"]["approved"] == 3
    finally:
        await third.stop()


async def test_invalid_proposals_are_dead_lettered_and_the_rest_flows(kafka_bootstrap: str, unique: str) -> None:
    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)
    service = ReviewService(settings, POLICY)
    runner = ReviewServices(service)
    await runner.start()
    try:
        bad = proposal("d1", "z1", {"jobtitle": "x"})
        bad["confidence"] = 7
        await produce(settings, settings.topics.proposals,
                      [b"not json", orjson.dumps(bad), orjson.dumps(proposal("d2", "z2", {"jobtitle": "y"}))])
        await until(lambda: service.store.get("d2") is not None)
        dead = await read_topic(settings, settings.topics.deadletter, lambda m: len(m) >= 2)
        assert len(dead) == 2 and service.store.get("d1") is None
        assert runner.consumer is not None and runner.consumer.deadlettered == 2
    finally:
        await runner.stop()


async def test_agent_client_proposes_and_its_feedback_iterator_gets_decisions_and_overrides(
    kafka_bootstrap: str, unique: str
) -> None:
    """The agent side of the contract, with the client agents embed (app/client.py)."""
    from app.client import FeedbackReader, ProposalProducer

    settings = make_settings(kafka_bootstrap, unique)
    await create_topics(settings)
    service = ReviewService(settings, POLICY)
    runner = ReviewServices(service)
    await runner.start()
    try:
        async with ProposalProducer(kafka_bootstrap, "enricher", topic=settings.topics.proposals) as producer:
            pid = await producer.propose(
                {"source": "hubspot", "object_type": "contact", "source_object_type": "contact", "record_id": "c1",
                 "operation": "update", "changes": [{"field": "lifecyclestage", "new": "customer"}]},
                reason="order form signed", evidence={"activity": "email-9"}, confidence=0.7)
        await until(lambda: service.store.get(pid) is not None)
        assert service.store.get(pid).pending  # type: ignore[union-attr]
        await service.reject(pid, "ann", "no order form in the CRM", "insufficient_evidence")
        service.notify_finding(override_findings(1, int(time.time() * 1000) - 600_000)[0])

        got: list[dict[str, Any]] = []
        async with FeedbackReader(kafka_bootstrap, "enricher", topic=settings.topics.feedback,
                                  from_beginning=True) as reader:
            async def collect() -> None:
                async for message in reader:
                    got.append(message)
                    if {m["type"] for m in got} >= {"review", "override"}:
                        return
            await asyncio.wait_for(collect(), timeout=20)
        review = next(m for m in got if m["type"] == "review")
        assert review["proposal_id"] == pid and review["decision"] == "rejected"
        assert review["reason_category"] == "insufficient_evidence"
        override = next(m for m in got if m["type"] == "override")
        assert override["field"] == "jobtitle" and override["human_value"] == "Engineer"
    finally:
        await runner.stop()
