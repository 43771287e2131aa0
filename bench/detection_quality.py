#!/usr/bin/env python3
"""Detection quality: generate scenarios with several seeds, replay them, score the alerts against truth.

    python bench/detection_quality.py [--seeds 1 2 3] [--preset standard] [--keep DIR] [--json FILE]

For every seed: `app.scenario.generate` writes three vendors' payloads, policy.yaml and truth.json;
`app.replay.run_replay` (the `crm-guard replay` backtest) runs every detector over them; this script
reads alerts.jsonl and pauses.jsonl and scores them against truth.json:

* per fault instance (each fault class once per vendor): detected or not, by the first alert of an
  expected kind (truth.EXPECTED_DETECTORS) for the faulty actor that covers the fault; time to detect
  (event time from the first faulty change to that alert's detection; when the alert had opened
  before the fault, to the first faulty change in its evidence); faulty changes up to and including
  the detection (for a velocity burst only the changes beyond the cap count as faulty);
* false alerts: warning-or-worse alerts not explained by a fault (an alert of any kind about a
  fault's actor, on its vendor, between its first change and 24 h after its last one), per
  simulated day;
* pauses of humans (must be 0), and pauses of agents that no fault explains.

Goals (issue 3): every fault class detected in every seed; a median of at most 5 faulty changes
before the first alert; at most one false warning per simulated day; no human ever paused.
Prints a table; exit status 0 whatever the figures (this is a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.policy_file import load_policy  # noqa: E402
from app.replay import run_replay  # noqa: E402
from app.scenario.generator import ScenarioConfig, generate  # noqa: E402
from app.scenario.truth import EXPECTED_DETECTORS, FAULT_CLASSES, load_truth  # noqa: E402

DAY = 86_400_000
GRACE_MS = 24 * 3_600_000
GOAL_MEDIAN_CHANGES = 5
GOAL_FALSE_PER_DAY = 1.0


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _vendors_of(alert: dict[str, Any]) -> set[str]:
    return {key.split("/", 1)[0] for key in alert.get("sample_record_keys") or []}


def _fault_keys(fault: dict[str, Any]) -> tuple[set[str], set[str], dict[str, int]]:
    """(record keys, event ids, event id -> time) of a fault's faulty changes."""
    keys, ids, times = set(), set(), {}
    for change in fault["changes"]:
        keys.add(f"{fault['vendor']}/{change['object_type']}/{change['record_id']}")
        for event_id in [change.get("event_id"), *(change.get("event_ids") or [])]:
            if event_id:
                ids.add(event_id)
                times[event_id] = change["at"]
    return keys, ids, times


def _covers(alert: dict[str, Any], fault: dict[str, Any], keys: set[str], ids: set[str]) -> bool:
    """The alert is about this fault: its actor, and its evidence, records or time and vendor."""
    if alert["actor_key"] != fault["actor_key"]:
        return False
    if ids.intersection(alert.get("evidence_event_ids") or []):
        return True
    if keys.intersection(alert.get("sample_record_keys") or []):
        return True
    in_time = fault["start"] - 60_000 <= alert["detected_at"] <= fault["end"] + GRACE_MS
    return in_time and fault["vendor"] in _vendors_of(alert)


def score_fault(fault: dict[str, Any], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """Detection, time to detect and faulty changes before the first covering alert of an expected kind."""
    keys, ids, times = _fault_keys(fault)
    expected = set(EXPECTED_DETECTORS[fault["class"]])
    counted = [c for c in fault["changes"] if fault["class"] != "velocity_burst" or c.get("over_cap")]
    first = counted[0]["at"] if counted else fault["start"]
    best: tuple[int, dict[str, Any]] | None = None
    for alert in alerts:
        if alert["kind"] not in expected or not _covers(alert, fault, keys, ids):
            continue
        if alert["detected_at"] >= fault["start"] - 60_000:
            at = alert["detected_at"]
        else:  # opened before the fault by something else: the fault is seen once it is in the evidence
            hits = [times[e] for e in alert.get("evidence_event_ids") or [] if e in times]
            if not hits:
                continue
            at = min(hits)
        if best is None or at < best[0]:
            best = (at, alert)
    out: dict[str, Any] = {
        "id": fault["id"],
        "class": fault["class"],
        "vendor": fault["vendor"],
        "actor": fault["actor_key"],
        "faulty_changes": len(counted),
        "detected": best is not None,
    }
    if best is not None:
        at, alert = best
        out.update(
            {
                "detector": f"{alert['kind']}/{alert['group']}"[:60],
                "severity": alert["severity"],
                "action": alert.get("action", "none"),
                "ttd_min": max(0.0, (at - first) / 60_000),
                "changes_before": sum(1 for c in counted if c["at"] <= at),
            }
        )
    return out


def explained(alert: dict[str, Any], faults: list[dict[str, Any]], prepared: list[Any]) -> bool:
    """An alert about a fault's actor on its vendor during the fault (or naming its changes)."""
    for fault, (keys, ids, _) in zip(faults, prepared, strict=True):
        if alert["actor_key"] != fault["actor_key"]:
            continue
        if ids.intersection(alert.get("evidence_event_ids") or []) or keys.intersection(
            alert.get("sample_record_keys") or []
        ):
            return True
        overlap = (
            alert["first_event_at"] <= fault["end"] + GRACE_MS
            and alert["last_event_at"] >= fault["start"] - 60_000
        )
        if overlap and (fault["vendor"] in _vendors_of(alert) or not _vendors_of(alert)):
            return True
    return False


def run_seed(seed: int, preset: str, work: Path) -> dict[str, Any]:
    """Generate, replay and score one seed."""
    scenario = work / f"seed-{seed}"
    started = time.perf_counter()
    result = generate(ScenarioConfig.preset(preset, seed=seed), scenario)
    generated = time.perf_counter()
    policy = load_policy(scenario / "policy.yaml")
    paths = [
        scenario / f"{v}.jsonl"
        for v in ("hubspot", "salesforce", "pipedrive")
        if (scenario / f"{v}.jsonl").exists()
    ]
    out = scenario / "replay"
    summary = run_replay(paths, out, policy)
    replayed = time.perf_counter()
    truth = load_truth(scenario / "truth.json")
    alerts = _jsonl(out / "alerts.jsonl")
    pauses = _jsonl(out / "pauses.jsonl")
    faults = truth["faults"]
    scored = [score_fault(f, alerts) for f in faults]
    prepared = [_fault_keys(f) for f in faults]
    loud = [a for a in alerts if a["severity"] in ("warning", "critical")]
    false = [a for a in loud if not explained(a, faults, prepared)]
    agents = set(truth["agents"])
    human_pauses = [p for p in pauses if p["agent"] not in agents]
    human_pauses += [a for a in alerts if a.get("action") == "paused" and a.get("actor_kind") != "agent"]
    fault_actors = {f["actor_key"] for f in faults}
    unjustified = [
        p
        for p in pauses
        if p["agent"] in agents
        and not any(
            p["agent"] == f["actor_key"] and f["start"] - 60_000 <= p["occurred_at"] <= f["end"] + GRACE_MS
            for f in faults
        )
    ]
    days = (truth["end"] - truth["start"]) / DAY
    return {
        "seed": seed,
        "events": summary["events"],
        "deadletters": summary["deadletters"],
        "days": days,
        "generate_s": generated - started,
        "replay_s": replayed - generated,
        "faults": scored,
        "alerts": len(alerts),
        "loud_alerts": len(loud),
        "false_alerts": [
            {
                "kind": a["kind"],
                "group": a["group"],
                "actor": a["actor_key"],
                "severity": a["severity"],
                "detected_at": a["detected_at"],
                "count": a["count"],
                "summary": a["summary"][:140],
            }
            for a in false
        ],
        "false_per_day": len(false) / days if days else 0.0,
        "human_pauses": len(human_pauses),
        "pauses": [{"agent": p["agent"], "detector": p["detector"], "at": p["occurred_at"]} for p in pauses],
        "unjustified_pauses": [
            {
                "agent": p["agent"],
                "detector": p["detector"],
                "at": p["occurred_at"],
                "reason": p["reason"][:120],
            }
            for p in unjustified
        ],
        "fault_actors": sorted(fault_actors),
        "stats": truth.get("stats", {}),
        "lines": result.stats.get("lines", {}),
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(runs: list[dict[str, Any]], preset: str, stream: Any = sys.stdout) -> dict[str, Any]:
    """Print the table; return the aggregate figures."""
    w = stream.write
    seeds = [r["seed"] for r in runs]
    w(f"\nDetection quality: preset {preset}, seeds {', '.join(map(str, seeds))}\n")
    for r in runs:
        w(
            f"  seed {r['seed']}: {r['events']:,} events over {r['days']:.1f} days, "
            f"replay {r['replay_s']:.1f} s ({r['events'] / max(r['replay_s'], 1e-9):,.0f} events/s), "
            f"{r['alerts']} alerts "
            f"({r['loud_alerts']} warning+), {r['deadletters']} dead letters\n"
        )
    w("\n")
    header = (
        f"{'fault class':28} {'detected':>9} {'median TTD min':>15} {'median changes':>15} "
        f"{'max changes':>12}  detectors\n"
    )
    w(header)
    w("-" * (len(header) + 10) + "\n")
    all_changes: list[float] = []
    every_class_every_seed = True
    per_class: dict[str, Any] = {}
    for cls in FAULT_CLASSES:
        rows = [f for r in runs for f in r["faults"] if f["class"] == cls]
        hit = [f for f in rows if f["detected"]]
        for r in runs:
            if not any(f["detected"] for f in r["faults"] if f["class"] == cls):
                every_class_every_seed = False
        ttd = [f["ttd_min"] for f in hit]
        changes = [f["changes_before"] for f in hit]
        all_changes += changes
        detectors = Counter(f["detector"].split("/")[0] for f in hit)
        per_class[cls] = {
            "instances": len(rows),
            "detected": len(hit),
            "median_ttd_min": _median(ttd),
            "median_changes": _median(changes),
            "max_changes": max(changes) if changes else None,
        }
        w(
            f"{cls:28} {len(hit):>4}/{len(rows):<4} {_fmt(_median(ttd)):>15} {_fmt(_median(changes)):>15} "
            f"{(max(changes) if changes else '-'):>12}  "
            f"{', '.join(f'{k} {v}' for k, v in detectors.most_common())}\n"
        )
    missed = [f for r in runs for f in r["faults"] if not f["detected"]]
    if missed:
        w("\nmissed fault instances:\n")
        for r in runs:
            for f in r["faults"]:
                if not f["detected"]:
                    w(
                        f"  seed {r['seed']} {f['id']} "
                        f"({f['faulty_changes']} faulty changes by {f['actor']})\n"
                    )
    false_per_day = [r["false_per_day"] for r in runs]
    human_pauses = sum(r["human_pauses"] for r in runs)
    median_changes = _median(all_changes)
    w("\nfalse alerts (warning+, no fault explains them):\n")
    for r in runs:
        kinds = Counter(f"{a['kind']} by {a['actor']}" for a in r["false_alerts"])
        w(
            f"  seed {r['seed']}: {len(r['false_alerts'])} in {r['days']:.1f} days "
            f"= {r['false_per_day']:.2f}/day"
            + (f"  ({'; '.join(f'{k} x{v}' for k, v in kinds.most_common(8))})" if kinds else "")
            + "\n"
        )
    w(
        f"\npauses of humans: {human_pauses}; agent pauses no fault explains: "
        f"{sum(len(r['unjustified_pauses']) for r in runs)}\n"
    )
    goals = {
        "every_class_every_seed": every_class_every_seed,
        "median_changes_before_alert": median_changes,
        "median_changes_ok": median_changes is not None and median_changes <= GOAL_MEDIAN_CHANGES,
        "false_per_day_max": max(false_per_day) if false_per_day else 0.0,
        "false_per_day_ok": all(x <= GOAL_FALSE_PER_DAY for x in false_per_day),
        "human_pauses": human_pauses,
        "human_pauses_ok": human_pauses == 0,
    }
    w("\ngoals:\n")
    w(f"  every fault class detected in every seed: {'yes' if goals['every_class_every_seed'] else 'NO'}\n")
    w(
        f"  median faulty changes before the first alert <= {GOAL_MEDIAN_CHANGES}: {_fmt(median_changes)} "
        f"({'ok' if goals['median_changes_ok'] else 'MISSED'})\n"
    )
    w(
        f"  false warnings per simulated day <= {GOAL_FALSE_PER_DAY:g}: "
        f"worst seed {goals['false_per_day_max']:.2f} "
        f"({'ok' if goals['false_per_day_ok'] else 'MISSED'})\n"
    )
    w(f"  humans paused: {human_pauses} ({'ok' if goals['human_pauses_ok'] else 'MISSED'})\n")
    return {"per_class": per_class, "goals": goals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--preset", default="standard", choices=("demo", "standard", "large"))
    parser.add_argument("--keep", metavar="DIR", help="keep the scenarios and replay outputs here")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="list every fault instance and false alert"
    )
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="crm-guard-dq-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            runs.append(run_seed(seed, args.preset, work))
    aggregate = report(runs, args.preset)
    if args.verbose:
        for r in runs:
            print(f"\nseed {r['seed']} fault instances:")
            for f in r["faults"]:
                if f["detected"]:
                    print(
                        f"  {f['id']:40} {f['detector']:36} "
                        f"after {f['changes_before']:>3}/{f['faulty_changes']} "
                        f"changes, {f['ttd_min']:.0f} min, {f['severity']}, action {f['action']}"
                    )
                else:
                    print(f"  {f['id']:40} NOT DETECTED ({f['faulty_changes']} faulty changes)")
            for a in r["false_alerts"]:
                print(
                    f"  false: {a['kind']}/{a['group'][:30]} {a['severity']} {a['actor']} "
                    f"x{a['count']}: {a['summary']}"
                )
            for p in r["unjustified_pauses"]:
                print(f"  unjustified pause: {p['agent']} by {p['detector']}: {p['reason']}")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"runs": runs, **aggregate}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
