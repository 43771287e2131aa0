"""The webhook receiver over HTTP, in front of a running guard on a real broker.

Each vendor's authentication is checked the way the vendor sends it (HubSpot v3 signature computed
here from HubSpot's documented steps, Pipedrive basic auth, the Salesforce bridge token); refused
deliveries get a 4xx with a reason and never reach a raw topic; an accepted HubSpot delivery flows
through the guard to an alert.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from app.runtime.assembly import build_runtime
from app.web import receiver
from app.web.keys import RUNTIME, SETTINGS
from app.web.tls import server_ssl_context
from tests.integration.helpers_stream import (
    T0,
    fresh_settings,
    guard_policy,
    hubspot_change,
    read_topic,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vendors"
SECRET = "hubspot-app-secret"  # noqa: S105 - test credentials
PD_USER, PD_PASSWORD = "crm-guard", "pd-pass"
SF_TOKEN = "sf-bridge-token"  # noqa: S105


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hubspot_headers(url: str, body: bytes, secret: str = SECRET, at_ms: int | None = None) -> dict[str, str]:
    """HubSpot's documented v3 steps: method + URI + body + timestamp, HMAC-SHA256, base64."""
    timestamp = str(int(time.time() * 1000) if at_ms is None else at_ms)
    source = f"POST{url}{body.decode()}{timestamp}".encode()
    signature = base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()
    return {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp,
            "Content-Type": "application/json"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_each_vendor_is_authenticated_refusals_say_why_and_accepted_deliveries_reach_the_guard(
    kafka_bootstrap: str, unique: str, kafka_kind: str,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = fresh_settings(
        kafka_bootstrap, unique, web_port=port, public_url=base, hubspot_client_secret=SECRET,
        pipedrive_user=PD_USER, pipedrive_password=PD_PASSWORD, salesforce_token=SF_TOKEN, max_payload_bytes=50_000,
        max_delivery_bytes=60_000,
    )
    runtime, _ = build_runtime(settings, guard_policy(), idempotent=kafka_kind == "apache")
    await runtime.start()
    await asyncio.wait_for(runtime.ready.wait(), 60)
    app = web.Application(client_max_size=settings.max_payload_bytes + 1024)
    app[SETTINGS], app[RUNTIME] = settings, runtime
    receiver.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hs_url, pd_url, sf_url = f"{base}/webhooks/hubspot", f"{base}/webhooks/pipedrive", f"{base}/webhooks/salesforce"
    try:
        async with aiohttp.ClientSession() as session:
            # an enrichment agent writing a field its policy denies, as HubSpot delivers it
            good = orjson.dumps([hubspot_change(7001, 5001, "utm_source", "enriched", T0)])
            assert await post(session, hs_url, good, hubspot_headers(hs_url, good)) == (200, {"status": "accepted"})

            forged = orjson.dumps([hubspot_change(7002, 5002, "utm_source", "forged", T0)])
            status, answer = await post(session, hs_url, forged, hubspot_headers(hs_url, forged, secret="guessed"))
            assert (status, answer["error"]) == (401, "mismatch")
            stale_at = int(time.time() * 1000) - 10 * 60_000
            status, answer = await post(session, hs_url, forged, hubspot_headers(hs_url, forged, at_ms=stale_at))
            assert (status, answer["error"]) == (401, "stale")
            status, answer = await post(session, hs_url, forged, {"Content-Type": "application/json"})
            assert (status, answer["error"]) == (401, "missing_signature")
            not_json = b"[{'eventId': 1"
            status, answer = await post(session, hs_url, not_json, hubspot_headers(hs_url, not_json))
            assert (status, answer["error"]) == (400, "not_json")
            huge = orjson.dumps([hubspot_change(7003 + i, 6000 + i, "city", "x" * 100, T0) for i in range(200)])
            status, answer = await post(session, hs_url, huge, hubspot_headers(hs_url, huge))
            assert (status, answer["error"]) == (413, "too_large")

            pd_body = json.dumps(json.loads((FIXTURES / "pipedrive_v2_examples.json").read_text())[0]).encode()
            status, answer = await post(session, pd_url, pd_body, basic(PD_USER, "wrong"))
            assert (status, answer["error"]) == (401, "mismatch")
            status, answer = await post(session, pd_url, pd_body, {})
            assert (status, answer["error"]) == (401, "missing_auth")
            assert (await post(session, pd_url, pd_body, basic(PD_USER, PD_PASSWORD)))[0] == 200

            sf_body = (FIXTURES / "salesforce_cometd_account_update.json").read_bytes()
            status, answer = await post(session, sf_url, sf_body, {"X-CRM-Guard-Token": "nope"})
            assert (status, answer["error"]) == (401, "mismatch")
            assert (await post(session, sf_url, sf_body, {"X-CRM-Guard-Token": SF_TOKEN}))[0] == 200

        # only what was accepted reached the raw topics, byte for byte, stamped with its arrival
        for topic, body in ((settings.topics.raw_hubspot, good), (settings.topics.raw_pipedrive, pd_body),
                            (settings.topics.raw_salesforce, sf_body)):
            records = await read_topic(kafka_bootstrap, topic)
            assert [r.value for r in records] == [body]
            assert dict(records[0].headers).get("received_at")

        async def alert() -> list[dict[str, Any]]:
            values = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, settings.topics.alerts)]
            return [a for a in values if a["kind"] == "protected_field"]

        found = await wait_for(alert, 60)
        assert found and found[0]["agent"] == "enrich-bot"
    finally:
        await runner.cleanup()
        await runtime.stop()


async def test_a_hubspot_batch_over_the_message_limit_is_split_one_notification_per_message(
    kafka_bootstrap: str, unique: str, kafka_kind: str,
) -> None:
    """100 notifications with long text values pass one raw message's limit (Kafka's default is
    1 MB): the receiver takes the signed batch and produces each notification on its own, so the
    delivery is neither refused (HubSpot would retry it for a day, then drop it) nor lost."""
    from app.adapters import normalize_with_errors
    from app.runtime.kafka_client import make_producer

    settings = fresh_settings(kafka_bootstrap, unique, hubspot_client_secret=SECRET, max_payload_bytes=20_000)
    producer = make_producer(settings, idempotent=kafka_kind == "apache")
    await producer.start()
    runner, port = await serve_receiver(settings, producer)
    signed_url = settings.public_url.rstrip("/") + "/webhooks/hubspot"  # what HubSpot signs: the public URL
    url = f"http://127.0.0.1:{port}/webhooks/hubspot"
    try:
        batch = [hubspot_change(8000 + i, 9000 + i, "notes_summary", f"{i} " + "n" * 1500, T0 + i)
                 for i in range(100)]
        body = orjson.dumps(batch)
        assert len(body) > settings.max_payload_bytes
        one_too_big = orjson.dumps([hubspot_change(8200, 9200, "notes_summary", "x" * 25_000, T0)])
        async with aiohttp.ClientSession() as session:
            status, answer = await post(session, url, body, hubspot_headers(signed_url, body))
            assert (status, answer) == (200, {"status": "accepted"})
            status, answer = await post(session, url, one_too_big, hubspot_headers(signed_url, one_too_big))
            assert (status, answer["error"]) == (413, "too_large") and "element 0" in answer["message"]
        records = await read_topic(kafka_bootstrap, settings.topics.raw_hubspot)
        assert len(records) == 100 and all(len(r.value) <= settings.max_payload_bytes for r in records)
        assert {dict(r.headers)["split"] for r in records} == {f"{i}/100".encode() for i in range(100)}
        ids = set()
        for record in records:
            events, errors = normalize_with_errors(orjson.loads(record.value), "auto")
            assert not errors and len(events) == 1
            ids.add(events[0].source_event_id)
        assert ids == {str(8000 + i) for i in range(100)}
    finally:
        await runner.cleanup()
        await producer.stop()


async def serve_receiver(settings: Any, producer: Any = None) -> tuple[web.AppRunner, int]:
    """The receiver's routes alone on a free port (HTTPS when the settings name a certificate, as
    the worker's web server does), producing with `producer`: all it reads of the guard's runtime."""
    app = web.Application()
    app[SETTINGS], app[RUNTIME] = settings, (None if producer is None else SimpleNamespace(producer=producer))
    receiver.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ssl_context(settings)).start()
    return runner, port


async def test_a_vendor_without_credentials_is_refused_not_accepted(kafka_bootstrap: str, unique: str) -> None:
    runner, port = await serve_receiver(fresh_settings(kafka_bootstrap, unique))
    try:
        async with aiohttp.ClientSession() as session:
            for vendor in ("hubspot", "pipedrive", "salesforce"):
                status, answer = await post(session, f"http://127.0.0.1:{port}/webhooks/{vendor}", b"[]", {})
                assert (status, answer["error"]) == (503, "not_configured")
    finally:
        await runner.cleanup()


@pytest.mark.timeout(60)  # without the receiver's limit the request hangs: this fails it
async def test_a_delivery_the_broker_does_not_acknowledge_gets_503_in_bounded_time(
    kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard's producer is gone (a real aiokafka producer, stopped: its sends never complete):
    the vendor gets 503 broker_unavailable within the receiver's limit, not a hung connection
    or a 500, and retries later."""
    from aiokafka import AIOKafkaProducer

    monkeypatch.setattr(receiver, "ACK_TIMEOUT_S", 1.0)
    settings = fresh_settings(kafka_bootstrap, unique, salesforce_token=SF_TOKEN)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await producer.stop()
    runner, port = await serve_receiver(settings, producer)
    try:
        async with aiohttp.ClientSession() as session:
            body = (FIXTURES / "salesforce_cometd_account_update.json").read_bytes()
            status, answer = await post(session, f"http://127.0.0.1:{port}/webhooks/salesforce", body,
                                        {"X-CRM-Guard-Token": SF_TOKEN})
            assert (status, answer["error"]) == (503, "broker_unavailable")
    finally:
        await runner.cleanup()


def make_certificates(target: Path) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made by the
    same script that makes the test broker's (deploy/kafka/tls.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("broker_tls", Path(__file__).resolve().parents[2] / "deploy/kafka/tls.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(target)
    return target


async def test_https_with_client_certificates_for_the_salesforce_bridge(
    kafka_bootstrap: str, unique: str, tmp_path: Path,
) -> None:
    """With web TLS and a client CA, the Salesforce route accepts the bridge's client certificate
    in place of the token; a caller without one is refused with a reason, a certificate from
    another CA fails the handshake, and callers that present none (HubSpot) still connect."""
    import ssl

    from aiokafka import AIOKafkaProducer

    tls, stranger = make_certificates(tmp_path / "tls"), make_certificates(tmp_path / "other-ca")
    settings = fresh_settings(kafka_bootstrap, unique, web_tls_certfile=str(tls / "server.pem"),
                              web_tls_client_cafile=str(tls / "ca.pem"), hubspot_client_secret=SECRET)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    runner, port = await serve_receiver(settings, producer)

    def client_tls(cert_dir: Path | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        if cert_dir is not None:
            context.load_cert_chain(str(cert_dir / "client.pem"), str(cert_dir / "client-key.pem"))
        return context

    sf_url, hs_url = f"https://127.0.0.1:{port}/webhooks/salesforce", f"https://127.0.0.1:{port}/webhooks/hubspot"
    sf_body = (FIXTURES / "salesforce_cometd_account_update.json").read_bytes()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(sf_url, data=sf_body, ssl=client_tls(tls)) as answer:
                assert answer.status == 200, await answer.text()
            async with session.post(sf_url, data=sf_body, ssl=client_tls(None)) as answer:
                assert answer.status == 401 and (await answer.json())["error"] == "missing_client_certificate"
            with pytest.raises(aiohttp.ClientError):  # the guard's CA did not sign it: no TLS session at all
                async with session.post(sf_url, data=sf_body, ssl=client_tls(stranger)):
                    pass
            forged = orjson.dumps([hubspot_change(7002, 5002, "utm_source", "forged", T0)])
            async with session.post(hs_url, data=forged, ssl=client_tls(None),
                                    headers=hubspot_headers(hs_url, forged, secret="guessed")) as answer:
                assert answer.status == 401 and (await answer.json())["error"] == "mismatch"
        records = await read_topic(kafka_bootstrap, settings.topics.raw_salesforce)
        assert [r.value for r in records] == [sf_body]
    finally:
        await runner.cleanup()
        await producer.stop()
