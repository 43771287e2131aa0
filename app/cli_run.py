"""`crm-guard run` (the guard as a long-running worker) and `crm-guard demo` (the same, on the
embedded broker, with the bundled incident streamed in accelerated time)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.broker.embedded import BrokerError, EmbeddedBroker, start_embedded
from app.cli_types import port_number, positive_float
from app.config import Settings, SettingsError, load_settings
from app.policy_file import load_policy
from app.policy_lint import lint_policy
from app.runtime.record_process import RecordProcess, parent_stages, process_count, start_record_process
from app.web.tls import server_ssl_context
from app.web.users import UsersFileError, read_users

log = logging.getLogger("crm_guard")
DEMO_DIR = Path(__file__).resolve().parent / "demo"


BROKER_CHECK_TIMEOUT_S = 20.0
"""How long `run` waits for the configured Kafka to answer before it gives up with a message."""

EMBEDDED_FETCH_WAIT_MS = 25
"""The stages' fetch wait on the embedded broker: each hop through tansu costs about this much."""
EMBEDDED_SESSION_TIMEOUT_MS = 6_000
"""tansu holds a new group's first JoinGroup for half the session timeout: the worker's consumer
groups (Faust's own, the stages, delivery, review) joined after 30 s with Faust's default 60 s;
with 6 s every group has joined ~3 s after start."""


def _prepare(args: argparse.Namespace, demo: bool) -> tuple[Settings, Any, EmbeddedBroker | None, int]:
    """Settings, policy, the embedded broker when one was started, and how many processes to run."""
    settings = load_settings(file=args.config)
    if getattr(args, "stages", None):
        try:
            settings = settings.with_overrides(stages=args.stages)
        except ValidationError as exc:
            raise SettingsError(f"--stages {args.stages}: {exc.errors()[0]['msg']}") from exc
    if getattr(args, "processes", None):
        settings = settings.with_overrides(processes=args.processes)
    processes = 1 if demo else process_count(settings.processes, list(settings.stages))
    if args.port is not None:
        settings = settings.with_overrides(web_port=args.port, public_url=f"http://127.0.0.1:{args.port}")
    policy_path = args.policy or settings.policy_file or (str(DEMO_DIR / "policy.yaml") if demo else None)
    policy = load_policy(policy_path)
    for warning in lint_policy(policy):  # valid but likely to attribute wrongly: say so at start
        print(f"crm-guard: policy warning: {warning}", file=sys.stderr, flush=True)
    if settings.api_users_file:
        try:
            read_users(settings.api_users_file)
        except UsersFileError as exc:
            raise SettingsError(f"api_users_file: {exc}") from exc
    if settings.api_token is None and not settings.api_users_file and not demo:
        print("crm-guard: warning: no api_token: anyone who reaches the HTTP port (agents included) can approve "
              "proposals and resume paused agents; set CRM_GUARD_API_TOKEN or CRM_GUARD_API_USERS_FILE",
              file=sys.stderr, flush=True)
    _check_port_free(settings)
    try:
        server_ssl_context(settings)  # bad certificate files: a message now, not a traceback from the web server
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"web TLS files (web_tls_certfile, web_tls_keyfile, web_tls_client_cafile): {exc}") from exc
    broker = None
    if settings.bootstrap_servers:
        _check_broker(settings)
    else:
        try:
            Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
            broker = start_embedded(log_path=str(Path(settings.state_dir) / "tansu.log"))
        except BrokerError as exc:
            raise SystemExit(f"crm-guard: cannot start the embedded broker: {exc}") from exc
        # tansu answers a fetch only when its wait expires (docs/latency-recovery.md): keep it short.
        # Its topics live in memory and die with it, so a local state copy could never be reused.
        settings = settings.with_overrides(bootstrap_servers=broker.bootstrap, partitions=min(settings.partitions, 3),
                                           fetch_max_wait_ms=min(settings.fetch_max_wait_ms, EMBEDDED_FETCH_WAIT_MS),
                                           session_timeout_ms=min(settings.session_timeout_ms, EMBEDDED_SESSION_TIMEOUT_MS),
                                           local_state=False)
        print(f"embedded broker (tansu) on {broker.bootstrap}", flush=True)
    return settings, policy, broker, processes


def _check_port_free(settings: Settings) -> None:
    """Fail fast, with a message, when the web port is taken (another crm-guard, most likely),
    instead of a traceback from deep in the worker's start after the broker was started."""
    if not settings.web_port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.web_host, settings.web_port))
        except OSError as exc:
            raise SettingsError(f"web port {settings.web_host}:{settings.web_port} is not free ({exc.strerror}): "
                                f"is another crm-guard running? Use --port or CRM_GUARD_WEB_PORT") from exc


def _check_broker(settings: Settings) -> None:
    """Fail fast, with a message, when the configured Kafka cannot be reached (wrong address,
    down, TLS or SASL refused): otherwise the worker dies in its start with a traceback."""
    from aiokafka.admin import AIOKafkaAdminClient

    from app.runtime.kafka_client import client_kwargs

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **client_kwargs(settings))
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), BROKER_CHECK_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - whatever the client raised, the user needs the address and the cause
        text = str(exc)
        cause = ("no answer" if isinstance(exc, TimeoutError)
                 else text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}")
        raise BrokerUnreachable(
            f"cannot reach Kafka at {settings.bootstrap_servers} ({cause}). Check CRM_GUARD_BOOTSTRAP_SERVERS and "
            f"the security settings (security_protocol, sasl_*, ssl_*); unset it to run on the embedded broker"
        ) from exc


class BrokerUnreachable(Exception):
    """The configured Kafka did not answer: `run` says so and exits 1."""


def _run_worker(args: argparse.Namespace, demo: bool) -> int:
    from app.runtime.assembly import build_worker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings, policy, broker, processes = _prepare(args, demo)
    except BrokerUnreachable as exc:
        print(f"crm-guard {args.command}: {exc}", file=sys.stderr, flush=True)
        return 1
    idempotent = broker is None and not args.no_idempotence
    record_process: RecordProcess | None = None
    failures: list[str] = []
    try:
        if processes == 2:
            record_process = start_record_process(
                settings, lambda child: _run_record_child(child, policy, idempotent))
            settings = parent_stages(settings)
        feed = None
        if demo:
            from app.demo_feed import DemoFeeder

            feed = DemoFeeder(settings, DEMO_DIR, speed=args.speed, exit_when_done=args.exit_when_done)
        worker = build_worker(settings, policy, idempotent=idempotent, extra=[feed] if feed else [],
                              printer=True, peer_metrics=record_process.metrics_url if record_process else None)
        print(f"crm-guard worker: web and metrics on {settings.public_url} (Ctrl-C to stop)", flush=True)
        if record_process is not None:
            print(f"crm-guard worker: the record stage runs in a second process (pid {record_process.pid}; "
                  f"--processes 1 keeps one); its metrics are in {settings.public_url}/metrics", flush=True)
            record_process.watch(lambda how, clean: _record_process_exited(how, clean, args.command, failures))
        if broker is not None:
            broker.watch(lambda reason: _broker_failed(reason, args.command, failures))
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
            if (feed is not None and feed.failed) or failures:
                return 1
            return code
        return 1 if failures else 0
    finally:
        if record_process is not None:
            record_process.stop()
        if broker is not None:
            broker.stop()


def _run_record_child(settings: Settings, policy: Any, idempotent: bool) -> int:
    """The forked record process (app/runtime/record_process.py): a worker of the record stage."""
    from app.runtime.assembly import build_worker

    worker = build_worker(settings, policy, idempotent=idempotent)
    worker.execute_from_commandline()
    return 0


def _record_process_exited(how: str, clean: bool, command: str, failures: list[str]) -> None:
    """The record process stopped while this one runs: the worker is not whole, so it stops too."""
    if not clean:
        failures.append(how)
    print(f"crm-guard {command}: the record-stage process {how}; this worker stops too (run it again)",
          file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def _broker_failed(reason: str, command: str, failures: list[str]) -> None:
    """The embedded broker is gone, and its in-memory topics with it: say so once and stop."""
    failures.append(reason)
    print(f"crm-guard {command}: {reason}. Its topics were in memory, so this worker stops. Run it again, or "
          f"point CRM_GUARD_BOOTSTRAP_SERVERS at a Kafka (deploy/kafka/kafka.sh start 9092 starts Apache Kafka "
          f"here).", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="settings YAML (default: CRM_GUARD_CONFIG, then env)")
    p.add_argument("--policy", metavar="FILE", help="policy YAML")
    p.add_argument("--port", type=port_number, help="web/metrics port (default 6066)")
    p.add_argument("--no-idempotence", action="store_true",
                   help="plain acks=all producer (brokers without InitProducerId)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="run the guard worker (embedded broker when none is configured)")
    _add_common(run)
    run.add_argument("--stages", metavar="LIST",
                     help="comma-separated stages this worker runs (default: ingest,record,link,actor)")
    run.add_argument("--processes", choices=["auto", "1", "2"],
                     help="2: the record stage in a second process; auto (default): 2 on two cores or more")
    run.set_defaults(func=lambda a: _run_worker(a, demo=False))
    demo = sub.add_parser("demo", help="the guard on the embedded broker, replaying the demo incident live")
    _add_common(demo)
    demo.add_argument("--speed", type=positive_float, default=3600.0,
                      help="simulated seconds per wall second (default 3600: an hour a second)")
    demo.add_argument("--exit-when-done", action="store_true", help="stop once the incident has been processed")
    demo.set_defaults(func=lambda a: _run_worker(a, demo=True))
