"""Putting a worker together: settings + policy -> Faust worker with runtime, web and extras."""

from __future__ import annotations

import sys
from typing import Any

import faust
from mode import Service

from app.config import Settings
from app.metrics import GuardMetrics
from app.runtime.console import ConsolePrinter
from app.review.consumer import ReviewServices
from app.review.service import UNKNOWN, ReviewService
from app.pause.keys import signing_key_from_settings
from app.pause.publisher import PauseEncoder
from app.runtime.model_checkpoints import MODEL_PURPOSE
from app.runtime.services import DeliveryRunner, PauseStateService, TimelineService
from app.timeline.store import TimelineStore
from app.runtime.worker import AlertBoard, GuardRuntime, build_faust_app
from app.web.server import WebServer
from detectors.policy import Policy


def paused_reason(board: AlertBoard, agent: str) -> str | None:
    """Why an agent is paused (this worker's pauses and every signed one on guard.pause), else None."""
    decision = board.paused.get(agent)
    if decision is None:
        return None
    return decision.reason or decision.detector or "paused"


def build_runtime(settings: Settings, policy: Policy, *, idempotent: bool,
                  extra: list[Service] | None = None, board: AlertBoard | None = None) -> tuple[GuardRuntime, dict[str, Any]]:
    """The runtime service and the objects the web server shares with it.

    Beside its stages a worker that runs the actor stage runs the review service (proposals,
    trust, the review queue), the timeline store, alert delivery and the pause follower; the
    first two rebuild themselves from their topics on start.
    """
    metrics = GuardMetrics(agents=list(policy.agents))
    board = board or AlertBoard()
    signing_key = signing_key_from_settings(settings)
    encode_pause = PauseEncoder(settings.topics.pause, signing_key.signer())
    if "actor" not in settings.stages:
        # A worker without the actor stage (`--stages record`) only moves events on: the review
        # gate needs the actor state (caps) and the pages live with the alerts, so neither the
        # review service nor the timeline store, alert delivery or pause follower runs here
        # (their routes answer 503); the timeline follower alone would cost ~17 us per event.
        runtime = GuardRuntime(settings, policy, encode_pause=encode_pause, metrics=metrics,
                               idempotent=idempotent, board=board)
        runtime.extra_services.extend(extra or [])
        return runtime, {"settings": settings, "policy": policy, "metrics": metrics, "board": board,
                         "runtime": runtime, "review": None, "timeline": None}
    timeline = TimelineStore()
    holder: dict[str, GuardRuntime] = {}

    def current_value(record_key: str, field: str) -> Any:
        """The record state's value when this process holds the record, else the timeline's."""
        value = holder["runtime"].current_value(record_key, field)
        if value is UNKNOWN:
            known, held = timeline.last_value(record_key, field)
            return held if known else UNKNOWN
        return value

    review = ReviewService(
        settings, policy, registry=metrics.registry, trust_gauge=metrics.trust, idempotent=idempotent,
        current_value=current_value,
        velocity_counts=lambda agent, at_ms: holder["runtime"].velocity_counts(agent, at_ms),
        paused_reason=lambda agent: paused_reason(board, agent),
        publish_override_feedback=False,  # the actor stage publishes override feedback durably
    )
    runtime = GuardRuntime(settings, policy, encode_pause=encode_pause, metrics=metrics,
                           idempotent=idempotent, board=board, on_finding=review.notify_finding,
                           trust_state=review.trust_state, model_secret=signing_key.derived_secret(MODEL_PURPOSE))
    holder["runtime"] = runtime
    runtime.extra_services.append(ReviewServices(review))
    runtime.extra_services.append(TimelineService(settings, timeline))
    runtime.extra_services.append(DeliveryRunner(settings, metrics.registry, idempotent))
    runtime.extra_services.append(PauseStateService(settings, signing_key.key_id, signing_key.public_key,
                                                    runtime.on_pause_state, republish=runtime.republish_pause))
    runtime.extra_services.extend(extra or [])
    shared = {"settings": settings, "policy": policy, "metrics": metrics, "board": board, "runtime": runtime,
              "review": review, "timeline": timeline}
    return runtime, shared


def build_worker(settings: Settings, policy: Policy, *, idempotent: bool, extra: list[Service] | None = None,
                 printer: bool = False, peer_metrics: str | None = None) -> faust.Worker:
    """A Faust worker ready for execute_from_commandline(); `peer_metrics`: the /metrics URL of the
    worker's record process, merged into this one's (app/runtime/record_process.py)."""
    runtime, shared = build_runtime(settings, policy, idempotent=idempotent, extra=extra)
    if peer_metrics:
        shared["peer_metrics"] = peer_metrics
    if printer:
        ConsolePrinter(shared["board"]).attach()
    web = WebServer(shared)
    app = build_faust_app(settings, runtime, web)
    for service in extra or []:
        if hasattr(service, "bind"):
            service.bind(runtime, shared["review"])
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    if not sys.stdout.isatty():
        worker.spinner = None  # its cursor escapes would land in log files and pipes
    return worker
