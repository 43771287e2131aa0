"""`crm-guard policy check|show|suggest` as a user runs them: exit codes, messages, and a shown policy that
loads back to the same policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.policy_file import load_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "policy.example.yaml"
VENDORS = ("hubspot", "salesforce", "pipedrive")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "policy", *args],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_of_the_example_prints_what_is_enforced_and_exits_0() -> None:
    done = cli("check", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert "agent enrich-bot: fills firmographic fields" in done.stdout
    assert "identity      hubspot change_source=INTEGRATION app_id=4242" in done.stdout
    assert done.stdout.strip().endswith("policy.example.yaml: valid") and done.stderr == ""


def test_check_of_an_invalid_file_names_the_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("agents:\n  bot:\n    velocity_caps:\n      - {max_records: 0}\n")
    done = cli("check", str(bad))
    assert done.returncode == 2 and "agents.bot.velocity_caps.0.max_records" in done.stderr
    assert cli("check", str(tmp_path / "missing.yaml")).returncode == 2


def test_warnings_go_to_stderr_and_fail_only_with_strict(tmp_path: Path) -> None:
    risky = tmp_path / "policy.yaml"
    risky.write_text("agents:\n  greedy:\n    identities: [{vendor: hubspot}]\n")
    done = cli("check", str(risky))
    assert (
        done.returncode == 0 and "warning: agents.greedy.identities.0: names only the vendor" in done.stderr
    )
    assert "1 warning(s)" in done.stdout
    assert cli("check", "--strict", str(risky)).returncode == 1


def test_show_writes_durations_as_the_file_does_and_loads_back_unchanged(tmp_path: Path) -> None:
    done = cli("show", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert "window: 1h" in done.stdout and "allowed_lateness: 2m" in done.stdout
    shown = tmp_path / "shown.yaml"
    shown.write_text(done.stdout)
    assert load_policy(shown) == load_policy(EXAMPLE)
    assert cli("show").returncode == 0  # the shipped defaults


def test_replay_warns_about_a_policy_that_attributes_wrongly(tmp_path: Path) -> None:
    greedy = tmp_path / "policy.yaml"
    greedy.write_text("agents:\n  greedy:\n    identities: [{vendor: hubspot}]\n")
    lines = tmp_path / "hubspot.jsonl"
    lines.write_text(
        (ROOT / "tests/fixtures/vendors/hubspot_batch.json").read_text().replace("\n", "") + "\n"
    )
    done = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "app.cli",
            "replay",
            "--policy",
            str(greedy),
            "--out",
            str(tmp_path / "out"),
            str(lines),
        ],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "policy warning: agents.greedy.identities.0: names only the vendor" in done.stderr


def replay_demo(out: Path, *policy: str) -> None:
    demo = ROOT / "app" / "demo"
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "replay", *(str(demo / f"{v}.jsonl") for v in VENDORS),
         *policy, "--out", str(out), "-q"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def alerts_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]


def test_suggest_turns_a_policy_free_backtest_into_named_agents(tmp_path: Path) -> None:
    """The first backtest of a team with no policy: every API writer is unknown. `policy suggest`
    writes them as agents with the scope they showed, and the next backtest names them: the
    enrichment app that rewrote utm_source is an agent overwriting set values and writing a
    high-tier field outside its scope, paused; nobody is left unattributed."""
    replay_demo(tmp_path / "first")
    first = alerts_of(tmp_path / "first")
    assert sum(a["kind"] == "unattributed_actor" for a in first) >= 20
    assert not any(a["agent"] for a in first)  # nothing is named without a policy
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    general = [a for a in first if a["kind"] == "unattributed_actor" and not a["group"].endswith("high-tier")]
    assert summary["identities_by_kind"]["unknown"] == len(general)  # one alert per identity

    done = cli("suggest", "--replay-dir", str(tmp_path / "first"), "--out", str(tmp_path / "agents.yaml"))
    assert done.returncode == 0, done.stderr
    suggested = load_policy(tmp_path / "agents.yaml")
    assert "hubspot-app-1850301" in suggested.agents and len(suggested.agents) >= 20
    assert cli("check", str(tmp_path / "agents.yaml")).returncode == 0

    replay_demo(tmp_path / "second", "--policy", str(tmp_path / "agents.yaml"))
    second = alerts_of(tmp_path / "second")
    assert not any(a["kind"] == "unattributed_actor" for a in second)
    kinds = json.loads((tmp_path / "second" / "summary.json").read_text())["identities_by_kind"]
    assert "unknown" not in kinds and kinds["agent"] >= 20
    enrich = {(a["kind"], a["action"]) for a in second if a["agent"] == "hubspot-app-1850301"}
    assert ("mass_overwrite", "none") in enrich and ("protected_field", "paused") in enrich
    again = cli("suggest", "--replay-dir", str(tmp_path / "second"),
                "--policy", str(tmp_path / "agents.yaml"))
    assert again.returncode == 0 and "nothing to add" in again.stdout


def test_suggest_without_a_replay_is_a_message_and_exit_2(tmp_path: Path) -> None:
    done = cli("suggest", "--replay-dir", str(tmp_path))
    assert done.returncode == 2 and "identities.jsonl: no such file" in done.stderr
    for content in ('{"kind": "unknown"}\n', "[1, 2]\n", "{not json\n"):
        (tmp_path / "identities.jsonl").write_text(content)
        broken = cli("suggest", "--replay-dir", str(tmp_path))
        assert broken.returncode == 2 and "Traceback" not in broken.stderr, broken.stderr
        assert "not an identities file" in broken.stderr or "not JSON Lines" in broken.stderr
