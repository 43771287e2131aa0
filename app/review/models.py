"""The review queue's records: one per proposal, its latest state, as stored in guard.decisions.

A record is written (keyed by proposal_id) every time its state changes; the compacted topic
keeps the latest, which is all a restart needs. `done` is the outbox flag: the decision is recorded
first with done=False, then its effects (crm.approved, trust, guard.feedback) are produced, then
the record is written again with done=True. A restart redoes the effects of records left undone.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from detectors.gate import Proposal
from detectors.policy import Tier


class ReviewStatus(str, Enum):
    """Where a proposal stands. Gate approvals are `approved` with via=gate."""

    PENDING = "pending"
    APPROVED = "approved"
    MODIFIED = "modified"
    REJECTED = "rejected"
    EXPIRED = "expired"


Via = Literal["gate", "human", "expiry"]

REJECT_CATEGORIES = ("wrong_value", "out_of_scope", "not_needed", "insufficient_evidence", "duplicate", "other")
"""Reason categories a reviewer picks for a rejection (sent to the agent on guard.feedback)."""


class ReviewRecord(BaseModel):
    """A proposal and what became of it."""

    model_config = ConfigDict(frozen=True)

    type: Literal["proposal"] = "proposal"
    proposal: Proposal
    status: ReviewStatus = ReviewStatus.PENDING
    kind: str
    tier: Tier | None = None
    gate: dict[str, Any] = Field(default_factory=dict, description="the gate's Decision.to_dict()")
    received_at: int
    decided_by: str | None = None
    decided_at: int | None = None
    decision_reason: str = ""
    category: str | None = None
    via: Via | None = None
    applied_change: dict[str, Any] | None = Field(default=None, description="the change sent to crm.approved")
    done: bool = True

    @property
    def proposal_id(self) -> str:
        return self.proposal.proposal_id

    @property
    def agent(self) -> str:
        return self.proposal.agent

    @property
    def pending(self) -> bool:
        return self.status is ReviewStatus.PENDING

    def fields(self) -> list[str]:
        return [c.field for c in self.proposal.change.changes]


class ReviewFilter(BaseModel):
    """Which records a listing or a batch approval covers. Empty means all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str | None = None
    kind: str | None = None
    field: str | None = None
    tier: Tier | None = None
    status: ReviewStatus | None = None

    def is_empty(self) -> bool:
        return not any((self.agent, self.kind, self.field, self.tier))

    def matches(self, record: ReviewRecord) -> bool:
        if self.status is not None and record.status is not self.status:
            return False
        if self.agent is not None and record.agent != self.agent:
            return False
        if self.kind is not None and record.kind != self.kind:
            return False
        if self.tier is not None and record.tier is not self.tier:
            return False
        if self.field is not None and self.field.lower() not in {f.lower() for f in record.fields()}:
            return False
        return True
