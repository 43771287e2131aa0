"""HTTP side of the Salesforce Streaming API: the OAuth token and the CometD POSTs.

`TokenSource` holds the access token: a fixed one (CRM_GUARD_SALESFORCE_ACCESS_TOKEN), or one
fetched with the OAuth 2.0 client-credentials flow of a connected app (CRM_GUARD_SALESFORCE_CLIENT_ID
and _CLIENT_SECRET, `POST <instance>/services/oauth2/token`), fetched again when Salesforce says
the session is no longer valid. `CometdTransport` POSTs Bayeux messages to `/cometd/<version>/`
with the token and the cookies Salesforce sets at the handshake (its load balancer routes a
client's long polls by them).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from app.salesforce_cdc.bayeux import ProtocolError


class AuthRefused(Exception):
    """Salesforce refused the token (HTTP 401/403 or `401::Authentication invalid`)."""


class TokenSource:
    """The access token for Salesforce's APIs; `refresh` asks for a new one where it can."""

    def __init__(
        self,
        instance_url: str,
        access_token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> None:
        if not access_token and not (client_id and client_secret):
            raise ValueError("an access token, or a client id and secret, is needed")
        self.instance_url = instance_url.rstrip("/")
        self._token = access_token or ""
        self.client_id = client_id
        self.client_secret = client_secret

    @property
    def can_refresh(self) -> bool:
        return bool(self.client_id and self.client_secret)

    async def token(self, http: aiohttp.ClientSession) -> str:
        if not self._token:
            await self.refresh(http)
        return self._token

    async def refresh(self, http: aiohttp.ClientSession) -> None:
        """A new token from the client-credentials flow; AuthRefused when Salesforce refuses it
        (or there is no way to get one)."""
        if not self.can_refresh:
            raise AuthRefused(
                "the access token was refused and no client id/secret is configured to get another"
            )
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id or "",
            "client_secret": self.client_secret or "",
        }
        async with http.post(f"{self.instance_url}/services/oauth2/token", data=form) as response:
            body = await response.read()
            if response.status != 200:
                raise AuthRefused(f"token request refused: HTTP {response.status}: {_error_text(body)}")
        try:
            token = orjson.loads(body).get("access_token")
        except (orjson.JSONDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthRefused("the token endpoint answered without an access_token")
        self._token = token


class CometdTransport:
    """POST Bayeux messages to one org's CometD endpoint."""

    def __init__(self, http: aiohttp.ClientSession, tokens: TokenSource, api_version: str) -> None:
        self.http = http
        self.tokens = tokens
        self.url = f"{tokens.instance_url}/cometd/{api_version.lstrip('v')}/"

    async def post(self, messages: list[dict[str, Any]], timeout_s: float) -> Any:
        """The decoded answer; AuthRefused on 401/403, ProtocolError on anything not JSON,
        aiohttp.ClientError / TimeoutError when the connection fails."""
        token = await self.tokens.token(self.http)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self.http.post(
            self.url, data=orjson.dumps(messages), headers=headers, timeout=timeout
        ) as response:
            body = await response.read()
            if response.status in (401, 403):
                raise AuthRefused(f"HTTP {response.status}: {_error_text(body)}")
            if response.status != 200:
                raise ProtocolError(f"HTTP {response.status}: {_error_text(body)}")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ProtocolError("the answer is not JSON") from None


def _error_text(body: bytes) -> str:
    return body[:300].decode("utf-8", "replace").strip() or "(empty body)"
