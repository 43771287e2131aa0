"""Webhook authentication, as pure functions the HTTP receiver calls before accepting a delivery.

* HubSpot v3 (`X-HubSpot-Signature-v3` + `X-HubSpot-Request-Timestamp`): base64 of
  HMAC-SHA256(client secret, method + URI + raw body + timestamp), where the URI has the
  characters of HubSpot's table URL-decoded (%3A : %2F / %3F ? %40 @ %21 ! %24 $ %27 ' %28 (
  %29 ) %2A * %2C , %3B ;) and a timestamp older than 5 minutes is rejected.
* HubSpot v1/v2 (`X-HubSpot-Signature` with `X-HubSpot-Signature-Version`): hex SHA-256 of
  secret + body (v1) or secret + method + URI + body (v2). No timestamp, so replayable: prefer v3.
* Pipedrive: HTTP Basic auth with the webhook's http_auth_user / http_auth_password.
* Salesforce: CDC has no push webhook; a bridge (Pub/Sub or CometD client) forwards events with
  a shared token header.

Every check raises SignatureError(reason) or returns None, compares in constant time
(hmac.compare_digest) and never puts a secret or a signature in its message. Reasons:
`missing_signature`, `missing_timestamp`, `bad_timestamp`, `stale`, `mismatch`, `missing_auth`,
`bad_auth_header`, `missing_token`, `not_configured`, `unsupported_version`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping

HUBSPOT_MAX_AGE_MS = 300_000

# HubSpot's "decode these URL-encoded characters in the request URI" table (v3 validation).
_HUBSPOT_URI_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_HUBSPOT_ESCAPE = re.compile("|".join(_HUBSPOT_URI_DECODE), re.IGNORECASE)


class SignatureError(ValueError):
    """A delivery that must be refused (HTTP 401). `reason` is a short slug for metrics."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or reason)


def hubspot_v3_uri(uri: str) -> str:
    """The request URI as HubSpot signs it: the characters of its table URL-decoded."""
    return _HUBSPOT_ESCAPE.sub(lambda m: _HUBSPOT_URI_DECODE[m.group(0).upper()], uri)


def hubspot_v3_signature(client_secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The X-HubSpot-Signature-v3 value HubSpot would send for this request."""
    message = method.upper().encode() + hubspot_v3_uri(uri).encode() + body + timestamp.encode()
    digest = hmac.new(client_secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_hubspot_v3(
    client_secret: str,
    method: str,
    uri: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now_ms: int,
    max_age_ms: int = HUBSPOT_MAX_AGE_MS,
) -> None:
    """Check a v3 signature; the timestamp must be within `max_age_ms` of `now_ms` (either side)."""
    if not client_secret:
        raise SignatureError("not_configured", "no HubSpot client secret configured")
    if not signature or not signature.strip():
        raise SignatureError("missing_signature", "no X-HubSpot-Signature-v3 header")
    if timestamp is None or not str(timestamp).strip():
        raise SignatureError("missing_timestamp", "no X-HubSpot-Request-Timestamp header")
    stamp = str(timestamp).strip()
    if not stamp.isdigit():
        raise SignatureError("bad_timestamp", "X-HubSpot-Request-Timestamp is not epoch milliseconds")
    if abs(now_ms - int(stamp)) > max_age_ms:
        raise SignatureError("stale", "X-HubSpot-Request-Timestamp is more than 5 minutes away")
    given = signature.strip()
    if given.lower().startswith("sha256="):
        given = given[len("sha256=") :]
    expected = hubspot_v3_signature(client_secret, method, uri, body, stamp)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignatureError("mismatch", "X-HubSpot-Signature-v3 does not match")


def hubspot_legacy_signature(client_secret: str, version: str, method: str, uri: str, body: bytes) -> str:
    """The X-HubSpot-Signature value for version v1 (secret + body) or v2 (secret + method + URI + body)."""
    ver = (version or "v1").strip().lower()
    if ver == "v1":
        source = client_secret.encode() + body
    elif ver == "v2":
        source = client_secret.encode() + method.upper().encode() + uri.encode() + body
    else:
        raise SignatureError("unsupported_version", "X-HubSpot-Signature-Version is not v1, v2 or v3")
    return hashlib.sha256(source).hexdigest()


def verify_hubspot_legacy(
    client_secret: str,
    version: str | None,
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
) -> None:
    """Check a v1/v2 X-HubSpot-Signature (hex SHA-256; no timestamp, so no replay protection)."""
    if not client_secret:
        raise SignatureError("not_configured", "no HubSpot client secret configured")
    if not signature or not signature.strip():
        raise SignatureError("missing_signature", "no X-HubSpot-Signature header")
    expected = hubspot_legacy_signature(client_secret, version or "v1", method, uri, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise SignatureError("mismatch", "X-HubSpot-Signature does not match")


def verify_hubspot_request(
    client_secret: str,
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    now_ms: int,
    max_age_ms: int = HUBSPOT_MAX_AGE_MS,
    allow_legacy: bool = False,
) -> None:
    """Check a HubSpot delivery from its headers: v3 when present, else v1/v2 only if allowed."""
    lower = {k.lower(): v for k, v in headers.items()}
    v3 = lower.get("x-hubspot-signature-v3")
    if v3 or not allow_legacy:
        verify_hubspot_v3(
            client_secret, method, uri, body, lower.get("x-hubspot-request-timestamp"), v3, now_ms, max_age_ms
        )
        return
    verify_hubspot_legacy(
        client_secret,
        lower.get("x-hubspot-signature-version"),
        method,
        uri,
        body,
        lower.get("x-hubspot-signature"),
    )


def verify_basic_auth(header: str | None, user: str, password: str) -> None:
    """Check an `Authorization: Basic ...` header against the Pipedrive webhook's http_auth user/password."""
    if not user or not password:
        raise SignatureError("not_configured", "no webhook user/password configured")
    if not header or not header.strip():
        raise SignatureError("missing_auth", "no Authorization header")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise SignatureError("bad_auth_header", "Authorization is not Basic")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("bad_auth_header", "Authorization Basic value is not base64") from None
    given_user, sep, given_password = decoded.partition(b":")
    if not sep:
        raise SignatureError("bad_auth_header", "Authorization Basic value has no user:password")
    user_ok = hmac.compare_digest(given_user, user.encode())
    password_ok = hmac.compare_digest(given_password, password.encode())
    if not (user_ok and password_ok):
        raise SignatureError("mismatch", "webhook user or password does not match")


def verify_shared_token(header_value: str | None, expected: str) -> None:
    """Check the token a Salesforce CDC bridge sends (a bare token or `Bearer <token>`)."""
    if not expected:
        raise SignatureError("not_configured", "no shared token configured")
    if header_value is None or not header_value.strip():
        raise SignatureError("missing_token", "no token header")
    given = header_value.strip()
    if given[:7].lower() == "bearer " and not expected.lower().startswith("bearer "):
        given = given[7:].strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise SignatureError("mismatch", "token does not match")
