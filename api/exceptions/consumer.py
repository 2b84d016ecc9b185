"""The exceptions-inbox consumer: reads the dead-letter topic and stores each letter of a tenant
in PostgreSQL (`exceptions`), then commits its Kafka position. At-least-once: a batch stored and
not yet committed is read again after a restart and collapses on the derived id
(`ON CONFLICT DO NOTHING`). `refstream up` starts it (`refstream exceptions consume`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import orjson
import psycopg
import structlog
from confluent_kafka import Consumer, KafkaError, Message
from pydantic import ValidationError

from api.exceptions.letters import ExceptionRow, exception_row
from schemas.events.envelope import DeadLetter
from schemas.settings import Settings
from schemas.topics import Topic

log = structlog.get_logger(__name__)

GROUP_ID = "refstream-exceptions"

_INSERT = """
INSERT INTO exceptions (id, tenant_id, reason, stage, source, kind, event_id, entity_id, shop,
                        occurred_at, failed_at, event)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (id) DO NOTHING
"""


def rows_of(values: Sequence[bytes | None]) -> tuple[list[ExceptionRow], int]:
    """The inbox rows of the Kafka values, and how many values belong to no inbox (not a dead
    letter, or a letter naming no tenant)."""
    rows, skipped = [], 0
    for value in values:
        try:
            dead = DeadLetter.model_validate_json(value or b"")
        except ValidationError:
            skipped += 1
            continue
        row = exception_row(dead)
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    return rows, skipped


def store(conn: psycopg.Connection[tuple[object, ...]], rows: Sequence[ExceptionRow]) -> None:
    """Insert the rows (existing ids are kept as they are) in one transaction."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(
            _INSERT,
            [
                (r.id, r.tenant_id, r.reason, r.stage, r.source, r.kind, r.event_id, r.entity_id,
                 r.shop, r.occurred_at, r.failed_at,
                 orjson.dumps(r.event).decode() if r.event is not None else None)
                for r in rows
            ],
        )  # fmt: skip


def consume(
    settings: Settings,
    *,
    topic: str = Topic.DEADLETTER,
    group_id: str = GROUP_ID,
    stop: threading.Event | None = None,
    batch: int = 500,
) -> None:
    """Store the topic's letters until `stop` is set (forever without one)."""
    stop = stop or threading.Event()
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": group_id,
         "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0}
    )  # fmt: skip
    consumer.subscribe([topic])
    try:
        with psycopg.connect(settings.postgres_url, autocommit=True, connect_timeout=5) as conn:
            while not stop.is_set():
                messages: list[Message] = consumer.consume(num_messages=batch, timeout=0.5)
                values = [m.value() for m in messages if _ok(m)]
                if not messages:
                    continue
                rows, skipped = rows_of(values)
                if rows:
                    store(conn, rows)
                if skipped:
                    log.warning("dead_letters_without_tenant", count=skipped)
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def _ok(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("deadletter_consume_error", error=str(error))
    return False
