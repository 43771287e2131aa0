"""`crm-guard run` as a real process on the test broker: its environment, its start, and the pid
of its record-stage process (app/runtime/record_process.py), for the tests that kill or stop it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from app.config import Topics

ROOT = Path(__file__).resolve().parents[2]
RECORD_PID = re.compile(rb"record stage runs in a second process \(pid (\d+)")
"""What the worker prints when it forked its record stage."""


def worker_env(
    bootstrap: str, unique: str, policy: Path, state: Path, group: str, **extra: str
) -> dict[str, str]:
    """The environment of a worker on fresh topics and group (`<name>.<unique>`, `<group>-<unique>`);
    `extra`: more CRM_GUARD_* settings (key without the prefix, e.g. BATCH_MAX_RECORDS="500")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_GUARD_")}
    env.update(
        {
            "CRM_GUARD_BOOTSTRAP_SERVERS": bootstrap,
            "CRM_GUARD_GROUP_ID": f"{group}-{unique}",
            "CRM_GUARD_PARTITIONS": "3",
            "CRM_GUARD_POLICY_FILE": str(policy),
            "CRM_GUARD_STATE_DIR": str(state),
        }
    )
    env.update({f"CRM_GUARD_{key}": value for key, value in extra.items()})
    for name, value in Topics().model_dump().items():
        env[f"CRM_GUARD_TOPIC_{name.upper()}"] = f"{value}.{unique}"
    return env


def start_worker(env: dict[str, str], log: Path, kafka_kind: str, *args: str) -> subprocess.Popen[bytes]:
    """`crm-guard run [args]`, its output appended to `log` (tansu: without idempotence)."""
    command = [sys.executable, "-m", "app.cli", "run", *args]
    if kafka_kind != "apache":
        command.append("--no-idempotence")
    return subprocess.Popen(  # noqa: S603 - our own CLI
        command,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),  # noqa: SIM115
    )


def record_pid_in(log: Path) -> int | None:
    """The pid of the worker's record-stage process, once the log announced it."""
    found = RECORD_PID.findall(log.read_bytes())
    return int(found[-1]) if found else None
