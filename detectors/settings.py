"""Per-detector settings: the `detectors:` section of the policy file, with shipped defaults.

Each detector owns one model here; the policy file may set any of its keys. Durations accept
`30m`, `1h`, `72h`, `7d` or seconds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def duration_ms(value: Any) -> int:
    """parse_duration_ms, imported when called: detectors.policy imports this module."""
    from detectors.policy import parse_duration_ms  # policy imports this module

    return parse_duration_ms(value)


Duration = Annotated[int, BeforeValidator(duration_ms)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


class UnattributedActorSettings(_Section):
    """Changes from an identity no rule maps: warn, grouped per identity, and remind at most every
    `renotify_after` while it stays unmapped (0: warn again whenever a new alert would open)."""

    severity: str = "warning"
    high_tier_severity: str = "warning"
    """Of the separate alert for high-tier fields such an identity writes (`critical` to page)."""
    renotify_after: Duration = 7 * 86_400_000
    retention: Duration = 30 * 86_400_000


class SourceGapSettings(_Section):
    """Salesforce GAP_* and overflow events: the guard lost sight of these records."""

    severity: str = "warning"


class RecordStateSettings(_Section):
    """Bounds of the per-record field memory (see detectors/record_state.py)."""

    max_records: int = Field(default=2_000_000, gt=0)
    retention: Duration = 90 * 86_400_000
    max_value_chars: int = Field(default=256, gt=8)


class AlertSettings(_Section):
    """Alert grouping: one open alert per actor, kind and group until it is quiet this long."""

    resolve_after: Duration = 6 * 3_600_000
    sample_records: int = Field(default=10, gt=0, le=100)
    evidence_events: int = Field(default=20, gt=0, le=200)


Severity3 = Literal["info", "warning", "critical"]
ActorKindName = Literal["human", "agent", "automation", "import", "integration", "unknown"]


def _kinds(*names: ActorKindName) -> list[ActorKindName]:
    return list(names)


DEFAULT_STAGE_SEVERITIES: dict[str, Severity3] = {
    "skip": "warning", "backwards": "warning", "closing": "warning", "owner_inactive": "info",
    "after_support": "warning",
}


class MassOverwriteSettings(_Section):
    """One actor replacing set values of one field, or blanking set values of any fields, across many
    records (mass_overwrite.py)."""

    window: Duration = 3_600_000
    threshold: int = Field(default=5, gt=0)
    high_tier_threshold: int = Field(default=3, gt=0)
    long_window: Duration = 24 * 3_600_000
    long_threshold: int = Field(default=10, gt=0)
    high_tier_long_threshold: int = Field(default=5, gt=0)
    blank_threshold: int = Field(default=3, gt=0)
    blank_long_threshold: int = Field(default=5, gt=0)
    human_threshold_factor: float = Field(default=3.0, ge=1.0)
    watch_kinds: list[ActorKindName] = Field(
        default_factory=lambda: _kinds("agent", "human", "integration", "unknown")
    )
    count_own_values: bool = False
    ignore_case_and_whitespace: bool = True
    ignore_fields: list[str] = Field(
        default_factory=lambda: [
            "dealstage", "pipeline", "stagename", "stage_id", "pipeline_id", "status", "lifecyclestage",
            "hs_lead_status", "hs_pipeline", "hs_pipeline_stage", "probability", "hs_deal_stage_probability",
            "forecastcategoryname", "hs_lastmodifieddate", "lastmodifieddate", "systemmodstamp",
            "update_time", "notes_last_*", "hs_last_*", "last_activity*",
        ]
    )
    pause_on_critical: bool = True
    max_records_per_field: int = Field(default=128, gt=0)
    max_fields: int = Field(default=64, gt=0)
    retention: Duration = 7 * 86_400_000

    @model_validator(mode="after")
    def _windows_nest(self) -> MassOverwriteSettings:
        if self.long_window < self.window:
            raise ValueError("long_window must be at least window")
        thresholds = (self.threshold, self.high_tier_threshold, self.long_threshold,
                      self.high_tier_long_threshold, self.blank_threshold, self.blank_long_threshold)
        if self.max_records_per_field < max(thresholds) * self.human_threshold_factor:
            raise ValueError(
                "max_records_per_field must be at least the largest threshold x human_threshold_factor"
            )
        return self


class ProtectedFieldSettings(_Section):
    """Agents writing outside their scope (protected_field.py)."""

    creation_window: Duration = 60_000
    max_recent_creations: int = Field(default=256, gt=0)


class DuplicateSpikeSettings(_Section):
    """Identity index (duplicate_created) and the per-agent spike of duplicates (duplicate_spike.py)."""

    default_region: str = "US"
    salt: str = ""
    watch_kinds: list[ActorKindName] = Field(
        default_factory=lambda: _kinds("agent", "integration", "unknown")
    )
    window: Duration = 24 * 3_600_000
    min_count: int = Field(default=3, gt=0)
    k: float = Field(default=3.0, gt=0)
    ceiling_count: int = Field(default=10, gt=0)
    baseline_alpha: float = Field(default=0.1, gt=0, le=1)
    max_records_per_identity: int = Field(default=16, gt=1)
    max_matches_reported: int = Field(default=3, gt=0)
    max_times: int = Field(default=256, gt=0)
    retention: Duration = 365 * 86_400_000
    email_fields: list[str] = Field(
        default_factory=lambda: ["email", "emails", "primary_email", "hs_additional_emails", "work_email"]
    )
    phone_fields: list[str] = Field(
        default_factory=lambda: ["phone", "phones", "mobilephone", "mobile_phone", "primary_phone"]
    )
    first_name_fields: list[str] = Field(default_factory=lambda: ["firstname", "first_name"])
    last_name_fields: list[str] = Field(default_factory=lambda: ["lastname", "last_name"])
    full_name_fields: list[str] = Field(default_factory=lambda: ["name"])
    company_fields: list[str] = Field(
        default_factory=lambda: ["company", "accountid", "account_name", "org_id", "org_name"]
    )
    domain_fields: list[str] = Field(default_factory=lambda: ["domain", "website"])
    org_name_fields: list[str] = Field(default_factory=lambda: ["name"])

    @model_validator(mode="after")
    def _ceiling_above_floor(self) -> DuplicateSpikeSettings:
        if self.ceiling_count < self.min_count:
            raise ValueError("ceiling_count must be at least min_count")
        return self


class PipelineSpec(BaseModel):
    """One deal pipeline: open stages in order, and the closed (won / lost) stage values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: list[str] = Field(min_length=1)
    won: list[str] = Field(default_factory=list)
    lost: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _values_as_strings(cls, data: Any) -> Any:
        # Pipedrive stage ids are integers in YAML; stage values are compared as strings.
        if isinstance(data, dict):
            return {k: ([str(v) for v in vs] if isinstance(vs, list) else vs) for k, vs in data.items()}
        return data


class StageAnomalySettings(_Section):
    """Agent stage moves that skip, go back, close, touch stale deals or follow support (stage_anomaly.py)."""

    min_skipped_stages: int = Field(default=2, gt=0)
    watch_kinds: list[ActorKindName] = Field(default_factory=lambda: _kinds("agent", "unknown"))
    """Whose moves are judged: agents, and writers no rule maps (an unregistered agent looks like
    that). Escalation to critical (and a pause) is for agents only."""
    owner_inactive_after: Duration = 14 * 86_400_000
    owner_fields: dict[str, list[str]] = Field(
        default_factory=lambda: {"hubspot": ["hubspot_owner_id"], "salesforce": ["OwnerId"],
                                 "pipedrive": ["owner_id", "user_id"]}
    )
    """Per vendor, the deal fields that hold its owner (Pipedrive: v2 owner_id, v1 user_id)."""
    owners_are_users: list[str] = Field(default_factory=lambda: ["salesforce", "pipedrive"])
    """Vendors whose owner ids are the user ids their change events name (Salesforce OwnerId and
    commitUser, Pipedrive owner_id and meta.user_id). HubSpot's are not: hubspot_owner_id is an
    owner id, sourceId a user id; map them in `owner_user_ids`."""
    owner_user_ids: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Per vendor, owner id -> user id (HubSpot: `id` -> `userId` of GET /crm/v3/owners)."""
    support_window: Duration = 7 * 86_400_000
    severities: dict[str, Severity3] = Field(default_factory=lambda: dict(DEFAULT_STAGE_SEVERITIES))
    pipelines: dict[str, dict[str, PipelineSpec]] = Field(default_factory=dict)
    stage_fields: dict[str, str] = Field(default_factory=dict)
    support_object_types: list[str] = Field(default_factory=lambda: ["ticket"])
    support_source_object_types: list[str] = Field(
        default_factory=lambda: ["case", "casecomment", "*ticket*", "conversation*"]
    )
    support_markers: dict[str, str] = Field(
        default_factory=lambda: {
            "type": r"(?i)^(support|ticket|case)",
            "hs_activity_type": r"(?i)support",
            "channel": r"(?i)^support",
            "parentid": r"^500",
            "hs_email_to_email": r"(?i)^(support|help|helpdesk|service)@",
            "hs_email_subject": r"(?i)\b(ticket|case)\s*#?\s*\d+",
            "subject": r"(?i)\b(ticket|case)\s*#?\s*\d+",
        }
    )
    max_accounts_per_event: int = Field(default=8, gt=0)
    escalate_after: int = Field(default=3, gt=0)
    escalate_window: Duration = 24 * 3_600_000
    pause_on_escalation: bool = True
    retention: Duration = 90 * 86_400_000


class OverrideSettings(_Section):
    """A human changing a field an agent changed, within the window (override.py)."""

    window: Duration = 72 * 3_600_000
    ignore_fields: list[str] = Field(
        default_factory=lambda: [
            "hs_lastmodifieddate", "lastmodifieddate", "systemmodstamp", "lastmodifiedbyid",
            "update_time", "hs_updated_by_user_id", "notes_last_*", "hs_last_*",
        ]
    )
    max_fields_per_record: int = Field(default=64, gt=0)
    max_value_chars: int = Field(default=256, gt=8)
    stage_progress_is_override: bool = False
    stage_derived_fields: list[str] = Field(
        default_factory=lambda: [
            "probability", "forecastcategoryname", "forecastcategory", "hs_deal_stage_probability",
        ]
    )


class OverrideRateSettings(_Section):
    """An agent's overrides per change in a tier, against its own baseline (override_rate.py)."""

    window: Duration = 7 * 86_400_000
    min_rate: float = Field(default=0.2, gt=0, le=1)
    ceiling_rate: float = Field(default=0.5, gt=0, le=1)
    k: float = Field(default=2.0, gt=0)
    min_overrides: int = Field(default=5, gt=0)
    min_changes_for_baseline: int = Field(default=20, gt=0)
    baseline_alpha: float = Field(default=0.1, gt=0, le=1)


class ActivityAnomalySettings(_Section):
    """Per-agent activity windows scored by river HalfSpaceTrees (activity_anomaly.py)."""

    window: Duration = 300_000
    allowed_lateness: Annotated[Duration, Field(ge=0, le=3_600_000)] = 120_000
    warmup_windows: int = Field(default=100, ge=0)
    threshold: float = Field(default=0.85, gt=0, lt=1)
    consecutive: int = Field(default=3, gt=0)
    n_trees: int = Field(default=25, gt=0)
    height: int = Field(default=8, gt=0, le=16)
    window_size: int = Field(default=100, gt=1)
    seed: int = 42
    count_scale: int = Field(default=2000, gt=1)
    field_scale: int = Field(default=200, gt=1)
    max_records_tracked: int = Field(default=2000, gt=0)
    max_fields_tracked: int = Field(default=256, gt=0)
    require_composition_change: bool = True
    composition_margin: float = Field(default=0.25, ge=0, le=1)
    composition_alpha: float = Field(default=0.02, gt=0, le=1)
    composition_z: float = Field(default=1.64, ge=0)


class TrustSettings(_Section):
    """Trust calibration and autonomy moves per agent and field tier (see detectors/trust.py)."""

    prior_mean: float = Field(default=0.3, gt=0, lt=1)
    prior_strength: float = Field(default=2.0, gt=0)
    halflife: Duration = 30 * 86_400_000
    modification_success: float = Field(default=0.5, ge=0, le=1)
    act_threshold: float = Field(default=0.8, gt=0, le=1)
    propose_threshold: float = Field(default=0.5, gt=0, le=1)
    promote_min_approvals: int = Field(default=20, ge=1)
    promote_min_rate: float = Field(default=0.8, ge=0, lt=1)
    propose_min_outcomes: int = Field(default=3, ge=1)
    demote_after_failures: int = Field(default=3, ge=1)
    demote_min_outcomes: int = Field(default=10, ge=1)
    history_limit: int = Field(default=100, ge=1)


class DetectorSettings(BaseModel):
    """All detector sections. Detectors added later add their section here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unattributed_actor: UnattributedActorSettings = Field(default_factory=UnattributedActorSettings)
    source_gap: SourceGapSettings = Field(default_factory=SourceGapSettings)
    record_state: RecordStateSettings = Field(default_factory=RecordStateSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)
    protected_field: ProtectedFieldSettings = Field(default_factory=ProtectedFieldSettings)
    mass_overwrite: MassOverwriteSettings = Field(default_factory=MassOverwriteSettings)
    duplicate_spike: DuplicateSpikeSettings = Field(default_factory=DuplicateSpikeSettings)
    stage_anomaly: StageAnomalySettings = Field(default_factory=StageAnomalySettings)
    override: OverrideSettings = Field(default_factory=OverrideSettings)
    override_rate: OverrideRateSettings = Field(default_factory=OverrideRateSettings)
    activity_anomaly: ActivityAnomalySettings = Field(default_factory=ActivityAnomalySettings)
