"""collector_paused: overlapping restores pause the cyclic GC once and resume it after the last."""

from __future__ import annotations

import gc

from app.runtime.gc_pause import collector_paused


def test_overlapping_pauses_resume_after_the_last_one() -> None:
    assert gc.isenabled()
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    second.__enter__()
    assert not gc.isenabled()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second restore still runs
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_restored_objects_are_frozen_and_a_disabled_collector_stays_disabled() -> None:
    before = gc.get_freeze_count()
    with collector_paused():
        kept = [{"k": [i]} for i in range(1000)]
    assert gc.get_freeze_count() >= before + 1000 and gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert len(kept) == 1000


def test_an_error_in_the_block_still_resumes_the_collector() -> None:
    try:
        with collector_paused():
            raise ValueError("broker gone")
    except ValueError:
        pass
    assert gc.isenabled()
