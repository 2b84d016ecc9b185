"""The click store (`dataflows/attribution/clicks.py`): the same answers as one dict, an index
and a heap, across segments; snapshots re-pickle only the segments that changed."""

from __future__ import annotations

import pickle

import pytest

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
    store.expire(5_000)  # takes clicks from the first segment: only it is re-pickled
    assert store.segments[0].packed is None
    assert store.segments[1].packed is packed[1]


def test_a_snapshot_from_before_the_store_resumes_into_it() -> None:
    clicks = {f"c{n}": _click(n, "v") for n in range(5)}
    store = ClickStore.from_legacy(clicks, {"v": list(clicks)}, [(1_000 * n, f"c{n}")
                                                                  for n in range(5)])  # fmt: skip
    assert store.visitor_clicks("v") == list(clicks)
    store.expire(2_000)
    assert set(store) == {"c2", "c3", "c4"}
