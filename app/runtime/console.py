"""Prints alerts and pauses as they fire (run and demo), one line each, no PII."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from app.runtime.worker import AlertBoard
from detectors.alerts import Alert


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


class ConsolePrinter:
    """Subscribes to the alert board; prints each alert when it opens, escalates, pauses or resolves."""

    def __init__(self, board: AlertBoard) -> None:
        self.board = board
        self.shown: dict[str, tuple[str, str, str]] = {}

    def attach(self) -> None:
        self.board.listeners.append(self.show)

    def show(self, alert: Alert) -> None:
        state = (alert.severity.value, alert.action, alert.status)
        if self.shown.get(alert.dedup_key) == state:
            return
        self.shown[alert.dedup_key] = state
        who = alert.agent or alert.actor_key
        action = "  -> PAUSED" if alert.action == "paused" else ""
        if alert.status == "resolved":  # stamped when it resolved, so lines stay in time order
            when, status = alert.resolved_at or alert.last_event_at, "resolved "
            action = f"  (opened {_when(alert.detected_at)})"
        else:
            when, status = alert.detected_at, ""
        sys.stdout.write(
            f"[{_when(when)}] {status}{alert.severity.value.upper():8} {alert.kind:18} {who}: "
            f"{alert.summary}{action}\n"
        )
        sys.stdout.flush()
