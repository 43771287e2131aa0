"""`crm-guard policy suggest`: policy entries for the writers a backtest could not attribute.

In the case crm-guard starts from, nobody could tell agent changes from human ones. A first
backtest without a policy (`crm-guard replay ... --out DIR`) attributes what the vendors' own
hints allow (UI users, workflows, imports) and leaves every API writer `unknown`; its
identities.jsonl (app/census.py) says what each one did. This turns each unknown identity into a
candidate agent with the scope it showed: its identity rule, the object types and fields it
wrote, a velocity cap of twice its busiest hour, and cautious autonomy. A person then reviews it
(renames it, moves a known sync tool to `integrations:`, removes fields it should not write) and
merges it into the policy; the next replay names every agent, and the scope rules hold them to
what they were seen doing. High-tier fields it wrote are listed in a comment, never allowed.

Pure: rows in, YAML text out (checked to load as a policy).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from app.policy_file import parse_policy
from detectors.policy import Policy, Tier

MIN_CAP = 10
_IDENTITY_PARTS = ("vendor", "change_source", "user_id", "app_id")
CAP_FACTOR = 2
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def suggest_policy(rows: Iterable[Mapping[str, Any]], policy: Policy | None = None, source: str = "") -> str:
    """YAML for the identities of `rows` (identities.jsonl) that are `unknown`: one commented
    agent entry each, busiest first. `policy` (the one the replay used) gives field tiers and the
    agent names already taken."""
    policy = policy or Policy()
    unknown = [r for r in rows if r.get("kind") == "unknown"]
    if not unknown:
        return (f"# crm-guard policy suggest: every source identity{_seen_in(source)} maps to an actor;"
                " nothing to add\n")
    taken = set(policy.agents)
    first = min(r["first_at"] for r in unknown)
    last = max(r["last_at"] for r in unknown)
    lines = [
        f"# crm-guard policy suggest: {len(unknown)} source identit{'y' if len(unknown) == 1 else 'ies'}"
        f" no rule maps{_seen_in(source)} ({_day(first)} .. {_day(last)}).",
        "# Each is written as a candidate agent with the scope it showed. Review every entry: rename it,",
        "# move a known sync tool to `integrations:` (a list of its identity rules), drop fields it should",
        "# not write; then merge it into your policy and run `crm-guard policy check`. Autonomy is what",
        "# each does today (direct writes: act); set a tier to `propose` to review its changes first.",
        "agents:",
    ]
    for row in _by_rule(unknown):
        name = _unique_name(_name_for(row["identity"]), taken)
        taken.add(name)
        lines.extend(_agent_block(name, row, policy))
    text = "\n".join(lines) + "\n"
    parse_policy(text, "suggested policy")  # what we print must load; a PolicyError here is a bug
    return text


def rule_for(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The identity rule for a census identity: its non-empty parts, except a Salesforce change
    source (the API used, `rest` or `soap`) next to a user or app: one agent may use both."""
    rule = {k: identity[k] for k in _IDENTITY_PARTS if identity.get(k)}
    if rule["vendor"] == "salesforce" and ("user_id" in rule or "app_id" in rule):
        rule.pop("change_source", None)
    return rule


def _by_rule(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose identities share one rule, merged into one (counts summed, distinct records
    summed as an upper bound, the busiest hour the largest), in the census's order."""
    merged: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
    for row in rows:
        rule = rule_for(row["identity"])
        key = tuple(rule.items())
        held = merged.get(key)
        if held is None:
            merged[key] = {**row, "identity": rule, "describe": " ".join(
                [rule["vendor"]] + [f"{k}={v}" for k, v in rule.items() if k != "vendor"])}
            continue
        for count in ("events", "changes", "records", "overwrites", "blanked"):
            held[count] += row[count]
        held["records_capped"] = held["records_capped"] or row["records_capped"]
        held["busiest_hour_records"] = max(held["busiest_hour_records"], row["busiest_hour_records"])
        held["first_at"] = min(held["first_at"], row["first_at"])
        held["last_at"] = max(held["last_at"], row["last_at"])
        for counter in ("fields", "object_types"):
            held[counter] = dict(Counter(held[counter]) + Counter(row[counter]))
        held["fields_total"] = max(held["fields_total"], row["fields_total"], len(held["fields"]))
    return list(merged.values())


def _agent_block(name: str, row: Mapping[str, Any], policy: Policy) -> list[str]:
    ident = dict(row["identity"])
    vendor = ident["vendor"]
    fields: dict[str, int] = dict(row["fields"])
    tiers = {f: policy.tier_of(vendor, f) for f in fields}
    high = [f for f in fields if tiers[f] is Tier.HIGH]
    objects = list(row["object_types"])
    cap = max(MIN_CAP, math.ceil(row["busiest_hour_records"] * CAP_FACTOR))
    body: dict[str, Any] = {
        "description": f"suggested from a backtest: {row['describe']}",
        "identities": [ident],
        "allowed_object_types": objects,
    }
    complete = row.get("fields_total", len(fields)) <= len(fields)
    if complete:
        body["allowed_fields"] = [f for f in fields if f not in high]
    body["velocity_caps"] = [{"max_records": cap, "window": "1h"}]
    # what it does today, so that mapping it raises no autonomy_breach for its ordinary writes;
    # move a tier to `propose` to route its changes there through review
    written = set(tiers.values())
    body["autonomy"] = {tier.value: "act" if tier in written and tier is not Tier.HIGH else "propose"
                        for tier in (Tier.LOW, Tier.MEDIUM)} | {"high": "observe"}
    head = [
        f"  # {row['describe']}",
        f"  #   {row['changes']} field changes in {row['events']} events to {row['records']}"
        f"{'+' if row.get('records_capped') else ''} records ({', '.join(objects)}),"
        f" {_minute(row['first_at'])} .. {_minute(row['last_at'])}",
        f"  #   busiest hour {row['busiest_hour_records']} records; overwrote {row['overwrites']} set values,"
        f" blanked {row['blanked']}",
    ]
    if high:
        head.append(f"  #   wrote high-tier fields, not allowed below: {', '.join(high)}"
                    " (allow them only with high_tier_allowed: true)")
    if not complete:
        head.append(f"  #   wrote {row['fields_total']} fields: no allowed_fields list (the census keeps"
                    f" the {len(fields)} most frequent); add one by hand")
    dumped = yaml.safe_dump({name: body}, sort_keys=False, default_flow_style=None, width=100,
                            allow_unicode=True)
    return head + ["  " + line for line in dumped.rstrip("\n").split("\n")]


def _name_for(identity: Mapping[str, Any]) -> str:
    vendor = identity.get("vendor") or "crm"
    if identity.get("app_id"):
        raw = f"{vendor}-app-{identity['app_id']}"
    elif identity.get("user_id"):
        raw = f"{vendor}-user-{identity['user_id']}"
    else:
        raw = f"{vendor}-{identity.get('change_source') or 'unknown'}"
    return _NAME_CHARS.sub("-", raw).strip("-.")[:60].lower() or "agent"


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _seen_in(source: str) -> str:
    return f" in {source}" if source else ""


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _minute(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
