#!/usr/bin/env python3
"""Regenerate the bundled demonstration incident in app/demo/ (used by `make run`, the demo and tests).

Four days of traffic in HubSpot, Salesforce and Pipedrive formats: a quiet first day, then one day
per vendor in which every fault class of app/scenario/truth.py happens once, among benign
look-alikes (an import, bulk edits, enrichment just under the cap, humans correcting humans).
Writes hubspot.jsonl, salesforce.jsonl, pipedrive.jsonl, policy.yaml and truth.json; the files are
committed, so run this only when the generator changes (the output is deterministic).

    python scripts/make_demo.py [--out app/demo] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.scenario.generator import ScenarioConfig, generate  # noqa: E402

DEMO_SEED = 7
MAX_BYTES = 2_200_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "app" / "demo"))
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    args = parser.parse_args(argv)
    result = generate(ScenarioConfig.preset("demo", seed=args.seed), args.out)
    size = sum(p.stat().st_size for p in result.files)
    print(f"demo incident: {result.stats['events_total']:,} events, {size / 1e6:.2f} MB in {args.out}")
    if size > MAX_BYTES:
        print(f"warning: the demo files are over {MAX_BYTES / 1e6:.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
