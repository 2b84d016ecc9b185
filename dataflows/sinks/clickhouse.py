"""ClickHouse sink: batches of rows per table, inserted with clickhouse-connect. Idempotent.

Rows are built by the pure `*_row` functions; the flow batches them upstream with `op.collect`
keyed by table name (the batch buffer is recovery state, never a buffer inside the sink). Every
table is a `ReplacingMergeTree` keyed by ids derived from the inputs, and each row's `version` is
derived from the input too (receive time of the event that produced it), so a replay or a
retried batch writes identical rows that collapse: totals read with `FINAL` never change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, Literal

import clickhouse_connect
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from typing_extensions import override

from dataflows.attribution.events import (
    AnyClick,
    AnyEnvelope,
    AnyRefund,
    refund_body,
    ticks_us,
    to_ms,
)
from dataflows.attribution.wire import JsonEnvelope
from dataflows.sinks.deadletter import DeadLetterWriter, isolate
from dataflows.sinks.live import LivePublisher
from dataflows.sinks.retry import with_retries
from schemas.events.envelope import BodyEncoding
from schemas.ledger import AttributedConversion, CommissionAccrual, RejectedCandidate
from schemas.settings import Settings
from schemas.topics import Topic

Row = tuple[Any, ...]

COLUMNS: dict[str, tuple[str, ...]] = {
    "raw_events": (
        "tenant_id", "source", "kind", "event_id", "shop", "entity_id", "occurred_at",
        "received_at", "schema_version", "body_sha256", "headers", "body", "body_encoding",
        "occurred_at_us", "occurred_offset_s", "received_at_us", "received_offset_s",
        "content_type",
    ),
    "clicks": (
        "tenant_id", "click_id", "link_code", "program_id", "agent_id", "shop", "visitor_id",
        "occurred_at", "landing_url", "referrer", "user_agent", "ip_hash", "is_bot",
        "is_duplicate", "version",
    ),
    "conversions": (
        "tenant_id", "conversion_id", "shop", "order_id", "order_name", "occurred_at",
        "attributed_at", "rule", "agent_id", "program_id", "click_id", "coupon_code",
        "customer_id", "is_new_customer", "currency", "revenue", "fx_rate", "source_event_id",
        "version", "link_code", "explanation", "rejected",
    ),
    "commission_events": (
        "tenant_id", "entry_id", "agent_id", "program_id", "conversion_id", "order_id",
        "line_item_id", "kind", "status", "level", "amount", "currency", "fx_rate", "rule_id",
        "rule_version", "occurred_at", "source_event_id", "version", "shop", "link_code",
        "coupon_code",
    ),
    "refunds": (
        "tenant_id", "refund_id", "order_id", "shop", "occurred_at", "currency", "amount",
        "fx_rate", "line_count", "source_event_id", "version",
    ),
}  # fmt: skip

ENTRY_VERSION = 1  # ledger entries never change: one version


# Enum members' values are read as `_value_`: `.value` is a Python-level property in 3.11,
# 0.28 µs a read against 0.03 (measured), and these rows are made for every event.


_UTF8 = BodyEncoding.UTF8._value_


def _offset_s(when: datetime) -> int:
    if when.tzinfo is UTC:  # most times (msgspec decodes "Z" to this one object)
        return 0
    offset = when.utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def raw_event_row(envelope: AnyEnvelope, ticks: tuple[int, int] | None = None) -> Row:
    """The archive row: everything `dataflows.replay.envelope_bytes` needs to rebuild the
    envelope's Kafka bytes exactly (times to the microsecond with their UTC offset). `ticks`:
    the envelope's occurred and received times as `ticks_us`, when the caller has them."""
    occurred, received = envelope.occurred_at, envelope.received_at
    occurred_us, received_us = ticks or (ticks_us(occurred), ticks_us(received))
    ref = envelope.payload_ref
    # A form-2 envelope's `body_encoding` is a property returning one enum member (0.27 µs a
    # read, measured, against 0.03 for this type test); UTC times (most) need no offset call.
    encoding = _UTF8 if type(envelope) is JsonEnvelope else envelope.body_encoding._value_
    return (
        envelope.tenant_id, envelope.source._value_, envelope.kind, envelope.event_id,
        envelope.shop, envelope.entity_id, occurred_us // 1000, received_us // 1000,
        envelope.schema_version, ref.sha256, envelope.headers, envelope.body, encoding,
        occurred_us, 0 if occurred.tzinfo is UTC else _offset_s(occurred), received_us,
        0 if received.tzinfo is UTC else _offset_s(received), ref.content_type,
    )  # fmt: skip


def click_row(click: AnyClick, envelope: AnyEnvelope, times: tuple[int, int] | None = None) -> Row:
    """The `clicks` row. `times`: the click's time and the envelope's received time in
    milliseconds (`to_ms`), when the caller has them."""
    click_ms, version = times or (to_ms(click.occurred_at), to_ms(envelope.received_at))
    return (
        envelope.tenant_id, click.click_id, click.link_code, click.program_id, click.agent_id,
        click.shop or envelope.shop, click.visitor_id, click_ms, click.landing_url,
        click.referrer, click.user_agent, click.ip_hash, click.is_bot, click.is_duplicate,
        version,
    )  # fmt: skip


# The fields of one `conversions.rejected` element, in the column's tuple order (ClickHouse 0006).
REJECTED_FIELDS = ("kind", "ref", "agent_id", "program_id", "link_code", "at", "code", "reason")


def rejected_value(r: RejectedCandidate) -> tuple[Any, ...]:
    """One element of the `conversions.rejected` column: a tuple in `REJECTED_FIELDS` order."""
    return (r.kind._value_, r.ref, r.agent_id, r.program_id, r.link_code, r.at, r.code._value_,
            r.reason)  # fmt: skip


def conversion_row(c: AttributedConversion) -> Row:
    """The `conversions` row of a decided order, attributed or not: the decision's facts, its
    explanation and every rejected candidate with its reason (ClickHouse 0006)."""
    return (
        c.tenant_id, c.conversion_id, c.shop, c.order_id, c.order_name, c.occurred_at,
        c.attributed_at, c.rule._value_, c.agent_id, c.program_id, c.click_id, c.coupon_code,
        c.customer_id, c.is_new_customer, c.currency, c.revenue, c.fx_rate, c.source_event_id,
        to_ms(c.attributed_at), c.link_code, c.explanation,
        [rejected_value(r) for r in c.rejected],
    )  # fmt: skip


def entry_row(e: CommissionAccrual) -> Row:
    """The `commission_events` row, with the order's shop, coupon and link (issue #16), so
    analytics filters and groups commission without looking up the entry's conversion."""
    return (
        e.tenant_id, e.entry_id, e.agent_id, e.program_id, e.conversion_id, e.order_id,
        e.line_item_id, e.kind._value_, e.status._value_, e.level, e.amount, e.currency, e.fx_rate,
        e.rule_id, e.rule_version, e.occurred_at, e.source_event_id, ENTRY_VERSION, e.shop,
        e.link_code, e.coupon_code,
    )  # fmt: skip


def refund_row(envelope: AnyEnvelope, refund: AnyRefund | None = None) -> Row:
    """The `refunds` row of a Shopify refunds/create envelope (analytics' refunded revenue).

    `amount` is the refunded lines' merchandise subtotal in shop money (after discounts, as
    Shopify reports it); shipping and goodwill adjustments are not revenue and are left out.
    `fx_rate` stays NULL: queries use the rate of the order's conversion. `ValueError` if the body
    is not a refund (the flow passes the body `events.refund_event` decoded, `refund`).

    The row carries no agent, program, coupon or link: it is written from the webhook alone, and
    the order's decision may not exist yet (a refund delivered before its order, an order dead-
    lettered until its fx rate exists). Analytics attributes a refund through its order's
    conversion when it reads it: the rollup builder for closed hours (one day's refunds, looked
    up by order id, the key of `conversion_orders`), queries only for the raw ranges they read;
    writing a conversion touches its refunds' hours, so they are rebuilt (ClickHouse 0007).
    """
    if refund is None:  # the flow passes the body it decoded for the refund's event
        if envelope.kind != "refunds/create":
            raise ValueError(f"{envelope.kind} is not a refund")
        refund = refund_body(envelope.raw_body())
    amount = Decimal(0)
    currencies: list[str] = []
    for line in refund.refund_line_items:
        if line.subtotal_set is not None:
            amount += line.subtotal_set.shop_money.amount
            currencies.append(line.subtotal_set.shop_money.currency_code)
        elif line.subtotal is not None:
            amount += line.subtotal
    currencies.extend(t.currency for t in refund.transactions if t.currency)
    occurred_at = refund.processed_at or refund.created_at or envelope.occurred_at
    return (
        envelope.tenant_id, str(refund.id), str(refund.order_id), envelope.shop, occurred_at,
        currencies[0] if currencies else None, amount, None, len(refund.refund_line_items),
        envelope.event_id, to_ms(envelope.received_at),
    )  # fmt: skip


def client_for(settings: Settings, *, compress: bool = True) -> Client:
    """A clickhouse-connect client of `settings.clickhouse`. `compress`: clickhouse-connect's
    own (LZ4 request bodies and compressed answers when True, its default)."""
    target = settings.clickhouse
    return clickhouse_connect.get_client(
        host=target.host, port=target.port, username=target.username, password=target.password,
        database=target.database, secure=target.secure, compress=compress,
    )  # fmt: skip


Compression = bool | Literal["auto"]
_COMPRESSION_SETTING: dict[str, Compression] = {"auto": "auto", "on": True, "off": False}


def compresses(host: str, compression: Compression = "auto") -> bool:
    """Whether the sink compresses its inserts to a server at `host`. "auto" (the default):
    not to a server on this machine's loopback interface (`localhost`, 127.0.0.0/8, ::1), where
    LZ4 only costs CPU on both ends of a copy in memory (measured: 0.2-0.4 µs a row in the flow
    for the archive tables, and the server's decompression) and saves no transfer; yes to any
    other host, as clickhouse-connect does. A name is not resolved: only `localhost` counts."""
    if compression != "auto":
        return bool(compression)
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name
        return True


def wire_type(column_type: ClickHouseType) -> ClickHouseType:
    """The type the sink declares for a column in its Native insert blocks: the column's own,
    except `FixedString(N)`, sent as `String` (clickhouse-connect encodes FixedString values in a
    Python loop, String ones in its compiled code: 0.15 against 0.05 µs a value, measured). The
    server converts a block column to the table's type (ClickHouse's `NativeReader` casts it when
    `input_format_native_allow_types_conversion` is on: the default since 23.3, and every insert
    of the sink sets it, `INSERT_SETTINGS`), with the same bytes: zero-padded to N. A value
    longer than N is refused by the server (TOO_LARGE_STRING_SIZE, a content error:
    dead-lettered like clickhouse-connect's own refusal before). LowCardinality columns keep
    their type: sent as their base types they measured no cheaper in the flow (clickhouse-
    connect's Python dictionary build costs about what its String encoding costs) and cost the
    server a conversion."""
    if column_type.base_type == "FixedString" and not (
        column_type.nullable or column_type.low_card
    ):
        return get_from_name("String")
    return column_type


ASYNC_BELOW_ROWS = 1000
# Every insert: the server converts the block's `wire_type` columns to the table's types.
INSERT_SETTINGS = {"input_format_native_allow_types_conversion": 1}
ASYNC_INSERT = {**INSERT_SETTINGS, "async_insert": 1, "wait_for_async_insert": 1}

# ClickHouse error codes that mean "this row's content", not "the server": bad numbers, dates,
# overflows, type mismatches.
CONTENT_ERROR_CODES = frozenset({6, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 407})


def is_content_error(exc: BaseException) -> bool:
    """A refusal that retrying the same row can never fix: the client could not serialise it
    (`DataError`), or the server rejected its values. Connection failures are not."""
    if isinstance(exc, OperationalError) or not isinstance(exc, DatabaseError):
        return False
    code = getattr(exc, "code", None)
    return code is None or int(code) in CONTENT_ERROR_CODES


def is_unavailable(exc: BaseException) -> bool:
    """The server could not be reached or dropped the connection: worth waiting for."""
    return isinstance(exc, OperationalError)


class _Partition(StatelessSinkPartition[tuple[str, list[Row]]]):
    """Writes each pass's rows, one insert per table; the tables of one pass concurrently.

    A pass's tables (an order's `raw_events`, `conversions` and `commission_events`; a click's
    `raw_events` and `clicks`) are inserted at the same time, each by its own client (one
    clickhouse-connect client runs one query at a time): the pass then waits for the slowest
    insert instead of their sum. Small inserts wait for the server's asynchronous flush (below),
    so in series a new conversion waited for the archive rows' flush before its own (measured
    by `bench.dataflow`'s freshness windows). `write_batch` still returns only once every insert
    has returned (or dead-lettered what the server refused): what bytewax counts as written is
    written, and a live reader is told only about rows it can read."""

    def __init__(
        self, settings: Settings, deadletter_topic: str, compression: Compression = "auto"
    ) -> None:
        self._settings = settings
        self._compress = compresses(settings.clickhouse.host, compression)
        self._clients: dict[str, Client] = {}  # one per table (see the class docstring)
        # Each table's column types as sent (`wire_type`), read once (`create_insert_context`
        # asks the server for them): an insert then costs one request, not a DESCRIBE and the
        # insert.
        self._types: dict[str, Sequence[ClickHouseType]] = {}
        self._pool = ThreadPoolExecutor(len(COLUMNS), thread_name_prefix="clickhouse-sink")
        self._live = LivePublisher(settings.redis_url, COLUMNS)
        self._dead = DeadLetterWriter(settings.kafka_bootstrap, deadletter_topic)

    def write_batch(self, items: list[tuple[str, list[Row]]]) -> None:
        per_table: dict[str, list[Row]] = {}
        for table, rows in items:
            per_table.setdefault(table, []).extend(rows)
        if len(per_table) == 1:
            for table, rows in per_table.items():
                self._write_table(table, rows)
        else:
            futures = [self._pool.submit(self._write_table, t, r) for t, r in per_table.items()]
            wait(futures)  # every insert has returned before anything is raised or published
            for future in futures:
                future.result()  # the first failure stops the flow, as in series
        # Only after every insert returned: a live reader must find the rows it is told about.
        self._live.publish(per_table, datetime.now(UTC))

    def _write_table(self, table: str, rows: list[Row]) -> None:
        # One row ClickHouse refuses for its content is dead-lettered, not the batch retried
        # forever (which would stop the flow for every tenant).
        isolate(rows, partial(self._insert, table), is_content_error,
                partial(self._reject, table))  # fmt: skip

    def _client(self, table: str) -> Client:
        client = self._clients.get(table)
        if client is None:
            client = self._clients[table] = client_for(self._settings, compress=self._compress)
        return client

    def _insert(self, table: str, rows: Sequence[Row]) -> None:
        # Adaptive batching writes small batches when the flow is idle: those go through the
        # server's asynchronous insert buffer (acknowledged once flushed), so a trickle does not
        # make one part per row; large batches are parts of their own.
        settings = ASYNC_INSERT if len(rows) < ASYNC_BELOW_ROWS else INSERT_SETTINGS
        columns = list(COLUMNS[table])
        with_retries(lambda: self._insert_once(table, columns, rows, settings), is_unavailable,
                     store="clickhouse")  # fmt: skip

    def _insert_once(
        self, table: str, columns: list[str], rows: Sequence[Row], settings: dict[str, int]
    ) -> None:
        client = self._client(table)
        if table not in self._types:
            context = client.create_insert_context(table, column_names=columns)
            self._types[table] = [wire_type(t) for t in context.column_types]
        try:
            client.insert(
                table, list(rows), column_names=columns, column_types=self._types[table],
                settings=settings,
            )  # fmt: skip
        except Exception:
            # The table may have changed under us (a migration while running): ask again.
            self._types.pop(table, None)
            raise

    def _reject(self, table: str, row: Row, error: BaseException) -> None:
        self._dead.reject(
            "sink:clickhouse", f"{table} row", dict(zip(COLUMNS[table], row, strict=True)), error
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for client in self._clients.values():
            client.close()
        self._live.close()
        self._dead.close()


class ClickHouseSink(DynamicSink[tuple[str, list[Row]]]):
    """Writes `(table, rows)` batches; one client per table and worker. Rows the server refuses
    for their content go to `deadletter_topic` (see `dataflows.sinks.deadletter`).

    `compression`: whether inserts are LZ4-compressed. "auto": not when the server is on the
    loopback interface, yes otherwise (`compresses`); True or False force it. Not given: the
    setting `REFSTREAM_CLICKHOUSE_COMPRESSION` (`auto`, `on`, `off`; default `auto`)."""

    def __init__(
        self,
        settings: Settings,
        deadletter_topic: str = Topic.DEADLETTER,
        compression: Compression | None = None,
    ) -> None:
        self._settings = settings
        self._deadletter_topic = deadletter_topic
        if compression is None:
            compression = _COMPRESSION_SETTING[settings.clickhouse_compression]
        self._compression: Compression = compression

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self._settings, self._deadletter_topic, self._compression)
