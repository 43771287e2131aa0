"""Small pure helpers the silent-failure detectors share: comparing field values, matching field
names against glob lists, keeping e-mail addresses and phone numbers out of findings, and
remembering recent event ids so a redelivered event is not counted twice.

Why here: every detector that compares an old and a new value must agree on what "the same value"
means (HubSpot sends "100", Salesforce 100.0), and every detector that puts values into findings
must mask the same things.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from typing import Any

from detectors.base import Finding, Severity
from detectors.events import JsonValue, is_blank


def same_value(a: JsonValue, b: JsonValue, loose: bool = True) -> bool:
    """True when a CRM would show the two values as the same.

    Blank values (None, "", whitespace, [] and {}) are all the same; numbers compare numerically
    across str/int/float ("100" == 100.0); with `loose`, strings compare after strip + casefold
    (a re-capitalisation is a reformat, not a new value).
    """
    if a == b:
        return True
    blank_a, blank_b = is_blank(a), is_blank(b)
    if blank_a or blank_b:
        return blank_a and blank_b
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    num_a, num_b = _as_number(a), _as_number(b)
    if num_a is not None and num_b is not None:
        return num_a == num_b
    if isinstance(a, str) and isinstance(b, str):
        if loose:
            return a.strip().casefold() == b.strip().casefold()
        return a.strip() == b.strip()
    return False


def _as_number(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text and (text[0].isdigit() or text[0] in "+-.") and len(text) < 32:
            try:
                return float(text)
            except ValueError:
                return None
    return None


class FieldPatterns:
    """Case-insensitive shell-glob matching of field names, cached per name (names repeat a lot)."""

    __slots__ = ("_regex", "_cache")

    def __init__(self, patterns: list[str] | tuple[str, ...]) -> None:
        joined = "|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns)
        self._regex = re.compile(joined) if joined else None
        self._cache: dict[str, bool] = {}

    def matches(self, field: str) -> bool:
        """True when the field name matches one of the patterns."""
        hit = self._cache.get(field)
        if hit is None:
            hit = bool(self._regex is not None and self._regex.fullmatch(field.lower()))
            if len(self._cache) < 50_000:
                self._cache[field] = hit
        return hit


_PII_FIELDS = FieldPatterns(["*email*", "*phone*", "*mobile*", "fax", "*_fax", "emails", "phones"])
_EMAIL_LIKE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE_LIKE = re.compile(
    r"^\s*(\+\d[\d\s().\-/]{6,}|\(\d{2,4}\)[\d\s.\-/]{5,}|\d{3}[\s.\-]\d{3}[\s.\-]\d{4})\s*$"
)


def is_pii_field(field: str) -> bool:
    """Fields that hold e-mail addresses or phone numbers (by name)."""
    return _PII_FIELDS.matches(field)


def looks_like_pii(value: JsonValue) -> bool:
    """Values that look like an e-mail address or a phone number, whatever their field."""
    if isinstance(value, str):
        return bool(_EMAIL_LIKE.search(value) or _PHONE_LIKE.match(value))
    if isinstance(value, (list, dict)):
        return looks_like_pii(repr(value))
    return False


def mask(value: JsonValue) -> JsonValue:
    """A stable, non-reversible stand-in: equal values give equal masks, blanks stay blank."""
    if is_blank(value):
        return value
    digest = hashlib.sha256(repr(value).encode()).hexdigest()[:12]
    return f"masked:{digest}"


def safe_value(field: str, value: JsonValue, max_chars: int = 256) -> JsonValue:
    """A value fit for a finding: masked when it is (or looks like) an e-mail or phone, else cut."""
    if is_pii_field(field) or looks_like_pii(value):
        return mask(value)
    if isinstance(value, str) and len(value) > max_chars:
        return value[:max_chars]
    if isinstance(value, (list, dict)):
        text = repr(value)
        return value if len(text) <= max_chars else text[:max_chars]
    return value


def first_seen(recent: dict[str, int], event_id: str, cap: int = 64) -> bool:
    """Record an event id in a bounded FIFO (a dict: O(1) lookups, JSON-able); False when it was
    already there (a redelivery)."""
    if event_id in recent:
        return False
    recent[event_id] = 1
    if len(recent) > cap:
        del recent[next(iter(recent))]
    return True


class TierCache:
    """Field tiers per (vendor, field) for one policy object: the detectors' hot path asks a lot."""

    __slots__ = ("_policy", "_tiers")

    def __init__(self) -> None:
        self._policy: Any = None
        self._tiers: dict[tuple[str, str], Any] = {}

    def tier(self, policy: Any, vendor: str, field: str) -> Any:
        """policy.tier_of(vendor, field), cached (reset when the policy object changes)."""
        if policy is not self._policy:
            self._policy = policy
            self._tiers = {}
        key = (vendor, field)
        tier = self._tiers.get(key)
        if tier is None:
            tier = policy.tier_of(vendor, field)
            if len(self._tiers) < 100_000:
                self._tiers[key] = tier
        return tier


def finding_from(upstream: Finding, detector: str, severity: Severity, summary: str, **kw: Any) -> Finding:
    """A finding an ACTOR detector derives from an upstream one: same actor, event and record."""
    return Finding(
        detector=detector,
        severity=severity,
        actor_key=upstream.actor_key,
        actor_kind=upstream.actor_kind,
        agent=upstream.agent,
        event_id=upstream.event_id,
        occurred_at=upstream.occurred_at,
        record_key=upstream.record_key,
        object_type=upstream.object_type,
        summary=summary,
        **kw,
    )
