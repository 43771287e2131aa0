"""The guard's three stages, and `Guard`, which runs them in one process (replay, tests).

RECORD (keyed by record) -> LINK (keyed by identity or account) -> ACTOR (keyed by actor).
The streaming runtime (app/runtime) runs each stage as its own Kafka consumer over the
partitions of its key, calling exactly these classes; `Guard` calls them in sequence over dicts.
Order within one event, everywhere: record detectors, link detectors, then the actor stage sees
the observation first and the upstream findings after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, MutableMapping

from detectors.alerts import Alert, AlertManager, PauseDecision
from detectors.attribution import Attributor
from detectors.base import Finding, Observation, Severity, Stage
from detectors.events import ChangeEvent
from detectors.policy import Policy
from detectors.record_state import RecordState
from detectors.registry import default_detectors

StateSet = MutableMapping[str, MutableMapping[str, Any]]
"""State of every detector of a stage, by detector name."""

ALERTS_STATE = "alerts"
RECORD_STATE = "record_state"
ADVANCE_EVERY_MS = 60_000
"""How often (in event time) the replay tells the actor stage where event time is."""
COMPACT_EVERY_MS = 86_400_000
"""How often (in event time) the stages drop state past its retention (`compact`): an entry
outlives its detector's retention (7 to 365 days) by at most a day."""


def next_boundary(at_ms: int, every_ms: int) -> int:
    """The first multiple of `every_ms` after event time `at_ms` (when a periodic task is due next)."""
    return at_ms - at_ms % every_ms + every_ms


@dataclass
class ActorResult:
    """What the actor stage concluded from one input."""

    findings: list[Finding] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    pauses: list[PauseDecision] = field(default_factory=list)


@dataclass
class Output(ActorResult):
    """Everything one event caused, in the order it happened."""

    observation: Observation | None = None
    duplicate: bool = False

    @property
    def overrides(self) -> list[Finding]:
        """Override signals among the findings (the agent's value, the human's value, delay)."""
        return [f for f in self.findings if f.detector == "override"]


class RecordStage:
    """Record state plus the detectors that read one record's history."""

    def __init__(self, policy: Policy, detectors: Iterable[Any]) -> None:
        self.policy = policy
        self.record_state = RecordState(policy.detectors.record_state)
        self.detectors = [d for d in detectors if d.stage is Stage.RECORD]

    def state_names(self) -> list[str]:
        return [RECORD_STATE] + [d.name for d in self.detectors]

    def state_loaders(self) -> dict[str, Callable[[Any], Any]]:
        """Per state, how an entry read back from JSON is made the entry `process` keeps."""
        loaders: dict[str, Callable[[Any], Any]] = {RECORD_STATE: self.record_state.loaded}
        for detector in self.detectors:
            loaded = getattr(detector, "loaded", None)
            if loaded is not None:
                loaders[detector.name] = loaded
        return loaders

    def process(self, event: ChangeEvent, states: StateSet) -> tuple[Observation | None, list[Finding]]:
        """Apply the event; None when it was already applied (a redelivery)."""
        obs = self.record_state.apply(event, states[RECORD_STATE])
        if obs is None:
            return None, []
        return obs, self.detect(obs, states)

    def compact(self, states: StateSet, now_ms: int) -> int:
        """Drop records and detector entries past their retention at event time `now_ms`."""
        dropped = self.record_state.compact(states[RECORD_STATE], now_ms)
        return dropped + compact_detectors(self.detectors, states, now_ms, self.policy)

    def detect(self, obs: Observation, states: StateSet) -> list[Finding]:
        """The record detectors over an observation the record state made (the second half of `process`)."""
        findings: list[Finding] = []
        policy = self.policy
        for detector in self.detectors:
            found = detector.observe(obs, states[detector.name], policy)
            if found:
                findings.extend(found)
        return findings


class LinkStage:
    """Detectors that relate records through a shared key (identity, account)."""

    def __init__(self, policy: Policy, detectors: Iterable[Any]) -> None:
        self.policy = policy
        self.detectors = {d.name: d for d in detectors if d.stage is Stage.LINK}

    def state_names(self) -> list[str]:
        return list(self.detectors)

    def keys(self, obs: Observation) -> list[tuple[str, str]]:
        """(detector, key) pairs the observation must visit, each in its key's partition."""
        out = []
        policy = self.policy
        for name, detector in self.detectors.items():
            for key in detector.link_keys(obs, policy):
                out.append((name, key))
        return out

    def process(self, name: str, key: str, obs: Observation, states: StateSet) -> list[Finding]:
        return list(self.detectors[name].observe_link(key, obs, states[name], self.policy))

    def compact(self, states: StateSet, now_ms: int) -> int:
        """Drop identities and accounts past their retention at event time `now_ms`."""
        return compact_detectors(self.detectors.values(), states, now_ms, self.policy)


class ActorStage:
    """Per-actor detectors and the alert grouping that turns findings into alerts and pauses."""

    def __init__(self, policy: Policy, detectors: Iterable[Any]) -> None:
        self.policy = policy
        self.detectors = [d for d in detectors if d.stage is Stage.ACTOR]
        self.listeners = [d for d in self.detectors if hasattr(d, "on_finding")]
        self.alerts = AlertManager(policy.detectors.alerts)

    def state_names(self) -> list[str]:
        return [ALERTS_STATE] + [d.name for d in self.detectors]

    def process_observation(
        self, obs: Observation, states: StateSet, result: ActorResult | None = None
    ) -> ActorResult:
        """The actor detectors over an observation; adds to `result` when given (else a new one)."""
        if result is None:
            result = ActorResult()
        seen = len(result.findings)
        policy = self.policy
        for detector in self.detectors:
            found = detector.observe(obs, states[detector.name], policy)
            if found:
                for finding in found:
                    self._conclude(finding, states, result)
        if len(result.findings) == seen:
            # Quiet traffic still moves event time forward: resolve alerts gone quiet.
            resolved = self.alerts.tick(obs.actor_key, obs.event.occurred_at, states[ALERTS_STATE])
            if resolved:
                result.alerts.extend(resolved)
        return result

    def flush(self, now_ms: int, states: StateSet) -> ActorResult:
        """Close open windows (activity_anomaly) up to event time `now_ms`: end of a replay."""
        result = ActorResult()
        for detector in self.detectors:
            flush = getattr(detector, "flush", None)
            if flush is None:
                continue
            state = states[detector.name]
            for key in sorted(state):
                for finding in flush(key, now_ms, state, self.policy):
                    self._conclude(finding, states, result)
        return result

    def advance(self, watermark_ms: int, states: StateSet) -> ActorResult:
        """Event time reached `watermark_ms` (other actors' changes say so): detectors with
        windows close those of actors that went quiet (activity_anomaly.advance)."""
        result = ActorResult()
        for detector in self.detectors:
            advance = getattr(detector, "advance", None)
            if advance is None:
                continue
            for finding in advance(watermark_ms, states[detector.name], self.policy):
                self._conclude(finding, states, result)
        return result

    def compact(self, states: StateSet, now_ms: int) -> int:
        """Drop per-actor entries past their retention at event time `now_ms`."""
        return compact_detectors(self.detectors, states, now_ms, self.policy)

    def process_finding(
        self, finding: Finding, states: StateSet, result: ActorResult | None = None
    ) -> ActorResult:
        """An upstream finding (record or link stage) for this actor; adds to `result` when given."""
        if result is None:
            result = ActorResult()
        self._conclude(finding, states, result)
        for detector in self.listeners:
            for derived in detector.on_finding(finding, states[detector.name], self.policy):
                self._conclude(derived, states, result)
        return result

    def _conclude(self, finding: Finding, states: StateSet, result: ActorResult) -> None:
        result.findings.append(finding)
        alerts, pauses = self.alerts.add(finding, states[ALERTS_STATE])
        result.alerts.extend(alerts)
        result.pauses.extend(pauses)


class Guard:
    """All stages in one process over dicts: the replay/backtest and the unit-test harness."""

    def __init__(self, policy: Policy | None = None, detectors: Iterable[Any] | None = None) -> None:
        self.policy = policy or Policy()
        chosen = list(detectors) if detectors is not None else default_detectors(self.policy)
        self.attributor = Attributor(self.policy)
        self.record = RecordStage(self.policy, chosen)
        self.link = LinkStage(self.policy, chosen)
        self.actor = ActorStage(self.policy, chosen)
        names = self.record.state_names() + self.link.state_names() + self.actor.state_names()
        self.states: dict[str, dict[str, Any]] = {name: {} for name in names}
        self.detectors = chosen
        self.watermark = 0  # the latest event time seen
        self._next_advance = 0
        self.compacted = 0  # entries dropped past their retention so far
        self._observed_until = 0  # the latest event time the record state saw
        self._next_record_compact = 0
        self._next_compact = 0

    def process(self, event: ChangeEvent) -> Output:
        """Run one event through every stage."""
        obs = self.observe(event)
        if obs is None:
            return Output(duplicate=True)
        return self.process_downstream(obs)

    def observe(self, event: ChangeEvent) -> Observation | None:
        """The first half of `process`: attribution and the record state (None: a redelivery).

        The halves share no state (only this one reads and writes the record state; every
        detector after it keeps its own), so they may run in two processes: app/replay.py with
        workers=2 hands the observations from one to the other, in order. Each half compacts
        its own states once per COMPACT_EVERY_MS of event time."""
        at = event.occurred_at
        if at > self._observed_until:
            self._observed_until = at
            if at >= self._next_record_compact:
                self._next_record_compact = next_boundary(at, COMPACT_EVERY_MS)
                self.compacted += self.record.record_state.compact(self.states[RECORD_STATE], at)
        return self.record.record_state.apply(self.attributor.attribute(event), self.states[RECORD_STATE])

    def process_downstream(self, obs: Observation) -> Output:
        """The second half of `process`: the record detectors, the link stage, then the actor stage
        (the observation, then the record and link findings, in order)."""
        states = self.states
        upstream = self.record.detect(obs, states)
        link = self.link
        for name, key in link.keys(obs):
            upstream.extend(link.process(name, key, obs, states))
        actor = self.actor
        out = Output(observation=obs)
        actor.process_observation(obs, states, out)
        for finding in upstream:
            actor.process_finding(finding, states, out)
        at = obs.event.occurred_at
        if at > self.watermark:
            self.watermark = at
            if at >= self._next_advance:  # once per minute of event time: windows of quiet agents
                self._next_advance = next_boundary(at, ADVANCE_EVERY_MS)
                _merge(out, actor.advance(at, states))
            if at >= self._next_compact:  # once per day of event time: state past its retention
                self._next_compact = next_boundary(at, COMPACT_EVERY_MS)
                self.compacted += (compact_detectors(self.record.detectors, states, at, self.policy)
                                   + link.compact(states, at) + actor.compact(states, at))
        return out

    def finish(self, now_ms: int) -> Output:
        """End of input: close the windows still open at event time `now_ms`."""
        out = Output()
        _merge(out, self.actor.flush(now_ms, self.states))
        return out

    def open_alerts(self) -> list[Alert]:
        """Alerts still open (for summaries)."""
        return self.alerts_manager().open_alerts(self.states[ALERTS_STATE])

    def alerts_manager(self) -> AlertManager:
        return self.actor.alerts

    def resume(self, agent: str) -> None:
        """An operator resumed the agent."""
        self.actor.alerts.resume(agent, self.states[ALERTS_STATE])


def compact_detectors(detectors: Iterable[Any], states: StateSet, now_ms: int, policy: Policy) -> int:
    """Every detector's `compact_state` over its own state; returns how many entries went."""
    dropped = 0
    for detector in detectors:
        compact = getattr(detector, "compact_state", None)
        if compact is not None:
            dropped += compact(states[detector.name], now_ms, policy)
    return dropped


def _merge(out: ActorResult, part: ActorResult) -> None:
    out.findings.extend(part.findings)
    out.alerts.extend(part.alerts)
    out.pauses.extend(part.pauses)


def is_alerting(finding: Finding) -> bool:
    """Warning or worse: what opens an alert."""
    return finding.severity is not Severity.INFO
