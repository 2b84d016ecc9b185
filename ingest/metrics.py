"""Prometheus metrics of the ingress. With several uvicorn workers, `PROMETHEUS_MULTIPROC_DIR`
is set by the launcher (`refstream ingest serve`) and /metrics aggregates every worker."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

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


def exposition(multiprocess_dir: Path | None) -> tuple[bytes, str]:
    if multiprocess_dir is None:
        return generate_latest(), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
