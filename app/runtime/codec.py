"""Wire formats of the internal topics (guard.by-actor, guard.by-link): JSON via orjson.

An observation travels with its priors so the downstream stage needs no record state.
"""

from __future__ import annotations

from typing import Any

import orjson

from detectors.base import Finding, Observation, Prior
from detectors.events import ActorKind, ChangeEvent, ObjectType, RelatedRecord


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
        "e": obs.event.model_dump(mode="json"),
        "p": {
            f: None if p is None else [p.value, p.actor_id, p.actor_kind.value, p.at, p.event_id]
            for f, p in obs.priors.items()
        },
        "r": [[r.object_type.value, r.record_id] for r in obs.related],
        "k": obs.record_known,
    }


def observation_from_dict(data: dict[str, Any]) -> Observation:
    priors = {
        f: None if p is None else Prior(p[0], p[1], ActorKind(p[2]), p[3], p[4]) for f, p in data["p"].items()
    }
    related = tuple(RelatedRecord(object_type=ObjectType(t), record_id=r) for t, r in data["r"])
    return Observation(
        event=ChangeEvent.model_validate(data["e"]), priors=priors, related=related, record_known=bool(data["k"])
    )


def encode_actor_input(obs: Observation | None = None, finding: Finding | None = None) -> bytes:
    """A by-actor message: either an observation or an upstream finding."""
    if obs is not None:
        return orjson.dumps({"t": "obs", "o": observation_to_dict(obs)})
    assert finding is not None
    return orjson.dumps({"t": "finding", "f": finding.to_dict()})


def decode_actor_input(raw: bytes) -> Observation | Finding:
    data = orjson.loads(raw)
    if data["t"] == "obs":
        return observation_from_dict(data["o"])
    return Finding.from_dict(data["f"])


def encode_link_probe(detector: str, key: str, obs: Observation) -> bytes:
    return orjson.dumps({"d": detector, "k": key, "o": observation_to_dict(obs)})


def decode_link_probe(raw: bytes) -> tuple[str, str, Observation]:
    data = orjson.loads(raw)
    return data["d"], data["k"], observation_from_dict(data["o"])
