"""Wire formats of the internal topics (guard.by-actor, guard.by-link): JSON via orjson.

An observation travels with its priors so the downstream stage needs no record state. Its event
travels as `ChangeEvent.model_dump(mode="json")` would write it, but written and read by hand
(`event_to_wire`, `event_from_wire`): pydantic's dump and validation cost ~7.5 us per event and
hop, these ~2 us. The reader still checks every key and type (a message on these topics that is
not ours goes to the dead-letter topic); crm.changes, which others may write, keeps full
pydantic validation.
"""

from __future__ import annotations

from typing import Any, get_args

import orjson

from detectors.base import Finding, Observation, Prior
from detectors.events import (
    ALL_EVENT_FIELDS,
    Actor,
    ActorKind,
    ChangeEvent,
    FieldChange,
    ObjectType,
    Operation,
    RelatedRecord,
    SourceIdentity,
    trusted_model,
)


def dumps(data: Any) -> bytes:
    """Compact JSON bytes."""
    return orjson.dumps(data)


def loads(raw: bytes) -> Any:
    """JSON bytes to Python values."""
    return orjson.loads(raw)


def encode_event(event: ChangeEvent) -> bytes:
    """A canonical event as JSON (the crm.changes value)."""
    return orjson.dumps(event.model_dump(mode="json"))


def observation_to_dict(obs: Observation) -> dict[str, Any]:
    return {
        "e": event_to_wire(obs.event),
        "p": {
            f: None if p is None else [p.value, p.actor_id, p.actor_kind._value_, p.at, p.event_id]
            for f, p in obs.priors.items()
        },
        "r": [[r.object_type._value_, r.record_id] for r in obs.related],
        "k": obs.record_known,
    }


def observation_from_dict(data: dict[str, Any]) -> Observation:
    priors = {
        f: None if p is None else Prior(p[0], p[1], _KINDS[p[2]], p[3], p[4]) for f, p in data["p"].items()
    }
    related = tuple(
        trusted_model(RelatedRecord, {"object_type": _OBJECT_TYPES[t], "record_id": _str(r, "related"), "removed": False},
                      _RELATED_FIELDS)
        for t, r in data["r"]
    )
    return Observation(event=event_from_wire(data["e"]), priors=priors, related=related, record_known=bool(data["k"]))


def event_to_wire(event: ChangeEvent) -> dict[str, Any]:
    """`event.model_dump(mode="json")`, written out (same keys, order and values)."""
    actor = event.actor
    identity = actor.identity
    return {
        "event_id": event.event_id,
        "source": event.source,
        "source_event_id": event.source_event_id,
        "occurred_at": event.occurred_at,
        "object_type": event.object_type._value_,
        "source_object_type": event.source_object_type,
        "record_id": event.record_id,
        "operation": event.operation,
        "changes": [{"field": c.field, "new": c.new, "old": c.old, "has_old": c.has_old} for c in event.changes],
        "actor": {
            "kind": actor.kind._value_,
            "id": actor.id,
            "identity": {
                "vendor": identity.vendor,
                "change_source": identity.change_source,
                "user_id": identity.user_id,
                "app_id": identity.app_id,
                "raw": identity.raw,
            },
        },
        "merged_record_ids": list(event.merged_record_ids),
        "related": [
            {"object_type": r.object_type._value_, "record_id": r.record_id, "removed": r.removed} for r in event.related
        ],
        "bulk": event.bulk,
    }


def event_from_wire(data: dict[str, Any]) -> ChangeEvent:
    """The event `event_to_wire` wrote. Raises KeyError or ValueError (naming the key) on anything
    else: a missing key, a value of the wrong type, an unknown enum value."""
    if type(data) is not dict:
        raise ValueError("event: not a JSON object")
    actor = data["actor"]
    identity = actor["identity"]
    source_identity = trusted_model(SourceIdentity, {
        "vendor": _str(identity["vendor"], "actor.identity.vendor"),
        "change_source": _opt_str(identity.get("change_source"), "actor.identity.change_source"),
        "user_id": _opt_str(identity.get("user_id"), "actor.identity.user_id"),
        "app_id": _opt_str(identity.get("app_id"), "actor.identity.app_id"),
        "raw": _str(identity.get("raw", ""), "actor.identity.raw"),
    }, _IDENTITY_FIELDS)
    kind = _KINDS.get(actor["kind"])
    if kind is None:
        raise ValueError(f"actor.kind: unknown kind {actor['kind']!r}")
    event_actor = trusted_model(Actor, {"kind": kind, "id": _str(actor["id"], "actor.id"), "identity": source_identity},
                                _ACTOR_FIELDS)
    object_type = _OBJECT_TYPES.get(data["object_type"])
    if object_type is None:
        raise ValueError(f"object_type: unknown type {data['object_type']!r}")
    operation = data["operation"]
    if operation not in _OPERATIONS:
        raise ValueError(f"operation: unknown operation {operation!r}")
    occurred_at = data["occurred_at"]
    if type(occurred_at) is not int:
        raise ValueError("occurred_at: not an integer")
    changes = tuple(
        trusted_model(FieldChange, {
            "field": _str(c["field"], "changes.field"), "new": c.get("new"), "old": c.get("old"),
            "has_old": _bool(c.get("has_old", False), "changes.has_old"),
        }, _CHANGE_FIELDS)
        for c in data.get("changes", ())
    )
    related = tuple(
        trusted_model(RelatedRecord, {
            "object_type": _OBJECT_TYPES[r["object_type"]], "record_id": _str(r["record_id"], "related.record_id"),
            "removed": _bool(r.get("removed", False), "related.removed"),
        }, _RELATED_FIELDS_ALL)
        for r in data.get("related", ())
    )
    return trusted_model(ChangeEvent, {
        "event_id": _str(data["event_id"], "event_id"),
        "source": _str(data["source"], "source"),
        "source_event_id": _str(data["source_event_id"], "source_event_id"),
        "occurred_at": occurred_at,
        "object_type": object_type,
        "source_object_type": _str(data["source_object_type"], "source_object_type"),
        "record_id": _str(data["record_id"], "record_id"),
        "operation": operation,
        "changes": changes,
        "actor": event_actor,
        "merged_record_ids": tuple(_str(m, "merged_record_ids") for m in data.get("merged_record_ids", ())),
        "related": related,
        "bulk": _bool(data.get("bulk", False), "bulk"),
    }, ALL_EVENT_FIELDS)


_KINDS = {k.value: k for k in ActorKind}
_OBJECT_TYPES = {t.value: t for t in ObjectType}
_OPERATIONS = frozenset(get_args(Operation))
_IDENTITY_FIELDS = frozenset(SourceIdentity.model_fields)
_ACTOR_FIELDS = frozenset(Actor.model_fields)
_CHANGE_FIELDS = frozenset(FieldChange.model_fields)
_RELATED_FIELDS = frozenset({"object_type", "record_id"})
_RELATED_FIELDS_ALL = frozenset(RelatedRecord.model_fields)


def _str(value: Any, where: str) -> str:
    if type(value) is not str:
        raise ValueError(f"{where}: not a string")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    if value is not None and type(value) is not str:
        raise ValueError(f"{where}: not a string or null")
    return value


def _bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise ValueError(f"{where}: not a boolean")
    return value


# One message on guard.by-actor / guard.by-link carries every input of one key from one batch of
# the upstream stage, in order: an agent's 500 changes in a batch cost one produce, not 500.


def actor_input(obs: Observation | None = None, finding: Finding | None = None) -> dict[str, Any]:
    """One by-actor item: either an observation or an upstream finding."""
    if obs is not None:
        return {"t": "obs", "o": observation_to_dict(obs)}
    assert finding is not None
    return {"t": "finding", "f": finding.to_dict()}


def decode_actor_inputs(raw: bytes) -> list[Observation | Finding]:
    """The items of one by-actor message, in order."""
    items = orjson.loads(raw)
    if not isinstance(items, list):
        raise ValueError("a by-actor message is a JSON array")
    out: list[Observation | Finding] = []
    for data in items:
        if data["t"] == "obs":
            out.append(observation_from_dict(data["o"]))
        else:
            out.append(Finding.from_dict(data["f"]))
    return out


def link_probe(detector: str, obs: Observation) -> dict[str, Any]:
    """One by-link item: which detector, and the observation it must see under the message key."""
    return {"d": detector, "o": observation_to_dict(obs)}


def decode_link_probes(raw: bytes) -> list[tuple[str, Observation]]:
    """The items of one by-link message, in order."""
    items = orjson.loads(raw)
    if not isinstance(items, list):
        raise ValueError("a by-link message is a JSON array")
    return [(data["d"], observation_from_dict(data["o"])) for data in items]
