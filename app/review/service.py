"""The review service: the gate, the review queue, trust calibration and feedback, tied together.

    proposal ─► submit ─► gate (detectors/gate.py)
                           ├─ act    ─► crm.approved (decision "auto")
                           ├─ review ─► pending ─► approve / modify ─► crm.approved ─► trust ─► guard.feedback
                           │                      reject            ─────────────────► trust ─► guard.feedback
                           │                      (expiry: expired, or implicit approval) ───► guard.feedback
                           └─ reject ─► recorded ─────────────────────────────────────────────► guard.feedback
    override finding ─► on_override ─► trust ─► guard.feedback (override signal, autonomy moves)

Every state change is first written to guard.decisions (see store.py), then its effects are
produced, then the record is marked done; `start()` redoes the effects of records left undone by a
crash, so effects are at least once (crm.approved consumers dedup by proposal_id). Decisions are
serialized by one lock: a proposal is decided once (the second decision gets AlreadyDecided).
Several workers share guard.decisions and each follows it (store.py), so any worker's API and
page show every proposal and decision. Two workers deciding the same proposal in the same
fraction of a second both find it pending and both write; the first decision in the log is the
one that counts on every worker, and the other worker answers AlreadyDecided having produced no
effect (`_save_decision`); two sweepers expiring one proposal do the same. Trust moved on two
workers at once keeps both outcomes: the second write is merged into the first (`_save_trust`).

Messages (all JSON, keyed by agent):
* crm.approved: {"proposal_id", "agent", "change", "decision": auto|approved|modified|implicit,
  "decided_at", "reason", "tier"}
* guard.feedback: {"type": "review", "decision", "proposal_id", "agent", "record_key", "kind", "tier",
  "fields": [{"field", "agent_value", "human_value"}], "reason", "reason_category", "trust", "at"};
  {"type": "override", "agent", "record_key", "field", "agent_value", "human_value",
  "reason_category": "override", "override_kind": revert|correct, "delay_ms", "tier", "trust", "event_id",
  "at"}; {"type": "autonomy", ...} from
  detectors/trust.py. Who decided is stored in guard.decisions, never sent to agents (it may be an
  e-mail address).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from app.config import Settings
from app.review.models import REJECT_CATEGORIES, ReviewFilter, ReviewRecord, ReviewStatus
from app.review.store import DecisionLog, ReviewStore, encode_record, encode_trust, same_decision
from app.runtime.kafka_client import client_kwargs, make_producer
from detectors.base import Finding
from detectors.events import ChangeEvent, FieldChange
from detectors.gate import Proposal, decide
from detectors.policy import Autonomy, Policy, Tier
from detectors.trust import LEVELS, TrustModel

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
TRUST_MERGE_ROUNDS = 3
"""Writes of one trust update at most, when other workers keep writing the same agent's trust."""
DECISION_CONFIRM_S = 10.0
"""How long a decision waits for this worker's follower to read it back (ReviewService._save_decision)."""


class ReviewError(Exception):
    """A request the service refuses; `status` is the HTTP status the API answers with."""

    status = 400


class BadRequest(ReviewError):
    status = 400


class NotFound(ReviewError):
    status = 404


class AlreadyDecided(ReviewError):
    status = 409


class Unknown:
    """The sentinel a `current_value` callback returns when the guard never saw the field."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()

CurrentValue = Callable[[str, str], Any]
"""(record_key, field) -> last known value, UNKNOWN (or raises KeyError); may return an awaitable."""
VelocityCounts = Callable[[str, int], Mapping[str, int]]
"""(agent, event time ms) -> the agent's distinct-record count per cap name in the current window."""


class ReviewMetrics:
    """The service's metrics on a given registry. Agent labels: policy agents, else `other`."""

    def __init__(self, registry: CollectorRegistry, agents: list[str], trust_gauge: Gauge | None) -> None:
        self.agents = set(agents)
        self.backlog = Gauge("crm_guard_review_backlog", "Proposals waiting for a human decision",
                             ["agent"], registry=registry)
        self.decisions = Counter("crm_guard_review_decisions", "Proposal outcomes (gate and humans)",
                                 ["agent", "outcome"], registry=registry)
        self.autonomy = Gauge("crm_guard_agent_autonomy_level",
                              "Autonomy in force per agent and tier: 0 observe, 1 propose, 2 act",
                              ["agent", "tier"], registry=registry)
        self.trust = trust_gauge

    def label(self, agent: str) -> str:
        return agent if agent in self.agents else "other"


class ReviewService:
    """See the module docstring. Create, `await start()`, use, `await stop()`."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        *,
        producer: AIOKafkaProducer | None = None,
        registry: CollectorRegistry | None = None,
        current_value: CurrentValue | None = None,
        velocity_counts: VelocityCounts | None = None,
        paused_reason: Callable[[str], str | None] | None = None,
        expire_after_ms: int | None = None,
        implicit_approval: bool = False,
        keep_decided_ms: int = 90 * DAY_MS,
        publish_override_feedback: bool = True,
        trust_gauge: Gauge | None = None,
        idempotent: bool = False,
        sweep_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.topics = settings.topics
        self.producer = producer
        self._own_producer = producer is None
        self.idempotent = idempotent
        self.current_value = current_value
        self.velocity_counts = velocity_counts
        self.paused_reason = paused_reason  # agent -> why it is paused, None when it is not
        self.expire_after_ms = expire_after_ms
        self.implicit_approval = implicit_approval
        self.keep_decided_ms = keep_decided_ms
        self.publish_override_feedback = publish_override_feedback
        self.sweep_interval_s = sweep_interval_s
        self.clock = clock
        self.model = TrustModel(policy.detectors.trust)
        self.store = ReviewStore()
        self.metrics = ReviewMetrics(registry or CollectorRegistry(), list(policy.agents), trust_gauge)
        self.log: DecisionLog | None = None
        self.started = asyncio.Event()
        self._lock = asyncio.Lock()
        self._findings: asyncio.Queue[Finding | dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the store from guard.decisions, finish undone effects, start the sweeper."""
        kwargs = client_kwargs(self.settings)
        if self.producer is None:
            self.producer = make_producer(self.settings, self.idempotent)
            await self.producer.start()
        self.log = DecisionLog(self.settings.bootstrap_servers, self.topics.decisions, self.producer, kwargs)
        await self.log.ensure_topic(self.settings.replication_factor)
        await self.log.rebuild(self.store)
        for record in self.store.undone():
            await self._finish(record)
        self._refresh_metrics()
        self._tasks = [asyncio.create_task(self._sweep_loop()), asyncio.create_task(self._finding_loop()),
                       asyncio.create_task(self.log.follow(self.store, self._refresh_metrics))]
        self.started.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        self._tasks = []
        if self._own_producer and self.producer is not None:
            await self.producer.stop()
            self.producer = None
        self.started.clear()

    @property
    def trust_state(self) -> dict[str, Any]:
        """Trust entries by agent (detectors/trust.py); share with AutonomyBreachDetector."""
        return self.store.trust

    # ---- proposals ----------------------------------------------------------------------------

    async def submit(self, raw: Proposal | Mapping[str, Any] | bytes) -> ReviewRecord:
        """Run the gate on a proposal and record the outcome; a known proposal_id is a no-op."""
        proposal = parse_proposal(raw)
        async with self._lock:
            existing = self.store.get(proposal.proposal_id)
            if existing is not None:
                return existing
            counts = None
            if self.velocity_counts is not None:
                counts = self.velocity_counts(proposal.agent, proposal.proposed_at)
            paused = self.paused_reason(proposal.agent) if self.paused_reason is not None else None
            decision = decide(proposal, self.policy, self.store.trust, velocity_counts=counts,
                              settings=self.policy.detectors.trust, paused=paused)
            now = self._now()
            record = ReviewRecord(proposal=proposal, kind=proposal.kind, tier=decision.tier,
                                  gate=decision.to_dict(), received_at=now, done=False)
            if decision.action == "act":
                record = record.model_copy(update={
                    "status": ReviewStatus.APPROVED, "via": "gate", "decided_by": "gate", "decided_at": now,
                    "decision_reason": decision.reason,
                    "applied_change": proposal.change.model_dump(mode="json")})
            elif decision.action == "reject":
                record = record.model_copy(update={
                    "status": ReviewStatus.REJECTED, "via": "gate", "decided_by": "gate", "decided_at": now,
                    "decision_reason": decision.reason, "category": _gate_category(decision.violations)})
            else:
                record = record.model_copy(update={"done": True})
            await self._save(record)
            self.metrics.decisions.labels(self.metrics.label(proposal.agent), decision.action).inc()
            if not record.done:
                await self._finish(record)
            self._refresh_backlog()
            return self.store.get(proposal.proposal_id) or record

    async def approve(
        self, proposal_id: str, by: str, reason: str = "", *,
        set_values: Mapping[str, Any] | None = None,
        modified_change: ChangeEvent | Mapping[str, Any] | None = None,
    ) -> ReviewRecord:
        """Approve a pending proposal, optionally with changed values (then it is `modified`)."""
        async with self._lock:
            return await self._decide_human(proposal_id, by, reason, "approve", set_values=set_values,
                                            modified_change=modified_change)

    async def modify(self, proposal_id: str, by: str, reason: str, set_values: Mapping[str, Any]) -> ReviewRecord:
        """Approve with changed values: `set_values` maps proposed fields to the values to write."""
        if not set_values:
            raise BadRequest("modify needs at least one field=value")
        return await self.approve(proposal_id, by, reason, set_values=set_values)

    async def reject(self, proposal_id: str, by: str, reason: str, category: str = "other") -> ReviewRecord:
        """Reject a pending proposal; a reason is required (the agent learns from it)."""
        async with self._lock:
            return await self._decide_human(proposal_id, by, reason, "reject", category=category)

    async def batch_approve(
        self, by: str, reason: str = "", flt: ReviewFilter | None = None, ids: list[str] | None = None
    ) -> dict[str, Any]:
        """Approve every pending proposal matching the filter (and among `ids` when given)."""
        flt = flt or ReviewFilter()
        if flt.is_empty() and not ids:
            raise BadRequest("batch approval needs a filter (agent, kind, field or tier) or a list of ids")
        _require_by(by)
        approved: list[str] = []
        skipped: list[dict[str, str]] = []
        async with self._lock:
            if ids:
                targets = []
                for pid in dict.fromkeys(ids):
                    record = self.store.get(pid)
                    if record is None:
                        skipped.append({"proposal_id": pid, "reason": "not found"})
                    elif not record.pending:
                        skipped.append({"proposal_id": pid, "reason": f"already {record.status.value}"})
                    elif not flt.matches(record):
                        skipped.append({"proposal_id": pid, "reason": "does not match the filter"})
                    else:
                        targets.append(pid)
            else:
                targets = [r.proposal_id for r in self.store.pending(flt)]
            for pid in targets:
                try:
                    await self._decide_human(pid, by, reason, "approve")
                except AlreadyDecided as exc:  # decided on another worker meanwhile
                    skipped.append({"proposal_id": pid, "reason": str(exc)})
                    continue
                approved.append(pid)
        return {"approved": approved, "skipped": skipped}

    async def _decide_human(
        self, proposal_id: str, by: str, reason: str, action: str, *,
        set_values: Mapping[str, Any] | None = None,
        modified_change: ChangeEvent | Mapping[str, Any] | None = None,
        category: str = "other",
    ) -> ReviewRecord:
        record = self.store.get(proposal_id)
        if record is None:
            raise NotFound(f"no proposal {proposal_id}")
        if not record.pending:
            raise AlreadyDecided(f"proposal {proposal_id} is already {record.status.value}"
                                 f" (by {record.decided_by})")
        by = _require_by(by)
        reason = (reason or "").strip()
        now = self._now()
        update: dict[str, Any] = {"via": "human", "decided_by": by, "decided_at": now,
                                  "decision_reason": reason, "done": False}
        if action == "reject":
            if not reason:
                raise BadRequest("a rejection needs a reason")
            if category not in REJECT_CATEGORIES:
                raise BadRequest(f"category must be one of {', '.join(REJECT_CATEGORIES)}")
            update.update(status=ReviewStatus.REJECTED, category=category)
        else:
            change = _modified(record.proposal.change, set_values, modified_change)
            modified = change is not record.proposal.change
            update.update(status=ReviewStatus.MODIFIED if modified else ReviewStatus.APPROVED,
                          applied_change=change.model_dump(mode="json"),
                          category="modified" if modified else "approved")
        decided = record.model_copy(update=update)
        winner = await self._save_decision(decided)
        if not same_decision(winner, decided):
            raise AlreadyDecided(f"proposal {proposal_id} is already {winner.status.value}"
                                 f" (by {winner.decided_by}, at the same time on another worker)")
        self.metrics.decisions.labels(self.metrics.label(record.agent), decided.status.value).inc()
        await self._finish(decided)
        self._refresh_backlog()
        return self.store.get(proposal_id) or decided

    # ---- expiry -------------------------------------------------------------------------------

    async def expire_due(self, now_ms: int | None = None) -> list[str]:
        """Expire (or implicitly approve) proposals pending longer than expire_after_ms."""
        if self.expire_after_ms is None:
            return []
        now = self._now() if now_ms is None else now_ms
        done: list[str] = []
        async with self._lock:
            for record in self.store.expiry_due(now, self.expire_after_ms):
                update: dict[str, Any] = {"via": "expiry", "decided_at": now, "done": False}
                if self.implicit_approval:
                    update.update(status=ReviewStatus.APPROVED, decided_by="implicit-approval",
                                  decision_reason="nobody reviewed it in time: implicit approval",
                                  applied_change=record.proposal.change.model_dump(mode="json"),
                                  category="implicit")
                else:
                    update.update(status=ReviewStatus.EXPIRED, decided_by="expiry",
                                  decision_reason="nobody reviewed it in time", category="expired")
                decided = record.model_copy(update=update)
                if not same_decision(await self._save_decision(decided), decided):
                    continue  # another worker expired it (or a person decided it) first
                self.metrics.decisions.labels(self.metrics.label(record.agent), str(update["category"])).inc()
                await self._finish(decided)
                done.append(record.proposal_id)
            self._refresh_backlog()
        return done

    async def prune(self, now_ms: int | None = None) -> int:
        """Tombstone decided records older than keep_decided_ms (bounds memory and the topic)."""
        now = self._now() if now_ms is None else now_ms
        async with self._lock:
            ids = self.store.prunable(now, self.keep_decided_ms)
            assert self.log is not None
            for pid in ids:
                offset = await self.log.write(pid, None)
                self.store.apply_message(pid, None, offset)
        return len(ids)

    # ---- overrides and pins -------------------------------------------------------------------

    def notify_finding(self, finding: Finding | Mapping[str, Any]) -> None:
        """Synchronous hook for the actor stage's `on_finding`: override findings are queued."""
        detector = finding.detector if isinstance(finding, Finding) else finding.get("detector")
        if detector == "override":
            self._findings.put_nowait(finding if isinstance(finding, Finding) else dict(finding))

    async def on_override(self, finding: Finding | Mapping[str, Any]) -> dict[str, Any] | None:
        """A human overrode an agent's value: a failure for the agent's trust in the field's tier.

        Returns the feedback message (also produced), or None when the finding is not about a
        configured agent's field or was already counted (redelivery).
        """
        data = finding.to_dict() if isinstance(finding, Finding) else dict(finding)
        agent = data.get("agent")
        details = dict(data.get("details") or {})
        field = details.get("field")
        if not agent or self.policy.agent(agent) is None or not field:
            return None
        record_key = str(data.get("record_key", ""))
        tier = _tier(details.get("tier")) or self.policy.tier_of(record_key.split("/", 1)[0], field)
        at = int(data.get("occurred_at") or self._now())
        outcome_id = f"override:{data.get('event_id')}:{field}"
        async with self._lock:
            update = self.model.record(self.store.trust, self.policy, agent, tier, "override", at, outcome_id)
            if not update.applied:
                return None
            merged = await self._save_trust(agent, lambda state: self.model.record(
                state, self.policy, agent, tier, "override", at, outcome_id))
            if merged is not None:  # merged into another worker's trust write: its moves count
                update = merged
            message = {
                "type": "override", "agent": agent, "record_key": record_key, "field": field,
                "agent_value": details.get("agent_value"), "human_value": details.get("human_value"),
                "reason_category": "override", "tier": tier.value, "trust": round(update.trust, 4),
                "event_id": data.get("event_id"), "at": at,
            }
            for extra in ("kind", "delay_ms"):
                if extra in details:
                    message["override_kind" if extra == "kind" else extra] = details[extra]
            if self.publish_override_feedback:
                await self._send(self.topics.feedback, agent, message)
            for event in update.events:
                await self._send(self.topics.feedback, agent, event)
            self._refresh_trust(agent)
            return message

    async def pin(self, agent: str, tier: Tier | str, level: Autonomy | str | None, by: str,
                  reason: str = "") -> dict[str, Any]:
        """Pin an agent's autonomy in a tier (None unpins); published to guard.feedback."""
        if self.policy.agent(agent) is None:
            raise NotFound(f"no agent {agent} in the policy")
        try:
            tier_v = Tier(tier)
            level_v = None if level is None else Autonomy(level)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        by = _require_by(by)
        async with self._lock:
            now = self._now()
            event = self.model.pin(self.store.trust, self.policy, agent, tier_v, level_v, now, by, reason)
            await self._save_trust(agent, lambda state: self.model.pin(
                state, self.policy, agent, tier_v, level_v, now, by, reason))
            public = {k: v for k, v in event.items() if k != "by"}
            await self._send(self.topics.feedback, agent, public)
            self._refresh_trust(agent)
            return event

    def trust_snapshot(self, agent: str) -> dict[str, Any]:
        """The agent's trust per tier with its evidence counts, levels and history."""
        if self.policy.agent(agent) is None and agent not in self.store.trust:
            raise NotFound(f"no agent {agent} in the policy")
        snap = self.model.snapshot(self.store.trust, self.policy, agent, self._now())
        snap["pending"] = self.store.backlog().get(agent, 0)
        return snap

    # ---- views --------------------------------------------------------------------------------

    def get(self, proposal_id: str) -> ReviewRecord:
        record = self.store.get(proposal_id)
        if record is None:
            raise NotFound(f"no proposal {proposal_id}")
        return record

    async def view(self, record: ReviewRecord) -> dict[str, Any]:
        """A record as the API, CLI and page show it, with the current value beside the proposed one."""
        proposal = record.proposal
        change = proposal.change
        applied = {}
        if record.applied_change:
            applied = {c["field"]: c.get("new") for c in record.applied_change.get("changes", [])}
        fields = []
        for item in change.changes:
            known, current = await self._current(change.record_key, item.field)
            entry: dict[str, Any] = {
                "field": item.field,
                "tier": self.policy.tier_of(change.source, item.field).value,
                "proposed": item.new,
                "current": current if known else None,
                "current_known": known,
            }
            if item.has_old:
                entry["agent_old"] = item.old
            if record.status is ReviewStatus.MODIFIED and item.field in applied:
                entry["applied"] = applied[item.field]
            fields.append(entry)
        return {
            "proposal_id": proposal.proposal_id,
            "agent": proposal.agent,
            "kind": record.kind,
            "tier": record.tier.value if record.tier else None,
            "status": record.status.value,
            "record_key": change.record_key,
            "source": change.source,
            "object_type": change.object_type.value,
            "record_id": change.record_id,
            "operation": change.operation,
            "fields": fields,
            "reason": proposal.reason,
            "evidence": proposal.evidence,
            "confidence": proposal.confidence,
            "proposed_at": proposal.proposed_at,
            "received_at": record.received_at,
            "gate": record.gate,
            "decided_by": record.decided_by,
            "decided_at": record.decided_at,
            "decision_reason": record.decision_reason,
            "category": record.category,
            "via": record.via,
        }

    async def list_view(self, flt: ReviewFilter | None = None, limit: int = 500) -> dict[str, Any]:
        """Records matching the filter (pending by default), grouped by agent and kind."""
        flt = flt or ReviewFilter(status=ReviewStatus.PENDING)
        records = self.store.select(flt, limit=limit)
        groups = []
        for group in self.store.groups(records):
            groups.append({"agent": group["agent"], "kind": group["kind"], "count": group["count"],
                           "items": [await self.view(r) for r in group["items"]]})
        return {"total": len(records), "groups": groups, "backlog": dict(self.store.backlog())}

    # ---- internals ----------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock() * 1000)

    async def _current(self, record_key: str, field: str) -> tuple[bool, Any]:
        if self.current_value is None:
            return False, None
        try:
            value = self.current_value(record_key, field)
            if inspect.isawaitable(value):
                value = await value
        except KeyError:
            return False, None
        except Exception:  # noqa: BLE001 - the page must render even when record state is unavailable
            log.warning("current_value failed for a %s field", field, exc_info=True)
            return False, None
        if value is UNKNOWN:
            return False, None
        return True, value

    async def _save(self, record: ReviewRecord) -> None:
        assert self.log is not None, "ReviewService.start() was not awaited"
        key, value = encode_record(record)
        offset = await self.log.write(key, value)
        self.store.put(record, offset)

    async def _save_decision(self, record: ReviewRecord) -> ReviewRecord:
        """Write a decision and return the decision that counts: `record`, or the one another
        worker wrote before it (the first in the log wins; ReviewStore._hold). Waits until this
        worker's follower has read past the write, a few milliseconds on a healthy broker; if it
        has not within DECISION_CONFIRM_S, the decision is held as written (the behaviour before
        this check) and a warning logged. When this decision lost and is the key's latest
        message, the winner is written again: a compacted guard.decisions keeps only the latest,
        and a restart must find the winner there, not the loser."""
        assert self.log is not None, "ReviewService.start() was not awaited"
        key, value = encode_record(record)
        partition, offset = await self.log.write_record(key, value)
        if not await self.log.followed_past(partition, offset, DECISION_CONFIRM_S):
            log.warning("review: guard.decisions was not followed past offset %d within %.0fs; "
                        "holding decision on %s as written", offset, DECISION_CONFIRM_S, key)
            self.store.put(record, offset)
            return record
        held = self.store.get(record.proposal_id)
        if held is None or same_decision(held, record):
            return record
        log.info("review: %s was decided first elsewhere (%s by %s); %s by %s not applied", key,
                 held.status.value, held.decided_by, record.status.value, record.decided_by)
        if self.store.offsets.get(key) == offset:
            await self._save(held)
        return held

    async def _save_trust(self, agent: str, redo: Callable[[dict[str, Any]], Any] | None = None) -> Any:
        """Write the agent's trust state, which `redo` (the update just applied to it) changed.

        Another worker may have moved the same agent's trust from the same earlier state at the
        same moment (an override there, a decision here): whichever write lands second would hide
        the other's outcome. So after writing, wait until the follower has read past the write;
        if another worker's trust message for the agent landed between the state this one was
        computed from and this write, apply `redo` to that state (the trust model skips an
        outcome it already holds) and write the result, up to TRUST_MERGE_ROUNDS times.

        Returns what the last `redo` returned when the update was merged (its trust and level
        moves are those of the state that was kept: publish those, not the first ones), else None.
        """
        assert self.log is not None, "ReviewService.start() was not awaited"
        state = self.store.trust[agent]
        base = self.store.offsets.get(encode_trust(agent, None)[0], -1)
        redone: Any = None
        for _ in range(TRUST_MERGE_ROUNDS):
            key, value = encode_trust(agent, state)
            partition, offset = await self.log.write_record(key, value)
            if self.store.newer(key, offset):
                # what we wrote is the latest: hold it, even if the follower applied another
                # worker's older trust message while we waited for the broker
                self.store.trust[agent] = state
            if redo is None or not await self.log.followed_past(partition, offset, DECISION_CONFIRM_S):
                return redone
            others = self.store.trust_written_between(agent, base, offset)
            if not others:
                return redone
            merged = {agent: copy.deepcopy(others[-1])}
            redone = redo(merged)
            log.info("review: trust of %s was written elsewhere meanwhile; merged this update into it", agent)
            state, base = merged[agent], offset
        return redone

    async def _send(self, topic: str, key: str, message: Mapping[str, Any]) -> None:
        assert self.producer is not None
        await self.producer.send_and_wait(topic, key=key.encode(), value=orjson.dumps(message))

    async def _finish(self, record: ReviewRecord) -> None:
        """Produce a decision's effects, then mark it done. Safe to repeat (at least once)."""
        agent = record.agent
        status = record.status
        if status in (ReviewStatus.APPROVED, ReviewStatus.MODIFIED):
            await self._send(self.topics.approved, agent, _approved_message(record))
        trust: float | None = None
        events: list[dict[str, Any]] = []
        if record.via == "human" and record.tier is not None:
            outcome = {"approved": "approved", "modified": "modified", "rejected": "rejected"}[status.value]
            tier, outcome_id = record.tier, f"review:{record.proposal_id}"
            at = record.decided_at or record.received_at
            update = self.model.record(self.store.trust, self.policy, agent, tier, outcome, at, outcome_id)  # type: ignore[arg-type]
            trust = update.trust
            events = update.events
            if update.applied:
                merged = await self._save_trust(agent, lambda state: self.model.record(
                    state, self.policy, agent, tier, outcome, at, outcome_id))  # type: ignore[arg-type]
                if merged is not None:  # merged into another worker's trust write: its moves count
                    trust, events = merged.trust, merged.events
        if record.via in ("human", "expiry") or status is ReviewStatus.REJECTED:
            if trust is None and record.tier is not None:
                trust = self.model.trust(self.store.trust, agent, record.tier, record.decided_at)
            await self._send(self.topics.feedback, agent, _review_feedback(record, trust))
        for event in events:
            await self._send(self.topics.feedback, agent, event)
        await self._save(record.model_copy(update={"done": True}))
        if record.via == "human":
            self._refresh_trust(agent)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.expire_due()
                await self.prune()
            except Exception:  # noqa: BLE001 - the broker may be away; try again next round
                log.exception("review sweep failed")

    async def _finding_loop(self) -> None:
        while True:
            finding = await self._findings.get()
            for attempt in range(1, 11):
                try:
                    await self.on_override(finding)
                    break
                except Exception:  # noqa: BLE001 - the broker may be away: retry, then give up loudly
                    if attempt == 10:
                        log.exception("override not applied to trust after 10 attempts (dropped)")
                        self.metrics.decisions.labels("other", "override_dropped").inc()
                    else:
                        await asyncio.sleep(min(30.0, 0.5 * 2 ** attempt))

    def _refresh_backlog(self) -> None:
        counts = self.store.backlog()
        labels: dict[str, int] = {self.metrics.label(a): 0 for a in self.policy.agents}
        for agent, n in counts.items():
            label = self.metrics.label(agent)
            labels[label] = labels.get(label, 0) + n
        for label, n in labels.items():
            self.metrics.backlog.labels(label).set(n)

    def _refresh_trust(self, agent: str) -> None:
        if self.policy.agent(agent) is None:
            return
        now = self._now()
        for tier in Tier:
            level = self.model.level(self.store.trust, self.policy, agent, tier)
            self.metrics.autonomy.labels(agent, tier.value).set(LEVELS.index(level))
            if self.metrics.trust is not None:
                self.metrics.trust.labels(agent, tier.value).set(self.model.trust(self.store.trust, agent, tier, now))

    def _refresh_metrics(self) -> None:
        self._refresh_backlog()
        for agent in self.policy.agents:
            self._refresh_trust(agent)


def parse_proposal(raw: Proposal | Mapping[str, Any] | bytes) -> Proposal:
    """A Proposal from a model, a dict or JSON bytes; BadRequest naming the bad field otherwise."""
    if isinstance(raw, Proposal):
        return raw
    try:
        data = orjson.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
        if not isinstance(data, Mapping):
            raise BadRequest("a proposal must be a JSON object")
        return Proposal.model_validate(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"not JSON: {exc}") from exc
    except ValidationError as exc:
        raise BadRequest(describe_validation(exc)) from exc


def describe_validation(exc: ValidationError) -> str:
    """`field.path: message; ...` without the input values (they may hold personal data)."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _require_by(by: str | None) -> str:
    by = (by or "").strip()
    if not by:
        raise BadRequest("who decided is required ('by')")
    if len(by) > 200:
        raise BadRequest("'by' is longer than 200 characters")
    return by


def _tier(value: Any) -> Tier | None:
    try:
        return Tier(value) if value else None
    except ValueError:
        return None


def _gate_category(violations: tuple[str, ...] | list[str]) -> str:
    if any(v.startswith("velocity_cap") for v in violations):
        return "velocity_cap"
    if any(v in ("unknown_agent", "agent_mismatch") for v in violations):
        return "unknown_agent"
    return "out_of_scope"


def _modified(
    change: ChangeEvent, set_values: Mapping[str, Any] | None, modified_change: ChangeEvent | Mapping[str, Any] | None
) -> ChangeEvent:
    """The change with the reviewer's values; the same object when nothing differs."""
    if modified_change is not None:
        try:
            other = modified_change if isinstance(modified_change, ChangeEvent) \
                else ChangeEvent.model_validate(modified_change)
        except ValidationError as exc:
            raise BadRequest("modified change: " + describe_validation(exc)) from exc
        if other.record_key != change.record_key:
            raise BadRequest("a modification must keep the proposal's record")
        set_values = {c.field: c.new for c in other.changes}
    if not set_values:
        return change
    proposed = {c.field: c for c in change.changes}
    unknown = [f for f in set_values if f not in proposed]
    if unknown:
        raise BadRequest(f"a modification may only change proposed fields; not proposed: {', '.join(unknown)}")
    if all(proposed[f].new == v for f, v in set_values.items()):
        return change
    changes = tuple(
        FieldChange(field=c.field, new=set_values[c.field], old=c.old, has_old=c.has_old) if c.field in set_values
        else c for c in change.changes
    )
    return change.model_copy(update={"changes": changes})


def _approved_message(record: ReviewRecord) -> dict[str, Any]:
    decision = {"gate": "auto", "expiry": "implicit"}.get(record.via or "", record.status.value)
    return {
        "proposal_id": record.proposal_id,
        "agent": record.agent,
        "change": record.applied_change or record.proposal.change.model_dump(mode="json"),
        "decision": decision,
        "decided_at": record.decided_at,
        "reason": record.decision_reason,
        "tier": record.tier.value if record.tier else None,
    }


def _review_feedback(record: ReviewRecord, trust: float | None) -> dict[str, Any]:
    applied = {}
    if record.applied_change:
        applied = {c["field"]: c.get("new") for c in record.applied_change.get("changes", [])}
    fields = []
    for item in record.proposal.change.changes:
        human = applied.get(item.field) if record.status in (ReviewStatus.APPROVED, ReviewStatus.MODIFIED) else None
        fields.append({"field": item.field, "agent_value": item.new, "human_value": human})
    return {
        "type": "review",
        "decision": record.status.value,
        "via": record.via,
        "proposal_id": record.proposal_id,
        "agent": record.agent,
        "record_key": record.proposal.change.record_key,
        "kind": record.kind,
        "tier": record.tier.value if record.tier else None,
        "fields": fields,
        "reason": record.decision_reason,
        "reason_category": record.category,
        "trust": None if trust is None else round(trust, 4),
        "at": record.decided_at,
    }

