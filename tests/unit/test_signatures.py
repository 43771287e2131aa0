"""Webhook authentication. Expected signatures are computed here the way each vendor documents
them (not with the module's own helpers), plus HubSpot's published v1/v2 test vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest

from app.adapters import normalize
from app.adapters.signatures import (
    SignatureError,
    verify_basic_auth,
    verify_hubspot_legacy,
    verify_hubspot_request,
    verify_hubspot_v3,
    verify_shared_token,
)

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"  # noqa: S105 - HubSpot's published example secret
# HubSpot "Validating requests", v1 example (request body and resulting hash as published).
V1_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",'
    b'"changeFlag":"NEW","appId":54321}]'
)
V1_HASH = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
# v2 example: GET https://www.example.com/webhook_uri, no body.
V2_HASH = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"

NOW = 1_700_000_000_000
URI = "https://hooks.example.com/webhooks/hubspot?portal=62515"


def v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot's documented v3 steps: utf-8 string method + uri + body + timestamp, HMAC-SHA256, base64."""
    source = f"{method}{uri}{body.decode('utf-8')}{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def check(reason, fn, *args, **kwargs):
    with pytest.raises(SignatureError) as err:
        fn(*args, **kwargs)
    assert err.value.reason == reason
    return err.value


class TestHubSpotV3:
    def test_valid(self):
        stamp = str(NOW - 1000)
        verify_hubspot_v3(SECRET, "POST", URI, V1_BODY, stamp, v3(SECRET, "POST", URI, V1_BODY, stamp), NOW)

    def test_forged_secret_tampered_body_and_other_uri(self):
        stamp = str(NOW)
        forged = v3("another-secret", "POST", URI, V1_BODY, stamp)
        check("mismatch", verify_hubspot_v3, SECRET, "POST", URI, V1_BODY, stamp, forged, NOW)
        good = v3(SECRET, "POST", URI, V1_BODY, stamp)
        check(
            "mismatch",
            verify_hubspot_v3,
            SECRET,
            "POST",
            URI,
            V1_BODY.replace(b"123", b"124"),
            stamp,
            good,
            NOW,
        )
        check("mismatch", verify_hubspot_v3, SECRET, "POST", URI + "&x=1", V1_BODY, stamp, good, NOW)
        # the timestamp is signed: moving it to pass the age check breaks the signature
        check("mismatch", verify_hubspot_v3, SECRET, "POST", URI, V1_BODY, str(NOW + 1), good, NOW)

    def test_stale_and_future_timestamps(self):
        old = str(NOW - 300_001)
        err = check(
            "stale",
            verify_hubspot_v3,
            SECRET,
            "POST",
            URI,
            V1_BODY,
            old,
            v3(SECRET, "POST", URI, V1_BODY, old),
            NOW,
        )
        assert SECRET not in str(err)
        edge = str(NOW - 300_000)
        verify_hubspot_v3(SECRET, "POST", URI, V1_BODY, edge, v3(SECRET, "POST", URI, V1_BODY, edge), NOW)
        future = str(NOW + 600_000)
        check(
            "stale",
            verify_hubspot_v3,
            SECRET,
            "POST",
            URI,
            V1_BODY,
            future,
            v3(SECRET, "POST", URI, V1_BODY, future),
            NOW,
        )

    @pytest.mark.parametrize(
        ("timestamp", "signature", "reason"),
        [
            (str(NOW), None, "missing_signature"),
            (str(NOW), "  ", "missing_signature"),
            (None, "abc", "missing_timestamp"),
            ("", "abc", "missing_timestamp"),
            ("17e11", "abc", "bad_timestamp"),
            ("-5", "abc", "bad_timestamp"),
        ],
    )
    def test_missing_parts(self, timestamp, signature, reason):
        check(reason, verify_hubspot_v3, SECRET, "POST", URI, V1_BODY, timestamp, signature, NOW)

    def test_no_secret_configured_never_passes(self):
        stamp = str(NOW)
        check(
            "not_configured",
            verify_hubspot_v3,
            "",
            "POST",
            URI,
            V1_BODY,
            stamp,
            v3("", "POST", URI, V1_BODY, stamp),
            NOW,
        )

    def test_uri_decoding_follows_hubspots_table(self):
        stamp = str(NOW)
        received = "https://hooks.example.com/hs%3Ahook?email=ann%40example.com&q=%28a%29%2C%21%24%27%2A%3B%3F%2F&sp=a%20b"
        signed_by_hubspot = "https://hooks.example.com/hs:hook?email=ann@example.com&q=(a),!$'*;?/&sp=a%20b"
        signature = v3(SECRET, "POST", signed_by_hubspot, V1_BODY, stamp)
        verify_hubspot_v3(SECRET, "POST", received, V1_BODY, stamp, signature, NOW)
        verify_hubspot_v3(SECRET, "POST", received.replace("%3A", "%3a"), V1_BODY, stamp, signature, NOW)
        # %20 is not in the table: it stays encoded
        spaced = v3(SECRET, "POST", signed_by_hubspot.replace("%20", " "), V1_BODY, stamp)
        check("mismatch", verify_hubspot_v3, SECRET, "POST", received, V1_BODY, stamp, spaced, NOW)

    def test_unicode_body_and_sha256_prefix(self):
        body = '[{"propertyName":"city","propertyValue":"Tallinn Mustamäe"}]'.encode()
        stamp = str(NOW)
        signature = v3(SECRET, "POST", URI, body, stamp)
        verify_hubspot_v3(SECRET, "POST", URI, body, stamp, signature, NOW)
        verify_hubspot_v3(SECRET, "POST", URI, body, stamp, "sha256=" + signature, NOW)

    def test_from_headers(self):
        stamp = str(NOW)
        headers = {
            "X-HubSpot-Signature-v3": v3(SECRET, "POST", URI, V1_BODY, stamp),
            "X-HubSpot-Request-Timestamp": stamp,
            "X-HubSpot-Signature-Version": "v1",
            "X-HubSpot-Signature": V1_HASH,
        }
        verify_hubspot_request(SECRET, "POST", URI, V1_BODY, headers, NOW)
        legacy_only = {"X-HubSpot-Signature-Version": "v1", "X-HubSpot-Signature": V1_HASH}
        check("missing_signature", verify_hubspot_request, SECRET, "POST", URI, V1_BODY, legacy_only, NOW)
        verify_hubspot_request(SECRET, "POST", URI, V1_BODY, legacy_only, NOW, allow_legacy=True)


class TestHubSpotLegacy:
    def test_published_v1_example(self):
        assert hashlib.sha256(SECRET.encode() + V1_BODY).hexdigest() == V1_HASH  # the vector itself
        verify_hubspot_legacy(SECRET, "v1", "POST", URI, V1_BODY, V1_HASH)
        verify_hubspot_legacy(SECRET, None, "POST", URI, V1_BODY, V1_HASH.upper())
        check("mismatch", verify_hubspot_legacy, SECRET, "v1", "POST", URI, V1_BODY + b" ", V1_HASH)
        assert normalize(orjson.loads(V1_BODY))[0].record_id == "123"

    def test_published_v2_example(self):
        verify_hubspot_legacy(SECRET, "v2", "GET", "https://www.example.com/webhook_uri", b"", V2_HASH)
        check(
            "mismatch",
            verify_hubspot_legacy,
            SECRET,
            "v2",
            "POST",
            "https://www.example.com/webhook_uri",
            b"",
            V2_HASH,
        )

    def test_missing_and_unknown_version(self):
        check("missing_signature", verify_hubspot_legacy, SECRET, "v1", "POST", URI, V1_BODY, None)
        check("unsupported_version", verify_hubspot_legacy, SECRET, "v9", "POST", URI, V1_BODY, V1_HASH)
        check("not_configured", verify_hubspot_legacy, "", "v1", "POST", URI, V1_BODY, V1_HASH)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TestBasicAuth:
    def test_valid(self):
        verify_basic_auth(basic("pipedrive", "s3cr:et"), "pipedrive", "s3cr:et")
        verify_basic_auth("basic " + basic("pipedrive", "pw")[6:], "pipedrive", "pw")

    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            (None, "missing_auth"),
            ("", "missing_auth"),
            ("Bearer abc", "bad_auth_header"),
            ("Basic", "bad_auth_header"),
            ("Basic !!!", "bad_auth_header"),
            ("Basic " + base64.b64encode(b"nocolon").decode(), "bad_auth_header"),
            (basic("pipedrive", "wrong"), "mismatch"),
            (basic("someone", "pw"), "mismatch"),
            (basic("pipedrive", ""), "mismatch"),
        ],
    )
    def test_refused(self, header, reason):
        check(reason, verify_basic_auth, header, "pipedrive", "pw")

    def test_not_configured(self):
        check("not_configured", verify_basic_auth, basic("", ""), "", "")


class TestSharedToken:
    def test_valid(self):
        verify_shared_token("tok-123", "tok-123")
        verify_shared_token("Bearer tok-123", "tok-123")
        verify_shared_token("  tok-123 ", "tok-123")

    @pytest.mark.parametrize(
        ("header", "reason"),
        [(None, "missing_token"), ("", "missing_token"), ("tok-124", "mismatch"), ("Bearer ", "mismatch")],
    )
    def test_refused(self, header, reason):
        check(reason, verify_shared_token, header, "tok-123")

    def test_not_configured(self):
        check("not_configured", verify_shared_token, "", "")
