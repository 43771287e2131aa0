"""The README's examples stay true: the policy example validates, the CLI it lists exists."""

from __future__ import annotations

import re
from pathlib import Path

from app.cli import build_parser
from app.policy_file import parse_policy

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_policy_example_in_readme_validates() -> None:
    block = re.search(r"## The policy file.*?```yaml\n(.*?)```", README, re.S)
    assert block, "README lost its policy example"
    policy = parse_policy(block.group(1), "README policy example")
    assert "enrich-bot" in policy.agents
    assert policy.caps_for("enrich-bot")[0].max_records == 50


def test_every_command_in_the_cli_reference_exists() -> None:
    table = README.split("## CLI reference", 1)[1].split("##", 1)[0]
    documented = set(re.findall(r"`crm-guard ([a-z-]+)", table))
    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]  # noqa: SLF001
    available = set(actions[0].choices)
    assert documented and documented <= available, documented - available
