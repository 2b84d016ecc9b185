"""The segment vault (`dataflows.vault`): snapshots name unchanged segments instead of copying
them, resume from the names, and retired files are kept for the grace, then deleted."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataflows import vault
from dataflows.attribution.clicks import ClickStore
from dataflows.attribution.events import Click
from dataflows.attribution.segments import SegmentedMap
from dataflows.vault import RETIRED, Vault, VaultError


@pytest.fixture
def store_dir(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "segments"
    vault.configure(root)
    yield root
    vault.configure(None)  # the vault is per process: leave none to the next test


def _click(i: int) -> tuple[str, Click]:
    visitor = f"{i % 50:032x}"
    return f"clk_{i:032x}", (1_000_000 + i, "agt_a", "prg_p", "L1", visitor, False, False)


def _files(root: Path) -> tuple[set[str], set[str]]:
    names = {p.name for p in root.iterdir() if not p.name.startswith(".")}
    return {n for n in names if RETIRED not in n}, {n for n in names if RETIRED in n}


def test_put_get_retire_take_back_and_sweep(tmp_path: Path) -> None:
    v = Vault(tmp_path / "v", grace_ms=1_000)
    name = v.put(b"segment bytes")
    assert v.get(name) == b"segment bytes"
    assert (v.written_files, v.written_bytes) == (1, 13)
    v.retire(name, now_ms=10_000)
    assert _files(v.root) == (set(), {f"{name}{RETIRED}10000"})
    assert v.get(name) == b"segment bytes"  # a resume of an older epoch still names it
    assert _files(v.root) == ({name}, set())
    v.retire(name, now_ms=10_000)
    v.retire(name, now_ms=10_500)  # twice (a state resumed twice): no error
    assert v.sweep(now_ms=10_900, force=True) == 0  # within the grace
    assert v.sweep(now_ms=11_000, force=True) == 1
    assert _files(v.root) == (set(), set())
    with pytest.raises(VaultError, match="refstream replay"):
        v.get(name)


def test_a_named_segment_needs_a_vault() -> None:
    vault.configure(None)
    assert vault.load(b"inline") == b"inline"
    with pytest.raises(VaultError, match="no segment vault"):
        vault.load("0123abcd")


def test_a_click_store_names_its_sealed_segments_and_resumes_from_them(store_dir: Path) -> None:
    store = ClickStore(256)
    for i in range(3_000):
        store.add(*_click(i))
    inline_size = len(_inline(store))
    first = pickle.dumps(store)
    v = vault.current()
    assert v is not None
    written = v.written_bytes
    assert len(first) < inline_size / 5  # the open segment's bytes and names
    assert written > inline_size / 2  # the sealed ones, once
    restored = pickle.loads(first)
    assert restored == store
    assert restored.visitor_clicks(f"{7:032x}") == store.visitor_clicks(f"{7:032x}")

    # A busy epoch: a few new clicks. Only the open segment and any newly sealed one are
    # written; the snapshot stays small.
    for i in range(3_000, 3_100):
        store.add(*_click(i))
    second = pickle.dumps(store)
    assert v.written_bytes - written < 256 * 200
    assert len(second) < inline_size / 5
    assert pickle.loads(second) == store
    # An idle epoch writes nothing new to the vault.
    before = v.written_bytes
    assert pickle.dumps(store) == second
    assert v.written_bytes == before


def _inline(store: ClickStore) -> bytes:
    """The store pickled without a vault (what a snapshot wrote before the vault)."""
    current = vault.current()
    vault.configure(None)
    try:
        return pickle.dumps(store)
    finally:
        vault._current = current


def test_merged_and_expired_segments_are_retired_and_an_older_snapshot_still_resumes(
    store_dir: Path,
) -> None:
    store = ClickStore(256)
    for i in range(768):  # three sealed segments and an open one
        store.add(*_click(i))
    older = pickle.dumps(store)
    live, retired = _files(store_dir)
    assert len(live) == 2
    assert not retired
    for i in range(768, 1_100):  # the fourth seals: the four sealed ones merge into one
        store.add(*_click(i))
    newer = pickle.dumps(store)
    live, retired = _files(store_dir)
    assert len(retired) == 2  # the merged parts that had files
    assert pickle.loads(newer) == store
    # Resuming the older epoch (a crash before the newer one committed) takes them back.
    resumed = pickle.loads(older)
    assert sorted(resumed) == sorted(_click(i)[0] for i in range(768))
    # Expiry drops whole segments: their files are retired.
    store.expire(1_000_000 + 1_050)
    pickle.dumps(store)
    v = vault.current()
    assert v is not None
    v.sweep(now_ms=1 << 62, force=True)
    live, retired = _files(store_dir)
    assert not retired
    assert pickle.loads(pickle.dumps(store)) == store


def test_an_inline_snapshot_resumes_under_a_vault(store_dir: Path) -> None:
    store = ClickStore(256)
    for i in range(1_000):
        store.add(*_click(i))
    assert pickle.loads(_inline(store)) == store


def test_a_segmented_map_renames_a_segment_that_changed(store_dir: Path) -> None:
    books: SegmentedMap[str, bytes] = SegmentedMap(10)
    for i in range(35):
        books.add(f"o{i}", b"book %d" % i, at_ms=i)
    pickle.dumps(books)
    live, retired = _files(store_dir)
    assert len(live) == 3
    assert not retired
    books["o3"] = b"refunded"  # an old book changes: its segment's file is retired
    snap = pickle.dumps(books)
    live, retired = _files(store_dir)
    assert len(live) == 3
    assert len(retired) == 1
    restored = pickle.loads(snap)
    assert restored == books
    assert restored["o3"] == b"refunded"
    assert [k for _, k, _ in restored.expire(12)] == [f"o{i}" for i in range(12)]
