"""PartitionState: dirty tracking, changelog records and restoring entries from them."""

from __future__ import annotations

import orjson

from app.runtime.store import PartitionState, changelog_key, split_changelog_key


def test_a_restored_entry_is_decoded_by_its_states_loader_when_first_read() -> None:
    """apply_changelog keeps the bytes; the first read decodes them and hands the entry to its
    state's loader (RecordState.loaded), once."""
    calls: list[str] = []
    state = PartitionState(
        ["record_state", "other"], {"record_state": lambda e: calls.append("rs") or {**e, "x": 1}}
    )
    state.apply_changelog(changelog_key("record_state", "k"), orjson.dumps({"a": 1}))
    state.apply_changelog(changelog_key("other", "k"), orjson.dumps({"a": 1}))
    assert calls == [] and state["record_state"].data["k"] == b'{"a":1}'
    assert state["record_state"]["k"] == {"a": 1, "x": 1} and state["other"].get("k") == {"a": 1}
    assert state["record_state"]["k"] is state["record_state"]["k"]  # decoded once, kept
    assert calls == ["rs"]


def test_restored_entries_nobody_read_go_back_to_the_changelog_as_they_came() -> None:
    state = PartitionState(["s"])
    state.apply_changelog(changelog_key("s", "a"), b'{"v":1}')
    state.apply_changelog(changelog_key("s", "b"), b'{"v":2}')
    assert state.drain_changes() == []  # restoring marks nothing dirty
    assert "a" in state["s"] and len(state["s"]) == 2  # membership and size without decoding
    assert state["s"].data["a"] == b'{"v":1}'
    assert state["s"].peek("a") == {"v": 1}  # a read-only look does not make it dirty
    assert state.drain_changes() == []
    state["s"]["b"]["v"] = 3
    assert state.drain_changes() == [(changelog_key("s", "b"), b'{"v":3}')]


def test_scans_see_restored_entries_decoded() -> None:
    """Compaction and the actor stage's advance iterate items()/values(): decoded entries."""
    state = PartitionState(["s"])
    state.apply_changelog(changelog_key("s", "old"), b'{"t":1}')
    state["s"]["new"] = {"t": 5}
    assert [k for k, v in state["s"].items() if v["t"] < 3] == ["old"]
    assert sorted(v["t"] for v in state["s"].values()) == [1, 5]
    assert state["s"].decoded() == {"old": {"t": 1}, "new": {"t": 5}}


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
    assert restored["record_state"].decoded() == {"a": {"v": 1}}
    assert split_changelog_key(records[0][0]) == ("record_state", "a")


def test_a_restored_entry_that_is_not_json_is_dropped_not_fatal() -> None:
    """A damaged changelog record costs that entry's history, not every later event about it."""
    state = PartitionState(["s"])
    state.apply_changelog(changelog_key("s", "bad"), b"\x00not json")
    state.apply_changelog(changelog_key("s", "also"), b"{broken")
    state.apply_changelog(changelog_key("s", "good"), b'{"t":1}')
    assert state["s"].get("bad") is None and "bad" not in state["s"]
    assert [k for k, _ in state["s"].items()] == ["good"]
    assert "also" not in state["s"]
    assert sorted(state.drain_changes()) == [(changelog_key("s", "also"), None), (changelog_key("s", "bad"), None)]
