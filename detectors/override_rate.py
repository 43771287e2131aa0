"""override_rate: an agent whose changes people keep overriding, more than it used to.

Rule. Per agent and field tier, over a rolling `window` (7d) of event time: the agent's field
changes (counted by `observe`) and the `override` findings about it (counted by `on_finding`).
rate = overrides / changes (at least the overrides, so a rate never exceeds 1). On an override,
warning `override_rate` (group: the tier) when overrides >= `min_overrides` (5) and
rate > min(max(`min_rate` (0.2), `k` (2) x baseline), `ceiling_rate` (0.5)). The baseline is an
EWMA (`baseline_alpha` 0.1 per day, from 0) of the tier's daily rate, over days with at least
`min_changes_for_baseline` (20) changes; the ceiling keeps an agent that is bad from the start from
learning its badness as normal. Statistical: warns, never pauses. Overrides come up to 72h after
the change they undo, so the rate is approximate near the window's edge; it is a trend signal.

One warning per episode: the window keeps an incident's overrides for days after it ended, so once
a tier warned, further overrides while its rate stays above the bar are `info` (evidence on the
open alert), not new warnings; the tier re-arms on the first override that finds the rate back at
or below the bar (or the overrides under `min_overrides`).

State key: the agent (ACTOR stage). Entry: `{"c": {tier: {hour: n}}, "o": {tier: {hour: n}},
"b": {tier: rate}, "d": day, "dc": {tier: n}, "do": {tier: n}, "a": {tier: warned_at},
"e": [recent ids]}`: hourly buckets, pruned to the window, so at most 3 tiers x 2 x 168 small
ints per agent (~25 KB). Only agents have entries. Redelivery: the last 64 event ids (and
override ids) are remembered.
Cost: per agent event one dict increment per changed field; per override a sum over <= 168 buckets.
"""

from __future__ import annotations

from typing import Any, ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State
from detectors.events import ActorKind
from detectors.policy import Policy
from detectors.settings import OverrideRateSettings
from detectors.values import TierCache, finding_from, first_seen

_AGENT = ActorKind.AGENT

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


class OverrideRateDetector:
    """Overrides per change per agent and tier, against the agent's baseline (see module docstring)."""

    name: ClassVar[str] = "override_rate"
    stage: ClassVar[Stage] = Stage.ACTOR

    def __init__(self) -> None:
        self._tiers = TierCache()

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        settings = policy.detectors.override_rate
        event = obs.event
        if (
            not settings.enabled
            or event.actor.kind is not _AGENT
            or not event.changes
            or event.operation in ("delete", "gap")
        ):
            return []
        key = obs.actor_key
        entry = self._entry(state, key, event.occurred_at)
        if not first_seen(entry["e"], event.event_id):
            return []
        self._roll(entry, event.occurred_at, settings)
        hour = str(event.occurred_at // HOUR_MS)
        for change in event.changes:
            tier = self._tiers.tier(policy, event.source, change.field).value
            self._bump(entry["c"], tier, hour, event.occurred_at, settings)
            entry["dc"][tier] = entry["dc"].get(tier, 0) + 1
        state[key] = entry
        return []

    def on_finding(self, finding: Finding, state: State, policy: Policy) -> list[Finding]:
        settings = policy.detectors.override_rate
        if (
            not settings.enabled
            or finding.detector != "override"
            or finding.actor_kind is not _AGENT
        ):
            return []
        key = finding.actor_key
        now = finding.occurred_at
        entry = self._entry(state, key, now)
        if not first_seen(entry["e"], f"{finding.event_id}|{finding.group}"):
            return []
        self._roll(entry, now, settings)
        tier = str(finding.details.get("tier", "low"))
        hour = str(now // HOUR_MS)
        self._bump(entry["o"], tier, hour, now, settings)
        entry["do"][tier] = entry["do"].get(tier, 0) + 1
        state[key] = entry
        horizon = now // HOUR_MS - settings.window // HOUR_MS
        overrides = sum(n for h, n in entry["o"].get(tier, {}).items() if int(h) > horizon)
        changes = sum(n for h, n in entry["c"].get(tier, {}).items() if int(h) > horizon)
        rate = overrides / max(changes, overrides, 1)
        baseline = entry["b"].get(tier, 0.0)
        threshold = min(max(settings.min_rate, settings.k * baseline), settings.ceiling_rate)
        raised: dict[str, int] = entry.setdefault("a", {})
        if overrides < settings.min_overrides or rate <= threshold:
            raised.pop(tier, None)  # the episode is over: the next rise warns again
            return []
        # One warning per episode: while the rate stays above the bar, further overrides are
        # evidence (info) on the alert, not new warnings (the window keeps an incident's overrides
        # for days after it ended).
        severity = Severity.INFO if tier in raised else Severity.WARNING
        if severity is Severity.WARNING:
            raised[tier] = now
        days = settings.window / DAY_MS
        return [
            finding_from(
                finding,
                self.name,
                severity,
                f"agent {finding.agent}: {overrides} of its {changes} {tier}-tier changes "
                f"overridden by people in {days:g}d (rate {rate:.0%}, baseline {baseline:.0%})"
                + (" (still above the bar)" if severity is Severity.INFO else ""),
                group=tier,
                details={
                    "tier": tier,
                    "overrides": overrides,
                    "changes": changes,
                    "rate": round(rate, 4),
                    "baseline": round(baseline, 4),
                    "threshold": round(threshold, 4),
                    "window_ms": settings.window,
                    "last_field": finding.group,
                },
            )
        ]

    @staticmethod
    def _entry(state: State, key: str, now: int) -> dict[str, Any]:
        entry = state.get(key)
        if entry is None:
            entry = {"c": {}, "o": {}, "b": {}, "d": now // DAY_MS, "dc": {}, "do": {}, "e": {}}
        return entry

    @staticmethod
    def _roll(entry: dict[str, Any], now: int, settings: OverrideRateSettings) -> None:
        """A new day: fold the finished day's rate into each tier's baseline (idle days leave it)."""
        day = now // DAY_MS
        if day <= entry["d"]:
            return
        alpha = settings.baseline_alpha
        for tier, changes in entry["dc"].items():
            if changes >= settings.min_changes_for_baseline:
                rate = min(1.0, entry["do"].get(tier, 0) / changes)
                entry["b"][tier] = alpha * rate + (1 - alpha) * entry["b"].get(tier, 0.0)
        entry["d"] = day
        entry["dc"] = {}
        entry["do"] = {}

    @staticmethod
    def _bump(
        buckets: dict[str, dict[str, int]], tier: str, hour: str, now: int, settings: OverrideRateSettings
    ) -> None:
        per_hour = buckets.get(tier)
        if per_hour is None:
            per_hour = buckets[tier] = {}
        if hour not in per_hour:
            horizon = now // HOUR_MS - settings.window // HOUR_MS
            for old in [h for h in per_hour if int(h) <= horizon]:
                del per_hour[old]
            per_hour[hour] = 0
        per_hour[hour] += 1
