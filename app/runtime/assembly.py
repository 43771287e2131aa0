"""Putting a worker together: settings + policy -> Faust worker with runtime, web and extras."""

from __future__ import annotations

from typing import Any

import faust
from mode import Service

from app.config import Settings
from app.metrics import GuardMetrics
from app.runtime.console import ConsolePrinter
from app.runtime.pause_encoding import pause_encoder_for
from app.runtime.worker import AlertBoard, GuardRuntime, build_faust_app
from app.web.server import WebServer
from detectors.policy import Policy


def build_runtime(settings: Settings, policy: Policy, *, idempotent: bool,
                  extra: list[Service] | None = None, board: AlertBoard | None = None) -> tuple[GuardRuntime, dict[str, Any]]:
    """The runtime service and the objects the web server shares with it."""
    metrics = GuardMetrics(agents=list(policy.agents))
    board = board or AlertBoard()
    runtime = GuardRuntime(settings, policy, encode_pause=pause_encoder_for(settings), metrics=metrics,
                           idempotent=idempotent, board=board)
    runtime.extra_services.extend(extra or [])
    shared = {"settings": settings, "policy": policy, "metrics": metrics, "board": board, "runtime": runtime}
    return runtime, shared


def build_worker(settings: Settings, policy: Policy, *, idempotent: bool, extra: list[Service] | None = None,
                 printer: bool = False) -> faust.Worker:
    """A Faust worker ready for execute_from_commandline()."""
    runtime, shared = build_runtime(settings, policy, idempotent=idempotent, extra=extra)
    if printer:
        ConsolePrinter(shared["board"]).attach()
    web = WebServer(shared)
    app = build_faust_app(settings, runtime, web)
    for service in extra or []:
        if hasattr(service, "bind"):
            service.bind(runtime)
    return faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
