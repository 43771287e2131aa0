"""Numbers given to the CLI: a bad one is a usage error naming the option (exit 2), never a
traceback (`run --port 70000` was an OverflowError) or a command that never ends (`demo --speed 0`
waited forever)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_FILE = str(ROOT / "app" / "demo" / "hubspot.jsonl")


@pytest.mark.parametrize(("args", "option"), [
    (["run", "--port", "70000"], "--port"),
    (["run", "--port", "-5"], "--port"),
    (["demo", "--speed", "0", "--exit-when-done"], "--speed"),
    (["demo", "--speed", "nan", "--exit-when-done"], "--speed"),
    (["review", "list", "--timeout", "-1"], "--timeout"),
    (["replay", DEMO_FILE, "--out", "{tmp}/o", "--max-bytes", "0"], "--max-bytes"),
    (["replay", DEMO_FILE, "--out", "{tmp}/o", "--max-bytes", "lots"], "--max-bytes"),
    (["replay", DEMO_FILE, "--out", "{tmp}/o", "--max-disorder", "-60"], "--max-disorder"),
])
def test_a_bad_number_is_a_usage_error_naming_it(tmp_path: Path, args: list[str], option: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=str(ROOT),  # noqa: S603
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert f"argument {option}:" in done.stderr and "Traceback" not in done.stderr


def test_a_port_out_of_range_in_the_environment_is_a_configuration_error(tmp_path: Path) -> None:
    env = {**os.environ, "CRM_GUARD_WEB_PORT": "99999"}
    done = subprocess.run([sys.executable, "-m", "app.cli", "run"], cwd=str(tmp_path), env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "web_port" in done.stderr and "Traceback" not in done.stderr
