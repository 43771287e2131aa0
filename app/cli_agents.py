"""`crm-guard agents list` and `crm-guard agents resume AGENT --reason TEXT [--by NAME]`.

`resume` publishes a signed `active` message for the agent to `guard.pause` (the private key from
pause_private_key_file, CRM_GUARD_PAUSE_PRIVATE_KEY, or the local key in the state dir), with
`issued_by` naming who did it, and an audit record `{"type": "resume", ...}` to `guard.feedback`
keyed by the agent (so the agent's FeedbackReader sees it too). `--for 2h` makes it a time-limited
resume: the agent is paused again when it expires.

`list` reads guard.pause (latest signed state per agent) and guard.alerts (latest version per
dedup key) and prints one line per agent: state, since, by whom, open alerts, last activity seen in
an alert, and the reason.

Broker: `bootstrap_servers` from the settings (CRM_GUARD_BOOTSTRAP_SERVERS or the config file) or
`--bootstrap`. `crm-guard demo` prints the embedded broker's address.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from app.config import Settings, SettingsError, load_settings
from app.pause.keys import KeyConfigError, load_public_keys, local_key_paths, signing_key_from_settings
from app.pause.publisher import PausePublisher, PauseRecord, read_pause_topic
from app.pause.reader import read_to_end
from app.pause.signing import PausePayload, PauseVerifier
from app.runtime.kafka_client import client_kwargs


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _fmt_time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def trusted_keys(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    """Public keys the CLI can check signatures with: its own key, CRM_GUARD_PAUSE_PUBLIC_KEYS,
    and local demo keys in the state dir."""
    keys: dict[str, Any] = {}
    try:
        own = signing_key_from_settings(settings, env, create=False)
        keys[own.key_id] = own.public_key
    except KeyConfigError:
        pass
    for path in local_key_paths(settings.state_dir):
        keys.update(load_public_keys(path))
    keys.update(load_public_keys(env=env))
    return keys


def policy_agents(settings: Settings) -> list[str]:
    if not settings.policy_file:
        return []
    from app.policy_file import load_policy

    return sorted(load_policy(settings.policy_file).agents)


async def resume_agent(
    settings: Settings,
    agent: str,
    reason: str,
    by: str,
    *,
    expires_in_ms: int | None = None,
    env: Mapping[str, str],
    idempotent: bool = False,
) -> tuple[PausePayload, PauseRecord | None]:
    """Publish a signed resume for `agent`; returns it and the state it replaced."""
    if not reason.strip():
        raise UserError("--reason must say why the agent may act again")
    try:
        key = signing_key_from_settings(settings, env, create=False)
    except KeyConfigError as exc:
        raise UserError(str(exc)) from exc
    kw = client_kwargs(settings)
    verifier = PauseVerifier(trusted_keys(settings, env))
    records = await read_pause_topic(settings.bootstrap_servers, settings.topics.pause, verifier, **kw)
    previous = records.get(agent)
    if previous is None and agent not in policy_agents(settings):
        known = sorted(set(records) | set(policy_agents(settings)))
        raise UserError(
            f"unknown agent {agent!r}: not in the policy and never paused"
            + (f" (known: {', '.join(known)})" if known else "")
        )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=idempotent, **kw
    )
    await producer.start()
    try:
        publisher = PausePublisher(producer, settings.topics.pause, key.signer())
        publisher.seed({a: r.seq for a, r in records.items() if r.seq is not None})
        expires_at = _now_ms() + expires_in_ms if expires_in_ms else None
        prev = previous.payload if previous else None
        payload = await publisher.resume(
            agent, reason, issued_by=by, expires_at=expires_at, alert_id=prev.alert_id if prev else None
        )
        audit = {
            "type": "resume",
            "agent": agent,
            "by": by,
            "reason": reason,
            "at": payload.issued_at,
            "seq": payload.seq,
            "expires_at": expires_at,
            "key_id": payload.key_id,
            "previous": None
            if prev is None
            else {
                "state": prev.state,
                "reason": prev.reason,
                "alert_id": prev.alert_id,
                "seq": prev.seq,
                "issued_by": prev.issued_by,
            },
        }
        await producer.send_and_wait(settings.topics.feedback, key=agent.encode(), value=orjson.dumps(audit))
    finally:
        await producer.stop()
    return payload, previous


async def agent_rows(settings: Settings, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per agent: from the policy, guard.pause and guard.alerts."""
    kw = client_kwargs(settings)
    keys = trusted_keys(settings, env)
    verifier = PauseVerifier(keys) if keys else None
    records = await read_pause_topic(settings.bootstrap_servers, settings.topics.pause, verifier, **kw)
    latest: dict[str, dict[str, Any]] = {}
    async for record in read_to_end(settings.bootstrap_servers, settings.topics.alerts, **kw):
        try:
            alert = orjson.loads(record.value)
            key, version = alert["dedup_key"], int(alert["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if key not in latest or version >= int(latest[key]["version"]):
            latest[key] = alert
    open_by_agent: dict[str, list[dict[str, Any]]] = {}
    last_seen: dict[str, int] = {}
    for alert in latest.values():
        agent = alert.get("agent")
        if not agent:
            continue
        last_seen[agent] = max(last_seen.get(agent, 0), int(alert.get("last_event_at") or 0))
        if alert.get("status") == "open":
            open_by_agent.setdefault(agent, []).append(alert)
    now = _now_ms()
    rows = []
    for agent in sorted(set(policy_agents(settings)) | set(records) | set(open_by_agent)):
        rec = records.get(agent)
        p = rec.payload if rec else None
        if p is None:
            state = "active" if rec is None else f"unknown ({rec.error})"
        else:
            state = p.state
            if p.expired(now):
                state = "paused (resume expired)" if p.state == "active" else "paused"
            if verifier is None:
                state += " (unverified)"
            elif not rec.verified:  # type: ignore[union-attr]
                state += f" ({rec.error or 'unverified'})"  # type: ignore[union-attr]
        alerts = sorted(open_by_agent.get(agent, []), key=lambda a: a.get("severity") != "critical")
        rows.append(
            {
                "agent": agent,
                "state": state,
                "since": p.issued_at if p else None,
                "by": p.issued_by if p else None,
                "reason": p.reason if p else "",
                "seq": p.seq if p else None,
                "expires_at": p.expires_at if p else None,
                "open_alerts": len(alerts),
                "alert_kinds": sorted({a["kind"] for a in alerts}),
                "last_activity": last_seen.get(agent),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], out: Any) -> None:
    header = ["AGENT", "STATE", "SINCE", "BY", "OPEN ALERTS", "LAST ACTIVITY", "REASON"]
    lines = [header]
    for r in rows:
        alerts = str(r["open_alerts"]) + (f" ({', '.join(r['alert_kinds'])})" if r["alert_kinds"] else "")
        lines.append(
            [
                r["agent"],
                r["state"],
                _fmt_time(r["since"]),
                r["by"] or "-",
                alerts,
                _fmt_time(r["last_activity"]),
                (r["reason"] or "")[:60],
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [str(c).ljust(w) for c, w in zip(line[:-1], widths, strict=True)] + [str(line[-1])]
        print("  ".join(cells).rstrip(), file=out)
    if not rows:
        print("(no agents: none in the policy, none paused, no alerts)", file=out)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(file=args.config)
    if args.bootstrap:
        settings = settings.with_overrides(bootstrap_servers=args.bootstrap)
    if not settings.bootstrap_servers:
        raise UserError(
            "no Kafka broker configured: set CRM_GUARD_BOOTSTRAP_SERVERS or pass --bootstrap "
            "(`crm-guard demo` prints the embedded broker's address)"
        )
    return settings


def _run(args: argparse.Namespace, body: Any) -> int:
    import os

    try:
        settings = _settings(args)
        return int(asyncio.run(body(settings, os.environ)))
    except (UserError, SettingsError, KeyConfigError) as exc:
        print(f"crm-guard agents {args.agents_command}: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, OSError, ConnectionError) as exc:
        print(
            f"crm-guard agents {args.agents_command}: Kafka unreachable or too slow: {exc}", file=sys.stderr
        )
        return 1
    except Exception as exc:  # aiokafka raises its own errors for a broker that is not there
        if type(exc).__module__.startswith("aiokafka"):
            print(
                f"crm-guard agents {args.agents_command}: Kafka error: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            return 1
        raise


def _list(args: argparse.Namespace) -> int:
    async def body(settings: Settings, env: Mapping[str, str]) -> int:
        rows = await agent_rows(settings, env)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print_table(rows, sys.stdout)
        return 0

    return _run(args, body)


def _resume(args: argparse.Namespace) -> int:
    from detectors.policy import parse_duration_ms

    try:
        expires_in = parse_duration_ms(args.duration) if args.duration else None
    except ValueError as exc:
        print(f"crm-guard agents resume: --for: {exc}", file=sys.stderr)
        return 2
    by = args.by or getpass.getuser()

    async def body(settings: Settings, env: Mapping[str, str]) -> int:
        payload, previous = await resume_agent(
            settings,
            args.agent,
            args.reason,
            by,
            expires_in_ms=expires_in,
            env=env,
            idempotent=args.idempotence,
        )
        was = previous.payload.state if previous and previous.payload else "never paused"
        until = f", until {_fmt_time(payload.expires_at)}" if payload.expires_at else ""
        print(
            f"resumed {payload.agent} (was {was}) by {payload.issued_by}: seq {payload.seq}, "
            f"key {payload.key_id}{until}"
        )
        return 0

    return _run(args, body)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `agents list` and `agents resume`."""
    agents = subparsers.add_parser("agents", help="list agents and their pause state; resume a paused agent")
    sub = agents.add_subparsers(dest="agents_command", metavar="SUBCOMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="settings YAML (default: CRM_GUARD_CONFIG, then env)")
        p.add_argument(
            "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (overrides settings)"
        )

    lst = sub.add_parser("list", help="each agent's state, open alerts and recent activity")
    common(lst)
    lst.add_argument("--json", action="store_true", help="JSON instead of a table")
    lst.set_defaults(func=_list)

    res = sub.add_parser("resume", help="publish a signed resume for a paused agent")
    common(res)
    res.add_argument("agent", metavar="AGENT")
    res.add_argument("--reason", required=True, help="why the agent may act again (recorded)")
    res.add_argument("--by", help="who resumes it (default: the login name)")
    res.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="time-limited resume, e.g. 2h: paused again when it expires",
    )
    res.add_argument(
        "--idempotence",
        action="store_true",
        help="idempotent producer (Apache Kafka; not the embedded tansu broker)",
    )
    res.set_defaults(func=_resume)
