"""Identity normalization: e-mail, phone (E.164), names, companies, domains, hashed keys."""

from __future__ import annotations

import pytest

from detectors.events import ObjectType
from detectors.identity import (
    IdentityFields,
    extract,
    identity_key,
    name_company_key,
    normalize_company,
    normalize_domain,
    normalize_email,
    normalize_phone,
    normalize_text,
)
from detectors.settings import DuplicateSpikeSettings

S = DuplicateSpikeSettings()
FIELDS = IdentityFields.of(
    email=S.email_fields,
    phone=S.phone_fields,
    first_name=S.first_name_fields,
    last_name=S.last_name_fields,
    full_name=S.full_name_fields,
    company=S.company_fields,
    domain=S.domain_fields,
    org_name=S.org_name_fields,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Ann@Example.com", "ann@example.com"),
        ("  ann@example.com \n", "ann@example.com"),
        ("ann+crm@example.com", "ann@example.com"),
        ("ann+a+b@example.com", "ann@example.com"),
        ("a.n.n@example.com", "a.n.n@example.com"),  # dots matter outside Gmail
        ("A.nn.Lee+news@gmail.com", "annlee@gmail.com"),
        ("ann.lee@googlemail.com", "annlee@gmail.com"),
        ("mailto:ann@example.com", "ann@example.com"),
        ("not an email", None),
        ("ann@localhost", None),
        ("+tag@example.com", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_normalize_email(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw, region, expected",
    [
        ("(415) 555-0100", "US", "+14155550100"),
        ("415.555.0100", "US", "+14155550100"),
        ("+1 415 555 0100", "DE", "+14155550100"),
        ("001 415 555 0100", "DE", "+14155550100"),
        ("+1-415-555-0100 ext. 12", "US", "+14155550100"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("030 1234567", "DE", "+49301234567"),
        (4155550100, "US", "+14155550100"),
        ("12", "US", None),
        ("call me", "US", None),
        ("", "US", None),
        (None, "US", None),
    ],
)
def test_normalize_phone_to_e164(raw, region, expected):
    assert normalize_phone(raw, region) == expected


def test_text_company_domain_and_name_keys():
    assert normalize_text("  Zoë   O'Brien-Smith ") == "zoe o brien smith"
    assert normalize_company("ACME, Inc.") == normalize_company("Acme") == "acme"
    assert normalize_company("The Limited Co") == "the"  # suffixes only at the end, one word kept
    assert normalize_domain("https://www.Acme.com/about?x=1") == "acme.com"
    assert normalize_domain("acme.com:8080") == "acme.com"
    assert normalize_domain("n/a") is None
    assert name_company_key("Ann", "Lee", "Acme GmbH") == "ann lee|acme"
    assert name_company_key("Ann", "Lee", "") is None
    assert name_company_key("", "", "Acme") is None


def test_identity_key_is_hashed_scoped_and_salted():
    key = identity_key("email", "ann@example.com", "hubspot|p")
    assert key.startswith("email:") and len(key) == 6 + 24
    assert "ann" not in key and "example" not in key
    assert key == identity_key("email", "ann@example.com", "hubspot|p")
    assert key != identity_key("email", "ann@example.com", "salesforce|p")
    assert key != identity_key("email", "ann@example.com", "hubspot|p", salt="s3cret")


def test_extract_per_vendor_shapes():
    hubspot = extract(
        ObjectType.CONTACT,
        {
            "email": "Ann+x@Example.com",
            "firstname": "Ann",
            "lastname": "Lee",
            "company": "Acme Inc",
            "phone": "(415) 555-0100",
        },
        FIELDS,
    )
    assert hubspot == [
        ("email", "ann@example.com"),
        ("name", "ann lee|acme"),
        ("namephone", "ann lee|+14155550100"),
    ]
    salesforce_lead = extract(
        ObjectType.LEAD,
        {"Email": "ann@example.com", "FirstName": "Ann", "LastName": "Lee", "Company": "ACME"},
        FIELDS,
    )
    assert ("name", "ann lee|acme") in salesforce_lead
    pipedrive = extract(
        ObjectType.CONTACT,
        {
            "emails": [
                {"value": "ann@example.com", "primary": True},
                {"value": "ann.lee@gmail.com", "primary": False},
            ],
            "phones": [{"value": "+1 415 555 0100", "primary": True}],
            "name": "Ann Lee",
            "org_id": {"value": 7, "name": "Acme"},
        },
        FIELDS,
    )
    assert ("email", "annlee@gmail.com") in pipedrive and ("name", "ann lee|acme") in pipedrive
    assert ("namephone", "ann lee|+14155550100") in pipedrive
    company = extract(
        ObjectType.COMPANY, {"name": "Acme, Inc.", "domain": "www.acme.com", "phone": "415-555-0100"}, FIELDS
    )
    assert company == [("org", "acme"), ("domain", "acme.com"), ("phone", "+14155550100")]
    # a person's phone alone is no identity (switchboard numbers), nor is a deal anything
    assert extract(ObjectType.CONTACT, {"phone": "415-555-0100"}, FIELDS) == []
    assert extract(ObjectType.DEAL, {"email": "ann@example.com"}, FIELDS) == []
    # HubSpot multi-value property
    assert extract(ObjectType.CONTACT, {"hs_additional_emails": "a@x.com;b@y.com"}, FIELDS) == [
        ("email", "a@x.com"),
        ("email", "b@y.com"),
    ]


def test_salesforce_compound_name():
    found = extract(
        ObjectType.CONTACT,
        {
            "Name": {"Salutation": None, "FirstName": "Ann", "LastName": "Lee"},
            "AccountId": "001xx000003DGb2",
            "Email": "ANN@example.com",
        },
        FIELDS,
    )
    assert ("email", "ann@example.com") in found and ("name", "ann lee|001xx000003dgb2") in found
