"""Small, strict-where-it-matters conversions shared by the vendor adapters.

Vendors vary in how they spell the same thing (ids as numbers or strings, times as epoch
seconds, epoch milliseconds or ISO strings), so these accept every spelling seen in the vendors'
documentation and reject only what cannot be read. Errors name the vendor's field, never a value.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from app.adapters.errors import AdapterError, bad_type, missing
from detectors.events import Actor, ActorKind, ChangeEvent, SourceIdentity

K = TypeVar("K")

_NUMERIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = 7_258_118_400_000  # 2200-01-01: anything later is a unit mistake, not a time
_ONE_MS = timedelta(milliseconds=1)
_MIN_MS_NUMBER = 100_000_000_000  # 1e11: below it a number is seconds


def to_ms(value: Any, field: str) -> int:
    """Epoch milliseconds (UTC) from epoch s/ms/us/ns (number or numeric string) or an ISO 8601 string.

    The unit of a number is read from its magnitude: below 1e11 it is seconds (Pipedrive's
    10-character timestamps), below 1e14 milliseconds (HubSpot, Salesforce), below 1e17
    microseconds, else nanoseconds. An ISO string without a zone is taken as UTC.
    """
    if value.__class__ is int and _MIN_MS_NUMBER <= value <= _MAX_MS:
        ms: int = value
        return ms  # the common case: epoch ms as a JSON integer (what the general path gives too)
    if value is None:
        raise missing(field)
    if isinstance(value, bool):
        raise bad_type(field, "a timestamp")
    number: float | int
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if _NUMERIC.match(text):
            number = int(text) if text.lstrip("+-").isdigit() else float(text)
        else:
            return _iso_ms(text, field)
    else:
        raise bad_type(field, "a timestamp")
    if isinstance(number, float) and not math.isfinite(number):
        raise bad_type(field, "a timestamp")
    if number < 0:
        raise bad_type(field, "a timestamp after 1970")
    if number < 1e11:
        scale = 1000, 1
    elif number < 1e14:
        scale = 1, 1
    elif number < 1e17:
        scale = 1, 1000
    else:
        scale = 1, 1_000_000
    if isinstance(number, int):
        result = number * scale[0] // scale[1]  # exact; sub-millisecond parts are truncated
    else:
        result = math.floor(number * scale[0] / scale[1])
    if result > _MAX_MS:
        raise bad_type(field, "a timestamp before 2200")
    return result


def _iso_ms(text: str, field: str) -> int:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise bad_type(field, "a timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    result = (parsed - _EPOCH) // _ONE_MS
    if result < 0 or result > _MAX_MS:
        raise bad_type(field, "a timestamp between 1970 and 2200")
    return int(result)


def id_str(value: Any, field: str) -> str:
    """A vendor id as a string: ints and integral floats become digits, strings are stripped."""
    cls = value.__class__
    if cls is str:
        text: str = value.strip()
        if text:
            return text
        raise missing(field)
    if cls is int:
        return str(value)
    if value is None:
        raise missing(field)
    if isinstance(value, bool):
        raise bad_type(field, "an id")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        raise bad_type(field, "an id")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise missing(field)
        return text
    raise bad_type(field, "an id")


def opt_id(value: Any, field: str) -> str | None:
    """Like `id_str`, but None (or an empty string) stays None."""
    if value is None:
        return None
    cls = value.__class__
    if cls is str:
        return value.strip() or None
    if cls is int:
        return str(value)
    if isinstance(value, str) and not value.strip():
        return None
    return id_str(value, field)


def opt_str(value: Any) -> str | None:
    """A free-form vendor label (changeSource, change_source) as a stripped string, or None."""
    if value.__class__ is str:
        return value.strip() or None
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def as_bool(value: Any) -> bool:
    """Vendor booleans: true/false, "true"/"false", 1/0."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def mask_pii(value: str | None) -> str | None:
    """An identity part that looks like an e-mail address, replaced by a stable hash.

    Identities end up in alert text (`SourceIdentity.describe`), which must never carry an
    address; the hash still lets a policy rule or an operator match it.
    """
    if value is None or "@" not in value:
        return value
    return "redacted-" + hashlib.sha256(value.strip().lower().encode()).hexdigest()[:12]


_ACTORS: dict[tuple[str, ActorKind, str | None, str | None, str | None, str], Actor] = {}
_ACTOR_CACHE_SIZE = 10_000


def make_actor(
    vendor: str,
    kind: ActorKind,
    *,
    change_source: str | None = None,
    user_id: str | None = None,
    app_id: str | None = None,
    raw: str = "",
) -> Actor:
    """The adapter's actor hint; `id` is what detectors/attribution.py uses for a non-agent.

    Identities repeat a lot (a few users and apps make most changes) and Actor is frozen, so the
    built objects are shared through a small bounded cache.
    """
    key = (vendor, kind, change_source, user_id, app_id, raw)
    actor = _ACTORS.get(key)
    if actor is not None:
        return actor
    identity = SourceIdentity(
        vendor=vendor,
        change_source=mask_pii(change_source),
        user_id=mask_pii(user_id),
        app_id=mask_pii(app_id),
        raw=_mask_raw(raw),
    )
    actor_id = identity.user_id or identity.app_id or identity.change_source or "unknown"
    actor = Actor(kind=kind, id=actor_id, identity=identity)
    if len(_ACTORS) >= _ACTOR_CACHE_SIZE:
        _ACTORS.clear()
    _ACTORS[key] = actor
    return actor


_EMAIL = re.compile(r"[^\s;,=:]+@[^\s;,=]+")


def _mask_raw(raw: str) -> str:
    return _EMAIL.sub(lambda m: mask_pii(m.group(0)) or "", raw) if "@" in raw else raw


def require_dict(value: Any, field: str) -> dict[str, Any]:
    """The value as a JSON object, or `bad_type:<field>` (`missing_field` when absent)."""
    if value is None:
        raise missing(field)
    if not isinstance(value, dict):
        raise bad_type(field, "an object")
    return value


def page_items(payload: Any, key: str) -> list[Any]:
    """The items of one line of an API export: a response page's `key` list (`results`,
    `records`), a JSON array of items, or a single item."""
    if isinstance(payload, dict) and isinstance(payload.get(key), list):
        return payload[key]
    return payload if isinstance(payload, list) else [payload]


def events_per_save(
    items: list[Any],
    save_key: Callable[[Any], K],
    make_event: Callable[[K, list[Any]], ChangeEvent],
    describe: Callable[[K], str],
) -> tuple[list[ChangeEvent], list[AdapterError]]:
    """History exports: items (rows, changelog entries) grouped into saves by `save_key`, one
    event per save. A bad item is its own error (at its index); a save whose values no event can
    hold is a `bad_value` error named by `describe`."""
    saves: dict[K, list[Any]] = {}
    errors: list[AdapterError] = []
    for index, item in enumerate(items):
        try:
            key = save_key(item)
        except AdapterError as err:
            errors.append(err.at(index))
            continue
        saves.setdefault(key, []).append(item)
    events: list[ChangeEvent] = []
    for key, group in saves.items():
        try:
            events.append(make_event(key, group))
        except ValidationError as exc:  # a value no JSON field holds, an id too long ...
            errors.append(AdapterError("bad_value", f"{describe(key)}: {exc.errors()[0]['msg']}"))
    return events, errors
