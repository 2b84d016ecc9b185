"""Latency and insert throughput of the chDB ClickHouse front, measured through clickhouse-connect.

Run from the project root: ``python -m bench.clickhouse_front``. Starts its own front on a
temporary directory and prints the figures; nothing is asserted (timings belong here, not in tests).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from deploy.clickhouse_http import start_subprocess, stop_subprocess

PINGS = 500
ROWS = 100_000
INSERT_ROUNDS = 5


def select_one_latency_ms(client: Client) -> list[float]:
    for _ in range(50):  # warm the connection pool and the server's handle
        client.query("SELECT 1")
    timings = []
    for _ in range(PINGS):
        started = time.perf_counter()
        client.query("SELECT 1")
        timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)


def insert_rows_per_s(client: Client) -> tuple[float, float]:
    """Median rows/s of ROWS-row batches: (client.insert, raw_insert of pre-encoded Native)."""
    client.command(
        "CREATE TABLE bench_clicks (at DateTime64(3, 'UTC'), agent LowCardinality(String), "
        "order_id UInt64, amount Decimal(18, 4), url String) ENGINE = MergeTree ORDER BY at"
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        [start + timedelta(milliseconds=i), f"agent-{i % 200}", i, Decimal(i % 999) / 100, f"/{i}"]
        for i in range(ROWS)
    ]
    typed, raw = [], []
    for _ in range(INSERT_ROUNDS):
        started = time.perf_counter()
        client.insert("bench_clicks", rows)
        typed.append(ROWS / (time.perf_counter() - started))
    native = client.raw_query(f"SELECT * FROM bench_clicks LIMIT {ROWS}", fmt="Native")
    for _ in range(INSERT_ROUNDS):
        started = time.perf_counter()
        client.raw_insert("bench_clicks", None, insert_block=native, fmt="Native")
        raw.append(ROWS / (time.perf_counter() - started))
    expected = ROWS * INSERT_ROUNDS * 2
    assert client.command("SELECT count() FROM bench_clicks") == expected, "rows went missing"
    return statistics.median(typed), statistics.median(raw)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        process, port = start_subprocess(Path(scratch) / "data")
        try:
            client = clickhouse_connect.get_client(host="127.0.0.1", port=port)
            latency = select_one_latency_ms(client)
            typed, raw = insert_rows_per_s(client)
        finally:
            stop_subprocess(process)
    p50, p99 = latency[len(latency) // 2], latency[int(len(latency) * 0.99)]
    print(f"SELECT 1 via client.query, {PINGS} requests: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"client.insert of {ROWS:,}-row batches: {typed:,.0f} rows/s (median of {INSERT_ROUNDS})")
    print(f"raw_insert of pre-encoded Native {ROWS:,}-row batches: {raw:,.0f} rows/s")


if __name__ == "__main__":
    main()
