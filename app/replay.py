"""`crm-guard replay`: the backtest. Recorded payloads in, the guard's conclusions out.

Reads JSON Lines files (one delivered payload per line), normalizes them, merges the files in
event-time order and runs every detector through `detectors.pipeline.Guard`. Output (in --out):
alerts.jsonl (the final version of every alert), pauses.jsonl, overrides.jsonl, deadletter.jsonl,
timeline.jsonl (one line per field change, the input of revert plans), identities.jsonl (what each
source identity did: app/census.py, the input of `policy suggest`) and summary.json.

Ordering: each file is streamed through a reorder buffer that holds `max_disorder_ms` of event
time (default 1 h), and the files are merged by (event time, file, line, position). Events later
than that are processed where they arrive and counted as `late`; the detectors tolerate them.
Memory is bounded by the disorder window, not the file size. Output is deterministic: the same
input gives byte-identical files (no wall-clock anywhere).

Speed (bench/replay_speed.py, docs/sections/replay_speed.md): the collector's automatic passes are
off during the run (see run_replay), and `workers=2` splits the guard over two processes (see
`_run_pipelined`) with the same files as a result.
"""

from __future__ import annotations

import bisect
import gc
import gzip
import heapq
import multiprocessing
import pickle
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from app.adapters import HISTORY_SOURCES, AdapterError, decode_line, detect_source, normalize_with_errors
from app.census import IdentityCensus
from detectors.alerts import Alert
from detectors.base import Finding, Observation, Prior
from detectors.events import (
    ALL_EVENT_FIELDS,
    Actor,
    ChangeEvent,
    FieldChange,
    RelatedRecord,
    trusted_model,
)
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
    census: IdentityCensus = field(default_factory=IdentityCensus)


_Item = tuple[int, int, int, int, ChangeEvent]
"""(event time, file index, line, position in the line, event): ordered by its first four parts, which
are unique, so comparing two items never reaches the event (plain tuples compare in C; a dataclass
with order=True cost a Python call per comparison)."""

_DUMP_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
_GC_EVERY = 50_000


TIMELINE_BUFFER_BYTES = 1 << 20


class _Outputs:
    """The output files, written as the replay goes (alerts at the end: their final versions)."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.dir = out_dir
        self.pauses = open(out_dir / "pauses.jsonl", "wb")  # noqa: SIM115
        self.overrides = open(out_dir / "overrides.jsonl", "wb")  # noqa: SIM115
        self.deadletter = open(out_dir / "deadletter.jsonl", "wb")  # noqa: SIM115
        # ~850 bytes of rows per event: with a 1 MiB buffer instead of the default 8 KiB, writing
        # 850 MB in rows of 300 bytes took 0.67 s instead of 1.3 s (timed alone).
        self.timeline = open(out_dir / "timeline.jsonl", "wb", buffering=TIMELINE_BUFFER_BYTES)  # noqa: SIM115

    def close(self) -> None:
        for handle in (self.pauses, self.overrides, self.deadletter, self.timeline):
            handle.close()


def _dump(handle: IO[bytes], data: Any) -> None:
    handle.write(orjson.dumps(data, option=_DUMP_OPTIONS))


def _file_items(
    path: Path, file_index: int, source: str, max_bytes: int, outputs: _Outputs, stats: ReplayStats,
    progress: "_Progress | None",
) -> Iterator[_Item]:
    """A file's events in file order; a CRM history export (grouped by record, not by time, see
    app/adapters/salesforce_history.py) is read whole and given in event-time order instead."""
    history = [source in HISTORY_SOURCES]
    items = _line_items(path, file_index, source, max_bytes, outputs, stats, progress, history)
    first = next(items, None)
    if first is None:
        return
    if history[0]:
        yield from sorted([first, *items])
        return
    yield first
    yield from items


BOM = b"\xef\xbb\xbf"
WHOLE_DOCUMENT_MAX_BYTES = 256 * 1024 * 1024
"""Largest file read as one JSON document; beyond, a file that is not JSON Lines is read line by line."""


GZIP_MAGIC = b"\x1f\x8b"


def open_input(path: Path) -> IO[bytes]:
    """A replay input for reading, decompressed when it is gzip (recorded traffic often is)."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115 - the caller closes it


def whole_document(path: Path) -> list[Any] | None:
    """The payloads of a file that is one JSON document rather than JSON Lines, else None.

    Saved deliveries often are: a pretty-printed HubSpot batch, a Salesforce event copied from a
    log, an array of Pipedrive webhooks. Such a file's first line is not JSON on its own (`[` or
    `{`) while the whole file is; its payloads are the top-level array's elements (the document
    itself when it is an object). In dead letters, `line` is then the element's position."""
    first = b""
    with open_input(path) as handle:
        for raw in handle:
            first = raw.strip().removeprefix(BOM)
            if first:
                break
    if not first.startswith((b"[", b"{")) or path.stat().st_size > WHOLE_DOCUMENT_MAX_BYTES:
        return None
    try:
        orjson.loads(first)
        return None  # the first line is a payload of its own: JSON Lines
    except orjson.JSONDecodeError:
        pass
    with open_input(path) as handle:
        whole = handle.read(WHOLE_DOCUMENT_MAX_BYTES + 1)
    if len(whole) > WHOLE_DOCUMENT_MAX_BYTES:
        return None
    try:
        document = orjson.loads(whole.removeprefix(BOM))
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, list) else [document]


def _line_items(
    path: Path, file_index: int, source: str, max_bytes: int, outputs: _Outputs, stats: ReplayStats,
    progress: "_Progress | None", history: list[bool],
) -> Iterator[_Item]:
    """(event time, file, line, position, event) per event of each line; sets history[0] when a
    line is a CRM history export."""
    document = whole_document(path)
    with open_input(path) as handle:
        lines: Iterator[tuple[int, Any]] = (
            ((n, raw.removeprefix(BOM) if n == 1 else raw) for n, raw in enumerate(handle, start=1))
            if document is None else enumerate(document, start=1))
        by_line = document is None and not isinstance(handle, gzip.GzipFile)
        if not by_line and progress is not None:
            progress.advance(path.stat().st_size)
        for line_no, raw in lines:
            if document is None:
                if by_line and progress is not None:
                    progress.advance(len(raw))
                if not raw.strip():
                    continue
            stats.lines += 1
            try:
                payload = decode_line(raw, max_bytes=max_bytes) if document is None else raw
                name = detect_source(payload) if source == "auto" else source
                if name in HISTORY_SOURCES:
                    history[0] = True
                events, errors = normalize_with_errors(payload, name)
            except AdapterError as exc:
                events, errors = [], [exc]
            for err in errors:
                stats.deadletters += 1
                _dump(outputs.deadletter, {
                    "file": str(path), "line": line_no, "reason": err.reason, "message": str(err),
                })
            if len(events) == 1:
                event = events[0]
                yield (event.occurred_at, file_index, line_no, 0, event)
            else:
                for position, event in enumerate(events):
                    yield (event.occurred_at, file_index, line_no, position, event)


def _reordered(items: Iterator[_Item], max_disorder_ms: int, stats: ReplayStats) -> Iterator[_Item]:
    """Event-time order within a disorder window; stragglers pass through as they come.

    The buffer is a list kept sorted, read from a moving head: files come nearly in order (0.6 %
    of HubSpot's items on the large scenario, none of the others'), so an item is appended in one
    comparison and taken from the front in none, where a heap paid ~log2(buffer) tuple comparisons
    per pop (5 us per event). Out-of-order items are inserted by bisection. Items are unique, so
    the order out is the heap's: always the smallest buffered item first.
    """
    buf: list[_Item] = []
    head = 0
    emitted_up_to: int | None = None
    newest = None
    for item in items:
        at = item[0]
        if emitted_up_to is not None and at < emitted_up_to:
            stats.late += 1
            yield item
            continue
        if head == len(buf) or item > buf[-1]:
            buf.append(item)
        else:
            bisect.insort(buf, item, head)
        if newest is None or at > newest:
            newest = at
        horizon = newest - max_disorder_ms
        while head < len(buf) and buf[head][0] <= horizon:
            first = buf[head]
            buf[head] = None  # type: ignore[call-overload]  # let the event go once it is out
            head += 1
            emitted_up_to = first[0]
            yield first
        if head > 4096 and head * 2 > len(buf):
            del buf[:head]
            head = 0
    while head < len(buf):
        yield buf[head]
        head += 1


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
    return _timeline_rows(obs.event, obs.priors)


def _timeline_rows(event: ChangeEvent, priors: dict[str, Any]) -> list[dict[str, Any]]:
    actor = event.actor
    event_id = event.event_id
    record_key = event.record_key
    source = event.source
    object_type = event.object_type._value_
    record_id = event.record_id
    occurred_at = event.occurred_at
    actor_id = actor.id
    actor_kind = actor.kind._value_
    operation = event.operation
    if not event.changes:
        return [{
            "event_id": event_id, "record_key": record_key, "source": source, "object_type": object_type,
            "record_id": record_id, "occurred_at": occurred_at, "actor_id": actor_id,
            "actor_kind": actor_kind, "operation": operation,
            "field": None, "old": None, "has_old": False, "new": None,
        }]
    rows = []
    for change in event.changes:
        name = change.field
        if change.has_old:
            old, has_old = change.old, True
        else:
            prior = priors.get(name)
            if prior is not None:
                old, has_old = prior.value, True
            else:
                old, has_old = None, False
        # The key order is the row's (app/runtime writes these dicts without sorting their keys).
        rows.append({
            "event_id": event_id, "record_key": record_key, "source": source, "object_type": object_type,
            "record_id": record_id, "occurred_at": occurred_at, "actor_id": actor_id,
            "actor_kind": actor_kind, "operation": operation,
            "field": name, "old": old, "has_old": has_old, "new": change.new,
        })
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
    max_bytes: int = 16_000_000,
    max_disorder_ms: int = 3_600_000,
    show_progress: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Replay the files; returns the summary (also written to summary.json).

    `workers=2` runs the link and actor stages in a second process (forked), fed in order with
    the observations this one makes (read, normalize, order, attribute, record stage, timeline):
    the same objects in the same order, so the same files, byte for byte (see `_run_pipelined`).

    Garbage collection: the replay keeps a growing state of millions of small containers (record
    state, windows, indexes) and makes no cyclic garbage from valid input (gc.collect() after a
    replay with the collector off finds nothing), but the collector's automatic passes re-scanned
    that state over and over: half of the CPU time on 1,000,000 events. So automatic collection is
    off while the events run, and every 50,000 events what was allocated since is either frozen
    (gc.freeze: never scanned again; a constant-time move) or, when dead letters came in since
    (an exception's traceback and frame form a cycle), collected (gc.collect(1)). Afterwards the
    frozen objects are handed back to the collector (gc.unfreeze) and automatic collection is
    restored as it was.
    """
    if workers not in (1, 2):
        raise ValueError(f"workers must be 1 or 2, not {workers}")
    stats = ReplayStats()
    guard = Guard(policy)
    outputs = _Outputs(out_dir)
    progress = _Progress(sum(p.stat().st_size for p in paths)) if show_progress else None
    latest: dict[str, Alert] = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        streams = [
            _reordered(_file_items(p, i, source, max_bytes, outputs, stats, progress), max_disorder_ms, stats)
            for i, p in enumerate(paths)
        ]
        items = streams[0] if len(streams) == 1 else heapq.merge(*streams)
        if workers == 2:
            _run_pipelined(guard, items, outputs, stats, latest, collect=gc_was_enabled)
        else:
            _run_events(guard, items, outputs, stats, latest, collect=gc_was_enabled)
            if stats.last_event_at is not None:
                _record_outcome(guard.finish(stats.last_event_at), outputs, stats, latest)
    finally:
        if gc_was_enabled:
            gc.unfreeze()
            gc.enable()
        outputs.close()
        if progress is not None:
            progress.close()
    alerts = sorted(latest.values(), key=lambda a: (a.first_event_at, a.dedup_key))
    with open(out_dir / "alerts.jsonl", "wb") as handle:
        for alert in alerts:
            _dump(handle, alert.model_dump(mode="json"))
    with open(out_dir / "identities.jsonl", "wb") as handle:
        for row in stats.census.rows():
            _dump(handle, row)
    summary = _summary(stats, alerts, guard)
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    return summary


def _run_events(
    guard: Guard, items: Iterator[_Item], outputs: _Outputs, stats: ReplayStats, latest: dict[str, Alert],
    collect: bool,
) -> None:
    """The hot loop: every event through the guard, its timeline rows and outcome written."""
    process = guard.process
    tally = _Tally(stats, outputs, collect)
    observed = tally.observed
    try:
        for item in items:
            out = process(item[4])
            if out.duplicate:
                tally.duplicates += 1
                continue
            assert out.observation is not None
            observed(out.observation)
            if out.findings or out.alerts or out.pauses:
                _record_outcome(out, outputs, stats, latest)
    finally:
        tally.close()


class _Tally:
    """The per-event bookkeeping both event loops share: counts by source and actor kind, the
    event-time span, the timeline rows, and the periodic collector pass (see _gc_pass)."""

    __slots__ = ("stats", "write_timeline", "collect", "by_source", "by_kind", "events", "duplicates",
                 "first_at", "last_at", "since_gc", "deadletters_seen", "census")

    def __init__(self, stats: ReplayStats, outputs: _Outputs, collect: bool) -> None:
        self.stats = stats
        self.write_timeline = outputs.timeline.write
        self.collect = collect
        self.by_source = stats.by_source
        self.by_kind = stats.by_actor_kind
        self.events = self.duplicates = self.since_gc = 0
        self.first_at, self.last_at = stats.first_event_at, stats.last_event_at
        self.deadletters_seen = stats.deadletters
        self.census = stats.census.observe

    def observed(self, obs: Observation) -> None:
        """One new (not redelivered) event: count it, write its timeline rows, maybe a GC pass."""
        self.events += 1
        attributed = obs.event
        self.by_source[attributed.source] += 1
        self.by_kind[attributed.actor.kind._value_] += 1
        at = attributed.occurred_at
        if self.first_at is None or at < self.first_at:
            self.first_at = at
        if self.last_at is None or at > self.last_at:
            self.last_at = at
        self.census(obs)
        write, dumps, options = self.write_timeline, orjson.dumps, _DUMP_OPTIONS
        for row in _timeline_rows(attributed, obs.priors):
            write(dumps(row, option=options))
        if self.collect:
            self.since_gc += 1
            if self.since_gc >= _GC_EVERY:
                self.since_gc = 0
                self.deadletters_seen = _gc_pass(self.stats.deadletters, self.deadletters_seen)

    def close(self) -> None:
        """Add this loop's figures to the stats."""
        stats = self.stats
        stats.events += self.events
        stats.duplicates += self.duplicates
        stats.first_event_at, stats.last_event_at = self.first_at, self.last_at


def _gc_pass(deadletters: int, deadletters_seen: int) -> int:
    """Every _GC_EVERY events (see run_replay): freeze what survived, or collect it when dead
    letters (and so exception cycles) came in since the last pass. Returns the dead letters seen."""
    if deadletters != deadletters_seen:
        gc.collect(1)
    else:
        gc.freeze()
    return deadletters


# ---- two processes: observations made here, the rest of the guard in a forked worker -------------
#
# Guard.process is Guard.observe (attribution, record state) then Guard.process_downstream (record
# detectors, link and actor stages), and the halves share no state. With workers=2 this process
# reads, decodes, normalizes, orders, observes and writes deadletter.jsonl and timeline.jsonl; a
# forked worker gets each observation, in order, runs the downstream half on its own copy of the
# Guard and writes overrides.jsonl and pauses.jsonl; its alerts and finding counts come back at the
# end for alerts.jsonl and summary.json. Same objects, same order, same files. (The cut is where
# the CPU time splits about evenly on the large scenario: ~38 us per event on each side.)
#
# The hand-over: per observation, the event's field dict with its changes, actor and related
# records as plain values, the priors as tuples, in pickled batches of _BATCH over a pipe (pickling
# the pydantic models themselves costs ~10 us to write and ~25 us to read an observation; this
# way ~6 us on each side, measured on the large scenario). Every value in it was built or
# validated by this process, so the worker rebuilds the models without validating again
# (detectors/events.py trusted_model): field values, field order, fields set, enum members, all
# as they were. Actors travel once (a table; the adapters and the attributor share one Actor
# object per identity); anything off that path (a subclass, extra or private values, over
# _ACTOR_TABLE_MAX distinct actor objects) travels pickled as it is: slower, still exact.
# workers=2 forks: call it from a program without threads (the CLI, the benchmarks).

_BATCH = 1024
_ACTOR_TABLE_MAX = 65_536
_CHANGE_NEW = frozenset({"field", "new"})
_CHANGE_ALL = frozenset({"field", "new", "old", "has_old"})
_RELATED_TWO = frozenset({"object_type", "record_id"})
_RELATED_ALL = frozenset({"object_type", "record_id", "removed"})


class _Encoder:
    """Observations to plain values, with the actor table (kept alive here so object ids stay unique)."""

    __slots__ = ("ids", "keep", "fresh")

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.keep: list[Actor] = []
        self.fresh: list[Actor] = []

    def encode(self, obs: Observation) -> tuple[Any, ...]:
        """(event fields, fields-set code, priors, related, record_known), or ("raw", obs) off the usual path.

        The event's own field dict travels (pickle keeps its key order and its enum members), with
        `changes`, `actor` and `related` swapped for plain values."""
        event = obs.event
        actor = event.actor
        ref = self.ids.get(id(actor))
        if ref is None:
            if len(self.keep) >= _ACTOR_TABLE_MAX:
                return ("raw", obs)
            ref = len(self.keep)
            self.ids[id(actor)] = ref
            self.keep.append(actor)
            self.fresh.append(actor)
        if (
            event.__class__ is not ChangeEvent
            or event.__pydantic_extra__ is not None
            or event.__pydantic_private__ is not None
            or obs.__class__ is not Observation
        ):
            return ("raw", obs)
        data = dict(event.__dict__)
        changes = data["changes"]
        if changes:
            data["changes"] = [_encode_change(change) for change in changes]
        data["actor"] = ref
        related = data["related"]
        if related:
            data["related"] = [_encode_related(rel) for rel in related]
        fields_set = event.__pydantic_fields_set__
        priors = [
            (name, None) if prior is None
            else (name, prior.value, prior.actor_id, prior.actor_kind, prior.at, prior.event_id)
            for name, prior in obs.priors.items()
        ]
        return (
            data,
            None if fields_set == ALL_EVENT_FIELDS else frozenset(fields_set),
            priors,
            [_encode_related(rel) for rel in obs.related] if obs.related else None,
            obs.record_known,
        )


def _encode_change(change: FieldChange) -> Any:
    """(its field dict, fields-set code): 0 for {field, new}, 1 for all four, else the set; off the
    usual path, the object itself."""
    if change.__class__ is not FieldChange or change.__pydantic_extra__ is not None:
        return change
    fields_set = change.__pydantic_fields_set__
    code: Any = (
        0 if fields_set == _CHANGE_NEW else 1 if fields_set == _CHANGE_ALL else frozenset(fields_set)
    )
    return (change.__dict__, code)


def _encode_related(rel: RelatedRecord) -> Any:
    if rel.__class__ is not RelatedRecord or rel.__pydantic_extra__ is not None:
        return rel
    fields_set = rel.__pydantic_fields_set__
    code: Any = (
        0 if fields_set == _RELATED_TWO else 1 if fields_set == _RELATED_ALL else frozenset(fields_set)
    )
    return (rel.__dict__, code)


def _decode_change(item: Any) -> FieldChange:
    if item.__class__ is not tuple:
        return item  # type: ignore[no-any-return]
    data, code = item
    if code.__class__ is int:
        return trusted_model(FieldChange, data, _CHANGE_NEW if code == 0 else _CHANGE_ALL)
    return trusted_model(FieldChange, data, code)


def _decode_related(item: Any) -> RelatedRecord:
    if item.__class__ is not tuple:
        return item  # type: ignore[no-any-return]
    data, code = item
    if code.__class__ is int:
        return trusted_model(RelatedRecord, data, _RELATED_TWO if code == 0 else _RELATED_ALL)
    return trusted_model(RelatedRecord, data, code)


def _decode(item: tuple[Any, ...], actors: list[Actor]) -> Observation:
    """The observation `_Encoder.encode` was given (each dict came out of pickle: it is this one's own)."""
    if len(item) == 2:
        return item[1]  # type: ignore[no-any-return]
    data, fields_set, priors, obs_related, known = item
    changes = data["changes"]
    if changes:
        data["changes"] = tuple([_decode_change(change) for change in changes])
    data["actor"] = actors[data["actor"]]
    related = data["related"]
    if related:
        data["related"] = tuple([_decode_related(rel) for rel in related])
    event = trusted_model(ChangeEvent, data, ALL_EVENT_FIELDS if fields_set is None else fields_set)
    decoded_priors: dict[str, Prior | None] = {}
    for prior in priors:
        if len(prior) == 2:
            decoded_priors[prior[0]] = None
        else:
            decoded_priors[prior[0]] = Prior(prior[1], prior[2], prior[3], prior[4], prior[5])
    return Observation(
        event=event,
        priors=decoded_priors,
        related=tuple([_decode_related(rel) for rel in obs_related]) if obs_related else (),
        record_known=known,
    )


def _run_pipelined(
    guard: Guard, items: Iterator[_Item], outputs: _Outputs, stats: ReplayStats, latest: dict[str, Alert],
    collect: bool,
) -> None:
    """Observations made here, the rest of the guard in a forked worker (see the comment above)."""
    for handle in (outputs.pauses, outputs.overrides, outputs.timeline, outputs.deadletter):
        handle.flush()  # nothing buffered may be inherited twice
    context = multiprocessing.get_context("fork")
    here, there = context.Pipe()
    worker = context.Process(
        target=_downstream_worker, args=(guard, there, outputs, collect), name="crm-guard-replay-downstream",
        daemon=True,
    )
    worker.start()
    there.close()
    for handle in (outputs.pauses, outputs.overrides):
        handle.close()  # the worker writes these (it has its own copies, and nothing was buffered)
    send = here.send_bytes
    dumps = pickle.dumps
    encoder = _Encoder()
    encode = encoder.encode
    observe = guard.observe
    tally = _Tally(stats, outputs, collect)
    observed = tally.observed
    batch: list[tuple[Any, ...]] = []
    finished = False
    try:
        for item in items:
            obs = observe(item[4])
            if obs is None:
                tally.duplicates += 1
                continue
            batch.append(encode(obs))  # before the tally's GC pass: what is encoded is referenced
            observed(obs)
            if len(batch) >= _BATCH:
                send(dumps(("batch", encoder.fresh, batch), protocol=pickle.HIGHEST_PROTOCOL))
                encoder.fresh = []
                batch = []
        if batch:
            send(dumps(("batch", encoder.fresh, batch), protocol=pickle.HIGHEST_PROTOCOL))
        send(dumps(("end", tally.last_at), protocol=pickle.HIGHEST_PROTOCOL))
        reply = pickle.loads(here.recv_bytes())  # noqa: S301 - our own forked worker's bytes
        if reply[0] != "ok":
            raise RuntimeError(f"replay worker failed:\n{reply[1]}")
        findings, downstream_latest = reply[1], reply[2]
        stats.findings.update(findings)
        latest.update(downstream_latest)
        worker.join()
        finished = True
    except (BrokenPipeError, EOFError, ConnectionResetError):
        message = _worker_error(here)
        raise RuntimeError(f"replay worker failed (exit {worker.exitcode}):\n{message}") from None
    finally:
        tally.close()
        here.close()
        if not finished and worker.is_alive():
            worker.terminate()
        worker.join()


def _worker_error(conn: Any) -> str:
    """The worker's last words (its traceback), when it sent them before the pipe broke."""
    try:
        if conn.poll(5):
            reply = pickle.loads(conn.recv_bytes())  # noqa: S301 - our own forked worker's bytes
            if reply[0] == "error":
                return str(reply[1])
    except (EOFError, OSError):
        pass
    return "no message"


def _downstream_worker(guard: Guard, conn: Any, outputs: _Outputs, collect: bool) -> None:
    """The forked worker: the downstream half over the observations, in order; alerts back at the end."""
    try:
        stats = ReplayStats()
        latest: dict[str, Alert] = {}
        actors: list[Actor] = []
        process = guard.process_downstream
        recv = conn.recv_bytes
        loads = pickle.loads
        since_gc = 0
        while True:
            message = loads(recv())  # noqa: S301 - our own forked reader's bytes, never input
            if message[0] == "end":
                if message[1] is not None:
                    _record_outcome(guard.finish(message[1]), outputs, stats, latest)
                break
            actors.extend(message[1])
            for item in message[2]:
                out = process(_decode(item, actors))
                if out.findings or out.alerts or out.pauses:
                    _record_outcome(out, outputs, stats, latest)
            if collect:
                since_gc += len(message[2])
                if since_gc >= _GC_EVERY:
                    since_gc = 0
                    gc.freeze()
        for handle in (outputs.pauses, outputs.overrides):
            handle.close()
        conn.send_bytes(pickle.dumps(("ok", stats.findings, latest), protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException:
        try:
            conn.send_bytes(pickle.dumps(("error", traceback.format_exc())))
        except OSError:
            pass  # the reader is gone: it failed first and ends this worker
        raise SystemExit(1) from None  # the traceback travels to the reader, which raises it


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
        "identities_by_kind": dict(sorted(Counter(row["kind"] for row in stats.census.rows()).items())),
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
    unknown = summary.get("identities_by_kind", {}).get("unknown", 0)
    if unknown:
        stream.write(f"unattributed source identities: {unknown} (`crm-guard policy suggest --replay-dir "
                     f"{out_dir}` writes them as candidate agents)\n")
    stream.write(f"output: {out_dir}\n")
