"""`crm-guard keys generate|public|resign`: the Ed25519 keys of pause signals.

* `generate --out DIR [--key-id ID]` writes DIR/ID.key (private, 0600) and DIR/ID.pub, and prints
  the line agents add to CRM_GUARD_PAUSE_PUBLIC_KEYS.
* `public` prints the key id and public key of the guard's current signing key (configured, or
  the local demo key in the state dir): what agents must trust.
* `resign [--by NAME]` re-signs every agent's latest pause state with the current key (step 4 of a
  rotation, see docs/alerts-and-pause.md).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from aiokafka import AIOKafkaProducer

from app.config import SettingsError, load_settings
from app.pause.keys import KeyConfigError, public_key_b64, signing_key_from_settings, write_key_pair


def _generate(args: argparse.Namespace) -> int:
    try:
        priv, pub = write_key_pair(args.out, args.key_id)
    except (KeyConfigError, OSError) as exc:
        print(f"crm-guard keys generate: {exc}", file=sys.stderr)
        return 2
    from app.pause.keys import load_public_keys

    key = load_public_keys(pub)[args.key_id]
    print(f"private key: {priv}  (give it to the guard: pause_private_key_file, pause_key_id={args.key_id})")
    print(f"public key:  {pub}  (give it to agents)")
    print(f"CRM_GUARD_PAUSE_PUBLIC_KEYS={args.key_id}:{public_key_b64(key)}")
    return 0


def _public(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(file=args.config)
        key = signing_key_from_settings(settings, os.environ, create=False)
    except (KeyConfigError, SettingsError) as exc:
        print(f"crm-guard keys public: {exc}", file=sys.stderr)
        return 2
    print(f"{key.key_id}:{key.public_b64()}")
    return 0


def _resign(args: argparse.Namespace) -> int:
    from app.cli_agents import trusted_keys
    from app.pause.publisher import PausePublisher, read_pause_topic
    from app.pause.signing import PauseVerifier
    from app.runtime.kafka_client import client_kwargs

    try:
        settings = load_settings(file=args.config)
        if args.bootstrap:
            settings = settings.with_overrides(bootstrap_servers=args.bootstrap)
        if not settings.bootstrap_servers:
            raise KeyConfigError(
                "no Kafka broker configured: set CRM_GUARD_BOOTSTRAP_SERVERS or pass --bootstrap"
            )
        key = signing_key_from_settings(settings, os.environ, create=False)
    except (KeyConfigError, SettingsError) as exc:
        print(f"crm-guard keys resign: {exc}", file=sys.stderr)
        return 2

    async def body() -> int:
        kw = client_kwargs(settings)
        records = await read_pause_topic(
            settings.bootstrap_servers,
            settings.topics.pause,
            PauseVerifier(trusted_keys(settings, os.environ)),
            **kw,
        )
        unverified = [a for a, r in records.items() if not r.verified]
        if unverified and not args.force:
            print(
                f"crm-guard keys resign: cannot verify the latest state of {', '.join(sorted(unverified))}; "
                "trust the old key (CRM_GUARD_PAUSE_PUBLIC_KEYS) or pass --force",
                file=sys.stderr,
            )
            return 2
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", **kw)
        await producer.start()
        try:
            publisher = PausePublisher(producer, settings.topics.pause, key.signer())
            publisher.seed({a: r.seq for a, r in records.items() if r.seq is not None})
            done = await publisher.republish(records.values(), issued_by=args.by or getpass.getuser())
        finally:
            await producer.stop()
        for p in done:
            print(f"re-signed {p.agent}: {p.state} (seq {p.seq}, key {p.key_id})")
        return 0

    try:
        return asyncio.run(body())
    except Exception as exc:
        if type(exc).__module__.startswith("aiokafka") or isinstance(exc, (OSError, asyncio.TimeoutError)):
            print(f"crm-guard keys resign: Kafka error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        raise


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `keys generate`, `keys public`, `keys resign`."""
    keys = subparsers.add_parser("keys", help="Ed25519 keys that sign pause and resume messages")
    sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    sub.required = True
    gen = sub.add_parser("generate", help="write a new key pair")
    gen.add_argument("--out", required=True, metavar="DIR")
    gen.add_argument("--key-id", default="guard-1", help="the id agents know the key by (default guard-1)")
    gen.set_defaults(func=_generate)
    pub = sub.add_parser("public", help="print the current signing key's id and public key")
    pub.add_argument("--config", metavar="FILE")
    pub.set_defaults(func=_public)
    res = sub.add_parser("resign", help="re-sign every agent's latest state with the current key")
    res.add_argument("--config", metavar="FILE")
    res.add_argument("--bootstrap", metavar="HOST:PORT")
    res.add_argument("--by", help="recorded as issued_by (default: the login name)")
    res.add_argument(
        "--force",
        action="store_true",
        help="also re-sign states the CLI cannot verify (check `agents list` first)",
    )
    res.set_defaults(func=_resign)
