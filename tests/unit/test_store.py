"""PartitionState: dirty tracking, changelog records and restoring entries from them."""

from __future__ import annotations

import orjson

from app.runtime.store import PartitionState, changelog_key, split_changelog_key


def test_a_restored_record_partition_runs_its_states_loaders() -> None:
    """apply_changelog hands each decoded entry to its state's loader (RecordState.loaded)."""
    calls: list[str] = []
    state = PartitionState(
        ["record_state", "other"], {"record_state": lambda e: calls.append("rs") or {**e, "x": 1}}
    )
    state.apply_changelog(changelog_key("record_state", "k"), orjson.dumps({"a": 1}))
    state.apply_changelog(changelog_key("other", "k"), orjson.dumps({"a": 1}))
    assert state["record_state"].data["k"] == {"a": 1, "x": 1} and state["other"].data["k"] == {"a": 1}
    assert calls == ["rs"]


def test_changes_drain_once_and_restore_into_an_equal_state() -> None:
    state = PartitionState(["record_state"])
    state["record_state"]["a"] = {"v": 1}
    state["record_state"]["b"] = {"v": 2}
    del state["record_state"]["b"]
    records = sorted(state.drain_changes(), key=lambda r: r[0])
    assert records == [
        (changelog_key("record_state", "a"), b'{"v":1}'),
        (changelog_key("record_state", "b"), None),
    ]
    assert state.drain_changes() == []
    restored = PartitionState(["record_state"])
    for key, value in records:
        restored.apply_changelog(key, value)
    assert restored["record_state"].data == {"a": {"v": 1}}
    assert split_changelog_key(records[0][0]) == ("record_state", "a")
