"""The simulated world: time helpers, the team and its identities per vendor, and one CRM per vendor.

`Tenant` is one vendor's CRM: the current canonical values of every record, pools to pick targets
from (`Bag`: O(1) add/remove/choice), and the writer its changes go to. `Window` counts an agent's
distinct records in a rolling hour exactly as detectors/velocity_cap.py does, so agents can keep
under their cap and the truth can say which burst changes exceeded it. Event time only.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from app.scenario import pools
from app.scenario.model import (
    AGENT,
    AUTOMATION,
    HUMAN,
    IMPORT,
    INTEGRATION,
    LOST,
    UNKNOWN,
    WON,
    Actor,
    Change,
    Record,
)
from app.scenario.vendors import SALESFORCE_OBJECT, SALESFORCE_PREFIX, Writer

if TYPE_CHECKING:
    from app.scenario.generator import Simulation

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
DEFAULT_START = 1_740_960_000_000  # 2025-03-03T00:00:00Z, a Monday
AGENT_CAP = 50
AGENT_SELF_LIMIT = 46
BUSINESS_START_H = 13  # 09:00 in the tenants' time zone (UTC-4); business hours 13:00-22:00 UTC
BUSINESS_END_H = 22

AGENTS = (
    "enrich-agent",
    "intake-agent",
    "pipeline-agent",
    "forecast-agent",
    "notes-agent",
    "scoring-agent",
    "hygiene-agent",
)
AGENT_CLIENTS = {
    "enrich-agent": "EnrichBot",
    "intake-agent": "IntakeAgent",
    "pipeline-agent": "PipelinePilot",
    "forecast-agent": "ForecastAI",
    "notes-agent": "NoteTaker",
    "scoring-agent": "LeadScorer",
    "hygiene-agent": "DataHygiene",
}
FAULT_AGENT = {
    "slow_drip_overwrite": "enrich-agent",
    "duplicate_creation": "intake-agent",
    "wrong_stage_after_support": "pipeline-agent",
    "commission_field_write": "forecast-agent",
    "velocity_burst": "scoring-agent",
    "unknown_integration": None,
    "silent_blanking": "hygiene-agent",
}
LEAD_STATUS_FLOW = ("NEW", "OPEN", "IN_PROGRESS", "ATTEMPTED_TO_CONTACT", "CONNECTED")


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def hour_of(t: int) -> int:
    return (t // HOUR) % 24


def weekday(t: int) -> int:
    return datetime.fromtimestamp(t / 1000, UTC).weekday()


def is_business(t: int) -> bool:
    """Weekday, 13:00-22:00 UTC (09:00-18:00 in the tenants' time zone)."""
    return weekday(t) < 5 and BUSINESS_START_H <= hour_of(t) < BUSINESS_END_H


def next_business(t: int, rng: random.Random | None = None) -> int:
    """`t` if it is in business hours, else a time shortly after the next opening."""
    if is_business(t):
        return t
    day_start = t - t % DAY
    candidate = day_start + BUSINESS_START_H * HOUR
    if candidate <= t:
        candidate += DAY
    while weekday(candidate) >= 5:
        candidate += DAY
    return candidate + (rng.randrange(45 * MINUTE) if rng else 0)


class Bag:
    """A set with O(1) add, remove and random choice (swap-remove over a list)."""

    __slots__ = ("items", "index")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, item: str) -> None:
        if item not in self.index:
            self.index[item] = len(self.items)
            self.items.append(item)

    def discard(self, item: str) -> None:
        pos = self.index.pop(item, None)
        if pos is None:
            return
        last = self.items.pop()
        if pos < len(self.items):
            self.items[pos] = last
            self.index[last] = pos

    def choice(self, rng: random.Random) -> str | None:
        return self.items[rng.randrange(len(self.items))] if self.items else None

    def __contains__(self, item: str) -> bool:
        return item in self.index

    def __len__(self) -> int:
        return len(self.items)


class Window:
    """Distinct records an agent touched in the rolling hour, exactly as velocity_cap counts them."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: OrderedDict[str, int] = OrderedDict()

    def _expire(self, now: int) -> None:
        seen = self.seen
        while seen:
            key = next(iter(seen))
            if seen[key] > now - HOUR:
                return
            del seen[key]

    def count(self, now: int) -> int:
        self._expire(now)
        return len(self.seen)

    def allows(self, key: str, now: int, limit: int) -> bool:
        self._expire(now)
        return key in self.seen or len(self.seen) < limit

    def touch(self, key: str, now: int) -> int:
        """Record a touch; returns the distinct count including it."""
        self._expire(now)
        seen = self.seen
        if key in seen:
            if seen[key] > now:
                return len(seen)
            del seen[key]
        seen[key] = now
        return len(seen)


_OBJECT_TYPES = {
    "hubspot": {
        "person": "contact",
        "contact": "contact",
        "company": "company",
        "deal": "deal",
        "ticket": "ticket",
        "activity": "activity",
        "note": "activity",
    },
    "salesforce": {
        "person": "lead",
        "contact": "contact",
        "company": "company",
        "deal": "deal",
        "ticket": "ticket",
        "activity": "activity",
        "note": "activity",
    },
    "pipedrive": {
        "person": "contact",
        "contact": "contact",
        "company": "company",
        "deal": "deal",
        "ticket": "activity",
        "activity": "activity",
        "note": "activity",
    },
}


def object_type(vendor: str, obj: str) -> str:
    """The canonical ObjectType value the adapters give a simulated object."""
    return _OBJECT_TYPES[vendor][obj]


@dataclass
class Roster:
    """The people and systems of the simulated company (names are the truth file's actor names)."""

    reps: list[str]
    marketers: list[str]
    support: list[str]
    ops: list[str]

    @classmethod
    def for_scale(cls, scale: float) -> Roster:
        def n(base: int) -> int:
            return max(1, int(round(base * max(scale, 0.34))))

        return cls(
            reps=[f"rep{i + 1}" for i in range(max(2, n(6)))],
            marketers=[f"marketer{i + 1}" for i in range(n(2))],
            support=[f"support{i + 1}" for i in range(n(2))],
            ops=[f"ops{i + 1}" for i in range(n(1))],
        )

    @property
    def humans(self) -> list[str]:
        return self.reps + self.marketers + self.support + self.ops


def build_actors(vendor: str, roster: Roster) -> dict[str, Actor]:
    """Every actor's identity in one vendor. Agents are integration users with their own client ids."""
    actors: dict[str, Actor] = {}
    for i, name in enumerate(roster.humans):
        role = name.rstrip("0123456789")
        if vendor == "hubspot":
            actors[name] = Actor(name, HUMAN, role, vendor, "CRM_UI", user_id=str(7_100_000 + i * 17))
        elif vendor == "salesforce":
            actors[name] = Actor(
                name,
                HUMAN,
                role,
                vendor,
                "com/salesforce/api/soap/58.0;client=SfdcInternalAPI/",
                user_id=pools.salesforce_id("005", 100 + i),
            )
        else:
            actors[name] = Actor(name, HUMAN, role, vendor, "app", user_id=str(12_415_231 + i * 13))
    for a, name in enumerate(AGENTS):
        client = AGENT_CLIENTS[name]
        if vendor == "hubspot":
            actors[name] = Actor(name, AGENT, name, vendor, "INTEGRATION", app_id=str(1_850_301 + a))
        elif vendor == "salesforce":
            actors[name] = Actor(
                name,
                AGENT,
                name,
                vendor,
                f"com/salesforce/api/rest/58.0;client={client}",
                user_id=pools.salesforce_id("005", 9101 + a),
            )
        else:
            actors[name] = Actor(name, AGENT, name, vendor, "api", user_id=str(13_000_101 + a))
    if vendor == "hubspot":
        actors["workflows"] = Actor(
            "workflows", AUTOMATION, "workflows", vendor, "WORKFLOWS", app_id="31415926"
        )
        actors["forms"] = Actor(
            "forms", AUTOMATION, "forms", vendor, "FORM", app_id="5b3a8e21-4c1f-4d2e-9a77-0f3c5d1e2b6a"
        )
        actors["billing-sync"] = Actor(
            "billing-sync", INTEGRATION, "integration", vendor, "INTEGRATION", app_id="41235"
        )
        actors["unknown-sync"] = Actor(
            "unknown-sync", UNKNOWN, "unknown", vendor, "INTEGRATION", app_id="7700123"
        )
    elif vendor == "salesforce":
        actors["workflows"] = Actor(
            "workflows", AUTOMATION, "workflows", vendor, "", user_id=pools.salesforce_id("005", 9001)
        )
        actors["forms"] = Actor(
            "forms", AUTOMATION, "forms", vendor, "", user_id=pools.salesforce_id("005", 9002)
        )
        actors["billing-sync"] = Actor(
            "billing-sync",
            INTEGRATION,
            "integration",
            vendor,
            "com/salesforce/api/rest/58.0;client=StripeConnector",
            user_id=pools.salesforce_id("005", 9003),
        )
        actors["unknown-sync"] = Actor(
            "unknown-sync",
            UNKNOWN,
            "unknown",
            vendor,
            "com/salesforce/api/rest/58.0;client=LeadSyncPro",
            user_id=pools.salesforce_id("005", 9201),
        )
    else:
        actors["workflows"] = Actor("workflows", AUTOMATION, "workflows", vendor, "app", user_id="13000000")
        actors["forms"] = Actor("forms", AUTOMATION, "forms", vendor, "app", user_id="13000001")
        actors["billing-sync"] = Actor(
            "billing-sync", INTEGRATION, "integration", vendor, "api", user_id="13000002"
        )
        # A sales rep's personal API token, used by a tool nobody registered: user_id of a human, source api.
        rep = actors[roster.reps[min(2, len(roster.reps) - 1)]]
        actors["unknown-sync"] = Actor("unknown-sync", UNKNOWN, "unknown", vendor, "api", user_id=rep.user_id)
    return actors


def import_actor(vendor: str, human: Actor, import_id: int) -> Actor:
    """The identity of a list import run by a human."""
    if vendor == "hubspot":
        return Actor(f"{human.name}-import", IMPORT, "import", vendor, "IMPORT", app_id=str(import_id))
    if vendor == "salesforce":
        return Actor(
            f"{human.name}-import",
            IMPORT,
            "import",
            vendor,
            "com/salesforce/api/soap/58.0;client=DataLoaderBulkUI/",
            user_id=human.user_id,
        )
    return replace(human, name=f"{human.name}-import")


def bulk_actor(vendor: str, human: Actor) -> Actor:
    """The identity of a human's bulk edit (HubSpot reports it as CRM_UI_BULK_ACTION)."""
    if vendor == "hubspot":
        return replace(human, change_source="CRM_UI_BULK_ACTION")
    return human


class Tenant:
    """One vendor's CRM: records, pools for picking targets, and the writer its changes go to."""

    def __init__(
        self, sim: Simulation, vendor: str, writer: Writer, actors: dict[str, Actor], rng: random.Random
    ) -> None:
        self.sim = sim
        self.vendor = vendor
        self.writer = writer
        self.actors = actors
        self.rng = rng
        self.records: dict[str, Record] = {}
        self.counters: dict[str, int] = {}
        self.persons = Bag()  # persons and contacts (anyone with an e-mail)
        self.leads = Bag()  # persons that came in as leads (forms, imports, inbound e-mail)
        self.marketing = Bag()  # persons with a UTM source from a form or an import
        self.titled = Bag()  # records with a non-empty title
        self.lower_titles = Bag()  # titles typed in lower case (hygiene-agent fixes them)
        self.companies = Bag()
        self.open_deals = Bag()
        self.active_deals: dict[str, Bag] = {}
        self.stale_deals = Bag()
        self.open_tickets = Bag()
        self.company_contacts: dict[str, list[str]] = {}
        self.last_sales: dict[str, int] = {}
        self.enrich_queue: deque[str] = deque()
        self.recent_human_edits: deque[tuple[int, str, str, str, str]] = deque(maxlen=400)
        self.human_duplicates: deque[tuple[str, str]] = deque(maxlen=200)
        self.busy: set[str] = set()  # records a running fault owns (benign actors leave them alone)
        self.ticket_number = 10_000
        self.integration_writes: list[int] = []
        self.events = 0

    # -- ids --------------------------------------------------------------------------------

    def new_id(self, obj: str) -> str:
        v = self.vendor
        if v == "hubspot":
            space = {
                "person": "contact",
                "contact": "contact",
                "activity": "engagement",
                "note": "engagement",
            }.get(obj, obj)
            base = {
                "contact": 60_000_000_000,
                "company": 21_000_000_000,
                "deal": 18_000_000_000,
                "ticket": 2_800_000_000,
                "engagement": 47_000_000_000,
            }[space]
        elif v == "salesforce":
            space = SALESFORCE_OBJECT[obj]
            base = 1000
        else:
            space = {"person": "person", "contact": "person", "company": "org", "ticket": "activity"}.get(
                obj, obj
            )
            # Pipedrive numbers each entity on its own; disjoint ranges keep one record map simple
            base = {
                "org": 1_000,
                "deal": 100_000,
                "person": 1_000_000,
                "activity": 5_000_000,
                "note": 9_000_000,
            }[space]
        n = self.counters.get(space, 0) + 1
        self.counters[space] = n
        if v == "salesforce":
            return pools.salesforce_id(SALESFORCE_PREFIX[space], base + n)
        if v == "hubspot":  # HubSpot ids grow with gaps (other portals share the sequence)
            return str(base + n * 3 + (n * 7919) % 3)
        return str(base + n)

    def key(self, obj: str, rid: str) -> str:
        return f"{self.vendor}/{object_type(self.vendor, obj)}/{rid}"

    # -- applying changes ---------------------------------------------------------------------

    def emit(self, ch: Change, want_ids: bool = False) -> list[tuple[str, str | None, str]]:
        """Apply a change to the records and write its payloads; returns event ids when asked."""
        recs: list[Record] = []
        if ch.op == "create":
            for rid in ch.rids:
                rec = Record(ch.obj, rid, dict(ch.new), ch.at, ch.actor.name)
                self.records[rid] = rec
                recs.append(rec)
                self._index(rec)
        else:
            kept: list[str] = []
            for rid in ch.rids:
                held = self.records.get(rid)
                if held is None or held.deleted:
                    continue
                rec = held
                if ch.op == "update":
                    old = {f: rec.values.get(f) for f in ch.new}
                    if all(old[f] == ch.new[f] for f in ch.new):
                        continue  # vendors send nothing for a save that changes nothing
                    ch.old[rid] = old
                    rec.values.update(ch.new)
                    self._reindex(rec, ch)
                recs.append(rec)
                kept.append(rid)
            ch.rids = kept
        if not recs:
            return []
        refs = self.writer.emit(ch, recs, want_ids)
        for rec in recs:
            rec.last_actor = ch.actor.name
        if ch.op == "delete":
            for rec in recs:
                self._drop(rec)
        elif ch.op == "merge":
            for loser in ch.merged:
                gone = self.records.get(loser)
                if gone is not None:
                    self._drop(gone)
        if ch.actor.kind == AGENT:
            touched = [ch.rids[0]] if ch.op != "merge" else ch.rids + ch.merged
            for rid in touched:
                self.sim.window(ch.actor.name).touch(self.key(ch.obj, rid), ch.at)
        return refs

    def _index(self, rec: Record) -> None:
        v = rec.values
        if rec.obj in ("person", "contact"):
            self.persons.add(rec.rid)
            if rec.obj == "person":
                self.leads.add(rec.rid)
            if rec.obj == "person" and v.get("utm_source") and v.get("utm_source") != "enriched":
                self.marketing.add(rec.rid)
            if v.get("title"):
                self.titled.add(rec.rid)
                if str(v["title"]).islower():
                    self.lower_titles.add(rec.rid)
            if v.get("company_id"):
                self.company_contacts.setdefault(v["company_id"], []).append(rec.rid)
        elif rec.obj == "company":
            self.companies.add(rec.rid)
        elif rec.obj == "deal" and v.get("stage") not in (WON, LOST):
            self.open_deals.add(rec.rid)
        elif rec.obj == "ticket":
            self.open_tickets.add(rec.rid)

    def _reindex(self, rec: Record, ch: Change) -> None:
        v = rec.values
        if rec.obj in ("person", "contact"):
            if "utm_source" in ch.new and rec.obj == "person":
                if v.get("utm_source") and v["utm_source"] != "enriched":
                    self.marketing.add(rec.rid)
                else:
                    self.marketing.discard(rec.rid)
            if "title" in ch.new:
                if v.get("title"):
                    self.titled.add(rec.rid)
                else:
                    self.titled.discard(rec.rid)
                if v.get("title") and str(v["title"]).islower():
                    self.lower_titles.add(rec.rid)
                else:
                    self.lower_titles.discard(rec.rid)
        elif rec.obj == "deal" and "stage" in ch.new:
            if v["stage"] in (WON, LOST):
                self._close_deal(rec.rid)
            else:
                self.open_deals.add(rec.rid)
        elif rec.obj == "ticket" and v.get("status") == "closed":
            self.open_tickets.discard(rec.rid)

    def _close_deal(self, rid: str) -> None:
        self.open_deals.discard(rid)
        self.stale_deals.discard(rid)
        for bag in self.active_deals.values():
            bag.discard(rid)

    def _drop(self, rec: Record) -> None:
        rec.deleted = True
        for bag in (
            self.persons,
            self.leads,
            self.marketing,
            self.titled,
            self.lower_titles,
            self.companies,
            self.open_tickets,
        ):
            bag.discard(rec.rid)
        if rec.obj == "deal":
            self._close_deal(rec.rid)

    def alive(self, rid: str | None) -> Record | None:
        if rid is None:
            return None
        rec = self.records.get(rid)
        return rec if rec is not None and not rec.deleted else None
