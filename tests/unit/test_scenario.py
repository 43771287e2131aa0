"""The scenario generator: deterministic by seed, every fault class in truth, real vendor formats
(every line goes through app.adapters), a policy that attributes every benign identity, and the
benign look-alikes present and within their bounds."""

from __future__ import annotations

import argparse
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.adapters import decode_line, normalize
from app.policy_file import load_policy
from app.scenario import FAULT_CLASSES, LOOKALIKE_CLASSES, ScenarioConfig, generate, load_truth
from app.scenario.pools import email_variant, phone_formatted, salesforce_id
from app.scenario.world import AGENT_CAP, AGENTS, Bag, Window, is_business, next_business
from detectors.attribution import Attributor
from detectors.events import ActorKind, ChangeEvent
from detectors.identity import normalize_email, normalize_phone

VENDORS = ("hubspot", "salesforce", "pipedrive")
DEMO_DIR = Path(__file__).resolve().parents[2] / "app" / "demo"
HOUR = 3_600_000


def _small(seed: int = 5, **kw: Any) -> ScenarioConfig:
    """Eight days (Monday to Monday: an import, bulk edits), a third of the standard team, compact faults."""
    base = dict(
        seed=seed, days=8.0, scale=0.3, warmup_days=1.0, fault_plan="compact", burst_records=100, name="test"
    )
    base.update(kw)
    return ScenarioConfig(**base)  # type: ignore[arg-type]


def _events(directory: Path) -> dict[str, list[ChangeEvent]]:
    out: dict[str, list[ChangeEvent]] = {}
    for vendor in VENDORS:
        out[vendor] = [
            e
            for line in (directory / f"{vendor}.jsonl").read_bytes().splitlines()
            for e in normalize(decode_line(line), vendor)
        ]
    return out


@pytest.fixture(scope="module")
def small(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any], dict[str, list[ChangeEvent]]]:
    directory = tmp_path_factory.mktemp("scenario")
    generate(_small(), directory)
    return directory, load_truth(directory / "truth.json"), _events(directory)


# ---- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    config = _small(seed=11, days=3.0)
    generate(config, tmp_path / "a")
    generate(config, tmp_path / "b")
    for name in ("hubspot.jsonl", "salesforce.jsonl", "pipedrive.jsonl", "policy.yaml", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_another_seed_gives_other_traffic(tmp_path: Path) -> None:
    generate(_small(seed=11, days=3.0), tmp_path / "a")
    generate(_small(seed=12, days=3.0), tmp_path / "b")
    assert (tmp_path / "a" / "hubspot.jsonl").read_bytes() != (tmp_path / "b" / "hubspot.jsonl").read_bytes()


def test_bundled_demo_is_what_make_demo_generates(tmp_path: Path) -> None:
    """app/demo is committed output of scripts/make_demo.py: regenerating it must change nothing."""
    if not (DEMO_DIR / "truth.json").exists():
        pytest.skip("app/demo not generated yet (python scripts/make_demo.py)")
    truth = load_truth(DEMO_DIR / "truth.json")
    generate(ScenarioConfig.preset("demo", seed=truth["seed"]), tmp_path)
    for name in ("hubspot.jsonl", "salesforce.jsonl", "pipedrive.jsonl", "policy.yaml", "truth.json"):
        assert (tmp_path / name).read_bytes() == (DEMO_DIR / name).read_bytes(), f"app/demo/{name} is stale"
    assert (
        sum(
            (DEMO_DIR / n).stat().st_size
            for n in ("hubspot.jsonl", "salesforce.jsonl", "pipedrive.jsonl", "policy.yaml", "truth.json")
        )
        < 2_300_000
    )


# ---- truth ---------------------------------------------------------------------------------------


def test_every_fault_class_in_every_vendor(small: Any) -> None:
    _, truth, _ = small
    seen = {(f["class"], f["vendor"]) for f in truth["faults"] if f["changes"]}
    assert seen == {(c, v) for c in FAULT_CLASSES for v in VENDORS}
    for fault in truth["faults"]:
        assert fault["start"] <= fault["end"]
        assert fault["expected_detectors"]
        assert all(c["event_id"] for c in fault["changes"]), fault["id"]


def test_truth_event_ids_are_the_ids_the_adapters_derive(small: Any) -> None:
    _, truth, events = small
    by_id = {e.event_id: e for evs in events.values() for e in evs}
    for fault in truth["faults"]:
        for change in fault["changes"] + fault["reverts"]:
            event = by_id.get(change["event_id"])
            assert event is not None, (fault["id"], change["event_id"])
            assert event.record_id == change["record_id"] and event.occurred_at == change["at"]
            assert event.object_type.value == change["object_type"]
            if change["native_field"]:
                assert change["native_field"] in {c.field for c in event.changes}, (fault["id"], change)
            for other in change.get("event_ids") or []:
                assert by_id[other].record_id == change["record_id"]


def test_fault_changes_are_what_the_class_says(small: Any) -> None:
    _, truth, events = small
    by_id = {e.event_id: e for evs in events.values() for e in evs}
    faults = {(f["class"], f["vendor"]): f for f in truth["faults"]}
    for vendor in VENDORS:
        drip = faults[("slow_drip_overwrite", vendor)]
        assert all(c["new"] == "enriched" and c["old"] not in (None, "", "enriched") for c in drip["changes"])
        gaps = [b["at"] - a["at"] for a, b in zip(drip["changes"], drip["changes"][1:], strict=False)]
        assert min(gaps) >= 20 * 60_000 and max(gaps) <= 30 * 60_000  # 2-3 an hour: under every cap
        blank = faults[("silent_blanking", vendor)]
        assert all(c["old"] not in (None, "") and c["new"] in (None, "") for c in blank["changes"])
        commission = faults[("commission_field_write", vendor)]
        assert {c["field"] for c in commission["changes"]} <= {"amount", "closedate", "owner"}
        burst = faults[("velocity_burst", vendor)]
        over = [c for c in burst["changes"] if c["over_cap"]]
        assert len({c["record_id"] for c in burst["changes"]}) > AGENT_CAP and over
        assert burst["faulty_changes"] == len(over)
        stage = faults[("wrong_stage_after_support", vendor)]
        assert stage["related_records"], "each wrong move follows a support ticket"
        for c in stage["changes"]:
            assert c["field"] == "stage"
        for r in stage["reverts"]:
            assert by_id[r["event_id"]].actor.kind in (ActorKind.HUMAN, ActorKind.UNKNOWN)
        unknown = faults[("unknown_integration", vendor)]
        assert unknown["agent"] is None and unknown["actor_key"].startswith(f"unknown:{vendor}:")


def test_duplicates_match_their_originals_only_after_normalization(small: Any) -> None:
    directory, truth, events = small
    by_id = {e.event_id: e for evs in events.values() for e in evs}
    for fault in truth["faults"]:
        if fault["class"] != "duplicate_creation":
            continue
        originals = {rid for rid in fault["related_records"]}
        assert len(originals) == len(fault["changes"])
        for change in fault["changes"]:
            event = by_id[change["event_id"]]
            assert event.operation in ("create", "update")
        # raw e-mails differ from the originals', normalized ones agree (read from the vendor files)
        emails: dict[str, list[str]] = {}
        for e in events[fault["vendor"]]:
            for c in e.changes:
                if c.field.lower() in ("email", "emails"):
                    value = c.new[0]["value"] if isinstance(c.new, list) and c.new else c.new
                    if isinstance(value, str):
                        emails.setdefault(e.record_id, []).append(value)
        dup_ids = [c["record_id"] for c in fault["changes"]]
        for dup, orig in zip(dup_ids, fault["related_records"], strict=True):
            assert emails[dup][-1] != emails[orig][0]
            assert normalize_email(emails[dup][-1]) == normalize_email(emails[orig][0])


def test_truth_holds_no_email_or_phone(small: Any) -> None:
    directory, _, _ = small
    text = (directory / "truth.json").read_text()
    assert "@" not in text
    assert "+1" not in text


def test_no_record_is_touched_before_its_creation(small: Any) -> None:
    """Event time is consistent: a record's first event is its creation (when the scenario made it)."""
    _, _, events = small
    for evs in events.values():
        first: dict[str, ChangeEvent] = {}
        created: dict[str, int] = {}
        for event in evs:
            if event.operation == "create":
                created.setdefault(event.record_key, event.occurred_at)
            held = first.get(event.record_key)
            if held is None or event.occurred_at < held.occurred_at:
                first[event.record_key] = event
        for key, at in created.items():
            assert first[key].occurred_at >= at, (key, first[key].operation)


# ---- vendor formats --------------------------------------------------------------------------------


def test_every_line_normalizes_without_errors(small: Any) -> None:
    _, _, events = small
    for vendor in VENDORS:
        assert len(events[vendor]) > 500
        assert {e.source for e in events[vendor]} == {vendor}


def test_hubspot_lines_are_webhook_batches(small: Any) -> None:
    directory, _, _ = small
    required = {
        "eventId",
        "subscriptionId",
        "portalId",
        "appId",
        "occurredAt",
        "subscriptionType",
        "attemptNumber",
        "objectId",
        "changeSource",
    }
    types = Counter()
    for line in (directory / "hubspot.jsonl").read_bytes().splitlines():
        batch = orjson.loads(line)
        assert isinstance(batch, list) and 1 <= len(batch) <= 100
        for note in batch:
            assert required <= note.keys(), note
            assert isinstance(note["occurredAt"], int) and note["occurredAt"] > 1_700_000_000_000
            types[note["subscriptionType"]] += 1
            if note["subscriptionType"].endswith(".propertyChange"):
                assert isinstance(note["propertyName"], str) and isinstance(note["propertyValue"], str)
            if note["subscriptionType"].endswith(".associationChange"):
                assert {"associationType", "fromObjectId", "toObjectId", "associationRemoved"} <= note.keys()
            if note["subscriptionType"].endswith(".merge"):
                assert {"primaryObjectId", "mergedObjectIds", "newObjectId"} <= note.keys()
            if note["subscriptionType"].startswith("object."):
                assert note["objectTypeId"] in ("0-46", "0-47", "0-48")
            source = note.get("sourceId", "")
            assert source.startswith("userId:") or source.replace("-", "").isalnum()
    for sub in (
        "contact.creation",
        "contact.propertyChange",
        "deal.propertyChange",
        "ticket.creation",
        "contact.associationChange",
        "object.creation",
    ):
        assert types[sub] > 0, sub


def test_salesforce_lines_are_cometd_cdc_events(small: Any) -> None:
    directory, _, _ = small
    header_keys = {
        "entityName",
        "recordIds",
        "changeType",
        "changeOrigin",
        "transactionKey",
        "sequenceNumber",
        "commitTimestamp",
        "commitNumber",
        "commitUser",
        "nulledFields",
        "diffFields",
        "changedFields",
    }
    change_types = Counter()
    replay_ids = []
    for line in (directory / "salesforce.jsonl").read_bytes().splitlines():
        msg = orjson.loads(line)
        assert msg["channel"] == "/data/ChangeEvents"
        assert {"schema", "payload", "event"} <= msg["data"].keys()
        header = msg["data"]["payload"]["ChangeEventHeader"]
        assert header.keys() == header_keys
        assert header["commitUser"].startswith("005") and len(header["commitUser"]) == 18
        change_types[header["changeType"]] += 1
        replay_ids.append(msg["data"]["event"]["replayId"])
        payload = msg["data"]["payload"]
        if header["changeType"] == "UPDATE":
            assert "LastModifiedDate" in header["changedFields"]
            for name in header["changedFields"]:
                parent, _, comp = name.partition(".")
                assert parent in payload and (not comp or comp in payload[parent]), name
            for name in header["nulledFields"]:
                parent, _, comp = name.partition(".")
                assert (payload[parent][comp] if comp else payload[parent]) is None
        elif header["changeType"] == "CREATE":
            assert header["changedFields"] == [] and "CreatedDate" in payload
        if header["changeOrigin"]:
            assert header["changeOrigin"].startswith("com/salesforce/api/")
    assert replay_ids == sorted(replay_ids) and len(set(replay_ids)) == len(replay_ids)
    assert change_types["CREATE"] and change_types["UPDATE"] and change_types["DELETE"]
    assert any(
        len(orjson.loads(line)["data"]["payload"]["ChangeEventHeader"]["recordIds"]) > 1
        for line in (directory / "salesforce.jsonl").read_bytes().splitlines()
    )  # bulk edits


def test_pipedrive_lines_are_v2_webhooks(small: Any) -> None:
    directory, _, events = small
    meta_keys = {
        "action",
        "company_id",
        "correlation_id",
        "entity_id",
        "entity",
        "id",
        "is_bulk_edit",
        "timestamp",
        "type",
        "user_id",
        "version",
        "webhook_id",
        "webhook_owner_id",
        "change_source",
        "attempt",
        "host",
    }
    actions = Counter()
    for line in (directory / "pipedrive.jsonl").read_bytes().splitlines():
        body = orjson.loads(line)
        meta = body["meta"]
        assert meta_keys <= meta.keys() and meta["version"] == "2.0"
        assert meta["change_source"] in ("app", "api")
        actions[(meta["action"], meta["entity"])] += 1
        if meta["action"] == "create":
            assert body["previous"] is None and body["data"]["id"] == int(meta["entity_id"])
        elif meta["action"] == "change":
            assert body["data"] and isinstance(body["previous"], dict)
            for key in body["previous"]:
                assert key in body["data"] or key == "status", key
        else:
            assert body["data"] is None and body["previous"]
    for pair in (
        ("create", "person"),
        ("change", "person"),
        ("change", "deal"),
        ("create", "activity"),
        ("create", "note"),
        ("create", "organization"),
    ):
        assert actions[pair], pair
    # Pipedrive is the vendor that sends old values: every update carries them
    assert all(all(c.has_old for c in e.changes) for e in events["pipedrive"] if e.operation == "update")


# ---- policy and attribution -------------------------------------------------------------------------


def test_policy_attributes_everyone_but_the_unknown_integration(small: Any) -> None:
    directory, truth, events = small
    attributor = Attributor(load_policy(directory / "policy.yaml"))
    unknown_keys = {f["actor_key"] for f in truth["faults"] if f["class"] == "unknown_integration"}
    kinds: Counter[str] = Counter()
    agents: Counter[str] = Counter()
    for evs in events.values():
        for event in evs:
            actor = attributor.attribute(event).actor
            kinds[actor.kind.value] += 1
            if actor.kind is ActorKind.UNKNOWN:
                assert f"unknown:{event.source}:{actor.id}" in unknown_keys, actor.identity.describe()
            if actor.kind is ActorKind.AGENT:
                agents[actor.id] += 1
    assert set(agents) == set(AGENTS)
    assert kinds["human"] and kinds["automation"] and kinds["import"] and kinds["integration"]


def test_benign_agents_stay_under_the_cap(small: Any) -> None:
    """Counted exactly as velocity_cap counts: distinct records per agent in a rolling hour."""
    directory, truth, events = small
    attributor = Attributor(load_policy(directory / "policy.yaml"))
    bursts = [(f["start"], f["end"] + HOUR) for f in truth["faults"] if f["class"] == "velocity_burst"]
    stream = sorted(
        (attributor.attribute(e) for evs in events.values() for e in evs), key=lambda e: e.occurred_at
    )
    windows: dict[str, OrderedDict[str, int]] = {}
    peak: Counter[str] = Counter()
    for event in stream:
        if event.actor.kind is not ActorKind.AGENT:
            continue
        window = windows.setdefault(event.actor.id, OrderedDict())
        now = event.occurred_at
        while window and next(iter(window.values())) <= now - HOUR:
            window.popitem(last=False)
        window.pop(event.record_key, None)
        window[event.record_key] = now
        if event.actor.id == "scoring-agent" and any(a <= now <= b for a, b in bursts):
            continue
        peak[event.actor.id] = max(peak[event.actor.id], len(window))
    assert max(peak.values()) <= AGENT_CAP - 2, peak
    assert peak["enrich-agent"] >= 40, "enrichment works import backlogs just under the cap"


# ---- benign look-alikes ----------------------------------------------------------------------------


def test_benign_lookalikes_are_present(small: Any) -> None:
    _, truth, _ = small
    classes = Counter(x["class"] for x in truth["lookalikes"])
    for cls in LOOKALIKE_CLASSES:
        assert classes[cls], cls
    for item in truth["lookalikes"]:
        if item["class"] in ("human_import", "human_bulk_edit"):
            assert item["records"] >= 5
            assert item["actor_kind"] in ("human", "import")


def test_lookalike_traffic_is_in_the_files(small: Any) -> None:
    directory, _, events = small
    attributor = Attributor(load_policy(directory / "policy.yaml"))
    bulk_human = Counter()
    imports = Counter()
    integration = Counter()
    for vendor, evs in events.items():
        for event in evs:
            actor = attributor.attribute(event).actor
            if actor.kind is ActorKind.HUMAN and event.bulk:
                bulk_human[vendor] += 1
            if actor.kind is ActorKind.IMPORT:
                imports[vendor] += 1
            if actor.kind is ActorKind.INTEGRATION:
                integration[vendor] += 1
    assert set(bulk_human) == set(VENDORS)
    assert imports["hubspot"] and imports["salesforce"]
    assert set(integration) == set(VENDORS)


# ---- building blocks --------------------------------------------------------------------------------


def test_variants_normalize_to_the_same_identity() -> None:
    for style in range(4):
        assert normalize_email(email_variant("ann.lee@gmail.com", style)) == "annlee@gmail.com"
        assert normalize_email(email_variant("ann.lee@acme.example", style)) == "ann.lee@acme.example"
    for style in range(5):
        assert normalize_phone(phone_formatted("+14155550142", style)) == "+14155550142"


def test_salesforce_ids_are_18_characters_with_a_case_safe_suffix() -> None:
    one, two = salesforce_id("003", 1001), salesforce_id("003", 1002)
    assert len(one) == 18 and one.startswith("003") and one != two
    assert salesforce_id("003", 1001) == one


def test_window_counts_like_velocity_cap() -> None:
    window = Window()
    for i in range(50):
        assert window.allows(f"r{i}", i * 1000, 50)
        window.touch(f"r{i}", i * 1000)
    assert not window.allows("new", 50_000, 50) and window.allows("r3", 50_000, 50)
    assert window.count(HOUR + 10_000) == 39  # r0..r10 expired (their time <= now - 1h)


def test_bag_and_business_hours() -> None:
    bag = Bag()
    for x in "abc":
        bag.add(x)
    bag.discard("a")
    assert sorted(bag.items) == ["b", "c"] and "a" not in bag
    saturday = 1_741_392_000_000 + 15 * HOUR  # 2025-03-08 15:00 UTC
    assert not is_business(saturday)
    monday = next_business(saturday)
    assert is_business(monday) and monday - saturday < 3 * 86_400_000


# ---- the command ------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    from app import cli_scenario

    parser = argparse.ArgumentParser()
    cli_scenario.register(parser.add_subparsers())
    args = parser.parse_args(["scenario", *argv])
    return int(args.func(args))


def test_cli_writes_a_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["--out", str(tmp_path), "--seed", "3", "--scale", "demo", "--days", "2"]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {
        "hubspot.jsonl",
        "salesforce.jsonl",
        "pipedrive.jsonl",
        "policy.yaml",
        "truth.json",
    }
    assert "events" in capsys.readouterr().out


def test_cli_rejects_bad_arguments_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(["--out", str(tmp_path), "--scale", "huge"]) == 2
    assert _cli(["--out", str(tmp_path), "--days", "0"]) == 2
    assert _cli(["--out", str(tmp_path), "--vendors", "zoho"]) == 2
    err = capsys.readouterr().err
    assert "crm-guard scenario:" in err and "Traceback" not in err


def test_max_events_stops_the_stream(tmp_path: Path) -> None:
    result = generate(_small(days=3.0, max_events=2_000), tmp_path)
    assert result.stats["stopped_at_max_events"]
    assert 2_000 <= result.stats["events_total"] < 2_020  # stops after the change that reaches the limit
