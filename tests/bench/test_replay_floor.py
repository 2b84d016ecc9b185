"""`bench.replay`'s floor of any replay: every event decoded and counted under its flow key."""

from __future__ import annotations

from datetime import UTC, datetime

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from bench.dataflow import Plan
from bench.replay import floor_steps
from dataflows.attribution.events import Event
from dataflows.attribution.flow import parse_value
from dataflows.attribution.routing import route
from tests.dataflows.builders import new_tenant


def test_floor_keys_and_counts_every_event() -> None:
    plan = Plan(new_tenant(), 300, 30, 0.1, datetime(2026, 11, 1, tzinfo=UTC))
    values = [plan.click_bytes(i)[1] for i in range(plan.clicks)]
    values += [value for _, _, value in plan.order_messages()]
    values.append(b"not an envelope")  # a dead letter: decoded, never keyed
    flow = Dataflow("floor_test")
    out: list[tuple[str, int]] = []
    counted = floor_steps(op.input("in", flow, TestingSource(values, batch_size=50)))
    op.output("out", counted, TestingSink(out))
    run_main(flow)

    expected: dict[str, int] = {}
    for value in values:
        for item in parse_value(value, archive=False):
            if type(item) is Event:
                for key, _ in route(item):
                    expected[key] = expected.get(key, 0) + 1
    last: dict[str, int] = {}
    for key, count in out:
        last[key] = count
    assert last == expected
    assert len(out) == sum(expected.values())
    assert len(expected) > 2  # clicks spread over shards, orders' lookups too
