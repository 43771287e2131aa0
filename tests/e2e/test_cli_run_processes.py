"""`crm-guard run --processes 2` (the default on two cores): the record stage in a forked second
process, one worker to the outside. Real processes on the test broker: events flow through both to
an alert, one /metrics shows both processes' series (and passes promtool), and the two stop
together whichever way one of them goes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.broker.embedded import free_port
from tests.integration.helpers_stream import (
    POLICY_YAML,
    T0,
    alert_values,
    hubspot_change,
    produce,
    read_topic,
    wait_for,
)
from tests.integration.helpers_worker import record_pid_in, start_worker, worker_env
from tests.integration.test_metrics_promtool import promtool_check_metrics

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def worker_env_for(bootstrap: str, unique: str, tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    return worker_env(bootstrap, unique, policy, tmp_path / "state", "procs")


def start(env: dict[str, str], log: Path, port: int, kafka_kind: str, *extra: str) -> subprocess.Popen[bytes]:
    return start_worker(env, log, kafka_kind, "--port", str(port), *extra)


def record_pid(log: Path, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = record_pid_in(log)
        if pid is not None:
            return pid
        time.sleep(0.2)
    raise AssertionError("no record process announced:\n" + log.read_text()[-3000:])


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_two_processes_are_one_worker_events_alerts_and_one_metrics_endpoint(
    kafka_bootstrap: str,
    unique: str,
    kafka_kind: str,
    tmp_path: Path,
) -> None:
    env = worker_env_for(kafka_bootstrap, unique, tmp_path)
    log, port = tmp_path / "worker.log", free_port()
    worker = start(env, log, port, kafka_kind, "--processes", "2")
    try:
        child = record_pid(log)
        assert alive(child) and child != worker.pid
        assert b"run" in Path(f"/proc/{child}/cmdline").read_bytes()
        # an agent writes a denied field on three records, humans edit others
        batch = [hubspot_change(i, 500 + i, "utm_source", "enriched", T0 + i * 1000) for i in range(1, 4)]
        batch += [
            hubspot_change(
                10 + i, 600 + i, "phone", "1", T0 + i * 1000, source="CRM_UI", source_id="userId:7"
            )
            for i in range(1, 4)
        ]
        await produce(kafka_bootstrap, f"crm.raw.hubspot.{unique}", [orjson.dumps(batch)])

        async def alerted() -> list[dict]:
            values = alert_values(await read_topic(kafka_bootstrap, f"guard.alerts.{unique}", timeout_s=1))
            return [a for a in values if a["kind"] == "protected_field"]

        alerts = await wait_for(alerted, 90)
        assert alerts and alerts[0]["agent"] == "enrich-bot", log.read_text()[-3000:]

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:  # noqa: S310
                return response.read().decode()

        async def merged() -> dict | None:
            held = samples(scrape())
            done = held.get(("crm_guard_processed_batch_seconds_count", (("stage", "record"),)), 0)
            entries = held.get(("crm_guard_state_entries", (("store", "record_state"),)))
            return held if done > 0 and entries else None

        held = await wait_for(merged, 30)
        assert held, scrape()
        # the record process's series (record state: 6 records) beside this process's (the actor stage)
        assert held[("crm_guard_state_entries", (("store", "record_state"),))] == 6
        assert held[("crm_guard_processed_batch_seconds_count", (("stage", "actor"),))] > 0
        assert held[("crm_guard_up", ())] == 1
        text = scrape()
        assert len(re.findall(r"^crm_guard_up ", text, re.M)) == 1  # merged, not concatenated
        checked = promtool_check_metrics(text)
        assert checked.returncode == 0, checked.stdout + checked.stderr

        # the record process killed: the worker says so and stops, exit 1
        os.kill(child, signal.SIGKILL)
        assert worker.wait(timeout=60) == 1
        assert b"the record-stage process was killed by SIGKILL; this worker stops too" in log.read_bytes()
    finally:
        if worker.poll() is None:
            worker.kill()


async def test_the_record_process_stops_with_the_worker_whichever_way_it_stops(
    kafka_bootstrap: str,
    unique: str,
    kafka_kind: str,
    tmp_path: Path,
) -> None:
    env = worker_env_for(kafka_bootstrap, unique, tmp_path)
    log = tmp_path / "worker.log"
    # SIGTERM (what a service manager sends): both stop cleanly, exit 0
    worker = start(env, log, free_port(), kafka_kind, "--processes", "2")
    try:
        child = record_pid(log)
        time.sleep(5)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the record process outlived its worker"
        assert b"Traceback" not in log.read_bytes()
    finally:
        if worker.poll() is None:
            worker.kill()
    # SIGKILL of the worker: the kernel sends the record process SIGTERM (parent-death signal)
    log.write_bytes(b"")
    worker = start(env, log, free_port(), kafka_kind, "--processes", "2")
    try:
        child = record_pid(log)
        worker.kill()
        worker.wait(30)
        deadline = time.monotonic() + 30
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the record process outlived its killed worker"
    finally:
        if worker.poll() is None:
            worker.kill()


def test_processes_1_runs_one_process_and_2_needs_the_record_stage(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_GUARD_")}
    env["CRM_GUARD_STATE_DIR"] = str(tmp_path / "state")
    done = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "app.cli",
            "run",
            "--port",
            "0",
            "--processes",
            "2",
            "--stages",
            "ingest,actor",
        ],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "processes 2 runs the record stage in a second process" in done.stderr
    assert "embedded broker" not in done.stdout  # refused before anything started
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "run", "--port", "0", "--processes", "3"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--processes: invalid choice: '3'" in done.stderr, done.stderr
