"""The policy: who the agents are, what each may touch, how fast, and how sensitive each field is.

A policy is data (a YAML file validated into these models); nothing here reads files. The loader
in app/policy_file.py turns validation errors into messages that name the bad key.
"""

from __future__ import annotations

import fnmatch
import re
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from detectors.events import ActorKind, ObjectType, SourceIdentity
from detectors.settings import DetectorSettings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(value: Any) -> int:
    """`"90s"`, `"30m"`, `"1h"`, `"72h"`, `"7d"` or a number of seconds, to milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m, 1h or 7d")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return int(value * 1000)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"])
    raise ValueError(f"expected a duration such as 30m, 1h or 7d, got {value!r}")


DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]
"""A duration written as `1h` in YAML, held as milliseconds."""


class Tier(str, Enum):
    """Field sensitivity: high fields feed commissions, attribution or identity."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Autonomy(str, Enum):
    """What an agent may do in a tier: only be watched, propose changes, or write directly."""

    OBSERVE = "observe"
    PROPOSE = "propose"
    ACT = "act"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentityRule(_Strict):
    """Matches a source identity when every field given here equals the identity's (case-insensitive)."""

    vendor: str
    change_source: str | None = None
    user_id: str | None = None
    app_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _ids_as_strings(cls, data: Any) -> Any:
        # YAML reads `user_id: 12345` as an int; vendors send ids as strings or numbers alike.
        if isinstance(data, dict):
            return {k: (str(v) if k != "vendor" and isinstance(v, int) else v) for k, v in data.items()}
        return data

    def matches(self, identity: SourceIdentity) -> bool:
        """True when every field this rule names matches the identity."""
        if self.vendor.lower() != identity.vendor.lower():
            return False
        for name in ("change_source", "user_id", "app_id"):
            wanted = getattr(self, name)
            if wanted is not None and (getattr(identity, name) or "").lower() != wanted.lower():
                return False
        return True


class VelocityCap(_Strict):
    """At most `max_records` distinct records per rolling `window`, optionally per tier or object type."""

    max_records: int = Field(gt=0)
    window: DurationMs = 3_600_000
    tier: Tier | None = None
    object_type: ObjectType | None = None

    @property
    def name(self) -> str:
        """A stable name used in dedup keys and messages, e.g. `50/1h tier=high`."""
        scope = ""
        if self.tier:
            scope += f" tier={self.tier.value}"
        if self.object_type:
            scope += f" object_type={self.object_type.value}"
        return f"{self.max_records}/{self.window // 60_000}m{scope}"


DEFAULT_CAPS = (VelocityCap(max_records=50, window="1h"),)


class AgentPolicy(_Strict):
    """One named agent: the identities it writes under and the scope it must keep to."""

    description: str = ""
    identities: list[IdentityRule] = Field(default_factory=list)
    allowed_fields: list[str] | None = None
    denied_fields: list[str] = Field(default_factory=list)
    allowed_object_types: list[ObjectType] | None = None
    denied_object_types: list[ObjectType] = Field(default_factory=list)
    high_tier_allowed: bool = False
    velocity_caps: list[VelocityCap] | None = None
    pause_on_breach: bool | None = None
    autonomy: dict[Tier, Autonomy] = Field(default_factory=dict)
    pinned_autonomy: dict[Tier, Autonomy] = Field(default_factory=dict)


class TierLists(_Strict):
    """Field-name patterns (shell globs, case-insensitive) per tier."""

    high: list[str] = Field(default_factory=list)
    medium: list[str] = Field(default_factory=list)
    low: list[str] = Field(default_factory=list)


class Defaults(_Strict):
    """What applies to every agent unless its own entry says otherwise."""

    velocity_caps: list[VelocityCap] = Field(default_factory=lambda: list(DEFAULT_CAPS))
    pause_on_breach: bool = True
    autonomy: dict[Tier, Autonomy] = Field(
        default_factory=lambda: {Tier.LOW: Autonomy.ACT, Tier.MEDIUM: Autonomy.PROPOSE, Tier.HIGH: Autonomy.PROPOSE}
    )
    unknown_tier: Tier = Tier.LOW


# Shipped sensitivity defaults. High: inputs of commissions (stage, amount, close date, owner),
# attribution (UTM and original-source fields) and primary identifiers.
SHIPPED_TIERS: dict[str, TierLists] = {
    "hubspot": TierLists(
        high=[
            "utm_*", "hs_analytics_source", "hs_analytics_source_data_*", "hs_latest_source",
            "hs_latest_source_data_*", "hs_analytics_first_url", "hs_analytics_first_referrer",
            "hs_object_source*", "original_source*", "dealstage", "pipeline", "amount", "hs_acv",
            "hs_arr", "hs_mrr", "hs_tcv", "closedate", "hubspot_owner_id", "hs_all_owner_ids",
            "email", "hs_additional_emails", "commission*",
        ],
        medium=["lifecyclestage", "hs_lead_status", "hs_pipeline_stage", "hs_pipeline",
                "dealname", "dealtype", "hs_priority", "hs_deal_stage_probability"],
        low=["phone", "mobilephone", "jobtitle", "city", "state", "country", "website",
             "industry", "company", "firstname", "lastname"],
    ),
    "salesforce": TierLists(
        high=[
            "*utm_*", "LeadSource", "*Original_Source*", "StageName", "Amount", "CloseDate",
            "OwnerId", "Email", "ForecastCategoryName", "Probability", "ExpectedRevenue",
            "*Commission*",
        ],
        medium=["Status", "Rating", "Type", "IsConverted", "Priority", "NextStep"],
        low=["Phone", "MobilePhone", "Title", "Industry", "Website", "City", "Country",
             "FirstName", "LastName", "Description"],
    ),
    "pipedrive": TierLists(
        high=[
            "utm_*", "origin", "origin_id", "channel", "channel_id", "stage_id", "pipeline_id",
            "value", "expected_close_date", "close_time", "won_time", "owner_id", "user_id",
            "email", "emails", "primary_email", "commission*",
        ],
        medium=["status", "label", "label_ids", "lost_reason", "probability"],
        low=["phone", "phones", "job_title", "name", "first_name", "last_name", "title"],
    ),
}


class Policy(_Strict):
    """The whole policy file. `Policy()` alone is the shipped default: no agents, shipped tiers."""

    version: int = 1
    agents: dict[str, AgentPolicy] = Field(default_factory=dict)
    humans: list[IdentityRule] = Field(default_factory=list)
    automations: list[IdentityRule] = Field(default_factory=list)
    imports: list[IdentityRule] = Field(default_factory=list)
    integrations: list[IdentityRule] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    fields: dict[str, TierLists] = Field(default_factory=dict)
    field_labels: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Per vendor, field key -> the name people know it by. Pipedrive keys every custom field by a
    40-character hash (`614c9a83...`); with its label (`UTM source`) here, alerts name the field
    and tier lists, denied and allowed field patterns match the label too (as `utm_source`)."""
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)

    @model_validator(mode="after")
    def _labels_are_names(self) -> "Policy":
        for vendor, labels in self.field_labels.items():
            for key, label in labels.items():
                if not key.strip() or not label.strip():
                    raise ValueError(f"field_labels.{vendor}: empty field key or label ({key!r}: {label!r})")
        return self

    @model_validator(mode="after")
    def _agent_names_are_keys(self) -> "Policy":
        for name in self.agents:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(
                    f"agent name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                    "(it is a Kafka key and a metric label)"
                )
        return self

    # ---- derived lookups (cached per policy object: policies are frozen) ----

    def tier_of(self, vendor: str, field: str) -> Tier:
        """The sensitivity tier of a vendor's field: the policy's lists first, then the shipped ones."""
        return _tier_lookup(self)(vendor, field)

    def field_label(self, vendor: str, field: str) -> str:
        """The name to show people for a field: its label from `field_labels`, else the key."""
        labels = self.field_labels.get(vendor)
        return labels.get(field, field) if labels else field

    def field_names(self, vendor: str, field: str) -> tuple[str, ...]:
        """The names field patterns are matched against: the key, and its label written as a
        field name (lower case, spaces and dashes as underscores: `UTM source` -> `utm_source`)."""
        labels = self.field_labels.get(vendor)
        label = labels.get(field) if labels else None
        if label is None:
            return (field,)
        return (field, re.sub(r"[\s\-]+", "_", label.strip().lower()))

    def agent(self, name: str) -> AgentPolicy | None:
        """The named agent's policy, or None when it is not a configured agent."""
        return self.agents.get(name)

    def caps_for(self, agent: str) -> list[VelocityCap]:
        """The agent's own velocity caps, or the defaults."""
        entry = self.agents.get(agent)
        if entry is not None and entry.velocity_caps is not None:
            return entry.velocity_caps
        return self.defaults.velocity_caps

    def pauses_on_breach(self, agent: str) -> bool:
        """Whether a breach by this agent pauses it."""
        entry = self.agents.get(agent)
        if entry is not None and entry.pause_on_breach is not None:
            return entry.pause_on_breach
        return self.defaults.pause_on_breach

    def autonomy_for(self, agent: str, tier: Tier) -> Autonomy:
        """The configured autonomy of an agent in a tier (pinned first, then its own, then defaults)."""
        entry = self.agents.get(agent)
        if entry is not None:
            if tier in entry.pinned_autonomy:
                return entry.pinned_autonomy[tier]
            if tier in entry.autonomy:
                return entry.autonomy[tier]
        return self.defaults.autonomy.get(tier, Autonomy.OBSERVE)


def _compile(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns))


_LOOKUPS: dict[int, tuple[Policy, Any]] = {}


def _tier_lookup(policy: Policy) -> Any:
    held = _LOOKUPS.get(id(policy))
    if held is not None and held[0] is policy:
        return held[1]
    lookup = _build_tier_lookup(policy)
    if len(_LOOKUPS) > 64:
        _LOOKUPS.clear()
    _LOOKUPS[id(policy)] = (policy, lookup)
    return lookup


def _build_tier_lookup(policy: Policy) -> Any:
    compiled: dict[str, list[tuple[Tier, re.Pattern[str] | None]]] = {}
    vendors = set(SHIPPED_TIERS) | set(policy.fields)
    for vendor in vendors:
        order: list[tuple[Tier, re.Pattern[str] | None]] = []
        for lists in (policy.fields.get(vendor), SHIPPED_TIERS.get(vendor)):
            if lists is None:
                continue
            for tier in (Tier.HIGH, Tier.MEDIUM, Tier.LOW):
                order.append((tier, _compile(getattr(lists, tier.value))))
        compiled[vendor] = order
    cache: dict[tuple[str, str], Tier] = {}
    unknown = policy.defaults.unknown_tier

    def lookup(vendor: str, field: str) -> Tier:
        key = (vendor, field)
        tier = cache.get(key)
        if tier is None:
            tier = unknown
            names = [name.lower() for name in policy.field_names(vendor, field)]
            for candidate, pattern in compiled.get(vendor, ()):
                if pattern is not None and any(pattern.fullmatch(name) for name in names):
                    tier = candidate
                    break
            if len(cache) < 100_000:
                cache[key] = tier
        return tier

    return lookup


def actor_kind_rules(policy: Policy) -> list[tuple[ActorKind, IdentityRule]]:
    """The policy's human, automation, import and integration rules, in the order they are tried."""
    rules: list[tuple[ActorKind, IdentityRule]] = []
    rules += [(ActorKind.HUMAN, r) for r in policy.humans]
    rules += [(ActorKind.AUTOMATION, r) for r in policy.automations]
    rules += [(ActorKind.IMPORT, r) for r in policy.imports]
    rules += [(ActorKind.INTEGRATION, r) for r in policy.integrations]
    return rules
