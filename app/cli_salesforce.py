"""`crm-guard salesforce subscribe`: Salesforce Change Data Capture into the guard's Kafka.

    CRM_GUARD_BOOTSTRAP_SERVERS=kafka:9092 CRM_GUARD_SALESFORCE_ACCESS_TOKEN=... \
        crm-guard salesforce subscribe --instance-url https://yourorg.my.salesforce.com \
        [--channel /data/ChangeEvents ...] [--replay-from new|all]

Runs until Ctrl-C / SIGTERM (one per org, beside the workers). Credentials come from the
environment or the settings file, never the command line: CRM_GUARD_SALESFORCE_ACCESS_TOKEN,
or CRM_GUARD_SALESFORCE_CLIENT_ID and _CLIENT_SECRET (client-credentials flow, renewed when
Salesforce refuses the token). Exit 0 when stopped, 2 on a user error (no Kafka configured, no
credentials, a token or a channel Salesforce refuses), 1 when Kafka cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from app.cli_types import port_number
from app.config import Settings, describe_validation_error, load_settings

log = logging.getLogger("crm_guard.salesforce")

REPLAY_CHOICES = {"new": -1, "all": -2}


class _UserError(Exception):
    pass


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(file=args.config)
    overrides: dict[str, Any] = {}
    if args.instance_url:
        overrides["salesforce_instance_url"] = args.instance_url
    if args.channel:
        overrides["salesforce_channels"] = args.channel
    if args.api_version:
        overrides["salesforce_api_version"] = args.api_version
    if overrides:
        try:
            settings = settings.with_overrides(**overrides)
        except ValidationError as exc:
            raise _UserError(describe_validation_error(exc)) from None
    if not settings.bootstrap_servers:
        raise _UserError(
            "set CRM_GUARD_BOOTSTRAP_SERVERS to the guard's Kafka: the subscriber writes "
            f"to its {settings.topics.raw_salesforce} topic (the embedded broker lives only "
            "inside `crm-guard run`)"
        )
    url = settings.salesforce_instance_url or ""
    if not url.startswith(("https://", "http://")):
        raise _UserError(
            "set --instance-url (or CRM_GUARD_SALESFORCE_INSTANCE_URL) to the org's URL, "
            "e.g. https://yourorg.my.salesforce.com"
        )
    return settings


def _tokens(settings: Settings) -> Any:
    from app.salesforce_cdc.client import TokenSource

    token = settings.salesforce_access_token.get_secret_value() if settings.salesforce_access_token else None
    secret = (
        settings.salesforce_client_secret.get_secret_value() if settings.salesforce_client_secret else None
    )
    try:
        return TokenSource(
            settings.salesforce_instance_url or "", token, settings.salesforce_client_id, secret
        )
    except ValueError:
        raise _UserError(
            "set CRM_GUARD_SALESFORCE_ACCESS_TOKEN, or CRM_GUARD_SALESFORCE_CLIENT_ID and "
            "CRM_GUARD_SALESFORCE_CLIENT_SECRET (not on the command line: ps shows it)"
        ) from None


async def _subscribe_async(
    settings: Settings, tokens: Any, replay_from: int, idempotent: bool, metrics_port: int | None
) -> int:
    import aiohttp
    from aiokafka import AIOKafkaConsumer
    from prometheus_client import start_http_server

    from app.runtime.kafka_client import client_kwargs, make_producer, topic_partitions
    from app.runtime.topics import ensure_topics
    from app.salesforce_cdc.client import CometdTransport
    from app.salesforce_cdc.metrics import SubscriberMetrics
    from app.salesforce_cdc.resume import resume_points
    from app.salesforce_cdc.subscriber import SalesforceSubscriber

    topic = settings.topics.raw_salesforce
    channels = list(settings.salesforce_channels)
    await ensure_topics(settings, client_kwargs(settings))
    log.info("reading resume points from %s", topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, **client_kwargs(settings)
    )
    await consumer.start()
    try:
        parts = [tp.partition for tp in await topic_partitions(consumer, topic)]
        resume = await resume_points(consumer, topic, parts, channels)
    finally:
        await consumer.stop()
    log.info("resume points: %s; starting the producer", resume)
    producer = make_producer(settings, idempotent)
    await producer.start()
    log.info("producer started")
    metrics = SubscriberMetrics()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.web_host, registry=metrics.registry)
        log.info("metrics on http://%s:%d/metrics", settings.web_host, metrics_port)
    subscriber = None
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            subscriber = SalesforceSubscriber(
                CometdTransport(http, tokens, settings.salesforce_api_version),
                producer,
                topic,
                channels,
                resume,
                replay_from,
                metrics=metrics,
            )
            print(
                f"crm-guard salesforce: {', '.join(channels)} from {settings.salesforce_instance_url} -> "
                f"{topic} (resuming: {resume or 'nothing produced yet'}); Ctrl-C to stop",
                flush=True,
            )
            try:
                await subscriber.run()
            finally:
                await asyncio.shield(subscriber.close())
    finally:
        await asyncio.shield(producer.stop())
        if subscriber is not None:
            print(
                f"crm-guard salesforce: stopped; {subscriber.stats.produced} events produced, "
                f"last replayIds {subscriber.stats.last_replay}",
                flush=True,
            )
    return 0


async def _until_signalled(work: Any) -> int:
    """Run `work` until it ends or SIGINT/SIGTERM cancels it (a long poll can take two minutes to
    return on its own); a stop by signal is exit 0."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.Event()

    def on_signal() -> None:
        log.info("stopping")
        stopped.set()
        task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        return int(await task)
    except asyncio.CancelledError:
        if stopped.is_set():
            return 0
        raise


def _subscribe(args: argparse.Namespace) -> int:
    from app.salesforce_cdc.client import AuthRefused
    from app.salesforce_cdc.subscriber import SubscribeFailed

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    bootstrap = "(not configured)"
    try:
        settings = _settings(args)
        bootstrap = settings.bootstrap_servers
        tokens = _tokens(settings)
        return asyncio.run(
            _until_signalled(
                _subscribe_async(
                    settings,
                    tokens,
                    REPLAY_CHOICES[args.replay_from],
                    idempotent=not args.no_idempotence,
                    metrics_port=args.metrics_port,
                )
            )
        )
    except _UserError as exc:
        print(f"crm-guard salesforce subscribe: {exc}", file=sys.stderr)
        return 2
    except AuthRefused as exc:
        print(
            f"crm-guard salesforce subscribe: Salesforce refused the credentials: {exc} (check "
            "CRM_GUARD_SALESFORCE_ACCESS_TOKEN, or the connected app's client id and secret)",
            file=sys.stderr,
        )
        return 2
    except SubscribeFailed as exc:
        print(
            f"crm-guard salesforce subscribe: {exc} (is Change Data Capture enabled for the objects, "
            "and may the user read them?)",
            file=sys.stderr,
        )
        return 2
    except (OSError, KafkaError) as exc:  # Kafka unreachable (KafkaConnectionError) or refusing
        print(
            f"crm-guard salesforce subscribe: cannot reach Kafka at {bootstrap}: {exc} (check "
            "CRM_GUARD_BOOTSTRAP_SERVERS and the security settings)",
            file=sys.stderr,
        )
        return 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `salesforce subscribe`."""
    sf = subparsers.add_parser("salesforce", help="Salesforce Change Data Capture into the guard's Kafka")
    sub = sf.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser(
        "subscribe", help="subscribe to CDC channels (CometD) and produce to crm.raw.salesforce"
    )
    p.add_argument("--config", metavar="FILE", help="settings YAML (default: CRM_GUARD_CONFIG, then env)")
    p.add_argument("--instance-url", help="the org's URL, e.g. https://yourorg.my.salesforce.com")
    p.add_argument(
        "--channel",
        action="append",
        metavar="CHANNEL",
        help="CDC channel, repeatable (default /data/ChangeEvents)",
    )
    p.add_argument(
        "--replay-from",
        choices=sorted(REPLAY_CHOICES),
        default="new",
        help="where a channel with nothing in Kafka yet starts: new events (default) or every "
        "event Salesforce retains (72 h). A channel already in Kafka resumes after its last event",
    )
    p.add_argument("--api-version", help="Streaming API version (default 62.0)")
    p.add_argument(
        "--metrics-port",
        type=port_number,
        metavar="N",
        help="serve Prometheus metrics on this port (at web_host; e.g. 6067); default: none",
    )
    p.add_argument(
        "--no-idempotence",
        action="store_true",
        help="plain acks=all producer (brokers without InitProducerId)",
    )
    p.set_defaults(func=_subscribe)
