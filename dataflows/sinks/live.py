"""Live fan-out: after the ClickHouse sink has written conversions and commission entries,
publish them on Redis pub/sub (one channel per tenant, `schemas.live`) so the API can push them
to dashboards within a second of the write.

Best-effort by design: ClickHouse is the truth and the feed only prompts readers to look again.
A Redis outage never raises into the dataflow: the failure is logged and counted, and publishing
pauses for `backoff_seconds` (so a dead Redis costs at most one short timeout per pause, not one
per batch). A replayed batch is published again (at-least-once, same ids).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from schemas.live import LiveBatch, LiveConversion, LiveEntry, live_channel

log = structlog.get_logger(__name__)

Row = tuple[Any, ...]
MAX_ITEMS_PER_MESSAGE = 500  # keeps one pub/sub message well under ~100 KB


def _fields(columns: Sequence[str], row: Row) -> dict[str, Any]:
    return dict(zip(columns, row, strict=True))


def live_conversion(columns: Sequence[str], row: Row) -> tuple[str, LiveConversion]:
    """(tenant, message) of a `conversions` row."""
    f = _fields(columns, row)
    message = LiveConversion(
        id=f["conversion_id"], order=f["order_name"] or f["order_id"], agent_id=f["agent_id"],
        program_id=f["program_id"], revenue=f["revenue"], currency=f["currency"],
        occurred_at=f["occurred_at"], rule=f["rule"], order_id=f["order_id"],
    )  # fmt: skip
    return f["tenant_id"], message


def live_entry(columns: Sequence[str], row: Row) -> tuple[str, LiveEntry]:
    """(tenant, message) of a `commission_events` row."""
    f = _fields(columns, row)
    message = LiveEntry(
        id=f["entry_id"], agent_id=f["agent_id"], conversion_id=f["conversion_id"],
        order=f["order_id"], amount=f["amount"], currency=f["currency"], kind=f["kind"],
    )  # fmt: skip
    return f["tenant_id"], message


def live_batches(
    per_table: Mapping[str, Sequence[Row]],
    columns: Mapping[str, Sequence[str]],
    written_at: datetime,
    max_items: int = MAX_ITEMS_PER_MESSAGE,
) -> list[LiveBatch]:
    """The messages for one sink write: per tenant, its conversions and entries, split so that
    no message holds more than `max_items` of them. Other tables publish nothing."""
    conversions: dict[str, list[LiveConversion]] = {}
    entries: dict[str, list[LiveEntry]] = {}
    for row in per_table.get("conversions", ()):
        tenant, conversion = live_conversion(columns["conversions"], row)
        conversions.setdefault(tenant, []).append(conversion)
    for row in per_table.get("commission_events", ()):
        tenant, entry = live_entry(columns["commission_events"], row)
        entries.setdefault(tenant, []).append(entry)
    batches: list[LiveBatch] = []
    for tenant in sorted(conversions.keys() | entries.keys()):
        for conv, ent in _chunks(conversions.get(tenant, []), entries.get(tenant, []), max_items):
            batches.append(
                LiveBatch(tenant_id=tenant, written_at=written_at, conversions=conv, entries=ent)
            )
    return batches


def _chunks(
    conversions: list[LiveConversion], entries: list[LiveEntry], size: int
) -> Iterator[tuple[tuple[LiveConversion, ...], tuple[LiveEntry, ...]]]:
    # Conversions first, so a conversion never arrives after its own entries.
    items: list[LiveConversion | LiveEntry] = [*conversions, *entries]
    for start in range(0, len(items), size):
        part = items[start : start + size]
        yield (
            tuple(i for i in part if isinstance(i, LiveConversion)),
            tuple(i for i in part if isinstance(i, LiveEntry)),
        )


class LivePublisher:
    """Publishes `live_batches` on Redis; never raises for Redis trouble.

    Counters (read by tests and logged): `published` messages, `failures` (failed publish
    attempts) and `dropped` messages (not sent because Redis failed or publishing was paused).
    """

    def __init__(
        self,
        redis_url: str,
        columns: Mapping[str, Sequence[str]],
        *,
        timeout_seconds: float = 0.5,
        backoff_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._columns = columns
        self._backoff = backoff_seconds
        self._clock = clock
        self._paused_until = 0.0
        self.published = 0
        self.failures = 0
        self.dropped = 0
        # No retries inside redis-py: a retry loop would stall the dataflow during an outage.
        self._client = redis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
        )

    def publish(self, per_table: Mapping[str, Sequence[Row]], written_at: datetime) -> None:
        batches = live_batches(per_table, self._columns, written_at)
        if not batches:
            return
        if self._clock() < self._paused_until:
            self.dropped += len(batches)
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for batch in batches:
                pipe.publish(live_channel(batch.tenant_id), batch.to_bytes())
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self.failures += 1
            self.dropped += len(batches)
            self._paused_until = self._clock() + self._backoff
            log.warning(
                "live_publish_failed", error=f"{type(exc).__name__}: {exc}",
                failures=self.failures, dropped=self.dropped, paused_seconds=self._backoff,
            )  # fmt: skip
            return
        if self._paused_until:
            log.info("live_publish_recovered", failures=self.failures, dropped=self.dropped)
            self._paused_until = 0.0
        self.published += len(batches)

    def close(self) -> None:
        self._client.close()
