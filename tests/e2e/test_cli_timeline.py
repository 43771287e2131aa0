"""`crm-guard timeline` and `crm-guard revert-plan`, from a replay directory and from a running guard."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from app.cli_timeline import register
from app.web.keys import TIMELINE
from tests.e2e.timeline_data import EMAIL, PHONE, T0, entries, timeline_app

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:It is recommended to use web.AppKey")


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="crm-guard")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def replay_dir(tmp_path: Path) -> Path:
    out = tmp_path / "replay"
    out.mkdir()
    lines = [json.dumps(e.to_json_dict()) for e in entries()]
    (out / "timeline.jsonl").write_text("\n".join(lines) + "\n")
    # as app/replay.py override_row writes it: the human's event, the finding's details spread in
    (out / "overrides.jsonl").write_text(json.dumps({
        "agent": "enricher", "record_key": "hubspot/contact/101", "event_id": "ev-h2", "occurred_at": T0,
        "field": "utm_source", "agent_event_id": "ev-a1", "agent_value": "enriched", "human_value": "google"}) + "\n"
        + "not json\n")
    return out


def test_timeline_from_replay_dir_prints_columns_with_masked_values(replay_dir: Path, capsys) -> None:
    assert run(["timeline", "hubspot/contact/101", "--replay-dir", str(replay_dir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("hubspot/contact/101: 6 changes (values masked")
    assert lines[1].split()[:4] == ["TIME", "(UTC)", "KIND", "ACTOR"]
    assert "a***@e***.com" in out and "+1******4567" in out and EMAIL not in out and PHONE not in out
    agent_line = next(line for line in lines if "enricher" in line and "utm_source" in line)
    assert "agent" in agent_line and "google → enriched" in agent_line and "2026-01-01 01:00:00Z" in agent_line
    assert agent_line.endswith("overridden")  # from overrides.jsonl of the replay
    human_fix = next(line for line in lines if "enriched → google" in line)
    assert human_fix.endswith("↩ override")
    assert run(["timeline", "hubspot/contact/101", "--replay-dir", str(replay_dir), "--show-pii",
                "--kind", "human", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["actor_kind"] for r in rows} == {"human"} and rows[0]["new"] == EMAIL


def test_revert_plan_from_replay_dir_writes_json_and_vendor_csv(replay_dir: Path, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "plan"
    code = run(["revert-plan", "--agent", "enricher", "--since", "2026-01-01T00:30:00Z", "--replay-dir",
                str(replay_dir), "--out", str(out_dir)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 fields to restore on 2 records; 1 left alone" in printed
    plan = json.loads((out_dir / "revert-plan.json").read_text())
    assert plan["summary"]["fields_to_restore"] == 2
    assert [s["record_key"] for s in plan["skipped_human_changed"]] == ["hubspot/contact/101"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["hubspot-contacts.csv", "hubspot-deals.csv", "revert-plan.json"]
    with (out_dir / "hubspot-contacts.csv").open() as handle:
        assert list(csv.reader(handle)) == [["Record ID", "utm_source"], ["102", "newsletter"]]
    with (out_dir / "hubspot-deals.csv").open() as handle:
        assert list(csv.reader(handle)) == [["Record ID", "dealstage"], ["9", "qualifiedtobuy"]]
    # a relative --since counts back from the newest change in the directory (04:00): 2h -> 02:00
    assert run(["revert-plan", "--agent", "enricher", "--since", "2h", "--replay-dir", str(replay_dir)]) == 0
    only_deal = json.loads(capsys.readouterr().out)
    assert [i["record_key"] for i in only_deal["items"]] == ["hubspot/deal/9"]


def test_user_errors_exit_2_with_one_line(replay_dir: Path, tmp_path: Path, capsys) -> None:
    assert run(["revert-plan", "--agent", "x", "--since", "last tuesday", "--replay-dir", str(replay_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crm-guard revert-plan: --since:") and err.count("\n") == 1
    assert run(["timeline", "k", "--replay-dir", str(tmp_path / "missing")]) == 2
    assert "no timeline.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "timeline.jsonl").write_text('{"event_id": "a"}\n')
    assert run(["timeline", "k", "--replay-dir", str(bad)]) == 2
    assert "line 1" in capsys.readouterr().err
    assert run(["timeline", "hubspot/contact/999", "--replay-dir", str(replay_dir)]) == 1
    assert "no changes for hubspot/contact/999" in capsys.readouterr().err


def test_unreachable_guard_exits_1(capsys) -> None:
    assert run(["timeline", "hubspot/contact/1", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the guard" in capsys.readouterr().err


async def test_timeline_and_revert_plan_from_a_running_guard(tmp_path: Path, capsys) -> None:
    server = TestServer(timeline_app(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    try:
        code = await asyncio.to_thread(run, ["timeline", "hubspot/contact/101", "--url", url])
        assert code == 0
        out = capsys.readouterr().out
        assert "6 changes (values masked" in out and "mass_overwrite" in out and "↩ override" in out
        assert EMAIL not in out
        assert await asyncio.to_thread(run, ["timeline", "hubspot/contact/nope", "--url", url]) == 1
        capsys.readouterr()
        out_dir = tmp_path / "plan"
        code = await asyncio.to_thread(run, ["revert-plan", "--agent", "enricher", "--since", str(T0), "--url", url,
                                             "--out", str(out_dir), "--field", "utm_source,dealstage"])
        assert code == 0
        with (out_dir / "hubspot-contacts.csv").open() as handle:
            assert list(csv.reader(handle)) == [["Record ID", "utm_source"], ["102", "newsletter"]]
        assert await asyncio.to_thread(run, ["revert-plan", "--agent", "enricher", "--since", "2026-13-45",
                                             "--url", url]) == 2
    finally:
        await server.close()


async def test_masked_values_from_a_guard_are_left_out_of_the_csv(tmp_path: Path, capsys) -> None:
    from app.timeline.store import TimelineEntry

    app = timeline_app()
    app[TIMELINE].append(TimelineEntry(
        event_id="ev-e", record_key="hubspot/contact/102", source="hubspot", object_type="contact", record_id="102",
        occurred_at=T0 + 5 * 3_600_000, field="email", old="old@example.com", has_old=True, new="new@example.com",
        actor_id="enricher", actor_kind="agent"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        out_dir = tmp_path / "plan"
        code = await asyncio.to_thread(run, ["revert-plan", "--agent", "enricher", "--since", str(T0), "--url",
                                             str(server.make_url("")).rstrip("/"), "--out", str(out_dir)])
    finally:
        await server.close()
    assert code == 0
    assert "1 values are masked" in capsys.readouterr().err
    text = (out_dir / "hubspot-contacts.csv").read_text()
    assert "email" not in text.splitlines()[0] and "***" not in text
    plan = json.loads((out_dir / "revert-plan.json").read_text())
    assert [i["field"] for i in plan["left_out_masked"]] == ["email"]


def test_wired_into_the_crm_guard_command(replay_dir: Path) -> None:
    """Through app/cli.py main, as a user runs it (the lead adds the module to COMMAND_MODULES)."""
    code = ("import sys, app.cli as c\n"
            "c.COMMAND_MODULES.append('app.cli_timeline') if 'app.cli_timeline' not in c.COMMAND_MODULES else None\n"
            "sys.exit(c.main(sys.argv[1:]))")
    ok = subprocess.run([sys.executable, "-c", code, "timeline", "hubspot/deal/9", "--replay-dir", str(replay_dir),
                         "--no-color"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "qualifiedtobuy → closedwon" in ok.stdout
    bad = subprocess.run([sys.executable, "-c", code, "revert-plan", "--agent", "a", "--since", "??",
                          "--replay-dir", str(replay_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
