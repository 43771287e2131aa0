"""Record state: the last known value of every field of every record, and who set it.

HubSpot and Salesforce send only new values, so this memory is what makes overwrite, blanking
and override detection possible. State key: the record key (`source/object_type/record_id`).

Entry layout (JSON-able, written to the changelog as is)::

    {"f": {field: [value, actor_id, actor_kind, at_ms, event_id]},
     "r": [[object_type, record_id], ...],   # associations remembered for the record
     "e": [event_id, ...],                     # last 16 event ids: redelivery is a no-op
     "t": last_event_ms, "d": deleted}

Memory bound: values are cut to `max_value_chars` (256 by default); an entry costs about
300 bytes plus ~200 bytes per tracked field in CPython (894 B for a record with three fields,
measured by tests/unit/test_record_state.py). The streaming runtime keeps an entry restored from
the changelog as its JSON bytes (~330 B) until something reads it (app/runtime/store.py); decoding
copies every string, and `loaded` shares the actor ids, kinds and event ids again (~1.95 KB per
decoded restored record with its override entry, bench/recovery.py).
Records untouched for `retention` (90 days) are dropped by `compact`; beyond `max_records` the
least recently changed records are evicted first (dict order is kept as recency order).
Cost per event: one dict lookup plus one small list per changed field.
"""

from __future__ import annotations

from sys import intern
from typing import Any

from detectors.base import Observation, Prior, State, drop_older_than
from detectors.events import ActorKind, ChangeEvent, ObjectType, RelatedRecord, trusted_related
from detectors.settings import RecordStateSettings

_RECENT_IDS = 16
_MAX_RELATED = 32


class RecordState:
    """Applies events to per-record state and returns what was known before each one."""

    name = "record_state"

    def __init__(self, settings: RecordStateSettings | None = None) -> None:
        self.settings = settings or RecordStateSettings()

    @staticmethod
    def loaded(entry: dict[str, Any]) -> dict[str, Any]:
        """An entry decoded from the changelog, with its strings shared again as `apply` shares
        them: actor ids and kinds interned, one event id object for the fields one event set.
        JSON decoding makes a new string for every occurrence; this takes a restored record from
        ~1.85 to ~1.3 KB (three fields, measured with tracemalloc)."""
        ids: dict[str, str] = {}
        try:
            for held in entry["f"].values():
                held[1] = intern(held[1])
                held[2] = intern(held[2])
                held[4] = ids.setdefault(held[4], held[4])
            if ids:
                entry["e"] = [ids.get(event_id, event_id) for event_id in entry["e"]]
        except (KeyError, IndexError, TypeError, AttributeError):
            pass  # not the layout this class writes: kept as decoded (only sharing is lost)
        return entry

    def apply(self, event: ChangeEvent, state: State) -> Observation | None:
        """Update the record's entry; None when this event id was already applied (redelivery)."""
        key = event.record_key
        event_id = event.event_id
        entry = state.get(key)
        known = entry is not None
        if entry is None:
            entry = {"f": {}, "r": [], "e": [], "t": 0, "d": False}
        elif event_id in entry["e"]:
            return None
        fields: dict[str, list[Any]] = entry["f"]
        priors: dict[str, Prior | None] = {}
        limit = self.settings.max_value_chars
        actor = event.actor
        actor_id = intern(actor.id)  # one string per actor, not one per record it touched
        kind_value = actor.kind._value_
        at = event.occurred_at
        for change in event.changes:
            name = change.field
            held = fields.get(name)
            if held is not None:
                if held[3] > at:
                    # Out of order: a later change is already known; this one must not replace it.
                    priors[name] = None
                    continue
                kind = _KINDS.get(held[2])
                if kind is None:
                    kind = ActorKind(held[2])
                priors[name] = Prior(held[0], held[1], kind, held[3], held[4])
            elif change.has_old:
                priors[name] = Prior(_cut(change.old, limit), "unknown", ActorKind.UNKNOWN, 0, "")
            else:
                priors[name] = None
            new = change.new
            if new.__class__ is not str or len(new) > limit:
                new = _cut(new, limit)
            fields[name] = [new, actor_id, kind_value, at, event_id]
        if not event.changes and event.operation == "delete" and fields:
            # HubSpot and Salesforce deletions carry no values: the last known ones stand in as
            # this event's priors, so the identity index can release the deleted record.
            for name, held in fields.items():
                kind = _KINDS.get(held[2])
                priors[name] = Prior(held[0], held[1], kind if kind is not None else ActorKind(held[2]), held[3], held[4])
        known_related = entry["r"]
        if event.related:
            related = _merge_related(known_related, event.related)
            entry["r"] = [[r.object_type._value_, r.record_id] for r in related]
        elif known_related:
            remembered = _known_related(known_related)
            if remembered is None:  # not in the shape this class writes: rebuild it as before
                related = _merge_related(known_related, ())
                entry["r"] = [[r.object_type._value_, r.record_id] for r in related]
            else:
                related = remembered
        else:
            related = ()
        recent = entry["e"]
        recent.append(event_id)
        if len(recent) > _RECENT_IDS:
            del recent[0]
        if at > entry["t"]:
            entry["t"] = at
        operation = event.operation
        if operation == "delete":
            entry["d"] = True
        elif operation == "restore" or operation == "create":
            entry["d"] = False
        if known:
            del state[key]  # re-insert: dict order doubles as recency order for eviction
        state[key] = entry
        if len(state) > self.settings.max_records:
            self._evict(state)
        return Observation(event=event, priors=priors, related=related, record_known=known)

    def _evict(self, state: State) -> None:
        excess = len(state) - self.settings.max_records
        if excess > 0:
            for key in _first_keys(state, excess):
                del state[key]

    def compact(self, state: State, now_ms: int) -> int:
        """Drop records untouched for the retention period; returns how many were dropped."""
        cutoff = now_ms - self.settings.retention
        return drop_older_than(state, cutoff)

    @staticmethod
    def value_of(state: State, record_key: str, field: str) -> Any:
        """The last known value of a field, or None."""
        entry = state.get(record_key)
        if entry is None:
            return None
        held = entry["f"].get(field)
        return None if held is None else held[0]


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit]
    if isinstance(value, (list, dict)):
        text = repr(value)
        return value if len(text) <= limit else text[:limit]
    return value


_KINDS = {kind.value: kind for kind in ActorKind}
_OBJECT_TYPES = {kind.value: kind for kind in ObjectType}


def _related_record(object_type: str, record_id: str) -> RelatedRecord:
    """RelatedRecord(object_type=ObjectType(t), record_id=rid), without re-validating what we wrote."""
    kind = _OBJECT_TYPES.get(object_type)
    if kind is None or record_id.__class__ is not str:
        return RelatedRecord(object_type=ObjectType(object_type), record_id=record_id)
    return trusted_related(kind, record_id)


def _known_related(known: list[list[str]]) -> tuple[RelatedRecord, ...] | None:
    """The remembered associations when the event brings none: what `_merge_related(known, ())`
    gives, when `known` is what this class writes (distinct pairs, at most _MAX_RELATED); else None."""
    if len(known) > _MAX_RELATED:
        return None
    out = tuple([_related_record(t, rid) for t, rid in known])
    if len(known) > 1 and len({(t, rid) for t, rid in known}) != len(known):
        return None
    return out


def _merge_related(known: list[list[str]], new: tuple[RelatedRecord, ...]) -> tuple[RelatedRecord, ...]:
    merged = {(t, rid): _related_record(t, rid) for t, rid in known}
    for rel in new:
        key = (rel.object_type._value_, rel.record_id)
        if rel.removed:
            merged.pop(key, None)
        else:
            merged[key] = rel
    items = list(merged.values())
    return tuple(items[-_MAX_RELATED:])


def _first_keys(state: State, n: int) -> list[str]:
    out = []
    for key in state:
        out.append(key)
        if len(out) >= n:
            break
    return out
