"""Partitioned detector state with a changelog topic.

Each stage keeps, per input partition, one dict per detector (`PartitionState`). Detectors read
and write it like a dict; every key they touch is marked dirty (in-place mutation of a value is
common, so reads mark too). After each batch the stage writes the dirty entries to its compacted
changelog topic (same partition number as the input), once per key per batch, and only then
commits its input offsets. On assignment a partition's state is rebuilt by reading its changelog
partition to the end. A deleted key is written as a tombstone (value None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import orjson

_SEP = "\x1f"


def changelog_key(name: str, key: str) -> bytes:
    """The changelog key of entry `key` of state `name`."""
    return (name + _SEP + key).encode()


def split_changelog_key(raw: bytes) -> tuple[str, str]:
    """(state name, entry key) of a changelog key; the name is "" when the key has no separator."""
    name, sep, key = raw.decode().partition(_SEP)
    return (name, key) if sep else ("", name)


class TrackedState(MutableMapping[str, Any]):
    """A dict that remembers which keys were touched since the last flush."""

    __slots__ = ("data", "dirty", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: dict[str, Any] = {}
        self.dirty: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        value = self.data[key]
        self.dirty.add(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self.data.get(key, default)
        if key in self.data:
            self.dirty.add(key)
        return value

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

    def values(self):  # type: ignore[no-untyped-def,override]
        return self.data.values()

    def items(self):  # type: ignore[no-untyped-def,override]
        return self.data.items()


Loader = Callable[[Any], Any]
"""Turns an entry decoded from the changelog into the entry the state keeps (e.g. re-shares
strings JSON decoding copied: RecordState.loaded)."""


class PartitionState(dict[str, TrackedState]):
    """All detector states of one partition of one stage, by detector name."""

    def __init__(self, names: list[str], loaders: dict[str, Loader] | None = None) -> None:
        super().__init__({name: TrackedState(name) for name in names})
        self.loaders = loaders or {}

    def drain_changes(self) -> list[tuple[bytes, bytes | None]]:
        """(changelog key, value or tombstone) for every dirty entry; clears the dirty marks."""
        out: list[tuple[bytes, bytes | None]] = []
        for name, state in self.items():
            if not state.dirty:
                continue
            for key in state.dirty:
                value = state.data.get(key, _MISSING)
                encoded = None if value is _MISSING else orjson.dumps(value)
                out.append((changelog_key(name, key), encoded))
            state.dirty.clear()
        return out

    def apply_changelog(self, key: bytes, value: bytes | None) -> None:
        """Rebuild one entry from a changelog record."""
        name, entry_key = split_changelog_key(key)
        state = self.get(name)
        if state is None:
            return
        if value is None:
            state.data.pop(entry_key, None)
        else:
            load = self.loaders.get(name)
            entry = orjson.loads(value)
            state.data[entry_key] = entry if load is None else load(entry)

    def sizes(self) -> dict[str, int]:
        return {name: len(state.data) for name, state in self.items()}


_MISSING = object()
