"""A map whose snapshot costs what changed: the tenant's order books, seen event ids and order
names. Bookkeeping, no rules.

The tenant is one state key, so bytewax pickles all of its state at every epoch. Order books are
kept for 400 days of event time and dedup ids for the allowed lateness: pickled as plain dicts
and heaps they made each snapshot cost time in proportion to every order the tenant kept
(measured by `bench.order_path`: 20k books, 22k seen ids and their heaps took ~170 ms an epoch,
growing with retention). `SegmentedMap` keeps its entries in segments of up to `size` keys in
arrival order, each with its own expiry heap `(time ms, key)` and its own pickled bytes, kept
until the segment changes; a snapshot re-pickles only the segments that changed (the newest one,
those an update or expiry touched) and copies the others as bytes. It is the same layout as the
click store (`clicks.ClickStore`), for any key and value.

A key lives in exactly one segment (the newest when it is first set); an index `key →
segment` answers lookups with one dict lookup. The index is derived, never pickled (it would be
re-pickled whole at every snapshot): a restored map rebuilds it. Expiry pops each segment's heap
below the horizon and drops segments left empty.
"""

from __future__ import annotations

import heapq
import pickle
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from dataflows import vault

K = TypeVar("K")
V = TypeVar("V")

_MISSING: Any = object()
_NO_FLOOR = -(1 << 62)  # below every time: the next expiry looks at every segment
_EMPTY = 1 << 62  # above every time: no segment has an expiry entry


class _Segment(Generic[K, V]):
    __slots__ = ("data", "heap", "name", "packed")

    def __init__(self, data: dict[K, V] | None = None, heap: list[tuple[int, K]] | None = None):
        self.data: dict[K, V] = data if data is not None else {}
        self.heap: list[tuple[int, K]] = heap if heap is not None else []
        self.packed: bytes | None = None  # the pickled segment, until it changes
        self.name: str | None = None  # its file in the segment vault, until it changes

    def pack(self) -> bytes:
        if self.packed is None:
            self.packed = pickle.dumps((self.data, self.heap), protocol=pickle.HIGHEST_PROTOCOL)
        return self.packed

    def changed(self) -> None:
        self.packed = None
        vault.release(self)

    @classmethod
    def unpack(cls, item: bytes | str) -> _Segment[Any, Any]:
        packed = vault.load(item)
        segment: _Segment[Any, Any] = cls(*pickle.loads(packed))
        vault.restored(segment, item, packed)
        return segment


def _restore(size: int, packed: list[bytes | str]) -> SegmentedMap[Any, Any]:
    restored: SegmentedMap[Any, Any] = SegmentedMap(size)
    restored.segments = [_Segment.unpack(p) for p in packed] or [_Segment()]
    restored.where = {key: segment for segment in restored.segments for key in segment.data}
    restored.floor = _NO_FLOOR  # unknown: the first expiry looks at every segment
    return restored


class SegmentedMap(Generic[K, V]):
    """`key → value` in segments that keep their pickled bytes (see the module docstring)."""

    __slots__ = ("floor", "segments", "size", "where")

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.segments: list[_Segment[K, V]] = [_Segment()]
        self.where: dict[K, _Segment[K, V]] = {}  # derived: rebuilt on restore
        # At most the earliest time of any expiry entry (derived, not pickled: see `expire`).
        self.floor = _EMPTY

    @classmethod
    def from_dict(
        cls, data: dict[K, V], heap: Iterable[tuple[int, K]] = (), size: int = 10_000
    ) -> SegmentedMap[K, V]:
        """The map of a snapshot written when the state kept one dict (and heap): its entries
        in order, the heap's entries for keys it holds."""
        made: SegmentedMap[K, V] = cls(size)
        times: dict[K, int] = {}
        for at, key in heap:
            if key in data:
                times[key] = min(times.get(key, at), at)
        for key, value in data.items():
            if key in times:
                made.add(key, value, times[key])
            else:
                made[key] = value
        return made

    def __reduce__(self) -> tuple[object, tuple[int, list[bytes | str]]]:
        # With a vault, every segment but the newest is named instead of copied.
        return _restore, (self.size, vault.items(self.segments))

    def __eq__(self, other: object) -> bool:
        """Equal to a map or dict holding the same entries (however they are segmented)."""
        if isinstance(other, SegmentedMap):
            return dict(self.items()) == dict(other.items())
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __len__(self) -> int:
        return sum(len(segment.data) for segment in self.segments)

    def __bool__(self) -> bool:
        return bool(self.where)  # every live key, in whichever segment holds it

    def __contains__(self, key: object) -> bool:
        return key in self.where

    def __iter__(self) -> Iterator[K]:
        for segment in self.segments:
            yield from segment.data

    def items(self) -> Iterator[tuple[K, V]]:
        for segment in self.segments:
            yield from segment.data.items()

    def get(self, key: K, default: Any = None) -> Any:
        segment = self.where.get(key)
        return default if segment is None else segment.data[key]

    def __getitem__(self, key: K) -> V:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        result: V = value
        return result

    def _newest(self) -> _Segment[K, V]:
        segment = self.segments[-1]
        if len(segment.data) >= self.size:
            segment = _Segment()
            self.segments.append(segment)
        return segment

    def __setitem__(self, key: K, value: V) -> None:
        """Set `key` where it lives (no expiry time), or in the newest segment if new."""
        segment = self.where.get(key)
        if segment is None:
            segment = self.where[key] = self._newest()
        segment.data[key] = value
        segment.changed()

    def add(self, key: K, value: V, at_ms: int) -> None:
        """Set a key not held yet, to expire once the horizon passes `at_ms` (`expire`)."""
        segment = self.where[key] = self._newest()
        segment.data[key] = value
        heapq.heappush(segment.heap, (at_ms, key))
        segment.changed()
        if at_ms < self.floor:
            self.floor = at_ms

    def pop(self, key: K, default: Any = None) -> Any:
        """Remove `key` now, with its expiry entry (so the key can be added again with a time
        of its own). Linear in its segment's heap: the state only pops keys without times."""
        segment = self.where.pop(key, None)
        if segment is None:
            return default
        segment.changed()
        if segment.heap:
            segment.heap = [entry for entry in segment.heap if entry[1] != key]
            heapq.heapify(segment.heap)
        return segment.data.pop(key)

    def __delitem__(self, key: K) -> None:
        if self.pop(key, _MISSING) is _MISSING:
            raise KeyError(key)

    def expire(self, horizon_ms: int) -> list[tuple[int, K, V | None]]:
        """Remove every key added with a time before `horizon_ms`: `(time, key, value)` of each
        heap entry popped, oldest first per segment (`None` for a key removed already)."""
        gone: list[tuple[int, K, V | None]] = []
        if horizon_ms <= self.floor:  # nothing is due (the usual answer)
            return gone
        floor = _EMPTY
        for segment in self.segments:
            heap = segment.heap
            while heap and heap[0][0] < horizon_ms:
                at, key = heapq.heappop(heap)
                gone.append((at, key, segment.data.pop(key, None)))
                if self.where.get(key) is segment:
                    del self.where[key]
                segment.changed()
            if heap and heap[0][0] < floor:
                floor = heap[0][0]
        self.floor = floor
        if gone:  # (an emptied segment was changed, so retired from the vault already)
            live = [s for s in self.segments[:-1] if s.data or s.heap]
            if len(live) != len(self.segments) - 1:
                self.segments = [*live, self.segments[-1]]
        return gone
