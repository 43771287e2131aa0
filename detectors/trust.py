"""Trust calibration: how far each agent has earned the right to write each field tier unreviewed.

Trust per (agent, tier) is the mean of a Beta posterior whose evidence fades with time::

    w_i   = 0.5 ** ((t_ref - t_i) / halflife)          # an outcome loses half its weight per halflife
    alpha = a0 + sum_i w_i * s_i                        # s_i: 1 approval, 0.5 modification, 0 otherwise
    beta  = b0 + sum_i w_i * (1 - s_i)                  # rejections and overrides count 1 here
    trust = alpha / (alpha + beta)
    a0 = prior_mean * prior_strength = 0.6,  b0 = (1 - prior_mean) * prior_strength = 1.4

so a new agent starts at trust 0.3 and drifts back to 0.3 when it stops producing evidence. Reading
trust at a later event time applies the fade up to that time. Outcomes: `approved` (a human
approved a proposal), `modified` (approved with changed values; `modification_success` = 0.5 of a
success), `rejected` (a human rejected it) and `override` (a human set a field back or to another
value after the agent wrote it: the override detector). Proposals rejected by the gate for scope,
auto-approved ones and expired ones are not evidence: no human judged the agent's accuracy.

Autonomy per (agent, tier) is one of observe < propose < act. The starting level is the policy's
(`agents.X.autonomy`, then `defaults.autonomy`); from there, after each outcome:

* demote one level after `demote_after_failures` (3) consecutive rejections/overrides (an approval
  resets the run; a modification neither extends nor resets it);
* demote act -> propose when trust falls below `propose_threshold` (0.5) after at least
  `demote_min_outcomes` (10) outcomes at this level (an agent that alternates good and bad work
  never has three failures in a row; the minimum keeps one early override from demoting a new
  agent, whose trust still sits near the 0.3 prior);
* promote observe -> propose when trust >= `propose_threshold` after >= `propose_min_outcomes` (3)
  outcomes at this level;
* promote propose -> act when trust >= `act_threshold` (0.8) and, counted raw since the level was
  last set, >= `promote_min_approvals` (20) approvals at an approval rate above `promote_min_rate`
  (80 %; modifications count half). Raw counts since the last move make a demoted agent re-earn
  the full 20; the decayed trust makes old approvals not enough on their own.

The published bands (act >= 0.8, suggest/propose 0.5-0.8, escalate/observe < 0.5) are the
thresholds above. Levels move one step at a time and only on outcomes (event time, never the wall
clock). A pin (operator at runtime, stored here; or `agents.X.pinned_autonomy` in the policy)
freezes the level: outcomes still update trust but move nothing. When the policy's configured level
for a tier changes, the managed level restarts from the new policy value.

Every move returns an event dict (for guard.feedback, keyed by agent) and appends a line to the
agent's history. State key: the agent name. Entry (JSON-able)::

    {"tiers": {tier: {"s": float, "f": float, "t": ms,            # decayed success/failure, ref time
                      "n": {"approved": int, "modified": int, "rejected": int, "override": int},
                      "la": int, "lw": float, "lt": int,            # approvals, weighted ok, outcomes since move
                      "streak": int, "level": str, "base": str, "since": ms,
                      "pin": str | None, "pin_by": str | None}},
     "seen": [outcome_id, ...],                                     # last 256: redelivery is a no-op
     "history": [{"at", "tier", "from", "to", "reason", "trust", "line"}, ...]}   # last history_limit

Memory bound: three tiers, 256 outcome ids and `history_limit` lines per agent (a few tens of KB).
Cost per outcome: O(1) arithmetic plus a scan of the 256 recent ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, MutableMapping

from detectors.policy import Autonomy, Policy, Tier
from detectors.settings import TrustSettings

Outcome = Literal["approved", "modified", "rejected", "override"]
OUTCOMES: tuple[str, ...] = ("approved", "modified", "rejected", "override")
LEVELS: tuple[Autonomy, ...] = (Autonomy.OBSERVE, Autonomy.PROPOSE, Autonomy.ACT)
_SEEN_LIMIT = 256

TrustState = MutableMapping[str, Any]
"""Trust entries keyed by agent name (a dict offline, a durable store online)."""


@dataclass
class TrustUpdate:
    """What one outcome did: `applied` is False for a redelivered outcome id."""

    applied: bool
    trust: float
    events: list[dict[str, Any]] = field(default_factory=list)


class TrustModel:
    """Applies outcomes to trust state and answers trust and autonomy questions. Pure."""

    def __init__(self, settings: TrustSettings | None = None) -> None:
        self.settings = settings or TrustSettings()
        s = self.settings
        self.a0 = s.prior_mean * s.prior_strength
        self.b0 = (1.0 - s.prior_mean) * s.prior_strength

    # ---- reading ------------------------------------------------------------------------------

    def trust(self, state: TrustState, agent: str, tier: Tier, at: int | None = None) -> float:
        """Posterior mean for the agent's tier, faded to event time `at` (prior 0.3 when unknown)."""
        alpha, beta = self.posterior(state, agent, tier, at)
        return alpha / (alpha + beta)

    def posterior(self, state: TrustState, agent: str, tier: Tier, at: int | None = None) -> tuple[float, float]:
        """(alpha, beta) of the Beta posterior at event time `at`."""
        entry = _tier_entry(state, agent, tier)
        if entry is None:
            return self.a0, self.b0
        factor = self._fade(entry["t"], at)
        return self.a0 + entry["s"] * factor, self.b0 + entry["f"] * factor

    def level(self, state: TrustState, policy: Policy, agent: str, tier: Tier) -> Autonomy:
        """The autonomy in force: runtime pin, policy pin, trust-managed level, policy level."""
        return self.level_and_source(state, policy, agent, tier)[0]

    def level_and_source(
        self, state: TrustState, policy: Policy, agent: str, tier: Tier
    ) -> tuple[Autonomy, str]:
        """The autonomy in force and where it comes from: pin, policy_pin, trust or policy."""
        entry = _tier_entry(state, agent, tier)
        if entry is not None and entry.get("pin"):
            return Autonomy(entry["pin"]), "pin"
        pinned = _policy_pin(policy, agent, tier)
        if pinned is not None:
            return pinned, "policy_pin"
        base = _policy_level(policy, agent, tier)
        if entry is not None and entry.get("base") == base.value:
            return Autonomy(entry["level"]), "trust"
        return base, "policy"

    def snapshot(self, state: TrustState, policy: Policy, agent: str, at: int | None = None) -> dict[str, Any]:
        """Everything about one agent's trust, for the API: per tier trust, evidence and level."""
        tiers: dict[str, Any] = {}
        for tier in (Tier.LOW, Tier.MEDIUM, Tier.HIGH):
            entry = _tier_entry(state, agent, tier) or {}
            alpha, beta = self.posterior(state, agent, tier, at)
            level, source = self.level_and_source(state, policy, agent, tier)
            counts = dict(entry.get("n") or {k: 0 for k in OUTCOMES})
            tiers[tier.value] = {
                "trust": round(alpha / (alpha + beta), 4),
                "alpha": round(alpha, 4),
                "beta": round(beta, 4),
                "counts": counts,
                "since_level": {"approvals": entry.get("la", 0), "outcomes": entry.get("lt", 0),
                                "rate": _rate(entry)},
                "consecutive_failures": entry.get("streak", 0),
                "level": level.value,
                "level_source": source,
                "pinned": entry.get("pin"),
                "pinned_by": entry.get("pin_by"),
                "band": self.band(alpha / (alpha + beta)).value,
            }
        held = state.get(agent) or {}
        return {"agent": agent, "tiers": tiers, "history": list(held.get("history") or [])}

    def band(self, trust: float) -> Autonomy:
        """The published band a trust value falls in: act >= 0.8, propose >= 0.5, else observe."""
        if trust >= self.settings.act_threshold:
            return Autonomy.ACT
        if trust >= self.settings.propose_threshold:
            return Autonomy.PROPOSE
        return Autonomy.OBSERVE

    # ---- writing ------------------------------------------------------------------------------

    def record(
        self, state: TrustState, policy: Policy, agent: str, tier: Tier, outcome: Outcome, at: int,
        outcome_id: str,
    ) -> TrustUpdate:
        """Apply one outcome at event time `at`; returns the new trust and any level-move events."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        held = state.get(agent)
        held = _new_agent() if held is None else held
        if outcome_id in held["seen"]:
            return TrustUpdate(False, self.trust(state, agent, tier, at))
        entry = self._entry(held, policy, agent, tier, at)
        success = {"approved": 1.0, "modified": self.settings.modification_success}.get(outcome, 0.0)
        self._add(entry, success, at)
        entry["n"][outcome] = entry["n"].get(outcome, 0) + 1
        entry["lt"] += 1
        entry["lw"] += success
        if outcome == "approved":
            entry["la"] += 1
            entry["streak"] = 0
        elif outcome in ("rejected", "override"):
            entry["streak"] += 1
        held["seen"].append(outcome_id)
        if len(held["seen"]) > _SEEN_LIMIT:
            del held["seen"][0]
        trust = self._trust_of(entry, at)
        events: list[dict[str, Any]] = []
        if not entry.get("pin") and _policy_pin(policy, agent, tier) is None:
            move = self._move(entry, trust)
            if move is not None:
                target, reason = move
                events.append(self._set_level(held, entry, agent, tier, target, reason, trust, at))
        state[agent] = held
        return TrustUpdate(True, trust, events)

    def pin(
        self, state: TrustState, policy: Policy, agent: str, tier: Tier, level: Autonomy | None, at: int,
        by: str, reason: str = "",
    ) -> dict[str, Any]:
        """Pin (or with None unpin) an agent's tier at a level; returns the event describing it."""
        held = state.get(agent)
        held = _new_agent() if held is None else held
        entry = self._entry(held, policy, agent, tier, at)
        before, _ = self.level_and_source({agent: held}, policy, agent, tier)
        entry["pin"] = None if level is None else level.value
        entry["pin_by"] = None if level is None else by
        after, _ = self.level_and_source({agent: held}, policy, agent, tier)
        trust = self._trust_of(entry, at)
        what = f"pinned at {level.value}" if level is not None else "unpinned"
        event = self._event(agent, tier, before, after, f"{what} by operator: {reason}".rstrip(": "), trust, at,
                            kind="pin")
        event["by"] = by
        _history(held, event, self.settings.history_limit)
        state[agent] = held
        return event

    # ---- internals ----------------------------------------------------------------------------

    def _entry(self, held: dict[str, Any], policy: Policy, agent: str, tier: Tier, at: int) -> dict[str, Any]:
        base = _policy_level(policy, agent, tier)
        entry: dict[str, Any] | None = held["tiers"].get(tier.value)
        if entry is None:
            entry = {"s": 0.0, "f": 0.0, "t": at, "n": {k: 0 for k in OUTCOMES}, "la": 0, "lw": 0.0, "lt": 0,
                     "streak": 0, "level": base.value, "base": base.value, "since": at, "pin": None,
                     "pin_by": None}
            held["tiers"][tier.value] = entry
        elif entry.get("base") != base.value:
            # The operator changed the policy's level: restart the managed level from it.
            entry.update(level=base.value, base=base.value, since=at, la=0, lw=0.0, lt=0, streak=0)
        return entry

    def _fade(self, ref: int, at: int | None) -> float:
        if at is None or at <= ref:
            return 1.0
        return float(0.5 ** ((at - ref) / self.settings.halflife))

    def _add(self, entry: dict[str, Any], success: float, at: int) -> None:
        if at >= entry["t"]:
            factor = self._fade(entry["t"], at)
            entry["s"] = entry["s"] * factor + success
            entry["f"] = entry["f"] * factor + (1.0 - success)
            entry["t"] = at
        else:  # out of order: the late outcome counts with the weight it has at the reference time
            weight = self._fade(at, entry["t"])
            entry["s"] += weight * success
            entry["f"] += weight * (1.0 - success)

    def _trust_of(self, entry: dict[str, Any], at: int) -> float:
        factor = self._fade(entry["t"], at)
        alpha = self.a0 + entry["s"] * factor
        beta = self.b0 + entry["f"] * factor
        return alpha / (alpha + beta)

    def _move(self, entry: dict[str, Any], trust: float) -> tuple[Autonomy, str] | None:
        s = self.settings
        level = Autonomy(entry["level"])
        index = LEVELS.index(level)
        if entry["streak"] >= s.demote_after_failures and index > 0:
            return LEVELS[index - 1], f"{entry['streak']} consecutive rejections or overrides"
        if level is Autonomy.ACT and trust < s.propose_threshold and entry["lt"] >= s.demote_min_outcomes:
            return Autonomy.PROPOSE, f"trust {trust:.2f} fell below {s.propose_threshold:.2f}"
        if level is Autonomy.OBSERVE and trust >= s.propose_threshold and entry["lt"] >= s.propose_min_outcomes:
            return Autonomy.PROPOSE, f"trust {trust:.2f} reached {s.propose_threshold:.2f}"
        rate = _rate(entry)
        if (level is Autonomy.PROPOSE and trust >= s.act_threshold and entry["la"] >= s.promote_min_approvals
                and rate > s.promote_min_rate):
            return Autonomy.ACT, (f"{entry['la']} approvals at {rate * 100:.0f} % since {_iso(entry['since'])}, "
                                  f"trust {trust:.2f}")
        return None

    def _set_level(
        self, held: dict[str, Any], entry: dict[str, Any], agent: str, tier: Tier, target: Autonomy, reason: str,
        trust: float, at: int,
    ) -> dict[str, Any]:
        before = Autonomy(entry["level"])
        entry.update(level=target.value, since=at, la=0, lw=0.0, lt=0, streak=0)
        kind = "promotion" if LEVELS.index(target) > LEVELS.index(before) else "demotion"
        event = self._event(agent, tier, before, target, reason, trust, at, kind=kind)
        _history(held, event, self.settings.history_limit)
        return event

    def _event(
        self, agent: str, tier: Tier, before: Autonomy, after: Autonomy, reason: str, trust: float, at: int, kind: str
    ) -> dict[str, Any]:
        line = f"{_iso(at)} {tier.value}: {before.value} -> {after.value} ({kind}: {reason})"
        return {"type": "autonomy", "kind": kind, "agent": agent, "tier": tier.value, "from": before.value,
                "to": after.value, "reason": reason, "trust": round(trust, 4), "at": at, "line": line}


def _new_agent() -> dict[str, Any]:
    return {"tiers": {}, "seen": [], "history": []}


def _tier_entry(state: TrustState, agent: str, tier: Tier) -> dict[str, Any] | None:
    held = state.get(agent)
    if not held:
        return None
    entry: dict[str, Any] | None = held["tiers"].get(tier.value)
    return entry


def _rate(entry: dict[str, Any]) -> float:
    total = entry.get("lt", 0)
    return round(float(entry.get("lw", 0.0)) / total, 4) if total else 0.0


def _policy_pin(policy: Policy, agent: str, tier: Tier) -> Autonomy | None:
    entry = policy.agent(agent)
    if entry is not None and tier in entry.pinned_autonomy:
        return entry.pinned_autonomy[tier]
    return None


def _policy_level(policy: Policy, agent: str, tier: Tier) -> Autonomy:
    """The policy's configured (unpinned) level: the agent's own, then the defaults."""
    entry = policy.agent(agent)
    if entry is not None and tier in entry.autonomy:
        return entry.autonomy[tier]
    return policy.defaults.autonomy.get(tier, Autonomy.OBSERVE)


def _history(held: dict[str, Any], event: dict[str, Any], limit: int) -> None:
    history = held["history"]
    history.append({k: event[k] for k in ("at", "tier", "from", "to", "reason", "trust", "line", "kind")})
    if len(history) > limit:
        del history[: len(history) - limit]


def _iso(ms: int) -> str:
    """Event time (ms) as ISO 8601 UTC to the second: history lines are read by people."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
