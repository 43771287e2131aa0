"""Canonical change events given directly (tests, replays of crm.changes, custom bridges).

A payload is one dict in ChangeEvent's JSON shape, or a JSON array of them (each element
validated on its own). A validation failure names the first bad field: `missing_field:actor`,
`bad_type:occurred_at`, `bad_type:changes.0.field`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.adapters.errors import AdapterError
from detectors.events import ChangeEvent

_REQUIRED = ("event_id", "record_id", "operation")


def looks_like(payload: Any) -> bool:
    """A dict with the canonical event's identifying keys (or an array whose first element is one)."""
    if isinstance(payload, list):
        return bool(payload) and looks_like(payload[0])
    # Spelled out (not all() over _REQUIRED): asked of every payload, and most are not canonical.
    return (
        isinstance(payload, dict)
        and "event_id" in payload
        and "record_id" in payload
        and "operation" in payload
    )


def normalize(payload: Any) -> tuple[list[ChangeEvent], list[AdapterError]]:
    """Validate one event (errors raise) or an array (errors are returned per element)."""
    if isinstance(payload, list):
        events: list[ChangeEvent] = []
        errors: list[AdapterError] = []
        for index, element in enumerate(payload):
            try:
                events.append(validate(element))
            except AdapterError as err:
                errors.append(err.at(index))
        return events, errors
    return [validate(payload)], []


def validate(payload: Any) -> ChangeEvent:
    """ChangeEvent.model_validate, with the first error turned into an AdapterError naming the field."""
    if not isinstance(payload, dict):
        raise AdapterError("bad_type:event", "a canonical event is a JSON object")
    try:
        return ChangeEvent.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(part) for part in first.get("loc", ())) or "event"
        kind = "missing_field" if first.get("type") == "missing" else "bad_type"
        raise AdapterError(
            f"{kind}:{loc}", f"canonical event: {loc}: {first.get('msg', 'invalid')}"
        ) from None
