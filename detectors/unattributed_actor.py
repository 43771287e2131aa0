"""unattributed_actor: changes from an identity that maps to no agent, human, automation or import.

Rule: every change whose attributed actor is `unknown` is evidence; the first opens a warning
alert per identity (the actor key includes the vendor identity), later ones grow it. An unknown
integration writing to the CRM is exactly how an unregistered agent shows up.
State: none. Cost per event: one comparison.
"""

from __future__ import annotations

from typing import ClassVar

from detectors.base import Finding, Observation, Severity, Stage, State, finding_for
from detectors.events import ActorKind
from detectors.policy import Policy


class UnattributedActorDetector:
    name: ClassVar[str] = "unattributed_actor"
    stage: ClassVar[Stage] = Stage.ACTOR

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        event = obs.event
        if event.actor.kind is not ActorKind.UNKNOWN:  # first: the cheap test that ends most calls
            return []
        settings = policy.detectors.unattributed_actor
        if not settings.enabled or event.operation == "gap":
            return []
        identity = event.actor.identity.describe()
        return [finding_for(
            obs, self.name, Severity(settings.severity),
            f"changes from an unattributed identity ({identity})",
            group=identity, details={"identity": identity},
        )]
