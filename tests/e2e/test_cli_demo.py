"""`crm-guard demo` and `crm-guard run` as a user starts them (the README's first command): on the
embedded tansu broker, the incident streamed in, alerts and pauses printed; and a clear error and
exit 1 when the embedded broker goes away under the worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)


def guard_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_GUARD_")}
    env["CRM_GUARD_STATE_DIR"] = str(tmp_path / "state")
    return env


def test_demo_streams_the_incident_on_the_embedded_broker_and_exits_when_done(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "demo", "--exit-when-done", "--speed", "50000", "--port", "0"],
        env=guard_env(tmp_path), cwd=str(ROOT), capture_output=True, text=True, timeout=200,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert re.search(r"embedded broker \(tansu\) on 127\.0\.0\.1:\d+", out)
    summary = re.search(r"demo: done\. (\d+) messages processed, (\d+) alerts, paused agents: (.+)", out)
    assert summary, out[-3000:]
    assert int(summary.group(2)) >= 20
    paused = {a.strip() for a in summary.group(3).split(",")}
    assert {"enrich-agent", "forecast-agent", "pipeline-agent"} <= paused
    for kind in ("mass_overwrite", "protected_field", "duplicate_spike", "stage_anomaly", "unattributed_actor"):
        assert kind in out, kind
    assert "-> PAUSED" in out
    # intent first: after the incident agents propose; a paused agent's proposals wait for review
    # (enrich-agent's and pipeline-agent's wait, being paused; forecast-agent's amount is out of its
    # scope; hygiene-agent's depends on the trust the incident left it)
    routed = re.search(r"demo: 5 agent proposals: (.+) \(review queue: http", out)
    assert routed, out[-1500:]
    counts = {what: int(n) for n, what in re.findall(r"(\d+) ([a-z ]+?)(?:,|$)", routed.group(1))}
    assert counts.get("waiting for review", 0) >= 2 and counts.get("rejected by the gate") == 1, counts
    assert "Traceback" not in done.stderr


def tansu_child(pid: int, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            if "tansu" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
                return int(child)
        time.sleep(0.2)
    raise AssertionError("no tansu child process")


def test_run_stops_with_a_message_when_the_embedded_broker_dies(tmp_path: Path) -> None:
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app.cli", "run", "--port", "0"],
        env=guard_env(tmp_path), cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        broker = tansu_child(worker.pid)
        time.sleep(3)
        os.kill(broker, signal.SIGKILL)
        out, err = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 1, out[-2000:] + err[-2000:]
    assert "the embedded broker (tansu) exited with code -9" in err
    assert "Its topics were in memory, so this worker stops" in err
    assert "warning: no api_token: anyone who reaches the HTTP port" in err  # said once, at start


def test_ctrl_c_stops_the_worker_before_its_broker(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole foreground process group. tansu used to exit on it at once, and the
    worker then spent minutes logging connection errors; the broker is now in a session of its
    own and stopped by the worker, last."""
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app.cli", "demo", "--port", "0"], env=guard_env(tmp_path), cwd=str(ROOT),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        broker = tansu_child(worker.pid)
        time.sleep(15)  # streaming by now
        os.killpg(worker.pid, signal.SIGINT)  # what the terminal does
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert "demo: streaming" in out
    assert "Connect call failed" not in err and "NodeNotReadyError" not in err, err[-2000:]
    assert not Path(f"/proc/{broker}").exists() or "zombie" in Path(f"/proc/{broker}/status").read_text()


def test_a_killed_worker_takes_its_embedded_broker_with_it(tmp_path: Path) -> None:
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app.cli", "run", "--port", "0"], env=guard_env(tmp_path), cwd=str(ROOT),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    broker = tansu_child(worker.pid)
    worker.kill()
    worker.wait(30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{broker}").exists():
        status = Path(f"/proc/{broker}/status").read_text() if Path(f"/proc/{broker}").exists() else ""
        if "zombie" in status:
            break
        time.sleep(0.2)
    gone = not Path(f"/proc/{broker}").exists() or "zombie" in Path(f"/proc/{broker}/status").read_text()
    assert gone, "tansu outlived the worker that started it"


def test_run_against_a_kafka_that_is_not_there_says_so_and_exits_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    env = guard_env(tmp_path) | {"CRM_GUARD_BOOTSTRAP_SERVERS": address}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "run", "--port", "0"], env=env, cwd=str(ROOT), capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"crm-guard run: cannot reach Kafka at {address}" in done.stderr
    assert "CRM_GUARD_BOOTSTRAP_SERVERS" in done.stderr and "Traceback" not in done.stderr


def test_run_with_web_tls_files_that_cannot_be_read_says_so_and_exits_2(tmp_path: Path) -> None:
    env = guard_env(tmp_path) | {"CRM_GUARD_WEB_TLS_CERTFILE": str(tmp_path / "missing.pem")}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "run", "--port", "0"], env=env, cwd=str(ROOT), capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "crm-guard run: web TLS files" in done.stderr and "Traceback" not in done.stderr
    assert "embedded broker" not in done.stdout  # refused before anything started


def test_run_with_a_users_file_that_does_not_parse_says_where_and_exits_2(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("ann reviewer sha256:not-hex\n")
    env = guard_env(tmp_path) | {"CRM_GUARD_API_USERS_FILE": str(users)}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "run", "--port", "0"], env=env, cwd=str(ROOT), capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"crm-guard run: api_users_file: {users}:1: the token digest" in done.stderr
    assert "Traceback" not in done.stderr and "embedded broker" not in done.stdout
