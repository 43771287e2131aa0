"""Settings from the environment: the stages a worker runs."""

from __future__ import annotations

import pytest

from app.config import STAGES, SettingsError, load_settings


def test_a_worker_runs_every_stage_unless_told_otherwise() -> None:
    assert load_settings(env={}).stages == list(STAGES)
    assert load_settings(env={"CRM_GUARD_STAGES": " ingest, record "}).stages == ["ingest", "record"]


@pytest.mark.parametrize(("value", "message"), [
    ("ingest,ingest", "a stage is named twice"),
    ("ingest,filter", "stages.1: Input should be 'ingest', 'record', 'link' or 'actor'"),
    (",", "at least 1 item"),
])
def test_bad_stage_lists_name_the_problem(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env={"CRM_GUARD_STAGES": value})


def test_a_worker_without_the_actor_stage_runs_no_page_or_review_services() -> None:
    from app.runtime.assembly import build_runtime
    from detectors.policy import Policy

    full = load_settings(env={"CRM_GUARD_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    runtime, shared = build_runtime(full, Policy(), idempotent=False)
    assert shared["review"] is not None and shared["timeline"] is not None
    assert {type(s).__name__ for s in runtime.extra_services} >= {"TimelineService", "DeliveryRunner"}
    record_only = full.with_overrides(stages=["record"])
    runtime, shared = build_runtime(record_only, Policy(), idempotent=False)
    assert shared["review"] is None and shared["timeline"] is None and runtime.extra_services == []
