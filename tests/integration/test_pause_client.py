"""The agent-side client on a real broker: pauses arrive within a second; forged, unknown-key,
replayed, expired and wrong-agent messages are rejected; it fails safe; the CLI resumes; feedback
and proposals flow."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.client import AgentPaused, FeedbackReader, PauseGuard, ProposalProducer
from app.pause.keys import write_key_pair
from app.pause.publisher import PausePublisher
from app.pause.reader import read_to_end
from app.pause.signing import PauseSigner
from app.web.users import add_user

pytestmark = pytest.mark.kafka

AGENT = "enrich-bot"


async def create_topic(bootstrap: str, name: str, compact: bool = True) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"cleanup.policy": "compact"} if compact else {}
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
    finally:
        await admin.close()


class Rig:
    """A fresh pause topic, the guard's signer and a publisher; raw produce for attackers."""

    def __init__(self, bootstrap: str, unique: str) -> None:
        self.bootstrap = bootstrap
        self.topic = f"guard.pause.{unique}"
        self.signer = PauseSigner(Ed25519PrivateKey.generate(), "guard-1")
        self.keys = {"guard-1": self.signer.public_key}
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.publisher = PausePublisher(self.producer, self.topic, self.signer)
        self.guards: list[PauseGuard] = []

    async def __aenter__(self) -> Rig:
        await create_topic(self.bootstrap, self.topic)
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for g in self.guards:
            await g.stop()
        await self.producer.stop()

    async def guard(self, agent: str = AGENT, **kw: Any) -> PauseGuard:
        g = PauseGuard(self.bootstrap, agent, self.keys, self.topic, **kw)
        self.guards.append(g)
        assert await g.start(timeout=15)
        return g

    async def raw(self, key: str, value: bytes | None) -> None:
        await self.producer.send_and_wait(self.topic, key=key.encode(), value=value)


async def until(pred: Any, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not pred():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_a_pause_reaches_the_agent_within_a_second_and_a_resume_releases_it(
    kafka_bootstrap: str, unique: str
) -> None:
    async with Rig(kafka_bootstrap, unique) as rig:
        guard = await rig.guard()
        assert not guard.is_paused() and guard.status().why == "never_paused"
        sent = time.monotonic()
        await rig.publisher.pause(AGENT, "velocity cap exceeded", alert_id="a1")
        await until(guard.is_paused, 2)
        latency = time.monotonic() - sent
        assert latency < 1.0, latency
        assert guard.status().payload.reason == "velocity cap exceeded"  # type: ignore[union-attr]

        @guard.refuse_while_paused
        async def write_contact() -> str:
            return "written"

        with pytest.raises(AgentPaused, match="velocity cap exceeded"):
            await write_contact()
        with pytest.raises(AgentPaused):
            async with guard.write():
                pass
        waiter = asyncio.create_task(guard.wait_until_active(timeout=5))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await rig.publisher.resume(AGENT, "checked by ops", issued_by="dana")
        await waiter
        assert await write_contact() == "written"
        async with guard.write():
            pass
        assert guard.accepted.issued_by == "dana"  # type: ignore[union-attr]


async def test_state_is_read_from_the_beginning_and_other_agents_do_not_matter(
    kafka_bootstrap: str, unique: str
) -> None:
    async with Rig(kafka_bootstrap, unique) as rig:
        await rig.publisher.pause(AGENT, "first")
        await rig.publisher.resume(AGENT, "ok", issued_by="ops")
        await rig.publisher.pause(AGENT, "second")
        await rig.publisher.pause("other-bot", "not you")
        await rig.publisher.resume("other-bot", "fine", issued_by="ops")
        guard = await rig.guard()
        assert guard.is_paused() and guard.status().payload.reason == "second"  # type: ignore[union-attr]
        other = await rig.guard("other-bot")
        assert not other.is_paused()
        assert sum(guard.rejections.values()) == 0


async def test_forged_unknown_key_replayed_expired_and_wrong_agent_messages_are_rejected(
    kafka_bootstrap: str, unique: str
) -> None:
    async with Rig(kafka_bootstrap, unique) as rig:
        old_resume = await rig.publisher.resume(AGENT, "early", issued_by="ops")
        old_resume_bytes = rig.signer.sign_bytes(old_resume)
        await rig.publisher.pause(AGENT, "protected field")
        guard = await rig.guard()
        assert guard.is_paused()

        # forged: an attacker signs a resume with their own key under the trusted key id
        mallory = PauseSigner(Ed25519PrivateKey.generate(), "guard-1")
        forged = mallory.payload(
            agent=AGENT, state="active", reason="trust me", seq=10**15, issued_at=10**12, issued_by="ops"
        )
        await rig.raw(AGENT, mallory.sign_bytes(forged))
        # unknown key id
        stranger = PauseSigner(Ed25519PrivateKey.generate(), "guard-9")
        await rig.raw(
            AGENT,
            stranger.sign_bytes(
                stranger.payload(agent=AGENT, state="active", reason="x", seq=10**15, issued_at=10**12)
            ),
        )
        # replayed: a genuine resume with an old sequence number
        await rig.raw(AGENT, old_resume_bytes)
        # expired: genuine, newer, but its validity has passed
        now = int(time.time() * 1000)
        expired = rig.signer.payload(
            agent=AGENT,
            state="active",
            reason="late",
            seq=now + 10**6,
            issued_at=now - 5000,
            expires_at=now - 1000,
            issued_by="ops",
        )
        await rig.raw(AGENT, rig.signer.sign_bytes(expired))
        # wrong agent: a genuine resume of another agent, produced under this agent's key
        theirs = rig.signer.payload(
            agent="other-bot", state="active", reason="x", seq=now + 10**7, issued_at=now
        )
        await rig.raw(AGENT, rig.signer.sign_bytes(theirs))
        await until(lambda: sum(guard.rejections.values()) >= 5)
        assert dict(guard.rejections) == {
            "bad_signature": 1,
            "unknown_key": 1,
            "replayed": 1,
            "expired": 1,
            "wrong_agent": 1,
        }
        assert guard.is_paused() and guard.accepted.reason == "protected field"  # type: ignore[union-attr]

        # a genuine resume still works afterwards
        await rig.publisher.resume(AGENT, "reviewed", issued_by="ops")
        await until(lambda: not guard.is_paused())

        # a forged *pause* cannot be verified: the client reports paused (fails safe) but does not
        # take its content, and the next genuine message clears it
        fake_pause = mallory.payload(agent=AGENT, state="paused", reason="dos", seq=10**15, issued_at=10**12)
        await rig.raw(AGENT, mallory.sign_bytes(fake_pause))
        await until(guard.is_paused)
        assert guard.status().why == "unverifiable" and guard.accepted.state == "active"  # type: ignore[union-attr]
        await rig.publisher.resume(AGENT, "reconfirmed", issued_by="ops")
        await until(lambda: not guard.is_paused())


async def test_a_time_limited_resume_expires_into_paused(kafka_bootstrap: str, unique: str) -> None:
    async with Rig(kafka_bootstrap, unique) as rig:
        await rig.publisher.pause(AGENT, "cap")
        guard = await rig.guard()
        await rig.publisher.resume(
            AGENT, "one hour trial", issued_by="ops", expires_at=int(time.time() * 1000) + 1200
        )
        await until(lambda: not guard.is_paused())
        await until(guard.is_paused, 3)
        assert guard.status().why == "resume_expired"
        # a client that starts after the expiry never trusts it
        late = await rig.guard()
        assert late.is_paused() and late.status().why == "expired"


async def test_fails_safe_before_sync_when_unreachable_and_when_it_loses_the_broker(
    kafka_bootstrap: str, unique: str
) -> None:
    async with Rig(kafka_bootstrap, unique) as rig:
        nowhere = PauseGuard("127.0.0.1:1", AGENT, rig.keys, rig.topic, request_timeout_ms=1000)
        assert nowhere.is_paused()  # before start
        assert not await nowhere.start(timeout=1.5)
        assert nowhere.is_paused() and nowhere.status().why == "not_synced"
        await nowhere.stop()

        strict = await rig.guard(require_state=True)
        assert strict.is_paused() and strict.status().why == "no_state"

        # Losing the broker: the shared test broker cannot be stopped here, so the client's
        # confirmation call is made to fail the way an unreachable broker makes it fail.
        guard = await rig.guard(stale_after=0.6, check_interval=0.2)
        assert not guard.is_paused()
        consumer = guard._consumer
        assert consumer is not None
        real = consumer.end_offsets

        async def unreachable(*_: Any) -> Any:
            await asyncio.sleep(10)

        consumer.end_offsets = unreachable  # type: ignore[method-assign]
        waited = await until(guard.is_paused, 3)
        assert guard.status().why == "disconnected" and waited < 1.5
        consumer.end_offsets = real  # type: ignore[method-assign]
        await until(lambda: not guard.is_paused(), 3)


def _cli_args(argv: list[str]) -> argparse.Namespace:
    from app import cli_agents

    parser = argparse.ArgumentParser(prog="crm-guard")
    cli_agents.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


async def test_resume_from_the_cli_reaches_the_agent_and_is_recorded(
    kafka_bootstrap: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    priv, pub = write_key_pair(tmp_path / "keys", "ops-1")
    feedback, alerts = f"guard.feedback.{unique}", f"guard.alerts.{unique}"
    for name, value in {
        "BOOTSTRAP_SERVERS": kafka_bootstrap,
        "PAUSE_PRIVATE_KEY_FILE": str(priv),
        "PAUSE_KEY_ID": "ops-1",
        "TOPIC_PAUSE": f"guard.pause.{unique}",
        "TOPIC_FEEDBACK": feedback,
        "TOPIC_ALERTS": alerts,
        "STATE_DIR": str(tmp_path / "state"),
    }.items():
        monkeypatch.setenv(f"CRM_GUARD_{name}", value)
    monkeypatch.delenv("CRM_GUARD_CONFIG", raising=False)
    async with Rig(kafka_bootstrap, unique) as rig:
        from app.pause.keys import load_private_key

        rig.signer = PauseSigner(load_private_key(priv), "ops-1")
        rig.publisher = PausePublisher(rig.producer, rig.topic, rig.signer)
        rig.keys = {"ops-1": pub.read_text()}
        await create_topic(kafka_bootstrap, alerts, compact=False)
        await rig.publisher.pause(AGENT, "mass overwrite of utm_source", alert_id="a1")
        alert = {
            "dedup_key": "mass_overwrite:a1",
            "version": 2,
            "agent": AGENT,
            "status": "open",
            "kind": "mass_overwrite",
            "severity": "critical",
            "last_event_at": 1_767_225_600_000,
        }
        await rig.producer.send_and_wait(alerts, key=b"mass_overwrite:a1", value=orjson.dumps(alert))
        guard = await rig.guard()
        assert guard.is_paused()
        reader = FeedbackReader(kafka_bootstrap, AGENT, feedback, from_beginning=True)

        args = _cli_args(["agents", "list", "--json"])
        assert await asyncio.to_thread(args.func, args) == 0
        listed = orjson.loads(capsys.readouterr().out)
        assert (
            listed[0]["agent"] == AGENT and listed[0]["state"] == "paused" and listed[0]["open_alerts"] == 1
        )

        args = _cli_args(["agents", "resume", AGENT, "--reason", "overwrites reverted", "--by", "dana"])
        assert await asyncio.to_thread(args.func, args) == 0
        assert "resumed enrich-bot (was paused) by dana" in capsys.readouterr().out
        await until(lambda: not guard.is_paused(), 2)
        assert guard.accepted.issued_by == "dana"  # type: ignore[union-attr]

        async with reader:
            record = await asyncio.wait_for(reader.__anext__(), 5)
        assert (
            record["type"] == "resume" and record["by"] == "dana" and record["previous"]["state"] == "paused"
        )

        args = _cli_args(["agents", "list"])
        assert await asyncio.to_thread(args.func, args) == 0
        table = capsys.readouterr().out
        assert "enrich-bot" in table and "active" in table and "dana" in table

        args = _cli_args(["agents", "resume", "no-such-bot", "--reason", "x"])
        assert await asyncio.to_thread(args.func, args) == 2
        assert "unknown agent 'no-such-bot'" in capsys.readouterr().err

        monkeypatch.delenv("CRM_GUARD_PAUSE_PRIVATE_KEY_FILE")
        args = _cli_args(["agents", "resume", AGENT, "--reason", "x"])
        assert await asyncio.to_thread(args.func, args) == 2
        assert "no pause signing key" in capsys.readouterr().err


async def test_feedback_reader_sees_only_its_agent_and_proposals_have_the_agreed_shape(
    kafka_bootstrap: str, unique: str
) -> None:
    feedback, proposals = f"guard.feedback.{unique}", f"crm.proposals.{unique}"
    await create_topic(kafka_bootstrap, feedback, compact=False)
    await create_topic(kafka_bootstrap, proposals, compact=False)
    async with FeedbackReader(kafka_bootstrap, AGENT, feedback) as reader:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(feedback, key=b"other-bot", value=b'{"type":"override","n":0}')
            await producer.send_and_wait(feedback, key=AGENT.encode(), value=b"not json")
            await producer.send_and_wait(
                feedback, key=AGENT.encode(), value=b'{"type":"override","field":"dealstage","n":1}'
            )
        finally:
            await producer.stop()
        got = await asyncio.wait_for(reader.__anext__(), 5)
    assert got == {"type": "override", "field": "dealstage", "n": 1}

    change = {
        "source": "hubspot",
        "object_type": "deal",
        "source_object_type": "deals",
        "record_id": "77",
        "operation": "update",
        "changes": [{"field": "dealstage", "new": "closedwon"}],
    }
    async with ProposalProducer(kafka_bootstrap, AGENT, proposals) as proposer:
        pid = await proposer.propose(change, "customer signed", evidence={"email_id": "m-1"}, confidence=0.9)
        assert await proposer.propose(change, "customer signed", confidence=0.9) == pid  # retry: same id
        with pytest.raises(ValueError):
            await proposer.propose(change, "x", confidence=1.5)
    messages = [r async for r in read_to_end(kafka_bootstrap, proposals)]
    assert len(messages) == 2 and messages[0].key == AGENT.encode()
    value = orjson.loads(messages[0].value)
    assert set(value) == {"proposal_id", "agent", "change", "reason", "evidence", "confidence", "proposed_at"}
    assert value["proposal_id"] == pid and value["change"]["actor"]["kind"] == "agent"
    assert value["change"]["actor"]["id"] == AGENT and value["change"]["changes"][0]["field"] == "dealstage"


async def test_the_guard_side_follower_sees_every_agents_latest_verified_state(
    kafka_bootstrap: str, unique: str
) -> None:
    from app.pause.publisher import PauseTopicFollower
    from app.pause.signing import PauseVerifier

    async with Rig(kafka_bootstrap, unique) as rig:
        await rig.publisher.pause(AGENT, "cap")
        await rig.publisher.pause("other-bot", "scope")
        seen: list[tuple[str, str]] = []
        follower = PauseTopicFollower(
            kafka_bootstrap,
            rig.topic,
            PauseVerifier({"guard-1": rig.signer.public_key}),
            on_state=lambda p: seen.append((p.agent, p.state)),
        )
        await follower.start()
        try:
            await until(lambda: len(seen) == 2)
            assert follower.paused_agents() == [AGENT, "other-bot"]
            mallory = PauseSigner(Ed25519PrivateKey.generate(), "guard-1")
            forged = mallory.payload(agent=AGENT, state="active", reason="x", seq=10**15, issued_at=10**12)
            await rig.raw(AGENT, mallory.sign_bytes(forged))
            await rig.publisher.resume(AGENT, "fixed", issued_by="ops")
            await until(lambda: len(seen) == 3)
            assert seen[-1] == (AGENT, "active") and follower.rejected == 1
            assert follower.paused_agents() == ["other-bot"]
        finally:
            await follower.stop()


async def test_an_old_resume_written_after_the_pause_is_answered_with_the_pause(
    kafka_bootstrap: str, unique: str
) -> None:
    """guard.pause is compacted: only each agent's last message survives, and an agent starting
    after compaction sees nothing else. A genuine old resume sent again after the pause would
    survive and release a new agent; the guard's follower writes the pause again after it."""
    from app.pause.publisher import PauseTopicFollower
    from app.pause.signing import PauseVerifier

    async with Rig(kafka_bootstrap, unique) as rig:
        old_resume = await rig.publisher.resume(AGENT, "early", issued_by="ops")
        await rig.publisher.pause(AGENT, "protected field")
        follower = PauseTopicFollower(kafka_bootstrap, rig.topic, PauseVerifier({"guard-1": rig.signer.public_key}),
                                      republish=rig.raw)
        await follower.start()
        try:
            await until(lambda: follower.paused_agents() == [AGENT])
            stranger = PauseSigner(Ed25519PrivateKey.generate(), "guard-9")  # unverifiable: not answered
            await rig.raw(AGENT, stranger.sign_bytes(stranger.payload(agent=AGENT, state="active", reason="x",
                                                                      seq=10**15, issued_at=10**12)))
            await rig.publisher.pause("other-bot", "scope")  # something after it, to know it was read
            await until(lambda: "other-bot" in follower.paused_agents())
            assert follower.republished == 0 and follower.rejected == 1
            await rig.raw(AGENT, rig.signer.sign_bytes(old_resume))  # the replay
            await until(lambda: follower.republished == 1)
            await rig.publisher.resume("other-bot", "fine", issued_by="ops")  # read past the copy: no loop
            await until(lambda: follower.paused_agents() == [AGENT])
            assert follower.republished == 1
        finally:
            await follower.stop()

        survivors: dict[bytes, bytes] = {}  # what compaction keeps: the last message per key
        async for record in read_to_end(kafka_bootstrap, rig.topic):
            survivors[record.key] = record.value
        compacted = Rig(kafka_bootstrap, f"{unique}.compacted")
        compacted.signer, compacted.keys = rig.signer, rig.keys
        async with compacted:
            for key, value in survivors.items():
                await compacted.raw(key.decode(), value)
            guard = await compacted.guard()  # an agent starting after compaction
            assert guard.is_paused() and guard.accepted.reason == "protected field"  # type: ignore[union-attr]


async def test_resume_over_http_reaches_the_agent_and_refusals_say_why(
    kafka_bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST /api/agents/{agent}/resume on the guard's own web app: the agent goes on; an unknown
    agent is 404; with named users only an operator resumes, under their own name; a guard without the pause key answers 503 cannot_resume; a broker that is not
    there answers 503 broker_unavailable (not a bare 500)."""
    import socket

    from aiohttp.test_utils import TestClient, TestServer

    from app.config import Settings, load_settings
    from app.pause.keys import load_private_key
    from app.runtime.worker import AlertBoard
    from app.web.server import build_web_app
    from detectors.policy import AgentPolicy, Policy

    priv, pub = write_key_pair(tmp_path / "keys", "ops-1")
    for name, value in {"BOOTSTRAP_SERVERS": kafka_bootstrap, "PAUSE_PRIVATE_KEY_FILE": str(priv),
                        "PAUSE_KEY_ID": "ops-1", "TOPIC_PAUSE": f"guard.pause.{unique}",
                        "TOPIC_FEEDBACK": f"guard.feedback.{unique}", "STATE_DIR": str(tmp_path / "state")}.items():
        monkeypatch.setenv(f"CRM_GUARD_{name}", value)
    monkeypatch.delenv("CRM_GUARD_CONFIG", raising=False)

    async def client_for(settings: Settings) -> TestClient:
        app = build_web_app({"settings": settings, "policy": Policy(agents={AGENT: AgentPolicy()}),
                             "runtime": None, "board": AlertBoard()})
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        return client

    body = {"reason": "overwrites reverted", "by": "dana"}
    async with Rig(kafka_bootstrap, unique) as rig:
        rig.signer = PauseSigner(load_private_key(priv), "ops-1")
        rig.publisher = PausePublisher(rig.producer, rig.topic, rig.signer)
        rig.keys = {"ops-1": pub.read_text()}
        await rig.publisher.pause(AGENT, "mass overwrite of utm_source", alert_id="a1")
        guard = await rig.guard()
        assert guard.is_paused()
        client = await client_for(load_settings())
        try:
            answer = await client.post(f"/api/agents/{AGENT}/resume", json=body)
            assert answer.status == 200 and (await answer.json())["state"] == "active"
            await until(lambda: not guard.is_paused(), 3)
            unknown = await client.post("/api/agents/no-such-bot/resume", json=body)
            assert unknown.status == 404 and (await unknown.json())["error"] == "unknown_agent"
        finally:
            await client.close()

        # named users: a reviewer may not resume; an operator's resume is signed with their name
        users = tmp_path / "users"
        reviewer, operator = add_user(users, "ann", "reviewer"), add_user(users, "ops-oncall", "operator")
        monkeypatch.setenv("CRM_GUARD_API_USERS_FILE", str(users))
        await rig.publisher.pause(AGENT, "mass overwrite again", alert_id="a2")
        await until(guard.is_paused, 3)
        client = await client_for(load_settings())
        try:
            assert (await client.post(f"/api/agents/{AGENT}/resume", json=body)).status == 401
            refused = await client.post(f"/api/agents/{AGENT}/resume", json=body,
                                        headers={"Authorization": f"Bearer {reviewer}"})
            assert refused.status == 403 and guard.is_paused()
            answer = await client.post(f"/api/agents/{AGENT}/resume", json={"reason": "checked"},  # no "by"
                                       headers={"Authorization": f"Bearer {operator}"})
            assert answer.status == 200, await answer.text()
            await until(lambda: not guard.is_paused(), 3)
            assert guard.accepted.issued_by == "ops-oncall"  # type: ignore[union-attr]
        finally:
            await client.close()
        monkeypatch.delenv("CRM_GUARD_API_USERS_FILE")

    async def refusal() -> tuple[int, str]:
        client = await client_for(load_settings())
        try:
            answer = await client.post(f"/api/agents/{AGENT}/resume", json=body)
            return answer.status, (await answer.json())["error"]
        finally:
            await client.close()

    monkeypatch.delenv("CRM_GUARD_PAUSE_PRIVATE_KEY_FILE")
    assert await refusal() == (503, "cannot_resume")
    monkeypatch.setenv("CRM_GUARD_PAUSE_PRIVATE_KEY_FILE", str(priv))
    with socket.socket() as sock:  # a port nothing listens on: the broker is gone
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("CRM_GUARD_BOOTSTRAP_SERVERS", dead)
    assert await refusal() == (503, "broker_unavailable")
