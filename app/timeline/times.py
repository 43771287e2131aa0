"""Reading and showing times in the timeline API, pages and CLI (always UTC, integer ms)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from detectors.policy import parse_duration_ms

_RELATIVE = re.compile(r"^\s*\d+(?:\.\d+)?\s*(ms|s|m|h|d|w)\s*$")


def parse_time(text: str, now_ms: int) -> int:
    """`1714550400000` (ms), `1714550400` (s), `2024-05-01T08:00:00Z` (ISO; naive means UTC), or a
    duration such as `24h` / `7d` meaning that long before `now_ms`. ValueError otherwise."""
    text = str(text).strip()
    if not text:
        raise ValueError("empty time")
    if text.isdigit():
        value = int(text)
        return value * 1000 if value < 100_000_000_000 else value
    if _RELATIVE.match(text):
        return now_ms - parse_duration_ms(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO 8601, epoch ms, or a duration like 24h)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def iso(ms: int | None) -> str:
    """`2024-05-01 08:00:00Z` for display; empty for None."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def now_ms() -> int:
    """Wall clock in ms (app/ only: detectors use event time)."""
    return int(datetime.now(tz=UTC).timestamp() * 1000)
