"""Latency of `/v1/conversions` (issue #16: every order explained) on N decided orders.

Run from the project root::

    .venv/bin/python -m bench.decisions [--rows 10000000] [--repeat 30] [--data-dir DIR]
                                        [--no-optimize]

Starts a private chDB ClickHouse server (the project's ClickHouse-HTTP front; `--data-dir` keeps
and reuses a loaded directory), applies the project's DDL, and loads one company's decided orders
inside ClickHouse (`INSERT ... SELECT FROM numbers()`, in chunks): N orders over 180 days in time
order (ids increase with time, as Shopify's do), 1000 agents, 10% unattributed, each with an
explanation and one to three rejected candidates as the dataflow writes them (ClickHouse 0006).
Then it times the list and detail queries through `DecisionStore` (the exact SQL and ClickHouse
client path the API uses, over HTTP; the PostgreSQL reach lookup and FastAPI are not included)
and prints p50/p99 per query. Nothing is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from api.clickhouse import ClickHouseReader
from api.conversions.repository import DecisionStore, OrderQuery
from deploy import migrations
from deploy.clickhouse_http import start_subprocess, stop_subprocess
from schemas.settings import Settings

TENANT = "t_bench"
AGENTS = 1000
END = datetime(2026, 11, 25, tzinfo=UTC)
NOW = END + timedelta(hours=1)  # the clock the list's windows start from
SPAN = timedelta(days=180)
CHUNK = 1_000_000

_T = (
    "{start_ms:Int64} + toInt64(intDiv(number * {span_ms:UInt64}, {total:UInt64}))"
    " + toInt64(intHash64(number) % 3600000)"
)
_AGENT = "concat('agt_', toString(intHash32(number) % {agents:UInt32}))"
_OTHER = "concat('agt_', toString((intHash32(number) + 7) % {agents:UInt32}))"
# 10% unattributed (a bot click and an expired one), 10% by coupon (beating a click), the rest
# by last click (beating an earlier click of another agent).
LOAD = f"""
INSERT INTO conversions (tenant_id, conversion_id, shop, order_id, order_name, occurred_at,
  attributed_at, rule, agent_id, program_id, click_id, coupon_code, customer_id,
  is_new_customer, currency, revenue, fx_rate, source_event_id, version, link_code, explanation,
  rejected)
SELECT {{tenant:String}}, concat('cv_', toString(number)),
  concat('shop', toString(number % 3), '.myshopify.com'), toString(1000000000000 + number),
  concat('#', toString(100000 + number)), fromUnixTimestamp64Milli({_T}, 'UTC') AS t, t,
  multiIf(number % 10 = 1, 'unattributed', number % 10 = 0, 'coupon', 'last_click') AS rule,
  if(rule = 'unattributed', NULL, {_AGENT}),
  if(rule = 'unattributed', NULL, concat('prg_', toString(number % 5))),
  if(rule = 'last_click', concat('clk_', toString(number * 2)), NULL),
  if(rule = 'coupon', concat('CODE', toString(intHash32(number) % {{agents:UInt32}})), NULL),
  concat('cust_', toString(intHash32(number * 3) % 200000)), false,
  ['EUR', 'USD', 'GBP'][number % 3 + 1], toDecimal64(10 + (intHash32(number * 7) % 20000) / 100, 4),
  toDecimal64(1, 8), concat('ev_', toString(number)), 1,
  if(rule = 'last_click', concat('l_', {_AGENT}), NULL),
  multiIf(rule = 'unattributed', 'no eligible binding, coupon or click (2 candidates rejected)',
          rule = 'coupon', concat('coupon CODE owned by agent ', {_AGENT}, ' beats click clk_',
                                  toString(number * 2 + 1), ' of agent ', {_OTHER},
                                  ' (coupon_beats_cookie)'),
          concat('last_click click clk_', toString(number * 2), ' of agent ', {_AGENT},
                 ' via link l_', {_AGENT}, ', 0 d 3 h before the order (lookback 30 d)')),
  if(rule = 'unattributed',
     [('click', concat('clk_', toString(number * 2)), {_AGENT}, 'prg_1', 'l_x',
       t - INTERVAL 40 DAY, 'outside_window', 'outside the 30-day lookback window'),
      ('click', concat('clk_', toString(number * 2 + 1)), {_OTHER}, 'prg_1', 'l_y',
       t - INTERVAL 1 HOUR, 'bot', 'bot click')],
     [('click', concat('clk_', toString(number * 2 + 1)), {_OTHER}, 'prg_1', 'l_y',
       t - INTERVAL 5 HOUR,
       if(rule = 'coupon', 'coupon_wins', 'attribution_model'),
       if(rule = 'coupon', 'coupon CODE wins (coupon_beats_cookie)',
          concat('last_click: click clk_', toString(number * 2), ' is later')))])
FROM numbers({{offset:UInt64}}, {{count:UInt64}})"""


def load(client: Client, rows: int) -> float:
    started = time.perf_counter()
    base = {
        "tenant": TENANT, "start_ms": int((END - SPAN).timestamp() * 1000),
        "span_ms": int(SPAN.total_seconds() * 1000), "agents": AGENTS, "total": rows,
    }  # fmt: skip
    for offset in range(0, rows, CHUNK):
        count = min(CHUNK, rows - offset)
        # The materialized views fill `conversion_orders` and `conversion_refs` (the lookup).
        client.command(LOAD, parameters=base | {"offset": offset, "count": count})
        print(f"  loaded {offset + count:,} / {rows:,} orders", flush=True)
    return time.perf_counter() - started


def queries(store: DecisionStore, rows: int) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    manager = tuple(f"agt_{i}" for i in range(0, AGENTS, AGENTS // 50))
    month = END - timedelta(days=30)
    middle = END - SPAN / 2
    # Orders spread over the period (old, middle, recent), looked up by id and by name.
    picks = [rows // 10, rows // 2, rows - 5]
    ids = [str(1000000000000 + n) for n in picks]
    names = [f"#{100000 + n}" for n in picks]
    turn = {"i": 0}

    def pick(values: list[str]) -> str:
        turn["i"] += 1
        return values[turn["i"] % len(values)]

    def q(**kw: Any) -> OrderQuery:
        return OrderQuery(tenant_id=TENANT, **({"agents": None} | kw))

    def page(query: OrderQuery) -> Awaitable[Any]:
        return store.orders(query, now=NOW)

    return [
        ("list, owner, newest 50", lambda: page(q())),
        ("list, owner, 30 days", lambda: page(q(start=month, end=END))),
        ("list, manager (50 agents)", lambda: page(q(agents=manager))),
        ("list, one agent", lambda: page(q(agents=("agt_7",)))),
        ("list, one agent, 10 days", lambda: page(q(agents=("agt_7",),
                                                    start=END - timedelta(days=10)))),
        ("list, unattributed only", lambda: page(q(attributed=False))),
        ("list, page after a cursor 90 days back", lambda: page(q(after=(middle, "cv_")))),
        ("list, ?order= by name", lambda: page(q(order=pick(names)))),
        ("detail by order id", lambda: store.order(TENANT, pick(ids))),
    ]  # fmt: skip


async def time_queries(store: DecisionStore, rows: int, repeat: int) -> None:
    for name, run in queries(store, rows):
        for _ in range(3):
            await run()
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            await run()
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        p99 = timings[min(len(timings) - 1, round(len(timings) * 0.99) - 1)]
        median = statistics.median(timings)
        print(f"  {name:<40} p50 {median:8.1f} ms   p99 {p99:8.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="decided orders to load")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per query")
    parser.add_argument("--data-dir", type=Path, help="keep (and reuse) the chDB directory")
    parser.add_argument("--no-optimize", action="store_true", help="skip OPTIMIZE ... FINAL")
    args = parser.parse_args()

    scratch = None if args.data_dir else tempfile.mkdtemp(prefix="bench-decisions-")
    data_dir = args.data_dir or Path(scratch or ".") / "data"
    process, port = start_subprocess(data_dir)
    try:
        database = f"decisions_{args.rows}"
        url = f"http://default:@127.0.0.1:{port}/{database}"
        settings = Settings(clickhouse_url=url)
        migrations.migrate_clickhouse(settings)
        client = clickhouse_connect.get_client(
            host="127.0.0.1", port=port, database=database, send_receive_timeout=3600
        )
        have = client.command("SELECT count() FROM conversions FINAL")
        if have != args.rows:
            for table in ("conversions", "conversion_orders", "conversion_refs"):
                client.command(f"TRUNCATE TABLE {table}")
            print(f"loading {args.rows:,} decided orders into {data_dir} ...", flush=True)
            print(f"loaded in {load(client, args.rows):.0f} s")
        if not args.no_optimize:
            started = time.perf_counter()
            for table in ("conversions", "conversion_refs"):
                client.command(f"OPTIMIZE TABLE {table} FINAL")
            print(f"OPTIMIZE ... FINAL took {time.perf_counter() - started:.0f} s")
        size = client.query(
            "SELECT sum(rows), count(), sum(data_compressed_bytes) FROM system.parts"
            " WHERE active AND database = currentDatabase() AND table = 'conversions'"
        ).result_rows[0]
        print(f"  conversions: {int(size[0]):,} rows in {size[1]} parts, "
              f"{int(size[2]) / 2**20:.0f} MiB compressed")  # fmt: skip
        client.close()
        reader = ClickHouseReader(settings)
        load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"timing {args.repeat} runs per query (3 warm-ups); load average {load_avg}:")
        asyncio.run(time_queries(DecisionStore(reader), args.rows, args.repeat))
        reader.close()
    finally:
        stop_subprocess(process)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
