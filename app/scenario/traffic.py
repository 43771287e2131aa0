"""Benign traffic: the team, its automations and the agent fleet doing their everyday work.

A mixin of `Simulation` (generator.py): the day-zero import of the existing database, an hourly
driver that draws Poisson counts of every behaviour for every tenant, the humans (reps, marketers,
support, operations), automations and the known integration, the agents' benign work, and the
scripted look-alikes (imports, bulk edits, enrichment near its cap) recorded in truth.json.
Rates are per weekday at scale 1; per-person rates apply to each team member (the team grows
with the scale), the rest scale with it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.scenario import pools
from app.scenario.model import AGENT, HUMAN, LOST, OPEN_STAGES, WON, Actor, Change, Record
from app.scenario.truth import Fault, FaultChange, Lookalike
from app.scenario.vendors import native_field
from app.scenario.world import (
    AGENT_CAP,
    AGENT_SELF_LIMIT,
    BUSINESS_END_H,
    BUSINESS_START_H,
    DAY,
    HOUR,
    LEAD_STATUS_FLOW,
    MINUTE,
    Bag,
    Tenant,
    Window,
    bulk_actor,
    hour_of,
    import_actor,
    is_business,
    next_business,
    object_type,
    poisson,
    weekday,
)

if TYPE_CHECKING:
    from app.scenario.generator import ScenarioConfig
    from app.scenario.truth import Truth
    from app.scenario.world import Roster


DEAL_KINDS = ("New business", "Expansion", "Renewal", "Pilot")


class BenignTraffic:
    """Everything that is not a fault (see the module docstring). Mixed into Simulation, which
    provides the attributes and the loop primitives declared here."""

    cfg: ScenarioConfig
    truth: Truth
    roster: Roster
    tenants: dict[str, Tenant]
    start: int
    end: int
    now: int
    rng: random.Random

    def at(self, t: int, fn: Callable[..., Any], *args: Any) -> None:
        raise NotImplementedError

    def window(self, agent: str) -> Window:
        raise NotImplementedError

    def _emit(self, tenant: Tenant, ch: Change, want_ids: bool = False) -> list[tuple[str, str | None, str]]:
        raise NotImplementedError

    def _agent_ok(self, tenant: Tenant, agent: str, obj: str, rid: str, t: int) -> bool:
        raise NotImplementedError

    def _spread(
        self, t0: int, n: int, span: int, fn: Callable[..., Any], *args: Any, rng: random.Random
    ) -> None:
        for _ in range(n):
            self.at(t0 + rng.randrange(max(1, span)), fn, *args)

    # -- day zero: the CRM as it was when the guard was switched on ----------------------------

    def _seed_base(self, tenant: Tenant) -> None:
        """Schedule the initial import of the existing database, from just after midnight on day one.

        The guard must have seen values to judge overwrites; like every other action the rows go
        through the event loop, so no record is touched before its creation event.
        """
        rng = tenant.rng
        scale = self.cfg.scale
        marketer = tenant.actors[self.roster.marketers[0]]
        actor = import_actor(tenant.vendor, marketer, 900_001)
        t = self.start + MINUTE
        for _ in range(max(12, int(90 * scale))):
            t += rng.randrange(200, 900)
            self.at(t, self._seed_company, tenant, actor)
        for _ in range(max(30, int(400 * scale))):
            t += rng.randrange(100, 500)
            self.at(t, self._seed_person, tenant, actor)
        for _ in range(max(8, int(60 * scale))):
            t += rng.randrange(200, 900)
            self.at(t, self._seed_deal, tenant, actor)

    def _seed_company(self, tenant: Tenant, actor: Actor) -> None:
        cid = self._new_company(tenant, self.now, actor)
        for _ in range(tenant.rng.randrange(1, 4)):
            self._new_contact(tenant, self.now, actor, cid)

    def _seed_person(self, tenant: Tenant, actor: Actor) -> None:
        self._new_person(tenant, self.now, actor, source="import")

    def _seed_deal(self, tenant: Tenant, actor: Actor) -> None:
        rng = tenant.rng
        cid = tenant.companies.choice(rng)
        self._new_deal(tenant, self.now, actor, cid, rng.choice(self.roster.reps), stage=rng.randrange(0, 4))

    # -- record builders ----------------------------------------------------------------------

    def _person_values(self, tenant: Tenant, source: str) -> dict[str, Any]:
        rng = tenant.rng
        first, last = rng.choice(pools.FIRST_NAMES), rng.choice(pools.LAST_NAMES)
        company = pools.company_name(rng)
        domain = pools.domain_for(company, rng)
        values: dict[str, Any] = {
            "first": first,
            "last": last,
            "email": pools.email_for(first, last, domain, rng),
            "company_name": company,
            "owner": rng.choice(self.roster.reps),
        }
        if rng.random() < 0.55:
            values["phone"] = (
                pools.phone_e164(rng)
                if rng.random() < 0.6
                else pools.phone_formatted(pools.phone_e164(rng), rng.randrange(5))
            )
        if rng.random() < 0.5:
            title = rng.choice(pools.TITLES)
            values["title"] = title.lower() if source == "import" and rng.random() < 0.3 else title
        if rng.random() < 0.4:
            values["industry"] = rng.choice(pools.INDUSTRIES)
        if rng.random() < 0.4:
            values["city"] = rng.choice(pools.CITIES)
        if source in ("form", "import"):
            src = rng.choice(pools.UTM_SOURCES)
            values.update(
                {
                    "utm_source": src,
                    "utm_medium": pools.UTM_MEDIUMS[src],
                    "utm_campaign": rng.choice(pools.CAMPAIGNS),
                }
            )
        return values

    def _new_person(self, tenant: Tenant, t: int, actor: Actor, source: str) -> str:
        values = self._person_values(tenant, source)
        if source == "form":
            values["lead_status"] = "NEW"
            values["lifecycle"] = "lead" if tenant.vendor != "hubspot" else None
            values = {k: v for k, v in values.items() if v is not None}
        rid = tenant.new_id("person")
        self._emit(tenant, Change(t, "create", "person", [rid], actor, values))
        if any(f not in values for f in ("title", "industry", "city", "phone")) or "utm_source" not in values:
            tenant.enrich_queue.append(rid)
        return rid

    def _new_company(self, tenant: Tenant, t: int, actor: Actor) -> str:
        rng = tenant.rng
        name = pools.company_name(rng)
        values = {
            "name": name,
            "domain": pools.domain_for(name, rng),
            "industry": rng.choice(pools.INDUSTRIES),
            "employees": rng.choice((12, 40, 85, 150, 400, 1200, 5000)),
            "city": rng.choice(pools.CITIES),
            "owner": rng.choice(self.roster.reps),
        }
        rid = tenant.new_id("company")
        self._emit(tenant, Change(t, "create", "company", [rid], actor, values))
        return rid

    def _new_contact(self, tenant: Tenant, t: int, actor: Actor, company_id: str | None) -> str:
        rng = tenant.rng
        company = tenant.alive(company_id)
        first, last = rng.choice(pools.FIRST_NAMES), rng.choice(pools.LAST_NAMES)
        domain = company.values["domain"] if company else "example.com"
        values: dict[str, Any] = {
            "first": first,
            "last": last,
            "email": pools.email_for(first, last, domain, rng, 0.1),
            "owner": company.values.get("owner") if company else rng.choice(self.roster.reps),
        }
        if company:
            values["company_id"] = company.rid
            values["company_name"] = company.values["name"]
        if rng.random() < 0.7:
            values["title"] = rng.choice(pools.TITLES)
        if rng.random() < 0.6:
            values["phone"] = pools.phone_e164(rng)
        rid = tenant.new_id("contact")
        links = [("company", company.rid)] if company else []
        self._emit(tenant, Change(t, "create", "contact", [rid], actor, values, links=links))
        if "city" not in values:
            tenant.enrich_queue.append(rid)
        return rid

    def _new_deal(
        self, tenant: Tenant, t: int, actor: Actor, company_id: str | None, rep: str, stage: int = 0
    ) -> str | None:
        rng = tenant.rng
        company = tenant.alive(company_id)
        if company is None:
            return None
        contacts = [c for c in tenant.company_contacts.get(company.rid, []) if tenant.alive(c)]
        contact = rng.choice(contacts) if contacts else None
        close = (t // DAY + 20 + rng.randrange(70)) * DAY
        values: dict[str, Any] = {
            "name": f"{company.values['name']} - {rng.choice(DEAL_KINDS)}",
            "stage": stage,
            "amount": rng.choice((4_800, 9_600, 12_000, 18_500, 24_000, 36_000, 60_000, 95_000)),
            "closedate": close,
            "owner": rep,
            "pipeline": "default",
            "company_id": company.rid,
        }
        if contact:
            values["contact_id"] = contact
        rid = tenant.new_id("deal")
        links = [("company", company.rid)] + ([("contact", contact)] if contact else [])
        self._emit(tenant, Change(t, "create", "deal", [rid], actor, values, links=links))
        if rng.random() < 0.45:
            tenant.active_deals.setdefault(rep, Bag()).add(rid)
        else:
            tenant.stale_deals.add(rid)
        return rid

    # -- the hourly driver --------------------------------------------------------------------

    def _hour(self, h0: int) -> None:
        for tenant in self.tenants.values():
            self._hour_tenant(tenant, h0)

    def _hour_tenant(self, tenant: Tenant, h0: int) -> None:
        rng = tenant.rng
        s = self.cfg.scale
        business = is_business(h0)
        workday = weekday(h0) < 5
        day_part = 1.6 if 12 <= hour_of(h0) < 24 else 0.4
        per_bh = 1.0 / (BUSINESS_END_H - BUSINESS_START_H)

        def n(daily: float, business_only: bool = True, weekend: float = 0.0, person: bool = False) -> int:
            """Poisson count for this hour; `person` rates are per team member (the team itself scales)."""
            factor = 1.0 if person else s
            if business_only:
                lam = daily * per_bh * factor if business else 0.0
            else:
                lam = daily / 24 * day_part * factor * (1.0 if workday else weekend)
            return poisson(rng, lam)

        span = HOUR
        self._spread(h0, n(50, False, 0.35), span, self._form_lead, tenant, rng=rng)
        self._spread(h0, n(8, False, 0.2), span, self._billing_sync, tenant, rng=rng)
        for rep in self.roster.reps:
            self._spread(h0, n(0.5, person=True), span, self._rep_new_deal, tenant, rep, rng=rng)
            self._spread(h0, n(5, person=True), span, self._rep_activity, tenant, rep, rng=rng)
            self._spread(h0, n(1.0, person=True), span, self._rep_deal_edit, tenant, rep, rng=rng)
            self._spread(h0, n(0.8, person=True), span, self._rep_contact_edit, tenant, rep, rng=rng)
            self._spread(h0, n(0.8, person=True), span, self._rep_new_contact, tenant, rep, rng=rng)
            self._spread(h0, n(0.15, person=True), span, self._rep_close_deal, tenant, rep, rng=rng)
            self._spread(h0, n(0.25, person=True), span, self._rep_duplicate_contact, tenant, rep, rng=rng)
        for person in self.roster.support:
            self._spread(h0, n(4, person=True), span, self._support_ticket, tenant, person, None, rng=rng)
        for person in self.roster.ops:
            self._spread(h0, n(3, person=True), span, self._ops_correction, tenant, person, rng=rng)
            self._spread(h0, n(1.5, person=True), span, self._ops_delete, tenant, person, rng=rng)
        # agents (scaled by the same factor; every agent keeps itself under its hourly cap)
        self._spread(h0, n(15, False, 0.3), span, self._intake_email, tenant, rng=rng)
        self._spread(h0, n(12, False, 0.5), span, self._forecast_next_step, tenant, rng=rng)
        self._spread(h0, n(50) + n(8, False, 1.0), span, self._scoring_update, tenant, rng=rng)
        self._spread(h0, n(40, False, 0.5), span, self._hygiene_fix, tenant, rng=rng)
        # enrichment works its backlog: a trickle, or flat out (the self-limit) after an import
        backlog = len(tenant.enrich_queue)
        if backlog:
            per_hour = min(backlog, AGENT_CAP if backlog > 30 else rng.randrange(4, 14))
            for i in range(per_hour):
                self.at(h0 + int((i + rng.random()) * HOUR / per_hour), self._enrich_one, tenant)

    # -- humans -------------------------------------------------------------------------------

    def _form_lead(self, tenant: Tenant) -> None:
        rid = self._new_person(tenant, self.now, tenant.actors["forms"], source="form")
        if tenant.vendor == "hubspot":
            self.at(self.now + tenant.rng.randrange(20_000, 240_000), self._workflow_new_lead, tenant, rid)

    def _workflow_new_lead(self, tenant: Tenant, rid: str) -> None:
        if tenant.alive(rid):
            self._emit(
                tenant,
                Change(
                    self.now, "update", "person", [rid], tenant.actors["workflows"], {"lifecycle": "lead"}
                ),
            )

    def _rep_new_deal(self, tenant: Tenant, rep: str) -> None:
        rng = tenant.rng
        actor = tenant.actors[rep]
        cid: str | None
        if rng.random() < 0.3 or not len(tenant.companies):
            cid = self._new_company(tenant, self.now, actor)
            self._new_contact(tenant, self.now, actor, cid)
        else:
            cid = tenant.companies.choice(rng)
        deal = self._new_deal(tenant, self.now, actor, cid, rep)
        if deal and tenant.vendor == "hubspot":
            rec = tenant.alive(deal)
            contact = rec.values.get("contact_id") if rec else None
            if contact:
                self.at(self.now + 5 * MINUTE, self._workflow_lifecycle, tenant, contact, "opportunity")

    def _workflow_lifecycle(self, tenant: Tenant, rid: str, stage: str) -> None:
        if tenant.alive(rid):
            self._emit(
                tenant,
                Change(
                    self.now, "update", "contact", [rid], tenant.actors["workflows"], {"lifecycle": stage}
                ),
            )

    def _rep_new_contact(self, tenant: Tenant, rep: str) -> None:
        cid = tenant.companies.choice(tenant.rng)
        self._new_contact(tenant, self.now, tenant.actors[rep], cid)

    def _pick_active_deal(self, tenant: Tenant, rep: str) -> Record | None:
        bag = tenant.active_deals.get(rep)
        for _ in range(4):
            rid = bag.choice(tenant.rng) if bag else None
            rec = tenant.alive(rid)
            if rec is not None and rec.rid not in tenant.busy:
                return rec
        return None

    def _rep_activity(self, tenant: Tenant, rep: str) -> None:
        """A call or meeting on one of the rep's active deals; often followed by agents' work."""
        rng = tenant.rng
        deal = self._pick_active_deal(tenant, rep)
        if deal is None:
            return
        self._activity(tenant, tenant.actors[rep], deal, rng.choice(("call", "call", "meeting")))
        if deal.values["stage"] not in (WON, LOST) and int(deal.values["stage"]) < OPEN_STAGES - 1:
            roll = rng.random()
            if roll < 0.3:
                self.at(
                    self.now + rng.randrange(20 * MINUTE, 120 * MINUTE), self._pipeline_move, tenant, deal.rid
                )
            elif roll < 0.38:
                self.at(
                    self.now + rng.randrange(10 * MINUTE, 60 * MINUTE),
                    self._rep_stage_move,
                    tenant,
                    rep,
                    deal.rid,
                )
        if rng.random() < 0.5:
            self.at(self.now + rng.randrange(5 * MINUTE, 30 * MINUTE), self._notes_agent, tenant, deal.rid)

    def _activity(self, tenant: Tenant, actor: Actor, deal: Record, kind: str) -> str:
        rng = tenant.rng
        v = deal.values
        values = {
            "kind": kind,
            "subject": rng.choice(pools.CALL_SUBJECTS),
            "deal_id": deal.rid,
            "company_id": v.get("company_id"),
            "contact_id": v.get("contact_id"),
            "owner": actor.name,
            "done": True,
            "date": self.now,
        }
        values = {k: x for k, x in values.items() if x is not None}
        rid = tenant.new_id("activity")
        links = [("deal", deal.rid)] + [
            (o, v[f]) for o, f in (("company", "company_id"), ("contact", "contact_id")) if v.get(f)
        ]
        self._emit(tenant, Change(self.now, "create", "activity", [rid], actor, values, links=links))
        if actor.kind == HUMAN and v.get("company_id"):
            tenant.last_sales[v["company_id"]] = self.now
        return rid

    def _rep_stage_move(self, tenant: Tenant, rep: str, deal_id: str) -> None:
        deal = tenant.alive(deal_id)
        if deal is None or deal.values["stage"] in (WON, LOST) or deal_id in tenant.busy:
            return
        stage = int(deal.values["stage"])
        if stage < OPEN_STAGES - 1:
            self._emit(
                tenant,
                Change(self.now, "update", "deal", [deal_id], tenant.actors[rep], {"stage": stage + 1}),
            )

    def _rep_close_deal(self, tenant: Tenant, rep: str) -> None:
        deal = self._pick_active_deal(tenant, rep)
        if deal is None:
            return
        outcome = WON if tenant.rng.random() < 0.45 else LOST
        self._emit(
            tenant, Change(self.now, "update", "deal", [deal.rid], tenant.actors[rep], {"stage": outcome})
        )

    def _rep_deal_edit(self, tenant: Tenant, rep: str) -> None:
        """Reps change their own amounts and close dates: commission inputs, legitimately."""
        rng = tenant.rng
        deal = self._pick_active_deal(tenant, rep)
        if deal is None:
            return
        if rng.random() < 0.5:
            new = {"amount": int(deal.values["amount"] * rng.choice((0.8, 0.9, 1.1, 1.25)) // 100 * 100)}
        else:
            new = {"closedate": int(deal.values["closedate"]) + rng.choice((-7, 7, 14, 30)) * DAY}
        self._emit(tenant, Change(self.now, "update", "deal", [deal.rid], tenant.actors[rep], new))

    def _rep_contact_edit(self, tenant: Tenant, rep: str) -> None:
        rng = tenant.rng
        rid = tenant.persons.choice(rng)
        rec = tenant.alive(rid)
        if rec is None or rec.rid in tenant.busy:
            return
        rid = rec.rid
        fieldname = rng.choice(("title", "phone", "city"))
        value = {
            "title": rng.choice(pools.TITLES),
            "phone": pools.phone_e164(rng),
            "city": rng.choice(pools.CITIES),
        }[fieldname]
        self._emit(tenant, Change(self.now, "update", rec.obj, [rid], tenant.actors[rep], {fieldname: value}))
        tenant.recent_human_edits.append((self.now, rid, rec.obj, fieldname, rep))

    def _rep_duplicate_contact(self, tenant: Tenant, rep: str) -> None:
        """Humans create duplicates too (not watched); intake-agent or ops merge them later."""
        rng = tenant.rng
        rid = tenant.persons.choice(rng)
        orig = tenant.alive(rid)
        if orig is None or not orig.values.get("email") or orig.rid in tenant.busy:
            return
        rid = orig.rid
        values = {k: orig.values[k] for k in ("first", "last", "company_name", "owner") if orig.values.get(k)}
        values["email"] = orig.values["email"]
        dup = tenant.new_id(orig.obj)
        self._emit(tenant, Change(self.now, "create", orig.obj, [dup], tenant.actors[rep], values))
        tenant.human_duplicates.append((dup, rid))

    def _support_ticket(self, tenant: Tenant, person: str, company_id: str | None) -> str | None:
        rng = tenant.rng
        cid = company_id or tenant.companies.choice(rng)
        company = tenant.alive(cid)
        if company is None:
            return None
        contacts = [c for c in tenant.company_contacts.get(company.rid, []) if tenant.alive(c)]
        contact = rng.choice(contacts) if contacts else None
        tenant.ticket_number += 1
        number = tenant.ticket_number
        values: dict[str, Any] = {
            "subject": f"Ticket #{number}: {rng.choice(pools.TICKET_SUBJECTS)}",
            "status": "new",
            "priority": rng.choice(("LOW", "MEDIUM", "HIGH")),
            "body": "Customer wrote to support@ about this.",
            "company_id": company.rid,
            "owner": person,
            "pipeline": "0",
            "kind": "support",
            "done": False,
            "date": self.now,
        }
        if contact:
            values["contact_id"] = contact
        rid = tenant.new_id("ticket")
        links = [("company", company.rid)] + ([("contact", contact)] if contact else [])
        self._emit(
            tenant, Change(self.now, "create", "ticket", [rid], tenant.actors[person], values, links=links)
        )
        self.at(
            next_business(self.now + rng.randrange(2 * HOUR, 30 * HOUR), rng),
            self._close_ticket,
            tenant,
            person,
            rid,
        )
        return rid

    def _close_ticket(self, tenant: Tenant, person: str, rid: str) -> None:
        if tenant.alive(rid):
            self._emit(
                tenant,
                Change(
                    self.now,
                    "update",
                    "ticket",
                    [rid],
                    tenant.actors[person],
                    {"status": "closed", "done": True},
                ),
            )

    def _ops_correction(self, tenant: Tenant, person: str) -> None:
        """Humans correcting humans: ops fixes a value a colleague entered earlier today."""
        rng = tenant.rng
        while tenant.recent_human_edits and tenant.recent_human_edits[0][0] < self.now - DAY:
            tenant.recent_human_edits.popleft()
        if not tenant.recent_human_edits:
            return
        t, rid, obj, fieldname, who = tenant.recent_human_edits[rng.randrange(len(tenant.recent_human_edits))]
        if who == person or tenant.alive(rid) is None or rid in tenant.busy:
            return
        value = {
            "title": rng.choice(pools.TITLES),
            "phone": pools.phone_e164(rng),
            "city": rng.choice(pools.CITIES),
        }[fieldname]
        self._emit(tenant, Change(self.now, "update", obj, [rid], tenant.actors[person], {fieldname: value}))
        self.truth.add_lookalike(
            Lookalike(
                "human_corrects_human",
                tenant.vendor,
                person,
                HUMAN,
                self.now,
                self.now,
                1,
                f"{fieldname} set by {who} {(self.now - t) // MINUTE} min earlier",
            )
        )

    def _ops_delete(self, tenant: Tenant, person: str) -> None:
        rng = tenant.rng
        if tenant.human_duplicates and rng.random() < 0.6:
            dup, orig = tenant.human_duplicates.popleft()
            if tenant.alive(dup) and tenant.alive(orig):
                obj = tenant.records[orig].obj
                self._emit(
                    tenant, Change(self.now, "merge", obj, [orig], tenant.actors[person], merged=[dup])
                )
            return
        rec = tenant.alive(tenant.persons.choice(rng))
        if rec is not None and rec.rid not in tenant.busy:
            self._emit(tenant, Change(self.now, "delete", rec.obj, [rec.rid], tenant.actors[person]))

    def _billing_sync(self, tenant: Tenant) -> None:
        rng = tenant.rng
        rec = tenant.alive(tenant.companies.choice(rng))
        if rec is None:
            return
        current = rec.values.get("billing_status")
        if current and rng.random() < 0.7:
            return
        value = rng.choice(("active", "trial", "past_due")) if not current else "active"
        if value != current:
            self._emit(
                tenant,
                Change(
                    self.now,
                    "update",
                    "company",
                    [rec.rid],
                    tenant.actors["billing-sync"],
                    {"billing_status": value},
                ),
            )
            tenant.integration_writes.append(self.now)

    # -- agents (benign) ----------------------------------------------------------------------

    def _enrich_one(self, tenant: Tenant) -> None:
        rng = tenant.rng
        agent = "enrich-agent"
        while tenant.enrich_queue:
            rid = tenant.enrich_queue[0]
            rec = tenant.alive(rid)
            if rec is None or rid in tenant.busy:
                tenant.enrich_queue.popleft()
                continue
            if not self._agent_ok(tenant, agent, rec.obj, rid, self.now):
                return
            tenant.enrich_queue.popleft()
            v = rec.values
            empty = [f for f in ("title", "industry", "city", "phone") if not v.get(f)]
            if rec.obj == "contact":
                empty = [f for f in empty if f != "industry"]
            new: dict[str, Any] = {}
            for f in empty[: rng.randrange(1, 4)]:
                new[f] = {
                    "title": rng.choice(pools.TITLES),
                    "industry": rng.choice(pools.INDUSTRIES),
                    "city": rng.choice(pools.CITIES),
                    "phone": pools.phone_e164(rng),
                }[f]
            if rec.obj == "person" and not v.get("utm_source") and rng.random() < 0.5:
                new["utm_source"] = rng.choice(("linkedin", "referral", "organic"))
            if new:
                self._emit(tenant, Change(self.now, "update", rec.obj, [rid], tenant.actors[agent], new))
            return

    def _intake_email(self, tenant: Tenant) -> None:
        """An inbound e-mail: a new contact, or an update of the person who wrote; sometimes a merge."""
        rng = tenant.rng
        agent = tenant.actors["intake-agent"]
        roll = rng.random()
        if roll < 0.15 and tenant.human_duplicates:
            dup, orig = tenant.human_duplicates.popleft()
            drec, orec = tenant.alive(dup), tenant.alive(orig)
            if drec and orec and self._agent_ok(tenant, "intake-agent", orec.obj, orig, self.now):
                self._emit(tenant, Change(self.now, "merge", orec.obj, [orig], agent, merged=[dup]))
                self.truth.add_lookalike(
                    Lookalike(
                        "agent_merge_not_duplicate",
                        tenant.vendor,
                        "intake-agent",
                        AGENT,
                        self.now,
                        self.now,
                        2,
                        "merged a duplicate a human created",
                    )
                )
            return
        if roll < 0.3:
            rec = tenant.alive(tenant.persons.choice(rng))
            if (
                rec is None
                or rec.rid in tenant.busy
                or not self._agent_ok(tenant, "intake-agent", rec.obj, rec.rid, self.now)
            ):
                return
            if not rec.values.get("phone"):
                self._emit(
                    tenant,
                    Change(self.now, "update", rec.obj, [rec.rid], agent, {"phone": pools.phone_e164(rng)}),
                )
            return
        rid = tenant.new_id("person")
        if not self._agent_ok(tenant, "intake-agent", "person", rid, self.now):
            return
        values = self._person_values(tenant, "email")
        for extra in ("title", "industry", "city"):  # enrichment is enrich-agent's job, not intake's
            values.pop(extra, None)
        self._emit(tenant, Change(self.now, "create", "person", [rid], agent, values))
        tenant.enrich_queue.append(rid)

    def _pipeline_move(self, tenant: Tenant, deal_id: str) -> None:
        """Benign: one stage forward after a rep's call or meeting on the deal."""
        deal = tenant.alive(deal_id)
        if deal is None or deal.values["stage"] in (WON, LOST) or deal_id in tenant.busy:
            return
        stage = int(deal.values["stage"])
        if stage >= OPEN_STAGES - 1 or not self._agent_ok(
            tenant, "pipeline-agent", "deal", deal_id, self.now
        ):
            return
        self._emit(
            tenant,
            Change(
                self.now, "update", "deal", [deal_id], tenant.actors["pipeline-agent"], {"stage": stage + 1}
            ),
        )
        self.truth.add_lookalike(
            Lookalike(
                "agent_stage_move_after_sales_activity",
                tenant.vendor,
                "pipeline-agent",
                AGENT,
                self.now,
                self.now,
                1,
                "one stage forward after a call or meeting",
            )
        )
        rng = tenant.rng
        if rng.random() < 0.04:  # reps occasionally disagree: benign overrides feed the baseline
            owner = deal.values["owner"]
            self.at(
                next_business(self.now + rng.randrange(HOUR, 8 * HOUR), rng),
                self._revert_stage,
                tenant,
                owner,
                deal_id,
                stage,
                None,
            )

    def _revert_stage(self, tenant: Tenant, rep: str, deal_id: str, stage: int, fault: Fault | None) -> None:
        deal = tenant.alive(deal_id)
        if deal is None or deal.values["stage"] in (WON, LOST):
            return
        before = deal.values["stage"]
        refs = self._emit(
            tenant,
            Change(self.now, "update", "deal", [deal_id], tenant.actors[rep], {"stage": stage}),
            want_ids=fault is not None,
        )
        if fault is not None:
            fault.reverts.append(
                FaultChange(
                    self.now,
                    deal_id,
                    object_type(tenant.vendor, "deal"),
                    "stage",
                    native_field(tenant.vendor, "deal", "stage"),
                    before,
                    stage,
                    event_ref(refs, deal_id, "stage"),
                )
            )
            tenant.busy.discard(deal_id)

    def _forecast_next_step(self, tenant: Tenant) -> None:
        rng = tenant.rng
        rec = tenant.alive(tenant.open_deals.choice(rng))
        if (
            rec is None
            or rec.rid in tenant.busy
            or not self._agent_ok(tenant, "forecast-agent", "deal", rec.rid, self.now)
        ):
            return
        step = rng.choice(
            (
                "Send proposal",
                "Book technical review",
                "Confirm budget",
                "Schedule exec sponsor call",
                "Follow up on security questionnaire",
                "Prepare renewal quote",
            )
        )
        if rec.values.get("next_step") != step:
            self._emit(
                tenant,
                Change(
                    self.now,
                    "update",
                    "deal",
                    [rec.rid],
                    tenant.actors["forecast-agent"],
                    {"next_step": step},
                ),
            )

    def _notes_agent(self, tenant: Tenant, deal_id: str) -> None:
        deal = tenant.alive(deal_id)
        if deal is None:
            return
        rid = tenant.new_id("note")
        if not self._agent_ok(tenant, "notes-agent", "note", rid, self.now):
            return
        v = deal.values
        owner = (
            v.get("owner") if tenant.vendor == "hubspot" else "notes-agent"
        )  # HubSpot: the deal owner's note
        values = {
            "subject": "Call notes",
            "body": "Summary: discussed requirements and next steps.",
            "deal_id": deal_id,
            "company_id": v.get("company_id"),
            "contact_id": v.get("contact_id"),
            "owner": owner,
            "date": self.now,
            "kind": "note",
        }
        values = {k: x for k, x in values.items() if x is not None}
        links = [("deal", deal_id)] + [
            (o, v[f]) for o, f in (("company", "company_id"), ("contact", "contact_id")) if v.get(f)
        ]
        self._emit(
            tenant,
            Change(self.now, "create", "note", [rid], tenant.actors["notes-agent"], values, links=links),
        )

    def _scoring_update(self, tenant: Tenant) -> None:
        rng = tenant.rng
        rec = tenant.alive(tenant.leads.choice(rng))
        if (
            rec is None
            or rec.rid in tenant.busy
            or not self._agent_ok(tenant, "scoring-agent", rec.obj, rec.rid, self.now)
        ):
            return
        self._emit(
            tenant,
            Change(
                self.now,
                "update",
                rec.obj,
                [rec.rid],
                tenant.actors["scoring-agent"],
                {"lead_status": next_status(rec.values.get("lead_status"), rng)},
            ),
        )

    def _hygiene_fix(self, tenant: Tenant) -> None:
        """Benign: capitalisation of titles typed in lower case (a reformat, not a new value)."""
        rng = tenant.rng
        rec = tenant.alive(tenant.lower_titles.choice(rng))
        if (
            rec is None
            or rec.rid in tenant.busy
            or not self._agent_ok(tenant, "hygiene-agent", rec.obj, rec.rid, self.now)
        ):
            return
        title = str(rec.values.get("title") or "")
        fixed = " ".join(
            w.upper() if w in ("vp", "cto", "cfo", "it") else w.capitalize() for w in title.split()
        )
        if fixed and fixed != title:
            self._emit(
                tenant,
                Change(
                    self.now, "update", rec.obj, [rec.rid], tenant.actors["hygiene-agent"], {"title": fixed}
                ),
            )

    # -- scripted look-alikes -----------------------------------------------------------------

    def _plan_lookalikes(self) -> None:
        """Imports and bulk edits every week (and on the first afternoon in short scenarios)."""
        days = int(math.ceil(self.cfg.days))
        for index, tenant in enumerate(self.tenants.values()):
            rng = tenant.rng
            short = days < 7  # short scenarios get one of each on fixed days instead of weekly ones
            for d in range(days):
                day0 = self.start + d * DAY
                wd = weekday(day0)
                if (short and d == 0) or (not short and wd == 1):
                    self.at(day0 + (15 + index) * HOUR + rng.randrange(HOUR), self._import_list, tenant)
                if (short and d == 0) or (not short and wd == 3):
                    self.at(day0 + (18 + index) * HOUR + rng.randrange(HOUR), self._bulk_campaign, tenant)
                if (short and d == 2) or (not short and wd == 4):
                    self.at(day0 + 16 * HOUR + rng.randrange(2 * HOUR), self._bulk_owner, tenant)

    def _import_list(self, tenant: Tenant) -> None:
        """A marketer imports an event list: mostly new leads, some updates of existing ones."""
        rng = tenant.rng
        marketer = rng.choice(self.roster.marketers)
        tenant.counters["import"] = tenant.counters.get("import", 0) + 1
        actor = import_actor(tenant.vendor, tenant.actors[marketer], 900_100 + tenant.counters["import"])
        size = max(25, int(rng.randrange(150, 300) * self.cfg.scale))
        t = self.now
        campaign = rng.choice(pools.CAMPAIGNS)
        queued_before = len(tenant.enrich_queue)
        updated = 0
        for _ in range(size):
            t += rng.randrange(50, 400)
            existing = tenant.alive(tenant.marketing.choice(rng)) if tenant.vendor != "pipedrive" else None
            if existing is not None and rng.random() < 0.3 and existing.rid not in tenant.busy:
                self.at(
                    t,
                    self._emit_later,
                    tenant,
                    Change(
                        t,
                        "update",
                        existing.obj,
                        [existing.rid],
                        actor,
                        {"utm_campaign": campaign, "lifecycle": "marketingqualifiedlead"},
                    ),
                )
                updated += 1
            else:
                self.at(t, self._import_row, tenant, actor)
        self.truth.add_lookalike(
            Lookalike(
                "human_import",
                tenant.vendor,
                marketer,
                actor.kind,
                self.now,
                t,
                size,
                f"{size} rows, {updated} updates of existing leads (campaign, lifecycle)",
            )
        )
        self.at(t + 10 * MINUTE, self._note_enrich_backlog, tenant, queued_before, t)

    def _import_row(self, tenant: Tenant, actor: Actor) -> None:
        self._new_person(tenant, self.now, actor, source="import")

    def _emit_later(self, tenant: Tenant, ch: Change) -> None:
        if all(tenant.alive(r) for r in ch.rids):
            ch.at = self.now
            self._emit(tenant, ch)

    def _note_enrich_backlog(self, tenant: Tenant, before: int, t: int) -> None:
        backlog = len(tenant.enrich_queue)
        hours = max(1.0, backlog / (AGENT_SELF_LIMIT / max(1, len(self.tenants))))
        self.truth.add_lookalike(
            Lookalike(
                "agent_fill_near_cap",
                tenant.vendor,
                "enrich-agent",
                AGENT,
                t,
                t + int(hours * HOUR),
                backlog,
                f"fills empty fields of {backlog} new records at up to "
                f"{AGENT_SELF_LIMIT} distinct records an hour (cap {AGENT_CAP})",
            )
        )

    def _bulk_campaign(self, tenant: Tenant) -> None:
        """A marketer re-tags a segment's campaign in one bulk edit (overwrites a high-tier field)."""
        rng = tenant.rng
        marketer = rng.choice(self.roster.marketers)
        actor = bulk_actor(tenant.vendor, tenant.actors[marketer])
        picked: list[str] = []
        for _ in range(max(20, int(rng.randrange(40, 100) * self.cfg.scale))):
            rid = tenant.marketing.choice(rng)
            if rid and rid not in picked and rid not in tenant.busy:
                picked.append(rid)
        if not picked:
            return
        campaign = rng.choice(pools.CAMPAIGNS) + "_retag"
        self._emit(
            tenant, Change(self.now, "update", "person", picked, actor, {"utm_campaign": campaign}, bulk=True)
        )
        self.truth.add_lookalike(
            Lookalike(
                "human_bulk_edit",
                tenant.vendor,
                marketer,
                HUMAN,
                self.now,
                self.now,
                len(picked),
                "utm_campaign re-tagged in one bulk edit",
            )
        )

    def _bulk_owner(self, tenant: Tenant) -> None:
        """Ops reassigns a departing rep's open deals in one bulk edit (owner: a commission input)."""
        rng = tenant.rng
        ops = rng.choice(self.roster.ops)
        actor = bulk_actor(tenant.vendor, tenant.actors[ops])
        new_owner = rng.choice(self.roster.reps)
        picked = [
            d
            for d in tenant.open_deals.items[:]
            if tenant.alive(d) and d not in tenant.busy and tenant.records[d].values.get("owner") != new_owner
        ]
        rng.shuffle(picked)
        picked = picked[: max(8, int(20 * self.cfg.scale))]
        if not picked:
            return
        self._emit(tenant, Change(self.now, "update", "deal", picked, actor, {"owner": new_owner}, bulk=True))
        self.truth.add_lookalike(
            Lookalike(
                "human_bulk_edit",
                tenant.vendor,
                ops,
                HUMAN,
                self.now,
                self.now,
                len(picked),
                "deal owner reassigned in one bulk edit",
            )
        )


def next_status(current: Any, rng: random.Random) -> str:
    """The lead status after `current` in the team's flow (sometimes straight to UNQUALIFIED)."""
    if current in LEAD_STATUS_FLOW:
        i = LEAD_STATUS_FLOW.index(current)
        if i + 1 < len(LEAD_STATUS_FLOW):
            return LEAD_STATUS_FLOW[i + 1] if rng.random() < 0.85 else "UNQUALIFIED"
        return "UNQUALIFIED"
    return "OPEN"


def event_ref(refs: list[tuple[str, str | None, str]], rid: str, fieldname: str | None) -> str | None:
    """The canonical event id of one record's field change among a writer's references."""
    for r, f, eid in refs:
        if r == rid and f == fieldname:
            return eid
    for r, _, eid in refs:
        if r == rid:
            return eid
    return None
