#!/usr/bin/env python3
"""Replay speed: `crm-guard replay` end to end on 1,000,000 events, beside a bare read + decode loop.

    python bench/replay_speed.py [--preset large] [--seed 1] [--repeat 1] [--json FILE] [--keep]

1. The scenario: `app.scenario.generate` with the preset (`large`: ~1,000,000 events over ~217,000
   records in three vendors' formats, 446 MB), cached under bench/out/ (gitignored) and reused
   while the generator's output for that preset and seed is there (`--regenerate` to redo it).
2. In the same run, each in its own child process (so that peaks of memory do not mix, and each
   starts cold), timed from the first byte read to the last byte written:
   * bare loop: read every line of the three JSONL files and `orjson.loads` it, nothing else;
   * replay: `app.replay.run_replay(files, out, policy)` with the scenario's policy.yaml: parse,
     normalize (the vendor adapters), order, attribute, every detector of detectors/registry.py,
     and write alerts, pauses, overrides, dead letters, timeline and summary.
   Events are the canonical events the adapters make of the files (the replay's events plus the
   redeliveries it skipped as duplicates); both rows divide that same count by their own time.
   Peak memory is the child's ru_maxrss (resource.getrusage), interpreter and imports included.
3. It prints one table (events/s, CPU seconds, peak RSS, ratio to the bare loop) and the goals of
   issue 3: at least 100,000 events/s and a peak under 1.5 GB.

The machine is shared: the load average at the start and the CPU time of each child are printed
beside the wall-clock figures, so a slow run on a busy machine shows as such. This is a benchmark
that prints figures, not a test; the exit status is 0 whatever they are (2 on bad arguments).
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
VENDOR_FILES = ("hubspot.jsonl", "salesforce.jsonl", "pipedrive.jsonl")
GOAL_EVENTS_PER_S = 100_000
GOAL_PEAK_BYTES = 1.5e9


# ---- the scenario ---------------------------------------------------------------------------------


def scenario_dir(preset: str, seed: int) -> Path:
    return OUT / f"scenario-{preset}-s{seed}"


def generator_digest() -> str:
    """A digest of the generator's sources: a cached scenario from another generator is not reused."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "app" / "scenario").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_scenario(preset: str, seed: int, regenerate: bool = False) -> tuple[Path, dict[str, Any]]:
    """The generated scenario's directory and its generator stats; generates it when not cached.

    A scenario counts as cached only with its `scenario.json` marker, written after every file and
    naming the generator's digest, so an interrupted generation, or one by a generator that has
    changed since, is redone rather than measured.
    """
    from app.scenario.generator import ScenarioConfig, generate

    target = scenario_dir(preset, seed)
    marker = target / "scenario.json"
    digest = generator_digest()
    if marker.exists() and not regenerate:
        info: dict[str, Any] = json.loads(marker.read_text())
        if info.get("generator") == digest:
            return target, info
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    print(f"generating the {preset} scenario (seed {seed}) into {target.relative_to(ROOT)} ...", flush=True)
    started = time.perf_counter()
    result = generate(ScenarioConfig.preset(preset, seed=seed), tmp)
    seconds = round(time.perf_counter() - started, 1)
    info = {"preset": preset, "seed": seed, "seconds": seconds, "generator": digest, "stats": result.stats}
    (tmp / "scenario.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    tmp.rename(target)
    return target, info


# ---- the children: each measures one thing in a fresh process ------------------------------------


def _rusage() -> dict[str, Any]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_s": me.ru_utime + me.ru_stime,
        "maxrss_bytes": me.ru_maxrss * 1024,  # Linux reports KiB
        "children_cpu_s": kids.ru_utime + kids.ru_stime,
        "children_maxrss_bytes": kids.ru_maxrss * 1024,
    }


def child_bare(directory: Path) -> dict[str, Any]:
    """Read and JSON-decode every line of the vendor files; nothing else."""
    import orjson

    loads = orjson.loads
    paths = [directory / name for name in VENDOR_FILES]
    lines = 0
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            for raw in handle:
                if raw.strip():
                    loads(raw)
                    lines += 1
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "lines": lines, **_rusage()}


def child_replay(directory: Path, out_dir: Path, workers: int) -> dict[str, Any]:
    """`run_replay` over the vendor files with the scenario's policy (what `crm-guard replay --workers N` runs)."""
    from app.policy_file import load_policy
    from app.replay import run_replay

    paths = [directory / name for name in VENDOR_FILES]
    policy = load_policy(directory / "policy.yaml")
    shutil.rmtree(out_dir, ignore_errors=True)
    started = time.perf_counter()
    if workers == 1:
        summary = run_replay(paths, out_dir, policy)  # as the CLI calls it (versions without workers too)
    else:
        summary = run_replay(paths, out_dir, policy, workers=workers)
    seconds = time.perf_counter() - started
    written = sum(p.stat().st_size for p in out_dir.iterdir())
    return {"seconds": seconds, "summary": summary, "written_bytes": written, **_rusage()}


def run_child(kind: str, *args: str) -> dict[str, Any]:
    """Run one measurement in a child process; its figures come back as JSON on stdout."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 - our own script
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"replay_speed: the {kind} child failed (exit {proc.returncode})")
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


# ---- report ---------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _row(label: str, runs: list[dict[str, Any]], events: int, bare_rate: float | None) -> tuple[str, ...]:
    seconds = _median([r["seconds"] for r in runs])
    cpu = _median([r["cpu_s"] + r["children_cpu_s"] for r in runs])
    peak = max(r["maxrss_bytes"] + r["children_maxrss_bytes"] for r in runs)
    rate = events / seconds
    ratio = "1.000" if bare_rate is None else f"{rate / bare_rate:.3f}"
    return (label, f"{seconds:.1f}", f"{cpu:.1f}", f"{rate:,.0f}", f"{peak / 1e6:,.0f} MB", ratio)


def same_output(a: Path, b: Path) -> bool:
    """Byte-identical replay outputs (every file)."""
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(filecmp.cmp(a / name, b / name, shallow=False) for name in names)


def report(
    info: dict[str, Any], bare: list[dict[str, Any]], replays: dict[int, list[dict[str, Any]]],
    load: tuple[float, ...], identical: bool | None,
) -> dict[str, Any]:
    first = next(iter(replays.values()))
    summary = first[0]["summary"]
    events = summary["events"] + summary["duplicates_skipped"]
    stats = info["stats"]
    size = sum(stats["bytes"].values())
    bare_rate = events / _median([r["seconds"] for r in bare])
    rows = [
        ("", "wall s", "CPU s", "events/s", "peak RSS", "x bare"),
        _row("bare loop: read + orjson.loads", bare, events, None),
    ]
    for workers, runs in replays.items():
        label = "replay end to end, 1 process" if workers == 1 else f"replay end to end, {workers} processes"
        rows.append(_row(label, runs, events, bare_rate))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    print(
        f"replay speed: preset {info['preset']} seed {info['seed']}: {events:,} canonical events "
        f"({summary['events']:,} replayed + {summary['duplicates_skipped']:,} redeliveries skipped) "
        f"from {summary['lines']:,} lines, {stats['records_total']:,} records, {size / 1e6:,.0f} MB"
    )
    load_text = f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    print(f"machine: {os.cpu_count()} cores, load average at start {load_text}; "
          f"median of {len(bare)} run(s); CPU s and peak RSS of 2 processes are the sums of both")
    for row in rows:
        cells = [cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        print("  " + "  ".join(cells))
    print(f"replay output: {first[0]['written_bytes'] / 1e6:,.0f} MB written; alerts {summary['alerts']}, "
          f"dead letters {summary['deadletters']}, late events {summary['late_events']}")
    if identical is not None:
        print(f"outputs of 1 and 2 processes byte-identical: {'yes' if identical else 'NO'}")
    figures: dict[str, Any] = {
        "preset": info["preset"],
        "seed": info["seed"],
        "events": events,
        "records": stats["records_total"],
        "input_bytes": size,
        "load_average": list(load),
        "bare": bare,
        "bare_events_per_s": bare_rate,
        "replay_summary": summary,
        "identical_outputs": identical,
        "replay": {},
    }
    for workers, runs in replays.items():
        rate = events / _median([r["seconds"] for r in runs])
        peak = max(r["maxrss_bytes"] + r["children_maxrss_bytes"] for r in runs)
        speed = "met" if rate >= GOAL_EVENTS_PER_S else "NOT met"
        memory = "met" if peak < GOAL_PEAK_BYTES else "NOT met"
        label = f"{workers} process{'es' if workers > 1 else ''}"
        print(f"{label}: goal >= {GOAL_EVENTS_PER_S:,} events/s {speed} ({rate:,.0f}); "
              f"goal peak < {GOAL_PEAK_BYTES / 1e9:.1f} GB {memory} ({peak / 1e9:.2f} GB)")
        figures["replay"][str(workers)] = {
            "runs": [{k: v for k, v in r.items() if k != "summary"} for r in runs],
            "events_per_s": rate,
            "peak_rss_bytes": peak,
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="large", choices=("demo", "standard", "large"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], choices=(1, 2),
                        help="replay with 1 and/or 2 processes (default: both)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement (medians printed)")
    parser.add_argument("--regenerate", action="store_true", help="generate the scenario even when cached")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the replay output (bench/out/replay-*)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "bare":
            result = child_bare(Path(rest[0]))
        else:
            result = child_replay(Path(rest[0]), Path(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return 0
    if args.repeat < 1:
        print("replay_speed: --repeat must be at least 1", file=sys.stderr)
        return 2
    directory, info = ensure_scenario(args.preset, args.seed, args.regenerate)
    workers = list(dict.fromkeys(args.workers))
    outs = {w: OUT / f"replay-{args.preset}-s{args.seed}-w{w}" for w in workers}
    load = os.getloadavg()
    bare: list[dict[str, Any]] = []
    replays: dict[int, list[dict[str, Any]]] = {w: [] for w in workers}
    for _ in range(args.repeat):
        bare.append(run_child("bare", str(directory)))
        for w in workers:
            replays[w].append(run_child("replay", str(directory), str(outs[w]), str(w)))
    identical = same_output(outs[1], outs[2]) if len(outs) == 2 else None
    figures = report(info, bare, replays, load, identical)
    if not args.keep:
        for out in outs.values():
            shutil.rmtree(out, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
