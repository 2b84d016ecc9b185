"""The segmented map (seen ids, order books, order names): the same answers as a dict with an
expiry heap under any sequence of operations, and snapshots that re-pickle only what changed."""

from __future__ import annotations

import heapq
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.attribution.local import builder
from dataflows.attribution.messages import book_key
from dataflows.attribution.segments import SegmentedMap
from dataflows.config import StaticConfig
from tests.dataflows.builders import (
    T0,
    click,
    click_id,
    days,
    kinds,
    order,
    refund,
    snapshot,
    tenant_keyed,
)
from tests.dataflows.test_state import Clock, event, logic

TENANT = "t_state"

keys = st.sampled_from([f"k{n}" for n in range(12)])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), keys, st.integers(0, 100)),
        st.tuples(st.just("set"), keys, st.integers(0, 100)),
        st.tuples(st.just("pop"), keys, st.just(0)),
        st.tuples(st.just("expire"), st.just(""), st.integers(0, 110)),
        st.tuples(st.just("snapshot"), st.just(""), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=1000, deadline=None)
@given(operations, st.integers(1, 4))
def test_behaves_like_a_dict_with_an_expiry_heap(
    ops: list[tuple[str, str, int]], size: int
) -> None:
    segmented: SegmentedMap[str, int] = SegmentedMap(size)
    model: dict[str, int] = {}
    heap: list[tuple[int, str, int]] = []  # (time, key, generation): a re-added key is new
    generation: dict[str, int] = {}
    for op, key, n in ops:
        if op == "add" and key not in model:
            segmented.add(key, n, n)
            model[key] = n
            generation[key] = generation.get(key, 0) + 1
            heapq.heappush(heap, (n, key, generation[key]))
        elif op == "set":  # keeps the time of a key that has one; a new key gets none
            if key not in model:
                generation[key] = generation.get(key, 0) + 1
            segmented[key] = n
            model[key] = n
        elif op == "pop":  # the key goes with its time
            generation[key] = generation.get(key, 0) + 1
            assert segmented.pop(key) == model.pop(key, None)
        elif op == "expire":
            expected = set()
            while heap and heap[0][0] < n:
                _, gone, gen = heapq.heappop(heap)
                if gen == generation[gone] and gone in model:
                    expected.add(gone)
                    del model[gone]
            removed = {k for _, k, value in segmented.expire(n) if value is not None}
            assert removed == expected
        elif op == "snapshot":
            segmented = pickle.loads(pickle.dumps(segmented))
        assert dict(segmented.items()) == model
        assert len(segmented) == len(model)
        assert bool(segmented) == bool(model)
        assert all(k in segmented and segmented[k] == v for k, v in model.items())


def test_a_snapshot_re_pickles_only_the_segments_that_changed() -> None:
    segmented: SegmentedMap[str, bytes] = SegmentedMap(100)
    for n in range(1_000):
        segmented.add(f"o{n}", b"x" * 100, n)
    pickle.dumps(segmented)
    packed = [s.packed for s in segmented.segments]
    assert all(p is not None for p in packed)

    segmented[f"o{5}"] = b"changed"  # an update in the oldest segment
    segmented.add("new", b"y", 2_000)  # and a new key in the newest
    restored = pickle.loads(pickle.dumps(segmented))
    again = [s.packed for s in segmented.segments]
    same = [a is b for a, b in zip(packed, again, strict=False)]
    assert same == [False] + [True] * 9  # only the updated one of the full segments
    assert len(again) == 11  # the new key opened a segment of its own
    assert restored == segmented
    assert restored["o5"] == b"changed"


def test_expiry_drops_emptied_segments_but_keeps_the_newest() -> None:
    segmented: SegmentedMap[str, int] = SegmentedMap(10)
    for n in range(35):
        segmented.add(f"k{n}", n, n)
    assert len(segmented.segments) == 4
    gone = segmented.expire(25)
    assert [key for _, key, _ in gone] == [f"k{n}" for n in range(25)]
    assert len(segmented.segments) == 2
    assert len(segmented) == 10
    segmented.expire(1_000)
    assert len(segmented.segments) == 1
    assert not segmented


def test_a_snapshot_from_before_the_segmented_maps_resumes() -> None:
    """A state pickled when seen ids, order books and order names were dicts with heaps."""
    first = logic(clock=Clock(0))
    first.on_item(event(click(TENANT, click_id(1), at=T0)))
    placed = event(order(TENANT, 1001, at=T0 + days(1), cites=click_id(1)))
    first.on_item(placed)
    old = tenant_keyed(first)
    old.seen_heap = [(at, key) for key, at in old.seen.items()]
    old.seen = dict(old.seen.items())  # type: ignore[assignment]
    old.order_heap = [(placed.occurred_ms, "1001")]
    old.orders = dict(old.orders.items())  # type: ignore[assignment]
    old.order_refs = dict(old.order_refs.items())  # type: ignore[assignment]
    resumed = builder(StaticConfig(snapshot(TENANT)), None, Clock(0))(pickle.dumps(old))

    state = resumed.state
    assert isinstance(state.seen, SegmentedMap)
    assert isinstance(state.orders, SegmentedMap)
    assert set(state.orders) == {"1001"}
    assert state.order_heap == []
    assert state.seen_heap == []
    assert resumed.on_item(placed)[0] == []  # still a duplicate (and the book handed over)
    out, _ = resumed.on_item(event(refund(TENANT, 1001, 9, [(1, 1)], at=T0 + days(2))))
    assert kinds(out).count("entry") == 2  # the book is there: its reversals
    # and the book still expires after the order retention, in its bucket
    books = resumed.books[book_key(TENANT, "1001")].state.orders
    assert [key for _, key, _ in books.expire(placed.occurred_ms + 1)] == ["1001"]
