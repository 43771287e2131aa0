"""`crm-guard replay`: the backtest. Recorded payloads in, the guard's conclusions out.

Reads JSON Lines files (one delivered payload per line), normalizes them, merges the files in
event-time order and runs every detector through `detectors.pipeline.Guard`. Output (in --out):
alerts.jsonl (the final version of every alert), pauses.jsonl, overrides.jsonl, deadletter.jsonl,
timeline.jsonl (one line per field change, the input of revert plans) and summary.json.

Ordering: each file is streamed through a reorder buffer that holds `max_disorder_ms` of event
time (default 1 h), and the files are merged by (event time, file, line, position). Events later
than that are processed where they arrive and counted as `late`; the detectors tolerate them.
Memory is bounded by the disorder window, not the file size. Output is deterministic: the same
input gives byte-identical files (no wall-clock anywhere).
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from app.adapters import AdapterError, decode_line, normalize_with_errors
from detectors.alerts import Alert
from detectors.base import Finding
from detectors.events import ChangeEvent
from detectors.pipeline import Guard, Output
from detectors.policy import Policy

SOURCES = ("auto", "hubspot", "salesforce", "pipedrive", "canonical")
EXIT_OK = 0
EXIT_DEADLETTERS = 3


@dataclass
class ReplayStats:
    """Counts for summary.json."""

    lines: int = 0
    events: int = 0
    duplicates: int = 0
    late: int = 0
    deadletters: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    by_actor_kind: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    first_event_at: int | None = None
    last_event_at: int | None = None


@dataclass(order=True)
class _Item:
    occurred_at: int
    file_index: int
    line: int
    position: int
    event: ChangeEvent = field(compare=False)


class _Outputs:
    """The output files, written as the replay goes (alerts at the end: their final versions)."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.dir = out_dir
        self.pauses = open(out_dir / "pauses.jsonl", "wb")  # noqa: SIM115
        self.overrides = open(out_dir / "overrides.jsonl", "wb")  # noqa: SIM115
        self.deadletter = open(out_dir / "deadletter.jsonl", "wb")  # noqa: SIM115
        self.timeline = open(out_dir / "timeline.jsonl", "wb")  # noqa: SIM115

    def close(self) -> None:
        for handle in (self.pauses, self.overrides, self.deadletter, self.timeline):
            handle.close()


def _dump(handle: IO[bytes], data: Any) -> None:
    handle.write(orjson.dumps(data, option=orjson.OPT_SORT_KEYS) + b"\n")


def _file_items(
    path: Path, file_index: int, source: str, max_bytes: int, outputs: _Outputs, stats: ReplayStats,
    progress: "_Progress | None",
) -> Iterator[_Item]:
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if progress is not None:
                progress.advance(len(raw))
            if not raw.strip():
                continue
            stats.lines += 1
            try:
                payload = decode_line(raw, max_bytes=max_bytes)
                events, errors = normalize_with_errors(payload, source)
            except AdapterError as exc:
                events, errors = [], [exc]
            for err in errors:
                stats.deadletters += 1
                _dump(outputs.deadletter, {
                    "file": str(path), "line": line_no, "reason": err.reason, "message": str(err),
                })
            for position, event in enumerate(events):
                yield _Item(event.occurred_at, file_index, line_no, position, event)


def _reordered(items: Iterator[_Item], max_disorder_ms: int, stats: ReplayStats) -> Iterator[_Item]:
    """Event-time order within a disorder window; stragglers pass through as they come."""
    heap: list[_Item] = []
    emitted_up_to: int | None = None
    newest = None
    for item in items:
        if emitted_up_to is not None and item.occurred_at < emitted_up_to:
            stats.late += 1
            yield item
            continue
        heapq.heappush(heap, item)
        newest = item.occurred_at if newest is None else max(newest, item.occurred_at)
        while heap and heap[0].occurred_at <= newest - max_disorder_ms:
            first = heapq.heappop(heap)
            emitted_up_to = first.occurred_at
            yield first
    while heap:
        yield heapq.heappop(heap)


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.shown = -1

    def advance(self, n: int) -> None:
        self.done += n
        pct = min(100, self.done * 100 // self.total)
        if pct != self.shown:
            self.shown = pct
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\rreplay [{bar:<25}] {pct:3d}%")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def timeline_rows(out: Output) -> list[dict[str, Any]]:
    """One timeline row per field change (see app/timeline/store.py TimelineEntry)."""
    obs = out.observation
    if obs is None:
        return []
    event = obs.event
    base = {
        "event_id": event.event_id,
        "record_key": event.record_key,
        "source": event.source,
        "object_type": event.object_type.value,
        "record_id": event.record_id,
        "occurred_at": event.occurred_at,
        "actor_id": event.actor.id,
        "actor_kind": event.actor.kind.value,
        "operation": event.operation,
    }
    if not event.changes:
        return [{**base, "field": None, "old": None, "has_old": False, "new": None}]
    rows = []
    for change in event.changes:
        prior = obs.priors.get(change.field)
        if change.has_old:
            old, has_old = change.old, True
        elif prior is not None:
            old, has_old = prior.value, True
        else:
            old, has_old = None, False
        rows.append({**base, "field": change.field, "old": old, "has_old": has_old, "new": change.new})
    return rows


def override_row(finding: Finding) -> dict[str, Any]:
    """An override signal as written to overrides.jsonl and guard.feedback."""
    return {
        "agent": finding.agent or finding.actor_key,
        "record_key": finding.record_key,
        "event_id": finding.event_id,
        "occurred_at": finding.occurred_at,
        **finding.details,
    }


def run_replay(
    paths: list[Path],
    out_dir: Path,
    policy: Policy,
    source: str = "auto",
    max_bytes: int = 1_000_000,
    max_disorder_ms: int = 3_600_000,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Replay the files; returns the summary (also written to summary.json)."""
    stats = ReplayStats()
    guard = Guard(policy)
    outputs = _Outputs(out_dir)
    progress = _Progress(sum(p.stat().st_size for p in paths)) if show_progress else None
    latest: dict[str, Alert] = {}
    try:
        streams = [
            _reordered(_file_items(p, i, source, max_bytes, outputs, stats, progress), max_disorder_ms, stats)
            for i, p in enumerate(paths)
        ]
        for item in heapq.merge(*streams):
            _process(guard, item.event, outputs, stats, latest)
        if stats.last_event_at is not None:
            _record_outcome(guard.finish(stats.last_event_at), outputs, stats, latest)
    finally:
        outputs.close()
        if progress is not None:
            progress.close()
    alerts = sorted(latest.values(), key=lambda a: (a.first_event_at, a.dedup_key))
    with open(out_dir / "alerts.jsonl", "wb") as handle:
        for alert in alerts:
            _dump(handle, alert.model_dump(mode="json"))
    summary = _summary(stats, alerts, guard)
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    return summary


def _process(guard: Guard, event: ChangeEvent, outputs: _Outputs, stats: ReplayStats, latest: dict[str, Alert]) -> None:
    out = guard.process(event)
    if out.duplicate:
        stats.duplicates += 1
        return
    stats.events += 1
    obs = out.observation
    assert obs is not None
    attributed = obs.event
    stats.by_source[attributed.source] += 1
    stats.by_actor_kind[attributed.actor.kind.value] += 1
    if stats.first_event_at is None or attributed.occurred_at < stats.first_event_at:
        stats.first_event_at = attributed.occurred_at
    if stats.last_event_at is None or attributed.occurred_at > stats.last_event_at:
        stats.last_event_at = attributed.occurred_at
    for row in timeline_rows(out):
        _dump(outputs.timeline, row)
    _record_outcome(out, outputs, stats, latest)


def _record_outcome(out: Output, outputs: _Outputs, stats: ReplayStats, latest: dict[str, Alert]) -> None:
    for finding in out.findings:
        stats.findings[f"{finding.detector}/{finding.severity.value}"] += 1
        if finding.detector == "override":
            _dump(outputs.overrides, override_row(finding))
    for alert in out.alerts:
        latest[alert.dedup_key] = alert
    for pause in out.pauses:
        _dump(outputs.pauses, pause.model_dump(mode="json"))


def _summary(stats: ReplayStats, alerts: list[Alert], guard: Guard) -> dict[str, Any]:
    by_kind: Counter[str] = Counter(f"{a.kind}/{a.severity.value}" for a in alerts)
    return {
        "lines": stats.lines,
        "events": stats.events,
        "duplicates_skipped": stats.duplicates,
        "late_events": stats.late,
        "deadletters": stats.deadletters,
        "events_by_source": dict(sorted(stats.by_source.items())),
        "events_by_actor_kind": dict(sorted(stats.by_actor_kind.items())),
        "findings": dict(sorted(stats.findings.items())),
        "alerts": len(alerts),
        "alerts_by_kind": dict(sorted(by_kind.items())),
        "paused_agents": sorted({a.agent for a in alerts if a.action == "paused" and a.agent}),
        "first_event_at": stats.first_event_at,
        "last_event_at": stats.last_event_at,
    }


def print_summary(summary: dict[str, Any], out_dir: Path, stream: IO[str]) -> None:
    """The short human summary printed after a replay."""
    stream.write(
        f"replayed {summary['events']} events from {summary['lines']} lines "
        f"({summary['deadletters']} dead-lettered, {summary['duplicates_skipped']} duplicates skipped)\n"
    )
    stream.write(f"alerts: {summary['alerts']}")
    if summary["alerts_by_kind"]:
        stream.write(" (" + ", ".join(f"{k} {v}" for k, v in summary["alerts_by_kind"].items()) + ")")
    stream.write("\n")
    paused = summary["paused_agents"]
    stream.write(f"paused agents: {', '.join(paused) if paused else 'none'}\n")
    stream.write(f"output: {out_dir}\n")
