"""Vendor adapters: delivered payloads (already JSON-decoded) to canonical ChangeEvents.

    decode_line(raw, max_bytes)            bytes/str -> JSON value, or AdapterError not_json/too_large
    detect_source(payload)                 hubspot | salesforce | pipedrive | canonical, or a CRM's own
                                           history export: hubspot-history | salesforce-history |
                                           pipedrive-history
    normalize_with_errors(payload, source) (events, errors): the good events of a payload plus one
                                           AdapterError per bad element of a batch; a payload that is
                                           unusable as a whole raises AdapterError
    normalize(payload, source)             the strict variant: any bad element raises

Batch policy: a HubSpot delivery (or a canonical array) is a batch; each bad element is its own
dead letter and the good ones are kept. Salesforce and Pipedrive payloads are one event each, so
any problem in them is a whole-payload error; a JSON array of such payloads (a bridge that groups
deliveries) is taken element by element, like a batch. All ids are derived from vendor ids (see each
adapter's docstring), so the same payload always yields the same events with the same ids.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.adapters import (
    canonical,
    hubspot,
    hubspot_history,
    pipedrive,
    pipedrive_history,
    salesforce,
    salesforce_history,
)
from app.adapters.errors import AdapterError
from detectors.events import ChangeEvent

__all__ = [
    "AdapterError",
    "HISTORY_SOURCES",
    "SOURCES",
    "VENDORS",
    "decode_line",
    "detect_source",
    "normalize",
    "normalize_with_errors",
]

VENDORS = ("hubspot", "salesforce", "pipedrive")
"""The CRMs crm-guard reads (raw topics, webhook endpoints, demo and scenario files, policy rules)."""
HISTORY_SOURCES = ("hubspot-history", "salesforce-history", "pipedrive-history")
"""Exports of a CRM's own change history (backtests): grouped by record, not by time."""
SOURCES = (*VENDORS, "canonical", *HISTORY_SOURCES)
_ADAPTERS = {
    "hubspot": hubspot.normalize,
    "salesforce": salesforce.normalize,
    "pipedrive": pipedrive.normalize,
    "canonical": canonical.normalize,
    "salesforce-history": salesforce_history.normalize,
    "hubspot-history": hubspot_history.normalize,
    "pipedrive-history": pipedrive_history.normalize,
}
_BOM = b"\xef\xbb\xbf"


def decode_line(raw: bytes | str, max_bytes: int = 1_000_000) -> Any:
    """One delivered payload (a JSON Lines line or a message value) to its JSON value.

    The size is checked before parsing, so an oversized payload costs nothing to reject.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if len(data) > max_bytes:
        raise AdapterError("too_large", f"payload of {len(data)} bytes is over the {max_bytes}-byte limit")
    data = data.strip()
    if data.startswith(_BOM):
        data = data[len(_BOM) :].lstrip()
    if not data:
        raise AdapterError("not_json", "empty payload")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise AdapterError("not_json", "payload is not valid JSON (UTF-8)") from None


def detect_source(payload: Any) -> str:
    """Which adapter a payload belongs to, from its shape; AdapterError("unknown_shape") otherwise.

    A JSON array is a HubSpot batch or a canonical array when its first element says so, else
    "batch": an array of single-event deliveries (CDC events or Pipedrive bodies a bridge grouped),
    each element detected on its own.
    """
    if canonical.looks_like(payload):
        return "canonical"
    if isinstance(payload, list):
        for name, looks_like in _ARRAY_SHAPES:
            if payload and looks_like(payload[0]):
                return name
        return "hubspot" if hubspot.looks_like(payload) else "batch"
    for name, looks_like in _OBJECT_SHAPES:
        if looks_like(payload):
            return name
    if hubspot.is_journal_page(payload):
        raise hubspot.journal_page_error()
    raise AdapterError("unknown_shape", "payload matches no known vendor format")


_ARRAY_SHAPES = (
    ("salesforce-history", salesforce_history.looks_like),
    ("hubspot-history", hubspot_history.looks_like),
)
"""Arrays whose elements are history items (a HubSpot webhook batch is checked after these)."""
_OBJECT_SHAPES = (
    *_ARRAY_SHAPES,
    ("pipedrive-history", pipedrive_history.looks_like),
    ("pipedrive", pipedrive.looks_like),
    ("salesforce", salesforce.looks_like),
    ("hubspot", hubspot.looks_like),
)
"""A single payload's shapes, in the order they are told apart."""


def normalize_with_errors(payload: Any, source: str = "auto") -> tuple[list[ChangeEvent], list[AdapterError]]:
    """The events of a payload and the errors of its bad batch elements (see the module docstring)."""
    name = (source or "auto").strip().lower()
    if name == "auto":
        name = detect_source(payload)
    if name == "batch" or (name in ("salesforce", "pipedrive") and isinstance(payload, list)):
        return _per_element(payload, "auto" if name == "batch" else name)
    adapter = _ADAPTERS.get(name)
    if adapter is None:
        raise AdapterError("unknown_source", f"source {name[:32]} is not one of {', '.join(SOURCES)}")
    return adapter(payload)


def _per_element(payload: list[Any], source: str) -> tuple[list[ChangeEvent], list[AdapterError]]:
    """An array of separate deliveries: each element is its own payload (and its own dead letter)."""
    events: list[ChangeEvent] = []
    errors: list[AdapterError] = []
    for index, element in enumerate(payload):
        try:
            if isinstance(element, list):
                raise AdapterError("unknown_shape", "nested arrays are not deliveries")
            found, bad = normalize_with_errors(element, source)
        except AdapterError as err:
            errors.append(err.at(index))
            continue
        events.extend(found)
        errors.extend(err.at(index) for err in bad)
    return events, errors


def normalize(payload: Any, source: str = "auto") -> list[ChangeEvent]:
    """All events of a payload, or the first error (of the payload or of any batch element)."""
    events, errors = normalize_with_errors(payload, source)
    if errors:
        raise errors[0]
    return events
