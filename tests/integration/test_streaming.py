"""The streaming guard on a real broker: raw topics to alerts and pauses, dead letters, partitions,
two workers against one, and restart with state restored from the changelogs."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest

from app.pause.keys import signing_key_from_settings
from app.runtime.assembly import build_runtime
from app.runtime.model_checkpoints import agent_of
from app.runtime.topics import changelog_topic
from tests.integration.helpers_stream import (
    T0, agent_burst, alert_values, fresh_settings, hubspot_change, produce, read_topic, guard_policy, wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


async def start_runtime(settings: Any, kafka_kind: str) -> Any:
    runtime, _ = build_runtime(settings, guard_policy(), idempotent=kafka_kind == "apache")
    await runtime.start()
    await asyncio.wait_for(runtime.ready.wait(), 60)
    return runtime


async def alerts_of(settings: Any) -> list[dict[str, Any]]:
    return alert_values(await read_topic(settings.bootstrap_servers, settings.topics.alerts))


async def test_raw_vendor_payloads_flow_to_alerts_and_a_signed_pause(kafka_bootstrap: str, unique: str, kafka_kind: str) -> None:
    settings = fresh_settings(kafka_bootstrap, unique)
    runtime = await start_runtime(settings, kafka_kind)
    try:
        batches = agent_burst(25)  # cap is 20 distinct records per hour for enrich-bot
        batches.append([hubspot_change(900, 5000, "utm_source", "enriched", T0 + 60_000)])  # denied field
        await produce(kafka_bootstrap, settings.topics.raw_hubspot, [orjson.dumps(b) for b in batches])

        async def kinds() -> set[str]:
            return {a["kind"] for a in await alerts_of(settings)}

        found = await wait_for(lambda: _has(kinds, {"velocity_cap", "protected_field"}), 60)
        assert found
        alerts = await alerts_of(settings)
        velocity = [a for a in alerts if a["kind"] == "velocity_cap"]
        assert velocity[0]["agent"] == "enrich-bot" and velocity[0]["severity"] == "critical"
        assert velocity[0]["details"]["count"] == 21  # decided on the record that crossed the cap
        pauses = await read_topic(kafka_bootstrap, settings.topics.pause)
        assert len(pauses) == 1 and pauses[0].key == b"enrich-bot"
        # an old signed resume written after the pause would be all an agent starting after
        # compaction sees: the worker writes the pause again after it
        signer = signing_key_from_settings(settings, create=False).signer()
        old = signer.payload(agent="enrich-bot", state="active", reason="old", seq=1, issued_at=T0)
        await produce(kafka_bootstrap, settings.topics.pause, [signer.sign_bytes(old)], key=b"enrich-bot")

        async def last_pause_message() -> bool:
            records = await read_topic(kafka_bootstrap, settings.topics.pause)
            return len(records) == 3 and records[-1].value == pauses[0].value

        assert await wait_for(last_pause_message, 20)
        timeline = await read_topic(kafka_bootstrap, settings.topics.timeline)
        values = [orjson.loads(r.value) for r in timeline]
        assert sum(len(v) for v in values if isinstance(v, list)) == 26  # one row per field change
        attached = [f["detector"] for v in values if isinstance(v, dict) for f in v["findings"]]
        assert "velocity_cap" in attached and "protected_field" in attached
    finally:
        await runtime.stop()


async def _has(kinds: Any, wanted: set[str]) -> bool:
    return wanted <= await kinds()


async def test_poison_messages_are_dead_lettered_with_origin_and_the_stage_goes_on(
    kafka_bootstrap: str, unique: str, kafka_kind: str
) -> None:
    settings = fresh_settings(kafka_bootstrap, unique, partitions=1)
    runtime = await start_runtime(settings, kafka_kind)
    try:
        good = orjson.dumps([hubspot_change(1, 77, "jobtitle", "CTO", T0, source="CRM_UI", source_id="userId:5")])
        bad_element = orjson.dumps([hubspot_change(2, 78, "jobtitle", "x", T0), {"eventId": 3, "subscriptionType": "contact.propertyChange"}])
        await produce(kafka_bootstrap, settings.topics.raw_hubspot, [b"{not json", good, bad_element])
        await produce(kafka_bootstrap, settings.topics.changes, [b'{"event_id": "x"}'])

        async def dead() -> list[Any]:
            records = await read_topic(kafka_bootstrap, settings.topics.deadletter)
            return records if len(records) >= 3 else []

        records = await wait_for(dead, 60)
        assert len(records) == 3
        headers = [dict(r.headers) for r in records]
        reasons = sorted(h["reason"].decode().split(":")[0] for h in headers)
        assert reasons[0] == "invalid_event" and "not_json" in reasons
        first = next(h for h in headers if h["reason"] == b"not_json")
        assert first["origin_topic"].decode() == settings.topics.raw_hubspot and first["origin_offset"] == b"0"
        assert any(r.value == b"{not json" for r in records)  # the original bytes are kept

        async def changes() -> list[Any]:
            records = await read_topic(kafka_bootstrap, settings.topics.timeline)
            rows = [row for r in records for row in orjson.loads(r.value) if isinstance(row, dict) and "field" in row]
            return rows if len(rows) >= 2 else []

        assert len(await wait_for(changes, 30)) == 2  # the good event and the good batch element went on
    finally:
        await runtime.stop()


async def test_two_workers_and_workers_split_by_stage_give_the_same_alerts_as_one(kafka_bootstrap: str, unique: str, kafka_kind: str) -> None:
    payloads = [orjson.dumps(b) for b in agent_burst(45)]
    payloads += [orjson.dumps([hubspot_change(500 + i, 7000 + i, "utm_source", "x", T0 + i) for i in range(3)])]
    payloads += [orjson.dumps([hubspot_change(600 + i, 8000 + i, "city", "Oslo", T0 + i, source="API", source_id="31337")
                               for i in range(5)])]

    async def run(workers: int, tag: str, stage_sets: list[list[str]] | None = None) -> Counter[tuple[str, str, str]]:
        settings = fresh_settings(kafka_bootstrap, f"{unique}{tag}", partitions=4)
        sets = stage_sets or [settings.stages] * workers
        runtimes = [await start_runtime(settings.with_overrides(stages=s), kafka_kind) for s in sets]
        try:
            await produce(kafka_bootstrap, settings.topics.raw_hubspot, payloads)

            async def settled() -> bool:
                return sum(r.stages[3].observations for r in runtimes) >= 45 + 3 + 5

            assert await wait_for(settled, 90)
            await asyncio.sleep(2)
            alerts = await alerts_of(settings)
            return Counter((a["kind"], a["actor_key"], a["group"]) for a in alerts if a["version"] == 1)
        finally:
            for r in runtimes:
                await r.stop()

    one = await run(1, "a")
    two = await run(2, "b")
    by_stage = await run(2, "c", [["ingest", "record"], ["link", "actor"]])  # one process per half
    assert one == two == by_stage
    assert {k[0] for k in one} >= {"velocity_cap", "protected_field", "unattributed_actor"}


async def test_restarted_worker_restores_state_from_the_changelog(kafka_bootstrap: str, unique: str, kafka_kind: str) -> None:
    settings = fresh_settings(kafka_bootstrap, unique, partitions=2)
    runtime = await start_runtime(settings, kafka_kind)
    try:
        await produce(kafka_bootstrap, settings.topics.raw_hubspot, [orjson.dumps(b) for b in agent_burst(15)])
        assert await wait_for(lambda: _processed(runtime, 15), 60)
    finally:
        await runtime.stop()
    restarted = await start_runtime(settings, kafka_kind)
    try:
        # 10 more distinct records: only a worker that remembers the first 15 sees 25 > 20.
        await produce(kafka_bootstrap, settings.topics.raw_hubspot, [orjson.dumps(b) for b in agent_burst(10, start_id=100)])
        assert await wait_for(lambda: _processed(restarted, 10), 60)
        await asyncio.sleep(1)
        kinds = [a["kind"] for a in await alerts_of(settings)]
        assert "velocity_cap" in kinds
    finally:
        await restarted.stop()


async def test_restarted_worker_keeps_the_learned_activity_models(kafka_bootstrap: str, unique: str, kafka_kind: str) -> None:
    """activity_anomaly's river models are checkpointed in the actor changelog while the worker
    runs and when it stops: a restarted worker goes on from them instead of warming up again."""
    # One partition: the agent's changes reach the actor stage in event-time order, so exactly 11
    # windows close. model_checkpoint_s is the default 60 s: the first model is written with a
    # batch, the later ones only when the worker stops.
    settings = fresh_settings(kafka_bootstrap, unique, partitions=1)
    # enrich-bot changes a record a minute for an hour: 11 of its 5-minute windows close.
    events = [hubspot_change(i, 7000 + i, "jobtitle", f"t{i}", T0 + i * 60_000) for i in range(60)]
    runtime = await start_runtime(settings, kafka_kind)
    try:
        await produce(kafka_bootstrap, settings.topics.raw_hubspot,
                      [orjson.dumps(events[i:i + 5]) for i in range(0, 60, 5)])
        assert await wait_for(lambda: _processed(runtime, 60), 60)
        checkpoints = runtime.stages[3].checkpoints
        learned = checkpoints.holder.learned("enrich-bot")
        assert learned == 11
        # The first checkpoint was written with a batch (a crash keeps it), not only on stop.
        changelog = await read_topic(kafka_bootstrap, changelog_topic(settings, "actor"))
        assert any(agent_of(r.key) == "enrich-bot" for r in changelog)
    finally:
        await runtime.stop()
    restarted = await start_runtime(settings, kafka_kind)
    try:
        restored = restarted.stages[3].checkpoints

        async def caught_up() -> bool:
            return restored.holder.learned("enrich-bot") == learned

        assert await wait_for(caught_up, 60), restored.holder.learned("enrich-bot")
        assert restored.restored >= 1
    finally:
        await restarted.stop()


async def _processed(runtime: Any, n: int) -> bool:
    return runtime.stages[3].observations >= n


async def test_state_past_its_retention_is_dropped_and_tombstoned_in_the_changelog(
        kafka_bootstrap: str, unique: str, kafka_kind: str) -> None:
    """record_state keeps a record 90 days after its last change (the shipped retention): a change
    100 days of event time later drops it, and the changelog says so (a restore would not bring
    it back)."""
    settings = fresh_settings(kafka_bootstrap, unique, partitions=1)
    day = 86_400_000
    runtime = await start_runtime(settings, kafka_kind)
    try:
        for n, (object_id, at) in enumerate(((5001, T0), (5002, T0 + 100 * day)), start=1):
            change = hubspot_change(n, object_id, "jobtitle", f"t{n}", at, source="CRM_UI", source_id="userId:7")
            await produce(kafka_bootstrap, settings.topics.raw_hubspot, [orjson.dumps([change])])
            assert await wait_for(lambda n=n: _processed(runtime, n), 60)
        record = runtime.stages[1]
        held = {key for state in record.partitions.values() for key in state["record_state"].data}
        assert held == {"hubspot/contact/5002"}
        assert record.compacted >= 1
        latest = {r.key: r.value for r in await read_topic(kafka_bootstrap, changelog_topic(settings, "record"))}
        assert b"record_state\x1fhubspot/contact/5001" in latest
        assert latest[b"record_state\x1fhubspot/contact/5001"] is None
        assert latest[b"record_state\x1fhubspot/contact/5002"] is not None
    finally:
        await runtime.stop()


async def test_a_paused_agents_proposals_wait_for_review_instead_of_being_applied(
    kafka_bootstrap: str, unique: str, kafka_kind: str
) -> None:
    """enrich-bot may apply low-tier changes itself (autonomy act), until it is paused: then its
    proposals wait in the review queue, with the reason."""
    from app.client import ProposalProducer

    settings = fresh_settings(kafka_bootstrap, unique)
    runtime, shared = build_runtime(settings, guard_policy(), idempotent=kafka_kind == "apache")
    await runtime.start()
    await asyncio.wait_for(runtime.ready.wait(), 60)
    review = shared["review"]
    change = {"source": "hubspot", "object_type": "contact", "source_object_type": "contact",
              "operation": "update", "changes": [{"field": "jobtitle", "new": "CTO"}]}
    try:
        async with ProposalProducer(kafka_bootstrap, "enrich-bot", settings.topics.proposals) as agent:
            before = await agent.propose({**change, "record_id": "41"}, "seen on the company site")

            async def decided() -> Any:
                return review.store.get(before)

            record = await wait_for(decided, 30)
            assert record.status.value == "approved" and record.via == "gate"  # not paused: applied

            await produce(kafka_bootstrap, settings.topics.raw_hubspot, [orjson.dumps(b) for b in agent_burst(25)])

            async def paused() -> bool:
                return "enrich-bot" in runtime.board.paused

            assert await wait_for(paused, 60)
            after = await agent.propose({**change, "record_id": "42"}, "seen on the company site")

            async def queued() -> Any:
                return review.store.get(after)

            record = await wait_for(queued, 30)
            assert record.status.value == "pending" and "enrich-bot is paused" in record.gate["reason"]
    finally:
        await runtime.stop()
