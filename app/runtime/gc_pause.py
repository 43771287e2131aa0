"""The cyclic garbage collector paused while partition state is rebuilt.

A restore decodes millions of JSON values into dicts, lists and strings that all stay alive: the
collector finds nothing to free in them, yet every full collection walks the growing heap again.
Measured on 1,000,000 records (bench/recovery.py, docs/latency-recovery.md): the record stage's
restore took 10.9 s with the collector running (the worker's GC thresholds) and about half of it
was the collector. Changelog values are plain JSON, so they make no reference cycles; the other
stages keep running meanwhile and their rare cycles (an exception's traceback) wait until the
restore ends. Afterwards the restored heap is frozen (gc.freeze): never scanned again.

Restores of several stages overlap, so the pause is counted: the collector resumes when the last
one ends, and only if it was enabled before the first began.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_active = 0
_was_enabled = True


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic GC for the block (nested and overlapping blocks allowed), then freeze."""
    global _active, _was_enabled
    if _active == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if _active == 0:
            gc.freeze()
            if _was_enabled:
                gc.enable()
