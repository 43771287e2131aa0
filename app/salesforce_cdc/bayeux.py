"""The Bayeux messages of Salesforce's Streaming API (CometD long polling), without I/O.

Salesforce delivers Change Data Capture events to CometD clients on `/cometd/<version>`: the
client POSTs JSON arrays of Bayeux messages with an OAuth token in `Authorization`:

    /meta/handshake   -> clientId (and BAYEUX_BROWSER / load-balancer cookies to send back)
    /meta/subscribe   one channel (`/data/ChangeEvents`, `/data/AccountChangeEvent`, ...) with
                      the replay extension `ext.replay = {channel: replayId}`: -1 new events only,
                      -2 every event Salesforce still retains (72 hours), or the replayId of the
                      last event received: the events after it
    /meta/connect     long poll (held up to ~110 s): the events, then the connect reply itself

Replies carry `successful`, an `error` such as `403::Unknown client` or `401::Authentication
invalid`, and `advice.reconnect`: `retry` (connect again), `handshake` (the session is gone:
handshake and subscribe again) or `none` (give up). This module builds the messages and sorts a
reply into events and the one outcome the subscriber acts on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

REPLAY_NEW = -1
"""Replay option: only events published after the subscription."""
REPLAY_ALL = -2
"""Replay option: every event Salesforce still retains (Change Data Capture: 72 hours)."""

META_HANDSHAKE = "/meta/handshake"
META_SUBSCRIBE = "/meta/subscribe"
META_CONNECT = "/meta/connect"
META_DISCONNECT = "/meta/disconnect"


class MessageIds:
    """Bayeux message ids: unique per client, as strings."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def __call__(self) -> str:
        return str(next(self._next))


def handshake(ids: MessageIds) -> list[dict[str, Any]]:
    """The handshake, announcing the replay extension (Salesforce answers with `ext.replay`)."""
    return [
        {
            "channel": META_HANDSHAKE,
            "id": ids(),
            "version": "1.0",
            "minimumVersion": "1.0",
            "supportedConnectionTypes": ["long-polling"],
            "ext": {"replay": True},
        }
    ]


def subscribe(ids: MessageIds, client_id: str, channel: str, replay_from: int) -> list[dict[str, Any]]:
    """Subscribe to one channel from `replay_from` (REPLAY_NEW, REPLAY_ALL or a replayId)."""
    return [
        {
            "channel": META_SUBSCRIBE,
            "id": ids(),
            "clientId": client_id,
            "subscription": channel,
            "ext": {"replay": {channel: replay_from}},
        }
    ]


def connect(ids: MessageIds, client_id: str) -> list[dict[str, Any]]:
    return [{"channel": META_CONNECT, "id": ids(), "clientId": client_id, "connectionType": "long-polling"}]


def disconnect(ids: MessageIds, client_id: str) -> list[dict[str, Any]]:
    return [{"channel": META_DISCONNECT, "id": ids(), "clientId": client_id}]


@dataclass
class Reply:
    """What one POST's answer means: the events it delivered (in order) and the meta reply.

    `meta` is the reply to the message sent (None if the server sent none); `ok` whether it says
    successful; `error` its error text; `reconnect` the advice (`retry`, `handshake`, `none`, or
    None when no advice came); `interval_ms` the advised wait before the next connect."""

    events: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] | None = None
    ok: bool = False
    error: str = ""
    reconnect: str | None = None
    interval_ms: int = 0

    @property
    def error_code(self) -> int:
        """The numeric code in front of a Bayeux error (`403::Unknown client` -> 403); 0 if none."""
        head = self.error.split(":", 1)[0]
        return int(head) if head.isdigit() else 0


class ProtocolError(ValueError):
    """The server's answer is not a Bayeux reply (not a JSON array of messages)."""


def read_reply(body: Any, meta_channel: str) -> Reply:
    """Sort a decoded answer into events (messages on a non-meta channel carrying `data`) and the
    reply on `meta_channel`. Other meta messages are ignored."""
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        raise ProtocolError(f"expected a JSON array of Bayeux messages, got {type(body).__name__}")
    reply = Reply()
    for message in body:
        if not isinstance(message, dict):
            raise ProtocolError("a Bayeux message is not a JSON object")
        channel = message.get("channel")
        if not isinstance(channel, str):
            continue
        if not channel.startswith("/meta/"):
            if "data" in message:
                reply.events.append(message)
            continue
        if channel != meta_channel:
            continue
        reply.meta = message
        reply.ok = message.get("successful") is True
        reply.error = str(message.get("error") or "")
        advice = message.get("advice")
        if isinstance(advice, dict):
            reconnect = advice.get("reconnect")
            reply.reconnect = reconnect if isinstance(reconnect, str) else None
            interval = advice.get("interval")
            reply.interval_ms = interval if isinstance(interval, int) and interval > 0 else 0
    return reply


def failure_reason(reply: Reply) -> str:
    """Salesforce's own reason beside a Bayeux error (`ext.sfdc.failureReason`), or ''."""
    ext = reply.meta.get("ext") if reply.meta else None
    sfdc = ext.get("sfdc") if isinstance(ext, dict) else None
    reason = sfdc.get("failureReason") if isinstance(sfdc, dict) else None
    return reason if isinstance(reason, str) else ""


def replay_id(event: dict[str, Any]) -> int | None:
    """The replayId of a delivered event (`data.event.replayId`), None when it has none."""
    data = event.get("data")
    meta = data.get("event") if isinstance(data, dict) else None
    value = meta.get("replayId") if isinstance(meta, dict) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def is_invalid_replay(reply: Reply) -> bool:
    """A subscribe refused because the replayId is no longer retained (or never was):
    `400::The replayId {N} you provided was invalid. Please provide a valid ID, -2 to replay all
    events, or -1 to replay only new events.`"""
    return reply.error_code == 400 and "replayid" in reply.error.lower()
