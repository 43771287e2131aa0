"""Shared fixtures. The broker: CRM_GUARD_TEST_BOOTSTRAP (set by .ci/run to Apache Kafka started
from deploy/kafka) or, for the fast local loop, an embedded tansu broker started here."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real broker for the whole session."""
    given = os.environ.get("CRM_GUARD_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    from app.broker.embedded import start_embedded

    broker = start_embedded(log_path=str(ROOT / ".pytest-tansu.log"))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka_kind() -> str:
    """'apache' when the suite runs on Apache Kafka, else 'tansu' (which lacks idempotent producers)."""
    return os.environ.get("CRM_GUARD_TEST_BROKER_KIND", "tansu")


@dataclass(frozen=True)
class SecuredListeners:
    """The test broker's listeners that ask for credentials (deploy/kafka/kafka.sh): SASL_PLAINTEXT,
    SASL_SSL (PLAIN and SCRAM-SHA-512, user crm-guard / crm-guard-secret), SSL requiring a client
    certificate, and the directory of its TLS files (ca.pem, client.pem, client-key.pem)."""

    sasl: str
    sasl_ssl: str
    mtls: str
    tls_dir: Path


@pytest.fixture
def kafka_secured(kafka_bootstrap: str, kafka_kind: str) -> SecuredListeners:
    """Apache Kafka's secured listeners, at PORT+2, +3 and +4 of the plaintext one. tansu has none."""
    if kafka_kind != "apache":
        pytest.skip("SASL and TLS need Apache Kafka (make test starts it); tansu has neither")
    host, _, port = kafka_bootstrap.split(",")[0].rpartition(":")
    base = int(port)
    tls_dir = Path(os.environ.get("KAFKA_WORK", f"/tmp/crm-guard-kafka-{base}")) / "tls"
    if not (tls_dir / "ca.pem").exists():
        pytest.fail(f"the test broker has no TLS files in {tls_dir} (deploy/kafka/tls.py failed at its start?)")
    return SecuredListeners(f"{host}:{base + 2}", f"{host}:{base + 3}", f"{host}:{base + 4}", tls_dir)


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topic and group names, so tests never share broker state."""
    return uuid.uuid4().hex[:10]
