"""What `crm-guard policy check` says about a valid policy: the mistakes validation cannot see.

A policy can be valid and still attribute wrongly, which is the failure crm-guard exists to make
visible: an agent with no identity rule is never recognised (its changes count as unknown), a rule
that names only a vendor claims every change of that vendor for the agent (every human edit
included), and attribution takes the first rule that matches (agents in file order, then humans,
automations, imports, integrations), so a rule more specific than an earlier one never applies.
Pure functions over a Policy; the CLI prints their findings.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from app.adapters import VENDORS
from detectors.policy import IdentityRule, Policy, Tier

_RULE_FIELDS = ("change_source", "user_id", "app_id")


@dataclass(frozen=True)
class LintWarning:
    """One problem: where in the file (dotted path) and what it does to attribution or scope."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def describe_rule(rule: IdentityRule) -> str:
    """A rule as people write it, e.g. `hubspot change_source=INTEGRATION app_id=1160452`."""
    parts = [rule.vendor] + [f"{name}={getattr(rule, name)}" for name in _RULE_FIELDS if getattr(rule, name)]
    return " ".join(parts)


def covers(broad: IdentityRule, narrow: IdentityRule) -> bool:
    """True when every identity `narrow` matches is also matched by `broad` (same vendor, and each
    field `broad` names is named by `narrow` with the same value, case-insensitively)."""
    if broad.vendor.lower() != narrow.vendor.lower():
        return False
    for name in _RULE_FIELDS:
        wanted = getattr(broad, name)
        if wanted is not None and (getattr(narrow, name) or "").lower() != wanted.lower():
            return False
    return True


def _ordered_rules(policy: Policy) -> list[tuple[str, str, IdentityRule]]:
    """(path, owner, rule) in the order attribution tries them."""
    out: list[tuple[str, str, IdentityRule]] = []
    for name, agent in policy.agents.items():
        out += [(f"agents.{name}.identities.{i}", f"agent {name}", r) for i, r in enumerate(agent.identities)]
    for section in ("humans", "automations", "imports", "integrations"):
        rules: list[IdentityRule] = getattr(policy, section)
        out += [(f"{section}.{i}", section, r) for i, r in enumerate(rules)]
    return out


def lint_policy(policy: Policy) -> list[LintWarning]:
    """Every warning for a valid policy, in file order."""
    warnings: list[LintWarning] = []
    for name, agent in policy.agents.items():
        if not agent.identities:
            warnings.append(
                LintWarning(
                    f"agents.{name}.identities",
                    "no identity rule: nothing is ever attributed to this agent "
                    "(its changes count as unknown)",
                )
            )
        denied_and_allowed = [
            allowed
            for allowed in agent.allowed_fields or ()
            if any(fnmatch.fnmatchcase(allowed.lower(), denied.lower()) for denied in agent.denied_fields)
        ]
        if denied_and_allowed:
            warnings.append(
                LintWarning(
                    f"agents.{name}.allowed_fields",
                    f"also denied: {', '.join(denied_and_allowed)} "
                    "(denied wins: writes to them are breaches)",
                )
            )
    rules = _ordered_rules(policy)
    for index, (path, owner, rule) in enumerate(rules):
        if rule.vendor.lower() not in VENDORS:
            warnings.append(
                LintWarning(path, f"vendor {rule.vendor!r} is none of {', '.join(VENDORS)}: it never matches")
            )
        if owner.startswith("agent ") and not any(getattr(rule, f) for f in _RULE_FIELDS):
            warnings.append(
                LintWarning(
                    path,
                    f"names only the vendor: every {rule.vendor} change, each human edit included, "
                    f"is attributed to {owner} (add change_source, user_id or app_id)",
                )
            )
        for earlier_path, earlier_owner, earlier in rules[:index]:
            if covers(earlier, rule):
                warnings.append(
                    LintWarning(
                        path,
                        f"never applies: {earlier_owner}'s rule {earlier_path} ({describe_rule(earlier)}) "
                        f"matches everything this one ({describe_rule(rule)}) does and is tried first",
                    )
                )
                break
    for vendor in policy.fields:
        if vendor.lower() not in VENDORS:
            warnings.append(
                LintWarning(f"fields.{vendor}", f"vendor {vendor!r} is none of {', '.join(VENDORS)}")
            )
    for vendor in policy.field_labels:
        if vendor.lower() not in VENDORS:
            warnings.append(
                LintWarning(f"field_labels.{vendor}", f"vendor {vendor!r} is none of {', '.join(VENDORS)}")
            )
    return warnings


def summary_lines(policy: Policy) -> list[str]:
    """What the guard will enforce, per agent, in plain lines (defaults filled in)."""
    lines = [
        f"{len(policy.agents)} agent(s); identity rules: {len(policy.humans)} human, "
        f"{len(policy.automations)} automation, {len(policy.imports)} import, "
        f"{len(policy.integrations)} integration"
    ]
    for name, agent in policy.agents.items():
        lines.append(f"agent {name}" + (f": {agent.description}" if agent.description else ""))
        for rule in agent.identities:
            lines.append(f"  identity      {describe_rule(rule)}")
        allowed = "any" if agent.allowed_fields is None else ", ".join(agent.allowed_fields) or "none"
        lines.append(
            f"  fields        allowed: {allowed}; denied: {', '.join(agent.denied_fields) or 'none'}; "
            f"high tier: {'allowed' if agent.high_tier_allowed else 'denied'}"
        )
        caps = ", ".join(cap.name for cap in policy.caps_for(name)) or "none"
        own = "" if agent.velocity_caps is not None else " (defaults)"
        lines.append(f"  caps          {caps}{own}")
        lines.append(f"  on a breach   {'pause' if policy.pauses_on_breach(name) else 'alert only'}")
        autonomy = ", ".join(f"{tier.value} {policy.autonomy_for(name, tier).value}" for tier in Tier)
        lines.append(f"  autonomy      {autonomy}")
    return lines
