"""The attribution flow's steps inside bytewax, in process, without servers: what bytewax and the
flow's own Python cost per event, against a bare bytewax map over the same values in the same run.

    .venv/bin/python -m bench.flow_steps [--clicks 50000] [--orders 5000] [--rounds 3]

Runs `attribution_steps` (the live flow's steps: parse, archive rows, clock and routing, the click
shards, the tenant, the sink batches) with bytewax's `run_main` on a `TestingSource` of
`bench.dataflow`'s deterministic Kafka values (clicks, then orders and refunds) into testing
sinks, then a bare `map` over the same values the same way; alternating rounds, each on a fresh
flow. Prints CPU µs per event of both (best and median over the rounds), their ratio, and the
load average. The servers (Kafka, ClickHouse, PostgreSQL) are left out on purpose: this is the
ceiling the flow's steps set before any I/O (`bench.dataflow` measures with them), and, being
in one process, it pairs two versions of the code well (run it in two checkouts).
Checks that the run decided every order; asserts no timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from bench.dataflow import Plan
from bench.order_path import _snapshot
from dataflows.attribution.flow import attribution_steps, tune_garbage_collector
from dataflows.config import StaticConfig
from tests.dataflows.builders import new_tenant

# Items per TestingSource batch: bytewax's default poll. The live flow polls up to
# `flow.KAFKA_BATCH_SIZE` (10,000) per partition; under a backlog its passes are larger.
KAFKA_BATCH = 1000


def _values(plan: Plan) -> list[bytes]:
    clicks = [plan.click_bytes(i)[1] for i in range(plan.clicks)]
    return clicks + [value for _, _, value in plan.order_messages()]


def run_flow(plan: Plan, values: list[bytes]) -> tuple[float, int]:
    """CPU seconds of one run of the flow's steps; the `conversions` rows it wrote."""
    flow = Dataflow("flow_steps")
    source = op.input("in", flow, TestingSource(values, batch_size=KAFKA_BATCH))
    outputs = attribution_steps(source, StaticConfig(_snapshot(plan)))
    rows: list[tuple[str, list[tuple[object, ...]]]] = []
    op.output("out_rows", outputs.rows, TestingSink(rows))
    for name in ("dead", "ledger", "catalog"):
        op.output(f"out_{name}", getattr(outputs, name), TestingSink([]))
    started = time.process_time()
    run_main(flow)
    seconds = time.process_time() - started
    return seconds, sum(len(batch) for table, batch in rows if table == "conversions")


def _same(value: bytes | None) -> bytes | None:
    return value


def run_bare(values: list[bytes]) -> float:
    flow = Dataflow("bare")
    source = op.input("in", flow, TestingSource(values, batch_size=KAFKA_BATCH))
    op.output("out", op.map("same", source, _same), TestingSink([]))
    started = time.process_time()
    run_main(flow)
    return time.process_time() - started


def _figure(label: str, per_event: list[float]) -> str:
    best, median = min(per_event), statistics.median(per_event)
    return f"  {label:<40} best {best:7.1f}  median {median:7.1f} µs of CPU per event"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=50_000)
    parser.add_argument("--orders", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    plan = Plan(new_tenant(), args.clicks, args.orders, 0.1, datetime(2026, 11, 1, tzinfo=UTC))
    values = _values(plan)
    tune_garbage_collector()
    load_start = os.getloadavg()
    flow_us: list[float] = []
    bare_us: list[float] = []
    decided: set[int] = set()
    for _ in range(args.rounds):  # alternating: a burst of the neighbours' work spoils a round
        seconds, conversions = run_flow(plan, values)
        flow_us.append(1e6 * seconds / len(values))
        decided.add(conversions)
        bare_us.append(1e6 * run_bare(values) / len(values))
    load = " ".join(f"{x:.2f}" for x in (*load_start, *os.getloadavg()))
    print(f"{len(values):,} events ({args.clicks:,} clicks, then {args.orders:,} orders and"
          f" their refunds), one tenant, {args.rounds} rounds; load average 1/5/15 min at"
          f" start and end: {load}")  # fmt: skip
    print(_figure("the flow's steps (attribution_steps)", flow_us))
    print(_figure("bare bytewax map, same values", bare_us))
    ratio = statistics.median(bare_us) / statistics.median(flow_us)
    print(f"  bare ÷ flow (medians): {ratio:.3f}; events per CPU-second of the flow's steps:"
          f" {1e6 / statistics.median(flow_us):,.0f}")  # fmt: skip
    ok = decided == {args.orders}
    print(f"  check: every order decided in every round: {'ok' if ok else f'NO ({decided})'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
