"""Pause and resume messages, signed with Ed25519. Pure: no Kafka, no clock, no environment.

Wire format (the value on `guard.pause`, keyed by agent id)::

    {"payload": {"agent": "enrich-bot", "state": "paused", "reason": "...", "alert_id": "...",
                 "issued_at": 1767225600000, "expires_at": null, "seq": 1767225600000,
                 "key_id": "guard-1", "issued_by": "crm-guard"},
     "sig": "<base64 of the Ed25519 signature over canonical(payload)>"}

canonical(payload) is the UTF-8 JSON of the payload with keys sorted, no whitespace and no ASCII
escaping (`json.dumps(p, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`). For the
value types used here (strings, integers, null) this is the same byte string as RFC 8785 (JCS),
so a verifier in another language can reproduce it. The key id sits inside the signed payload.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PauseState = Literal["paused", "active"]
STATES = ("paused", "active")
REQUIRED_FIELDS = (
    "agent",
    "state",
    "reason",
    "alert_id",
    "issued_at",
    "expires_at",
    "seq",
    "key_id",
    "issued_by",
)


class PauseRejected(ValueError):
    """A message the client must not act on. `reason` is one of a few stable words (metrics-safe):
    malformed, unknown_key, bad_signature, wrong_agent, expired, replayed."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PausePayload:
    """The signed content of one pause/resume message. Times are ms since the epoch (UTC)."""

    agent: str
    state: PauseState
    reason: str
    alert_id: str | None
    issued_at: int
    expires_at: int | None
    seq: int
    key_id: str
    issued_by: str

    @property
    def paused(self) -> bool:
        return self.state == "paused"

    def expired(self, now_ms: int) -> bool:
        """True once `expires_at` has passed (never, when it is null)."""
        return self.expires_at is not None and now_ms >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in REQUIRED_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PausePayload:
        """Validate types strictly: a verifier must never guess."""
        if not isinstance(data, Mapping):
            raise PauseRejected("malformed", "payload is not an object")
        missing = [f for f in REQUIRED_FIELDS if f not in data]
        if missing:
            raise PauseRejected("malformed", f"missing {', '.join(missing)}")
        for name in ("agent", "reason", "key_id", "issued_by"):
            if not isinstance(data[name], str):
                raise PauseRejected("malformed", f"{name} must be a string")
        if data["state"] not in STATES:
            raise PauseRejected("malformed", "state must be paused or active")
        if data["alert_id"] is not None and not isinstance(data["alert_id"], str):
            raise PauseRejected("malformed", "alert_id must be a string or null")
        for name in ("issued_at", "seq"):
            if not _is_int(data[name]):
                raise PauseRejected("malformed", f"{name} must be an integer")
        if data["expires_at"] is not None and not _is_int(data["expires_at"]):
            raise PauseRejected("malformed", "expires_at must be an integer or null")
        return cls(**{name: data[name] for name in REQUIRED_FIELDS})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def canonical_bytes(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class PauseSigner:
    """Signs payloads with one private key, named by `key_id` (the id agents look the public key up by)."""

    def __init__(self, private_key: Ed25519PrivateKey, key_id: str) -> None:
        if not key_id:
            raise ValueError("key_id must not be empty")
        self.private_key = private_key
        self.key_id = key_id

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def payload(
        self,
        *,
        agent: str,
        state: PauseState,
        reason: str,
        seq: int,
        issued_at: int,
        alert_id: str | None = None,
        expires_at: int | None = None,
        issued_by: str = "crm-guard",
    ) -> PausePayload:
        """A payload carrying this signer's key id."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        return PausePayload(
            agent=agent,
            state=state,
            reason=reason,
            alert_id=alert_id,
            issued_at=int(issued_at),
            expires_at=None if expires_at is None else int(expires_at),
            seq=int(seq),
            key_id=self.key_id,
            issued_by=issued_by,
        )

    def sign(self, payload: PausePayload) -> dict[str, Any]:
        """The wire object {"payload": ..., "sig": ...}."""
        if payload.key_id != self.key_id:
            raise ValueError(f"payload names key {payload.key_id!r}, signer holds {self.key_id!r}")
        body = payload.to_dict()
        sig = self.private_key.sign(canonical_bytes(body))
        return {"payload": body, "sig": base64.b64encode(sig).decode("ascii")}

    def sign_bytes(self, payload: PausePayload) -> bytes:
        """The wire object as compact JSON bytes (the Kafka message value)."""
        return json.dumps(self.sign(payload), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class PauseVerifier:
    """Checks signature and key id of wire messages against trusted public keys (key_id -> key).

    It checks authenticity only; the client adds agent, expiry and sequence checks because they
    depend on who is asking and what it accepted before.
    """

    def __init__(self, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
        self.public_keys = dict(public_keys)

    def verify(self, message: bytes | str | Mapping[str, Any]) -> PausePayload:
        """The payload if the message is well formed and signed by a trusted key; else PauseRejected."""
        if isinstance(message, (bytes, str)):
            try:
                message = json.loads(message)
            except (ValueError, UnicodeDecodeError) as exc:
                raise PauseRejected("malformed", "not JSON") from exc
        if not isinstance(message, Mapping) or not isinstance(message.get("payload"), Mapping):
            raise PauseRejected("malformed", "expected {payload, sig}")
        sig_text = message.get("sig")
        if not isinstance(sig_text, str):
            raise PauseRejected("malformed", "sig must be a base64 string")
        body = message["payload"]
        payload = PausePayload.from_dict(body)
        key = self.public_keys.get(payload.key_id)
        if key is None:
            raise PauseRejected("unknown_key", f"key id {payload.key_id!r} is not trusted")
        try:
            sig = base64.b64decode(sig_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PauseRejected("malformed", "sig is not base64") from exc
        try:
            key.verify(sig, canonical_bytes(body))
        except InvalidSignature as exc:
            raise PauseRejected("bad_signature", f"signature does not match key {payload.key_id!r}") from exc
        return payload
