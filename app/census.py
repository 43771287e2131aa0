"""Who writes to the CRM: one row per source identity the replay saw, for `policy suggest`.

A team starting with crm-guard does not know its writers yet: which integration user or app id
is the AI agent, which is the marketing sync, what each touches. `IdentityCensus` counts, per
identity (vendor, change source, user id, app id), what a backtest saw it do, and the replay
writes the rows to `identities.jsonl`; `crm-guard policy suggest` (app/policy_suggest.py) turns
the unmapped ones into policy entries with the scope they showed.

Cost: ~2.3 us per event of a replay (about 4 % of its time; 358,476 HubSpot events of the large
scenario timed alone). Memory: per identity, a set of at most RECORD_CAP record-key hashes (an
exact distinct count up to the cap, `records_capped` beyond), counters per field and per
(operation, object type), and the records of the clock hour it is in (the busiest hour's distinct
records feed a suggested velocity cap; a late change of an earlier hour is not counted there).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from detectors.base import Observation
from detectors.events import is_blank
from detectors.values import same_value

RECORD_CAP = 5000
HOUR_MS = 3_600_000
TOP_FIELDS = 30


class _Writer:
    """What one identity did (counters only; `row` renders them). `add` runs once per event of a
    replay: plain dicts and comparisons, ~2 us per event."""

    __slots__ = ("identity", "kind", "actor", "events", "changes", "records", "capped", "fields", "kinds",
                 "overwrites", "blanked", "bulk", "first_at", "last_at", "hour", "in_hour", "busiest")

    def __init__(self, obs: Observation) -> None:
        actor = obs.event.actor
        self.identity = actor.identity
        self.kind = actor.kind.value
        self.actor = actor.id
        self.events = self.changes = self.overwrites = self.blanked = self.bulk = 0
        self.records: set[int] = set()  # hashes of record keys: a third of the strings' memory
        self.capped = False
        self.fields: dict[str, int] = {}
        self.kinds: dict[tuple[str, str], int] = {}  # (operation, object type) -> events
        self.first_at = self.last_at = obs.event.occurred_at
        self.hour = -1  # the clock hour being counted, and its distinct records
        self.in_hour: set[int] = set()
        self.busiest = 0

    def add(self, obs: Observation) -> None:
        event = obs.event
        self.events += 1
        kinds, kind = self.kinds, (event.operation, event.object_type._value_)
        kinds[kind] = kinds.get(kind, 0) + 1
        if event.bulk:
            self.bulk += 1
        at = event.occurred_at
        if at < self.first_at:
            self.first_at = at
        elif at > self.last_at:
            self.last_at = at
        record = hash(event.record_key)  # an exact count in practice (64-bit hashes, per process)
        if not self.capped:
            self.records.add(record)
            self.capped = len(self.records) >= RECORD_CAP
        hour = at // HOUR_MS
        if hour != self.hour:
            if hour < self.hour:  # a late change of an hour already counted: leave that hour as it was
                return self._changes(obs)
            self.hour, self.in_hour = hour, set()
        in_hour = self.in_hour
        in_hour.add(record)
        if len(in_hour) > self.busiest:
            self.busiest = len(in_hour)
        self._changes(obs)

    def _changes(self, obs: Observation) -> None:
        fields, priors, me = self.fields, obs.priors, self.actor
        for change in obs.event.changes:
            self.changes += 1
            name = change.field
            fields[name] = fields.get(name, 0) + 1
            prior = priors.get(name)  # counted as mass_overwrite counts: someone else's set value replaced
            if prior is None or prior.actor_id == me or is_blank(prior.value):
                continue
            if same_value(prior.value, change.new):
                continue
            if is_blank(change.new):
                self.blanked += 1
            else:
                self.overwrites += 1

    def row(self) -> dict[str, Any]:
        ident = self.identity
        operations: Counter[str] = Counter()
        object_types: Counter[str] = Counter()
        for (operation, object_type), n in self.kinds.items():
            operations[operation] += n
            object_types[object_type] += n
        top = sorted(self.fields.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "identity": {"vendor": ident.vendor, "change_source": ident.change_source,
                         "user_id": ident.user_id, "app_id": ident.app_id},
            "describe": ident.describe(),
            "kind": self.kind,
            "actor": self.actor,
            "events": self.events,
            "changes": self.changes,
            "records": len(self.records),
            "records_capped": self.capped,
            "busiest_hour_records": self.busiest,
            "overwrites": self.overwrites,
            "blanked": self.blanked,
            "bulk_events": self.bulk,
            "operations": dict(sorted(operations.items(), key=lambda kv: (-kv[1], kv[0]))),
            "object_types": dict(sorted(object_types.items(), key=lambda kv: (-kv[1], kv[0]))),
            "fields": dict(top[:TOP_FIELDS]),
            "fields_total": len(top),
            "first_at": self.first_at,
            "last_at": self.last_at,
        }


class IdentityCensus:
    """Per source identity, what it did over a replay: events, field changes, distinct records,
    overwrites of set values and blankings, fields, object types, operations, the busiest clock
    hour's distinct records, first and last change."""

    def __init__(self) -> None:
        self._writers: dict[tuple[str, str | None, str | None, str | None], _Writer] = {}

    def observe(self, obs: Observation) -> None:
        ident = obs.event.actor.identity
        key = (ident.vendor, ident.change_source, ident.user_id, ident.app_id)
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = _Writer(obs)
        writer.add(obs)

    def rows(self) -> list[dict[str, Any]]:
        """One row per identity, the busiest (most field changes) first."""
        rows = [w.row() for w in self._writers.values()]
        rows.sort(key=lambda r: (-r["changes"], -r["events"], r["describe"]))
        return rows
