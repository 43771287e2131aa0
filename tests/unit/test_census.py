"""IdentityCensus: what each source identity did over a replay (the input of `policy suggest`)."""

from __future__ import annotations

from typing import Any

from app.census import RECORD_CAP, IdentityCensus
from detectors.events import ActorKind, ChangeEvent, ObjectType
from detectors.policy import Policy
from detectors.record_state import RecordState
from tests.unit.helpers_events import event

HOUR = 3_600_000


def census_of(*events: ChangeEvent) -> dict[str, dict[str, Any]]:
    census, record_state, state = IdentityCensus(), RecordState(Policy().detectors.record_state), {}
    for ev in events:
        obs = record_state.apply(ev, state)
        if obs is not None:
            census.observe(obs)
    return {row["describe"]: row for row in census.rows()}


def test_counts_what_each_identity_did() -> None:
    rows = census_of(
        event(1, {"jobtitle": "CTO", "city": "Oslo"}, by="ann", kind=ActorKind.HUMAN),
        event(2, {"jobtitle": "CFO"}, at=1, by="ann", kind=ActorKind.HUMAN),
        event(1, {"jobtitle": "Chief Tech"}, at=HOUR, by="bot", kind=ActorKind.UNKNOWN),  # an overwrite
        event(1, {"city": ""}, at=HOUR + 1, by="bot", kind=ActorKind.UNKNOWN),  # blanking
        event(2, {"jobtitle": "cfo "}, at=HOUR + 2, by="bot", kind=ActorKind.UNKNOWN),  # a reformat
        event(1, {"jobtitle": "CTO!"}, at=HOUR + 3, by="bot", kind=ActorKind.UNKNOWN),  # its own value
        event(3, {"phone": "+4712345678"}, at=3 * HOUR, by="bot", kind=ActorKind.UNKNOWN,
              object_type=ObjectType.COMPANY),  # filling an empty field: neither
    )
    bot = rows["hubspot user_id=bot"]
    assert bot["kind"] == "unknown" and bot["identity"] == {
        "vendor": "hubspot", "change_source": None, "user_id": "bot", "app_id": None}
    counted = (bot["events"], bot["changes"], bot["records"], bot["overwrites"], bot["blanked"])
    assert counted == (5, 5, 3, 1, 1)
    assert bot["fields"] == {"jobtitle": 3, "city": 1, "phone": 1} and bot["fields_total"] == 3
    assert bot["object_types"] == {"contact": 4, "company": 1} and bot["operations"] == {"update": 5}
    assert bot["busiest_hour_records"] == 2  # records 1 and 2 in the first hour of its work
    assert (bot["first_at"], bot["last_at"]) == (rows["hubspot user_id=ann"]["first_at"] + HOUR,
                                                 rows["hubspot user_id=ann"]["first_at"] + 3 * HOUR)
    assert list(rows) == ["hubspot user_id=bot", "hubspot user_id=ann"]  # most field changes first


def test_distinct_records_are_exact_up_to_the_cap_then_flagged() -> None:
    rows = census_of(*(event(i, {"x": "1"}, at=i, by="bulk", kind=ActorKind.IMPORT)
                       for i in range(RECORD_CAP + 10)))
    row = rows["hubspot user_id=bulk"]
    assert row["records"] == RECORD_CAP and row["records_capped"] and row["events"] == RECORD_CAP + 10
