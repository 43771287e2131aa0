"""`crm-guard replay` as a user runs it: the demonstration incident replayed from its three vendors'
files catches every injected fault (app/demo/truth.json, scored as bench/detection_quality.py
scores it) and pauses no human; bad input gets a message and a non-zero exit, bad lines a
dead letter with the reason and where they came from, and the good lines around them still count."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.detection_quality import score_fault

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "app" / "demo"
VENDORS = ("hubspot", "salesforce", "pipedrive")


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "replay", *args], cwd=str(ROOT), capture_output=True, text=True,
        timeout=300,
    )


def jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_replay(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo-replay") / "out"
    done = replay(*(str(DEMO / f"{v}.jsonl") for v in VENDORS), "--policy", str(DEMO / "policy.yaml"),
                  "--out", str(out), "-q")
    return done, out


def test_the_demo_incident_replay_catches_every_fault_and_pauses_no_human(
    demo_replay: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = demo_replay
    assert done.returncode == 0, done.stderr[-3000:]
    truth = json.loads((DEMO / "truth.json").read_text())
    alerts = jsonl(out / "alerts.jsonl")
    scores = [score_fault(fault, alerts) for fault in truth["faults"]]
    missed = [s["id"] for s in scores if not s["detected"]]
    assert not missed, missed
    assert {s["class"] for s in scores} == set(truth["fault_classes"])  # all seven classes, in every vendor
    assert {s["vendor"] for s in scores} == set(VENDORS)
    paused = {p["agent"] for p in jsonl(out / "pauses.jsonl")}
    assert paused and not paused & set(truth["humans"]) and paused <= set(truth["agents"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["deadletters"] == 0 and summary["lines"] == sum(truth["stats"]["lines"].values())
    assert summary["events"] + summary["duplicates_skipped"] >= truth["stats"]["events_total"]
    assert sorted(summary["paused_agents"]) == sorted(paused)
    timeline = jsonl(out / "timeline.jsonl")
    assert {row["actor_kind"] for row in timeline} >= {"human", "agent", "automation", "import"}
    assert jsonl(out / "overrides.jsonl"), "the owners' reverts of wrong stage moves are override signals"


def test_the_printed_summary_names_what_was_found(tmp_path: Path) -> None:
    done = replay(str(DEMO / "hubspot.jsonl"), "--policy", str(DEMO / "policy.yaml"), "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "alerts:" in done.stdout and "paused agents:" in done.stdout and "enrich-agent" in done.stdout


def test_bad_lines_are_dead_lettered_with_their_origin_and_the_rest_is_replayed(tmp_path: Path) -> None:
    good = (DEMO / "hubspot.jsonl").read_bytes().splitlines()[:40]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"\n".join([good[0], b"not json", *good[1:20], b'{"subscriptionType": 5}', b"[1, 2]",
                                  *good[20:]]) + b"\n")
    done = replay(str(mixed), "--policy", str(DEMO / "policy.yaml"), "--out", str(tmp_path / "out"), "-q")
    assert done.returncode == 3, done.stderr[-2000:]  # finished, with dead letters
    dead = jsonl(tmp_path / "out" / "deadletter.jsonl")
    assert [(d["line"], d["reason"]) for d in dead][:2] == [(2, "not_json"), (22, "unknown_shape")]
    assert all(d["file"] == str(mixed) and d["message"] for d in dead)
    assert [d["message"] for d in dead if d["line"] == 23] == [
        "element 0: payload matches no known vendor format", "element 1: payload matches no known vendor format"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["lines"] == 43 and summary["events"] > 40 and summary["deadletters"] == len(dead)


def test_saved_json_documents_and_a_byte_order_mark_are_read_like_json_lines(tmp_path: Path) -> None:
    """Deliveries saved as one (pretty-printed) JSON document, JSON Lines behind a UTF-8 BOM, and
    gzip-compressed recordings replay to the same events as the JSON Lines they came from."""
    lines = (DEMO / "hubspot.jsonl").read_bytes().splitlines()[:30]
    deliveries = [orjson.loads(line) for line in lines]
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(b"\n".join(lines) + b"\n")
    pretty = tmp_path / "saved.json"  # an array of deliveries, indented, plus one element no vendor sends
    pretty.write_text(json.dumps([*deliveries, {"hello": "world"}], indent=2))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    packed = tmp_path / "recorded.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    packed_doc = tmp_path / "saved.json.gz"
    packed_doc.write_bytes(gzip.compress(pretty.read_bytes()))
    events = {}
    inputs = {"plain": plain, "pretty": pretty, "bom": bom, "gz": packed, "gzdoc": packed_doc}
    for name, path in inputs.items():
        done = replay(str(path), "--out", str(tmp_path / name), "-q")
        assert done.returncode in (0, 3), done.stderr[-2000:]
        events[name] = sorted(row["event_id"] for row in jsonl(tmp_path / name / "timeline.jsonl"))
    assert events["plain"] and events["pretty"] == events["plain"] == events["bom"] == events["gz"]
    assert events["gzdoc"] == events["plain"]
    assert [(d["line"], d["reason"]) for d in jsonl(tmp_path / "pretty" / "deadletter.jsonl")] == [
        (31, "unknown_shape")]
    assert jsonl(tmp_path / "bom" / "deadletter.jsonl") == []


@pytest.mark.parametrize("case", ["missing", "directory", "out_not_creatable", "bad_policy", "bad_source"])
def test_bad_arguments_get_a_message_and_exit_2(tmp_path: Path, case: str) -> None:
    hubspot = str(DEMO / "hubspot.jsonl")
    args = {
        "missing": [str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")],
        "directory": [str(tmp_path), "--out", str(tmp_path / "o")],
        "out_not_creatable": [hubspot, "--out", "/proc/crm-guard-cannot-be-here"],
        "bad_policy": [hubspot, "--out", str(tmp_path / "o"), "--policy", str(DEMO / "truth.json")],
        "bad_source": [hubspot, "--out", str(tmp_path / "o"), "--source", "martian"],
    }[case]
    done = replay(*args)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and done.stderr.strip()


def test_one_process_writes_the_same_files_as_the_default(
    demo_replay: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path,
) -> None:
    """The default uses a second core where there is one (--workers auto); --workers 1 must not
    change a byte of what the replay writes."""
    _, default = demo_replay
    done = replay(*(str(DEMO / f"{v}.jsonl") for v in VENDORS), "--policy", str(DEMO / "policy.yaml"),
                  "--out", str(tmp_path / "one"), "--workers", "1", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in default.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one").iterdir())
    for name in names:
        assert (default / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def replay_export(tmp_path: Path, name: str, lines: list[dict], policy_text: str) -> Path:
    """Write a history export (one JSON value per line) and its policy, replay it; the output dir."""
    export = tmp_path / name
    export.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    done = replay(str(export), "--policy", str(policy), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "0 dead-lettered" in done.stdout
    return tmp_path / "out"


SF_AGENT, SF_HUMAN = "0055g00000002MnAAI", "0055g00000001AbAAI"
HISTORY_POLICY = f"""
version: 1
agents:
  enrich-agent:
    identities: [{{vendor: salesforce, user_id: {SF_AGENT}}}]
    allowed_fields: [Title, Phone]
humans: [{{vendor: salesforce, user_id: {SF_HUMAN}}}]
"""


def history_rows() -> list[dict]:
    """ContactHistory as an export gives it: grouped by contact, not by time. An integration
    user overwrote five titles within minutes; a person set one back the same morning."""
    rows: list[dict] = []

    def row(contact: str, field: str, old: str | None, new: str | None, by: str, at: str) -> None:
        n = len(rows) + 1
        rows.append({"attributes": {"type": "ContactHistory", "url": f"/sobjects/ContactHistory/0175g{n:010d}"},
                     "Id": f"0175g{n:010d}AAA", "ContactId": contact, "Field": field, "DataType": "Text",
                     "OldValue": old, "NewValue": new, "CreatedById": by, "CreatedDate": at})

    for c in range(5):
        contact = f"0035g00000{c:05d}AAA"
        row(contact, "created", None, None, SF_HUMAN, f"2025-03-01T09:0{c}:00.000+0000")
        row(contact, "Title", None, "Engineer", SF_HUMAN, f"2025-03-01T09:0{c}:00.000+0000")
        row(contact, "Title", "Engineer", "Enriched", SF_AGENT, f"2025-03-04T01:1{c}:00.000+0000")
        if c == 0:
            row(contact, "Title", "Enriched", "Engineer", SF_HUMAN, "2025-03-04T08:00:00.000+0000")
    return rows


def test_a_salesforce_field_history_export_is_replayed_in_event_time(tmp_path: Path) -> None:
    """The backtest on what an org already has: weeks of field history, not three days of CDC."""
    out = replay_export(tmp_path, "contact_history.jsonl", history_rows(), HISTORY_POLICY)
    assert json.loads((out / "summary.json").read_text())["events"] == 16
    (alert,) = jsonl(out / "alerts.jsonl")
    assert (alert["kind"], alert["agent"], alert["details"]["field"]) == ("mass_overwrite", "enrich-agent", "Title")
    assert alert["details"]["change"] == "overwrite" and alert["details"]["count"] == 5
    (override,) = jsonl(out / "overrides.jsonl")
    assert (override["kind"], override["agent_value"], override["human_value"]) == ("revert", "Enriched", "Engineer")
    times = [row["occurred_at"] for row in jsonl(out / "timeline.jsonl")]
    assert times == sorted(times)  # read whole and ordered, though the file is grouped by contact


HUBSPOT_HISTORY_POLICY = """
version: 1
agents:
  enrich-agent:
    identities: [{vendor: hubspot, change_source: INTEGRATION, app_id: "1850301"}]
    allowed_fields: [jobtitle, city]
humans: [{vendor: hubspot, change_source: CRM_UI}]
"""


def test_a_hubspot_property_history_export_finds_the_agent_that_rewrote_attribution(tmp_path: Path) -> None:
    """Contacts read with propertiesWithHistory=utm_source, one object per line: the enrichment
    app replaced set utm_source values, a field outside its scope."""
    lines = []
    for c in range(4):
        history = {"utm_source": [
            {"value": "enriched", "timestamp": f"2025-03-04T01:1{c}:00.000Z", "sourceType": "INTEGRATION",
             "sourceId": "1850301", "sourceLabel": "Enrichment"},
            {"value": "google", "timestamp": f"2025-03-01T09:0{c}:00.000Z", "sourceType": "CRM_UI",
             "sourceId": "userId:77"}]}
        lines.append({"id": str(600 + c), "properties": {"utm_source": "enriched"}, "propertiesWithHistory": history,
                      "createdAt": f"2025-03-01T09:0{c}:00.000Z", "archived": False, "objectType": "contacts"})
    out = replay_export(tmp_path, "contacts_history.jsonl", lines, HUBSPOT_HISTORY_POLICY)
    alerts = {(a["kind"], a["agent"]) for a in jsonl(out / "alerts.jsonl")}
    assert alerts == {("protected_field", "enrich-agent"), ("mass_overwrite", "enrich-agent")}  # nothing else
    summary = json.loads((out / "summary.json").read_text())
    # each creation is the person's who set utm_source when the contact was created
    assert summary["events_by_actor_kind"] == {"agent": 4, "human": 8}


PIPEDRIVE_HISTORY_POLICY = """
version: 1
agents:
  pipeline-agent:
    identities: [{vendor: pipedrive, user_id: "13000103", change_source: api}]
    allowed_object_types: [deal]
    allowed_fields: [stage_id]
    high_tier_allowed: true
humans: [{vendor: pipedrive, change_source: app}]
"""


def test_a_pipedrive_changelog_export_finds_the_agent_moving_deals_back(tmp_path: Path) -> None:
    """Three deals' changelogs, one per line: reps moved them forward, the agent moved each back."""
    lines = []
    for n, deal in enumerate((101, 102, 103)):
        data = [  # newest first, as the endpoint lists them
            {"field_key": "stage_id", "old_value": "3", "new_value": "1", "actor_user_id": 13000103,
             "time": f"2025-03-05 1{n}:00:00", "change_source": "api", "is_bulk_update_flag": False},
            {"field_key": "stage_id", "old_value": "1", "new_value": "3", "actor_user_id": 7,
             "time": f"2025-03-03 0{n}:00:00", "change_source": "app", "is_bulk_update_flag": False},
        ]
        lines.append({"entity": "deal", "id": deal, "success": True, "data": data})
    out = replay_export(tmp_path, "deals_changelog.jsonl", lines, PIPEDRIVE_HISTORY_POLICY)
    alerts = jsonl(out / "alerts.jsonl")
    stage = [a for a in alerts if a["kind"] == "stage_anomaly"]
    assert {a["group"] for a in stage} == {"backwards", "repeated"}
    assert all(a["agent"] == "pipeline-agent" for a in stage)
    assert [p["agent"] for p in jsonl(out / "pauses.jsonl")] == ["pipeline-agent"]
