#!/usr/bin/env python3
"""The timeline store (app/timeline/store.py) filling up: µs per appended entry below and past its
record cap, beside validating the same rows alone in the same run.

    python bench/timeline_store.py [--records 200000] [--past 20000]

Every worker with the actor stage follows guard.timeline into a TimelineStore (the pages, revert
plans and review "current values" read it). A CRM with more records changed within the retention
(90 days) than `max_records` (200,000) keeps the store at its cap, so from then on every change to
a record it does not hold evicts the least recently changed one. Rows: one change per record, a new
record per row, event time one second apart (as guard.timeline carries them: plain dicts).

The collector runs as in a worker: the runtime's thresholds (app/runtime/worker.py GC_THRESHOLDS)
and a gc.freeze() every FREEZE_EVERY rows (the worker freezes every 2 s).

Printed: µs per row of
* baseline: `TimelineEntry.model_validate` of each row alone (what every append starts with);
* filling the store up to its cap;
* appending past the cap (each row a new record, each evicting one).
A benchmark that prints figures, not a test: the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime.worker import GC_THRESHOLDS  # noqa: E402
from app.timeline.store import TimelineEntry, TimelineSettings, TimelineStore  # noqa: E402
from bench.common import code_version  # noqa: E402

T0 = 1_767_225_600_000
FREEZE_EVERY = 5_000


def row(i: int) -> dict[str, Any]:
    return {
        "event_id": f"hubspot:62515:{i}:city",
        "record_key": f"hubspot/contact/{i}",
        "source": "hubspot",
        "object_type": "contact",
        "record_id": str(i),
        "occurred_at": T0 + i * 1000,
        "field": "city",
        "old": None,
        "has_old": False,
        "new": "Oslo",
        "actor_id": f"hubspot:user:{i % 300}",
        "actor_kind": "human",
        "operation": "update",
    }


def per_row_us(seconds: float, rows: int) -> float:
    return seconds / rows * 1e6


def append_all(store: TimelineStore, rows: list[dict[str, Any]]) -> float:
    """Seconds to append the rows, freezing the heap every FREEZE_EVERY rows as a worker does."""
    started = time.perf_counter()
    for n, item in enumerate(rows, 1):
        store.append(item)
        if n % FREEZE_EVERY == 0:
            gc.freeze()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records", type=int, default=200_000, help="the store's max_records (default 200000)"
    )
    parser.add_argument("--past", type=int, default=20_000, help="rows appended past the cap (default 20000)")
    args = parser.parse_args()
    fill = [row(i) for i in range(args.records)]
    past = [row(args.records + i) for i in range(args.past)]
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()

    started = time.perf_counter()
    for item in fill:
        TimelineEntry.model_validate(item)
    baseline = per_row_us(time.perf_counter() - started, len(fill))

    store = TimelineStore(TimelineSettings(max_records=args.records))
    filling = per_row_us(append_all(store, fill), len(fill))
    beyond = per_row_us(append_all(store, past), len(past))
    assert store.stats()["records"] == args.records

    print(f"timeline store, max_records {args.records:,}, code {code_version()}")
    print(f"  baseline: validate a row alone     {baseline:10.1f} us/row")
    print(
        f"  append while filling to the cap    {filling:10.1f} us/row   {filling / baseline:8.1f}x baseline"
    )
    print(f"  append past the cap (evicting)     {beyond:10.1f} us/row   {beyond / baseline:8.1f}x baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
