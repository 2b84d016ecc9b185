"""`ingest.metrics.tally`: hot-path counts reach Prometheus one event-loop turn later, summed."""

from __future__ import annotations

import asyncio

from ingest.metrics import PRODUCE_SECONDS, REQUESTS, exposition, tally


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
