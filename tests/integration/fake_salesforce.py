"""A local Salesforce Streaming API (CometD long polling) that checks requests as Salesforce does.

What it enforces, from Salesforce's Streaming API guide and what its server answers in the field:
* POST /cometd/<version>/ with a JSON array of Bayeux messages; a valid `Authorization: Bearer`
  (or `OAuth`) token, else `401::Authentication invalid` (handshake: advice reconnect none);
* the handshake sets the BAYEUX_BROWSER cookie; subscribe and connect without it, or with a
  clientId the server does not know, get `403::Unknown client` with advice reconnect handshake;
* subscribe carries `ext.replay = {channel: -1 | -2 | replayId}`; a replayId that is not retained
  gets `400::The replayId {N} you provided was invalid...`;
* connect returns the subscribed channels' events after the client's position (a few per
  poll), then the connect reply with advice retry; with nothing to send it holds the poll.
* POST /services/oauth2/token (client credentials) hands out a new token.
The test drives it: add events, drop every client (session loss), expire the token, retain
only recent events.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_PATH = "/cometd/62.0/"


@dataclass
class Client:
    channels: dict[str, int] = field(default_factory=dict)  # channel -> replayId of the last event sent


class FakeSalesforce:
    def __init__(
        self,
        token: str = "sf-token-1",  # noqa: S107 - test credentials
        client_id: str = "guard-app",
        client_secret: str = "s3cret",  # noqa: S107
        per_poll: int = 3,
        hold_s: float = 0.2,
    ) -> None:
        self.token = token
        self.client_id = client_id
        self.client_secret = client_secret
        self.per_poll = per_poll
        self.hold_s = hold_s
        self.events: list[dict[str, Any]] = []  # {"channel", "data": {..., "event": {"replayId"}}}
        self.oldest_retained = 0  # index into events of the oldest event still retained
        self.clients: dict[str, Client] = {}
        self.subscribes: list[tuple[str, Any]] = []  # (channel, replay asked for)
        self.handshakes = 0
        self.tokens_issued = 0
        self.refused_auth = 0
        self._replay_ids = itertools.count(100, 7)  # not contiguous, as Salesforce's are not
        self.app = web.Application()
        self.app.router.add_post(API_PATH, self._cometd)
        self.app.router.add_post("/services/oauth2/token", self._token)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- what the test does --------------------------------------------------------------------

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the bound port
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def publish(self, channel: str, payload: dict[str, Any]) -> int:
        """Add an event on `channel` (a CDC payload with its ChangeEventHeader); its replayId."""
        replay = next(self._replay_ids)
        self.events.append(
            {
                "channel": channel,
                "data": {
                    "schema": "I8b-dYxvxs5wOtCBr4qsew",
                    "payload": payload,
                    "event": {"replayId": replay},
                },
            }
        )
        return replay

    def drop_clients(self) -> None:
        """The server forgets every session (as after a Salesforce instance switch)."""
        self.clients.clear()

    def expire_token(self) -> None:
        self.token = "expired-" + uuid.uuid4().hex[:6]

    def retain_from(self, replay_id: int) -> None:
        """Only events from `replay_id` on are retained."""
        self.oldest_retained = next(
            i for i, e in enumerate(self.events) if e["data"]["event"]["replayId"] >= replay_id
        )

    def replay_ids(self) -> list[int]:
        return [e["data"]["event"]["replayId"] for e in self.events]

    # ---- the server ----------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return web.json_response(
                {"error": "invalid_client", "error_description": "invalid client credentials"}, status=400
            )
        self.tokens_issued += 1
        self.token = f"sf-token-renewed-{self.tokens_issued}"
        return web.json_response(
            {
                "access_token": self.token,
                "instance_url": self.url,
                "token_type": "Bearer",
                "issued_at": "1767225600000",
                "signature": "x",
            }
        )

    async def _cometd(self, request: web.Request) -> web.Response:
        try:
            messages = await request.json()
        except ValueError:
            return web.Response(status=400, text="the body is not JSON")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return web.Response(status=400, text="expected a JSON array of Bayeux messages")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        authorized = scheme in ("Bearer", "OAuth") and token == self.token
        out: list[dict[str, Any]] = []
        for message in messages:
            out.extend(await self._answer(request, message, authorized))
        response = web.json_response(out)
        if any(m.get("channel") == "/meta/handshake" and m.get("successful") for m in out):
            response.set_cookie("BAYEUX_BROWSER", uuid.uuid4().hex[:12])
        return response

    async def _answer(
        self, request: web.Request, message: dict[str, Any], authorized: bool
    ) -> list[dict[str, Any]]:
        channel = message.get("channel")
        base = {"channel": channel, "id": message.get("id")}
        if not authorized:
            self.refused_auth += 1
            return [
                {
                    **base,
                    "successful": False,
                    "error": "401::Authentication invalid",
                    "advice": {"reconnect": "none"},
                    "ext": {"replay": True},
                }
            ]
        if channel == "/meta/handshake":
            if "long-polling" not in message.get("supportedConnectionTypes", []):
                return [{**base, "successful": False, "error": "400::no supported connection type"}]
            self.handshakes += 1
            client_id = uuid.uuid4().hex[:20]
            self.clients[client_id] = Client()
            return [
                {
                    **base,
                    "successful": True,
                    "clientId": client_id,
                    "version": "1.0",
                    "minimumVersion": "1.0",
                    "supportedConnectionTypes": ["long-polling"],
                    "ext": {"replay": True, "payload.format": True},
                    "advice": {"interval": 0, "timeout": 110000, "reconnect": "retry"},
                }
            ]
        client = self.clients.get(str(message.get("clientId")))
        if client is None or "BAYEUX_BROWSER" not in request.cookies:
            return [
                {
                    **base,
                    "successful": False,
                    "error": "403::Unknown client",
                    "advice": {"interval": 0, "reconnect": "handshake"},
                }
            ]
        if channel == "/meta/subscribe":
            return [self._subscribe(base, client, message)]
        if channel == "/meta/connect":
            return await self._connect(base, client)
        if channel == "/meta/disconnect":
            self.clients = {k: v for k, v in self.clients.items() if v is not client}
            return [{**base, "successful": True}]
        return [{**base, "successful": False, "error": "400::unknown channel"}]

    def _subscribe(self, base: dict[str, Any], client: Client, message: dict[str, Any]) -> dict[str, Any]:
        wanted = message.get("subscription")
        replay = ((message.get("ext") or {}).get("replay") or {}).get(wanted)
        self.subscribes.append((wanted, replay))
        if not isinstance(wanted, str) or not wanted.startswith("/data/"):
            return {**base, "successful": False, "error": f"403::Unknown channel {wanted}"}
        retained = [e["data"]["event"]["replayId"] for e in self.events[self.oldest_retained :]]
        if replay == -1:
            start = self.events[-1]["data"]["event"]["replayId"] if self.events else 0
        elif replay == -2 or replay is None:
            start = retained[0] - 1 if retained else 0
        elif isinstance(replay, int) and replay in retained:
            start = replay
        else:
            return {
                **base,
                "successful": False,
                "subscription": wanted,
                "error": f"400::The replayId {{{replay}}} you provided was invalid.  "
                "Please provide a valid ID, -2 to replay all events, or -1 to replay only new events.",
            }
        client.channels[wanted] = start
        return {**base, "successful": True, "subscription": wanted}

    async def _connect(self, base: dict[str, Any], client: Client) -> list[dict[str, Any]]:
        for _ in range(2):
            batch = self._due(client)
            if batch:
                break
            await asyncio.sleep(self.hold_s)
        batch = self._due(client)
        for event in batch:
            client.channels[event["channel"]] = event["data"]["event"]["replayId"]
        reply = {
            **base,
            "successful": True,
            "advice": {"interval": 0, "timeout": 110000, "reconnect": "retry"},
        }
        return [*batch, reply]

    def _due(self, client: Client) -> list[dict[str, Any]]:
        out = []
        for event in self.events[self.oldest_retained :]:
            after = client.channels.get(event["channel"])
            if after is not None and event["data"]["event"]["replayId"] > after:
                out.append(event)
                if len(out) >= self.per_poll:
                    break
        return out
