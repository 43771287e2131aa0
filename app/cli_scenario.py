"""`crm-guard scenario`: write a generated CRM scenario (three vendors' payloads, policy, truth).

    crm-guard scenario --out DIR [--seed N] [--days D] [--scale demo|standard|large|FACTOR]
                       [--max-events N] [--vendors hubspot,salesforce,pipedrive] [--no-faults]

`--scale` names a preset (demo: 4 days, ~3,500 events; standard: 3 weeks; large: 1,000,000 events
over ~200,000 records for the replay speed benchmark) or multiplies the standard team and traffic
by a factor. The files replay with `crm-guard replay DIR/*.jsonl --policy DIR/policy.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.scenario.generator import ScenarioConfig

PRESETS = ("demo", "standard", "large")


def _config(args: argparse.Namespace) -> ScenarioConfig:
    from app.scenario.generator import VENDORS, ScenarioConfig

    scale = str(args.scale).strip().lower()
    if scale in PRESETS:
        config = ScenarioConfig.preset(scale)
    else:
        try:
            factor = float(scale)
        except ValueError:
            raise ValueError(
                f"--scale must be one of {', '.join(PRESETS)} or a positive number, got {args.scale!r}"
            ) from None
        if not 0 < factor <= 100:
            raise ValueError("--scale factor must be above 0 and at most 100")
        config = replace(ScenarioConfig.preset("standard"), scale=factor, name=f"scale-{factor:g}")
    changes: dict[str, Any] = {"seed": args.seed}
    if args.days is not None:
        if not 0 < args.days <= 366:
            raise ValueError("--days must be above 0 and at most 366")
        changes["days"] = float(args.days)
        changes["warmup_days"] = min(config.warmup_days, max(0.0, args.days / 4))
    if args.max_events is not None:
        if args.max_events <= 0:
            raise ValueError("--max-events must be positive")
        changes["max_events"] = args.max_events
    if args.vendors:
        vendors = tuple(v.strip().lower() for v in args.vendors.split(",") if v.strip())
        bad = [v for v in vendors if v not in VENDORS]
        if bad or not vendors:
            raise ValueError(f"--vendors takes a comma-separated list of {', '.join(VENDORS)}")
        changes["vendors"] = vendors
    if args.no_faults:
        changes["fault_plan"] = "none"
    return replace(config, **changes)


def _handler(args: argparse.Namespace) -> int:
    from app.scenario.generator import generate

    try:
        config = _config(args)
    except ValueError as exc:
        print(f"crm-guard scenario: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"crm-guard scenario: --out {out} exists and is not a directory", file=sys.stderr)
        return 2
    try:
        result = generate(config, out)
    except OSError as exc:
        print(f"crm-guard scenario: cannot write to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stats = result.stats
    if not args.quiet:
        per_vendor = ", ".join(f"{v} {n:,}" for v, n in stats["events"].items())
        print(
            f"scenario {config.name} seed {config.seed}: {stats['events_total']:,} events ({per_vendor}) "
            f"over {stats['records_total']:,} records, {config.days:g} days"
        )
        print(f"wrote {', '.join(p.name for p in result.files)} to {out}")
        print(f"replay: crm-guard replay {out}/*.jsonl --policy {out}/policy.yaml --out {out}/replay")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `crm-guard scenario`."""
    p = subparsers.add_parser("scenario", help="generate CRM traffic with injected faults and ground truth")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="directory for the .jsonl files, policy.yaml, truth.json"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same files)")
    p.add_argument("--days", type=float, default=None, help="simulated days (default: the preset's)")
    p.add_argument(
        "--scale",
        default="standard",
        metavar="PRESET|FACTOR",
        help="demo, standard (default), large, or a factor on the standard team and traffic",
    )
    p.add_argument("--max-events", type=int, default=None, metavar="N", help="stop after N events")
    p.add_argument("--vendors", default=None, help="comma-separated subset of hubspot,salesforce,pipedrive")
    p.add_argument("--no-faults", action="store_true", help="benign traffic only")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_handler)
