"""Identity normalization: the keys under which two CRM records are "the same person or company".

Duplicates hide behind formatting: `Ann.Lee+crm@GoogleMail.com ` and `annlee@gmail.com` are one
inbox, `(415) 555-0100` and `+14155550100` one phone. These helpers normalize e-mail addresses,
phone numbers (E.164 through `phonenumbers`), person name + company and company domain/name, and
turn each into a hashed identity key such as `email:3f2a...`. Only hashes leave this module, so no
e-mail address or phone number lands in state keys, topics or findings.

Pure functions. Phone parsing costs ~20 us per number and text folding a few us, and the same
values come back again and again (a record's prior values are re-read on every identity change),
so both sit behind bounded LRU caches (`CACHE_SIZE` entries each, a few MB).
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers

from detectors.events import JsonValue, ObjectType, is_blank

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_LEGAL_SUFFIXES = frozenset(
    {
        "inc",
        "incorporated",
        "llc",
        "ltd",
        "limited",
        "corp",
        "corporation",
        "co",
        "company",
        "gmbh",
        "ag",
        "sa",
        "sas",
        "sarl",
        "bv",
        "nv",
        "plc",
        "pty",
        "oy",
        "ab",
        "as",
        "srl",
        "spa",
        "kg",
        "lp",
        "llp",
    }
)

CACHE_SIZE = 65_536
"""Entries of each normalization cache (phone, text): about 10 MB each at most."""

PERSON = "p"
ORG = "o"
"""Identity classes: a contact and a lead can duplicate each other; a company only a company."""

_CLASS_OF = {ObjectType.CONTACT: PERSON, ObjectType.LEAD: PERSON, ObjectType.COMPANY: ORG}


def identity_class(object_type: ObjectType) -> str | None:
    """The identity class of an object type, or None when it has no identity (deals, tickets)."""
    return _CLASS_OF.get(object_type)


def normalize_email(raw: JsonValue) -> str | None:
    """Lowercase, trimmed, plus-tag removed; Gmail dots removed and googlemail.com folded to gmail.com.

    None when the value is not an e-mail address.
    """
    if not isinstance(raw, str):
        return None
    text = raw.strip().lower()
    if text.startswith("mailto:"):
        text = text[7:]
    if not _EMAIL.match(text):
        return None
    local, _, domain = text.rpartition("@")
    domain = domain.rstrip(".")
    local = local.split("+", 1)[0]
    if domain in _GMAIL_DOMAINS:
        local = local.replace(".", "")
        domain = "gmail.com"
    if not local:
        return None
    return f"{local}@{domain}"


def normalize_phone(raw: JsonValue, region: str = "US") -> str | None:
    """E.164 (`+14155550100`), extensions dropped; None when it cannot be a phone number.

    Numbers without a country code are read in `region`. Possible (not only valid) numbers are
    kept: CRMs hold test and new-range numbers that phonenumbers' validity tables reject.
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        return None
    return _e164(raw, region)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _e164(raw: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_text(raw: JsonValue) -> str | None:
    """Casefolded, accents stripped, punctuation and whitespace collapsed to single spaces."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        return None
    return _fold(raw)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _fold(raw: str) -> str | None:
    text = unicodedata.normalize("NFKD", raw)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = _NON_WORD.sub(" ", text).strip()
    return text or None


def normalize_company(raw: JsonValue) -> str | None:
    """Company name for matching: normalize_text, then trailing legal suffixes dropped (Acme Inc. = Acme)."""
    text = normalize_text(raw)
    if text is None:
        return None
    words = text.split()
    while len(words) > 1 and words[-1] in _LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words)


def normalize_domain(raw: JsonValue) -> str | None:
    """`https://www.Acme.com/about` -> `acme.com`; None when there is no plausible host."""
    if not isinstance(raw, str):
        return None
    text = raw.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    text = text.rsplit("@", 1)[-1].split(":", 1)[0].rstrip(".")
    if text.startswith("www."):
        text = text[4:]
    if "." not in text or " " in text or len(text) < 4:
        return None
    return text


def name_company_key(first: JsonValue, last: JsonValue, company: JsonValue) -> str | None:
    """`first last|company` normalized; None unless a name and a company are both present."""
    name = normalize_text(" ".join(str(p) for p in (first, last) if isinstance(p, (str, int)) and p != ""))
    org = normalize_company(company)
    if not name or not org:
        return None
    return f"{name}|{org}"


def identity_key(kind: str, normalized: str, scope: str = "", salt: str = "") -> str:
    """`kind:<24 hex of sha256>`: the hashed link key. `scope` keeps vendors and classes apart."""
    digest = hashlib.sha256(f"{salt}\x1f{scope}\x1f{normalized}".encode()).hexdigest()[:24]
    return f"{kind}:{digest}"


@dataclass(frozen=True, slots=True)
class IdentityFields:
    """Which (lowercased) field names carry which part of an identity; from DuplicateSpikeSettings."""

    email: frozenset[str]
    phone: frozenset[str]
    first_name: frozenset[str]
    last_name: frozenset[str]
    full_name: frozenset[str]
    company: frozenset[str]
    domain: frozenset[str]
    org_name: frozenset[str]

    @classmethod
    def of(cls, **lists: Iterable[str]) -> IdentityFields:
        return cls(**{k: frozenset(x.lower() for x in v) for k, v in lists.items()})

    def all_names(self) -> frozenset[str]:
        return (
            self.email
            | self.phone
            | self.first_name
            | self.last_name
            | self.full_name
            | self.company
            | self.domain
            | self.org_name
        )


def _values(raw: JsonValue) -> list[JsonValue]:
    """A field's scalar values: Pipedrive sends [{value, primary, label}, ...], HubSpot `a;b`."""
    if isinstance(raw, list):
        out: list[JsonValue] = []
        for item in raw:
            out.extend(_values(item))
        return out
    if isinstance(raw, dict):
        return _values(raw.get("value"))
    if isinstance(raw, str) and ";" in raw:
        return [part for part in raw.split(";") if part.strip()]
    return [] if is_blank(raw) else [raw]


def _org_part(raw: JsonValue) -> JsonValue:
    """Pipedrive org_id may be an id or {value, name}; Salesforce AccountId an id (kept as `acct:`)."""
    if isinstance(raw, dict):
        return raw.get("name") or (f"acct {raw.get('value')}" if raw.get("value") is not None else None)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return f"acct {raw}"
    return raw


def extract(
    object_type: ObjectType, values: dict[str, JsonValue], fields: IdentityFields, region: str = "US"
) -> list[tuple[str, str]]:
    """(kind, normalized value) pairs found in a record's field values.

    Persons (contacts, leads): `email`; `name` (first + last name with company); `namephone`
    (name with a phone number). A person's phone alone is no identity: colleagues share the
    switchboard number (Salesforce's standard matching rules pair phone with the name, too).
    Companies: `domain`, `org` (company name, legal suffix dropped), `phone`.
    `values` maps field names (any case) to values as the vendor sent them. Name keys need the
    name and the company (or phone) in the same mapping: an update of the last name alone yields none.
    """
    klass = identity_class(object_type)
    if klass is None:
        return []
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: str, value: str | None) -> None:
        if value and (kind, value) not in seen:
            seen.add((kind, value))
            out.append((kind, value))

    first = last = full = company = None
    phones: list[str] = []
    for name, raw in values.items():
        low = name.lower()
        if low in fields.phone:
            for v in _values(raw):
                phone = normalize_phone(v, region)
                if phone and phone not in phones:
                    phones.append(phone)
        elif klass == PERSON:
            if low in fields.email:
                for v in _values(raw):
                    add("email", normalize_email(v))
            elif low in fields.first_name:
                first = raw
            elif low in fields.last_name:
                last = raw
            elif low in fields.full_name:
                if isinstance(raw, dict):  # Salesforce CDC: compound Name {FirstName, LastName, ...}
                    first = raw.get("FirstName", first)
                    last = raw.get("LastName", last)
                else:
                    full = raw
            elif low in fields.company:
                company = _org_part(raw)
        elif low in fields.domain:
            for v in _values(raw):
                add("domain", normalize_domain(v))
        elif low in fields.org_name:
            add("org", normalize_company(raw))
    if klass == ORG:
        for phone in phones:
            add("phone", phone)
        return out
    if first is not None or last is not None:
        person = normalize_text(
            " ".join(str(p) for p in (first, last) if isinstance(p, (str, int)) and p != "")
        )
    else:
        person = normalize_text(full)
    if person:
        org = normalize_company(company)
        if org:
            add("name", f"{person}|{org}")
        for phone in phones:
            add("namephone", f"{person}|{phone}")
    return out
