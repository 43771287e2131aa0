"""`crm-guard`: the command line. Each command lives in its own module; this file only dispatches.

Exit codes: 0 success; 1 the command failed (a service unreachable, an unexpected error); 2 a
user error (bad arguments, bad policy or config file); 3 replay finished but dead-lettered input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Sequence

from app.cli_types import non_negative_float, positive_int
from app.config import SettingsError
from app.policy_file import PolicyError, load_policy
from app.policy_lint import lint_policy

# Modules that add commands with `register(subparsers)`, in the order `--help` lists them.
COMMAND_MODULES: list[str] = [
    "app.cli_run", "app.cli_agents", "app.cli_keys", "app.cli_review", "app.cli_timeline", "app.cli_scenario",
    "app.cli_policy", "app.cli_users", "app.cli_history", "app.cli_salesforce",
]


def _replay(args: argparse.Namespace) -> int:
    from app.replay import EXIT_DEADLETTERS, EXIT_OK, print_summary, run_replay

    policy = load_policy(args.policy)
    if not args.quiet:
        for warning in lint_policy(policy):
            print(f"crm-guard replay: policy warning: {warning}", file=sys.stderr)
    paths = [Path(p) for p in args.files]
    for path in paths:
        if not path.is_file():
            problem = "a directory, not a file" if path.is_dir() else "no such file"
            print(f"crm-guard replay: {path}: {problem}", file=sys.stderr)
            return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"crm-guard replay: --out {out}: cannot create it ({exc.strerror or exc})", file=sys.stderr)
        return 2
    if not os.access(out, os.W_OK):
        print(f"crm-guard replay: --out {out}: not writable", file=sys.stderr)
        return 2
    summary = run_replay(
        paths, out, policy, source=args.source, max_bytes=args.max_bytes,
        max_disorder_ms=int(args.max_disorder * 1000), show_progress=sys.stderr.isatty() and not args.quiet,
        workers=replay_workers(args.workers),
    )
    if not args.quiet:
        print_summary(summary, out, sys.stdout)
    return EXIT_DEADLETTERS if summary["deadletters"] else EXIT_OK


def replay_workers(choice: str) -> int:
    """Processes for `crm-guard replay --workers`: `auto` uses a second core when there is one,
    on Linux only (the second process is forked; macOS does not fork safely once system
    frameworks are loaded)."""
    if choice == "auto":
        return 2 if sys.platform.startswith("linux") and (os.cpu_count() or 1) >= 2 else 1
    return int(choice)


def _add_replay(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from app.replay import SOURCES

    p = sub.add_parser("replay", help="backtest: run every detector over recorded payloads (JSON Lines)")
    p.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines: one delivered payload per line")
    p.add_argument("--out", required=True, metavar="DIR", help="where alerts.jsonl, summary.json, ... go")
    p.add_argument("--source", choices=SOURCES, default="auto", help="payload format (default: detect per line)")
    p.add_argument("--policy", metavar="FILE", help="policy YAML (default: shipped defaults, no agents)")
    p.add_argument("--max-bytes", type=positive_int, default=16_000_000,
                   help="lines longer than this are dead-lettered (default 16000000, the webhook receiver's "
                        "max_delivery_bytes: a HubSpot batch of 100 long notifications passes 1 MB)")
    p.add_argument("--max-disorder", type=non_negative_float, default=3600.0, metavar="SECONDS",
                   help="event-time disorder the reorder buffer absorbs per file (default 3600)")
    p.add_argument("--workers", choices=("auto", "1", "2"), default="auto",
                   help="2: the link and actor stages in a second process (same output, ~1.2-1.3x faster); "
                        "auto (default): 2 on Linux with two cores or more")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=_replay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-guard",
        description="Keeps AI agents honest in your CRM: attribution, scope, silent-failure detection, pauses.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_replay(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (PolicyError, SettingsError) as exc:
        print(f"crm-guard {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
