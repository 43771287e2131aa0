"""The embedded broker's watchdog, on real processes: it reports an exited broker and one that is
alive but no longer accepts connections, once, and nothing after a normal stop."""

from __future__ import annotations

import subprocess
import sys
import threading

from app.broker.embedded import EmbeddedBroker, free_port


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # noqa: S603


def watched(broker: EmbeddedBroker) -> tuple[list[str], threading.Thread]:
    reasons: list[str] = []
    thread = broker.watch(reasons.append, interval_s=0.05, misses=3)
    return reasons, thread


def test_a_broker_that_stops_accepting_connections_is_reported_once() -> None:
    broker = EmbeddedBroker(process=sleeper(), port=free_port())  # alive, nothing listens
    try:
        reasons, thread = watched(broker)
        thread.join(10)
        assert reasons == [f"the embedded broker (tansu, pid {broker.process.pid}) stopped accepting connections "
                           f"on {broker.bootstrap}"]
    finally:
        broker.stop()


def test_an_exited_broker_is_reported_with_its_exit_code() -> None:
    broker = EmbeddedBroker(process=sleeper(), port=free_port())
    reasons, thread = watched(broker)
    broker.process.kill()
    thread.join(10)
    assert reasons == ["the embedded broker (tansu) exited with code -9"]


def test_a_normal_stop_is_not_a_failure() -> None:
    broker = EmbeddedBroker(process=sleeper(), port=free_port())
    reasons: list[str] = []
    thread = broker.watch(reasons.append, interval_s=1.0, misses=1)
    broker.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert reasons == []
