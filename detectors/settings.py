"""Per-detector settings: the `detectors:` section of the policy file, with shipped defaults.

Each detector owns one model here; the policy file may set any of its keys. Durations accept
`30m`, `1h`, `72h`, `7d` or seconds.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _duration(value: Any) -> int:
    from detectors.policy import parse_duration_ms  # policy imports this module

    return parse_duration_ms(value)


Duration = Annotated[int, BeforeValidator(_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


class UnattributedActorSettings(_Section):
    """Changes from an identity no rule maps: warn, grouped per identity."""

    severity: str = "warning"


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


class DetectorSettings(BaseModel):
    """All detector sections. Detectors added later add their section here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unattributed_actor: UnattributedActorSettings = Field(default_factory=UnattributedActorSettings)
    source_gap: SourceGapSettings = Field(default_factory=SourceGapSettings)
    record_state: RecordStateSettings = Field(default_factory=RecordStateSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
