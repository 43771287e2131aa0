"""What the benchmarks share: the guard's settings for a run, and the code version they measured."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from app.config import Settings, Topics, load_settings

ROOT = Path(__file__).resolve().parent.parent


def env_settings() -> Settings:
    """The runtime settings the environment gives (CRM_GUARD_*; a settings file is ignored)."""
    return load_settings(env={k: v for k, v in os.environ.items() if k != "CRM_GUARD_CONFIG"})


def bench_settings(bootstrap: str, suffix: str, partitions: int, tag: str) -> Settings:
    """Settings with fresh topic and group names (`tag` + `suffix`) on the given broker. Runtime
    settings a bench does not own (e.g. CRM_GUARD_BATCH_MAX_RECORDS) come from the environment,
    so a run measures the configuration a user would run."""
    topics = Topics(**{k: f"{v}.{tag}{suffix}" for k, v in Topics().model_dump().items()})
    return env_settings().model_copy(update={
        "bootstrap_servers": bootstrap, "group_id": f"bench-{tag}-{suffix}", "partitions": partitions,
        "topics": topics, "web_port": 0, "state_dir": f"/tmp/crm-guard-bench-{tag}-{suffix}"})  # noqa: S108


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a `crm-guard run` child that must join these settings' topics and
    groups (this process's own CRM_GUARD_* variables left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_GUARD_")}
    env.update({"CRM_GUARD_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "CRM_GUARD_GROUP_ID": settings.group_id,
                "CRM_GUARD_PARTITIONS": str(settings.partitions), "CRM_GUARD_STATE_DIR": settings.state_dir,
                "CRM_GUARD_BATCH_MAX_RECORDS": str(settings.batch_max_records)})
    env.update({f"CRM_GUARD_TOPIC_{name.upper()}": value for name, value in settings.topics.model_dump().items()})
    return env


def code_version() -> str:
    """The commit and the tracked files changed in the working tree (figures depend on both)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,  # noqa: S607
                              cwd=str(ROOT), timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,  # noqa: S607
                               text=True, cwd=str(ROOT), timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (clean)")
