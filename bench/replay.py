"""Replay benchmark (issue #7): archive N events in ClickHouse, replay them into a shadow ledger.

Run from the project root::

    .venv/bin/python -m bench.replay [--events 10000000] [--clicks-per-order 10]
                                     [--refund-share 0.1] [--page-rows 20000]

Self-contained: starts a private chDB ClickHouse server (the project's ClickHouse-HTTP front) and
a private PostgreSQL database (`refstream_bench_<hex>`), migrates them and seeds one tenant (one
program at 10% with a 5% level-1 override, three agents, a coupon). Then:

1. **archive**: N events written to `raw_events` the way the dataflow archives them
   (`raw_event_row`), in arrival order over `--days-per-million` days of event time per million
   events (clicks expire after the 30-day lookback): per order `--clicks-per-order` clicks, the
   order (citing one of the last 1,000 clicks, every tenth with the coupon instead) and a full
   refund for `--refund-share` of the orders;
2. **archive read** (child process): the replay source alone (snapshot table, pages, exact
   envelope bytes) into a counting sink: the ceiling the archive path allows;
3. **the floor of any replay** (child process): the same source, each value decoded with the
   contract's checks (`parse_value` without archive rows: what every replay must do before it
   attributes anything) and every event through one keyed stateful step that keeps a counter
   per click shard or tenant key (`route`'s keys; a join needs at least that): no attribution,
   no ledger. A replay runs in one bytewax process (`run_replay`), so this is its ceiling on
   this machine whatever the attribution costs; below the target, the target is beyond this
   design here (issue #19), and the bench says so;
4. **replay** (child process): `run_replay` end to end (archive → `attribution_steps` → shadow
   ledger in PostgreSQL): events/s and the child's peak RSS (`ru_maxrss`); the ClickHouse
   server's peak RSS (`VmHWM`) is printed too. The shadow ledger is checked against what the
   input implies (row count and per-agent totals).

Nothing is asserted: it prints figures. Everything it started is stopped and dropped in
`finally`, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
import psycopg
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators import KeyedStream
from bytewax.testing import run_main
from psycopg import sql

from dataflows.attribution.events import Event
from dataflows.attribution.flow import parse_value, tune_garbage_collector
from dataflows.attribution.routing import route
from dataflows.replay import ArchiveSnapshot, ArchiveSource, ReplayScope, run_replay
from dataflows.sinks.clickhouse import COLUMNS, Row, client_for
from deploy.clickhouse_http import start_subprocess, stop_subprocess
from deploy.migrations import migrate_clickhouse, migrate_postgres
from schemas.settings import Settings
from tests.dataflows.builders import Tenant, new_tenant, order_body, seed_tenant

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BASE = datetime(2025, 1, 1, tzinfo=UTC)
TARGET_RATE = 100_000.0
CHUNK = 100_000


# --- the archived input ----------------------------------------------------------------------


@dataclass
class Plan:
    tenant: Tenant
    events: int
    clicks_per_order: int
    refund_share: float
    span: timedelta
    orders: int = 0
    refunds: int = 0
    clicks: int = 0
    coupon_orders: int = 0
    ana_orders: int = 0  # not refunded, per agent (the totals the ledger must show)
    bob_orders: int = 0
    boss_orders: int = 0
    ledger_rows: int = 0

    def agent(self, i: int) -> str:
        t, r = self.tenant, i % 10
        return t.ana if r < 6 else t.bob if r < 9 else t.boss


def _row(
    t: Tenant, source: str, kind: str, event_id: str, entity: str, at: datetime, body: bytes
) -> Row:
    received = at + timedelta(seconds=1)
    shop = f"{t.tenant_id}.myshopify.com" if source == "shopify" else None
    return (
        t.tenant_id, source, kind, event_id, shop, entity, at, received, 1,
        hashlib.sha256(body).hexdigest(), {}, body.decode(), "utf-8", at, 0, received, 0,
        "application/json",
    )  # fmt: skip


def archived_rows(plan: Plan) -> Iterator[Row]:
    """The archive in arrival order; fills the plan's expected figures as it goes."""
    t, rng = plan.tenant, random.Random(7)
    step = plan.span / max(1, plan.events)
    n, click_no = 0, 0
    while n < plan.events:
        for _ in range(plan.clicks_per_order):
            if n >= plan.events:
                return
            at = BASE + step * n
            cid = f"clk_{click_no:032x}"
            body = orjson.dumps({
                "click_id": cid, "tenant_id": t.tenant_id, "link_code": "bench",
                "occurred_at": at.isoformat(), "visitor_id": f"v{click_no % 50_000}",
                "program_id": t.program, "agent_id": plan.agent(click_no),
            })  # fmt: skip
            yield _row(t, "click", "click", cid, cid, at, body)
            n, click_no, plan.clicks = n + 1, click_no + 1, plan.clicks + 1
        if n >= plan.events or click_no == 0:
            continue
        at = BASE + step * n
        order_id = 1_000_000 + plan.orders
        coupon = plan.orders % 10 == 9
        cited = click_no - 1 - rng.randrange(min(click_no, 1000))
        if coupon:
            body = orjson.dumps(order_body(order_id, at=at, coupon=t.coupon))
            agent = t.bob
        else:
            body = orjson.dumps(order_body(order_id, at=at, cites=f"clk_{cited:032x}"))
            agent = plan.agent(cited)
        yield _row(t, "shopify", "orders/create", f"ev-o-{order_id}", str(order_id), at, body)
        n, plan.orders = n + 1, plan.orders + 1
        entries = 2 if agent == t.ana else 1
        refunded = n < plan.events and rng.random() < plan.refund_share
        plan.ledger_rows += entries * (2 if refunded else 1)
        plan.coupon_orders += coupon
        if refunded:
            back = at + timedelta(seconds=30)
            refund_body = orjson.dumps({
                "id": order_id, "order_id": order_id, "created_at": back.isoformat(),
                "processed_at": back.isoformat(),
                "refund_line_items": [{"id": order_id * 10, "line_item_id": 1, "quantity": 1}],
            })  # fmt: skip
            event_id = f"ev-r-{order_id}"
            yield _row(t, "shopify", "refunds/create", event_id, str(order_id), back, refund_body)
            n, plan.refunds = n + 1, plan.refunds + 1
        elif agent == t.ana:
            plan.ana_orders += 1
        elif agent == t.bob:
            plan.bob_orders += 1
        else:
            plan.boss_orders += 1

    return


def expected_totals(plan: Plan) -> dict[str, Decimal]:
    t = plan.tenant
    out = {
        t.ana: Decimal("10.00") * plan.ana_orders,
        t.bob: Decimal("10.00") * plan.bob_orders,
        t.boss: Decimal("10.00") * plan.boss_orders + Decimal("0.50") * plan.ana_orders,
    }
    return {agent: total for agent, total in out.items() if total}


def archive(settings: Settings, plan: Plan) -> float:
    client = client_for(settings)
    columns = list(COLUMNS["raw_events"])
    started = time.perf_counter()
    try:
        batch: list[Row] = []
        for row in archived_rows(plan):
            batch.append(row)
            if len(batch) == CHUNK:
                client.insert("raw_events", batch, column_names=columns)
                batch = []
        if batch:
            client.insert("raw_events", batch, column_names=columns)
    finally:
        client.close()
    return time.perf_counter() - started


# --- the measured runs (child processes) -----------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """CPU time of this process (threads included): on a shared machine, events per CPU second
    says more than events per wall second."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _read_archive(
    settings: Settings,
    tenant_id: str,
    page_rows: int,
    name: str,
    steps: Callable[[Stream[bytes | None]], object] | None = None,
) -> dict[str, Any]:
    """The replay source (a snapshot of the archive, paged) into a counting step, with `steps`
    run on its values too: events read, wall and CPU seconds, peak RSS."""
    started = time.perf_counter()
    snapshot = ArchiveSnapshot(settings, ReplayScope(tenant_id), timedelta(days=30), name)
    copied = time.perf_counter() - started
    counted = [0]
    try:
        flow = Dataflow(f"replay_{name}")
        values = op.input("archive_in", flow, ArchiveSource(snapshot, page_rows=page_rows))
        if steps is not None:
            steps(values)

        def count(_step: str, _value: bytes | None) -> None:
            counted[0] += 1

        op.inspect("count", values, count)
        run_main(flow)  # type: ignore[no-untyped-call]
    finally:
        snapshot.drop()
    elapsed = time.perf_counter() - started
    return {"events": counted[0], "seconds": elapsed, "snapshot_seconds": copied,
            "rss_mb": _peak_rss_mb(), "cpu_seconds": _cpu_seconds()}  # fmt: skip


def child_read(settings: Settings, tenant_id: str, page_rows: int) -> dict[str, Any]:
    """The replay source alone into a counting sink."""
    return _read_archive(settings, tenant_id, page_rows, "benchread")


def _count_key(count: int | None, _item: object) -> tuple[int, int]:
    count = (count or 0) + 1
    return count, count


def _event(item: object) -> Event | None:
    return item if type(item) is Event else None


def floor_steps(values: Stream[bytes | None]) -> KeyedStream[int]:
    """The least a replay of this design does per value: decode it as a replay does (no
    archive rows), key its events as the flow does (`route`) and keep a counter per key;
    the counters after each item."""
    parsed = op.flat_map("parse", values, partial(parse_value, archive=False))
    keyed = op.flat_map("route", op.filter_map("events", parsed, _event), route)
    return op.stateful_map("state", keyed, _count_key)


def child_floor(settings: Settings, tenant_id: str, page_rows: int) -> dict[str, Any]:
    """The replay source, each value decoded as a replay decodes it and every event through one
    keyed stateful step (a counter per key): the least a replay of this design does."""
    return _read_archive(settings, tenant_id, page_rows, "benchfloor", floor_steps)


def child_replay(settings: Settings, tenant_id: str, page_rows: int) -> dict[str, Any]:
    started = time.perf_counter()
    result = run_replay(settings, ReplayScope(tenant_id), page_rows=page_rows)
    elapsed = time.perf_counter() - started
    return {"events": result.events, "entries": result.entries, "orders": result.orders,
            "dead": result.dead, "replay_id": result.replay_id, "seconds": elapsed,
            "rss_mb": _peak_rss_mb(), "cpu_seconds": _cpu_seconds()}  # fmt: skip


def run_child(mode: str, settings: Settings, tenant_id: str, page_rows: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFSTREAM_")}
    env.update({
        "REFSTREAM_POSTGRES_URL": settings.postgres_url,
        "REFSTREAM_CLICKHOUSE_URL": settings.clickhouse_url,
    })  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "bench.replay", "--child", mode, "--tenant", tenant_id,
         "--page-rows", str(page_rows)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--clicks-per-order", type=int, default=10)
    parser.add_argument("--refund-share", type=float, default=0.1)
    parser.add_argument("--page-rows", type=int, default=20_000)
    parser.add_argument(
        "--days-per-million", type=float, default=30.0,
        help="event-time span per million events (default 30: ~33k events a day)",
    )  # fmt: skip
    parser.add_argument("--child", choices=("read", "floor", "replay"))
    parser.add_argument("--tenant")
    args = parser.parse_args()
    if args.child:
        tune_garbage_collector()  # as `refstream replay run` does
        settings = Settings()
        run = {"read": child_read, "floor": child_floor, "replay": child_replay}[args.child]
        print(json.dumps(run(settings, args.tenant, args.page_rows), default=str))
        return

    scratch = Path(tempfile.mkdtemp(prefix="refstream-bench-replay-"))
    database = f"refstream_bench_{uuid.uuid4().hex[:8]}"
    server = None
    try:
        server, port = start_subprocess(scratch / "chdb")
        settings = Settings(
            postgres_url=f"postgresql://postgres@127.0.0.1:5432/{database}",
            postgres_owner_url=f"postgresql://postgres@127.0.0.1:5432/{database}",
            postgres_admin_url=None,
            clickhouse_url=f"http://default:@127.0.0.1:{port}/bench",
        )
        migrate_postgres(settings)
        migrate_clickhouse(settings)
        tenant = new_tenant()
        seed_tenant(settings, tenant)
        span = timedelta(days=args.days_per_million * args.events / 1_000_000)
        plan = Plan(tenant, args.events, args.clicks_per_order, args.refund_share, span)
        archived = archive(settings, plan)
        say(f"archived {args.events:,} events ({plan.clicks:,} clicks, {plan.orders:,} orders, "
            f"{plan.refunds:,} refunds) in {archived:.1f} s "
            f"({args.events / archived:,.0f} rows/s through the ClickHouse front)")  # fmt: skip

        read = run_child("read", settings, tenant.tenant_id, args.page_rows)
        say(f"archive read path alone: {read['events']:,} events in {read['seconds']:.1f} s "
            f"= {read['events'] / read['seconds']:,.0f} events/s, "
            f"{read['events'] / read['cpu_seconds']:,.0f} events per CPU second (snapshot copy "
            f"{read['snapshot_seconds']:.1f} s), peak RSS {read['rss_mb']:,.0f} MB")  # fmt: skip

        floor = run_child("floor", settings, tenant.tenant_id, args.page_rows)
        floor_rate = floor["events"] / floor["seconds"]
        say(
            f"floor of any replay (read, decode, one keyed step; one process as a replay runs): "
            f"{floor['events']:,} events in {floor['seconds']:.1f} s = {floor_rate:,.0f} "
            f"events/s, {floor['events'] / floor['cpu_seconds']:,.0f} events per CPU second: "
            + (
                "the target is beyond this design on this machine (its floor is below it)"
                if floor_rate < TARGET_RATE
                else "the target is within this design's floor"
            )
        )
        replay = run_child("replay", settings, tenant.tenant_id, args.page_rows)
        rate = replay["events"] / replay["seconds"]
        say(f"replay end to end: {replay['events']:,} events in {replay['seconds']:.1f} s = "
            f"{rate:,.0f} events/s (target {TARGET_RATE:,.0f}: "
            f"{'met' if rate >= TARGET_RATE else 'NOT met'}; "
            f"{rate / (read['events'] / read['seconds']):.2f} of the read path alone, target 0.5; "
            f"{rate / floor_rate:.2f} of the floor), "
            f"{replay['events'] / replay['cpu_seconds']:,.0f} events per CPU second of the replay "
            f"process; peak RSS {replay['rss_mb']:,.0f} MB"
            f" (replay process), ClickHouse server {vm_hwm_mb(server.pid):,.0f} MB")  # fmt: skip
        check(settings, plan, replay)
    finally:
        if server is not None:
            stop_subprocess(server)
        with contextlib.suppress(Exception), psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
        shutil.rmtree(scratch, ignore_errors=True)


def check(settings: Settings, plan: Plan, replay: dict[str, Any]) -> None:
    with psycopg.connect(settings.postgres_url) as conn:
        rows = conn.execute(
            "SELECT agent_id, sum(amount), count(*) FROM ledger_shadow_entries"
            " WHERE replay_id = %s GROUP BY agent_id",
            (replay["replay_id"],),
        ).fetchall()
    count = sum(n for *_, n in rows)
    totals = {agent: total for agent, total, _ in rows if total}
    ok = count == plan.ledger_rows and totals == expected_totals(plan)
    say(f"shadow ledger: {count:,} entries (expected {plan.ledger_rows:,}), per-agent totals "
        f"{'as the input implies' if ok else 'DIFFER: ' + repr((totals, expected_totals(plan)))}"
        f"; dead letters {replay['dead'] or 'none'}")  # fmt: skip


def say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    main()
