"""Attribution: who made a change, from the vendor's identity and the policy.

Order: a named agent's identity rules, then the policy's human, automation, import and
integration rules, then the vendor's own hint that the adapter set (a UI user is human, a
workflow is automation, an import is an import). Anything else stays `unknown`, which the
unattributed_actor detector reports.
"""

from __future__ import annotations

from detectors.events import Actor, ActorKind, ChangeEvent, SourceIdentity
from detectors.policy import Policy, actor_kind_rules


class Attributor:
    """Resolves source identities to actors, caching per identity (identities repeat a lot)."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._rules = actor_kind_rules(policy)
        self._cache: dict[tuple[str | None, ...], Actor] = {}

    def attribute(self, event: ChangeEvent) -> ChangeEvent:
        """The event with its actor resolved against the policy (the same object if unchanged)."""
        hinted = event.actor
        ident = hinted.identity
        # Plain-string key: hashing the pydantic identity costs more than resolving it.
        key = (ident.vendor, ident.change_source, ident.user_id, ident.app_id, hinted.kind.value, hinted.id)
        actor = self._cache.get(key)
        if actor is None:
            actor = self._resolve(hinted)
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = actor
        if actor.kind is hinted.kind and actor.id == hinted.id:
            return event
        return event.model_copy(update={"actor": actor})

    def _resolve(self, hinted: Actor) -> Actor:
        identity = hinted.identity
        for name, agent in self._policy.agents.items():
            if any(rule.matches(identity) for rule in agent.identities):
                return Actor(kind=ActorKind.AGENT, id=name, identity=identity)
        for kind, rule in self._rules:
            if rule.matches(identity):
                return Actor(kind=kind, id=_vendor_id(identity), identity=identity)
        if hinted.kind in (ActorKind.HUMAN, ActorKind.AUTOMATION, ActorKind.IMPORT):
            return hinted
        return Actor(kind=ActorKind.UNKNOWN, id=_vendor_id(identity), identity=identity)


def _vendor_id(identity: SourceIdentity) -> str:
    """A stable id for a non-agent actor: the user, else the app, else the change source."""
    return identity.user_id or identity.app_id or identity.change_source or "unknown"
