"""A baseline of `bench.dataflow`: a bytewax flow that only archives every event to ClickHouse.

    python -m bytewax.run "bench.dataflow_archive:build(('in',))"    # reads Settings()

It does the part of the attribution flow's work that any flow of this design does for every
event, and nothing else: reads the input topics, decodes each envelope with the contract's checks
(`events.parse_envelope`), a click's body too (`parse_click`), builds the archive rows the
attribution flow builds (`raw_events` for every event, `clicks` for clicks, `refunds` for
refunds; the same row builders) and writes them through the same sink (`ClickHouseSink`, a pass's
rows in one insert per table). No state events, no attribution, no ledger. What it costs (its
processes, the ClickHouse front, the broker) is a floor for the attribution flow measured with
every part of the archiving in it, including the client side of the inserts: the attribution
flow cannot be cheaper per event than this on the same machine.

Bounded (`tail=False`), like the measured attribution run.
"""

from __future__ import annotations

from collections.abc import Sequence

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow

from dataflows.attribution.events import is_click, parse_click, parse_envelope, ticks_us, to_ms
from dataflows.attribution.flow import (
    KAFKA_BATCH_SIZE,
    skip_dataframe_libraries,
    tune_garbage_collector,
)
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


def _one_row_batch(row: tuple[str, Row]) -> tuple[str, list[Row]]:
    return row[0], [row[1]]


def build(input_topics: Sequence[str], deadletter_topic: str = "refstream.deadletter") -> Dataflow:
    """The archiving flow over `input_topics` (bounded), with the process tuned as the
    attribution flow's is (`tune_garbage_collector`, `skip_dataframe_libraries`)."""
    settings = Settings()
    tune_garbage_collector()
    skip_dataframe_libraries()
    flow = Dataflow("archive_only")
    kafka = kop.input(
        "kafka_in", flow, brokers=settings.kafka_bootstrap.split(","), topics=list(input_topics),
        tail=False, add_config=kafka_input_config(settings), batch_size=KAFKA_BATCH_SIZE,
    )  # fmt: skip
    rows = op.flat_map("archive", kafka.oks, archive_rows)
    op.output(
        "clickhouse_out",
        op.map("row", rows, _one_row_batch),
        ClickHouseSink(settings, deadletter_topic),
    )
    return flow
