"""The click store (`dataflows/attribution/clicks.py`): the same answers as one dict, an index
and a heap, across segments; snapshots re-pickle only the segments that changed."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.attribution import clicks as store_module
from dataflows.attribution.clicks import ClickStore
from dataflows.attribution.events import Click


def _click(n: int, visitor: str | None) -> Click:
    return (1_000 * n, "agt", "prg", "link", visitor, False, False)


def _filled(count: int) -> ClickStore:
    store = ClickStore()
    for n in range(count):
        store.add(f"c{n}", _click(n, f"v{n % 7}" if n % 3 else None))
    return store


def test_lookups_and_expiry_span_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "SEGMENT_SIZE", 10)
    store = _filled(35)
    assert len(store.segments) == 4
    assert len(store) == 35
    assert "c3" in store
    assert store.get("c34") == _click(34, "v6")
    assert store.visitor_clicks("v1") == [f"c{n}" for n in range(35) if n % 3 and n % 7 == 1]

    store.expire(12_000)  # clicks 0..11 occurred before 12 s
    assert set(store) == {f"c{n}" for n in range(12, 35)}
    assert len(store.segments) == 3  # the first segment emptied and went away
    assert store.visitor_clicks("v1") == [f"c{n}" for n in range(12, 35)
                                          if n % 3 and n % 7 == 1]  # fmt: skip
    store.expire(10**9)
    assert len(store) == 0
    assert store.visitor_count() == 0
    assert len(store.segments) == 1  # the open segment stays


def test_a_snapshot_re_pickles_only_the_segments_that_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "SEGMENT_SIZE", 10)
    store = _filled(30)
    first = pickle.dumps(store)
    packed = [s.packed for s in store.segments]
    store.add("new", _click(99, "v1"))  # lands in a new open segment
    second = pickle.dumps(store)
    assert [s.packed for s in store.segments[:3]] == packed  # the same bytes objects
    assert all(a is b for a, b in zip(packed, [s.packed for s in store.segments], strict=False))
    restored = pickle.loads(second)
    assert sorted(restored) == sorted(store)
    assert restored.visitor_clicks("v1") == store.visitor_clicks("v1")
    assert restored.get("new") == _click(99, "v1")
    assert pickle.loads(first).get("new") is None
    store.expire(5_000)  # hides clicks of the first segment: nothing is re-pickled
    assert store.segments[0].packed is packed[0]
    assert store.segments[1].packed is packed[1]
    assert pickle.loads(pickle.dumps(store)) == store  # the horizon travels with the store
    assert "c4" not in pickle.loads(pickle.dumps(store))


def test_a_snapshot_from_before_the_store_resumes_into_it() -> None:
    clicks = {f"c{n}": _click(n, "v") for n in range(5)}
    store = ClickStore.from_legacy(clicks)
    assert store.visitor_clicks("v") == list(clicks)
    store.expire(2_000)
    assert set(store) == {"c2", "c3", "c4"}


_IDS = st.one_of(
    st.integers(0, 40).map(lambda n: f"clk_{n:032x}"),  # the contract's form
    st.integers(0, 5).map(lambda n: f"c{n}"),  # anything else
)
_VISITORS = st.one_of(st.none(), st.sampled_from(["v1", "v2", "0" * 31 + "a", "f" * 32, "F" * 32]))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), _IDS, st.integers(0, 100), _VISITORS, st.booleans()),
            st.tuples(st.just("expire"), st.integers(0, 120)),
            st.tuples(st.just("pickle")),
        ),
        max_size=60,
    ),
    st.integers(1, 6),
)
def test_the_store_answers_as_a_dict_with_eager_expiry(
    ops: list[tuple[object, ...]], segment: int
) -> None:
    """Columns, logical expiry and pickling give the answers of one dict of tuples from which
    expiry removes old clicks at once (the model)."""
    store, model, horizon = ClickStore(segment), {}, -1
    for op in ops:
        if op[0] == "add":
            _, cid, at, visitor, bot = op
            if cid in model:  # the flow adds a click id once (dedup asks the store first)
                continue
            click = (at, "agt", None, "link", visitor, bot, False)
            if at < horizon:  # what the flow would call late: never added
                continue
            store.add(cid, click)  # type: ignore[arg-type]
            model[cid] = click
        elif op[0] == "expire":
            horizon = max(horizon, op[1])  # type: ignore[call-overload]
            store.expire(op[1])  # type: ignore[arg-type]
            model = {c: k for c, k in model.items() if k[0] >= horizon}
        else:
            store = pickle.loads(pickle.dumps(store))
        assert dict(zip(store, map(store.get, store), strict=True)) == model
        assert len(store) == len(model)
        assert bool(store) == bool(model)
        for visitor in ("v1", "v2", "0" * 31 + "a", "f" * 32, "F" * 32):
            assert store.visitor_clicks(visitor) == [c for c, k in model.items()
                                                     if k[4] == visitor]  # fmt: skip
        assert all(c in store for c in model)


def test_a_segment_pickled_before_columns_resumes() -> None:
    from dataflows.attribution.clicks import Segment

    old = pickle.dumps(({"c1": _click(1, "v"), "c2": _click(2, None)}, {"v": ["c1"]},
                        [(1_000, "c1"), (2_000, "c2")]))  # fmt: skip
    segment = Segment.unpack(old)
    assert [segment.click(segment.ids[k]) for k in ("c1", "c2")] == [_click(1, "v"),
                                                                     _click(2, None)]  # fmt: skip


def test_sealed_segments_of_one_size_merge_so_lookups_ask_few_segments() -> None:
    store = ClickStore(4)
    for n in range(4 * 4 * 16 + 3):  # 259 clicks in segments of 4
        store.add(f"c{n}", _click(n, f"v{n % 5}"))
    sizes = [len(s) for s in store.segments]
    # Merged by fours up to 16 segment sizes (64 clicks): 64, 64, 64, 64, then 3 open.
    assert sizes == [64, 64, 64, 64, 3]
    assert len(store) == 259
    assert store.get("c0") == _click(0, "v0")
    assert store.visitor_clicks("v2") == [f"c{n}" for n in range(259) if n % 5 == 2]
    packed = [s.pack() for s in store.segments]
    for n in range(259, 259 + 4 * 4):  # fills the open segment and three more: they merge
        store.add(f"c{n}", _click(n, None))
    assert [len(s) for s in store.segments] == [64, 64, 64, 64, 16, 3]
    assert all(a.packed is b for a, b in zip(store.segments[:4], packed, strict=False))
    assert store.segments[4].packed is None  # the merged one is pickled at the next snapshot
    store.expire(70_000)  # the first merged segment (clicks 0..63) is dropped whole
    assert [len(s) for s in store.segments] == [64, 64, 64, 16, 3]
    assert "c63" not in store
    assert "c70" in store


def test_a_click_filed_again_after_it_expired_is_found_once_after_merging() -> None:
    store = ClickStore(2)
    store.add("c1", _click(1, "v"))
    store.add("c2", _click(2, "v"))
    store.expire(1_500)  # c1 is gone
    store.add("c1", _click(5, "v"))  # the same id, filed again (a later segment)
    for n in range(3, 9):
        store.add(f"c{n}", _click(10 + n, "v"))
    assert len(store.segments) < 5  # merged
    assert store.get("c1") == _click(5, "v")
    assert store.visitor_clicks("v") == ["c2", "c1", *(f"c{n}" for n in range(3, 9))]
    assert len(store) == 8


def test_row_numbers_are_shared_objects_in_merged_and_restored_segments() -> None:
    """A row number above 256 would be an int object per click (28 bytes) in merged segments."""
    store = ClickStore(100)
    for n in range(4 * 4 * 100 + 1):
        store.add(f"c{n}", _click(n, None))
    assert max(len(s) for s in store.segments) == 1600
    for restored in (store, pickle.loads(pickle.dumps(store))):
        rows = [row for s in restored.segments for row in s.ids.values()]
        assert max(rows) == 1599
        assert all(row is store_module._row(row) for row in rows)
