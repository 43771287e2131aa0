"""The webhook receiver: vendor deliveries in, raw topics out, after authentication.

POST /webhooks/hubspot     X-HubSpot-Signature-v3 + X-HubSpot-Request-Timestamp (app secret),
                           stale timestamps (> 5 min) rejected
POST /webhooks/pipedrive   HTTP basic auth (the webhook's http_auth_user / http_auth_password)
POST /webhooks/salesforce  `X-CRM-Guard-Token: <token>` from the CDC bridge, or a client certificate
                           (mTLS: web_tls_client_cafile, app/web/tls.py)

The answer comes after the broker acknowledged the produce: 200 means the payload is durable.
401 for a missing or bad credential, 400 for a body that is not JSON, 413 for a body over
`max_delivery_bytes` (a batch over `max_payload_bytes` is split into one raw message per element),
503 when the receiver for that vendor is not configured (never accept unauthenticated writes),
and 503 `broker_unavailable` when the broker did not acknowledge within ACK_TIMEOUT_S: the vendor
retries later (HubSpot and Pipedrive retry 5xx answers), and if the first produce landed after
all, the redelivery is the same event id, which the record stage skips.
The payload is stored as received; parsing into canonical events happens in the ingest stage,
so a payload our adapters reject still lands in the dead-letter topic with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from app.adapters.signatures import SignatureError, verify_basic_auth, verify_hubspot_v3, verify_shared_token
from app.web.keys import RUNTIME, SETTINGS
from app.web.tls import client_certificate_subject

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 4.0
"""How long a delivery waits for the broker's acknowledgement. HubSpot gives a webhook call 5 s
before it counts it failed; a broker that is down must not hold vendors' connections for the
producer's own 40 s request timeout."""


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": reason, "message": message}, status=status)


async def _read_json_body(request: web.Request) -> bytes | web.Response:
    limit = request.app[SETTINGS].max_delivery_bytes
    if request.content_length is not None and request.content_length > limit:
        return _error(413, "too_large", f"body over {limit} bytes")
    body = await request.read()
    if len(body) > limit:
        return _error(413, "too_large", f"body over {limit} bytes")
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "not_json", "the body is not JSON")
    return body


def _raw_messages(body: bytes, max_bytes: int) -> list[bytes] | str:
    """What goes to the raw topic for one delivery: the body as received, or, when it is larger
    than one raw message may be (`max_payload_bytes`, within Kafka's 1 MB default) and is a JSON
    array (a HubSpot batch of up to 100 notifications with long text values can pass 1 MB), one
    message per element. A reason string when it cannot be split to size."""
    if len(body) <= max_bytes:
        return [body]
    batch = orjson.loads(body)
    if not isinstance(batch, list):
        return f"body over {max_bytes} bytes and not a batch that can be split"
    parts = [orjson.dumps(element) for element in batch]
    for index, part in enumerate(parts):
        if len(part) > max_bytes:
            return f"element {index} alone is over {max_bytes} bytes"
    return parts


async def _produce(request: web.Request, vendor: str, body: bytes) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime is None or runtime.producer is None:
        return _error(503, "starting", "the guard is starting; retry")
    settings = request.app[SETTINGS]
    topic = settings.topics.raw(vendor)
    messages = _raw_messages(body, settings.max_payload_bytes)
    if isinstance(messages, str):
        return _error(413, "too_large", messages)
    headers = [("received_at", str(int(time.time() * 1000)).encode())]
    try:
        async with asyncio.timeout(ACK_TIMEOUT_S):
            if len(messages) == 1:
                await runtime.producer.send_and_wait(topic, value=messages[0], headers=headers)
            else:  # every part acknowledged, or 503 and the vendor sends it all again (same event ids)
                total = len(messages)
                sent = []
                for index, message in enumerate(messages):
                    split = ("split", f"{index}/{total}".encode())
                    sent.append(await runtime.producer.send(topic, value=message, headers=[*headers, split]))
                await asyncio.gather(*sent)
    except (TimeoutError, KafkaError) as exc:
        log.warning("%s delivery not acknowledged by the broker: %r", vendor, exc)
        return _error(503, "broker_unavailable", f"the broker did not acknowledge the delivery ({type(exc).__name__}); "
                      "retry later")
    return web.json_response({"status": "accepted"})


async def hubspot(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if settings.hubspot_client_secret is None:
        return _error(503, "not_configured", "set CRM_GUARD_HUBSPOT_CLIENT_SECRET to receive HubSpot webhooks")
    body = await _read_json_body(request)
    if isinstance(body, web.Response):
        return body
    uri = settings.public_url.rstrip("/") + request.raw_path  # as sent: HubSpot signs a partly-encoded URI
    try:
        verify_hubspot_v3(
            settings.hubspot_client_secret.get_secret_value(), request.method, uri, body,
            request.headers.get("X-HubSpot-Request-Timestamp", ""),
            request.headers.get("X-HubSpot-Signature-v3", ""), int(time.time() * 1000),
        )
    except SignatureError as exc:
        return _error(401, exc.reason, str(exc))
    return await _produce(request, "hubspot", body)


async def pipedrive(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if settings.pipedrive_user is None or settings.pipedrive_password is None:
        return _error(503, "not_configured", "set CRM_GUARD_PIPEDRIVE_USER and _PASSWORD to receive Pipedrive webhooks")
    try:
        verify_basic_auth(request.headers.get("Authorization"), settings.pipedrive_user,
                          settings.pipedrive_password.get_secret_value())
    except SignatureError as exc:
        return _error(401, exc.reason, str(exc))
    body = await _read_json_body(request)
    if isinstance(body, web.Response):
        return body
    return await _produce(request, "pipedrive", body)


async def salesforce(request: web.Request) -> web.Response:
    """The CDC bridge authenticates with the shared token, or with a client certificate signed by
    `web_tls_client_cafile` (mTLS) when the server speaks TLS itself; either is enough."""
    settings = request.app[SETTINGS]
    if settings.salesforce_token is None and not settings.web_tls_client_cafile:
        return _error(503, "not_configured", "set CRM_GUARD_SALESFORCE_TOKEN (or web TLS with a client CA) to receive "
                                             "Salesforce events")
    subject = client_certificate_subject(request)
    if subject is None:
        if settings.salesforce_token is None:
            return _error(401, "missing_client_certificate", "present a client certificate signed by the guard's "
                                                              "client CA")
        try:
            verify_shared_token(request.headers.get("X-CRM-Guard-Token"), settings.salesforce_token.get_secret_value())
        except SignatureError as exc:
            return _error(401, exc.reason, str(exc))
    else:  # who sent it, for the audit trail: the certificate stands in for the token
        log.info("salesforce delivery authenticated by client certificate %s", subject)
    body = await _read_json_body(request)
    if isinstance(body, web.Response):
        return body
    return await _produce(request, "salesforce", body)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/webhooks/hubspot", hubspot)
    app.router.add_post("/webhooks/pipedrive", pipedrive)
    app.router.add_post("/webhooks/salesforce", salesforce)
