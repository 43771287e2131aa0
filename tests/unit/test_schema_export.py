"""The exported JSON Schema of the canonical event is current and validates real events."""

from __future__ import annotations

import json

import jsonschema

from scripts.export_schema import TARGET, schema_text
from tests.unit.helpers_events import event


def test_exported_schema_is_current() -> None:
    assert TARGET.read_text() == schema_text(), "run: python scripts/export_schema.py"


def test_schema_accepts_a_canonical_event_and_rejects_a_broken_one() -> None:
    schema = json.loads(TARGET.read_text())
    good = event(1, {"utm_source": "google"}).model_dump(mode="json")
    jsonschema.validate(good, schema)
    bad = dict(good, operation="explode")
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError as exc:
        assert "explode" in str(exc.message)
    else:
        raise AssertionError("an unknown operation must not validate")
