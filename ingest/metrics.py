"""Prometheus metrics of the ingress. With several uvicorn workers, `PROMETHEUS_MULTIPROC_DIR`
is set by the launcher (`refstream ingest serve`) and /metrics aggregates every worker.

The hot path's request counts and produce latencies go through `tally`: a request adds to a
plain dict (no lock, no label lookup), and the event loop's next turn adds the sums to the
Prometheus values (whose every `labels()` and `inc()` takes a lock, and in multiprocess mode
writes the shared file): one update per label set per turn, however many requests the turn
answered, and for the latencies one per histogram bucket they fell in (`observe_all`). A count
is in /metrics one loop turn after its answer was sent; /metrics of the same worker adds what
is pending first.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)


class _ProcessId:
    """This process's id, asked of the kernel once (and again in a forked child).

    prometheus_client's multiprocess values ask `os.getpid()` on every `inc` and `observe`, to
    notice a fork: a system call each (~1 µs on the bench machine), two per produce latency
    observed. The fork is noticed here instead (`os.register_at_fork`), so a child's values go
    to its own files all the same."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()

    def __call__(self) -> int:
        return self.pid


if values.ValueClass._multiprocess:  # PROMETHEUS_MULTIPROC_DIR set (`refstream ingest serve`)
    values.ValueClass = values.MultiProcessValue(process_identifier=_ProcessId())  # type: ignore[no-untyped-call]

REQUESTS = Counter(
    "refstream_ingest_requests_total",
    "Ingress requests by endpoint, topic and outcome.",
    ["endpoint", "topic", "outcome"],
)
PRODUCE_SECONDS = Histogram(
    "refstream_ingest_produce_seconds",
    "Time from produce to the broker's ack.",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DEDUP_HITS = Counter(
    "refstream_ingest_dedup_hits_total", "Deliveries recognised as duplicates.", ["source"]
)
DEAD_LETTERS = Counter(
    "refstream_ingest_dead_letters_total", "Authenticated bodies sent to the dead-letter topic.",
    ["source"],
)  # fmt: skip
REDIS_UNAVAILABLE = Counter(
    "refstream_ingest_redis_unavailable_total",
    "Guard operations that found Redis unreachable and failed open (see ingest/guards.py).",
    ["operation"],
)
CLICKS_LOST = Counter(
    "refstream_ingest_clicks_unrecorded_total",
    "Redirects served while the broker did not acknowledge the click.",
)

CLICKS_REDATED = Counter(
    "refstream_ingest_clicks_redated_total",
    "Pixel clicks recorded at their arrival instead of their claimed time, by reason"
    " (too_old: beyond the program's max click age; in_future: more than 5 minutes ahead).",
    ["reason"],
)


class Tally:
    """Request counts and produce latencies collected without locks, flushed once per turn."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, str], int] = {}
        self._produce: dict[str, list[float]] = {}  # latencies by topic
        # The loop a flush is scheduled on (a flush pending on a loop that has since closed,
        # as between tests, does not stop the next loop from scheduling its own).
        self._scheduled: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the last one scheduled on
        # The labelled children, looked up once (a label set's child never changes).
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def request(self, endpoint: str, topic: str, outcome: str) -> None:
        key = (endpoint, topic, outcome)
        self._requests[key] = self._requests.get(key, 0) + 1
        self._schedule()

    def produced(self, topic: str, seconds: float) -> None:
        latencies = self._produce.get(topic)
        if latencies is None:
            self._produce[topic] = [seconds]
        else:
            latencies.append(seconds)
        self._schedule()

    def _schedule(self) -> None:
        scheduled = self._scheduled
        if scheduled is not None and not scheduled.is_closed():
            return  # a flush is pending (asking for the running loop costs a getpid call)
        # The loop of the last flush, while it is the one running (a worker runs one loop):
        # `get_running_loop` makes a getpid system call, once per flush.
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        self._scheduled = loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = None
        requests, self._requests = self._requests, {}
        produce, self._produce = self._produce, {}
        counters, histograms = self._counters, self._histograms
        for labels, count in requests.items():
            counter = counters.get(labels)
            if counter is None:  # `labels()` takes a lock and builds a key: once per label set
                counter = counters[labels] = REQUESTS.labels(*labels)
            counter.inc(count)
        for topic, latencies in produce.items():
            histogram = histograms.get(topic)
            if histogram is None:
                histogram = histograms[topic] = PRODUCE_SECONDS.labels(topic)
            observe_all(histogram, latencies)


def observe_all(histogram: Histogram, amounts: list[float]) -> None:
    """What `histogram.observe(amount)` for each of `amounts` adds up to, added once: the sum,
    and each bucket's count. `observe` adds to two values per amount (the sum and a bucket),
    each add taking prometheus_client's lock and, in multiprocess mode, writing the value's
    file; here a turn's latencies of a topic cost one add to the sum and one per bucket they
    fall in. Buckets as `observe` counts them: the first upper bound >= the amount."""
    bounds: list[float] = histogram._upper_bounds
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect.bisect_left(bounds, amount)] += 1
    histogram._sum.inc(sum(amounts))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


tally = Tally()


def exposition(multiprocess_dir: Path | None) -> tuple[bytes, str]:
    tally.flush()
    if multiprocess_dir is None:
        return generate_latest(), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
