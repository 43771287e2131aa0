"""The guard on a Kafka that asks for SASL, as Confluent Cloud (PLAIN) and MSK (SCRAM-SHA-512) do:
`crm-guard run` started with the security settings in its environment connects every client
(Faust's, the stages', admin, delivery, review) through the SASL listener of the test broker and
turns a HubSpot delivery into an alert; with a wrong password it says so and exits 1."""

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
from tests.integration.helpers_stream import POLICY_YAML, T0, hubspot_change, read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "crm-guard", "crm-guard-secret"  # noqa: S105 - the test broker's account (deploy/kafka/kafka.sh)


def guard_env(tmp_path: Path, bootstrap: str, unique: str, mechanism: str, password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_GUARD_")}
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    env.update({
        "CRM_GUARD_BOOTSTRAP_SERVERS": bootstrap, "CRM_GUARD_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CRM_GUARD_SASL_MECHANISM": mechanism, "CRM_GUARD_SASL_USERNAME": USER, "CRM_GUARD_SASL_PASSWORD": password,
        "CRM_GUARD_POLICY_FILE": str(policy), "CRM_GUARD_STATE_DIR": str(tmp_path / "state"),
        "CRM_GUARD_GROUP_ID": f"crm-guard-{unique}", "CRM_GUARD_PARTITIONS": "2",
    })
    for name, value in Topics().model_dump().items():
        env[f"CRM_GUARD_TOPIC_{name.upper()}"] = f"{value}.{unique}"
    return env


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_the_guard_runs_over_sasl_end_to_end(
    kafka_bootstrap: str, kafka_sasl_bootstrap: str, unique: str, tmp_path: Path, mechanism: str,
) -> None:
    env = guard_env(tmp_path, kafka_sasl_bootstrap, unique, mechanism, PASSWORD)
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
            records = await read_topic(kafka_bootstrap, f"guard.alerts.{unique}")
            return [orjson.loads(r.value) for r in records]

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


def test_a_wrong_password_is_a_message_and_exit_1(kafka_sasl_bootstrap: str, unique: str, tmp_path: Path) -> None:
    env = guard_env(tmp_path, kafka_sasl_bootstrap, unique, "SCRAM-SHA-512", "not-the-password")
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "run", "--port", "0"], env=env, cwd=str(ROOT), capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"crm-guard run: cannot reach Kafka at {kafka_sasl_bootstrap}" in done.stderr
    assert "sasl_*" in done.stderr and "Traceback" not in done.stderr
