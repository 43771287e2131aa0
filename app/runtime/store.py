"""Partitioned detector state with a changelog topic.

Each stage keeps, per input partition, one dict per detector (`PartitionState`). Detectors read
and write it like a dict; every key they touch is marked dirty (in-place mutation of a value is
common, so reads mark too). After each batch the stage writes the dirty entries to its compacted
changelog topic (same partition number as the input), once per key per batch, and only then
commits its input offsets. On assignment a partition's state is rebuilt by reading its changelog
partition to the end (after its local copy, app/runtime/local_store.py). A deleted key is written
as a tombstone (value None). Restored entries stay JSON bytes until first read (TrackedState).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import orjson

log = logging.getLogger(__name__)

_SEP = "\x1f"
_MISSING = object()


def changelog_key(name: str, key: str) -> bytes:
    """The changelog key of entry `key` of state `name`."""
    return (name + _SEP + key).encode()


def split_changelog_key(raw: bytes) -> tuple[str, str]:
    """(state name, entry key) of a changelog key; the name is "" when the key has no separator."""
    name, sep, key = raw.decode().partition(_SEP)
    return (name, key) if sep else ("", name)


Loader = Callable[[Any], Any]
"""Turns an entry decoded from the changelog into the entry the state keeps (e.g. re-shares
strings JSON decoding copied: RecordState.loaded)."""


class TrackedState(MutableMapping[str, Any]):
    """A dict that remembers which keys were touched since the last flush.

    Entries restored from the changelog (or the local copy) are kept as the JSON bytes they were
    read as, and decoded (then passed through the state's loader) the first time anything reads
    them: a restart holds a million records in 0.4x the memory and ~1.5x sooner, and only the
    records traffic touches are ever decoded (docs/latency-recovery.md)."""

    __slots__ = ("data", "dirty", "load", "name")

    def __init__(self, name: str, load: Loader | None = None) -> None:
        self.name = name
        self.data: dict[str, Any] = {}
        self.dirty: set[str] = set()
        self.load = load

    def _parse(self, raw: bytes) -> Any:
        """A restored entry decoded and through the state's loader; _MISSING when not JSON."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _MISSING
        return value if self.load is None else self.load(value)

    def _decode(self, key: str, raw: bytes) -> Any:
        """Decode a restored entry and keep it decoded; _MISSING (and the entry dropped, with a
        tombstone at the next flush) when the changelog held something that is not JSON: the
        record's history is lost, rather than every later event about it failing."""
        value = self._parse(raw)
        if value is _MISSING:
            log.warning("state %s: entry %r in the changelog is not JSON; dropped", self.name, key[:100])
            del self.data[key]
            self.dirty.add(key)
        else:
            self.data[key] = value
        return value

    def __getitem__(self, key: str) -> Any:
        value = self.data[key]
        if type(value) is bytes:
            value = self._decode(key, value)
            if value is _MISSING:
                raise KeyError(key)
        self.dirty.add(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self.data.get(key, _MISSING)
        if type(value) is bytes:
            value = self._decode(key, value)
        if value is _MISSING:
            return default
        self.dirty.add(key)
        return value

    def peek(self, key: str, default: Any = None) -> Any:
        """The entry, for reading only (not marked dirty): the HTTP API's views."""
        value = self.data.get(key, _MISSING)
        if type(value) is bytes:
            value = self._decode(key, value)
        return default if value is _MISSING else value

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.dirty.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        for _, value in self.items():
            yield value

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        """Every entry; restored entries are decoded for the caller but kept as bytes (scans such
        as compaction read every entry: keeping them all decoded would undo the saving). Like
        the plain dict view before, nothing read here is marked dirty: write back with
        `state[key] = entry`. An entry that is not JSON is dropped after the loop."""
        return _decoded_items(self, list(self.data))

    def decoded(self) -> dict[str, Any]:
        """A plain dict of every entry, decoded (tests, debugging)."""
        return dict(self.items())


class StateSlice:
    """Some keys of a TrackedState, as much of a mapping as a detector's `compact` uses (items,
    values, deletion): the stages compact a partition slice by slice, letting the event loop run
    between slices, so a partition of millions of restored entries never blocks heartbeats."""

    __slots__ = ("keys", "state")

    def __init__(self, state: TrackedState, keys: list[str]) -> None:
        self.state = state
        self.keys = keys

    def items(self) -> Iterator[tuple[str, Any]]:
        return _decoded_items(self.state, self.keys)

    def values(self) -> Iterator[Any]:
        for _, value in self.items():
            yield value

    def __delitem__(self, key: str) -> None:
        del self.state[key]

    def __contains__(self, key: object) -> bool:
        return key in self.state

    def __len__(self) -> int:
        return len(self.state)


def _decoded_items(state: TrackedState, keys: list[str]) -> Iterator[tuple[str, Any]]:
    """(key, entry) for the keys still held, restored entries decoded but not kept."""
    data = state.data
    broken = []
    for key in keys:
        value = data.get(key, _MISSING)
        if type(value) is bytes:
            value = state._parse(value)
            if value is _MISSING:
                broken.append(key)
        if value is not _MISSING:
            yield key, value
    for key in broken:
        if type(data.get(key)) is bytes:
            state._decode(key, data[key])  # logs, drops it, writes its tombstone


class PartitionState(dict[str, TrackedState]):
    """All detector states of one partition of one stage, by detector name."""

    def __init__(self, names: list[str], loaders: dict[str, Loader] | None = None) -> None:
        self.loaders = loaders or {}
        super().__init__({name: TrackedState(name, self.loaders.get(name)) for name in names})

    def drain_changes(self) -> list[tuple[bytes, bytes | None]]:
        """(changelog key, value or tombstone) for every dirty entry; clears the dirty marks."""
        out: list[tuple[bytes, bytes | None]] = []
        for name, state in self.items():
            if not state.dirty:
                continue
            for key in state.dirty:
                value = state.data.get(key, _MISSING)
                if value is _MISSING:
                    encoded = None
                elif type(value) is bytes:  # restored and never read: already its JSON
                    encoded = value
                else:
                    encoded = orjson.dumps(value)
                out.append((changelog_key(name, key), encoded))
            state.dirty.clear()
        return out

    def apply_changelog(self, key: bytes, value: bytes | None) -> None:
        """Rebuild one entry from a changelog record: kept as its JSON bytes until first read."""
        name, entry_key = split_changelog_key(key)
        state = self.get(name)
        if state is None:
            return
        if value is None:
            state.data.pop(entry_key, None)
        else:
            state.data[entry_key] = bytes(value)

    def sizes(self) -> dict[str, int]:
        return {name: len(state.data) for name, state in self.items()}
