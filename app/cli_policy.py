"""`crm-guard policy check|show|suggest`: read a policy file the way the guard will, before deploying it.

* `check FILE` validates it (a message naming the bad key and exit 2 when it is invalid), prints
  what the guard will enforce per agent, and the warnings of app/policy_lint.py (exit 1 with
  `--strict` when there are any; 0 otherwise).
* `show [FILE]` prints the effective policy as YAML with every default filled in (the shipped
  policy without FILE): the place to look up a detector's settings.
* `suggest --replay-dir DIR` writes candidate agent entries for the source identities a backtest
  could not attribute, with the scope each showed (app/policy_suggest.py).
"""

from __future__ import annotations

import argparse
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel

from app.policy_file import load_policy
from app.policy_lint import lint_policy, summary_lines
from app.policy_suggest import suggest_policy
from detectors.policy import parse_duration_ms
from detectors.settings import duration_ms

_DURATION_PARSERS = (parse_duration_ms, duration_ms)


def check_command(args: argparse.Namespace) -> int:
    policy = load_policy(args.file)  # PolicyError: message and exit 2 (app/cli.py)
    for line in summary_lines(policy):
        print(line)
    warnings = lint_policy(policy)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    verdict = f"{args.file}: valid" + (f", {len(warnings)} warning(s)" if warnings else "")
    print(verdict)
    return 1 if warnings and args.strict else 0


def show_command(args: argparse.Namespace) -> int:
    policy = load_policy(args.file)
    print(yaml.safe_dump(as_policy_yaml(policy), sort_keys=False, allow_unicode=True), end="")
    return 0


def suggest_command(args: argparse.Namespace) -> int:
    census = Path(args.replay_dir) / "identities.jsonl"
    if not census.is_file():
        print(f"crm-guard policy suggest: {census}: no such file (run `crm-guard replay ... --out "
              f"{args.replay_dir}` first)", file=sys.stderr)
        return 2
    try:
        rows = [orjson.loads(line) for line in census.read_bytes().splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        print(f"crm-guard policy suggest: {census}: not JSON Lines ({exc})", file=sys.stderr)
        return 2
    policy = load_policy(args.policy) if args.policy else None
    try:
        if not all(isinstance(row, dict) for row in rows):
            raise TypeError("a line that is not an object")
        text = suggest_policy(rows, policy, source=args.replay_dir)
    except (KeyError, TypeError, ValueError) as exc:
        print(f"crm-guard policy suggest: {census}: not an identities file of `crm-guard replay` "
              f"({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def as_policy_yaml(value: Any) -> Any:
    """A policy (or part of one) as the policy file writes it: durations as `1h`, `5m`, not the
    milliseconds they are held in (a number in the file means seconds), so the output can be
    loaded again unchanged."""
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {}
        fields = type(value).model_fields
        for name in fields:
            held = getattr(value, name)
            is_duration = any(getattr(m, "func", None) in _DURATION_PARSERS for m in fields[name].metadata)
            out[name] = (
                format_duration(held) if is_duration and isinstance(held, int) else as_policy_yaml(held)
            )
        return out
    if isinstance(value, dict):
        return {(k.value if isinstance(k, Enum) else k): as_policy_yaml(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_policy_yaml(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value


def format_duration(ms: int) -> str:
    """Milliseconds in the largest unit that holds them exactly: 3600000 -> `1h`, 1500 -> `1500ms`."""
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `policy check`, `policy show` and `policy suggest`."""
    p = subparsers.add_parser(
        "policy", help="check a policy file, or show the effective policy with its defaults"
    )
    sub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    c = sub.add_parser("check", help="validate a policy file and warn about rules that attribute wrongly")
    c.add_argument("file", metavar="FILE", help="policy YAML")
    c.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    c.set_defaults(func=check_command)
    s = sub.add_parser("show", help="the effective policy as YAML, every default filled in")
    s.add_argument("file", metavar="FILE", nargs="?", help="policy YAML (default: the shipped policy)")
    s.set_defaults(func=show_command)
    g = sub.add_parser("suggest", help="candidate agents for the identities a backtest could not attribute")
    g.add_argument("--replay-dir", required=True, metavar="DIR", help="the --out of a `crm-guard replay`")
    g.add_argument("--policy", metavar="FILE", help="the policy that replay used (tiers, names taken)")
    g.add_argument("--out", metavar="FILE", help="write the YAML here (default: standard output)")
    g.set_defaults(func=suggest_command)
