"""`ingest.metrics.tally`: hot-path counts reach Prometheus one event-loop turn later, summed."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Histogram

from ingest.metrics import PRODUCE_SECONDS, REQUESTS, exposition, observe_all, tally


def _requests(outcome: str) -> float:
    return REQUESTS.labels("tally-test", "-", outcome)._value.get()  # type: ignore[no-any-return]


async def test_counts_are_added_once_per_loop_turn() -> None:
    before = _requests("accepted")
    for _ in range(3):
        tally.request("tally-test", "-", "accepted")
    assert _requests("accepted") == before  # nothing taken a lock for yet
    await asyncio.sleep(0)
    assert _requests("accepted") == before + 3


async def test_metrics_of_the_same_worker_include_what_is_pending() -> None:
    tally.request("tally-test", "-", "pending")
    tally.produced("tally-test-topic", 0.004)
    body, _ = exposition(None)  # before the loop turned
    assert b'endpoint="tally-test",outcome="pending"' in body
    assert b'refstream_ingest_produce_seconds_count{topic="tally-test-topic"} 1.0' in body
    assert PRODUCE_SECONDS.labels("tally-test-topic")._sum.get() == 0.004


def test_a_new_event_loop_schedules_its_own_flush() -> None:
    """A flush left pending on a loop that closed before running it (as between tests) does
    not stop the next loop from flushing."""
    before = _requests("loops")
    closed = asyncio.new_event_loop()
    closed.close()
    tally._scheduled = closed  # that loop's flush never ran

    async def count() -> None:
        tally.request("tally-test", "-", "loops")
        await asyncio.sleep(0)

    asyncio.run(count())
    assert _requests("loops") == before + 1


def test_a_turns_latencies_add_up_to_what_observe_would_have_counted() -> None:
    """`observe_all` adds each bucket's count and the sum once; /metrics reads the same as after
    one `observe` per latency (bounds themselves included: `le` counts amounts <= the bound)."""
    buckets = (0.001, 0.0025, 0.005, 0.01, 1.0)
    latencies = [0.0005, 0.001, 0.001, 0.0011, 0.0025, 0.004, 0.02, 0.5, 3.0, 0.0]
    one_by_one, all_at_once = CollectorRegistry(), CollectorRegistry()
    observed = Histogram("lat", "h", ["topic"], buckets=buckets, registry=one_by_one)
    added = Histogram("lat", "h", ["topic"], buckets=buckets, registry=all_at_once)
    for latency in latencies:
        observed.labels("t").observe(latency)
    observe_all(added.labels("t"), latencies)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for metric in registry.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    expected, got = samples(one_by_one), samples(all_at_once)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert got[("lat_bucket", "0.001")] == 4  # 0.0, 0.0005 and the two on the bound
    assert got[("lat_count", "")] == len(latencies)


async def test_the_latencies_of_one_turn_reach_the_histogram_together() -> None:
    child = PRODUCE_SECONDS.labels("tally-test-turn")
    before_sum = child._sum.get()
    for latency in (0.003, 0.004, 0.2):
        tally.produced("tally-test-turn", latency)
    await asyncio.sleep(0)
    assert child._sum.get() == pytest.approx(before_sum + 0.207)
    body, _ = exposition(None)
    assert b'refstream_ingest_produce_seconds_count{topic="tally-test-turn"} 3.0' in body
    bucket = b'refstream_ingest_produce_seconds_bucket{le="0.005",topic="tally-test-turn"} 2.0'
    assert bucket in body


def test_the_running_loop_is_asked_for_once_per_loop_not_per_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`asyncio.get_running_loop` makes a getpid system call: the tally asks it when the loop
    it flushed on last is not the one running, not on every flush."""
    asked: list[asyncio.AbstractEventLoop] = []
    real = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        asked.append(real())
        return asked[-1]

    monkeypatch.setattr("ingest.metrics.asyncio.get_running_loop", counted)
    before = _requests("turns")

    async def turns() -> None:
        for _ in range(5):
            tally.request("tally-test", "-", "turns")
            await asyncio.sleep(0)

    asyncio.run(turns())
    assert len(asked) <= 1  # 5 flushes (none if this loop is the one last asked for)
    asyncio.run(turns())  # a new loop: asked for once, and its flushes still run
    assert len(asked) <= 2
    assert asked[-1].is_closed()
    assert _requests("turns") == before + 10
