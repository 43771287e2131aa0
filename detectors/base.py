"""The contract every detector keeps, and the small value types that flow between stages.

The guard runs in three stages, each with state keyed by what it is about (docs/ARCHITECTURE.md):

* RECORD, keyed by record: the last value of every field and who set it (record_state), and the
  detectors that need one record's history (override, stage moves on one deal).
* LINK, keyed by a link key (a normalized identity such as `email:ann@x.com`, or an account such as
  `hubspot/company/42`): the detectors that relate records (duplicates, support context).
* ACTOR, keyed by actor: caps, scope, rates, anomaly scores, and the alert grouping.

A detector sees an `Observation` (the event plus what the record stage knew before it) and returns
findings. Offline (replay, tests) the stages run in one process over dicts; online each stage is a
Kafka consumer over its own partitions, with the same detector objects and a durable mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Iterable, MutableMapping, Protocol

from detectors.events import ActorKind, ChangeEvent, JsonValue, RelatedRecord
from detectors.policy import Policy, Tier


class Stage(str, Enum):
    RECORD = "record"
    LINK = "link"
    ACTOR = "actor"


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class Prior:
    """What the guard knew of a field before this event: its value, who set it, and when."""

    value: JsonValue
    actor_id: str
    actor_kind: ActorKind
    at: int
    event_id: str


@dataclass(slots=True)
class Observation:
    """An event as the detectors see it.

    `priors` maps each changed field to the guard's last known value (None when the guard never
    saw the field: it cannot tell a fill from an overwrite then); a deletion that names no
    values (HubSpot, Salesforce) gets every value the guard knew of the record. `related` is the union of the
    event's own associations and those the record stage remembers for the record.
    """

    event: ChangeEvent
    priors: dict[str, Prior | None] = field(default_factory=dict)
    related: tuple[RelatedRecord, ...] = ()
    record_known: bool = False

    @property
    def actor_key(self) -> str:
        """Partition key of the actor stage: the agent name, or `kind:vendor:user` for others."""
        return actor_key(self.event)


def actor_key(event: ChangeEvent) -> str:
    """Agents are keyed by name; every other actor by kind and its vendor identity."""
    actor = event.actor
    if actor.kind is ActorKind.AGENT:
        return actor.id
    return f"{actor.kind.value}:{event.source}:{actor.id}"


@dataclass(slots=True)
class Finding:
    """One detector's conclusion about one event (or one window ending at an event).

    `group` is what alerts are grouped by beyond actor and kind (e.g. the field for mass_overwrite,
    the cap for velocity_cap); `pause` asks the alert manager to pause the agent.
    """

    detector: str
    severity: Severity
    actor_key: str
    actor_kind: ActorKind
    agent: str | None
    event_id: str
    occurred_at: int
    record_key: str
    object_type: str
    summary: str
    group: str = ""
    pause: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used on repartition topics and in tests)."""
        return {
            "detector": self.detector,
            "severity": self.severity.value,
            "actor_key": self.actor_key,
            "actor_kind": self.actor_kind.value,
            "agent": self.agent,
            "event_id": self.event_id,
            "occurred_at": self.occurred_at,
            "record_key": self.record_key,
            "object_type": self.object_type,
            "summary": self.summary,
            "group": self.group,
            "pause": self.pause,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Finding":
        """Inverse of to_dict."""
        return cls(
            detector=data["detector"],
            severity=Severity(data["severity"]),
            actor_key=data["actor_key"],
            actor_kind=ActorKind(data["actor_kind"]),
            agent=data.get("agent"),
            event_id=data["event_id"],
            occurred_at=int(data["occurred_at"]),
            record_key=data["record_key"],
            object_type=data["object_type"],
            summary=data["summary"],
            group=data.get("group", ""),
            pause=bool(data.get("pause", False)),
            details=dict(data.get("details") or {}),
        )


def actor_label(obs: Observation) -> str:
    """How summaries name who did it: `agent enrich-bot`, or `unknown hubspot user 1850301`."""
    actor = obs.event.actor
    if actor.kind is ActorKind.AGENT:
        return f"agent {actor.id}"
    return f"{actor.kind.value} {obs.event.source} user {actor.id}"


def finding_for(obs: Observation, detector: str, severity: Severity, summary: str, **kw: Any) -> Finding:
    """A finding about the observation's event, with actor fields filled in."""
    event = obs.event
    actor = event.actor
    return Finding(
        detector=detector,
        severity=severity,
        actor_key=obs.actor_key,
        actor_kind=actor.kind,
        agent=actor.id if actor.kind is ActorKind.AGENT else None,
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        record_key=event.record_key,
        object_type=event.object_type.value,
        summary=summary,
        **kw,
    )


State = MutableMapping[str, Any]
"""A detector's state: a dict offline, a durable keyed store online. Values must be JSON-able
(dicts, lists, str, int, float, bool, None) so the runtime can write them to a changelog."""


def drop_older_than(state: State, cutoff_ms: int, time_key: str = "t") -> int:
    """Compaction as most detectors do it: drop the entries whose time (`entry[time_key]`, ms of
    event time) is before `cutoff_ms`; returns how many went."""
    stale = [k for k, v in state.items() if v[time_key] < cutoff_ms]
    for key in stale:
        del state[key]
    return len(stale)


class Detector(Protocol):
    """One detection rule. Pure: no I/O, no wall clock; time is the event's.

    `observe` is called once per observation at the detector's stage, with `state` holding its
    keyed entries; it returns findings (usually none). ACTOR-stage detectors may also implement
    `on_finding` to learn from findings made upstream (e.g. override_rate counts overrides).
    """

    name: ClassVar[str]
    stage: ClassVar[Stage]

    def observe(self, obs: Observation, state: State, policy: Policy) -> Iterable[Finding]: ...


class LinkDetector(Protocol):
    """A LINK-stage detector: `link_keys` says which link partitions an observation visits."""

    name: ClassVar[str]
    stage: ClassVar[Stage]

    def link_keys(self, obs: Observation, policy: Policy) -> Iterable[str]: ...

    def observe_link(self, key: str, obs: Observation, state: State, policy: Policy) -> Iterable[Finding]: ...


def tier_of(obs: Observation, field_name: str, policy: Policy) -> Tier:
    """Shortcut: the tier of a field of the observation's vendor."""
    return policy.tier_of(obs.event.source, field_name)
