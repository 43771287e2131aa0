"""Pause signals: canonical bytes, Ed25519 sign/verify, tampering, key loading and rotation inputs,
the local demo key, sequence numbers, and the runtime's synchronous encoder."""

from __future__ import annotations

import base64
import json
import multiprocessing
import multiprocessing.connection
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.config import Settings
from app.pause.keys import (
    KeyConfigError,
    load_or_create_signing_key,
    load_private_key,
    load_public_keys,
    public_key_b64,
    signing_key_from_settings,
    write_key_pair,
)
from app.pause.publisher import PauseEncoder, SeqClock
from app.pause.signing import PausePayload, PauseRejected, PauseSigner, PauseVerifier, canonical_bytes
from detectors.alerts import PauseDecision

T0 = 1_767_225_600_000


def signer(key_id: str = "guard-1") -> PauseSigner:
    return PauseSigner(Ed25519PrivateKey.generate(), key_id)


def payload(s: PauseSigner, **over: object) -> PausePayload:
    base = dict(
        agent="enrich-bot", state="paused", reason="velocity cap", seq=T0, issued_at=T0, alert_id="abc"
    )
    base.update(over)
    return s.payload(**base)  # type: ignore[arg-type]


def test_canonical_bytes_are_sorted_compact_utf8() -> None:
    assert canonical_bytes({"b": 1, "a": "é", "c": None}) == '{"a":"é","b":1,"c":null}'.encode()


def test_sign_and_verify_round_trip_and_wire_shape() -> None:
    s = signer()
    wire = s.sign(payload(s))
    assert set(wire) == {"payload", "sig"} and len(base64.b64decode(wire["sig"])) == 64
    assert set(wire["payload"]) == {
        "agent",
        "state",
        "reason",
        "alert_id",
        "issued_at",
        "expires_at",
        "seq",
        "key_id",
        "issued_by",
    }
    got = PauseVerifier({"guard-1": s.public_key}).verify(json.dumps(wire))
    assert got == payload(s) and got.paused and got.key_id == "guard-1" and got.issued_by == "crm-guard"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("state", "active"),
        ("agent", "other-bot"),
        ("seq", T0 + 1),
        ("expires_at", T0 + 10),
        ("reason", "x"),
        ("issued_by", "mallory"),
    ],
)
def test_changing_any_signed_field_breaks_the_signature(field: str, value: object) -> None:
    s = signer()
    wire = s.sign(payload(s))
    wire["payload"][field] = value
    with pytest.raises(PauseRejected) as info:
        PauseVerifier({"guard-1": s.public_key}).verify(wire)
    assert info.value.reason == "bad_signature"


def test_unknown_key_forged_key_and_malformed_messages_are_rejected() -> None:
    trusted, attacker = signer(), signer()  # the attacker claims the trusted key id
    verifier = PauseVerifier({"guard-1": trusted.public_key})
    with pytest.raises(PauseRejected, match="bad_signature"):
        verifier.verify(attacker.sign(payload(attacker)))
    with pytest.raises(PauseRejected, match="unknown_key"):
        verifier.verify(signer("guard-9").sign(payload(signer("guard-9"))))
    good = trusted.sign(payload(trusted))
    for bad in (
        b"not json",
        {"payload": good["payload"]},
        {"payload": "x", "sig": good["sig"]},
        {"payload": {**good["payload"], "seq": True}, "sig": good["sig"]},
        {"payload": {**good["payload"], "seq": "1"}, "sig": good["sig"]},
        {"payload": {**good["payload"], "state": "maybe"}, "sig": good["sig"]},
        {"payload": {k: v for k, v in good["payload"].items() if k != "expires_at"}, "sig": good["sig"]},
        {"payload": good["payload"], "sig": "***"},
    ):
        with pytest.raises(PauseRejected) as info:
            verifier.verify(bad)  # type: ignore[arg-type]
        assert info.value.reason == "malformed"


def test_expiry() -> None:
    s = signer()
    assert not payload(s).expired(T0 + 10**9)
    assert payload(s, expires_at=T0 + 5).expired(T0 + 5) and not payload(s, expires_at=T0 + 5).expired(T0 + 4)


def test_key_pair_files_env_and_directory(tmp_path: Path) -> None:
    priv, pub = write_key_pair(tmp_path, "guard-2")
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600 and pub.name == "guard-2.pub"
    with pytest.raises(KeyConfigError, match="not overwriting"):
        write_key_pair(tmp_path, "guard-2")
    key = load_private_key(priv)
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    from_b64 = load_private_key(env={"CRM_GUARD_PAUSE_PRIVATE_KEY": base64.b64encode(raw).decode()})
    from_pem = load_private_key(env={"CRM_GUARD_PAUSE_PRIVATE_KEY": priv.read_text()})
    assert (
        public_key_b64(from_b64.public_key())
        == public_key_b64(from_pem.public_key())
        == public_key_b64(key.public_key())
    )
    write_key_pair(tmp_path, "guard-3")
    keys = load_public_keys(tmp_path)
    assert set(keys) == {"guard-2", "guard-3"}
    env_keys = load_public_keys(
        env={
            "CRM_GUARD_PAUSE_PUBLIC_KEYS": f"old:{public_key_b64(key.public_key())},"
            f"new:{public_key_b64(keys['guard-3'])}"
        }
    )
    json_keys = load_public_keys(env={"CRM_GUARD_PAUSE_PUBLIC_KEYS": json.dumps({"old": pub.read_text()})})
    assert set(env_keys) == {"old", "new"} and public_key_b64(json_keys["old"]) == public_key_b64(
        key.public_key()
    )
    for bad in ({"CRM_GUARD_PAUSE_PRIVATE_KEY": "bm90IGEga2V5"}, {"CRM_GUARD_PAUSE_PRIVATE_KEY": "%%%"}, {}):
        with pytest.raises(KeyConfigError):
            load_private_key(env=bad)
    with pytest.raises(KeyConfigError, match="no such"):
        load_public_keys(tmp_path / "missing.pub")


def test_local_key_is_created_once_and_reused(tmp_path: Path) -> None:
    first = load_or_create_signing_key(tmp_path)
    second = load_or_create_signing_key(tmp_path)
    assert first.key_id == second.key_id and first.key_id.startswith("local-")
    assert first.public_b64() == second.public_b64()
    trusted = load_public_keys(tmp_path / "pause-keys")
    assert public_key_b64(trusted[first.key_id]) == first.public_b64()


def _key_id_in_child(state_dir: Path, write: "multiprocessing.connection.Connection") -> None:
    real_fdopen = os.fdopen

    def slow_fdopen(*args: Any, **kwargs: Any) -> Any:  # a slow disk: the key's bytes land late
        time.sleep(0.3)
        return real_fdopen(*args, **kwargs)

    os.fdopen = slow_fdopen  # this child's own module state: the test process is untouched
    write.send(load_or_create_signing_key(state_dir).key_id)


def test_processes_starting_together_on_one_state_dir_share_one_local_key(tmp_path: Path) -> None:
    """A worker and its record process start at the same instant on a fresh state directory: the
    key file used to be created empty and then written, and the other process read 0 bytes."""
    context = multiprocessing.get_context("fork")
    for attempt in range(2):
        state = tmp_path / f"state-{attempt}"
        pipes = [context.Pipe(duplex=False) for _ in range(6)]
        children = [context.Process(target=_key_id_in_child, args=(state, send)) for _, send in pipes]
        for child in children:
            child.start()
        for child in children:
            child.join(10)
            assert child.exitcode == 0, "a process could not read the key the other was writing"
        ids = {receive.recv() for receive, _ in pipes}
        assert len(ids) == 1
        assert sorted(p.name for p in (state / "pause-keys").iterdir()) == sorted(["local.key", f"{ids.pop()}.pub"])


def test_signing_key_from_settings_precedence(tmp_path: Path) -> None:
    priv, _ = write_key_pair(tmp_path / "keys", "prod-1")
    settings = Settings(
        state_dir=str(tmp_path / "state"), pause_private_key_file=str(priv), pause_key_id="prod-1"
    )
    assert signing_key_from_settings(settings, env={}).key_id == "prod-1"
    env_only = Settings(state_dir=str(tmp_path / "state"), pause_key_id="env-1")
    raw = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    assert signing_key_from_settings(env_only, env={"CRM_GUARD_PAUSE_PRIVATE_KEY": raw}).key_id == "env-1"
    with pytest.raises(KeyConfigError, match="no pause signing key"):
        signing_key_from_settings(env_only, env={}, create=False)  # the CLI never invents a key
    local = signing_key_from_settings(env_only, env={})  # the runtime does (demo)
    assert local.key_id.startswith("local-")
    assert signing_key_from_settings(env_only, env={}, create=False).key_id == local.key_id


def test_seq_only_grows_per_agent_even_when_the_clock_steps_back() -> None:
    now = [T0]
    seq = SeqClock(lambda: now[0])
    assert seq.next("a") == T0 and seq.next("a") == T0 + 1 and seq.next("b") == T0
    now[0] = T0 - 60_000
    assert seq.next("a") == T0 + 2
    seq.seed({"c": T0 + 10**6})
    assert seq.next("c") == T0 + 10**6 + 1


def test_runtime_encoder_signs_a_pause_decision_keyed_by_agent() -> None:
    s = signer()
    encoder = PauseEncoder("guard.pause", s, clock_ms=lambda: T0)
    decision = PauseDecision(
        agent="enrich-bot",
        reason="cap of 50 records/h exceeded",
        detector="velocity_cap",
        alert_id="a1",
        dedup_key="velocity_cap:a1",
        event_id="e9",
        occurred_at=T0,
    )
    topic, key, value = encoder(decision)
    got = PauseVerifier({"guard-1": s.public_key}).verify(value)
    assert (topic, key) == ("guard.pause", b"enrich-bot")
    assert got.state == "paused" and got.alert_id == "a1" and got.seq == T0 and got.expires_at is None
    assert PauseVerifier({"guard-1": s.public_key}).verify(encoder(decision)[2]).seq == T0 + 1


def test_the_agent_client_imports_no_faust() -> None:
    import subprocess
    import sys

    code = (
        "import sys, app.client, app.pause.keys; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('faust', 'mode', 'rocksdict')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-c", code]
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60)  # noqa: S603
    assert result.returncode == 0, result.stdout + result.stderr
