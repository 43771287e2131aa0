"""The keys under which the web application holds the worker's shared objects (aiohttp AppKeys:
typed, and no NotAppKeyWarning). `build_web_app` maps the shared dict's names to these."""

from __future__ import annotations

from typing import Any

from aiohttp import web

SETTINGS = web.AppKey("settings", Any)  # app.config.Settings
POLICY = web.AppKey("policy", Any)  # detectors.policy.Policy
METRICS = web.AppKey("metrics", Any)  # app.metrics.GuardMetrics
BOARD = web.AppKey("board", Any)  # app.runtime.worker.AlertBoard
RUNTIME = web.AppKey("runtime", Any)  # app.runtime.worker.GuardRuntime (None before start)
REVIEW = web.AppKey("review", Any)  # app.review.service.ReviewService (None without the actor stage)
TIMELINE = web.AppKey("timeline", Any)  # app.timeline.store.TimelineStore (None without the actor stage)
SHOW_PII = web.AppKey("show_pii", bool)  # optional override of settings.show_pii
ALERTS = web.AppKey("alerts", Any)  # optional: alert dicts, or a callable returning them
TRUST = web.AppKey("trust", Any)  # optional: {agent: {tier: value}} or a callable(agent)
USERS = web.AppKey("users", Any)  # app.web.users.UsersFile when settings.api_users_file is set
PEER_METRICS = web.AppKey("peer_metrics", Any)  # optional: the record process's /metrics URL (str)

BY_NAME: dict[str, web.AppKey[Any]] = {
    "settings": SETTINGS, "policy": POLICY, "metrics": METRICS, "board": BOARD, "runtime": RUNTIME,
    "review": REVIEW, "timeline": TIMELINE, "show_pii": SHOW_PII, "alerts": ALERTS, "trust": TRUST,
    "users": USERS, "peer_metrics": PEER_METRICS,
}
"""Shared-object name -> its key."""
