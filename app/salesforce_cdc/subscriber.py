"""Salesforce Change Data Capture into the guard: subscribe over CometD, produce to crm.raw.salesforce.

Salesforce does not push CDC events over plain webhooks; a client has to subscribe. This is that
client, so a Salesforce org needs no bridge of its own: `crm-guard salesforce subscribe` runs it
(one per org; the guard's workers read the raw topic as they read webhook deliveries).

Each event is produced as Salesforce delivered it (`{"channel", "data": {"schema", "payload",
"event": {"replayId"}}}`, which the Salesforce adapter reads), keyed by channel, with the
`salesforce_replay` header that app/salesforce_cdc/resume.py reads back on start. A channel's
resume point moves only after the broker acknowledged its events, so:

* a produce that fails (broker down) sends the subscriber back to the handshake, resubscribing
  from the last acknowledged event: Salesforce delivers the rest again;
* a killed subscriber restarts from what Kafka holds: nothing lost, nothing produced twice
  (an event produced twice anyway, as after a produce acknowledged but unseen, is the same
  event id, which the record stage skips);
* a resume point Salesforce no longer retains (72 h) is refused with `400::The replayId ...`:
  the subscriber logs how far back the gap goes and subscribes from every retained event.

Connection failures retry with doubling waits (1 s to 60 s). A refused token is fetched again
when a client id and secret are configured, else the subscriber stops (exit 2 from the CLI).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.salesforce_cdc import bayeux
from app.salesforce_cdc.bayeux import REPLAY_ALL, MessageIds, ProtocolError, Reply
from app.salesforce_cdc.client import AuthRefused, CometdTransport
from app.salesforce_cdc.metrics import SubscriberMetrics
from app.salesforce_cdc.resume import replay_header

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 30.0
CONNECT_MARGIN_S = 30.0
"""Added to the server's advised long-poll timeout (Salesforce: 110 s) before giving up on a connect."""
MAX_BACKOFF_S = 60.0


class SubscribeFailed(Exception):
    """Salesforce refused a subscription for good (unknown channel, CDC not enabled, no permission)
    or told the client not to reconnect."""


@dataclass
class SubscriberStats:
    """What the subscriber has done, for its log lines and the tests."""

    produced: int = 0
    handshakes: int = 0
    resubscribed_all: list[str] = field(default_factory=list)
    last_replay: dict[str, int] = field(default_factory=dict)


class SalesforceSubscriber:
    """Subscribe to `channels` and produce their events to `topic` until cancelled."""

    def __init__(
        self,
        transport: CometdTransport,
        producer: AIOKafkaProducer,
        topic: str,
        channels: list[str],
        resume: dict[str, int],
        replay_from: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: SubscriberMetrics | None = None,
    ) -> None:
        self.transport = transport
        self.producer = producer
        self.topic = topic
        self.channels = channels
        self.points = dict(resume)
        """channel -> replayId of its newest acknowledged event (the resume point)."""
        self.replay_from = replay_from
        self.sleep = sleep
        self.stats = SubscriberStats(last_replay=dict(resume))
        self.metrics = metrics or SubscriberMetrics()
        for channel in channels:  # zero from the start, so rate() and increase() see the first event
            self.metrics.events.labels(channel)
            self.metrics.replay_gaps.labels(channel)
        self._ids = MessageIds()
        self._client_id = ""
        self._poll_timeout_s = 110.0 + CONNECT_MARGIN_S

    async def run(self) -> None:
        """Handshake, subscribe, long-poll and produce, reconnecting as Salesforce advises."""
        failures = 0
        refreshed = False
        reason = "start"
        while True:
            try:
                self.metrics.handshakes.labels(reason).inc()
                await self._start_session()
                self.metrics.connected.set(1)
                refreshed = False
                succeeded = await self._poll()
                self.metrics.connected.set(0)
                reason = "session_ended"
                if succeeded:
                    failures = 0
                    continue
                failures += 1  # the session ended before one connect succeeded: do not spin
                await self.sleep(min(MAX_BACKOFF_S, 2.0 ** (failures - 1)))
            except AuthRefused as exc:
                self.metrics.connected.set(0)
                if refreshed or not self.transport.tokens.can_refresh:
                    raise
                log.warning("salesforce: token refused (%s); fetching a new one", exc)
                await self.transport.tokens.refresh(self.transport.http)
                refreshed = True
                reason = "token_renewed"
            except (aiohttp.ClientError, TimeoutError, ProtocolError, KafkaError) as exc:
                self.metrics.connected.set(0)
                reason = "connection_error"
                failures += 1
                wait = min(MAX_BACKOFF_S, 2.0 ** (failures - 1))
                log.warning(
                    "salesforce: %s: %s; reconnecting in %.0fs from the last acknowledged event",
                    type(exc).__name__,
                    exc,
                    wait,
                )
                await self.sleep(wait)

    # ---- one session: handshake, subscriptions, long polls --------------------------------------

    async def _start_session(self) -> None:
        self.stats.handshakes += 1
        reply = bayeux.read_reply(
            await self.transport.post(bayeux.handshake(self._ids), HANDSHAKE_TIMEOUT_S), bayeux.META_HANDSHAKE
        )
        if not reply.ok or not isinstance(reply.meta, dict) or not reply.meta.get("clientId"):
            self._refused(reply, "handshake")
            raise ProtocolError(f"handshake failed: {reply.error or 'no clientId'}")
        self._client_id = str(reply.meta["clientId"])
        advice = reply.meta.get("advice")
        if isinstance(advice, dict) and isinstance(advice.get("timeout"), int) and advice["timeout"] > 0:
            self._poll_timeout_s = advice["timeout"] / 1000 + CONNECT_MARGIN_S
        for channel in self.channels:
            await self._subscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        start = self.points.get(channel, self.replay_from)
        reply = await self._send(
            bayeux.subscribe(self._ids, self._client_id, channel, start), bayeux.META_SUBSCRIBE
        )
        if reply.ok:
            log.info("salesforce: subscribed to %s from %s", channel, _describe_start(start))
            return
        if bayeux.is_invalid_replay(reply) and start != REPLAY_ALL:
            log.warning(
                "salesforce: %s: replayId %s is no longer retained by Salesforce; events after it "
                "and before the oldest retained one are missing. Subscribing from every retained event.",
                channel,
                start,
            )
            self.points[channel] = REPLAY_ALL
            self.stats.resubscribed_all.append(channel)
            self.metrics.replay_gaps.labels(channel).inc()
            reply = await self._send(
                bayeux.subscribe(self._ids, self._client_id, channel, REPLAY_ALL), bayeux.META_SUBSCRIBE
            )
            if reply.ok:
                return
        self._refused(reply, f"subscribe to {channel}")
        if reply.error_code == 403 and "unknown client" in reply.error.lower():
            raise ProtocolError(reply.error)
        raise SubscribeFailed(f"subscribe to {channel} refused: {reply.error or 'no reason given'}")

    async def _poll(self) -> int:
        """Long polls until the session ends (then the caller handshakes again); the
        number of connects that succeeded."""
        succeeded = 0
        while True:
            reply = await self._send(
                bayeux.connect(self._ids, self._client_id), bayeux.META_CONNECT, self._poll_timeout_s
            )
            if reply.events:
                await self._produce(reply.events)
            if reply.meta is None:
                if not reply.events:  # nothing at all: not a Bayeux server we can poll in a loop
                    raise ProtocolError("the connect was answered without a /meta/connect reply")
                continue  # events without the connect reply: poll again
            if not reply.ok:
                self._refused(reply, "connect")
                if reply.reconnect == "none":
                    raise SubscribeFailed(f"Salesforce advised not to reconnect: {reply.error}")
                log.info(
                    "salesforce: connect answered %r (advice %s); handshaking again",
                    reply.error,
                    reply.reconnect,
                )
                return succeeded
            succeeded += 1
            if reply.reconnect == "handshake":
                return succeeded
            if reply.reconnect == "none":
                raise SubscribeFailed("Salesforce advised not to reconnect")
            if reply.interval_ms:
                await self.sleep(reply.interval_ms / 1000)

    async def _produce(self, events: list[dict[str, Any]]) -> None:
        """Produce in delivery order; move resume points only when every one is acknowledged."""
        received_at = str(int(time.time() * 1000)).encode()
        pending = []
        newest: dict[str, int] = {}
        for event in events:
            channel = str(event.get("channel"))
            headers = [("received_at", received_at)]
            replay = bayeux.replay_id(event)
            if replay is not None:
                headers.append(replay_header(channel, replay))
                newest[channel] = replay
            pending.append(
                await self.producer.send(
                    self.topic, key=channel.encode(), value=orjson.dumps(event), headers=headers
                )
            )
        await asyncio.gather(*pending)
        self.points.update(newest)
        self.stats.last_replay.update(newest)
        self.stats.produced += len(events)
        now = time.time()
        for event in events:
            channel = str(event.get("channel"))
            self.metrics.events.labels(channel).inc()
            self.metrics.last_event.labels(channel).set(now)

    async def _send(
        self, messages: list[dict[str, Any]], channel: str, timeout_s: float = HANDSHAKE_TIMEOUT_S
    ) -> Reply:
        return bayeux.read_reply(await self.transport.post(messages, timeout_s), channel)

    async def close(self) -> None:
        """Tell Salesforce the session ends (best effort)."""
        if not self._client_id:
            return
        try:
            await self.transport.post(bayeux.disconnect(self._ids, self._client_id), 5.0)
        except (aiohttp.ClientError, TimeoutError, ProtocolError, AuthRefused) as exc:
            log.info("salesforce: disconnect not answered: %s", exc)

    @staticmethod
    def _refused(reply: Reply, what: str) -> None:
        """AuthRefused when the reply says the token is not (or no longer) valid: `401::Authentication
        invalid`, or `403::Handshake denied` with that as `ext.sfdc.failureReason`."""
        if reply.error_code == 401 or bayeux.failure_reason(reply).startswith("401"):
            raise AuthRefused(f"{what}: {reply.error}")


def _describe_start(start: int) -> str:
    if start == bayeux.REPLAY_NEW:
        return "new events (-1)"
    if start == REPLAY_ALL:
        return "every retained event (-2)"
    return f"after replayId {start}"
