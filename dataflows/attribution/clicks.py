"""Live clicks: a store whose snapshot costs what changed and whose clicks cost ~180 bytes each.
Bookkeeping, no rules.

Clicks are most of the state (hundreds of thousands live in a 30-day window) and few of them
change in an epoch. The store keeps them in segments of up to `segment_size` clicks in arrival
order, each keeping its own pickled bytes until it changes: a snapshot re-pickles only the open
segment (and copies the others as bytes).

**Columns, not objects.** A segment keeps its clicks as columns: the click id (as a 128-bit int
when it is `clk_` + 32 hex digits, which every click id is), the event time (`array('q')`), a
2-byte reference into a small table of (agent, program, link, bot, duplicate) combinations
(they repeat), and the visitor (a 128-bit int when it is 32 hex digits, as the ingress mints
them), with a visitor index (visitor → click id, or a list when it clicked more than once in
the segment). A click costs a dict slot, an int, a few column bytes and its visitor: measured by
`bench.dataflow`'s state phase against the ~440 bytes of a tuple per click with a heap entry.

**Expiry is logical, then physical.** `expire(horizon)` raises the store's horizon: from then on
a click that occurred before it is not found, counted or listed (exactly what removing it would
give); a segment whose newest click is older than the horizon is dropped whole. So expiry
never re-pickles a segment, and no per-click heap is kept.

Lookups ask every segment, newest first (a dict lookup each), so the number of segments is kept
logarithmic: when the last `MERGE` sealed segments have the same size, they are merged into one
(by concatenating their columns), up to `MERGE_LIMIT` segment sizes. A shard of 15,600 clicks in
segments of 256 is then about 10 segments instead of 61 (a lookup that misses: measured 3.5 µs
→ under 1 µs); each click is copied into a merged segment twice in its life, a merged segment
re-pickled once. Expiry drops a merged segment once its newest click has expired (the horizon
hides its older clicks meanwhile), so at most a merged segment's worth of expired clicks is
kept a while longer.
"""

from __future__ import annotations

import pickle
import re
import sys
from array import array
from collections.abc import Iterator

from dataflows import vault
from dataflows.attribution.events import Click

SEGMENT_SIZE = 20_000
MERGE = 4  # sealed segments of one size merged into one
MERGE_LIMIT = 16  # a merged segment holds at most this many segment sizes
_HEX32 = re.compile(r"[0-9a-f]{32}")
# (agent, program, link, is_bot, is_duplicate): what repeats across clicks
Ref = tuple[str | None, str | None, str, bool, bool]
Key = int | str


# Row numbers as shared int objects: a row number above 256 is an int object of its own (28
# bytes) in each segment's `ids`, which merged segments (rows up to 4,095) would pay per click
# (measured: 184 → 203 bytes per live click). Grown as needed, never shrunk.
_ROWS: list[int] = list(range(1024))


def _row(n: int) -> int:
    if n >= len(_ROWS):
        _ROWS.extend(range(len(_ROWS), max(n + 1, 2 * len(_ROWS))))
    return _ROWS[n]


def _shared(text: str | None) -> str | None:
    return None if text is None else sys.intern(text)


def _id_key(click_id: str) -> Key:
    if len(click_id) == 36 and click_id.startswith("clk_") and _HEX32.fullmatch(click_id, 4):
        return int(click_id[4:], 16)
    return click_id


def _id_text(key: Key) -> str:
    return f"clk_{key:032x}" if isinstance(key, int) else key


def _visitor_key(visitor: str) -> Key:
    return int(visitor, 16) if len(visitor) == 32 and _HEX32.fullmatch(visitor) else visitor


def _visitor_text(key: Key | None) -> str | None:
    return f"{key:032x}" if isinstance(key, int) else key


class Segment:
    """Up to `segment_size` clicks as columns, with their visitor index (see the module)."""

    __slots__ = ("ids", "name", "newest", "occurred", "packed", "refs", "table", "table_index",
                 "visitor_of", "visitors")  # fmt: skip

    def __init__(self) -> None:
        self.ids: dict[Key, int] = {}  # click id → row
        self.occurred = array("q")
        self.refs = array("H")
        self.table: list[Ref] = []
        self.table_index: dict[Ref, int] = {}
        self.visitor_of: list[Key | None] = []
        self.visitors: dict[Key, Key | list[Key]] = {}  # visitor → click id(s)
        self.newest = -(1 << 62)
        self.packed: bytes | None = None  # the pickled segment, until it changes
        self.name: str | None = None  # its file in the segment vault (`vault.items`)

    def __len__(self) -> int:
        return len(self.occurred)

    def add(self, key: Key, click: Click) -> None:
        occurred, agent, program, link, visitor, bot, dup = click
        ref: Ref = (agent, program, link, bot, dup)
        index = self.table_index.get(ref)
        if index is None:
            # Agents, programs and links repeat across segments and stores: one shared string
            # each; a pickled snapshot keeps the sharing.
            ref = (_shared(agent), _shared(program), sys.intern(link), bot, dup)
            index = self.table_index[ref] = len(self.table)
            self.table.append(ref)
        if (old := self.ids.get(key)) is not None:  # filed again after it expired
            self._unindex(key, self.visitor_of[old])
        self.ids[key] = _row(len(self.occurred))
        self.occurred.append(occurred)
        self.refs.append(index)
        if visitor is None:
            self.visitor_of.append(None)
        else:
            vkey = _visitor_key(visitor)
            self.visitor_of.append(vkey)
            known = self.visitors.get(vkey)
            if known is None:
                self.visitors[vkey] = key
            elif isinstance(known, list):
                known.append(key)
            else:
                self.visitors[vkey] = [known, key]
        self.newest = max(self.newest, occurred)
        self.packed = None

    def _unindex(self, key: Key, vkey: Key | None) -> None:
        known = self.visitors.get(vkey) if vkey is not None else None
        if known is None:
            return
        if isinstance(known, list):
            rest = [k for k in known if k != key]
            if len(rest) > 1:
                self.visitors[vkey] = rest  # type: ignore[index]
            elif rest:
                self.visitors[vkey] = rest[0]  # type: ignore[index]
            else:
                del self.visitors[vkey]  # type: ignore[arg-type]
        elif known == key:
            del self.visitors[vkey]  # type: ignore[arg-type]

    def absorb(self, other: Segment) -> None:
        """Append `other`'s rows (a later segment: its clicks win over this one's for a key
        filed in both, as filing it again here would)."""
        base = len(self.occurred)
        remap = [self._ref(ref) for ref in other.table]
        self.occurred.extend(other.occurred)
        self.refs.extend([remap[r] for r in other.refs])
        self.visitor_of.extend(other.visitor_of)
        ids, visitors = self.ids, self.visitors
        for key, row in other.ids.items():
            if (old := ids.get(key)) is not None:  # filed again after it expired
                self._unindex(key, self.visitor_of[old])
            ids[key] = _row(base + row)
        for vkey, known in other.visitors.items():
            mine = visitors.get(vkey)
            if mine is None:
                visitors[vkey] = known if not isinstance(known, list) else list(known)
            else:
                joined = mine if isinstance(mine, list) else [mine]
                joined.extend(known if isinstance(known, list) else (known,))
                visitors[vkey] = joined
        self.newest = max(self.newest, other.newest)
        self.packed = None

    def _ref(self, ref: Ref) -> int:
        index = self.table_index.get(ref)
        if index is None:
            index = self.table_index[ref] = len(self.table)
            self.table.append(ref)
        return index

    def click(self, row: int) -> Click:
        agent, program, link, bot, dup = self.table[self.refs[row]]
        visitor = _visitor_text(self.visitor_of[row])
        return (self.occurred[row], agent, program, link, visitor, bot, dup)

    def pack(self) -> bytes:
        if self.packed is None:
            data = (self.ids, self.occurred, self.refs, self.table, self.visitor_of,
                    self.visitors, self.newest)  # fmt: skip
            self.packed = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
        return self.packed

    @classmethod
    def unpack(cls, item: bytes | str) -> Segment:
        packed = vault.load(item)
        data = pickle.loads(packed)
        segment = cls()
        if len(data) == 3:  # a segment of tuples and a heap (before columns): re-filed
            clicks: dict[str, Click] = data[0]
            for click_id, click in clicks.items():
                segment.add(_id_key(click_id), click)
            return segment
        (ids, segment.occurred, segment.refs, segment.table, segment.visitor_of,
         segment.visitors, segment.newest) = data  # fmt: skip
        segment.ids = {key: _row(row) for key, row in ids.items()}  # shared row numbers
        segment.table_index = {ref: i for i, ref in enumerate(segment.table)}
        vault.restored(segment, item, packed)
        return segment


def _restore(
    packed: list[bytes | str], segment_size: int | None = None, horizon: int = 0
) -> ClickStore:
    store = ClickStore(segment_size)
    store.segments = [Segment.unpack(p) for p in packed] or [Segment()]
    store.horizon = horizon
    return store


class ClickStore:
    """`click_id → Click` with a visitor index and expiry by event time (see the module).

    `segment_size`: clicks per segment. A tenant's own store (before click shards) used 20,000;
    a click shard holds a 64th of a tenant and each busy epoch touches most shards, so shards
    use small segments (`stages.clicks.SHARD_SEGMENT`): the open segment is what an epoch
    re-pickles."""

    __slots__ = ("horizon", "segment_size", "segments")

    def __init__(self, segment_size: int | None = None) -> None:
        self.segment_size = segment_size or SEGMENT_SIZE
        self.segments: list[Segment] = [Segment()]
        self.horizon = -(1 << 62)  # clicks that occurred before it are gone

    @classmethod
    def from_legacy(cls, clicks: dict[str, Click]) -> ClickStore:
        """The store of a snapshot written when the tenant kept one dict (with a visitor index
        and a heap, which the store derives from the clicks)."""
        store = cls()
        for click_id, click in clicks.items():
            store.add(click_id, click)
        return store

    def __reduce__(self) -> tuple[object, tuple[list[bytes | str], int, int]]:
        # With a vault, sealed segments (they never change) are named, not copied.
        return _restore, (vault.items(self.segments), self.segment_size, self.horizon)

    def __eq__(self, other: object) -> bool:
        """Equal when they hold the same live clicks (however they are segmented)."""
        if not isinstance(other, ClickStore):
            return NotImplemented
        return dict(self._items()) == dict(other._items())

    __hash__ = None  # type: ignore[assignment]  # mutable

    def _items(self) -> Iterator[tuple[str, Click]]:
        horizon = self.horizon
        for segment in self.segments:
            occurred = segment.occurred
            for key, row in segment.ids.items():
                if occurred[row] >= horizon:
                    yield _id_text(key), segment.click(row)

    def __len__(self) -> int:
        horizon = self.horizon
        return sum(1 for s in self.segments for t in s.occurred if t >= horizon)

    def __bool__(self) -> bool:  # asked for every event (`is_empty`): no count
        horizon, last = self.horizon, self.segments[-1]
        if last.occurred and last.newest >= horizon:  # the usual answer, at once
            return True
        return any(len(s) and s.newest >= horizon for s in self.segments)

    @staticmethod
    def key(click_id: str) -> Key:
        """How the store keys `click_id` (for `has_key`/`add_key`: computed once per click)."""
        return _id_key(click_id)

    def has_key(self, key: Key) -> bool:
        return self._find_key(key) is not None

    def _find(self, click_id: object) -> tuple[Segment, int] | None:
        if not isinstance(click_id, str):
            return None
        return self._find_key(_id_key(click_id))

    def _find_key(self, key: Key) -> tuple[Segment, int] | None:
        for segment in reversed(self.segments):
            row = segment.ids.get(key)
            if row is not None:
                return (segment, row) if segment.occurred[row] >= self.horizon else None
        return None

    def __contains__(self, click_id: object) -> bool:
        return self._find(click_id) is not None

    def __iter__(self) -> Iterator[str]:
        for click_id, _ in self._items():
            yield click_id

    def get(self, click_id: str) -> Click | None:
        found = self._find(click_id)
        return found[0].click(found[1]) if found is not None else None

    def visitor_clicks(self, visitor: str) -> list[str]:
        """The visitor's live click ids, in arrival order."""
        vkey, horizon, out = _visitor_key(visitor), self.horizon, []
        for segment in self.segments:
            known = segment.visitors.get(vkey)
            if known is None:
                continue
            for key in known if isinstance(known, list) else (known,):
                if segment.occurred[segment.ids[key]] >= horizon:
                    out.append(_id_text(key))
        return out

    def visitor_count(self) -> int:
        horizon = self.horizon
        return len({
            visitor for s in self.segments for row, visitor in enumerate(s.visitor_of)
            if visitor is not None and s.occurred[row] >= horizon
        })  # fmt: skip

    def add(self, click_id: str, click: Click) -> None:
        self.add_key(_id_key(click_id), click)

    def add_key(self, key: Key, click: Click) -> None:
        segment = self.segments[-1]
        if len(segment) >= self.segment_size:
            self._merge_sealed()
            segment = Segment()
            self.segments.append(segment)
        segment.add(key, click)

    def _merge_sealed(self) -> None:
        """Merge the last `MERGE` segments (all sealed: the open one is full) while they have
        one size and the merged one stays within `MERGE_LIMIT` segment sizes."""
        segments = self.segments
        while len(segments) >= MERGE:
            size = len(segments[-1])
            last = segments[-MERGE:]
            if size * MERGE > self.segment_size * MERGE_LIMIT or any(len(s) != size for s in last):
                return
            merged = Segment()
            for part in last:
                merged.absorb(part)
                vault.release(part)
            segments[-MERGE:] = [merged]

    def expire(self, horizon_ms: int) -> None:
        """Forget every click that occurred before `horizon_ms` (see the module docstring)."""
        if horizon_ms <= self.horizon:
            return
        self.horizon = horizon_ms
        # Whole segments go from the front (the oldest, in arrival order): one comparison when
        # nothing is due. A segment behind a younger one waits its turn, hidden meanwhile.
        segments = self.segments
        if segments[0].newest >= horizon_ms:
            return
        while len(segments) > 1 and segments[0].newest < horizon_ms:
            vault.release(segments.pop(0))
        if segments[0].newest < horizon_ms and len(segments[0]):  # the open one, all expired
            vault.release(segments[0])
            segments[0] = Segment()
