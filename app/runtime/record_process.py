"""`crm-guard run` on two cores: the record stage in a second process.

One Python process runs the guard's stages one at a time on one core. The record stage (record
state, priors, record detectors, the timeline rows) costs about half of an event's CPU, so with
it in a process of its own a worker uses the second core: 1.75-2.1x the events/s of one process
and a lower alert latency (bench/throughput.py --split, bench/latency.py --worker-stages).

The worker forks before it starts anything (no event loop, no consumer, no thread of its own
yet), so the child runs `--stages record` with the very settings and policy the parent loaded. The
two are one worker to the outside:
* each stage is its own consumer group, so nothing else changes: the record stage reads
  crm.changes and writes its outputs to Kafka as it would in any process;
* the child serves its metrics on a loopback port only, and the parent's /metrics merges them in
  (app/metrics_merge.py): one scrape target per worker, as before;
* the parent stops the child (SIGTERM, its clean stop) when it stops; the child is in a process
  group of its own, so a Ctrl-C in the terminal reaches the parent only, and gets SIGTERM when
  the parent dies, even by SIGKILL. If the child exits on its own, the parent stops too, with a
  message (and exit 1 unless the child stopped cleanly): the worker is not whole without its
  record stage, and whatever supervises it restarts both.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable

from app.broker.embedded import free_port, parent_death_signal
from app.config import STAGES, Settings, SettingsError

STOP_TIMEOUT_S = 30.0
"""How long the parent waits for the child's clean stop (its last commits) before SIGKILL."""


def process_count(setting: str | int, stages: list[str], cpus: int | None = None) -> int:
    """How many processes `run` uses: `auto` is 2 on two cores or more when the worker runs every
    stage (a worker given only some stages is already part of a split), else 1."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if setting == "auto":
        return 2 if cpus >= 2 and set(stages) == set(STAGES) else 1
    count = int(setting)
    if count == 2 and ("record" not in stages or len(stages) < 2):
        raise SettingsError(
            "processes 2 runs the record stage in a second process: the worker's stages must "
            "include record and at least one other (see --stages)"
        )
    return count


def child_settings(settings: Settings, port: int) -> Settings:
    """The child's settings: the record stage only, its web server (for /metrics) on loopback."""
    return settings.with_overrides(
        stages=["record"],
        web_host="127.0.0.1",
        web_port=port,
        public_url=f"http://127.0.0.1:{port}",
        web_tls_certfile=None,
        web_tls_keyfile=None,
        web_tls_client_cafile=None,
    )


def parent_stages(settings: Settings) -> Settings:
    """The parent's settings: every stage it was given but record."""
    return settings.with_overrides(stages=[stage for stage in settings.stages if stage != "record"])


class RecordProcess:
    """The forked record-stage process, seen from the parent: a thread waits for it from the
    start (so it is always reaped, whatever the parent does next)."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid = pid
        self.port = port
        self.stopping = False
        self._exit: tuple[str, bool] | None = None  # (description, clean) once it exited
        self._on_exit: Callable[[str, bool], None] | None = None
        self._lock = threading.Lock()
        self._exited = threading.Event()
        threading.Thread(target=self._wait, name="record-process-wait", daemon=True).start()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def watch(self, on_exit: Callable[[str, bool], None]) -> None:
        """Call on_exit(description, clean) when the child exits while the parent is not stopping
        it; at once if it already did."""
        with self._lock:
            self._on_exit = on_exit
            exited = self._exit
        if exited is not None and not self.stopping:
            on_exit(*exited)

    def _wait(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        with self._lock:
            self._exit = (describe_exit(status), os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
            on_exit = self._on_exit
        self._exited.set()
        if on_exit is not None and not self.stopping:
            on_exit(*self._exit)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean stop: last batch, commits), SIGKILL after timeout_s."""
        self.stopping = True
        if self._exited.is_set():
            return
        _signal(self.pid, signal.SIGTERM)
        if not self._exited.wait(timeout_s):
            _signal(self.pid, signal.SIGKILL)
            self._exited.wait(5.0)


def describe_exit(status: int) -> str:
    """`exited with code N` or `was killed by SIGNAME`, from an os.waitpid status."""
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def start_record_process(settings: Settings, run_child: Callable[[Settings], int]) -> RecordProcess:
    """Fork the child, which calls run_child(its settings) and exits with its return value."""
    port = free_port()
    settings_for_child = child_settings(settings, port)
    set_death_signal = parent_death_signal()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the parent's code (its finally blocks stop the broker)
        code = 1
        try:
            if set_death_signal is not None:
                set_death_signal()
            if os.getppid() != parent:  # the parent died before the signal was set
                os._exit(1)
            os.setpgid(0, 0)  # out of the terminal's foreground group: the parent alone stops it
            code = run_child(settings_for_child)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException:  # noqa: BLE001 - the child must exit here, whatever happened
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return RecordProcess(pid, port)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
