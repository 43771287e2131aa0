"""Masking of e-mail addresses and phone numbers in timeline values, unless the operator opts in.

The timeline shows field values, and CRM fields hold personal data. By default every value that is
an e-mail or a phone number is masked before it leaves the guard (HTTP API, web pages, CLI):

* e-mail ``ann.smith@example.com`` -> ``a***@e***.com`` (first letter of the local part and of the
  domain, and the top-level domain);
* phone ``+1 415 555 4567`` -> ``+1******4567`` (country code and last four digits).

A value is treated as an e-mail or phone when its field is one (by name, per vendor: ``email``,
``hs_additional_emails``, ``Email``, ``MobilePhone``, Pipedrive ``emails``/``phones``, and any field
whose name contains ``email``, ``phone``, ``mobile`` or ``fax``), or when the value itself looks
like one (an address anywhere in a string; a whole string of 7-15 digits written like a phone
number: leading ``+``, brackets or three or more digit groups). Bare digit strings (record ids, owner
ids) and ISO dates are left alone unless the field is a phone field. Lists and dicts (Pipedrive
``emails: [{"value": ..., "primary": true}]``) are masked recursively.

`show_pii=True` (setting `show_pii`, env CRM_GUARD_SHOW_PII) returns values unchanged.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Literal

import phonenumbers

PiiClass = Literal["email", "phone"]

# Exact field names per vendor (lower case); the generic patterns below catch custom fields.
_VENDOR_FIELDS: dict[str, dict[str, PiiClass]] = {
    "hubspot": {
        "email": "email", "hs_additional_emails": "email", "work_email": "email",
        "hs_email_domain": "email", "phone": "phone", "mobilephone": "phone", "fax": "phone",
        "hs_whatsapp_phone_number": "phone", "hs_searchable_calculated_phone_number": "phone",
    },
    "salesforce": {
        "email": "email", "personemail": "email", "phone": "phone", "mobilephone": "phone",
        "homephone": "phone", "otherphone": "phone", "assistantphone": "phone", "fax": "phone",
    },
    "pipedrive": {
        "email": "email", "emails": "email", "primary_email": "email",
        "phone": "phone", "phones": "phone",
    },
}
_GENERIC_PATTERNS: tuple[tuple[str, PiiClass], ...] = (
    ("*email*", "email"), ("*e_mail*", "email"), ("*phone*", "phone"),
    ("*mobile*", "phone"), ("*fax*", "phone"),
)

_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PHONE_SHAPE = re.compile(r"^\s*\+?[\d\s().\-/]{7,30}\s*$")
_ISO_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}")
_DIGIT_GROUPS = re.compile(r"\d+")

# Keys inside finding details and decisions that carry field values.
VALUE_KEYS = frozenset({
    "old", "new", "value", "values", "agent_value", "human_value", "previous", "prior",
    "proposed", "proposed_value", "current", "current_value", "modified_value", "restore",
})


def pii_class(field: str | None, vendor: str | None = None) -> PiiClass | None:
    """`email` or `phone` when the field holds that kind of personal data, else None."""
    if not field:
        return None
    name = field.lower()
    found = _VENDOR_FIELDS.get((vendor or "").lower(), {}).get(name)
    if found:
        return found
    for pattern, cls in _GENERIC_PATTERNS:
        if fnmatch.fnmatchcase(name, pattern):
            return cls
    return None


def mask_email(address: str) -> str:
    """`ann.smith@example.com` -> `a***@e***.com`; text without `@` keeps only its first character."""
    text = address.strip()
    if "@" not in text:
        return (text[:1] + "***") if text else text
    local, _, domain = text.rpartition("@")
    labels = domain.split(".")
    tld = labels[-1] if len(labels) > 1 else ""
    head = labels[0]
    masked_domain = (head[:1] + "***") + (f".{tld}" if tld else "")
    return f"{local[:1]}***@{masked_domain}"


def mask_phone(number: str) -> str:
    """`+1 415 555 4567` -> `+1******4567`: the country code (when written) and the last 4 digits."""
    text = str(number).strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits:
        return "***" if text else text
    prefix = ""
    rest = digits
    if text.startswith("+") or text.startswith("00"):
        international = "+" + (digits[2:] if text.startswith("00") else digits)
        try:
            code = str(phonenumbers.parse(international).country_code)
        except phonenumbers.NumberParseException:
            code = international[1:2]
        prefix = "+" + code
        rest = international[1 + len(code):]
    keep = 4 if len(rest) >= 8 else 2 if len(rest) >= 5 else 0
    shown = rest[len(rest) - keep:] if keep else ""
    return prefix + "*" * (len(rest) - keep) + shown


def looks_like_phone(text: str) -> bool:
    """A whole string written like a phone number (not a bare id, amount or date)."""
    if not _PHONE_SHAPE.match(text) or _ISO_DATE.match(text):
        return False
    digits = sum(ch.isdigit() for ch in text)
    if not 7 <= digits <= 15:
        return False
    stripped = text.strip()
    groups = len(_DIGIT_GROUPS.findall(stripped))
    return stripped.startswith("+") or "(" in stripped or groups >= 3


def mask_text(text: str, cls: PiiClass | None = None) -> str:
    """Mask one string: by its field's class when known, else by what the value looks like."""
    if cls == "email":
        return _EMAIL.sub(lambda m: mask_email(m.group(0)), text) if "@" in text else mask_email(text)
    if cls == "phone":
        return mask_phone(text)
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    if looks_like_phone(text):
        return mask_phone(text)
    return text


def mask_value(value: Any, field: str | None = None, vendor: str | None = None, show_pii: bool = False) -> Any:
    """A field value with every e-mail and phone number in it masked (unless show_pii)."""
    if show_pii:
        return value
    return _mask(value, pii_class(field, vendor))


def _mask(value: Any, cls: PiiClass | None) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return mask_text(value, cls)
    if isinstance(value, (int, float)):
        return mask_text(str(value), cls) if cls else value
    if isinstance(value, (list, tuple)):
        return [_mask(item, cls) for item in value]
    if isinstance(value, dict):
        # Pipedrive `emails: [{"label": "work", "value": "...", "primary": true}]`: mask the values,
        # keep labels (masked by pattern only, which leaves "work" alone).
        return {k: _mask(v, cls if k in ("value", "email", "phone", "number") else None) for k, v in value.items()}
    return value


def mask_details(details: Any, field: str | None = None, vendor: str | None = None, show_pii: bool = False) -> Any:
    """Mask a finding's details or a decision: value-carrying keys by the field's class, the rest by pattern."""
    if show_pii:
        return details
    field = details.get("field", field) if isinstance(details, dict) else field
    cls = pii_class(field if isinstance(field, str) else None, vendor)
    return _mask_details(details, cls)


def _mask_details(obj: Any, cls: PiiClass | None) -> Any:
    if isinstance(obj, dict):
        return {k: (_mask(v, cls) if k in VALUE_KEYS else _mask_details(v, cls)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_mask_details(v, cls) for v in obj]
    if isinstance(obj, str):
        return mask_text(obj)
    return obj
