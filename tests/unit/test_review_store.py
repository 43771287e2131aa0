"""The review store's index and its log encoding (app/review/store.py), without a broker."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from app.review.models import ReviewFilter, ReviewRecord, ReviewStatus
from app.review.service import BadRequest, _modified, parse_proposal
from app.review.store import DecisionLog, ReviewStore, encode_record, encode_trust
from detectors.events import Actor, ActorKind, ChangeEvent, FieldChange, ObjectType, SourceIdentity
from detectors.gate import Proposal
from detectors.policy import Tier

T0 = 1_700_000_000_000
DAY = 86_400_000


def proposal(pid: str, agent: str = "enricher", fields: dict[str, Any] | None = None,
             obj: ObjectType = ObjectType.CONTACT, at: int = T0) -> Proposal:
    change = ChangeEvent(
        event_id=f"e-{pid}", source="hubspot", source_event_id=pid, occurred_at=at, object_type=obj,
        source_object_type=obj.value, record_id=f"r-{pid}", operation="update",
        changes=tuple(FieldChange(field=k, new=v) for k, v in (fields or {"jobtitle": "CTO"}).items()),
        actor=Actor(kind=ActorKind.AGENT, id=agent, identity=SourceIdentity(vendor="hubspot", app_id="1")),
    )
    return Proposal(proposal_id=pid, agent=agent, change=change, reason="r", proposed_at=at)


def record(pid: str, status: ReviewStatus = ReviewStatus.PENDING, tier: Tier = Tier.LOW, **kw: Any) -> ReviewRecord:
    p = proposal(pid, **kw)
    decided = None if status is ReviewStatus.PENDING else T0 + 1000
    return ReviewRecord(proposal=p, status=status, kind=p.kind, tier=tier, received_at=T0, decided_at=decided,
                        decided_by=None if decided is None else "ann")


def roundtrip(store: ReviewStore, rec: ReviewRecord) -> None:
    key, value = encode_record(rec)
    store.apply_message(key.encode(), value)


def test_latest_record_per_proposal_wins() -> None:
    store = ReviewStore()
    roundtrip(store, record("p1"))
    roundtrip(store, record("p1", ReviewStatus.APPROVED))
    assert len(store.records) == 1
    assert store.get("p1").status is ReviewStatus.APPROVED  # type: ignore[union-attr]
    assert store.get("p1").decided_by == "ann"  # type: ignore[union-attr]


def test_tombstones_and_trust_entries() -> None:
    store = ReviewStore()
    roundtrip(store, record("p1"))
    key, value = encode_trust("enricher", {"tiers": {}, "seen": ["x"], "history": []})
    assert key == "trust:enricher"
    store.apply_message(key.encode(), value)
    assert store.trust["enricher"]["seen"] == ["x"]
    store.apply_message(b"trust:enricher", None)
    store.apply_message(b"p1", None)
    assert store.trust == {} and store.records == {}
    store.apply_message(None, b"{}")  # keyless: ignored


def test_record_survives_json_roundtrip_exactly() -> None:
    rec = record("p9", fields={"amount": 5000, "closedate": None}, obj=ObjectType.DEAL)
    _, value = encode_record(rec)
    assert ReviewRecord.model_validate(orjson.loads(value)) == rec


def test_filters_grouping_and_backlog() -> None:
    store = ReviewStore()
    for rec in [record("a1"), record("a2", fields={"phone": "1"}), record("b1", agent="scorer"),
                record("a3", ReviewStatus.REJECTED), record("a4", tier=Tier.MEDIUM, fields={"lifecyclestage": "x"})]:
        store.put(rec)
    pending = store.pending()
    assert [r.proposal_id for r in pending] == ["a1", "a2", "b1", "a4"]
    assert [r.proposal_id for r in store.pending(ReviewFilter(agent="enricher", field="JOBTITLE"))] == ["a1"]
    assert [r.proposal_id for r in store.pending(ReviewFilter(tier=Tier.MEDIUM))] == ["a4"]
    assert [r.proposal_id for r in store.pending(ReviewFilter(kind="contact.phone"))] == ["a2"]
    groups = store.groups(pending)
    assert [(g["agent"], g["kind"], g["count"]) for g in groups] == [
        ("enricher", "contact.jobtitle", 1), ("enricher", "contact.lifecyclestage", 1),
        ("enricher", "contact.phone", 1), ("scorer", "contact.jobtitle", 1)]
    assert store.backlog() == {"enricher": 3, "scorer": 1}


def test_expiry_and_pruning_candidates() -> None:
    store = ReviewStore()
    store.put(record("old", at=T0 - 3 * DAY))
    store.put(record("new", at=T0))
    store.put(record("done", ReviewStatus.APPROVED))
    assert [r.proposal_id for r in store.expiry_due(T0, 2 * DAY)] == ["old"]
    assert store.expiry_due(T0, 4 * DAY) == []
    assert store.prunable(T0 + 1000 + DAY, DAY) == ["done"]
    assert store.prunable(T0 + DAY, DAY) == []


def test_filter_emptiness() -> None:
    assert ReviewFilter().is_empty()
    assert ReviewFilter(status=ReviewStatus.PENDING).is_empty()
    assert not ReviewFilter(agent="x").is_empty()


def test_modification_rules() -> None:
    change = proposal("m", fields={"jobtitle": "CTO", "city": "Oslo"}).change
    assert _modified(change, None, None) is change
    assert _modified(change, {"jobtitle": "CTO"}, None) is change  # same value: not a modification
    changed = _modified(change, {"jobtitle": "CEO"}, None)
    assert [(c.field, c.new) for c in changed.changes] == [("jobtitle", "CEO"), ("city", "Oslo")]
    with pytest.raises(BadRequest, match="not proposed: email"):
        _modified(change, {"email": "x"}, None)
    other = change.model_copy(update={"record_id": "elsewhere"})
    with pytest.raises(BadRequest, match="keep the proposal's record"):
        _modified(change, None, other)


def test_parse_proposal_errors_name_the_field_not_the_value() -> None:
    with pytest.raises(BadRequest, match="not JSON"):
        parse_proposal(b"{nope")
    with pytest.raises(BadRequest, match="a proposal must be a JSON object"):
        parse_proposal(b"[1]")
    data = proposal("ok").model_dump(mode="json")
    data["change"]["occurred_at"] = "secret@example.com"
    with pytest.raises(BadRequest) as err:
        parse_proposal(data)
    assert "change.occurred_at" in str(err.value) and "secret@example.com" not in str(err.value)
    assert parse_proposal(orjson.dumps(proposal("ok").model_dump(mode="json"))).proposal_id == "ok"


def test_a_followed_message_older_than_what_the_store_holds_is_not_applied() -> None:
    """Several workers write guard.decisions and each follows it: this worker's own write (put at
    its offset) must not be rolled back by the follower reading an older message afterwards."""
    store = ReviewStore()
    pending, approved = record("p-1"), record("p-1", ReviewStatus.APPROVED)
    store.put(approved, offset=7)  # this worker decided it; the write landed at offset 7
    key, value = encode_record(pending)
    assert not store.apply_message(key, value, 5)  # the follower, behind, reads the submission
    assert store.get("p-1").status is ReviewStatus.APPROVED  # type: ignore[union-attr]
    assert not store.apply_message(*encode_record(approved), 7)  # its own write read back
    done = approved.model_copy(update={"done": True})
    assert store.apply_message(*encode_record(done), 9)  # the same decision, its effects produced
    store.put(approved, offset=8)  # a write acknowledged after the follower applied a newer one
    assert store.get("p-1").done  # type: ignore[union-attr]


def test_the_first_decision_in_the_log_wins_over_a_concurrent_one() -> None:
    """Two workers decided p-1 at once: ann's approval landed first, bob's rejection second.
    Every follower holds ann's, whatever order its own writes were acknowledged in."""
    store = ReviewStore()
    assert store.apply_message(*encode_record(record("p-1")), 1)
    ann = record("p-1", ReviewStatus.APPROVED)
    bob = record("p-1", ReviewStatus.REJECTED).model_copy(update={"decided_by": "bob"})
    assert store.apply_message(*encode_record(ann), 2)
    assert not store.apply_message(*encode_record(bob), 3)  # second: not applied
    assert not store.apply_message(*encode_record(record("p-1")), 4)  # nor a pending copy after it
    store.put(bob, offset=5)  # nor bob's own write, put by his worker
    assert store.get("p-1").decided_by == "ann" and store.offsets["p-1"] == 5  # type: ignore[union-attr]
    assert store.apply_message(*encode_record(ann.model_copy(update={"done": True})), 6)
    assert store.get("p-1").done  # type: ignore[union-attr]
    assert store.apply_message("p-1", None, 7) and store.get("p-1") is None  # pruned: gone
    assert store.apply_message(*encode_record(record("p-1")), 8)  # a proposal under that id again


def test_tombstones_by_offset_and_trust_keys() -> None:
    store = ReviewStore()
    store.put(record("p-1", ReviewStatus.APPROVED), offset=3)
    assert store.apply_message("p-1", None, 4) and store.get("p-1") is None and "p-1" not in store.offsets
    assert store.apply_message(*encode_trust("enricher", {"low": [1, 2]}), 10)
    assert not store.apply_message(*encode_trust("enricher", {"low": [0, 0]}), 6)
    assert store.trust["enricher"] == {"low": [1, 2]}
    assert store.apply_message(*encode_record(record("p-2")))  # no offset (tests, tools): always applied


def test_trust_messages_read_are_kept_whether_applied_or_not() -> None:
    """ReviewService._save_trust merges with what other workers wrote between the state it
    started from and its own write: the store must remember those even when it did not apply
    them (its own write, put first, was newer)."""
    store = ReviewStore()
    assert store.newer("trust:enricher", 12)  # this worker's own write, held first
    for offset, n in ((9, 1), (11, 2), (12, 3), (14, 4)):
        store.apply_message(*encode_trust("enricher", {"n": n}), offset)
    assert store.trust_written_between("enricher", 9, 12) == [{"n": 2}]
    assert store.trust_written_between("enricher", -1, 14) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert store.trust_written_between("scorer", -1, 99) == []
    for offset in range(20, 40):
        store.apply_message(*encode_trust("enricher", {"n": offset}), offset)
    assert len(store.trust_read["enricher"]) == 8  # bounded


async def test_without_a_follower_there_is_nothing_to_wait_for() -> None:
    """ReviewService.start finishes undone decisions before it follows the log: their trust
    writes must not each wait DECISION_CONFIRM_S for a follower that is not there yet."""
    log = DecisionLog("127.0.0.1:9", "guard.decisions", producer=None)  # type: ignore[arg-type]
    assert not log.following
    assert await asyncio.wait_for(log.followed_past(0, 5, timeout_s=60.0), 5.0) is False


def test_backlog_is_counted_as_records_change_and_agrees_with_a_recount() -> None:
    """The pending count per agent is kept as records come and go (every submission and decision
    reads it): submissions, decisions, a redelivered older message, a concurrent losing decision
    and tombstones all leave it equal to counting the held records."""
    store = ReviewStore()

    def recount() -> dict[str, int]:
        counted: dict[str, int] = {}
        for held in store.records.values():
            if held.pending:
                counted[held.agent] = counted.get(held.agent, 0) + 1
        return counted

    offset = 0

    def apply(rec: ReviewRecord | None, pid: str | None = None) -> None:
        nonlocal offset
        offset += 1
        if rec is None:
            store.apply_message(pid.encode(), None, offset)  # type: ignore[union-attr]
        else:
            key, value = encode_record(rec)
            store.apply_message(key.encode(), value, offset)

    for n in range(6):
        apply(record(f"p{n}", agent="enricher" if n % 2 else "scorer"))
    assert store.backlog() == {"enricher": 3, "scorer": 3} == recount()
    apply(record("p1", ReviewStatus.APPROVED, agent="enricher"))
    apply(record("p2", ReviewStatus.REJECTED, agent="scorer"))
    assert store.backlog() == {"enricher": 2, "scorer": 2} == recount()
    key, value = encode_record(record("p1", agent="enricher"))
    assert not store.apply_message(key.encode(), value, 1)  # an older message of p1: not applied
    assert store.backlog() == recount()
    loser = record("p1", ReviewStatus.REJECTED, agent="enricher").model_copy(update={"decided_by": "bob"})
    apply(loser)  # another decision of a decided proposal: the first one stands
    assert store.get("p1").status is ReviewStatus.APPROVED  # type: ignore[union-attr]
    apply(None, "p3")  # a pending proposal tombstoned
    apply(None, "p1")  # a decided one
    apply(None, "p-never-seen")
    assert store.backlog() == {"enricher": 1, "scorer": 2} == recount()
    store.put(record("p7", agent="scorer"))  # written by this worker, no offset
    assert store.backlog() == {"enricher": 1, "scorer": 3} == recount()
    backlog = store.backlog()
    backlog["scorer"] += 5  # a copy: the caller cannot change the count
    assert store.backlog()["scorer"] == 3
