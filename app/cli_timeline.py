"""`crm-guard timeline RECORD` and `crm-guard revert-plan`: the timeline and repair from a terminal.

Both read either a running guard's HTTP API (`--url`, default: the configured public_url) or a
replay output directory (`--replay-dir DIR`, its timeline.jsonl: see app/timeline/store.py for the
entry schema). Exit codes: 0 done; 1 the guard could not be reached or the record is unknown;
2 a user error (bad time, missing file, bad line in timeline.jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlencode

from app.timeline.masking import mask_value
from app.timeline.store import TimelineEntry, load_jsonl
from app.timeline.times import iso, now_ms, parse_time
from detectors.revert_plan import Plan, revert_plan

TIMELINE_FILE = "timeline.jsonl"
_COLOURS = {"human": "34", "agent": "33", "automation": "36", "import": "35", "integration": "36", "unknown": "90"}


class CliError(Exception):
    """A message for stderr and an exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `timeline` and `revert-plan`."""
    p = subparsers.add_parser("timeline", help="print a record's change timeline (who changed what, when)")
    p.add_argument("record", metavar="RECORD", help="record key, e.g. hubspot/contact/123")
    _add_source(p)
    p.add_argument("--field", action="append", default=[], metavar="F", help="only this field (repeatable)")
    p.add_argument("--kind", action="append", default=[], metavar="KIND",
                   help="only this actor kind: human, agent, automation, import, integration, unknown")
    p.add_argument("--since", metavar="TIME", help="ISO 8601, epoch ms, or a duration such as 24h")
    p.add_argument("--until", metavar="TIME")
    p.add_argument("--limit", type=int, default=500, help="at most this many changes (default 500)")
    p.add_argument("--show-pii", action="store_true",
                   help="show e-mail and phone values in full (replay dirs only; a guard masks per its setting)")
    p.add_argument("--json", action="store_true", help="JSON Lines instead of columns")
    p.add_argument("--no-color", action="store_true")
    p.set_defaults(func=timeline_command)

    r = subparsers.add_parser("revert-plan", help="values that undo an agent's changes since a time (JSON + CSV)")
    r.add_argument("--agent", required=True)
    r.add_argument("--since", required=True, metavar="TIME",
                   help="ISO 8601, epoch ms, or a duration such as 24h (before now; for --replay-dir: before "
                        "the newest change in it)")
    r.add_argument("--until", metavar="TIME")
    r.add_argument("--field", action="append", default=[], metavar="F", help="only this field (repeatable)")
    r.add_argument("--out", metavar="DIR", help="write revert-plan.json and one CSV per vendor object type here "
                                                "(default: print the JSON)")
    _add_source(r)
    r.set_defaults(func=revert_plan_command)


def _add_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--url", help="a running guard (default: CRM_GUARD_PUBLIC_URL / the config's public_url)")
    group.add_argument("--replay-dir", metavar="DIR", help="the --out directory of `crm-guard replay`")


# ---------------------------------------------------------------- timeline


def timeline_command(args: argparse.Namespace) -> int:
    try:
        return _timeline(args, sys.stdout)
    except CliError as exc:
        print(f"crm-guard timeline: {exc}", file=sys.stderr)
        return exc.code


def _timeline(args: argparse.Namespace, out: TextIO) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    kinds = {k.strip() for raw in args.kind for k in raw.split(",") if k.strip()}
    fields = {f.strip() for raw in args.field for f in raw.split(",") if f.strip()}
    if args.replay_dir:
        items, masked = _timeline_from_dir(Path(args.replay_dir), args, kinds, fields)
    else:
        items, masked = _timeline_from_url(_base_url(args), args, kinds, fields)
        if masked and args.show_pii:
            print("crm-guard timeline: the guard masks values (its show_pii is off); --show-pii applies to "
                  "--replay-dir only", file=sys.stderr)
    if not items:
        print(f"crm-guard timeline: no changes for {args.record}", file=sys.stderr)
        return 1
    if args.json:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
        return 0
    colour = out.isatty() and not args.no_color
    note = "values masked; --show-pii shows them" if masked else "values in full"
    out.write(f"{args.record}: {len(items)} changes ({note})\n")
    out.write(format_table(items, colour))
    return 0


def _timeline_from_dir(
    directory: Path, args: argparse.Namespace, kinds: set[str], fields: set[str]
) -> tuple[list[dict[str, Any]], bool]:
    entries = [e for e in _read_dir(directory) if e.record_key == args.record]
    latest = max((e.occurred_at for e in entries), default=0)
    since = _parse(args.since, latest, "--since")
    until = _parse(args.until, latest, "--until")
    show = bool(args.show_pii)
    overrides, overridden = _overrides_from_dir(directory, args.record)
    out = []
    for e in sorted(entries, key=lambda x: x.sort_key):
        if since is not None and e.occurred_at < since or until is not None and e.occurred_at >= until:
            continue
        if kinds and e.actor_kind.value not in kinds or fields and e.field not in fields:
            continue
        item = e.model_dump(mode="json")
        item["old"] = mask_value(e.old, e.field, e.source, show)
        item["new"] = mask_value(e.new, e.field, e.source, show)
        item["overrides"] = overrides.get(e.event_id, [])
        item["overridden_by"] = overridden.get(e.event_id, [])
        out.append(item)
    return out[: args.limit], not show


def _overrides_from_dir(directory: Path, record: str) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Override signals of the record from the replay's overrides.jsonl (optional; unreadable lines are
    skipped: they only decorate the timeline): by the human's event id and by the agent's event id."""
    by_human: dict[str, list[Any]] = {}
    by_agent: dict[str, list[Any]] = {}
    path = directory / "overrides.jsonl"
    if not path.is_file():
        return by_human, by_agent
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict) or row.get("record_key") != record:
                continue
            by_human.setdefault(str(row.get("event_id")), []).append({"detector": "override"})
            if row.get("agent_event_id"):
                by_agent.setdefault(str(row["agent_event_id"]), []).append({"detector": "override"})
    return by_human, by_agent


def _timeline_from_url(
    base: str, args: argparse.Namespace, kinds: set[str], fields: set[str]
) -> tuple[list[dict[str, Any]], bool]:
    params: list[tuple[str, str]] = [("order", "asc"), ("limit", str(min(args.limit, 1000)))]
    params += [("kind", k) for k in sorted(kinds)] + [("field", f) for f in sorted(fields)]
    for name in ("since", "until"):
        if getattr(args, name):
            params.append((name, getattr(args, name)))
    path = f"/api/records/{quote(args.record, safe='/')}/timeline"
    items: list[dict[str, Any]] = []
    masked = True
    cursor: str | None = None
    while len(items) < args.limit:
        query = params + ([("cursor", cursor)] if cursor else [])
        body = _get_json(base, f"{path}?{urlencode(query)}", missing_ok=True)
        if body is None:
            return [], masked
        masked = bool(body.get("masked", True))
        items.extend(body.get("items", []))
        cursor = body.get("next_cursor")
        if not cursor:
            break
    return items[: args.limit], masked


def format_table(items: list[dict[str, Any]], colour: bool = False) -> str:
    """Columns: time, actor kind, actor, field, old -> new, notes (findings, overrides, decisions)."""
    rows = [("TIME (UTC)", "KIND", "ACTOR", "FIELD", "OLD → NEW", "NOTES")]
    for item in items:
        notes = [f"{f.get('severity')} {f.get('detector')}" for f in item.get("findings", ())]
        notes += ["↩ override" for _ in item.get("overrides", ())]
        notes += ["overridden" for _ in item.get("overridden_by", ())]
        notes += [f"proposal {d.get('decision')}" for d in item.get("decisions", ())]
        old = _short(item.get("old")) if item.get("has_old") else "(not seen)"
        change = f"{old} → {_short(item.get('new'))}" if item.get("field") else f"({item.get('operation')})"
        rows.append((iso(item["occurred_at"]), item["actor_kind"], _short(item["actor_id"], 24),
                     item.get("field") or "-", change, ", ".join(notes)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) for i in range(5)] + [row[5]]
        if colour and n > 0:
            code = _COLOURS.get(row[1], "0")
            cells[1] = f"\x1b[{code}m{cells[1]}\x1b[0m"
            cells[2] = f"\x1b[{code}m{cells[2]}\x1b[0m"
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _short(value: Any, limit: int = 40) -> str:
    if value is None:
        return "(empty)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if text == "":
        return "(empty)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- revert plan


def revert_plan_command(args: argparse.Namespace) -> int:
    try:
        return _revert_plan(args, sys.stdout, sys.stderr)
    except CliError as exc:
        print(f"crm-guard revert-plan: {exc}", file=sys.stderr)
        return exc.code


def _revert_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    fields = sorted({f.strip() for raw in args.field for f in raw.split(",") if f.strip()}) or None
    left_out: list[dict[str, Any]] = []
    if args.replay_dir:
        directory = Path(args.replay_dir)
        entries, latest = _agent_entries(directory, args.agent)
        since = _parse(args.since, latest, "--since") or 0
        plan = revert_plan(entries, args.agent, since, fields, _parse(args.until, latest, "--until"))
        data = plan.to_dict()
    else:
        now = now_ms()
        _parse(args.since, now, "--since")  # validate before asking the guard
        _parse(args.until, now, "--until")
        params = [("since", args.since)] + ([("until", args.until)] if args.until else [])
        params += [("field", f) for f in fields or ()]
        path = f"/api/agents/{quote(args.agent, safe='')}/revert-plan?{urlencode(params)}"
        data = _get_json(_base_url(args), path) or {}
        left_out = [i for i in data.get("items", []) if i.get("masked")]
        data["items"] = [i for i in data.get("items", []) if not i.get("masked")]
        for group in ("items", "skipped_human_changed", "skipped"):
            for item in data.get(group, []):
                item.pop("masked", None)
        data.pop("masked", None)
        plan = Plan.from_dict(data)
        data = plan.to_dict()
        if left_out:
            data["left_out_masked"] = left_out
            print(f"crm-guard revert-plan: {len(left_out)} values are masked by the guard (show_pii off) and were "
                  "left out of the CSV files; use --replay-dir or a guard with show_pii on for those", file=err)
    if not args.out:
        out.write(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
        return 0
    target = Path(args.out)
    try:
        target.mkdir(parents=True, exist_ok=True)
        written = [target / "revert-plan.json"]
        written[0].write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
        for name, text in plan.csv_files().items():
            (target / name).write_text(text)
            written.append(target / name)
    except OSError as exc:
        raise CliError(f"cannot write to {target}: {exc.strerror or exc}") from None
    s = plan.summary
    out.write(f"revert plan for agent {args.agent} since {iso(plan.since)}:\n"
              f"  {s['fields_to_restore']} fields to restore on {s['records']} records; "
              f"{s['skipped_human_changed']} left alone (a human changed them after the agent); "
              f"{s['fields_to_clear_by_hand']} to clear by hand; {s['skipped']} skipped (unchanged or prior unknown); "
              f"{s['created_records']} records the agent created, {s['deleted_records']} it deleted or merged\n")
    out.write("  wrote " + ", ".join(str(p) for p in written) + "\n")
    return 0


def _agent_entries(directory: Path, agent: str) -> tuple[list[TimelineEntry], int]:
    """Two streaming passes: the records the agent touched, then every entry of those records."""
    records: set[str] = set()
    latest = 0
    for e in _read_dir(directory):
        latest = max(latest, e.occurred_at)
        if e.actor_kind.value == "agent" and e.actor_id == agent:
            records.add(e.record_key)
    return [e for e in _read_dir(directory) if e.record_key in records], latest


# ---------------------------------------------------------------- shared


def _read_dir(directory: Path) -> Iterator[TimelineEntry]:
    path = directory / TIMELINE_FILE
    if not path.is_file():
        raise CliError(f"no {TIMELINE_FILE} in {directory} (is it the --out directory of `crm-guard replay`?)")
    with path.open(encoding="utf-8") as handle:
        try:
            yield from load_jsonl(handle)
        except ValueError as exc:
            raise CliError(f"{path}: {exc}") from None


def _parse(text: str | None, now: int, option: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(text, now)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}") from None


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    from app.config import load_settings

    return load_settings().public_url.rstrip("/")


def _get_json(base: str, path: str, missing_ok: bool = False) -> dict[str, Any] | None:
    request = urllib.request.Request(base + path, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (operator-given URL)
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and missing_ok:
            return None
        try:
            message = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        raise CliError(f"the guard answered {exc.code}: {message}", 2 if exc.code == 400 else 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach the guard at {base}: {reason}", 1) from None
    except ValueError:
        raise CliError(f"the guard at {base} did not answer JSON", 1) from None

