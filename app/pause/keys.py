"""Loading and creating the Ed25519 keys of pause signals.

The guard (and the `crm-guard agents resume` CLI) holds the private key; agents hold public keys
only, as a dict key_id -> key, so they can trust two keys during a rotation:

* private key: `pause_private_key_file` (PEM, PKCS#8) with `pause_key_id` from the settings, or the
  environment variable CRM_GUARD_PAUSE_PRIVATE_KEY (a PEM text, or base64 of the raw 32 bytes);
  with neither, `crm-guard run`/`demo` use a local key created once in the state dir
  (`load_or_create_signing_key`), whose id `local-<fingerprint>` says it is not a managed key.
* public keys: files `<key_id>.pub` (PEM SubjectPublicKeyInfo, or base64 raw), a directory of
  them, or CRM_GUARD_PAUSE_PUBLIC_KEYS as JSON {"key_id": "<PEM or base64>"} or
  `key_id:base64,key_id2:base64`.

Nothing here reads the environment unless given a mapping (`env=os.environ`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.pause.signing import PauseSigner

if TYPE_CHECKING:
    from app.config import Settings

PRIVATE_KEY_ENV = "CRM_GUARD_PAUSE_PRIVATE_KEY"
PUBLIC_KEYS_ENV = "CRM_GUARD_PAUSE_PUBLIC_KEYS"
LOCAL_KEY_DIR = "pause-keys"
LOCAL_KEY_FILE = "local.key"


class KeyConfigError(ValueError):
    """A key is missing or cannot be read; the message says which and where (never the key)."""


@dataclass(frozen=True)
class SigningKey:
    """A private key and the id agents know its public half by."""

    key_id: str
    private_key: Ed25519PrivateKey
    origin: str = ""

    def signer(self) -> PauseSigner:
        return PauseSigner(self.private_key, self.key_id)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_b64(self) -> str:
        return public_key_b64(self.public_key)

    def derived_secret(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose` (e.g. signing model checkpoints), derived from the
        private key, so workers sharing the pause key share it and nobody else has it."""
        raw = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return hmac.new(raw, f"crm-guard {purpose}".encode(), hashlib.sha256).digest()


def public_key_b64(key: Ed25519PublicKey) -> str:
    """Base64 of the raw 32-byte public key (what CRM_GUARD_PAUSE_PUBLIC_KEYS takes)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fingerprint(key: Ed25519PublicKey) -> str:
    """First 12 hex digits of SHA-256 over the raw public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:12]


def parse_private_key(text: str | bytes, where: str = "key") -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8) or base64 of the raw 32-byte seed."""
    data = text.encode() if isinstance(text, str) else text
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyConfigError(f"{where}: not a readable unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyConfigError(f"{where}: not an Ed25519 private key")
        return key
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyConfigError(f"{where}: neither PEM nor base64") from exc
    if len(raw) != 32:
        raise KeyConfigError(f"{where}: raw Ed25519 private key must be 32 bytes, got {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def parse_public_key(value: str | bytes | Ed25519PublicKey, where: str = "key") -> Ed25519PublicKey:
    """An Ed25519 public key from a key object, PEM, or base64 of the raw 32 bytes."""
    if isinstance(value, Ed25519PublicKey):
        return value
    data = value.encode() if isinstance(value, str) else value
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise KeyConfigError(f"{where}: not a readable PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyConfigError(f"{where}: not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyConfigError(f"{where}: neither PEM nor base64") from exc
    if len(raw) != 32:
        raise KeyConfigError(f"{where}: raw Ed25519 public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_private_key(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    env_var: str = PRIVATE_KEY_ENV,
) -> Ed25519PrivateKey:
    """From `path` when given, else from `env[env_var]`; KeyConfigError when neither is usable."""
    if path:
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise KeyConfigError(f"cannot read private key file {path}: {exc.strerror}") from exc
        return parse_private_key(text, str(path))
    if env is not None and env.get(env_var):
        return parse_private_key(env[env_var], env_var)
    raise KeyConfigError(f"no pause signing key: give a key file or set {env_var}")


def load_public_keys(
    *sources: Any, env: Mapping[str, str] | None = None, env_var: str = PUBLIC_KEYS_ENV
) -> dict[str, Ed25519PublicKey]:
    """Trusted public keys, key_id -> key, merged from every source given.

    A source is a mapping key_id -> (PEM | base64 | key object), a `<key_id>.pub` file, or a
    directory of such files. `env` adds CRM_GUARD_PAUSE_PUBLIC_KEYS.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for source in sources:
        if isinstance(source, Mapping):
            for key_id, value in source.items():
                keys[str(key_id)] = parse_public_key(value, f"public key {key_id!r}")
            continue
        path = Path(source)
        if path.is_dir():
            for file in sorted(path.glob("*.pub")):
                keys[file.stem] = parse_public_key(file.read_bytes(), str(file))
        elif path.is_file():
            keys[path.stem] = parse_public_key(path.read_bytes(), str(path))
        else:
            raise KeyConfigError(f"no such public key file or directory: {path}")
    if env is not None and env.get(env_var):
        keys.update(_parse_public_env(env[env_var], env_var))
    return keys


def _parse_public_env(text: str, where: str) -> dict[str, Ed25519PublicKey]:
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise KeyConfigError(f"{where}: not valid JSON") from exc
        return {str(k): parse_public_key(v, f"{where}[{k}]") for k, v in data.items()}
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key_id, sep, value = item.partition(":")
        if not sep or not key_id:
            raise KeyConfigError(f"{where}: expected key_id:base64 pairs separated by commas")
        out[key_id] = parse_public_key(value, f"{where}[{key_id}]")
    return out


def write_key_pair(
    out_dir: str | os.PathLike[str], key_id: str, private_key: Ed25519PrivateKey | None = None
) -> tuple[Path, Path]:
    """Write `<key_id>.key` (PKCS#8 PEM, mode 0600) and `<key_id>.pub` (PEM); refuses to overwrite."""
    if not key_id or "/" in key_id or key_id.startswith("."):
        raise KeyConfigError(f"bad key id {key_id!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / f"{key_id}.key", out / f"{key_id}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise KeyConfigError(f"{p} exists; not overwriting a key")
    key = private_key or Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_text(public_key_pem(key.public_key()))
    return priv_path, pub_path


def load_or_create_signing_key(state_dir: str | os.PathLike[str]) -> SigningKey:
    """The local key of a guard run without a configured key (the demo): created once, then reused.

    Its id is `local-<fingerprint>`; agents trust it with the `.pub` file written beside it.
    """
    directory = Path(state_dir) / LOCAL_KEY_DIR
    path = directory / LOCAL_KEY_FILE
    if path.exists():
        key = parse_private_key(path.read_bytes(), str(path))
    else:
        directory.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # Written whole under a temporary name, then linked into place (fails if the name exists):
        # another process starting on the same state directory (a worker's record process) never
        # reads a key file half written.
        temporary = directory / f".{LOCAL_KEY_FILE}.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process won the race: use its key
            return load_or_create_signing_key(state_dir)
        finally:
            temporary.unlink()
    key_id = f"local-{fingerprint(key.public_key())}"
    pub = directory / f"{key_id}.pub"
    if not pub.exists():
        temporary = directory / f".{key_id}.pub.{os.getpid()}"
        temporary.write_text(public_key_pem(key.public_key()))
        os.replace(temporary, pub)  # the same content whoever writes it; never seen half written
    return SigningKey(key_id, key, origin=str(path))


def local_key_paths(state_dir: str | os.PathLike[str]) -> Iterable[Path]:
    return (Path(state_dir) / LOCAL_KEY_DIR).glob("local-*.pub")


def signing_key_from_settings(
    settings: Settings, env: Mapping[str, str] | None = None, *, create: bool = True
) -> SigningKey:
    """The guard's signing key: key file, then CRM_GUARD_PAUSE_PRIVATE_KEY, then the local key.

    `create=False` (the CLI) never makes a new local key: a key agents do not know would sign
    resumes that every agent rejects.
    """
    env = os.environ if env is None else env
    if settings.pause_private_key_file:
        key = load_private_key(settings.pause_private_key_file)
        return SigningKey(settings.pause_key_id, key, origin=settings.pause_private_key_file)
    if env.get(PRIVATE_KEY_ENV):
        return SigningKey(settings.pause_key_id, load_private_key(env=env), origin=PRIVATE_KEY_ENV)
    local = Path(settings.state_dir) / LOCAL_KEY_DIR / LOCAL_KEY_FILE
    if create or local.exists():
        return load_or_create_signing_key(settings.state_dir)
    raise KeyConfigError(
        f"no pause signing key: set pause_private_key_file (CRM_GUARD_PAUSE_PRIVATE_KEY_FILE) or "
        f"{PRIVATE_KEY_ENV}, or run from the directory whose state dir holds the local key"
    )
