"""The archiving baselines of `bench.dataflow` make exactly the attribution flow's archive rows
(so their cost is a floor of the flow's, not of some other work), and the skeleton keys every
event as the flow's first keyed step does."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from bench.dataflow_archive import archive_rows, count, keyed_items, keyed_steps, parsed
from dataflows.attribution.flow import parse_value
from dataflows.attribution.routing import id_shard, shard_key, visitor_shard
from dataflows.sinks.clickhouse import Row
from tests.dataflows.builders import T0, click, click_id, days, order, refund


def _message(value: bytes) -> KafkaSourceMessage[bytes | None, bytes | None]:
    return KafkaSourceMessage(key=None, value=value, topic="t", partition=0, offset=0)


def test_the_baseline_archives_what_the_flow_archives_and_nothing_else() -> None:
    values = [
        click("t_arch", click_id(1), at=T0, visitor="v1").to_bytes(json_body=True),
        order("t_arch", 1001, at=T0 + days(1), cites=click_id(1)).to_bytes(json_body=True),
        refund("t_arch", 1001, 7, [(1, 1)], at=T0 + days(2)).to_bytes(),
        b"not an envelope",
    ]
    tables = []
    for value in values:
        flow_rows = [item for item in parse_value(value) if type(item) is tuple]
        assert archive_rows(_message(value)) == flow_rows
        tables.append([table for table, _ in flow_rows])
    assert tables == [["raw_events", "clicks"], ["raw_events"], ["raw_events", "refunds"], []]


def test_the_skeleton_archives_the_same_rows_and_keys_every_event_as_the_flow_does() -> None:
    """`keyed=True`: the same archive rows, and each event through one keyed step under the
    keys of the flow's first keyed step (`routing.route`): a click to its id's click shard (and
    a copy to its visitor's shard), an order's lookup to the cited click's shard, a refund to
    the tenant; the step counts per key and emits nothing."""
    cid = click_id(1)
    values = [
        click("t_arch", cid, at=T0, visitor="v1").to_bytes(json_body=True),
        order("t_arch", 1001, at=T0 + days(1), cites=cid).to_bytes(json_body=True),
        refund("t_arch", 1001, 7, [(1, 1)], at=T0 + days(2)).to_bytes(),
        b"not an envelope",
    ]
    messages = [_message(value) for value in values]
    rows: list[tuple[str, list[Row]]] = []
    flow = Dataflow("skeleton_test")
    source = op.input("in", flow, TestingSource(messages))
    op.output("rows", op.map("batch", keyed_steps(source), lambda r: (r[0], [r[1]])),
              TestingSink(rows))  # fmt: skip
    run_main(flow)
    assert rows == [(table, [row]) for m in messages for table, row in archive_rows(m)]

    keyed = [key for m in messages for item in parsed(m) for key, _ in keyed_items(item)]
    shard = shard_key("t_arch", id_shard(cid))
    assert keyed == [shard, shard_key("t_arch", visitor_shard("v1")), shard, "t_arch"]
    assert count(None, "a") == (1, [])
    assert count(1, "b") == (2, [])
