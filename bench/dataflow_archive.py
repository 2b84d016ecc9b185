"""A baseline of `bench.dataflow`: a bytewax flow that only archives every event to ClickHouse,
and, with `keyed=True`, the skeleton of the attribution flow's design besides.

    python -m bytewax.run "bench.dataflow_archive:build(('in',))"    # reads Settings()
    python -m bytewax.run "bench.dataflow_archive:build(('in',), keyed=True)"

It does the part of the attribution flow's work that any flow of this design does for every
event, and nothing else: reads the input topics, decodes each envelope with the contract's checks
(`events.parse_envelope`), a click's body too (`parse_click`), builds the archive rows the
attribution flow builds (`raw_events` for every event, `clicks` for clicks, `refunds` for
refunds; the same row builders) and writes them through the same sink (`ClickHouseSink`, a pass's
rows in one insert per table). No state events, no attribution, no ledger. What it costs (its
processes, the ClickHouse front, the broker) is a floor for the attribution flow measured with
every part of the archiving in it, including the client side of the inserts: the attribution
flow cannot be cheaper per event than this on the same machine.

`keyed=True` (**archive + one keyed step**, the design's skeleton): archiving is not all that
every event of the design costs. Each one also crosses bytewax's keyed exchange into state keyed
by what it joins. So this variant decodes each value as the flow does (`flow.parse_value`: the
same archive rows, written as above, and the flow's state event, which is what the key is read
from), keys every event as the flow's first keyed step does (`routing.route`: a click to its
`(tenant, click shard)`, an order's lookups to the shards of its candidates, refunds and the rest
to the tenant; a click crosses without its Kafka value, as in the flow) and sends each keyed item
through ONE stateful step whose state is a count per key and which emits nothing. No lateness, no
attribution, no second exchange, nothing written but the archive: the least a flow of this design
does per event, so its rate (and CPU per event) bounds the attribution flow's on this machine.

Bounded (`tail=False`), like the measured attribution run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream

from bench.dataflow_bare import DropSink
from dataflows.attribution.events import (
    Event,
    is_click,
    parse_click,
    parse_envelope,
    ticks_us,
    to_ms,
)
from dataflows.attribution.flow import (
    KAFKA_BATCH_SIZE,
    Parsed,
    parse_value,
    skip_dataframe_libraries,
    tune_garbage_collector,
)
from dataflows.attribution.routing import ShardItem, TenantItem, route
from dataflows.kafka_input import kafka_input_config
from dataflows.sinks.clickhouse import ClickHouseSink, Row, click_row, raw_event_row, refund_row
from schemas.settings import Settings


def archive_rows(message: KafkaSourceMessage[bytes | None, bytes | None]) -> list[tuple[str, Row]]:
    """The archive rows of one Kafka value, as `flow.parse_value` makes them (an undecodable
    value has none here: this baseline writes no dead letters)."""
    raw = message.value
    if not raw:
        return []
    try:
        envelope = parse_envelope(raw)
        ticks = (ticks_us(envelope.occurred_at), ticks_us(envelope.received_at))
        rows: list[tuple[str, Row]] = [("raw_events", raw_event_row(envelope, ticks))]
        if is_click(envelope):
            click = parse_click(envelope)
            rows.append(("clicks", click_row(click, envelope, (to_ms(click.occurred_at),
                                                               ticks[1] // 1000))))  # fmt: skip
        elif envelope.kind == "refunds/create":
            rows.append(("refunds", refund_row(envelope)))
    except ValueError:
        return []
    return rows


def parsed(message: KafkaSourceMessage[bytes | None, bytes | None]) -> list[Parsed]:
    """The flow's parse of one Kafka value (`flow.parse_value`): archive rows, the state event,
    or a dead letter (which this baseline drops)."""
    return parse_value(message.value)


def _is_row(item: Parsed) -> bool:
    return type(item) is tuple


def keyed_items(item: Parsed) -> list[tuple[str, ShardItem | TenantItem]]:
    """What the flow's first keyed step receives for one parsed item: `routing.route` of its
    state event (a click without its Kafka value, as the flow sends it); nothing for a dead
    letter or a collection change."""
    if type(item) is not Event:
        return []
    if item.kind == "click":
        item.raw = b""
    return route(item)


def count(seen: int | None, _item: object) -> tuple[int, list[object]]:
    """The skeleton's state: a count per key; it emits nothing."""
    return (seen or 0) + 1, []


def keyed_steps(
    messages: Stream[KafkaSourceMessage[bytes | None, bytes | None]],
) -> Stream[tuple[str, Row]]:
    """The skeleton's steps between the Kafka messages and the archive sink: the flow's parse,
    the archive rows returned (as `(table, row)`), every event through `route` into the one
    keyed step that counts (its empty output into a sink that drops it)."""
    split = op.branch("is_row", op.flat_map("parse", messages, parsed), _is_row)
    routed = op.flat_map("route", split.falses, keyed_items)
    op.output("drop", op.stateful_flat_map("count", routed, count), DropSink())
    return cast(Stream[tuple[str, Row]], split.trues)  # what `_is_row` says


def _one_row_batch(row: tuple[str, Row]) -> tuple[str, list[Row]]:
    return row[0], [row[1]]


def build(
    input_topics: Sequence[str],
    deadletter_topic: str = "refstream.deadletter",
    keyed: bool = False,
) -> Dataflow:
    """The archiving flow over `input_topics` (bounded), with the process tuned as the
    attribution flow's is (`tune_garbage_collector`, `skip_dataframe_libraries`); `keyed`: every
    event also through one keyed step, keyed as the flow keys it first (see the module
    docstring)."""
    settings = Settings()
    tune_garbage_collector()
    skip_dataframe_libraries()
    flow = Dataflow("archive_keyed" if keyed else "archive_only")
    kafka = kop.input(
        "kafka_in", flow, brokers=settings.kafka_bootstrap.split(","), topics=list(input_topics),
        tail=False, add_config=kafka_input_config(settings), batch_size=KAFKA_BATCH_SIZE,
    )  # fmt: skip
    rows = keyed_steps(kafka.oks) if keyed else op.flat_map("archive", kafka.oks, archive_rows)
    op.output(
        "clickhouse_out",
        op.map("row", rows, _one_row_batch),
        ClickHouseSink(settings, deadletter_topic),
    )
    return flow
