"""Rows a store refused for their content, sent to the dead-letter topic by the sink itself.

A sink is the end of the flow, so it cannot hand a row back to the flow's dead-letter stream:
it writes the rejected row (as JSON, in the dead letter's `raw`) to the same Kafka topic with a
producer of its own, and waits for the broker's acknowledgement before the batch counts as
written (nothing is lost; a replay of the batch rejects the row again, a duplicate dead letter).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import structlog
from confluent_kafka import Producer

from schemas.events.envelope import DeadLetter

log = structlog.get_logger(__name__)
T = TypeVar("T")


class DeadLetterWriter:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
             "log_level": 0}
        )  # fmt: skip

    def reject(self, stage: str, what: str, content: Any, error: BaseException) -> None:
        """Dead-letter one refused row or entry: `what` names it, `content` is its values."""
        reason = f"{stage}: {what} refused: {type(error).__name__}: {error}"[:1000]
        raw = base64.b64encode(orjson.dumps(content, default=str)).decode("ascii")
        dead = DeadLetter(reason=reason, stage=stage, failed_at=datetime.now(UTC), raw=raw)
        log.warning("sink_row_rejected", stage=stage, what=what, error=str(error)[:300])
        self._producer.produce(self._topic, value=dead.to_bytes())
        if self._producer.flush(30) != 0:
            raise RuntimeError(f"dead letter for {what} not acknowledged by Kafka")

    def close(self) -> None:
        self._producer.flush(30)


def isolate(
    items: Sequence[T],
    write: Callable[[Sequence[T]], None],
    is_content_error: Callable[[BaseException], bool],
    reject: Callable[[T, BaseException], None],
) -> None:
    """`write(items)`; if the store refuses them for their content, halve and retry until the
    refused items stand alone, and `reject` each of those. Any other error propagates (the flow
    stops and resumes from its last snapshot, as for an outage). `O(k log n)` writes for `k` bad
    items among `n`."""
    try:
        write(items)
    except Exception as exc:
        if not is_content_error(exc):
            raise
        if len(items) == 1:
            reject(items[0], exc)
            return
        middle = len(items) // 2
        isolate(items[:middle], write, is_content_error, reject)
        isolate(items[middle:], write, is_content_error, reject)
