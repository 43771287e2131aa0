"""mass_overwrite: one actor replacing values that were already set, in one field, across many
records (utm_source "google" -> "enriched" on contact after contact), or blanking set values of
whatever fields across many records (job titles and phone numbers emptied).

Rule. A change counts when the guard knew the field's prior value (`obs.priors[field]`), that
value was non-empty, and the new value is a different non-empty value (`overwrite`) or empty
(`blank`). Filling an empty field is enrichment and never counts; a prior the guard never saw
(`None`) is never an overwrite (for non-humans it is counted apart as `unknown_priors`). By
default a value the same actor set itself does not count either (`count_own_values`), nor a reformat
("Acme" -> "ACME ", `ignore_case_and_whitespace`), nor fields in `ignore_fields` (stages and
statuses, which move by design: stage_anomaly watches those).

Distinct records counted in two rolling event-time windows, per actor and:
  * for overwrites, per field (group: the field): `window` (1h) `threshold` (5) records,
    `high_tier_threshold` (3) for high-tier fields; `long_window` (24h) `long_threshold` (10),
    `high_tier_long_threshold` (5): the slow drip under every velocity cap (2-3 an hour for days);
  * for blanking, across fields (group `blanking`): emptying job titles on some records and phone
    numbers on others is one behaviour, so counted apart per field it would take twice as many
    records to show. `blank_threshold` (3) records in `window`, `blank_long_threshold` (5) in
    `long_window` (the lower of these and the high-tier thresholds when a high-tier field is
    blanked). One event blanking several fields of a record counts that record once.
Reaching a threshold gives a finding on that change and on every further one while it holds:
critical for a high-tier field (pauses an agent when `pause_on_critical` and the policy pauses on
breach), warning otherwise. Below the thresholds an agent's overwrite or blank is an `info`
finding (evidence on the alert once it opens).

Benign look-alikes: imports and bulk edits (`event.bulk`) by anyone but an agent are ignored;
humans are watched with thresholds multiplied by `human_threshold_factor` (3), warn at most, and
are never paused; automation is not watched by default (`watch_kinds`).

State key: the actor key (ACTOR stage). Entry: `{"f": {source|field: {record_key: [at, code]},
source|*blanking: {record_key: [at, 1, [fields]]}}, "u": {source|field: [window_start, n]},
"e": [recent event ids], "t": last_ms}`; records older than `long_window` are pruned on touch, at
most `max_records_per_field` (128) records per group and `max_fields` (64) groups per actor (least
recently touched dropped first), so an actor costs at most ~1 MB and typically a few KB;
`compact()` drops actors idle for `retention` (7d). Redelivery: the last 64 event ids are
remembered, and counts are of distinct records anyway.
Cost per event: O(changed fields) dict lookups; a counted change walks back over its group's
records in the short window (the map is kept in time order; an out-of-order event re-sorts it).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from operator import itemgetter
from typing import Any, ClassVar

from detectors.base import (
    Finding,
    Observation,
    Prior,
    Severity,
    Stage,
    State,
    actor_label,
    drop_older_than,
    finding_for,
)
from detectors.events import ActorKind, is_blank
from detectors.policy import Policy, Tier
from detectors.settings import MassOverwriteSettings
from detectors.time_order import insert_in_time_order
from detectors.values import FieldPatterns, TierCache, first_seen, safe_value, same_value

_first = itemgetter(0)

_AGENT = ActorKind.AGENT
_HUMAN = ActorKind.HUMAN
_IMPORT = ActorKind.IMPORT

_OVERWRITE = 0
_BLANK = 1
_LABELS = {_OVERWRITE: "overwrite", _BLANK: "blank"}

BLANKING = "blanking"
"""The group of blanking findings (blanks of every field, counted together per actor)."""
_BLANKING_KEY = "*blanking"  # state key suffix: `*` never starts a CRM field name


class MassOverwriteDetector:
    """Counts overwrites and blankings of set values per actor and field (see module docstring)."""

    name: ClassVar[str] = "mass_overwrite"
    stage: ClassVar[Stage] = Stage.ACTOR

    def __init__(self) -> None:
        self._config: tuple[MassOverwriteSettings, FieldPatterns, tuple[ActorKind, ...]] | None = None
        self._tiers = TierCache()

    def _prepared(self, settings: MassOverwriteSettings) -> tuple[FieldPatterns, tuple[ActorKind, ...]]:
        held = self._config
        if held is None or held[0] is not settings:
            kinds = tuple(ActorKind(k) for k in settings.watch_kinds)  # `in` on a tuple: identity checks
            held = (settings, FieldPatterns(settings.ignore_fields), kinds)
            self._config = held
        return held[1], held[2]

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        settings = policy.detectors.mass_overwrite
        event = obs.event
        if not settings.enabled or event.operation != "update":
            return []
        kind = event.actor.kind
        ignored, watched = self._prepared(settings)
        if kind not in watched:
            return []
        human = kind is _HUMAN
        if kind is not _AGENT and (event.bulk or kind is _IMPORT):
            return []
        overwritten: list[tuple[str, Prior, Any]] = []
        blanked: list[tuple[str, Prior]] = []
        unknown: list[str] = []
        priors = obs.priors
        for change in event.changes:
            field = change.field
            prior = priors.get(field)
            if prior is None:
                if not human and not is_blank(change.new) and not ignored.matches(field):
                    unknown.append(field)  # humans' everyday edits would only cost state writes
                continue
            if is_blank(prior.value) or ignored.matches(field):
                continue  # a fill is enrichment, not an overwrite
            own = prior.actor_kind is kind and prior.actor_id == event.actor.id
            if own and not settings.count_own_values:
                continue
            if is_blank(change.new):
                blanked.append((field, prior))
            elif not same_value(change.new, prior.value, settings.ignore_case_and_whitespace):
                overwritten.append((field, prior, change.new))
        if not overwritten and not blanked and not unknown:
            return []
        key = obs.actor_key
        entry = state.get(key)
        if entry is None:
            entry = {"f": {}, "u": {}, "e": {}, "t": 0}
        if not first_seen(entry["e"], event.event_id):
            return []
        now = event.occurred_at
        entry["t"] = max(entry["t"], now)
        for field in unknown:
            self._count_unknown(entry, f"{event.source}|{field}", now, settings)
        findings = []
        for field, prior, new in overwritten:
            finding = self._count(obs, entry, _OVERWRITE, [(field, prior)], new, policy, settings)
            if finding is not None:
                findings.append(finding)
        if blanked:
            finding = self._count(obs, entry, _BLANK, blanked, None, policy, settings)
            if finding is not None:
                findings.append(finding)
        state[key] = entry
        return findings

    @staticmethod
    def _count_unknown(entry: dict[str, Any], fkey: str, now: int, settings: MassOverwriteSettings) -> None:
        held = entry["u"].get(fkey)
        if held is None or now >= held[0] + settings.long_window:
            if held is None and len(entry["u"]) >= settings.max_fields:
                del entry["u"][next(iter(entry["u"]))]
            entry["u"][fkey] = [now, 1]
        else:
            held[1] += 1

    def _count(
        self,
        obs: Observation,
        entry: dict[str, Any],
        code: int,
        changed: list[tuple[str, Prior]],
        new: Any,
        policy: Policy,
        settings: MassOverwriteSettings,
    ) -> Finding | None:
        """Count the record in its group (the field for an overwrite, `blanking` for blanks) and
        judge the group's windows; `changed` is the (field, prior) pairs this event adds."""
        event = obs.event
        now = event.occurred_at
        blanking = code == _BLANK
        field, prior = changed[0]
        names = [name for name, _ in changed]
        group = BLANKING if blanking else field
        gkey = f"{event.source}|{_BLANKING_KEY if blanking else field}"
        groups: dict[str, dict[str, list[Any]]] = entry["f"]
        records = groups.pop(gkey, None)  # re-inserted below: dict order = recency of groups
        if records is None:
            records = {}
            if len(groups) >= settings.max_fields:
                del groups[next(iter(groups))]
        groups[gkey] = records
        record = event.record_key
        records.pop(record, None)
        held = [now, code, names] if blanking else [now, code]
        if now < entry["t"] and records:  # out of order: at its place, so counting stays exact
            insert_in_time_order(records, record, held, now, _first)
        else:
            records[record] = held  # dict order = time order
        horizon = entry["t"] - settings.long_window
        while records:
            oldest = next(iter(records))
            if records[oldest][0] > horizon:
                break
            del records[oldest]
        while len(records) > settings.max_records_per_field:
            del records[next(iter(records))]

        tiers = [self._tiers.tier(policy, event.source, name) for name in names]
        high = Tier.HIGH in tiers
        tier = Tier.HIGH if high else tiers[0]
        kind = event.actor.kind
        factor = settings.human_threshold_factor if kind is _HUMAN else 1.0
        if blanking:
            short_limit, long_limit = settings.blank_threshold, settings.blank_long_threshold
            if high:
                short_limit = min(short_limit, settings.high_tier_threshold)
                long_limit = min(long_limit, settings.high_tier_long_threshold)
        elif high:
            short_limit, long_limit = settings.high_tier_threshold, settings.high_tier_long_threshold
        else:
            short_limit, long_limit = settings.threshold, settings.long_threshold
        short_threshold = math.ceil(short_limit * factor)
        long_threshold = math.ceil(long_limit * factor)
        if now >= entry["t"]:
            # In order (the usual case): the map holds exactly the long window, newest last.
            n_long = len(records)
            n_short = 0
            short_from = now - settings.window
            for held_record in reversed(records.values()):
                if held_record[0] <= short_from:
                    break
                n_short += 1
        else:
            n_short, n_long = _scan(records, now, settings)
        if n_short >= short_threshold:
            window, threshold, count = settings.window, short_threshold, n_short
        elif n_long >= long_threshold:
            window, threshold, count = settings.long_window, long_threshold, n_long
        elif kind is _HUMAN:
            return None  # humans' single edits are everyday work: no evidence trail
        else:
            window = threshold = count = 0
        label = _LABELS[code]
        held = entry["u"].get(f"{event.source}|{field}")
        details: dict[str, Any] = {
            "field": field,
            "tier": tier.value,
            "change": label,
            "from": safe_value(field, prior.value),
            "to": safe_value(field, new),
            "prior_set_by_kind": prior.actor_kind.value,
            "records_in_window": n_short,
            "records_in_long_window": n_long,
            "unknown_priors": held[1] if held else 0,
        }
        if blanking:
            details["fields"] = names
        who = actor_label(obs)
        what = ", ".join(names) if blanking else field
        if not window:
            return finding_for(
                obs,
                self.name,
                Severity.INFO,
                f"{who} {'blanked' if blanking else 'overwrote'} a set value of {what}",
                group=group,
                details=details,
            )
        severity = Severity.CRITICAL if high and kind is not _HUMAN else Severity.WARNING
        pause = (
            kind is _AGENT
            and severity is Severity.CRITICAL
            and settings.pause_on_critical
            and policy.pauses_on_breach(event.actor.id)
        )
        details.update({"window_ms": window, "threshold": threshold, "count": count})
        if blanking:
            long_from = now - settings.long_window
            fields_blanked = sorted(
                {name for rec in records.values() if long_from < rec[0] <= now for name in rec[2]}
            )
            details.update({"blanked_in_long_window": n_long, "fields_blanked": fields_blanked})
            summary = (
                f"{who} blanked set values of {', '.join(policy.field_label(event.source, f) for f in fields_blanked)} "
                f"on {count} records "
                f"within {_span(window)}" + (" (high tier)" if high else "")
            )
        else:
            summary = (
                f"{who} overwrote set values of {policy.field_label(event.source, field)} ({tier.value} tier) "
                f"on {count} records "
                f"within {_span(window)}"
            )
        return finding_for(obs, self.name, severity, summary, group=group, pause=pause, details=details)

    @staticmethod
    def compact(state: State, now_ms: int, settings: MassOverwriteSettings | None = None) -> int:
        """Drop actors idle for `retention`; returns how many entries were dropped."""
        retention = (settings or MassOverwriteSettings()).retention
        return drop_older_than(state, now_ms - retention)

    def compact_state(self, state: State, now_ms: int, policy: Policy) -> int:
        """`compact` with the policy's `mass_overwrite.retention`: what the stages call once per
        `pipeline.COMPACT_EVERY_MS` of event time."""
        return self.compact(state, now_ms, policy.detectors.mass_overwrite)


def _scan(records: dict[str, list[Any]], now: int, settings: MassOverwriteSettings) -> tuple[int, int]:
    """Exact counts for an out-of-order event: bisections of the group's map, which is in time order."""
    held = list(records.values())
    upto = bisect_right(held, now, key=_first)
    n_long = upto - bisect_right(held, now - settings.long_window, key=_first)
    n_short = upto - bisect_right(held, now - settings.window, key=_first)
    return n_short, n_long




def _span(ms: int) -> str:
    if ms % 86_400_000 == 0:
        return f"{ms // 86_400_000}d"
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000}h"
    return f"{ms // 60_000}min"
