"""The archiving baseline of `bench.dataflow` makes exactly the attribution flow's archive rows
(so its cost is a floor of the flow's, not of some other work)."""

from __future__ import annotations

from bytewax.connectors.kafka import KafkaSourceMessage

from bench.dataflow_archive import archive_rows
from dataflows.attribution.flow import parse_value
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
