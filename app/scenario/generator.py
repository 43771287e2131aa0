"""The scenario generator: weeks of realistic CRM traffic in three vendor formats, with ground truth.

One discrete-event simulation (a heap of timed actions, event time only) drives three CRMs, one
per vendor, worked by the same team and the same agent fleet:

* humans: sales reps (deals, calls and meetings, their own stage moves, amount and close-date
  edits, reverting agent moves they disagree with), marketers (weekly list imports, bulk edits of
  campaigns), support (tickets / cases / support activities), operations (merges, deletions,
  corrections of other people's entries, bulk owner reassignment);
* automation: web forms (new leads with UTM values) and workflows (lifecycle, lead status);
  a known billing integration;
* agents doing benign work: enrich-agent fills empty fields (and works through import backlogs
  just under its 50-records-an-hour cap), intake-agent turns inbound e-mails into contacts and
  merges duplicates, pipeline-agent moves a deal one stage after a rep's call or meeting,
  forecast-agent keeps its own next-step field, notes-agent logs call notes, scoring-agent moves
  lead statuses, hygiene-agent fixes capitalisation.

The fault plan (`fault_plan`) injects each fault class of truth.FAULT_CLASSES once per vendor,
after a warm-up, and records every faulty change in truth.json. Agents self-limit to 46
distinct records a rolling hour (their cap is 50) except when a fault says otherwise; the
simulation does not react to the guard (a paused agent keeps going), so the truth is fixed.

Memory: the current values of every record (a small dict each) plus the pending actions; the
payloads are streamed to disk as they are made. Deterministic: the same config and seed give
byte-identical files.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.adapters import VENDORS
from app.scenario.faults import FaultInjector
from app.scenario.model import HUMAN, INTEGRATION, Change
from app.scenario.truth import Lookalike, Truth
from app.scenario.vendors import WRITERS, TenantInfo
from app.scenario.world import (
    AGENT_CAP,
    AGENT_SELF_LIMIT,
    AGENTS,
    DAY,
    DEFAULT_START,
    HOUR,
    Roster,
    Tenant,
    Window,
    build_actors,
)

__all__ = ["AGENTS", "AGENT_CAP", "VENDORS", "ScenarioConfig", "ScenarioResult", "Simulation", "generate"]


@dataclass(frozen=True)
class ScenarioConfig:
    """What to generate. `preset()` gives the named ones: demo, standard, large."""

    seed: int = 1
    days: float = 21.0
    scale: float = 1.0
    start: int = DEFAULT_START
    vendors: tuple[str, ...] = VENDORS
    warmup_days: float = 3.0
    fault_plan: str = "standard"  # standard | compact | none
    max_events: int | None = None
    burst_records: int = 150
    fault_days: float | None = None  # days after the warm-up the fault phases span (default: all the rest)
    name: str = "standard"

    @staticmethod
    def preset(name: str, **overrides: Any) -> ScenarioConfig:
        """`demo` (4 days, small, every fault in one day per vendor), `standard` (3 weeks),
        `large` (1,000,000 events over ~200,000 records, for the replay speed benchmark)."""
        if name == "demo":
            base = ScenarioConfig(
                days=4.0, scale=0.08, warmup_days=1.0, fault_plan="compact", burst_records=80, name="demo"
            )
        elif name == "standard":
            base = ScenarioConfig()
        elif name == "large":
            base = ScenarioConfig(days=21.0, scale=24.5, max_events=1_000_000, fault_days=15.0, name="large")
        else:
            raise ValueError(f"unknown preset {name!r} (demo, standard, large)")
        return replace(base, **overrides)


class Simulation(FaultInjector):
    """The event loop and everything that acts in it (see the module docstring)."""

    def __init__(self, config: ScenarioConfig, out_dir: Path) -> None:
        self.cfg = config
        self.out_dir = out_dir
        self.start = config.start
        self.end = config.start + int(config.days * DAY)
        self.heap: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = 0
        self.now = self.start
        self.truth = Truth()
        self.roster = Roster.for_scale(config.scale)
        self.windows: dict[str, Window] = {}
        self.handles: list[Any] = []
        self.tenants: dict[str, Tenant] = {}
        self.stopped = False
        out_dir.mkdir(parents=True, exist_ok=True)
        for index, vendor in enumerate(config.vendors):
            rng = random.Random(f"{config.seed}/{vendor}")  # noqa: S311 - a simulation, not secrets
            actors = build_actors(vendor, self.roster)
            owners: dict[str, str] = {}
            for name, actor in actors.items():
                if vendor == "hubspot":
                    if actor.kind == HUMAN:
                        owners[name] = str(52_718_800 + len(owners) * 37)
                else:
                    owners[name] = str(actor.user_id)
            info = TenantInfo(
                vendor,
                owners,
                portal_id=4_781_932 + index,
                app_id=2_203_154,
                company_id=8_087_566 + index,
                host="acme-demo.pipedrive.com",
            )
            handle = open(out_dir / f"{vendor}.jsonl", "wb")  # noqa: SIM115 - closed in run()
            self.handles.append(handle)
            wire = random.Random(f"{config.seed}/{vendor}/wire")  # noqa: S311
            writer = WRITERS[vendor](handle, info, wire)
            self.tenants[vendor] = Tenant(self, vendor, writer, actors, rng)
        self.rng = random.Random(f"{config.seed}/plan")  # noqa: S311

    # -- loop ---------------------------------------------------------------------------------

    def at(self, t: int, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, fn, args))

    def window(self, agent: str) -> Window:
        win = self.windows.get(agent)
        if win is None:
            win = self.windows[agent] = Window()
        return win

    def total_events(self) -> int:
        return sum(t.writer.events for t in self.tenants.values())

    def run(self) -> dict[str, Any]:
        try:
            for tenant in self.tenants.values():
                self._seed_base(tenant)
            for h in range(int((self.end - self.start) // HOUR)):
                self.at(self.start + h * HOUR, self._hour, self.start + h * HOUR)
            self._plan_lookalikes()
            if self.cfg.fault_plan != "none":
                self._plan_faults()
            while self.heap and not self.stopped:
                t, _, fn, args = heapq.heappop(self.heap)
                if t >= self.end:
                    break
                self.now = t
                fn(*args)
        finally:
            for tenant in self.tenants.values():
                tenant.writer.close()
                if tenant.integration_writes:
                    writes = tenant.integration_writes
                    self.truth.add_lookalike(
                        Lookalike(
                            "known_integration",
                            tenant.vendor,
                            "billing-sync",
                            INTEGRATION,
                            writes[0],
                            writes[-1],
                            len(writes),
                            "a registered billing integration sets and updates companies' billing status",
                        )
                    )
            for handle in self.handles:
                handle.close()
        return self._stats()

    def _stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"events": {}, "lines": {}, "bytes": {}, "records": {}}
        for vendor, tenant in self.tenants.items():
            out["events"][vendor] = tenant.writer.events
            out["lines"][vendor] = tenant.writer.lines
            out["bytes"][vendor] = tenant.writer.bytes
            out["records"][vendor] = len(tenant.records)
        out["events_total"] = sum(out["events"].values())
        out["records_total"] = sum(out["records"].values())
        out["stopped_at_max_events"] = self.stopped
        return out

    # -- helpers ------------------------------------------------------------------------------

    def _emit(self, tenant: Tenant, ch: Change, want_ids: bool = False) -> list[tuple[str, str | None, str]]:
        if self.stopped:
            return []
        if ch.at < self.now:
            ch.at = self.now
        refs = tenant.emit(ch, want_ids)
        limit = self.cfg.max_events
        if limit is not None and self.total_events() >= limit:
            self.stopped = True
        return refs

    def _agent_ok(self, tenant: Tenant, agent: str, obj: str, rid: str, t: int) -> bool:
        return self.window(agent).allows(tenant.key(obj, rid), t, AGENT_SELF_LIMIT)


@dataclass
class ScenarioResult:
    """What `generate` wrote and counted."""

    out_dir: Path
    stats: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def generate(config: ScenarioConfig, out_dir: str | Path) -> ScenarioResult:
    """Write DIR/<vendor>.jsonl, DIR/policy.yaml and DIR/truth.json for the config."""
    from app.scenario.policy import scenario_policy_yaml

    out = Path(out_dir)
    sim = Simulation(config, out)
    stats = sim.run()
    sim.truth.meta = {
        "version": 1,
        "preset": config.name,
        "seed": config.seed,
        "scale": config.scale,
        "start": config.start,
        "end": sim.end,
        "days": config.days,
        "warmup_end": config.start + int(config.warmup_days * DAY),
        "vendors": list(config.vendors),
        "agents": list(AGENTS),
        "agent_cap": AGENT_CAP,
        "humans": sim.roster.humans,
        "human_actor_keys": sorted(
            {a.actor_key() for t in sim.tenants.values() for a in t.actors.values() if a.kind == HUMAN}
        ),
        "stats": stats,
    }
    sim.truth.write(out / "truth.json")
    (out / "policy.yaml").write_text(scenario_policy_yaml(sim.roster, config.vendors), encoding="utf-8")
    files = [out / f"{v}.jsonl" for v in config.vendors] + [out / "policy.yaml", out / "truth.json"]
    return ScenarioResult(out, stats, files)
