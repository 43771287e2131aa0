"""The runtime's event encoder writes exactly what pydantic writes, so crm.changes and the
internal topics read back (through pydantic's validation) as the events that were sent, and a
message that is not an event is refused (the stage dead-letters it)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.adapters import decode_line, normalize_with_errors
from app.runtime import codec
from detectors.base import Finding, Observation, Prior, Severity
from detectors.events import ActorKind, ChangeEvent, ObjectType, RelatedRecord

DEMO = Path(__file__).resolve().parents[2] / "app" / "demo"


def demo_events(vendor: str) -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    for raw in (DEMO / f"{vendor}.jsonl").read_bytes().splitlines():
        events, _ = normalize_with_errors(decode_line(raw), "auto")
        out.extend(events)
    return out


@pytest.mark.parametrize("vendor", ["hubspot", "salesforce", "pipedrive"])
def test_the_wire_form_is_pydantics_and_reads_back_as_the_event(vendor: str) -> None:
    events = demo_events(vendor)
    assert events
    for event in events:
        raw = codec.encode_event(event)
        assert raw == orjson.dumps(event.model_dump(mode="json"))  # same keys, order, values
        assert ChangeEvent.model_validate_json(raw) == event


def test_observation_round_trip() -> None:
    event = next(e for e in demo_events("hubspot") if e.changes)
    obs = Observation(
        event=event,
        priors={event.changes[0].field: Prior("google", "7", ActorKind.HUMAN, 5, "e1")},
        related=(RelatedRecord(object_type=ObjectType.COMPANY, record_id="9"),),
        record_known=True,
    )
    finding = Finding(detector="override", severity=Severity.INFO, actor_key="agent:a", actor_kind=ActorKind.AGENT,
                      agent="a", event_id=event.event_id, occurred_at=event.occurred_at, record_key=event.record_key,
                      object_type="contact", summary="s", group="g", details={"n": 1})
    message = orjson.dumps([codec.actor_input(obs=obs), codec.actor_input(finding=finding)])
    assert codec.decode_actor_inputs(message) == [obs, finding]
    probes = orjson.dumps([codec.link_probe("duplicate_spike", obs)])
    assert codec.decode_link_probes(probes) == [("duplicate_spike", obs)]


def actor_message(mutate: Any) -> bytes:
    event = next(e for e in demo_events("hubspot") if e.changes)
    obs = Observation(event=event)
    data = copy.deepcopy(codec.actor_input(obs=obs))
    mutate(data["o"]["e"])
    return orjson.dumps([data])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("record_id"),
        lambda d: d.update(object_type="spaceship"),
        lambda d: d.update(operation="explode"),
        lambda d: d["actor"].update(kind="robot"),
        lambda d: d["changes"][0].update(field=None),
    ],
)
def test_an_actor_message_that_is_not_an_event_is_refused(mutate: Any) -> None:
    with pytest.raises(ValidationError):
        codec.decode_actor_inputs(actor_message(mutate))


def test_a_foreign_actor_message_is_refused_not_half_read() -> None:
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
        codec.decode_actor_inputs(b'[{"t": "obs", "o": {"e": [], "p": {}, "r": [], "k": true}}]')
    with pytest.raises(ValueError):
        codec.decode_actor_inputs(b'{"t": "obs"}')
