"""Connection settings shared by every Kafka client the guard creates (SASL and TLS)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.helpers import create_ssl_context

from app.config import Settings


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer/Producer/AdminClient from the settings."""
    kwargs: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    ssl_context = _ssl_context(settings)
    if ssl_context is not None:
        kwargs["ssl_context"] = ssl_context
    return kwargs


def group_kwargs(settings: Settings) -> dict[str, Any]:
    """Consumer-group timing for AIOKafkaConsumer (consumers with a group_id only)."""
    ms = settings.session_timeout_ms
    return {"session_timeout_ms": ms, "rebalance_timeout_ms": ms, "heartbeat_interval_ms": max(1000, ms // 3)}


def faust_group_timing(settings: Settings) -> dict[str, float]:
    """The same timing as faust.App settings (seconds)."""
    seconds = settings.session_timeout_ms / 1000
    return {"broker_session_timeout": seconds, "broker_rebalance_timeout": seconds,
            "broker_heartbeat_interval": max(1.0, seconds / 3)}


def _ssl_context(settings: Settings) -> Any:
    """The TLS context of SSL and SASL_SSL connections, else None."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return create_ssl_context(cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile)


def faust_credentials(settings: Settings) -> Any:
    """The same SASL/TLS settings as `broker_credentials` for faust.App (its own clients connect too)."""
    import faust  # the client module stays importable without Faust

    ssl_context = _ssl_context(settings)
    if settings.sasl_mechanism:
        password = settings.sasl_password.get_secret_value() if settings.sasl_password is not None else None
        return faust.SASLCredentials(username=settings.sasl_username, password=password,
                                     mechanism=settings.sasl_mechanism, ssl_context=ssl_context)
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


def make_producer(settings: Settings, idempotent: bool) -> AIOKafkaProducer:
    """acks=all always; idempotence where the broker offers it (Apache Kafka, not tansu)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=5,
        max_batch_size=512 * 1024,
        compression_type=None,
        **client_kwargs(settings),
    )


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions (empty when the topic does not exist).

    `consumer.topics()` fills a separate metadata object, not the one `partitions_for_topic`
    reads (on Apache Kafka that one only tracks subscribed topics), so ask for all metadata and
    read the partitions from it.
    """
    metadata = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - no public equivalent
    parts = metadata.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]
