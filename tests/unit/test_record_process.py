"""app/runtime/record_process.py: when `run` splits, and how the two processes' settings differ."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from app.config import STAGES, Settings, SettingsError, load_settings
from app.policy_file import parse_policy
from app.review.service import UNKNOWN
from app.runtime.assembly import build_runtime
from app.runtime.record_process import (
    RecordProcess,
    child_settings,
    describe_exit,
    parent_stages,
    process_count,
)


def test_auto_splits_on_two_cores_when_the_worker_runs_every_stage() -> None:
    assert process_count("auto", list(STAGES), cpus=2) == 2
    assert process_count("auto", list(STAGES), cpus=8) == 2
    assert process_count("auto", list(STAGES), cpus=1) == 1
    # a worker given some stages is already part of a split made by hand
    assert process_count("auto", ["ingest", "link", "actor"], cpus=2) == 1
    assert process_count("auto", ["record"], cpus=2) == 1


def test_explicit_counts() -> None:
    assert process_count(1, list(STAGES), cpus=8) == 1
    assert process_count(2, list(STAGES), cpus=1) == 2  # asked for: done, even on one core
    assert process_count(2, ["record", "link"], cpus=2) == 2
    for stages in (["record"], ["ingest", "actor"]):
        with pytest.raises(SettingsError, match="processes 2 runs the record stage in a second process"):
            process_count(2, stages, cpus=2)


def test_processes_from_the_environment() -> None:
    assert load_settings(env={}).processes == "auto"
    assert load_settings(env={"CRM_GUARD_PROCESSES": "1"}).processes == 1
    assert load_settings(env={"CRM_GUARD_PROCESSES": " 2 "}).processes == 2
    with pytest.raises(SettingsError, match="processes"):
        load_settings(env={"CRM_GUARD_PROCESSES": "4"})


def test_the_child_runs_the_record_stage_on_loopback_and_the_parent_the_rest() -> None:
    settings = Settings(
        web_host="0.0.0.0",  # noqa: S104 - a setting, nothing is bound
        web_port=8443,
        public_url="https://guard.example.com",
        web_tls_certfile="/etc/guard/cert.pem",
        web_tls_keyfile="/etc/guard/key.pem",
        bootstrap_servers="kafka:9092",
        group_id="g",
    )
    child = child_settings(settings, 41234)
    assert child.stages == ["record"]
    assert (child.web_host, child.web_port, child.public_url) == (
        "127.0.0.1",
        41234,
        "http://127.0.0.1:41234",
    )
    assert child.web_tls_certfile is None and child.web_tls_keyfile is None
    assert (child.bootstrap_servers, child.group_id) == ("kafka:9092", "g")  # the same worker otherwise
    parent = parent_stages(settings)
    assert parent.stages == ["ingest", "link", "actor"]
    assert (parent.web_port, parent.web_tls_certfile) == (8443, "/etc/guard/cert.pem")


def test_exit_descriptions() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert describe_exit(status) == "exited with code 3"
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert describe_exit(status) == "was killed by SIGKILL"


def test_the_parent_shows_current_values_from_the_timeline_when_the_record_state_is_elsewhere(
    tmp_path: Path,
) -> None:
    """The review queue's "current value" of a field: the record state lives in the record
    process, so the parent answers from its timeline (built, not started: no broker needed)."""
    settings = Settings(
        bootstrap_servers="127.0.0.1:9", stages=["ingest", "link", "actor"], state_dir=str(tmp_path)
    )
    _, shared = build_runtime(settings, parse_policy("{}", "test"), idempotent=False)
    current = shared["review"].current_value
    assert current("hubspot/contact/1", "city") is UNKNOWN
    shared["timeline"].append(
        {
            "event_id": "e1",
            "record_key": "hubspot/contact/1",
            "source": "hubspot",
            "object_type": "contact",
            "record_id": "1",
            "occurred_at": 1_767_225_600_000,
            "field": "city",
            "new": "Oslo",
            "actor_id": "user-1",
            "actor_kind": "human",
        }
    )
    assert current("hubspot/contact/1", "city") == "Oslo"
    assert current("hubspot/contact/1", "phone") is UNKNOWN


def test_an_exit_before_the_parent_watches_is_still_reported_and_the_child_reaped() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(4)
    child = RecordProcess(pid, 0)
    child._exited.wait(10)
    seen: list[tuple[str, bool]] = []
    child.watch(lambda how, clean: seen.append((how, clean)))
    assert seen == [("exited with code 4", False)]
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped already: no zombie left


def test_stop_is_clean_and_reports_nothing() -> None:
    pid = os.fork()
    if pid == 0:
        signal.pause()  # until SIGTERM (default action: exit)
        os._exit(0)
    child = RecordProcess(pid, 0)
    seen: list[tuple[str, bool]] = []
    child.watch(lambda how, clean: seen.append((how, clean)))
    child.stop(timeout_s=10)
    assert child._exited.is_set() and seen == []
