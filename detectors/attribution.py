"""Attribution: who made a change, from the vendor's identity and the policy.

Order: a named agent's identity rules, then the policy's human, automation, import and
integration rules, then the vendor's own hint that the adapter set (a UI user is human, a
workflow is automation, an import is an import). Anything else stays `unknown`, which the
unattributed_actor detector reports.
"""

from __future__ import annotations

from detectors.events import Actor, ActorKind, ChangeEvent, SourceIdentity, with_actor
from detectors.policy import Policy, actor_kind_rules

_BY_OBJECT_MAX = 4096


class Attributor:
    """Resolves source identities to actors, caching per identity (identities repeat a lot).

    Two caches: by the hinted Actor object itself (the adapters share one Actor per identity, so
    this is one dict lookup per event; the entry keeps the object alive, so its id is not reused),
    then by the identity's plain strings (hashing the pydantic identity costs more than resolving it).
    """

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._rules = actor_kind_rules(policy)
        self._cache: dict[tuple[str | None, ...], Actor] = {}
        self._by_object: dict[int, tuple[Actor, Actor | None]] = {}

    def attribute(self, event: ChangeEvent) -> ChangeEvent:
        """The event with its actor resolved against the policy (the same object if unchanged)."""
        hinted = event.actor
        hit = self._by_object.get(id(hinted))
        if hit is None or hit[0] is not hinted:
            actor = self._lookup(hinted)
            # None: the event keeps its own actor (attribution changes neither kind nor id).
            hit = (hinted, None if actor.kind is hinted.kind and actor.id == hinted.id else actor)
            if len(self._by_object) >= _BY_OBJECT_MAX:
                self._by_object.clear()  # canonical input has one Actor object per event: keep this small
            self._by_object[id(hinted)] = hit
        resolved = hit[1]
        if resolved is None:
            return event
        return with_actor(event, resolved)

    def _lookup(self, hinted: Actor) -> Actor:
        ident = hinted.identity
        key = (ident.vendor, ident.change_source, ident.user_id, ident.app_id, hinted.kind.value, hinted.id)
        actor = self._cache.get(key)
        if actor is None:
            actor = self._resolve(hinted)
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = actor
        return actor

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
