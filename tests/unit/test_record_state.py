"""Record state: priors, redelivery, out-of-order events, eviction and its memory per record."""

from __future__ import annotations

import tracemalloc

from detectors.events import ActorKind
from detectors.record_state import RecordState
from detectors.settings import RecordStateSettings
from tests.unit.helpers_events import D, event


def test_priors_say_who_set_the_value_before() -> None:
    rs, state = RecordState(), {}
    rs.apply(event(1, {"utm_source": "google"}, at=0, by="ann", kind=ActorKind.HUMAN), state)
    obs = rs.apply(event(1, {"utm_source": "enriched"}, at=10, by="bot"), state)
    assert obs is not None
    prior = obs.priors["utm_source"]
    assert prior is not None and (prior.value, prior.actor_kind, prior.actor_id) == ("google", ActorKind.HUMAN, "ann")
    assert RecordState.value_of(state, obs.event.record_key, "utm_source") == "enriched"


def test_a_deletion_without_values_gets_every_known_value_as_a_prior() -> None:
    rs, state = RecordState(), {}
    rs.apply(event(1, {"email": "a@example.com", "phone": "+4722"}, at=0, by="ann", kind=ActorKind.HUMAN), state)
    obs = rs.apply(event(1, {}, at=10, by="ann", kind=ActorKind.HUMAN, operation="delete"), state)
    assert obs is not None
    assert {f: p.value for f, p in obs.priors.items()} == {"email": "a@example.com", "phone": "+4722"}
    # a deletion that names values (Pipedrive) keeps the usual priors: only the fields it names
    obs = rs.apply(event(2, {"email": "b@example.com"}, at=0), state)
    obs = rs.apply(event(2, {"email": "b@example.com"}, at=10, operation="delete"), state)
    assert obs is not None and list(obs.priors) == ["email"]


def test_redelivered_event_is_a_no_op() -> None:
    rs, state = RecordState(), {}
    ev = event(1, {"a": "1"})
    assert rs.apply(ev, state) is not None
    assert rs.apply(ev, state) is None


def test_old_value_from_source_is_used_when_guard_never_saw_the_field() -> None:
    rs, state = RecordState(), {}
    obs = rs.apply(event(1, {"stage_id": 3}, old={"stage_id": 2}, source="pipedrive"), state)
    assert obs is not None and obs.priors["stage_id"].value == 2


def test_out_of_order_event_does_not_replace_a_later_value() -> None:
    rs, state = RecordState(), {}
    rs.apply(event(1, {"a": "new"}, at=100), state)
    obs = rs.apply(event(1, {"a": "old"}, at=50), state)
    assert obs is not None and obs.priors["a"] is None
    assert RecordState.value_of(state, "hubspot/contact/1", "a") == "new"


def test_eviction_keeps_the_most_recently_changed_records() -> None:
    rs, state = RecordState(RecordStateSettings(max_records=100)), {}
    for i in range(250):
        rs.apply(event(i, {"a": "x"}, at=i), state)
    rs.apply(event(5, {"a": "y"}, at=1000), state)  # unknown again, re-inserted as newest
    assert len(state) == 100 and "hubspot/contact/249" in state and "hubspot/contact/5" in state


def test_compact_drops_records_past_retention() -> None:
    rs, state = RecordState(RecordStateSettings(retention="30d")), {}
    rs.apply(event(1, {"a": "x"}, at=0), state)
    rs.apply(event(2, {"a": "x"}, at=40 * D), state)
    assert rs.compact(state, now_ms=event(0, at=40 * D).occurred_at) == 1
    assert list(state) == ["hubspot/contact/2"]


def test_memory_per_record_and_field_is_bounded() -> None:
    """Documented in record_state.py: ~300 B per record plus ~200 B per tracked field."""
    rs, state = RecordState(), {}
    events = [event(i, {"jobtitle": "Engineer", "utm_source": "google", "lifecyclestage": "lead"}, at=i) for i in range(2000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for ev in events:
        rs.apply(ev, state)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_record = used / 2000
    assert per_record < 300 + 3 * 250, per_record
    long_value = event(99_999, {"notes": "x" * 10_000})
    rs.apply(long_value, state)
    assert len(state["hubspot/contact/99999"]["f"]["notes"][0]) == 256


def test_an_entry_read_back_from_json_is_equal_and_shares_its_strings_again() -> None:
    """A restore decodes each entry from JSON, which copies every string: `loaded` re-shares the
    actor ids, kinds and event ids, and a restored record costs well under a fresh decode."""
    import orjson

    rs, state = RecordState(), {}
    for i in range(2000):
        rs.apply(event(i, {"jobtitle": "Engineer", "utm_source": "google", "city": "Oslo"}, at=i, by="enrich-bot"), state)
    blobs = [orjson.dumps(entry) for entry in state.values()]

    def restore(load: bool) -> tuple[list[dict], float]:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        entries = [RecordState.loaded(orjson.loads(b)) if load else orjson.loads(b) for b in blobs]
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return entries, used / len(blobs)

    plain, plain_bytes = restore(False)
    shared, shared_bytes = restore(True)
    assert shared == plain == list(state.values())
    fields = shared[0]["f"]
    assert fields["city"][1] is fields["jobtitle"][1] is shared[1]["f"]["city"][1]  # one actor id string
    assert fields["city"][4] is fields["utm_source"][4] is shared[0]["e"][0]  # one event id per event
    assert shared_bytes < 0.8 * plain_bytes, (shared_bytes, plain_bytes)


def test_loading_an_entry_of_another_layout_keeps_it_as_decoded() -> None:
    for odd in ({"t": 1}, {"f": {"city": ["Oslo"]}, "e": []}, {"f": {"city": [1, 2, 3, 4, 5]}, "e": []}):
        assert RecordState.loaded(dict(odd)) == odd
