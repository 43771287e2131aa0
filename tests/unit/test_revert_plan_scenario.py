"""Revert plans against the scenario generator's faults (issue 7): the plan restores exactly the
faulty changes.

A small demo scenario (every fault class once per vendor) is generated and replayed with
`app.replay.run_replay`; then, for each overwrite and blanking fault in truth.json, `crm-guard
revert-plan --replay-dir` (app/cli_timeline.py over detectors/revert_plan.py, reading the replay's
timeline.jsonl) computes the plan for the faulty agent over the fault's span and fields.

The expected plan is worked out independently of the timeline store, from the vendor payload files
themselves (adapters + attribution with the scenario's policy) and truth.json:

* every faulty change whose field no human touched afterwards is an item restoring the field's value
  from just before the agent's first faulty change on it (and, where truth.json has a comparable
  value, that value is truth's `old`), carrying the faulty event ids and nothing else;
* every faulty change a human changed afterwards is in `skipped_human_changed`, with that human;
* nothing else is in the plan: no benign change, no field of another record, no guess.

Why the span ends at the fault's last change and the fields are the fault's: the same agents do
benign work on other fields (enrich-agent fills empty ones) and after the fault; a plan over
"everything since" undoes those too, by design (see tests/unit/test_revert_plan.py).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.adapters import decode_line, normalize
from app.cli import main as cli_main
from app.policy_file import load_policy
from app.replay import run_replay
from app.scenario import ScenarioConfig, generate, load_truth
from detectors.attribution import Attributor
from detectors.events import ActorKind, is_blank
from detectors.revert_plan import ID_COLUMNS

VENDORS = ("hubspot", "salesforce", "pipedrive")
CLASSES = ("slow_drip_overwrite", "silent_blanking", "commission_field_write")
"""The faults that overwrite or blank set values (what a revert plan is for)."""

# truth.json stores the simulation's own values; these fields have the same value in the vendor
# payloads, so truth's `old` can be compared with the plan as it is (owners are vendor user ids,
# dates vendor date formats, amounts strings in HubSpot: compared numerically or not at all).
SAME_TEXT_FIELDS = {"utm_source", "title"}
NUMERIC_FIELDS = {"amount"}

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Write:
    """One field written by one event, as the vendor payloads say (after attribution)."""

    at: int
    event_id: str
    record_key: str
    field: str
    new: Any
    kind: str
    actor_id: str


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """(scenario dir, replay dir, truth) of the demo preset: 4 days, every fault once per vendor."""
    scenario = tmp_path_factory.mktemp("scenario")
    out = tmp_path_factory.mktemp("replay")
    generate(ScenarioConfig.preset("demo", seed=1), scenario)
    policy = load_policy(scenario / "policy.yaml")
    summary = run_replay([scenario / f"{v}.jsonl" for v in VENDORS], out, policy)
    assert summary["events"] > 1000 and summary["deadletters"] == 0
    return scenario, out, load_truth(scenario / "truth.json")


@pytest.fixture(scope="module")
def writes(replayed: tuple[Path, Path, dict[str, Any]]) -> dict[tuple[str, str], list[Write]]:
    """Per (record key, field): every write in the payload files, in event-time order, redeliveries once."""
    scenario, _, _ = replayed
    attributor = Attributor(load_policy(scenario / "policy.yaml"))
    seen: set[tuple[str, str]] = set()
    out: dict[tuple[str, str], list[Write]] = {}
    for vendor in VENDORS:
        for line in (scenario / f"{vendor}.jsonl").read_bytes().splitlines():
            for event in normalize(decode_line(line), vendor):
                event = attributor.attribute(event)
                for change in event.changes:
                    if (event.event_id, change.field) in seen:
                        continue
                    seen.add((event.event_id, change.field))
                    out.setdefault((event.record_key, change.field), []).append(Write(
                        event.occurred_at, event.event_id, event.record_key, change.field, change.new,
                        event.actor.kind.value, event.actor.id))
    for history in out.values():
        history.sort(key=lambda w: (w.at, w.event_id))
    return out


def faults(truth: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for fault in truth["faults"]:
        if fault["class"] in CLASSES and fault["changes"]:
            yield fault


def record_key(fault: dict[str, Any], change: dict[str, Any]) -> str:
    return f"{fault['vendor']}/{change['object_type']}/{change['record_id']}"


def plan_by_cli(replay_dir: Path, fault: dict[str, Any], fields: list[str], out: Path) -> dict[str, Any]:
    """`crm-guard revert-plan --replay-dir` over the fault's span and fields; the JSON it wrote."""
    argv = ["revert-plan", "--agent", fault["agent"], "--since", str(fault["start"]),
            "--until", str(fault["end"] + 1), "--replay-dir", str(replay_dir), "--out", str(out)]
    for name in fields:
        argv += ["--field", name]
    assert cli_main(argv) == 0
    return json.loads((out / "revert-plan.json").read_text())


def expected_plan(fault: dict[str, Any], writes: dict[tuple[str, str], list[Write]]) -> dict[str, Any]:
    """Per (record key, native field) of the fault: ('restore', value, event ids) or ('human', actor id)."""
    faulty_ids = {c["event_id"] for c in fault["changes"]}
    expected: dict[tuple[str, str], Any] = {}
    for key in sorted({(record_key(fault, c), c["native_field"]) for c in fault["changes"]}):
        history = writes[key]
        mine = [i for i, w in enumerate(history) if w.event_id in faulty_ids]
        assert mine, f"no faulty write of {key} in the payload files"
        first = mine[0]
        assert first > 0, f"{key}: the payloads never set the field before the fault"
        before = history[first - 1].new
        humans = [w for w in history[first + 1:] if w.kind == ActorKind.HUMAN.value]
        if humans:
            expected[key] = ("human", humans[-1].actor_id, humans[-1].new)
        else:
            expected[key] = ("restore", before, [history[i].event_id for i in mine])
    return expected


def test_each_overwrite_and_blanking_fault_is_restored_exactly(
    replayed: tuple[Path, Path, dict[str, Any]], writes: dict[tuple[str, str], list[Write]], tmp_path: Path
) -> None:
    _, replay_dir, truth = replayed
    checked = {"restored": 0, "left_to_humans": 0, "faults": 0, "compared_with_truth": 0}
    for fault in faults(truth):
        checked["faults"] += 1
        fields = sorted({c["native_field"] for c in fault["changes"]})
        data = plan_by_cli(replay_dir, fault, fields, tmp_path / fault["id"])
        expected = expected_plan(fault, writes)
        faulty_ids = {c["event_id"] for c in fault["changes"]}
        where = fault["id"]

        items = {(i["record_key"], i["field"]): i for i in data["items"]}
        humans = {(s["record_key"], s["field"]): s for s in data["skipped_human_changed"]}
        assert len(items) == len(data["items"]) and len(humans) == len(data["skipped_human_changed"])
        assert data["skipped"] == [], f"{where}: skipped (unknown prior / unchanged): {data['skipped']}"
        assert data["created_records"] == [] and data["deleted_records"] == []
        want_restore = {k for k, v in expected.items() if v[0] == "restore"}
        want_human = {k for k, v in expected.items() if v[0] == "human"}
        extra, missing = set(items) - want_restore, want_restore - set(items)
        assert set(items) == want_restore, f"{where}: extra {extra}, missing {missing}"
        assert set(humans) == want_human, f"{where}: left to humans {set(humans)}, expected {want_human}"

        for key, item in items.items():
            _, before, event_ids = expected[key]
            assert item["restore_value"] == before, f"{where} {key}"
            assert item["agent_event_ids"] == event_ids and set(event_ids) <= faulty_ids
            assert item["clear"] is False  # every fault overwrote or blanked a set value
            checked["restored"] += 1
        for key, skipped in humans.items():
            _, human_id, human_value = expected[key]
            got = (skipped["human_actor_id"], skipped["human_value"])
            assert got == (human_id, human_value), f"{where} {key}"
            assert skipped["reason"] == "human_changed_after_agent"
            checked["left_to_humans"] += 1

        # truth.json's own before/after values, where they are written as the vendors write them
        first_change: dict[tuple[str, str], dict[str, Any]] = {}
        for change in sorted(fault["changes"], key=lambda c: c["at"]):
            first_change.setdefault((record_key(fault, change), change["native_field"]), change)
        for key, change in first_change.items():
            item = items.get(key)
            if item is None or change["old"] == "<masked>":
                continue
            if change["field"] in SAME_TEXT_FIELDS:
                assert item["restore_value"] == change["old"], f"{where} {key}"
                checked["compared_with_truth"] += 1
            elif change["field"] in NUMERIC_FIELDS:
                assert float(item["restore_value"]) == float(change["old"]), f"{where} {key}"
                checked["compared_with_truth"] += 1
            if fault["class"] == "silent_blanking":
                assert is_blank(item["agent_value"]) and not is_blank(item["restore_value"])

        # the CSV files hold exactly the items, with the vendor's id column
        rows: dict[tuple[str, str], str] = {}
        for path in (tmp_path / where).glob("*.csv"):
            table = list(csv.DictReader(io.StringIO(path.read_text())))
            source = path.name.split("-", 1)[0]
            for row in table:
                record_id = row.pop(ID_COLUMNS[source])
                for name, cell in row.items():
                    if cell != "":
                        rows[(record_id, name)] = cell
        assert set(rows) == {(i["record_id"], i["field"]) for i in items.values()}, where

    assert checked["faults"] == len(CLASSES) * len(VENDORS)
    # the seed gives both paths: fields to restore and fields a human changed after the agent
    assert checked["restored"] >= 100 and checked["left_to_humans"] >= 3, checked
    assert checked["compared_with_truth"] >= 80, checked

