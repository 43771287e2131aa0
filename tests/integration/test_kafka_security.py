"""The guard on a Kafka that asks for credentials, as managed ones do: SASL PLAIN (Confluent Cloud),
SCRAM-SHA-512 (MSK), either over TLS, and TLS with client certificates. `crm-guard run`, started
with the security settings in its environment, connects every client (Faust's, the stages',
admin, delivery, review) through the test broker's secured listener and turns a HubSpot delivery
into an alert; with a wrong password, or without the client certificate, it says so and exits 1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.config import Topics
from tests.conftest import SecuredListeners
from tests.integration.helpers_stream import POLICY_YAML, T0, hubspot_change, read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "crm-guard", "crm-guard-secret"  # noqa: S105 - the test broker's account (deploy/kafka/kafka.sh)


def security_env(listeners: SecuredListeners, mode: str, password: str = PASSWORD,
                 client_cert: bool = True) -> dict[str, str]:
    """CRM_GUARD_* security settings for one way of connecting: `protocol/mechanism` or `mtls`."""
    tls = listeners.tls_dir
    if mode == "mtls":
        env = {"CRM_GUARD_BOOTSTRAP_SERVERS": listeners.mtls, "CRM_GUARD_SECURITY_PROTOCOL": "SSL",
               "CRM_GUARD_SSL_CAFILE": str(tls / "ca.pem")}
        if client_cert:
            env |= {"CRM_GUARD_SSL_CERTFILE": str(tls / "client.pem"), "CRM_GUARD_SSL_KEYFILE": str(tls / "client-key.pem")}
        return env
    protocol, mechanism = mode.split("/")
    env = {"CRM_GUARD_BOOTSTRAP_SERVERS": listeners.sasl if protocol == "SASL_PLAINTEXT" else listeners.sasl_ssl,
           "CRM_GUARD_SECURITY_PROTOCOL": protocol, "CRM_GUARD_SASL_MECHANISM": mechanism,
           "CRM_GUARD_SASL_USERNAME": USER, "CRM_GUARD_SASL_PASSWORD": password}
    if protocol == "SASL_SSL":
        env["CRM_GUARD_SSL_CAFILE"] = str(tls / "ca.pem")
    return env


def guard_env(tmp_path: Path, unique: str, security: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_GUARD_")}
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    env.update({"CRM_GUARD_POLICY_FILE": str(policy), "CRM_GUARD_STATE_DIR": str(tmp_path / "state"),
                "CRM_GUARD_GROUP_ID": f"crm-guard-{unique}", "CRM_GUARD_PARTITIONS": "2", **security})
    for name, value in Topics().model_dump().items():
        env[f"CRM_GUARD_TOPIC_{name.upper()}"] = f"{value}.{unique}"
    return env


# each protocol and each mechanism once (a worker start costs ~8 s)
@pytest.mark.parametrize("mode", ["SASL_PLAINTEXT/PLAIN", "SASL_SSL/SCRAM-SHA-512", "mtls"])
async def test_the_guard_runs_end_to_end_on_a_secured_listener(
    kafka_bootstrap: str, kafka_secured: SecuredListeners, unique: str, tmp_path: Path, mode: str,
) -> None:
    env = guard_env(tmp_path, unique, security_env(kafka_secured, mode))
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app.cli", "run", "--port", "0"], env=env, cwd=str(ROOT),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:  # an enrichment agent writing a field its policy denies, as HubSpot delivers it
            delivery = orjson.dumps([hubspot_change(9001, 5001, "utm_source", "enriched", T0)])
            await producer.send_and_wait(f"crm.raw.hubspot.{unique}", delivery)
        finally:
            await producer.stop()

        async def alerts() -> list[dict[str, Any]]:
            if worker.poll() is not None:
                raise AssertionError(f"the worker exited: {worker.communicate()[1][-3000:]}")
            return [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, f"guard.alerts.{unique}")]

        found = await wait_for(alerts, 120, interval=1.0)
        assert found and found[0]["kind"] == "protected_field" and found[0]["agent"] == "enrich-bot"
    finally:
        worker.terminate()
        try:
            _, err = await asyncio.to_thread(worker.communicate, timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            _, err = worker.communicate()
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.parametrize("case", ["wrong_password", "no_client_certificate"])
def test_refused_credentials_are_a_message_and_exit_1(
    kafka_secured: SecuredListeners, unique: str, tmp_path: Path, case: str,
) -> None:
    security = (security_env(kafka_secured, "SASL_SSL/SCRAM-SHA-512", password="not-the-password")
                if case == "wrong_password" else security_env(kafka_secured, "mtls", client_cert=False))
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "run", "--port", "0"], env=guard_env(tmp_path, unique, security),
        cwd=str(ROOT), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"crm-guard run: cannot reach Kafka at {security['CRM_GUARD_BOOTSTRAP_SERVERS']}" in done.stderr
    assert "Traceback" not in done.stderr
