"""`ingest.clicks.RandomChunks`: a `/r/` click's random ids from os.urandom read in bulk."""

from __future__ import annotations

import os
import re
import threading

import pytest

from ingest import clicks
from schemas.ids import click_id_for_visitor


def test_ids_keep_their_format_and_the_visitors_tag() -> None:
    visitor = clicks.new_visitor_id()
    assert re.fullmatch(r"[0-9a-f]{32}", visitor)
    click = clicks.new_click_id(visitor)
    assert re.fullmatch(r"clk_[0-9a-f]{32}", click)
    # the same tag as the schemas' spelling: the dataflow files it with the visitor's clicks
    assert click[:8] == click_id_for_visitor(visitor)[:8]
    assert len({clicks.new_visitor_id() for _ in range(2000)}) == 2000


def test_one_getrandom_call_per_256_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real = os.urandom

    def counted(size: int) -> bytes:
        reads.append(size)
        return real(size)

    monkeypatch.setattr(clicks.os, "urandom", counted)
    chunks = clicks.RandomChunks()
    taken = [chunks.take() for _ in range(600)]
    assert reads == [4096, 4096, 4096]  # 256 + 256 + 88 of the third read
    assert all(len(chunk) == 16 for chunk in taken)
    assert len(set(taken)) == 600  # each chunk handed out once


def test_threads_never_get_the_same_chunk() -> None:
    chunks = clicks.RandomChunks(chunks=8)  # many refills, racing
    taken: list[list[bytes]] = [[] for _ in range(4)]

    def take(into: list[bytes]) -> None:
        for _ in range(5000):
            into.append(chunks.take())

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [chunk for into in taken for chunk in into]
    assert len(set(everything)) == len(everything) == 20000


def test_a_forked_child_does_not_reuse_the_parents_buffered_chunks() -> None:
    chunks = clicks.RandomChunks()
    chunks.take()  # 255 chunks now buffered
    buffered = set(chunks._queue)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first chunk must not be one the parent may hand out
        os.close(read)
        os.write(write, chunks.take())
        os._exit(0)
    os.close(write)
    child_chunk = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child_chunk) == 16
    assert child_chunk not in buffered
