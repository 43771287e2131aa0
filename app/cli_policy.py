"""`crm-guard policy check|show`: read a policy file the way the guard will, before deploying it.

* `check FILE` validates it (a message naming the bad key and exit 2 when it is invalid), prints
  what the guard will enforce per agent, and the warnings of app/policy_lint.py (exit 1 with
  `--strict` when there are any; 0 otherwise).
* `show [FILE]` prints the effective policy as YAML with every default filled in (the shipped
  policy without FILE): the place to look up a detector's settings.
"""

from __future__ import annotations

import argparse
import sys
from enum import Enum
from typing import Any

import yaml
from pydantic import BaseModel

from app.policy_file import load_policy
from app.policy_lint import lint_policy, summary_lines
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
    """Add `policy check` and `policy show`."""
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
