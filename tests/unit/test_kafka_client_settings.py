"""SASL/TLS settings reach every Kafka client the guard makes: aiokafka's and Faust's own."""

from __future__ import annotations

import faust
from faust.types.auth import AuthProtocol, SASLMechanism

from app.config import Settings
from app.runtime.kafka_client import client_kwargs, faust_credentials


def sasl(protocol: str = "SASL_PLAINTEXT") -> Settings:
    return Settings(bootstrap_servers="kafka:9093", security_protocol=protocol, sasl_mechanism="SCRAM-SHA-512",
                    sasl_username="guard", sasl_password="s3cret")


def test_plaintext_needs_no_credentials() -> None:
    assert faust_credentials(Settings()) is None
    assert client_kwargs(Settings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_settings_go_to_aiokafka_and_faust_alike() -> None:
    kwargs = client_kwargs(sasl())
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "SCRAM-SHA-512", "guard", "s3cret")
    creds = faust_credentials(sasl())
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism, creds.protocol) == (
        "guard", "s3cret", SASLMechanism.SCRAM_SHA_512, AuthProtocol.SASL_PLAINTEXT)



def test_the_worker_faust_app_is_built_with_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.runtime.assembly import build_runtime
    from app.runtime.worker import build_faust_app
    from detectors.policy import Policy

    settings = sasl().with_overrides(state_dir=str(tmp_path))
    runtime, _ = build_runtime(settings, Policy(), idempotent=False)
    creds = build_faust_app(settings, runtime, None).conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials) and creds.username == "guard"


def test_sasl_over_tls_carries_a_tls_context() -> None:
    creds = faust_credentials(sasl("SASL_SSL"))
    assert creds.protocol is AuthProtocol.SASL_SSL and creds.ssl_context is not None
    assert client_kwargs(sasl("SASL_SSL"))["ssl_context"] is not None
