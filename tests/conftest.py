"""Shared fixtures. The broker: CRM_GUARD_TEST_BOOTSTRAP (set by .ci/run to Apache Kafka started
from deploy/kafka) or, for the fast local loop, an embedded tansu broker started here."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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


@pytest.fixture
def kafka_sasl_bootstrap(kafka_bootstrap: str, kafka_kind: str) -> str:
    """The same Apache Kafka's SASL listener (deploy/kafka/kafka.sh: PORT+2, PLAIN and SCRAM-SHA-512,
    user crm-guard / crm-guard-secret), or CRM_GUARD_TEST_SASL_BOOTSTRAP. tansu has no SASL."""
    given = os.environ.get("CRM_GUARD_TEST_SASL_BOOTSTRAP")
    if given:
        return given
    if kafka_kind != "apache":
        pytest.skip("SASL needs Apache Kafka (make test starts it); tansu has no SASL")
    host, _, port = kafka_bootstrap.split(",")[0].rpartition(":")
    return f"{host}:{int(port) + 2}"


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topic and group names, so tests never share broker state."""
    return uuid.uuid4().hex[:10]
