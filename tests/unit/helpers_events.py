"""Building canonical events and running detectors over plain dicts, for unit tests.

`event(...)` makes a ChangeEvent with short keyword arguments; `Run` applies record state and
then the given detectors stage by stage (record, link, actor, then upstream findings to actor
listeners), the same order as detectors/pipeline.py, without alerts. Times are minutes or hours
via `H` and `M` (milliseconds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from detectors.base import Finding, Observation, Stage
from detectors.events import (
    Actor,
    ActorKind,
    ChangeEvent,
    FieldChange,
    ObjectType,
    RelatedRecord,
    SourceIdentity,
)
from detectors.policy import Policy
from detectors.record_state import RecordState

M = 60_000
H = 3_600_000
D = 86_400_000
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z: any fixed origin keeps tests deterministic

AGENT = ActorKind.AGENT
HUMAN = ActorKind.HUMAN


def actor(name: str = "enricher", kind: ActorKind = ActorKind.AGENT, source: str = "hubspot") -> Actor:
    """An attributed actor; agents are keyed by name, others by kind:source:id."""
    return Actor(kind=kind, id=name, identity=SourceIdentity(vendor=source, user_id=name))


def event(
    record_id: str | int = "1",
    fields: dict[str, Any] | None = None,
    *,
    at: int = 0,
    by: str = "enricher",
    kind: ActorKind = ActorKind.AGENT,
    source: str = "hubspot",
    object_type: ObjectType = ObjectType.CONTACT,
    source_object_type: str | None = None,
    operation: str = "update",
    event_id: str | None = None,
    related: Iterable[tuple[ObjectType, str | int]] = (),
    merged: Iterable[str | int] = (),
    bulk: bool = False,
    old: dict[str, Any] | None = None,
) -> ChangeEvent:
    """A ChangeEvent at T0 + at. The event id is derived from the content unless given, so the same
    call twice is a redelivery of the same event."""
    fields = fields or {}
    old = old or {}
    changes = tuple(FieldChange(field=k, new=v, old=old.get(k), has_old=k in old) for k, v in fields.items())
    occurred = T0 + at
    if event_id is None:
        digest = hashlib.sha256(
            repr(
                (
                    source,
                    object_type.value,
                    str(record_id),
                    occurred,
                    by,
                    kind.value,
                    operation,
                    sorted(fields.items(), key=lambda kv: kv[0]),
                )
            ).encode()
        ).hexdigest()[:16]
        event_id = f"ev-{digest}"
    return ChangeEvent(
        event_id=event_id,
        source=source,
        source_event_id=event_id,
        occurred_at=occurred,
        object_type=object_type,
        source_object_type=source_object_type or object_type.value,
        record_id=str(record_id),
        operation=operation,  # type: ignore[arg-type]
        changes=changes,
        actor=actor(by, kind, source),
        merged_record_ids=tuple(str(m) for m in merged),
        related=tuple(RelatedRecord(object_type=t, record_id=str(i)) for t, i in related),
        bulk=bulk,
    )


class Run:
    """Record state plus a few detectors over dicts: feed events, collect findings."""

    def __init__(self, *detectors: Any, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.record_state = RecordState(self.policy.detectors.record_state)
        self.detectors = list(detectors)
        self.states: dict[str, dict[str, Any]] = {"record_state": {}}
        for d in self.detectors:
            self.states[d.name] = {}
        self.findings: list[Finding] = []
        self.last_obs: Observation | None = None

    def feed(self, *events: ChangeEvent) -> list[Finding]:
        """Process events in order; returns the findings they caused (also kept in self.findings)."""
        out: list[Finding] = []
        for ev in events:
            out.extend(self._one(ev))
        self.findings.extend(out)
        return out

    def _one(self, ev: ChangeEvent) -> list[Finding]:
        obs = self.record_state.apply(ev, self.states["record_state"])
        if obs is None:
            return []
        self.last_obs = obs
        upstream: list[Finding] = []
        for d in self.detectors:
            if d.stage is Stage.RECORD:
                upstream.extend(d.observe(obs, self.states[d.name], self.policy))
        for d in self.detectors:
            if d.stage is Stage.LINK:
                for key in d.link_keys(obs, self.policy):
                    upstream.extend(d.observe_link(key, obs, self.states[d.name], self.policy))
        out = list(upstream)
        for d in self.detectors:
            if d.stage is Stage.ACTOR:
                out.extend(d.observe(obs, self.states[d.name], self.policy))
        for finding in upstream:
            for d in self.detectors:
                if d.stage is Stage.ACTOR and hasattr(d, "on_finding"):
                    out.extend(d.on_finding(finding, self.states[d.name], self.policy))
        return out

    def of(self, detector: str, severity: str | None = None) -> list[Finding]:
        """Findings so far of one detector name (and severity)."""
        return [
            f
            for f in self.findings
            if f.detector == detector and (severity is None or f.severity.value == severity)
        ]


def policy_with(**detectors: dict[str, Any]) -> Policy:
    """A default policy with some detector settings changed, e.g. policy_with(override={"window": "1h"})."""
    return Policy.model_validate({"detectors": detectors})


def agents_policy(*names: str, pause: bool = True, **detectors: dict[str, Any]) -> Policy:
    """A policy naming agents (identities unused here: tests build attributed events directly)."""
    return Policy.model_validate(
        {
            "agents": {
                n: {"identities": [{"vendor": "hubspot", "user_id": n}], "high_tier_allowed": True}
                for n in names
            },
            "defaults": {"pause_on_breach": pause},
            "detectors": detectors,
        }
    )
