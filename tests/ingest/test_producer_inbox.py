"""`ingest.producer._Inbox`: the event loop polls for its messages' delivery reports while any
is in flight, reports from another thread reach the loop in batches, and a message nobody
reports on is settled as timed out after its grace period."""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError

from ingest.producer import _TIMED_OUT, _Inbox


async def test_reports_from_another_thread_settle_their_own_futures() -> None:
    loop = asyncio.get_running_loop()
    inbox = _Inbox(loop, grace=5, poll=lambda: None)
    futures = [loop.create_future() for _ in range(50)]
    for future in futures:
        inbox.expect(future)
    failed = KafkaError(KafkaError._MSG_TIMED_OUT)

    def poll_thread() -> None:  # as librdkafka's callbacks run: in the poll thread
        for n, future in enumerate(futures):
            inbox.put(future, failed if n == 7 else None, None)  # type: ignore[arg-type]

    thread = threading.Thread(target=poll_thread)
    thread.start()
    thread.join()
    results = await asyncio.wait_for(asyncio.gather(*futures), 2)
    assert results == [failed if n == 7 else None for n in range(50)]


async def test_a_message_without_a_report_times_out_after_the_grace_period() -> None:
    loop = asyncio.get_running_loop()
    inbox = _Inbox(loop, grace=0.2, poll=lambda: None)
    reported, silent = loop.create_future(), loop.create_future()
    inbox.expect(reported)
    await asyncio.sleep(0.1)
    inbox.expect(silent)  # a later deadline
    inbox.put(reported, None, None)  # type: ignore[arg-type]
    assert await asyncio.wait_for(reported, 1) is None
    assert not silent.done()
    started = loop.time()
    assert await asyncio.wait_for(silent, 2) is _TIMED_OUT
    assert 0.05 < loop.time() - started < 1  # at its own deadline, not the first one's


async def test_the_loop_polls_while_messages_are_in_flight_and_stops_after() -> None:
    loop = asyncio.get_running_loop()
    acked: list[asyncio.Future[KafkaError | None]] = []
    polls = 0

    def poll() -> None:  # as producer.poll(0): the reports' callbacks run right here
        nonlocal polls
        polls += 1
        if polls == 3:
            for future in acked:
                inbox.put(future, None, None)  # type: ignore[arg-type]

    inbox = _Inbox(loop, grace=5, poll=poll)
    acked.extend(loop.create_future() for _ in range(3))
    for future in acked:
        inbox.expect(future)
    assert inbox.polling
    assert await asyncio.wait_for(asyncio.gather(*acked), 2) == [None, None, None]
    await asyncio.sleep(0.05)
    assert polls == 3  # settled on the third poll; nothing in flight since: no more polls
    assert not inbox.polling
