"""Canonical events, source detection, decode_line and the shared timestamp rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.adapters import AdapterError, decode_line, detect_source, normalize, normalize_with_errors
from app.adapters.common import id_str, to_ms
from detectors.events import (
    Actor,
    ActorKind,
    ChangeEvent,
    FieldChange,
    ObjectType,
    RelatedRecord,
    SourceIdentity,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vendors"


def event_dict(**overrides):
    event = ChangeEvent(
        event_id="x:1",
        source="hubspot",
        source_event_id="1",
        occurred_at=1_700_000_000_000,
        object_type=ObjectType.DEAL,
        source_object_type="deal",
        record_id="42",
        operation="update",
        changes=(FieldChange(field="dealstage", new="closedwon", old="qualified", has_old=True),),
        actor=Actor(
            kind=ActorKind.AGENT, id="enricher", identity=SourceIdentity(vendor="hubspot", app_id="7")
        ),
        related=(RelatedRecord(object_type=ObjectType.COMPANY, record_id="9"),),
    ).model_dump(mode="json")
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def test_round_trip():
    data = event_dict()
    assert detect_source(data) == "canonical"
    (event,) = normalize(data)
    assert event.model_dump(mode="json") == data
    assert normalize(json.loads(json.dumps(data)), "canonical") == [event]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"actor": ...}, "missing_field:actor"),
        ({"occurred_at": "soon"}, "bad_type:occurred_at"),
        ({"operation": "upsert"}, "bad_type:operation"),
        ({"object_type": "spaceship"}, "bad_type:object_type"),
        ({"changes": [{"new": 1}]}, "missing_field:changes.0.field"),
    ],
)
def test_validation_errors_name_the_field(overrides, reason):
    with pytest.raises(AdapterError) as err:
        normalize(event_dict(**overrides))
    assert err.value.reason == reason
    assert "soon" not in str(err.value)  # messages do not echo values


def test_canonical_array_keeps_good_elements():
    events, errors = normalize_with_errors(
        [event_dict(), event_dict(event_id="x:2", actor=...), 5], "canonical"
    )
    assert [e.event_id for e in events] == ["x:1"]
    assert [(e.reason, e.index) for e in errors] == [("missing_field:actor", 1), ("bad_type:event", 2)]


@pytest.mark.parametrize(
    ("fixture", "source"),
    [
        ("hubspot_batch.json", "hubspot"),
        ("hubspot_generic.json", "hubspot"),
        ("salesforce_cometd_account_update.json", "salesforce"),
        ("salesforce_cometd_contact_multi.json", "salesforce"),
        ("salesforce_pubsub_account_create.json", "salesforce"),
        ("pipedrive_v1_deal_updated.json", "pipedrive"),
    ],
)
def test_detect_source(fixture, source):
    assert detect_source(json.loads((FIXTURES / fixture).read_text())) == source


@pytest.mark.parametrize("payload", [{"hello": "world"}, 42, "text", None, {"meta": {"x": 1}}])
def test_unknown_shapes(payload):
    with pytest.raises(AdapterError) as err:
        normalize_with_errors(payload)
    assert err.value.reason == "unknown_shape"


def test_batch_with_a_broken_first_element_still_goes_element_by_element():
    hubspot_note = {
        "subscriptionType": "contact.creation",
        "eventId": 1,
        "objectId": 2,
        "occurredAt": 1_700_000_000_000,
    }
    events, errors = normalize_with_errors(["junk", hubspot_note])
    assert len(events) == 1 and [(e.reason, e.index) for e in errors] == [("unknown_shape", 0)]


def test_array_of_separate_deliveries():
    gaps = json.loads((FIXTURES / "salesforce_gap_events.json").read_text())
    pipedrive = json.loads((FIXTURES / "pipedrive_v2_examples.json").read_text())
    assert detect_source(gaps) == "batch"
    mixed = [*gaps, {"ChangeEventHeader": {"entityName": "Account"}}, pipedrive[0], [1]]
    events, errors = normalize_with_errors(mixed)
    assert [e.source for e in events] == ["salesforce", "salesforce", "pipedrive"]
    assert [(e.reason, e.index) for e in errors] == [("missing_field:changeType", 2), ("unknown_shape", 4)]
    assert len(normalize(gaps, "salesforce")) == 2
    events, errors = normalize_with_errors(pipedrive, "pipedrive")
    assert len(events) == len(pipedrive) and errors == []


def test_unknown_source_name():
    with pytest.raises(AdapterError) as err:
        normalize(event_dict(), "zoho")
    assert err.value.reason == "unknown_source"


def test_explicit_source_must_fit_the_payload():
    with pytest.raises(AdapterError) as err:
        normalize(event_dict(), "salesforce")
    assert err.value.reason == "unknown_shape"


def test_adapter_error_is_a_value_error():
    err = AdapterError("missing_field:objectId", "no objectId", index=3)
    assert isinstance(err, ValueError) and err.reason == "missing_field:objectId" and err.index == 3
    assert str(err) == "element 3: no objectId"


class TestDecodeLine:
    def test_bytes_str_bom_and_whitespace(self):
        assert decode_line(b'{"a": 1}\n') == {"a": 1}
        assert decode_line("  [1, 2] ") == [1, 2]
        assert decode_line(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}

    @pytest.mark.parametrize(
        "raw", [b"", b"   \n", b"{not json", b"\xff\xfe{}", "{'a': 1}", b'{"a": 1} trailing']
    )
    def test_not_json(self, raw):
        with pytest.raises(AdapterError) as err:
            decode_line(raw)
        assert err.value.reason == "not_json"

    def test_size_limit(self):
        payload = b'{"a": "' + b"x" * 90 + b'"}'
        assert len(payload) == 99
        assert decode_line(payload, max_bytes=99) == {"a": "x" * 90}
        with pytest.raises(AdapterError) as err:
            decode_line(payload, max_bytes=98)
        assert err.value.reason == "too_large"
        with pytest.raises(AdapterError) as err:
            decode_line("é" * 60, max_bytes=100)  # counted in UTF-8 bytes, not characters
        assert err.value.reason == "too_large"


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (1669304542, 1669304542000),  # Pipedrive 10-character timestamp (seconds)
        ("1669304542", 1669304542000),
        (1669304542.5, 1669304542500),
        (1462216307945, 1462216307945),  # HubSpot occurredAt
        ("1462216307945", 1462216307945),
        (1523440213384700, 1523440213384),  # microseconds
        (1523440213384700123, 1523440213384),  # nanoseconds
        ("2022-11-24T15:25:44.461Z", 1669303544461),
        ("2022-11-24T16:25:44.461+01:00", 1669303544461),
        ("2022-11-24 15:25:44", 1669303544000),  # no zone: UTC
        (0, 0),
    ],
)
def test_to_ms(value, ms):
    assert to_ms(value, "t") == ms


@pytest.mark.parametrize(
    "value",
    [
        True,
        "tomorrow",
        -5,
        float("nan"),
        float("inf"),
        {"t": 1},
        [1],
        "9999-01-01T00:00:00Z",
        "1900-01-01T00:00:00Z",
        1e20 * 1e10,
    ],
)
def test_to_ms_rejects(value):
    with pytest.raises(AdapterError) as err:
        to_ms(value, "occurredAt")
    assert err.value.reason == "bad_type:occurredAt"


def test_to_ms_missing_and_ids():
    with pytest.raises(AdapterError) as err:
        to_ms(None, "occurredAt")
    assert err.value.reason == "missing_field:occurredAt"
    assert id_str(123, "id") == id_str("123", "id") == id_str(123.0, "id") == id_str(" 123 ", "id") == "123"
    for bad in (True, 1.5, [1], {"a": 1}):
        with pytest.raises(AdapterError):
            id_str(bad, "id")
    with pytest.raises(AdapterError) as err:
        id_str("  ", "objectId")
    assert err.value.reason == "missing_field:objectId"
