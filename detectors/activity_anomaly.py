"""activity_anomaly: an agent behaving unlike itself, scored per window by river HalfSpaceTrees.

Rule. Per agent, event time is cut into tumbling windows of `window` (5 min, aligned to the
epoch). Each window aggregates: changes per minute, distinct records, distinct fields, share of
changes that overwrite a value someone else set (blanking included; as in mass_overwrite, an
agent re-writing its own values is upkeep), share of high-tier fields, and the hour of
day (sin/cos, UTC). Windows wait for late events: the agent's watermark is the latest event time
seen, and a window closes once the watermark is `allowed_lateness` (2 min) past its end (or on
`flush`, at the end of input); a closed, non-empty window is scored by the agent's own model and
then learned. An event for a window that already closed counts in the oldest open one (the
before-watermark behaviour: counted, never dropped). Vendors do not deliver in order (HubSpot
retries, three record partitions interleaving in a backlog), and without the wait a change a
few seconds late landed in the next window. The price: a finding comes `allowed_lateness` later
in event time. An agent that goes quiet does not keep its last window open: `advance(watermark)`
closes the windows that are `allowed_lateness` behind the event time other actors' changes have
reached (the streaming actor stage calls it per partition after each batch, the replay once per
minute of event time). After a
warm-up of max(`warmup_windows`, `window_size`) windows (100; before that HalfSpaceTrees has no
reference mass), a window is anomalous when its score is >= `threshold` (0.85) and its mix of
work changed too (`require_composition_change`, below), and `consecutive` (3) anomalous windows in
a row (adjacent in time) give a warning `activity_anomaly`, repeated for every further anomalous
window of the streak. Statistical: warns, never pauses. Only agents are modelled.

Why the mix must change too: volume alone is what the velocity caps judge, and an agent working
a weekly import backlog flat out at its cap (around the clock, at four times its usual volume)
scores as unusual on volume and hour for hours. An anomalous window must also raise the agent's
overwrite share or high-tier share by at least `composition_margin` (0.25) over its usual shares,
each share taken at the lower bound of its Wilson interval (`composition_z` 1.64), so a window of
one or two changes cannot look shifted by chance (one overwrite out of one change counts as
0.27). The usual shares are a running mean, then an EWMA (`composition_alpha` 0.02 per window),
learned only from windows that are not anomalous, so a long fault does not become the usual mix.
Measured on the benchmark (bench/detection_quality.py, seeds 1-5): the backlog warnings on
enrich-agent and the odd one-change windows on scoring-agent went, and no fault detection relied
on them.

Why fixed scaling instead of a MinMaxScaler in front of the trees: counts are log-scaled against
fixed maxima (`count_scale` 2000, `field_scale` 200) and shares are already in [0, 1]. Measured on
synthetic agents, a MinMaxScaler stretches near-constant features (an overwrite share that is
always ~0) over the whole [0, 1] range, which made bursts score like ordinary windows; with fixed
scaling the benign 99th percentile was ~0.75 and bursts, night-time work and overwrite-heavy
windows scored 0.87-0.92 (25 trees, height 8, window_size 100).

State key: the agent (ACTOR stage); the aggregates live in State: `{"wm": watermark, "o": [open
windows in time order], "k": streak, "pw": start of the last closed window, "e": recent ids,
"cb": [usual overwrite share, usual high-tier share, windows learned]}`, a window being
`{"w": start, "n": changes, "r": {record: 1}, "f": {field: 1}, "ow": n, "hi": n,
"le"/"lt"/"lr"/"lo": its last event}`. At most `allowed_lateness / window + 2` windows are open
(`allowed_lateness` is capped at 1 h). Records per window are capped at `max_records_tracked`
(2000) and fields at `max_fields_tracked` (256) (the counts saturate there; the features are
log-scaled anyway). Redelivery: last 64 event ids. An entry written before windows waited
(one flat window) is converted when the agent is next seen.
The river model is not JSON: it is held in this object per agent, and `snapshot(agent)` /
`restore(agent, data)` move it as pickled bytes; the streaming runtime checkpoints them in the
actor changelog, signed (app/runtime/model_checkpoints.py). A lost model restarts its warm-up;
the aggregates are not lost.
Cost: O(changed fields) per event; ~0.1-0.3 ms per closed window (25 trees, height 8), i.e.
per agent per 5 minutes, never per event. A model is ~0.5 MB pickled.
"""

from __future__ import annotations

import math
import pickle
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

from river import anomaly

from detectors.base import Finding, Observation, Severity, Stage, State
from detectors.events import ActorKind, is_blank
from detectors.policy import Policy, Tier
from detectors.settings import ActivityAnomalySettings
from detectors.values import TierCache, first_seen, same_value

_AGENT = ActorKind.AGENT

FEATURES = (
    "changes_per_min",
    "distinct_records",
    "distinct_fields",
    "overwrite_share",
    "high_tier_share",
    "hour_sin",
    "hour_cos",
)


@dataclass
class AgentModel:
    """One agent's HalfSpaceTrees and how many windows it has learned."""

    trees: Any
    learned: int = 0


class ActivityAnomalyDetector:
    """Per-agent window features scored by HalfSpaceTrees (see module docstring)."""

    name: ClassVar[str] = "activity_anomaly"
    stage: ClassVar[Stage] = Stage.ACTOR

    def __init__(self) -> None:
        self._models: dict[str, AgentModel] = {}
        self._tiers = TierCache()

    # ---- the runtime's hooks for the model (not JSON, so not in State) ----

    def snapshot(self, agent: str) -> bytes | None:
        """The agent's model as bytes (None when it has none yet)."""
        model = self._models.get(agent)
        if model is None:
            return None
        return pickle.dumps((model.trees, model.learned), protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, agent: str, data: bytes) -> None:
        """Install a model written by `snapshot` (only bytes this detector wrote: it is pickle)."""
        trees, learned = pickle.loads(data)  # noqa: S301 - our own changelog, never user input
        self._models[agent] = AgentModel(trees=trees, learned=int(learned))

    def learned(self, agent: str) -> int:
        """Windows the agent's model has learned (0 without a model): the runtime checkpoints a
        model when this grew (app/runtime/model_checkpoints.py)."""
        model = self._models.get(agent)
        return 0 if model is None else model.learned

    def agents(self) -> list[str]:
        """Agents with a model, sorted."""
        return sorted(self._models)

    def _model(self, agent: str, settings: ActivityAnomalySettings) -> AgentModel:
        model = self._models.get(agent)
        if model is not None and _shape(model.trees) != (settings.n_trees, settings.height, settings.window_size):
            model = None  # restored from before a policy change of the trees' shape: start again
        if model is None:
            seed = (settings.seed + zlib.crc32(agent.encode())) % (2**31)
            trees = anomaly.HalfSpaceTrees(
                n_trees=settings.n_trees, height=settings.height, window_size=settings.window_size, seed=seed
            )
            model = AgentModel(trees=trees)
            self._models[agent] = model
        return model

    # ---- detection ----

    def observe(self, obs: Observation, state: State, policy: Policy) -> list[Finding]:
        settings = policy.detectors.activity_anomaly
        event = obs.event
        if not settings.enabled or event.actor.kind is not _AGENT or event.operation == "gap":
            return []
        agent = event.actor.id
        now = event.occurred_at
        size = settings.window
        entry = _current(state.get(agent), now)
        if not first_seen(entry["e"], event.event_id):
            state[agent] = entry
            return []
        window = _window_for(entry, now // size * size, size, settings.allowed_lateness)
        window["n"] += max(1, len(event.changes))
        records = window["r"]
        record = event.record_key
        if record not in records and len(records) < settings.max_records_tracked:
            records[record] = 1
        fields = window["f"]
        for change in event.changes:
            if change.field not in fields and len(fields) < settings.max_fields_tracked:
                fields[change.field] = 1
            prior = obs.priors.get(change.field)
            if (
                prior is not None
                and not is_blank(prior.value)
                and not (prior.actor_kind is _AGENT and prior.actor_id == agent)
                and not same_value(prior.value, change.new)
            ):
                window["ow"] += 1  # someone else's set value replaced or blanked (own values: upkeep)
            if self._tiers.tier(policy, event.source, change.field) is Tier.HIGH:
                window["hi"] += 1
        if now >= window["lt"]:
            window["le"], window["lt"] = event.event_id, now
            window["lr"], window["lo"] = record, event.object_type.value
        if now > entry["wm"]:
            entry["wm"] = now
        findings = self._close_until(agent, entry, entry["wm"] - settings.allowed_lateness, policy, settings)
        state[agent] = entry
        return findings

    def flush(self, agent: str, now_ms: int, state: State, policy: Policy) -> list[Finding]:
        """End of input at event time `now_ms` (end of a replay): close the agent's windows that
        ended by then; nothing later can arrive, so no lateness is waited for."""
        settings = policy.detectors.activity_anomaly
        entry = state.get(agent)
        if entry is None:
            return []
        entry = _current(entry, now_ms)
        findings = self._close_until(agent, entry, now_ms, policy, settings)
        state[agent] = entry
        return findings

    def advance(self, watermark_ms: int, state: State, policy: Policy) -> list[Finding]:
        """Event time (of the partition, or of the whole replay) reached `watermark_ms`: close the
        windows of agents that went quiet once they are `allowed_lateness` behind it. Without
        this, an agent's last window waited for that agent's next change: a burst that stopped
        warned hours later, or never. The agent's own watermark moves up with it, so a change of
        an already closed window that comes after is counted late, not in a second copy of it."""
        settings = policy.detectors.activity_anomaly
        if not settings.enabled:
            return []
        until = watermark_ms - settings.allowed_lateness
        size = settings.window
        findings: list[Finding] = []
        # items(), not get(): in the runtime a read marks the entry for the changelog
        due = [(agent, entry) for agent, entry in state.items() if _due(entry, until, size)]
        for agent, entry in sorted(due, key=lambda pair: pair[0]):
            findings += self._close_until(agent, entry, until, policy, settings)
            entry["wm"] = max(entry["wm"], watermark_ms)
            state[agent] = entry
        return findings

    def _close_until(
        self, agent: str, entry: dict[str, Any], until: int, policy: Policy, settings: ActivityAnomalySettings
    ) -> list[Finding]:
        """Close, in time order, the open windows that ended at or before event time `until`."""
        findings: list[Finding] = []
        size = settings.window
        open_windows = entry["o"]
        while open_windows and open_windows[0]["w"] + size <= until:
            findings += self._close(agent, entry, open_windows.pop(0), policy, settings)
        return findings

    def _close(
        self,
        agent: str,
        entry: dict[str, Any],
        window: dict[str, Any],
        policy: Policy,
        settings: ActivityAnomalySettings,
    ) -> list[Finding]:
        """Score and learn a finished window; updates the agent's streak in `entry`."""
        if window["n"] == 0:
            return []
        raw = window_features(window, settings)
        x = scaled(raw, settings)
        model = self._model(agent, settings)
        warm = model.learned >= max(settings.warmup_windows, settings.window_size)
        score = float(model.trees.score_one(x)) if warm else None
        model.trees.learn_one(x)
        model.learned += 1
        adjacent = entry["pw"] is not None and window["w"] - entry["pw"] == settings.window
        entry["pw"] = window["w"]
        usual = entry.get("cb")
        shifted = composition_shift(window["ow"], window["hi"], window["n"], usual, settings.composition_z)
        if (
            score is None
            or score < settings.threshold
            or (settings.require_composition_change and shifted < settings.composition_margin)
        ):
            # an ordinary window (or volume alone, which is the velocity caps' job): learn its mix
            entry["cb"] = _learn_composition(usual, raw, settings.composition_alpha)
            entry["k"] = 0
            return []
        entry["k"] = entry["k"] + 1 if adjacent else 1
        if entry["k"] < settings.consecutive:
            return []
        minutes = settings.window // 60_000
        summary = (
            f"agent {agent}: unusual activity for {entry['k']} consecutive {minutes}-min windows "
            f"(score {score:.2f}; last window {raw['changes']} changes on {raw['distinct_records']} records, "
            f"{raw['overwrite_share']:.0%} overwrites, {raw['high_tier_share']:.0%} high-tier)"
        )
        return [
            Finding(
                detector=self.name,
                severity=Severity.WARNING,
                actor_key=agent,
                actor_kind=_AGENT,
                agent=agent,
                event_id=window["le"],
                occurred_at=window["lt"],
                record_key=window["lr"],
                object_type=window["lo"],
                summary=summary,
                details={
                    **raw,
                    "score": round(score, 4),
                    "threshold": settings.threshold,
                    "composition_shift": round(shifted, 4),
                    "usual_overwrite_share": round(usual[0], 4) if usual else None,
                    "usual_high_tier_share": round(usual[1], 4) if usual else None,
                    "streak": entry["k"],
                    "window_start": window["w"],
                    "window_ms": settings.window,
                },
            )
        ]


def composition_shift(
    overwrites: int, high_tier: int, changes: int, usual: list[float] | None, z: float = 1.64
) -> float:
    """How far the window's mix of work is above the agent's usual: the larger rise of its
    overwrite share or its high-tier share over their means, each share taken at its Wilson lower
    bound (`z`), so a window of one or two changes cannot look shifted by chance alone (one
    overwrite out of one change: 0.27). 1.0 with no history yet: nothing is usual then."""
    if not usual:
        return 1.0
    return max(
        wilson_lower(overwrites, changes, z) - usual[0],
        wilson_lower(high_tier, changes, z) - usual[1],
    )


def wilson_lower(hits: int, n: int, z: float) -> float:
    """Lower bound of the Wilson score interval of a proportion (0 for an empty sample)."""
    if n <= 0:
        return 0.0
    p = min(1.0, hits / n)
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def _learn_composition(usual: list[float] | None, raw: dict[str, Any], alpha: float) -> list[float]:
    """Means of the two shares over ordinary windows: a running mean, then an EWMA (`alpha`)."""
    if not usual:
        return [raw["overwrite_share"], raw["high_tier_share"], 1]
    n = int(usual[2]) + 1
    rate = max(alpha, 1.0 / n)
    return [
        round(usual[0] + rate * (raw["overwrite_share"] - usual[0]), 6),
        round(usual[1] + rate * (raw["high_tier_share"] - usual[1]), 6),
        min(n, 1_000_000),
    ]


_WINDOW_KEYS = ("w", "n", "r", "f", "ow", "hi", "le", "lt", "lr", "lo")


def _due(entry: dict[str, Any], until: int, size: int) -> bool:
    """Whether the entry's oldest open window ended by `until` (an entry in the layout before
    windows waited has no "o": it is converted when its agent is next seen)."""
    windows = entry.get("o")
    return bool(windows) and windows[0]["w"] + size <= until


def _window(start: int) -> dict[str, Any]:
    """An empty window beginning at `start`."""
    return {"w": start, "n": 0, "r": {}, "f": {}, "ow": 0, "hi": 0, "le": "", "lt": 0, "lr": "", "lo": ""}


def _current(entry: dict[str, Any] | None, now: int) -> dict[str, Any]:
    """The agent's entry in the current layout: a new one, or one written before windows waited
    for late events (one flat window, no watermark), converted."""
    if entry is None:
        return {"wm": now, "o": [], "k": 0, "pw": None, "e": {}, "cb": None}
    if "o" in entry:
        return entry
    window = {k: entry[k] for k in _WINDOW_KEYS}
    return {
        "wm": max(entry["lt"], entry["w"]),
        "o": [window] if window["n"] else [],
        "k": entry["k"],
        "pw": entry["pw"],
        "e": entry["e"],
        "cb": entry.get("cb"),
    }


def _window_for(entry: dict[str, Any], start: int, size: int, lateness: int) -> dict[str, Any]:
    """The open window an event of window `start` counts in. A window already closed (its end is
    more than `lateness` behind the watermark) cannot take it any more: it counts in the oldest
    open window, or in the watermark's window when none is open."""
    open_windows = entry["o"]
    if start + size + lateness <= entry["wm"]:
        if open_windows:
            return open_windows[0]
        start = entry["wm"] // size * size
    for i, window in enumerate(open_windows):
        if window["w"] == start:
            return window
        if window["w"] > start:
            open_windows.insert(i, _window(start))
            return open_windows[i]
    open_windows.append(_window(start))
    return open_windows[-1]


def _shape(trees: Any) -> tuple[int, int, int]:
    return (trees.n_trees, trees.height, trees.window_size)


def window_features(entry: dict[str, Any], settings: ActivityAnomalySettings) -> dict[str, Any]:
    """The window's features in plain units (also the finding's details)."""
    n = entry["n"]
    hour = (entry["w"] % 86_400_000) / 3_600_000
    return {
        "changes": n,
        "changes_per_min": round(n / (settings.window / 60_000), 4),
        "distinct_records": len(entry["r"]),
        "distinct_fields": len(entry["f"]),
        "overwrite_share": round(entry["ow"] / n, 4),
        "high_tier_share": round(entry["hi"] / n, 4),
        "hour_utc": round(hour, 3),
    }


def scaled(raw: dict[str, Any], settings: ActivityAnomalySettings) -> dict[str, float]:
    """Features in [0, 1] for HalfSpaceTrees: fixed log scales for counts, sin/cos for the hour."""
    counts = math.log1p(settings.count_scale)
    angle = 2 * math.pi * raw["hour_utc"] / 24
    x = {
        "changes_per_min": math.log1p(raw["changes_per_min"]) / counts,
        "distinct_records": math.log1p(raw["distinct_records"]) / counts,
        "distinct_fields": math.log1p(raw["distinct_fields"]) / math.log1p(settings.field_scale),
        "overwrite_share": raw["overwrite_share"],
        "high_tier_share": raw["high_tier_share"],
        "hour_sin": (math.sin(angle) + 1) / 2,
        "hour_cos": (math.cos(angle) + 1) / 2,
    }
    return {k: min(1.0, max(0.0, v)) for k, v in x.items()}
