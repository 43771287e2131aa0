"""The internal topics' hand-written event codec writes what pydantic writes, reads back what
pydantic validates, and refuses what is not an event (so the stage dead-letters it)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.adapters import decode_line, normalize_with_errors
from app.runtime import codec
from detectors.base import Observation, Prior
from detectors.events import ActorKind, ChangeEvent, ObjectType, RelatedRecord

DEMO = Path(__file__).resolve().parents[2] / "app" / "demo"


def demo_events(vendor: str) -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    for raw in (DEMO / f"{vendor}.jsonl").read_bytes().splitlines():
        events, _ = normalize_with_errors(decode_line(raw), "auto")
        out.extend(events)
    return out


@pytest.mark.parametrize("vendor", ["hubspot", "salesforce", "pipedrive"])
def test_wire_form_is_pydantics_and_reads_back_as_validation_would(vendor: str) -> None:
    events = demo_events(vendor)
    assert events
    for event in events:
        wire = codec.event_to_wire(event)
        dumped = event.model_dump(mode="json")
        assert orjson.dumps(wire) == orjson.dumps(dumped)  # same keys, order, values
        back = codec.event_from_wire(orjson.loads(orjson.dumps(wire)))
        slow = ChangeEvent.model_validate(dumped)
        assert back == slow
        assert list(back.__dict__) == list(slow.__dict__)
        assert back.model_fields_set == slow.model_fields_set
        assert back.actor.identity == slow.actor.identity


def test_observation_round_trip() -> None:
    event = next(e for e in demo_events("hubspot") if e.changes)
    obs = Observation(
        event=event,
        priors={event.changes[0].field: Prior("google", "7", ActorKind.HUMAN, 5, "e1")},
        related=(RelatedRecord(object_type=ObjectType.COMPANY, record_id="9"),),
        record_known=True,
    )
    back = codec.observation_from_dict(orjson.loads(orjson.dumps(codec.observation_to_dict(obs))))
    assert back == obs
    assert back.related[0].model_fields_set == obs.related[0].model_fields_set


def broken(mutate: Any) -> dict[str, Any]:
    event = next(e for e in demo_events("hubspot") if e.changes)
    data = copy.deepcopy(codec.event_to_wire(event))
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "error", "where"),
    [
        (lambda d: d.pop("record_id"), KeyError, "record_id"),
        (lambda d: d.update(occurred_at="1767225600000"), ValueError, "occurred_at"),
        (lambda d: d.update(occurred_at=True), ValueError, "occurred_at"),
        (lambda d: d.update(object_type="spaceship"), ValueError, "object_type"),
        (lambda d: d.update(operation="explode"), ValueError, "operation"),
        (lambda d: d["actor"].update(kind="robot"), ValueError, "actor.kind"),
        (lambda d: d["actor"]["identity"].update(vendor=5), ValueError, "actor.identity.vendor"),
        (lambda d: d["changes"][0].update(field=None), ValueError, "changes.field"),
        (lambda d: d["changes"][0].update(has_old="yes"), ValueError, "changes.has_old"),
        (lambda d: d.update(bulk=1), ValueError, "bulk"),
    ],
)
def test_reader_refuses_what_is_not_an_event(mutate: Any, error: type[Exception], where: str) -> None:
    with pytest.raises(error) as caught:
        codec.event_from_wire(broken(mutate))
    assert where in str(caught.value)


def test_a_foreign_actor_message_is_refused_not_half_read() -> None:
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
        codec.decode_actor_inputs(b'[{"t": "obs", "o": {"e": [], "p": {}, "r": [], "k": true}}]')
    with pytest.raises(ValueError):
        codec.decode_actor_inputs(b'{"t": "obs"}')
