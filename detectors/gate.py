"""The proposal gate: act, review or reject a proposed change; and the same rule for direct writes.

`decide(proposal, policy, trust_state)`:

1. reject `unknown_agent` when the proposal names no configured agent, `agent_mismatch` when the
   change's actor is another agent;
2. reject when the change is out of the agent's scope (the protected_field rules, shared:
   denied/allowed object types, denied/allowed fields, high-tier fields without
   `high_tier_allowed`);
3. reject `velocity_cap` when one more record would exceed a cap that applies to the change, given
   the agent's current distinct-record count per cap (`velocity_counts`, an input: the gate keeps
   no windows itself);
4. otherwise the tier of the change is the highest tier among its changed fields (deletes and
   merges count as high: they destroy data); `review` when the agent is paused (`paused`: the
   reason it was paused; a paused agent's changes wait for a person, whatever its autonomy,
   until it is resumed); `act` when the agent's autonomy in that tier is `act` (runtime pin,
   policy pin, trust-managed level, policy level: see detectors/trust.py), else `review` (at
   `observe` the reason says "escalate": nobody trusts the agent there yet).

`autonomy_breach(obs, policy, trust_state)`: a direct write on crm.changes by an agent whose
autonomy in the write's tier is observe or propose (it should have proposed, not written) is a
warning finding. Fields that are out of scope are left to protected_field (critical) so one write
never raises two alerts; writes that change nothing are ignored.

State: reads the trust state (keyed by agent), writes nothing. Cost: a few pattern matches per
changed field (compiled and cached per policy) and one dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from detectors.base import Finding, Observation, Severity, Stage, State, finding_for
from detectors.events import ActorKind, ChangeEvent
from detectors.policy import Autonomy, Policy, Tier, VelocityCap
from detectors.protected_field import object_violation, scope_violation
from detectors.settings import TrustSettings
from detectors.trust import TrustModel, TrustState

Action = Literal["act", "review", "reject"]
_TIER_RANK = {Tier.LOW: 0, Tier.MEDIUM: 1, Tier.HIGH: 2}
_DESTRUCTIVE = ("delete", "merge")


class Proposal(BaseModel):
    """What an agent publishes to crm.proposals: a canonical change plus why it wants it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    proposal_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    agent: str = Field(min_length=1, max_length=64)
    change: ChangeEvent
    reason: str = Field(default="", max_length=4000)
    evidence: Any = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    proposed_at: int = Field(description="milliseconds since the Unix epoch, UTC (ISO 8601 accepted)")

    @field_validator("proposed_at", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise ValueError("proposed_at needs a time zone (e.g. 2024-05-01T10:00:00Z)")
            return int(parsed.timestamp() * 1000)
        return value

    @property
    def kind(self) -> str:
        """What the review page groups by: `deal.dealstage`, `contact.email+phone`, `contact.create`."""
        return kind_of(self.change)


def kind_of(change: ChangeEvent) -> str:
    """`object_type.field[+field...]` for updates, `object_type.operation` otherwise."""
    obj = change.object_type.value
    if change.operation in ("update", "restore") and change.changes:
        return f"{obj}." + "+".join(sorted(c.field for c in change.changes))
    return f"{obj}.{change.operation}"


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: `action`, a reason a person can read, and what it was based on."""

    action: Action
    reason: str
    tier: Tier | None = None
    trust: float | None = None
    level: Autonomy | None = None
    violations: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "tier": self.tier.value if self.tier else None,
            "trust": None if self.trust is None else round(self.trust, 4),
            "level": self.level.value if self.level else None,
            "violations": list(self.violations),
        }


def change_tier(change: ChangeEvent, policy: Policy, fields: list[str] | None = None) -> Tier:
    """The highest tier among the change's fields (deletes and merges: high; no fields: low)."""
    if change.operation in _DESTRUCTIVE:
        return Tier.HIGH
    names = [c.field for c in change.changes] if fields is None else fields
    best = Tier.LOW
    for name in names:
        tier = policy.tier_of(change.source, name)
        if _TIER_RANK[tier] > _TIER_RANK[best]:
            best = tier
    return best


def decide(
    proposal: Proposal,
    policy: Policy,
    trust_state: TrustState,
    velocity_counts: Mapping[str, int] | None = None,
    settings: TrustSettings | None = None,
    paused: str | None = None,
) -> Decision:
    """act, review or reject one proposal (see the module docstring for the rules, in order);
    `paused` is why the agent is paused, None when it is not."""
    agent_name = proposal.agent
    agent = policy.agent(agent_name)
    change = proposal.change
    if agent is None:
        return Decision("reject", f"{agent_name} is not an agent named in the policy", violations=("unknown_agent",))
    if change.actor.kind is ActorKind.AGENT and change.actor.id not in ("", "unknown", agent_name):
        return Decision("reject", f"the change is attributed to agent {change.actor.id}, not {agent_name}",
                        violations=("agent_mismatch",))
    why = object_violation(agent, change.object_type.value)
    if why:
        return Decision("reject", f"{agent_name} may not write {change.object_type.value} records ({why})",
                        violations=(why,))
    creating = change.operation == "create"
    violations = []
    for item in change.changes:
        reason = scope_violation(agent, policy, change.source, item.field, creating)
        if reason:
            violations.append(f"{item.field}:{reason}")
    tier = change_tier(change, policy)
    if violations:
        return Decision("reject", f"out of scope for {agent_name}: " + ", ".join(violations), tier=tier,
                        violations=tuple(violations))
    breached = _breached_cap(change, policy, agent_name, velocity_counts)
    if breached is not None:
        cap, count = breached
        return Decision("reject", f"would breach velocity cap {cap.name} ({count} records in the window)",
                        tier=tier, violations=(f"velocity_cap:{cap.name}",))
    model = TrustModel(settings or policy.detectors.trust)
    level, source = model.level_and_source(trust_state, policy, agent_name, tier)
    trust = model.trust(trust_state, agent_name, tier, proposal.proposed_at)
    where = f"{tier.value} tier: autonomy {level.value} ({source}), trust {trust:.2f}"
    if paused is not None:
        return Decision("review", f"{agent_name} is paused ({paused}): its changes wait for a person until it is "
                        f"resumed; {where}", tier=tier, trust=trust, level=level)
    if level is Autonomy.ACT:
        return Decision("act", f"approved automatically, {where}", tier=tier, trust=trust, level=level)
    if level is Autonomy.OBSERVE:
        return Decision("review", f"escalate to review, {where}", tier=tier, trust=trust, level=level)
    return Decision("review", f"needs review, {where}", tier=tier, trust=trust, level=level)


def _breached_cap(
    change: ChangeEvent, policy: Policy, agent: str, counts: Mapping[str, int] | None
) -> tuple[VelocityCap, int] | None:
    if not counts:
        return None
    for cap in policy.caps_for(agent):
        if cap.object_type is not None and change.object_type is not cap.object_type:
            continue
        if cap.tier is not None and not any(policy.tier_of(change.source, c.field) is cap.tier for c in change.changes):
            continue
        count = counts.get(cap.name, 0)
        if count + 1 > cap.max_records:
            return cap, count
    return None


def autonomy_breach(
    obs: Observation, policy: Policy, trust_state: TrustState, settings: TrustSettings | None = None
) -> Finding | None:
    """A warning when an agent wrote directly where its autonomy says observe or propose."""
    event = obs.event
    if event.actor.kind is not ActorKind.AGENT or event.operation == "gap":
        return None
    name = event.actor.id
    agent = policy.agent(name)
    if agent is None or object_violation(agent, event.object_type.value):
        return None
    creating = event.operation == "create"
    fields = []
    for change in event.changes:
        prior = obs.priors.get(change.field)
        if prior is not None and prior.value == change.new:
            continue
        if scope_violation(agent, policy, event.source, change.field, creating):
            continue  # protected_field reports it
        fields.append(change.field)
    if not fields and event.operation not in _DESTRUCTIVE:
        return None
    tier = change_tier(event, policy, fields)
    model = TrustModel(settings or policy.detectors.trust)
    level, source = model.level_and_source(trust_state, policy, name, tier)
    if level is Autonomy.ACT:
        return None
    trust = model.trust(trust_state, name, tier, event.occurred_at)
    return finding_for(
        obs, "autonomy_breach", Severity.WARNING,
        f"agent {name} wrote {tier.value}-tier fields directly; its autonomy there is {level.value}, "
        + ("so it must propose them for review" if level is Autonomy.PROPOSE else "so it may only observe"),
        group=tier.value,
        details={"tier": tier.value, "level": level.value, "level_source": source, "trust": round(trust, 4),
                 "fields": sorted(fields), "operation": event.operation},
    )


class AutonomyBreachDetector:
    """ACTOR-stage wrapper of `autonomy_breach` reading a trust state it does not own.

    The trust state is written by the review service (app/review); pass the same mapping here.
    Its own `state` argument is unused (state key: none).
    """

    name: ClassVar[str] = "autonomy_breach"
    stage: ClassVar[Stage] = Stage.ACTOR

    def __init__(self, trust_state: TrustState) -> None:
        self.trust_state = trust_state

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        finding = autonomy_breach(obs, policy, self.trust_state)
        return [] if finding is None else [finding]
