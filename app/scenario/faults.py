"""Fault injection: each fault class of truth.FAULT_CLASSES, once per vendor, recorded in truth.json.

A mixin of `Simulation` (generator.py). `_plan_faults` lays the instances out after the warm-up:
one phase per vendor (a day each in the compact plan of the demo, about six days each in the
standard plan), each class at its own offset so that no two instances of one agent overlap. Each
fault is a self-rescheduling action that makes one faulty change at a time with the agent's
real identity, so the guard sees exactly what a misbehaving agent would send; every change is
recorded with the canonical event id the adapters derive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.scenario import pools
from app.scenario.model import LOST, OPEN_STAGES, WON, Change
from app.scenario.traffic import BenignTraffic, event_ref, next_status
from app.scenario.truth import FAULT_CLASSES, Fault, FaultChange
from app.scenario.vendors import native_field
from app.scenario.world import AGENT_CAP, DAY, FAULT_AGENT, HOUR, MINUTE, Tenant, next_business, object_type

if TYPE_CHECKING:
    pass


class FaultInjector(BenignTraffic):
    """The injected faults (see the module docstring). Mixed into Simulation; the faults reuse the
    benign behaviours they corrupt (a support ticket, a human's revert)."""

    def _plan_faults(self) -> None:
        compact = self.cfg.fault_plan == "compact"
        warm = self.start + int(self.cfg.warmup_days * DAY)
        phase_len = (
            DAY
            if compact
            else int(
                max(1.0, (self.cfg.fault_days or self.cfg.days - self.cfg.warmup_days) / len(self.tenants))
                * DAY
            )
        )
        # (hour offset in the phase, duration) per class; standard phases are ~6 days long
        plan_compact = {
            "slow_drip_overwrite": (1.0, 8.0),
            "silent_blanking": (3.0, 2.0),
            "duplicate_creation": (13.0, 5.0),
            "wrong_stage_after_support": (14.0, 6.0),
            "commission_field_write": (16.0, 2.0),
            "velocity_burst": (19.0, 0.5),
            "unknown_integration": (20.0, 1.5),
        }
        plan_standard = {
            "slow_drip_overwrite": (2.0, 30.0),
            "silent_blanking": (34.0, 6.0),
            "duplicate_creation": (61.0, 20.0),
            "wrong_stage_after_support": (86.0, 30.0),
            "commission_field_write": (110.0, 6.0),
            "velocity_burst": (122.0, 0.67),
            "unknown_integration": (126.0, 4.0),
        }
        plan = plan_compact if compact else plan_standard
        for index, tenant in enumerate(self.tenants.values()):
            phase = warm + index * phase_len
            for cls in FAULT_CLASSES:
                offset, hours = plan[cls]
                if not compact:
                    offset = offset * phase_len / (6 * DAY)
                start = phase + int(offset * HOUR) + self.rng.randrange(20 * MINUTE)
                if start >= self.end:
                    continue
                end = min(self.end - MINUTE, start + int(hours * HOUR))
                self._start_fault(tenant, cls, start, end)

    def _start_fault(self, tenant: Tenant, cls: str, start: int, end: int) -> None:
        agent = FAULT_AGENT[cls]
        actor = tenant.actors[agent] if agent else tenant.actors["unknown-sync"]
        fid = f"{tenant.vendor}-{cls}"
        descriptions = {
            "slow_drip_overwrite": "enrich-agent overwrites set utm_source values with 'enriched', "
            "2-3 an hour",
            "duplicate_creation": "intake-agent creates leads that already exist (e-mail case/plus-tag/dots, "
            "phone in another format) instead of updating them",
            "wrong_stage_after_support": "pipeline-agent moves deals a stage forward right after a support "
            "ticket on the same account (no sales activity); the owners revert the moves",
            "commission_field_write": "forecast-agent writes amount, close date and owner of open deals",
            "velocity_burst": "scoring-agent re-scores 2-3x its hourly cap of distinct leads in under "
            "an hour",
            "unknown_integration": "an API client registered as no agent writes to leads and contacts",
            "silent_blanking": "hygiene-agent empties job titles and phone numbers that were set",
        }
        fault = self.truth.add_fault(
            Fault(
                fid=fid,
                cls=cls,
                vendor=tenant.vendor,
                agent=agent,
                actor_key=agent if agent else actor.actor_key(),
                identity=actor.identity(),
                planned_start=start,
                planned_end=end,
                description=descriptions[cls],
            )
        )
        if cls == "velocity_burst":
            self.at(start, self._fault_burst, tenant, fault, end)
        elif cls == "wrong_stage_after_support":  # needs support staff and reps at work: business hours
            shifted = next_business(start, tenant.rng)
            fault.planned_start, fault.planned_end = shifted, min(self.end - MINUTE, end + shifted - start)
            self.at(shifted, self._fault_stage, tenant, fault, fault.planned_end, 0)
        else:
            step = {
                "slow_drip_overwrite": self._fault_drip,
                "duplicate_creation": self._fault_duplicate,
                "commission_field_write": self._fault_commission,
                "unknown_integration": self._fault_unknown,
                "silent_blanking": self._fault_blank,
            }[cls]
            self.at(start, step, tenant, fault, end)

    def _record_change(
        self,
        tenant: Tenant,
        fault: Fault,
        ch: Change,
        refs: list[tuple[str, str | None, str]],
        over_cap: bool | None = None,
    ) -> None:
        for rid in ch.rids:
            old = ch.old.get(rid, {})
            all_ids = sorted({eid for r, _, eid in refs if r == rid}) if ch.op == "create" else None
            fields = list(ch.new) if ch.op == "update" else [None]
            for f in fields:
                fault.changes.append(
                    FaultChange(
                        ch.at,
                        rid,
                        object_type(tenant.vendor, ch.obj),
                        f,
                        native_field(tenant.vendor, ch.obj, f) if f else None,
                        old.get(f) if f else None,
                        ch.new.get(f) if f else None,
                        event_ref(refs, rid, f),
                        over_cap=over_cap,
                        event_ids=all_ids,
                    )
                )

    def _fault_drip(self, tenant: Tenant, fault: Fault, end: int) -> None:
        rng = tenant.rng
        for _ in range(10):
            rec = tenant.alive(tenant.marketing.choice(rng))
            if rec is not None and rec.rid not in tenant.busy:
                ch = Change(
                    self.now,
                    "update",
                    rec.obj,
                    [rec.rid],
                    tenant.actors["enrich-agent"],
                    {"utm_source": "enriched"},
                )
                self._record_change(tenant, fault, ch, self._emit(tenant, ch, want_ids=True))
                break
        nxt = self.now + rng.randrange(20 * MINUTE, 30 * MINUTE)
        if nxt < end:
            self.at(nxt, self._fault_drip, tenant, fault, end)

    def _fault_blank(self, tenant: Tenant, fault: Fault, end: int) -> None:
        rng = tenant.rng
        for _ in range(10):
            rec = tenant.alive(tenant.titled.choice(rng))
            if rec is not None and rec.rid not in tenant.busy and rec.values.get("title"):
                new: dict[str, Any] = {"title": ""}
                if rec.values.get("phone") and rng.random() < 0.4:
                    new["phone"] = ""
                ch = Change(self.now, "update", rec.obj, [rec.rid], tenant.actors["hygiene-agent"], new)
                self._record_change(tenant, fault, ch, self._emit(tenant, ch, want_ids=True))
                break
        nxt = self.now + rng.randrange(6 * MINUTE, 10 * MINUTE)
        if nxt < end:
            self.at(nxt, self._fault_blank, tenant, fault, end)

    def _fault_duplicate(self, tenant: Tenant, fault: Fault, end: int) -> None:
        rng = tenant.rng
        for _ in range(20):
            orig = tenant.alive(tenant.marketing.choice(rng))
            if orig is None or orig.rid in tenant.busy or not orig.values.get("email"):
                continue
            style = len(fault.changes)
            v = orig.values
            values: dict[str, Any] = {
                "first": v["first"],
                "last": v["last"],
                "company_name": v.get("company_name"),
                "email": pools.email_variant(v["email"], style),
                "owner": v.get("owner"),
            }
            if v.get("phone") and tenant.vendor != "hubspot":
                digits = "".join(ch for ch in str(v["phone"]) if ch.isdigit())
                e164 = "+" + digits if len(digits) == 11 else "+1" + digits[-10:]
                values["phone"] = pools.phone_formatted(e164, style)
            values = {k: x for k, x in values.items() if x}
            rid = tenant.new_id("person")
            ch = Change(self.now, "create", "person", [rid], tenant.actors["intake-agent"], values)
            self._record_change(tenant, fault, ch, self._emit(tenant, ch, want_ids=True))
            fault.related_records.append(orig.rid)
            break
        nxt = self.now + rng.randrange(30 * MINUTE, 50 * MINUTE)
        if nxt < end:
            self.at(nxt, self._fault_duplicate, tenant, fault, end)

    def _fault_stage(self, tenant: Tenant, fault: Fault, end: int, done: int) -> None:
        """A support ticket on a quiet account, then pipeline-agent moves that account's deal."""
        rng = tenant.rng
        horizon = self.now - 8 * DAY
        for _ in range(60):
            rid = tenant.stale_deals.choice(rng)
            deal = tenant.alive(rid)
            if deal is None or rid in tenant.busy or deal.values["stage"] in (WON, LOST):
                continue
            company = deal.values.get("company_id")
            if (
                not company
                or tenant.last_sales.get(company, 0) > horizon
                or int(deal.values["stage"]) >= OPEN_STAGES - 1
            ):
                continue
            tenant.busy.add(deal.rid)
            support = rng.choice(self.roster.support)
            ticket = self._support_ticket(tenant, support, company)
            if ticket:
                fault.related_records.append(ticket)
            self.at(
                self.now + rng.randrange(15 * MINUTE, 60 * MINUTE), self._fault_stage_move, tenant, fault, rid
            )
            break
        nxt = next_business(self.now + rng.randrange(80 * MINUTE, 150 * MINUTE), rng)
        if nxt < end and done + 1 < 6:
            self.at(nxt, self._fault_stage, tenant, fault, end, done + 1)

    def _fault_stage_move(self, tenant: Tenant, fault: Fault, deal_id: str) -> None:
        rng = tenant.rng
        deal = tenant.alive(deal_id)
        if deal is None or deal.values["stage"] in (WON, LOST):
            tenant.busy.discard(deal_id)
            return
        stage = int(deal.values["stage"])
        ch = Change(
            self.now, "update", "deal", [deal_id], tenant.actors["pipeline-agent"], {"stage": stage + 1}
        )
        self._record_change(tenant, fault, ch, self._emit(tenant, ch, want_ids=True))
        owner = deal.values["owner"]
        self.at(
            next_business(self.now + rng.randrange(HOUR, 5 * HOUR), rng),
            self._revert_stage,
            tenant,
            owner,
            deal_id,
            stage,
            fault,
        )

    def _fault_commission(self, tenant: Tenant, fault: Fault, end: int) -> None:
        rng = tenant.rng
        for _ in range(20):
            deal = tenant.alive(tenant.open_deals.choice(rng))
            if deal is None or deal.rid in tenant.busy:
                continue
            which = rng.choice(("amount", "closedate", "owner"))
            v = deal.values
            if which == "amount":
                new: dict[str, Any] = {"amount": int(v["amount"] * 1.15 // 100 * 100)}
            elif which == "closedate":
                month_end = (self.now // DAY + 30 - (self.now // DAY) % 30) * DAY
                new = {"closedate": month_end if month_end != v["closedate"] else month_end + DAY}
            else:
                others = [r for r in self.roster.reps if r != v["owner"]]
                new = {"owner": rng.choice(others)}
            ch = Change(self.now, "update", "deal", [deal.rid], tenant.actors["forecast-agent"], new)
            self._record_change(tenant, fault, ch, self._emit(tenant, ch, want_ids=True))
            break
        nxt = self.now + rng.randrange(20 * MINUTE, 40 * MINUTE)
        if nxt < end:
            self.at(nxt, self._fault_commission, tenant, fault, end)

    def _fault_burst(self, tenant: Tenant, fault: Fault, end: int) -> None:
        """~3x the cap of distinct leads in 40 minutes; changes past the cap are marked over_cap."""
        rng = tenant.rng
        agent = "scoring-agent"
        total = self.cfg.burst_records
        picked: list[str] = []
        tries = 0
        while len(picked) < total and tries < total * 20:
            tries += 1
            rid = tenant.leads.choice(rng)
            if rid and rid not in picked and rid not in tenant.busy:
                picked.append(rid)
        span = max(MINUTE, end - self.now)
        for i, rid in enumerate(picked):
            self.at(
                self.now + int(i * span / max(1, len(picked))),
                self._fault_burst_one,
                tenant,
                fault,
                rid,
                agent,
            )

    def _fault_burst_one(self, tenant: Tenant, fault: Fault, rid: str, agent: str) -> None:
        rec = tenant.alive(rid)
        if rec is None:
            return
        key = tenant.key(rec.obj, rid)
        win = self.window(agent)
        win._expire(self.now)
        over = key not in win.seen and len(win.seen) + 1 > AGENT_CAP
        ch = Change(
            self.now,
            "update",
            rec.obj,
            [rid],
            tenant.actors[agent],
            {"lead_status": next_status(rec.values.get("lead_status"), tenant.rng)},
        )
        self._record_change(tenant, fault, ch, self._emit(tenant, ch, want_ids=True), over_cap=over)

    def _fault_unknown(self, tenant: Tenant, fault: Fault, end: int) -> None:
        rng = tenant.rng
        rec = tenant.alive(tenant.persons.choice(rng))
        if rec is not None and rec.rid not in tenant.busy:
            new = (
                {"sync_status": "synced"}
                if rng.random() < 0.6
                else {"lead_status": "OPEN", "sync_status": "synced"}
            )
            if rec.obj == "contact":
                new.pop("lead_status", None)
            ch = Change(self.now, "update", rec.obj, [rec.rid], tenant.actors["unknown-sync"], new)
            self._record_change(tenant, fault, ch, self._emit(tenant, ch, want_ids=True))
        nxt = self.now + rng.randrange(5 * MINUTE, 12 * MINUTE)
        if nxt < end:
            self.at(nxt, self._fault_unknown, tenant, fault, end)
