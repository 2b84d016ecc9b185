"""librdkafka settings of every Kafka input of the dataflows. Imports nothing of the flow's, so
the benches' bare baselines use it too without the flow's start-up."""

from __future__ import annotations

from schemas.settings import Settings


def kafka_input_config(settings: Settings) -> dict[str, str]:
    """The settings of every Kafka input of the dataflows (the live flow, a replay from Kafka, the
    benches' baselines): quiet logs, and fetches that wait at most `settings.kafka_fetch_wait_ms`
    at the broker. tansu does not answer a waiting fetch when data arrives (Apache Kafka does):
    with librdkafka's 500 ms, one consumer reading 100 events/s saw an event 129 ms after it was
    written at the median and 252 ms at p99, against 27 and 52 ms at 100 ms; an idle flow over 7
    topics of 4 partitions then costs tansu 0.103 cores instead of 0.026, the flow 0.070 instead
    of 0.051 (`python -m bench.kafka_fetch_wait`, 2026-12-07; `REFSTREAM_KAFKA_FETCH_WAIT_MS`)."""
    return {"log_level": "0", "fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms)}
