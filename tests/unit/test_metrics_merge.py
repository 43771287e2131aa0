"""app/metrics_merge.py: one exposition for a worker of two processes, from two real registries."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import GuardMetrics
from app.metrics_merge import merge_expositions


def values(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def two_processes() -> tuple[GuardMetrics, GuardMetrics]:
    parent, child = GuardMetrics(agents=["enrich-bot"]), GuardMetrics(agents=["enrich-bot"])
    parent.up.set(1)
    child.up.set(1)
    parent.event("hubspot", "ok", 7)  # the ingest stage runs in the parent
    parent.observe_batch("actor", 0.02)
    parent.pause("enrich-bot")
    parent.state_compacted.labels("actor").inc(2)
    child.observe_batch("record", 0.5)  # the record stage in the child
    child.state_entries.labels("record_state").set(1200)
    child.state_compacted.labels("record").inc(40)
    return parent, child


def test_series_of_either_process_are_kept_and_shared_ones_added() -> None:
    parent, child = two_processes()
    merged = values(
        merge_expositions(generate_latest(parent.registry).decode(), generate_latest(child.registry).decode())
    )
    assert merged[("crm_guard_events_total", (("outcome", "ok"), ("source", "hubspot")))] == 7
    assert merged[("crm_guard_state_entries", (("store", "record_state"),))] == 1200
    assert merged[("crm_guard_processed_batch_seconds_count", (("stage", "record"),))] == 1
    assert merged[("crm_guard_processed_batch_seconds_count", (("stage", "actor"),))] == 1
    assert merged[("crm_guard_agent_paused", (("agent", "enrich-bot"),))] == 1
    # made at 0 in both processes on start, counted in one: the sum is the count
    assert merged[("crm_guard_state_compacted_total", (("stage", "record"),))] == 40
    assert merged[("crm_guard_state_compacted_total", (("stage", "actor"),))] == 2
    assert merged[("crm_guard_state_compacted_total", (("stage", "link"),))] == 0
    assert merged[("crm_guard_up", ())] == 1  # both up: 1, not 2


def test_created_keeps_the_earlier_time_and_up_needs_both() -> None:
    own = (
        "# HELP crm_guard_up x\n# TYPE crm_guard_up gauge\ncrm_guard_up 1.0\n"
        "# HELP crm_guard_pauses_total x\n# TYPE crm_guard_pauses_total counter\n"
        'crm_guard_pauses_total{agent="a"} 2.0\ncrm_guard_pauses_created{agent="a"} 200.0\n'
    )
    peer = own.replace("crm_guard_up 1.0", "crm_guard_up 0.0").replace("200.0", "100.0")
    merged = values(merge_expositions(own, peer))
    assert merged[("crm_guard_up", ())] == 0
    assert merged[("crm_guard_pauses_total", (("agent", "a"),))] == 4
    assert merged[("crm_guard_pauses_created", (("agent", "a"),))] == 100


def test_a_record_process_that_does_not_answer_makes_the_worker_down() -> None:
    parent, _ = two_processes()
    merged = values(merge_expositions(generate_latest(parent.registry).decode(), None))
    assert merged[("crm_guard_up", ())] == 0
    assert merged[("crm_guard_events_total", (("outcome", "ok"), ("source", "hubspot")))] == 7


def test_one_process_alone_renders_as_it_was() -> None:
    parent, child = two_processes()
    own = generate_latest(parent.registry)
    empty = GuardMetrics(agents=["enrich-bot"])  # made later: its _created times are later
    empty.up.set(1)
    assert merge_expositions(own.decode(), "") == own
    assert values(merge_expositions(own.decode(), generate_latest(empty.registry).decode())) == values(own)
