"""The attribution dataflow: Kafka envelopes → click shards, tenants and order books →
ClickHouse, the PostgreSQL ledger and the dead-letter topic. This module only wires named steps;
the logic is in `events` (parsing), `stages.clicks` (click shards), `stages.tenant` (the tenant
stage: decisions), `stages.books` (order books: commission, adjustments, holds) and
`dataflows.sinks`.

    python -m bytewax.run "dataflows.attribution.flow:build()"      # reads Settings()
    refstream dataflow run [--recovery-dir D] [--workers N]

Step ids are part of the recovery state: renaming one breaks resuming from old snapshots.

```
kafka_in (clicks, orders, refunds, erp, customers) ──errs──────────────────────┐
   └─ parse ─┬─ archive rows (raw_events, clicks), straight ─┐                  │
             ├─ dead letters (unparseable) ──────────────────┼───────────────────┤
             └─ events ─ route ─┬─ clicks, orders' lookups → clicks (stateful, (tenant, shard))
                                │     answers (Found, Held) ─┐
                                └─ refunds, ERP ─────────────┴→ attribute (stateful, tenant)
                                          dead letters ──────────────────────────┤
                                          Decided, Paid, follow-ups → books      │
                                            (stateful, (tenant, bucket))         │
             conversions, entries, approvals, dead letters (late, orphan)       ▼
      rows → row (on the worker that made them) → clickhouse_out   deadletter_out (Kafka)
        (replays, bounded-wait batching: rows → key_table → ch_batch (batch) → clickhouse_out)
      entries + approvals → key_ledger → ledger_batch (batch) → ledger_out (PostgreSQL)
      collection webhooks → key_catalog → catalog_batch (batch) → catalog_out (PostgreSQL)
```
"""

from __future__ import annotations

import base64
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import cast

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSinkMessage, KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators import KeyedStream
from confluent_kafka.admin import AdminClient

from dataflows import vault
from dataflows.attribution.events import (
    Event,
    Unprocessable,
    click_event,
    dead_letter,
    event_from_envelope,
    is_click,
    parse_click,
    parse_envelope,
    refund_event,
    ticks_us,
    to_ms,
)
from dataflows.attribution.messages import BookItem, is_book_item, item_book_key
from dataflows.attribution.routing import (
    Found,
    Held,
    ShardItem,
    TenantItem,
    is_shard_item,
    route,
)
from dataflows.batching import batch
from dataflows.catalog import CollectionChange, collection_change, is_collection_webhook
from dataflows.config import ConfigProvider, PostgresConfig
from dataflows.kafka_input import kafka_input_config
from dataflows.sinks.catalog import CatalogSink
from dataflows.sinks.clickhouse import (
    ClickHouseSink,
    Row,
    click_row,
    conversion_row,
    entry_row,
    raw_event_row,
    refund_row,
)
from dataflows.sinks.postgres import LedgerSink
from dataflows.stages.base import Output, Tuning
from dataflows.stages.books import bucket_builder
from dataflows.stages.clicks import ShardOutput, shard_builder
from dataflows.stages.clock import TenantClocks, stateful_in_input_order
from dataflows.stages.tenant import TenantOutput, tenant_builder
from schemas.events.envelope import DeadLetter, Source
from schemas.ledger import AttributedConversion, CommissionAccrual, EntryApproval
from schemas.production import check_startup
from schemas.settings import Settings
from schemas.topics import Topic

# Every stream the ingress accepts events into, so every accepted event is archived; GDPR and
# shop lifecycle events are archived only (no state event).
INPUT_TOPICS: tuple[str, ...] = (
    Topic.CLICKS,
    Topic.ORDERS,
    Topic.REFUNDS,
    Topic.ERP,
    Topic.CUSTOMERS,
    Topic.GDPR,
    Topic.SHOPS,
)

# What parsing gives (`parse_value`): archive rows as `(ClickHouse table, row)` pairs, state
# events, collection changes and dead letters, told apart by type (no tags).
TableRow = tuple[str, Row]
Parsed = TableRow | Event | CollectionChange | DeadLetter
# What the stateful stages give: `state.Output` (conversions, ledger entries, approvals, dead
# letters), merged with what parsing passed on besides rows and events.
Result = Output | CollectionChange
# The ledger's input, in the order the state emitted it per tenant (an approval after its entry).
LedgerItem = CommissionAccrual | EntryApproval


@dataclass(frozen=True, slots=True)
class Batching:
    """Sink batches (`dataflows.batching`): with `timeout` 0 (the live default) adaptive, what
    one scheduling pass produced, at most `max_size` a batch; else emitted at `max_size` items
    or `timeout` after their first item, whichever comes first (replays: big batches)."""

    timeout: timedelta = timedelta(0)
    max_size: int = 5000


@dataclass(frozen=True)
class Outputs:
    dead: Stream[DeadLetter]
    rows: Stream[tuple[str, list[Row]]]  # (ClickHouse table, rows)
    ledger: Stream[tuple[str, list[LedgerItem]]]  # (tenant, entries and approvals)
    catalog: Stream[tuple[str, list[CollectionChange]]]  # (tenant, collection changes)


def _now() -> datetime:
    return datetime.now(UTC)


def parse_value(raw: bytes | None, *, archive: bool = True) -> list[Parsed]:
    """One Kafka value → archive rows `(table, row)` (unless `archive` is off), the state event,
    or a dead letter. Never raises: whatever a message does to the parser, it becomes a dead
    letter."""
    if not raw:
        return [dead_letter("empty message", b"", _now())]
    try:
        envelope = parse_envelope(raw)
    except Exception as exc:  # Unprocessable, or anything a hostile value can provoke
        return [dead_letter(_reason(exc), raw, _now())]
    ticks = (ticks_us(envelope.occurred_at), ticks_us(envelope.received_at))
    out: list[Parsed] = [("raw_events", raw_event_row(envelope, ticks))] if archive else []
    try:
        if is_click(envelope):
            # Each time converted once (clicks are nine events in ten): the archive rows and
            # the event share the milliseconds.
            click = parse_click(envelope)
            click_ms, received_ms = to_ms(click.occurred_at), ticks[1] // 1000
            if archive:
                out.append(("clicks", click_row(click, envelope, (click_ms, received_ms))))
            times = (ticks[0] // 1000, received_ms, click_ms)
            out.append(click_event(envelope, click, raw, times))
        elif archive and is_collection_webhook(envelope):  # the live flow keeps membership
            change = collection_change(envelope)
            if change is not None:
                out.append(change)
        elif archive and envelope.kind == "refunds/create" and envelope.source is Source.SHOPIFY:
            refunded, refund = refund_event(envelope, raw)  # the body decoded once for both
            out.append(refunded)
            out.append(("refunds", refund_row(envelope, refund)))  # analytics' refunds
        elif (event := event_from_envelope(envelope, raw)) is not None:
            out.append(event)
    except Exception as exc:
        out = out[:1] if archive else []  # the raw event's archive row stays
        out.append(dead_letter(_reason(exc), raw, _now()))
    return out


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Unprocessable):
        return str(exc)
    return f"parse: {type(exc).__name__}: {str(exc)[:300]}"


def kafka_error_dead_letter(error: KafkaError[bytes | None, bytes | None]) -> DeadLetter:
    raw = error.msg.value
    return DeadLetter(
        reason=f"kafka: {error.err}",
        stage="dataflow",
        failed_at=_now(),
        raw=base64.b64encode(raw).decode("ascii") if raw else None,
    )


def dead_letter_message(dead: DeadLetter) -> KafkaSinkMessage[bytes | None, bytes | None]:
    envelope = dead.envelope
    key = envelope.key() if envelope is not None else None
    return KafkaSinkMessage(key=key, value=dead.to_bytes())


def _is_event(item: Parsed) -> bool:
    return type(item) is Event


def _stamp_and_route(
    stamp: Callable[[Event], Event], item: Event
) -> list[tuple[str, ShardItem | TenantItem]]:
    event = stamp(item)
    if event.kind == "click" and not event.late:
        # A click crosses to its shard (pickled, between processes) without its Kafka value:
        # only a late click's dead letter needs the bytes (measured: an exchanged click 1,092 →
        # 258 bytes, its pickling and unpickling 2.5x cheaper). The archive row was made.
        event.raw = b""
    return route(event)


def _is_row(item: Parsed) -> bool:
    return type(item) is tuple


def _unkey(keyed: tuple[str, TenantOutput]) -> TenantOutput:
    return keyed[1]


def _unkey_shard(keyed: tuple[str, ShardOutput]) -> ShardOutput:
    return keyed[1]


def _found(item: ShardOutput) -> Found | Held | None:
    return item if isinstance(item, Found | Held) else None


def _found_tenant(found: TenantItem) -> str:
    return found.event.tenant_id if isinstance(found, Found | Held) else found.tenant_id


def _shard_dead(item: ShardOutput) -> DeadLetter | None:
    return item if type(item) is DeadLetter else None


def _dead(item: Result) -> DeadLetter | None:
    return item if type(item) is DeadLetter else None


def _ledger_item(item: Result) -> LedgerItem | None:
    return item if type(item) is CommissionAccrual or type(item) is EntryApproval else None


def _rows(item: Result) -> list[TableRow]:
    # (archive rows left the stream right after parsing: `is_row`)
    if type(item) is AttributedConversion:
        return [("conversions", conversion_row(item))]
    if type(item) is CommissionAccrual:
        return [("commission_events", entry_row(item))]
    return []


def _conversion_rows(item: Result) -> list[TableRow]:
    return _rows(item) if type(item) is AttributedConversion else []


def _table(row: tuple[str, Row]) -> str:
    return row[0]


def _table_batch(keyed: tuple[str, list[tuple[str, Row]]]) -> tuple[str, list[Row]]:
    table, rows = keyed
    return table, [row for _, row in rows]


def _row_batch(row: tuple[str, Row]) -> tuple[str, list[Row]]:
    return row[0], [row[1]]


def _entry_tenant(item: LedgerItem) -> str:
    return item.tenant_id


def _collection_change(item: Result) -> CollectionChange | None:
    return item if type(item) is CollectionChange else None


def _change_tenant(change: CollectionChange) -> str:
    return change.tenant_id


def attribution_steps(
    values: Stream[bytes | None],
    config: ConfigProvider,
    *,
    tuning: Tuning | None = None,
    batching: Batching | None = None,
    wall_ms: Callable[[], int] | None = None,
    analytics: bool = True,
) -> Outputs:
    """Everything between the Kafka values and the sinks (tests feed `values` themselves).

    `analytics=False` (replays) builds no archive or analytics rows: `rows` then carries only
    the `conversions` rows (which orders were decided)."""
    batching = batching or Batching()
    parse = parse_value if analytics else partial(parse_value, archive=False)
    parsed = op.flat_map("parse", values, parse)
    # The archive rows (two of a click's three items) go straight to the sink: they used to
    # pass through every filter of the results below (ten calls a click more).
    archived = op.branch("is_row", parsed, _is_row)
    archive_rows = cast(Stream[TableRow], archived.trues)  # what `is_row` says
    split = op.branch("is_event", archived.falses, _is_event)
    # Clicks and orders' lookups to the tenant's click shards; the rest to the tenant
    # (`routing`). The shards' answers join the tenant's input.
    # Lateness is judged here, in the order this worker read the events (`stages.clock`), in
    # the same step as the routing (one call an event instead of three).
    tuning = tuning or Tuning()
    clocks = TenantClocks(tuning.allowed_lateness_ms, tuning.future_skew_ms)
    stamp_and_route = partial(_stamp_and_route, clocks.stamp)
    events = cast(Stream[Event], split.trues)  # what `is_event` says
    routed = op.branch("to_shards", op.flat_map("route", events, stamp_and_route),
                       is_shard_item)  # fmt: skip
    to_shards = cast(KeyedStream[ShardItem], routed.trues)  # what `is_shard_item` says
    to_tenant = cast(KeyedStream[TenantItem], routed.falses)
    shards = shard_builder(config, tuning, clocks, wall_ms)
    shard_out = op.map("unkey_shard", op.stateful("clicks", to_shards, shards), _unkey_shard)
    answers: Stream[TenantItem] = op.filter_map("found", shard_out, _found)
    found: KeyedStream[TenantItem] = op.key_on("key_found", answers, _found_tenant)
    keyed: KeyedStream[TenantItem] = op.merge("to_tenant", to_tenant, found)
    attributed = stateful_in_input_order(
        "attribute", keyed, tenant_builder(config, tuning, wall_ms, clocks)
    )
    tenant_out = op.branch("is_book_item", op.map("unkey", attributed, _unkey), is_book_item)
    # The tenant's decided orders, payments and follow-ups to their book buckets
    # (`stages.books`), which emit the rows, entries and approvals.
    to_books = op.key_on("key_book", cast(Stream[BookItem], tenant_out.trues), item_book_key)
    buckets = bucket_builder(config, tuning, wall_ms)
    booked = op.map("unkey_books", op.stateful("books", to_books, buckets), _unkey)
    tenant_dead = cast(Stream[Output], tenant_out.falses)  # what `is_book_item` says: letters
    shard_dead = op.filter_map("shard_dead", shard_out, _shard_dead)
    # Besides rows and events, parsing passes on dead letters and collection changes.
    passed = cast(Stream[DeadLetter | CollectionChange], split.falses)
    tagged: Stream[Result] = op.merge("results", passed, tenant_dead, booked, shard_dead)

    dead = op.filter_map("dead", tagged, _dead)
    results_rows = op.flat_map("rows", tagged, _rows if analytics else _conversion_rows)
    rows = op.merge("all_rows", archive_rows, results_rows)
    if batching.timeout:  # bounded wait: batches grow across passes, in recovery state
        keyed_rows = op.key_on("key_table", rows, _table)
        row_batches = batch("ch_batch", keyed_rows, batching.timeout, batching.max_size)
        table_batches = op.map("table_batch", row_batches, _table_batch)
    else:
        # Adaptive: the sink writes what each pass brought, on the worker that made the rows.
        # Keyed by table (as before), every archive row, with its body, crossed to the table's
        # worker (pickled, for half of them with 2 processes) and one worker wrote each table.
        # (The map also makes a pass one `write_batch`, its tables inserted side by side:
        # bytewax calls a sink once per upstream message, and a merge straight into the sink
        # wrote the archive rows and the results one after the other; tests/dataflows/
        # test_flow.py checks both.)
        table_batches = op.map("row", rows, _row_batch)
    items: Stream[LedgerItem] = op.filter_map("entries", tagged, _ledger_item)
    entries = op.key_on("key_ledger", items, _entry_tenant)
    ledger = batch("ledger_batch", entries, batching.timeout, batching.max_size)
    changes = op.key_on("key_catalog", op.filter_map("catalog", tagged, _collection_change),
                        _change_tenant)  # fmt: skip
    catalog = batch("catalog_batch", changes, batching.timeout, batching.max_size)
    return Outputs(
        dead=dead, rows=table_batches, ledger=ledger,
        catalog=catalog,
    )  # fmt: skip


# Messages read from one topic partition per poll, at most (bytewax's default is 1,000). A
# scheduling pass carries what the polls brought and the ClickHouse sink writes each pass's rows
# in one insert per table, so under a backlog larger polls make fewer, larger inserts: measured
# with `bench.dataflow --kafka-batch-size` (100k clicks, 10k orders), the ClickHouse front used
# 97 µs of CPU per event at 1,000, 37 at 5,000 and 22 at 20,000 (the flow itself 26.5, 24.7 and
# 24.3 CPU s). A tailing flow that keeps up polls what arrived since its last pass: small
# passes, unchanged freshness.
KAFKA_BATCH_SIZE = 10_000


def _check_broker(bootstrap: str, timeout: float = 10.0) -> None:
    # bytewax's KafkaSource hangs without a timeout when the broker is unreachable.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout)
    except Exception as exc:
        raise RuntimeError(f"Kafka at {bootstrap} is unreachable: {exc}") from exc


def tune_garbage_collector() -> None:
    """Fewer, cheaper cyclic GC passes for this process (measured: parsing a click took 30 µs of
    CPU with the defaults, 18 µs with these). The flow allocates many short-lived acyclic
    objects (parsed JSON, rows) and keeps large long-lived state: freeze what exists at start-up
    and collect the young generation every 100k allocations instead of 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def skip_dataframe_libraries() -> None:
    """Tell clickhouse-connect that this process has no pandas or numpy data: it imports both
    on its first insert to check whether the rows are a DataFrame or an array (measured: 0.5 s
    of CPU at each flow process's start, 3 s of wall under load; they are installed only because
    the local ClickHouse front's chDB needs them). The flow inserts lists of tuples, which is
    what clickhouse-connect does when neither library is installed. Only a module attribute the
    library resolves lazily is set, and only if it was not resolved yet."""
    from clickhouse_connect.driver import options

    for name in ("np", "pd", "pd_time_test"):
        if name not in vars(options):
            setattr(options, name, None)


def build(
    settings: Settings | None = None,
    *,
    tail: bool = True,
    config: ConfigProvider | None = None,
    input_topics: Sequence[str] = INPUT_TOPICS,
    deadletter_topic: str = Topic.DEADLETTER,
    tuning: Tuning | None = None,
    batch_max_size: int = 5000,
    batch_timeout_seconds: float = 0.0,
    kafka_batch_size: int = KAFKA_BATCH_SIZE,
) -> Dataflow:
    """The production dataflow. With no arguments it reads `Settings()` (for `bytewax.run`;
    every other argument is a literal, so `bytewax.run "…:build(tail=False)"` can pass it).

    `tail=False` stops at the end of the input topics (bounded backfills and tests). Fails fast
    if Kafka or PostgreSQL is unreachable. Tunes this process's garbage collector
    (`tune_garbage_collector`) and keeps clickhouse-connect from importing pandas and numpy
    (`skip_dataframe_libraries`): the flow is meant to own its process. With
    `settings.segment_dir` (`REFSTREAM_SEGMENT_DIR`; `refstream dataflow run --recovery-dir D`
    defaults it to `D/segments`), snapshots write unchanged state segments once, to that directory
    (`dataflows.vault`).
    """
    batching = Batching(timedelta(seconds=batch_timeout_seconds), batch_max_size)
    settings = settings or Settings()
    check_startup(settings)
    if settings.segment_dir is not None:  # snapshots name unchanged segments
        vault.configure(settings.segment_dir)
    tune_garbage_collector()
    skip_dataframe_libraries()
    brokers = settings.kafka_bootstrap.split(",")
    _check_broker(settings.kafka_bootstrap)
    if config is None:
        postgres = PostgresConfig(settings.postgres_url)
        postgres.current()  # fail at start, not on the first event
        config = postgres

    flow = Dataflow("attribution")
    kafka = kop.input(
        "kafka_in",
        flow,
        brokers=brokers,
        topics=list(input_topics),
        tail=tail,
        add_config=kafka_input_config(settings),
        batch_size=kafka_batch_size,
    )
    kafka_dead = op.map("kafka_err", kafka.errs, kafka_error_dead_letter)
    values = op.map("value", kafka.oks, _value)
    outputs = attribution_steps(values, config, tuning=tuning, batching=batching)
    dead = op.merge("all_dead", kafka_dead, outputs.dead)
    kop.output(
        "deadletter_out",
        op.map("dead_msg", dead, dead_letter_message),
        brokers=brokers,
        topic=deadletter_topic,
    )
    op.output("clickhouse_out", outputs.rows, ClickHouseSink(settings, deadletter_topic))
    ledger_sink = LedgerSink(settings.postgres_url, settings.kafka_bootstrap, deadletter_topic)
    op.output("ledger_out", outputs.ledger, ledger_sink)
    op.output("catalog_out", outputs.catalog, CatalogSink(settings.postgres_url))
    return flow


def _value(message: KafkaSourceMessage[bytes | None, bytes | None]) -> bytes | None:
    return message.value
