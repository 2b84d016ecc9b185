"""An asyncio bridge to the Kafka producer: `await send(...)` returns once the broker acked.

The ingress answers 2xx only after `send` returned, so a 2xx event is always in Kafka. On a
down or slow broker `send` raises `ProduceFailed` within the configured timeout and the caller
answers 503 with Retry-After; a message that is delivered after we gave up shows up as a
duplicate downstream, where event ids make it harmless.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

# Errors after which this producer instance cannot write again (its idempotence state is gone,
# e.g. fenced after an epoch bump): a fresh producer with a new producer id is the way out.
_POISONED = frozenset(
    {
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.PRODUCER_FENCED,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError._FENCED,
    }
)


# A message's delivery report, as the event loop awaits it (None: acknowledged).
_Ack = asyncio.Future[KafkaError | None]
_TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "no broker ack in time")


class ProduceFailed(RuntimeError):
    """The broker did not acknowledge the write in time (or refused it)."""


def producer_config(bootstrap: str, timeout_seconds: float) -> dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 2,
        "batch.num.messages": 1000,
        "message.timeout.ms": int(timeout_seconds * 1000),
        "socket.timeout.ms": max(1000, int(timeout_seconds * 1000)),
        "queue.buffering.max.messages": 200_000,
        "log_level": 3,
    }


class EventProducer:
    """One confluent-kafka producer per process, polled by a background thread."""

    def __init__(self, bootstrap: str, timeout_seconds: float) -> None:
        self._config = producer_config(bootstrap, timeout_seconds)
        self._timeout = timeout_seconds
        self._producer = Producer(self._config)
        self._inbox: _Inbox | None = None  # delivery reports for the running event loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        """Serve delivery reports while no event loop does (`_Inbox` polls from the loop while
        it has messages in flight: no thread handing reports over, no GIL to hand back)."""
        while not self._stop.is_set():
            inbox = self._inbox
            if inbox is not None and inbox.polling:
                self._stop.wait(0.05)
            else:
                self._producer.poll(0.05)

    def _poll_now(self) -> None:
        self._producer.poll(0)

    async def send(self, topic: str, key: bytes, value: bytes) -> float:
        """Write one message and wait for the broker's ack; returns the ack latency in seconds."""
        inbox = self._inbox
        # The inbox's loop is the running one while it is open (a worker runs one loop; asking
        # for the running loop costs a getpid call); a new loop (tests) gets its own inbox.
        if inbox is None or inbox.loop.is_closed():
            inbox = self._inbox = _Inbox(
                asyncio.get_running_loop(), self._timeout + 0.5, self._poll_now
            )
        loop = inbox.loop
        done: _Ack = loop.create_future()
        started = time.perf_counter()
        producer = self._producer
        try:
            producer.produce(topic, value, key, on_delivery=functools.partial(inbox.put, done))
        except BufferError as exc:
            raise ProduceFailed("producer queue full") from exc
        except Exception as exc:  # KafkaException for a fatal producer state
            raise ProduceFailed(str(exc)) from exc
        inbox.expect(done)
        err = await done
        if err is _TIMED_OUT or (err is not None and err.code() == KafkaError._MSG_TIMED_OUT):
            await self._restart_if_poisoned(producer)
            raise ProduceFailed(f"no broker ack within {self._timeout:.1f}s")
        if err is not None:
            if err.fatal() or err.code() in _POISONED:
                self._restart(producer)
            raise ProduceFailed(err.str())
        return time.perf_counter() - started

    async def _restart_if_poisoned(self, producer: Producer) -> None:
        """A write timed out. If the broker answers metadata all the same, it is up but refuses
        this producer's writes: a restarted broker that lost its producer state answers
        UNKNOWN_PRODUCER_ID, which librdkafka retries until the message times out instead of
        reporting it, so the instance would never write again. Replace it then; a broker that
        does not answer at all (down, frozen) is waited for instead."""
        if producer is not self._producer:
            return  # another request already replaced it
        if await asyncio.to_thread(self.ready, 1.0) is None:
            self._restart(producer)

    def ready(self, timeout: float = 2.0) -> str | None:
        """None if the cluster answers a metadata request, else why not."""
        try:
            self._producer.list_topics(timeout=timeout)
        except Exception as exc:
            return str(exc)
        return None

    def _restart(self, poisoned: Producer) -> None:
        # A fatal idempotence error poisons the producer instance: replace it (once, however
        # many requests saw it fail).
        if poisoned is not self._producer:
            return
        self._producer = Producer(self._config)
        poisoned.flush(0)

    def close(self, timeout: float = 5.0) -> int:
        """Flush what is queued, stop polling; returns how many messages were left undelivered."""
        remaining: int = self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2)
        # Release the librdkafka instance now rather than at garbage collection: a lingering one
        # keeps reconnecting (and logging) to a broker that may be gone. `send` after `close`
        # then fails as ProduceFailed.
        del self._producer
        return remaining


class _Inbox:
    """Delivery reports of the messages one event loop produced.

    While messages are in flight the loop itself polls the producer every millisecond
    (`poll(0)`: the reports' callbacks run in the loop's thread and settle their futures
    directly); the poll thread steps aside meanwhile, so reports are not handed across threads
    one `call_soon_threadsafe` (and one GIL hand-over, up to the 5 ms switch interval) at a time.
    A report that still arrives in another thread (the poll thread's last wait, `flush`) is
    queued and the loop woken once for all that arrived before it ran. `expect` gives a
    message its deadline: one watchdog timer, set for the oldest message still unanswered,
    settles any the broker (and librdkafka's own `message.timeout.ms`) left without a report as
    timed out, where a timer per message used to.
    """

    __slots__ = ("_deadlines", "_grace", "_poll", "_reports", "_thread", "_ticker", "_watchdog",
                 "_woken", "loop")  # fmt: skip

    TICK = 0.001  # seconds between the loop's polls while messages are in flight

    def __init__(
        self, loop: asyncio.AbstractEventLoop, grace: float, poll: Callable[[], None]
    ) -> None:
        self.loop = loop
        self._grace = grace
        self._poll = poll
        self._thread = threading.get_ident()  # the loop's
        self._reports: collections.deque[tuple[_Ack, KafkaError | None]] = collections.deque()
        self._woken = False
        self._deadlines: collections.deque[tuple[float, _Ack]] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._ticker: asyncio.TimerHandle | None = None

    @property
    def polling(self) -> bool:
        """Whether the loop polls the producer (the poll thread then waits)."""
        return self._ticker is not None

    def put(self, future: _Ack, err: KafkaError | None, _msg: Message) -> None:
        """The delivery callback: settle the future in the loop's thread, else queue the report
        and wake the loop if needed."""
        if threading.get_ident() == self._thread:
            _settle(future, err)
            return
        self._reports.append((future, err))
        if not self._woken:
            self._woken = True
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Cleared before reading: a report queued from now on wakes the loop again.
        self._woken = False
        reports = self._reports
        while reports:
            future, err = reports.popleft()
            _settle(future, err)

    def expect(self, future: _Ack) -> None:
        """`future` is settled by its report, or as timed out after the grace period."""
        self._deadlines.append((self.loop.time() + self._grace, future))
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self._grace, self._watch)
        if self._ticker is None:
            self._ticker = self.loop.call_later(self.TICK, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        self._poll()
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        if deadlines:  # messages still in flight
            self._ticker = self.loop.call_later(self.TICK, self._tick)

    def _watch(self) -> None:
        self._watchdog = None
        deadlines, now = self._deadlines, self.loop.time()
        while deadlines:
            deadline, future = deadlines[0]
            if not future.done():
                if deadline > now:
                    self._watchdog = self.loop.call_at(deadline, self._watch)
                    return
                _settle(future, _TIMED_OUT)
            deadlines.popleft()


def _settle(future: _Ack, err: KafkaError | None) -> None:
    if not future.done():
        future.set_result(err)
