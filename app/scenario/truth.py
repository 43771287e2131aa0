"""Ground truth of a generated scenario: which faults were injected where, and the benign look-alikes.

truth.json (written next to the payload files) is what bench/detection_quality.py scores the
guard against. Each fault instance names its class, vendor, the actor that made it (an agent
name, or for an unknown integration the guard's actor key `unknown:<vendor>:<id>`), when it
started and ended, the detectors expected to catch it, and every faulty change with its event
time, record, field, old and new value and the canonical event id the adapters derive. Values
that are e-mail addresses or phone numbers are not written (the file is safe to share).

Fault classes (FAULT_CLASSES):
  slow_drip_overwrite         an agent overwrites set UTM values 2-3 times an hour (under every cap)
  duplicate_creation          an agent creates contacts that already exist (e-mail/phone variants)
  wrong_stage_after_support   an agent moves deal stages after support tickets; humans revert them
  commission_field_write      an agent writes amount / close date / owner of deals
  velocity_burst              an agent changes far more than its cap of distinct records in an hour
  unknown_integration         an API identity that maps to no agent writes to the CRM
  silent_blanking             an agent empties non-empty fields
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

FAULT_CLASSES = (
    "slow_drip_overwrite",
    "duplicate_creation",
    "wrong_stage_after_support",
    "commission_field_write",
    "velocity_burst",
    "unknown_integration",
    "silent_blanking",
)

EXPECTED_DETECTORS: dict[str, tuple[str, ...]] = {
    "slow_drip_overwrite": ("mass_overwrite",),
    "duplicate_creation": ("duplicate_spike",),
    "wrong_stage_after_support": ("stage_anomaly",),
    "commission_field_write": ("protected_field",),
    "velocity_burst": ("velocity_cap",),
    "unknown_integration": ("unattributed_actor",),
    "silent_blanking": ("mass_overwrite",),
}
"""Alert kinds that count as catching each fault class (the first such alert is the detection)."""

LOOKALIKE_CLASSES = (
    "human_import",
    "human_bulk_edit",
    "agent_fill_near_cap",
    "human_corrects_human",
    "agent_merge_not_duplicate",
    "agent_stage_move_after_sales_activity",
    "known_integration",
)

_PII_FIELDS = frozenset({"email", "phone"})


@dataclass
class FaultChange:
    """One faulty change (or, for `reverts`, the human's correction of one)."""

    at: int
    record_id: str
    object_type: str
    field: str | None
    native_field: str | None
    old: Any
    new: Any
    event_id: str | None
    over_cap: bool | None = None
    event_ids: list[str] | None = None  # a create: every event it took (HubSpot: creation + properties)

    def to_json(self) -> dict[str, Any]:
        out = {
            "at": self.at,
            "record_id": self.record_id,
            "object_type": self.object_type,
            "field": self.field,
            "native_field": self.native_field,
            "event_id": self.event_id,
        }
        if self.field in _PII_FIELDS:
            out["old"] = "<masked>" if self.old else self.old
            out["new"] = "<masked>" if self.new else self.new
        else:
            out["old"] = self.old
            out["new"] = self.new
        if self.over_cap is not None:
            out["over_cap"] = self.over_cap
        if self.event_ids:
            out["event_ids"] = self.event_ids
        return out


@dataclass
class Fault:
    """One injected fault instance."""

    fid: str
    cls: str
    vendor: str
    agent: str | None
    actor_key: str
    identity: dict[str, str]
    planned_start: int
    planned_end: int
    description: str
    changes: list[FaultChange] = field(default_factory=list)
    reverts: list[FaultChange] = field(default_factory=list)
    related_records: list[str] = field(default_factory=list)

    @property
    def start(self) -> int:
        """The first faulty change (the fault begins when the agent first does harm)."""
        return min((c.at for c in self.changes), default=self.planned_start)

    @property
    def end(self) -> int:
        """The last faulty change."""
        return max((c.at for c in self.changes), default=self.planned_start)

    def counted_changes(self) -> list[FaultChange]:
        """The changes that are faulty by themselves (for a burst: those beyond the cap)."""
        if self.cls == "velocity_burst":
            return [c for c in self.changes if c.over_cap]
        return self.changes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.fid,
            "class": self.cls,
            "vendor": self.vendor,
            "agent": self.agent,
            "actor_key": self.actor_key,
            "identity": self.identity,
            "start": self.start,
            "end": self.end,
            "planned_start": self.planned_start,
            "planned_end": self.planned_end,
            "expected_detectors": list(EXPECTED_DETECTORS[self.cls]),
            "description": self.description,
            "faulty_changes": len(self.counted_changes()),
            "changes": [c.to_json() for c in self.changes],
            "reverts": [c.to_json() for c in self.reverts],
            "related_records": self.related_records,
        }


@dataclass
class Lookalike:
    """A benign pattern that resembles a fault (must not alert)."""

    cls: str
    vendor: str
    actor: str
    actor_kind: str
    start: int
    end: int
    records: int
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.cls,
            "vendor": self.vendor,
            "actor": self.actor,
            "actor_kind": self.actor_kind,
            "start": self.start,
            "end": self.end,
            "records": self.records,
            "detail": self.detail,
        }


class Truth:
    """Collects faults and look-alikes while the generator runs, then writes truth.json."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.lookalikes: list[Lookalike] = []
        self.meta: dict[str, Any] = {}

    def add_fault(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def add_lookalike(self, item: Lookalike) -> None:
        self.lookalikes.append(item)

    def to_json(self) -> dict[str, Any]:
        # a planned fault that made no change (the scenario ended first) never happened
        faults = sorted((f for f in self.faults if f.changes), key=lambda f: (f.start, f.fid))
        lookalikes = sorted(self.lookalikes, key=lambda x: (x.start, x.vendor, x.cls))
        return {
            **self.meta,
            "fault_classes": list(FAULT_CLASSES),
            "faults": [f.to_json() for f in faults],
            "lookalikes": [x.to_json() for x in lookalikes],
        }

    def write(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS) + b"\n")


def load_truth(path: str | Path) -> dict[str, Any]:
    """truth.json as a dict (see the module docstring for its shape)."""
    data: dict[str, Any] = orjson.loads(Path(path).read_bytes())
    return data
