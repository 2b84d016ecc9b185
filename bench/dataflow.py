"""End-to-end benchmark of the attribution dataflow (issue #4).

Run from the project root::

    .venv/bin/python -m bench.dataflow [--clicks 200000] [--orders 20000] [--refund-share 0.1]
                                       [--fresh-rate 200] [--fresh-seconds 10]

Self-contained: starts a private tansu broker, a private chDB ClickHouse server (the project's
ClickHouse-HTTP front) and a private PostgreSQL database (`refstream_bench_<hex>`), migrates them,
seeds one tenant (one program at 10% with a 5% level-1 override, three agents, a coupon) and
produces N clicks over three days of event time (~3 clicks per visitor), then M orders citing
random clicks (every tenth uses the coupon instead) and full refunds for a share of them.
Everything it started is stopped and dropped again in `finally`, also on Ctrl-C.

Phases (every flow runs as its own `python -m bytewax.run` process, one worker):

1. **tailing run** over clicks + orders + refunds + a freshness topic: time until all N clicks
   are in ClickHouse (click phase, includes start-up), then produce the orders and refunds and
   time until every conversion is in ClickHouse and every ledger row in PostgreSQL (order
   phase); then the **freshness** phase: orders at a steady rate, each stamped with its send
   time as `received_at`, citing preloaded clicks; ClickHouse is polled for them
   (`conversions.attributed_at` is that `received_at`), and `raw_events.archived_at` (a
   server-side `now64(3)` default) gives the archive path's latency exactly;
2. on a second PostgreSQL and ClickHouse database (the ledger is append-only, so it is not
   emptied), the **bounded run** (`tail=False`) over the same
   clicks/orders/refunds: wall time from process start to exit = the end-to-end figure;
   correctness is checked against what the input implies;
3. the **bare map**: `bench.dataflow_bare` (KafkaSource → identity map → KafkaSink, bounded) on
   the same input topics, timed the same way; ratio = end-to-end rate / bare rate;
4. the design's floors, each bounded on the same input and processes, on fresh stores, every
   archive row checked: **archiving alone** (`bench.dataflow_archive`: decode, the flow's archive
   rows through its sink, no attribution) and **archive + one keyed step**, the design's skeleton
   (`keyed=True`: the same, and every event through one stateful step keyed as the flow's first
   keyed step keys it, `routing.route`, a count per key, nothing written). Their events/s, CPU
   per event (flow + ClickHouse front + broker), CPU ceiling on the cores and ratio to the bare
   map are printed; the skeleton's ratio decides whether ≥ 0.5 of the bare map is within this
   design here, the lower of the two ceilings whether 50,000 events/s is;
5. **state bytes per live click**, in process: the clicks (first `--state-sample`) fed through
   `AttributionLogic.on_item`, then `len(snapshot()) / clicks` and the tracemalloc delta / clicks.

Nothing is asserted: it prints figures (timings belong here, not in tests).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql

from bench.engine import Engine
from bench.procstat import cpu_seconds
from bench.profiling import py_spy_command, summarize
from dataflows.attribution.events import click_event, parse_click, parse_envelope
from dataflows.attribution.flow import KAFKA_BATCH_SIZE
from dataflows.config import StaticConfig, load_snapshot
from dataflows.sinks.clickhouse import client_for
from deploy.clickhouse_http import start_subprocess, stop_subprocess
from deploy.migrations import migrate_clickhouse, migrate_postgres
from deploy.stack import StatePaths, free_port, start_kafka, stop_pid
from ingest.producer import producer_config
from schemas.events.envelope import EventEnvelope, Source
from schemas.ids import visitor_tag
from schemas.settings import Settings
from tests.dataflows.builders import (
    Tenant,
    click,
    new_tenant,
    order,
    order_body,
    refund,
    seed_tenant,
)

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PARTITIONS = 2
FRESH_FIRST = 5_000_000  # order ids of the freshness phase (the preloaded ones are lower)
LOGS: dict[int, Path] = {}  # flow pid → its log
# Freshness p99 (issue #19): ≤ 0.5 s at 200 orders/s, ≤ 1 s at half the maximum throughput.
TARGETS = {"e2e": 50_000.0, "ratio": 0.5, "bytes": 200.0, "p99": 0.5, "p99_loaded": 1.0}


# --- the scenario ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    clicks: str = "bench.clicks"
    orders: str = "bench.orders"
    refunds: str = "bench.refunds"
    fresh: str = "bench.fresh_orders"
    dead_tail: str = "bench.dead_tail"
    dead_bounded: str = "bench.dead_bounded"
    dead_single: str = "bench.dead_single"
    bare_out: str = "bench.bare_out"
    # With --processes > 1: the bare map on 1 process, the keyed bare map on N and on 1.
    bare_single_out: str = "bench.bare_single_out"
    bare_keyed_out: str = "bench.bare_keyed_out"
    bare_keyed_single_out: str = "bench.bare_keyed_single_out"
    # Read by nothing: the freshness generator's first write, before its window (see there).
    warmup: str = "bench.generator_warmup"
    # With --processes > 1: the phases again on N processes, with orders of their own.
    orders_n: str = "bench.orders_n"
    refunds_n: str = "bench.refunds_n"
    dead_tail_n: str = "bench.dead_tail_n"

    @property
    def inputs(self) -> tuple[str, str, str]:
        return (self.clicks, self.orders, self.refunds)

    def inputs_by_kind(self) -> dict[str, str]:
        """The order topics `Plan.order_messages` names by kind."""
        return {"orders": self.orders, "refunds": self.refunds}

    def all(self) -> tuple[str, ...]:
        return (*self.inputs, self.fresh, self.dead_tail, self.dead_bounded, self.dead_single,
                self.bare_out, self.bare_single_out, self.bare_keyed_out,
                self.bare_keyed_single_out, self.warmup, self.orders_n, self.refunds_n,
                self.dead_tail_n)  # fmt: skip


@dataclass
class Plan:
    """Deterministic clicks/orders/refunds, and the ledger they imply."""

    tenant: Tenant
    clicks: int
    orders: int
    refund_share: float
    base: datetime
    span_ms: int = 3 * 86_400_000
    order_clicks: list[int | None] = field(default_factory=list)  # None: coupon order
    refunded: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(4)
        for j in range(self.orders):
            self.order_clicks.append(None if j % 10 == 9 else rng.randrange(self.clicks))
            self.refunded.append(rng.random() < self.refund_share)

    def agent(self, i: int) -> str:
        t, r = self.tenant, i % 10
        return t.ana if r < 6 else t.bob if r < 9 else t.boss

    def click_at(self, i: int) -> datetime:
        return self.base + timedelta(milliseconds=i * self.span_ms // self.clicks)

    def visitor(self, i: int) -> str:
        return f"v{i % max(1, self.clicks // 3)}"

    def click_id(self, i: int) -> str:
        """As the ingress mints them (`schemas.ids.click_id_for_visitor`): the visitor's tag,
        then (here, deterministically) the click's number."""
        return f"clk_{visitor_tag(self.visitor(i))}{i:028x}"

    def click_bytes(self, i: int) -> tuple[bytes, bytes]:
        t = self.tenant
        visitor = self.visitor(i)
        envelope = click(
            t.tenant_id, self.click_id(i), at=self.click_at(i), agent=self.agent(i),
            program=t.program, visitor=visitor,
        )  # fmt: skip
        return envelope.key(), envelope.to_bytes(json_body=True)

    def order_at(self, j: int) -> datetime:
        c = self.order_clicks[j]
        if c is None:
            return self.base + timedelta(milliseconds=self.span_ms + j)
        return self.click_at(c) + timedelta(seconds=60)

    def order_messages(self) -> Iterator[tuple[str, bytes, bytes]]:
        t = self.tenant
        for j, c in enumerate(self.order_clicks):
            at = self.order_at(j)
            if c is None:
                env = order(t.tenant_id, 1_000_000 + j, at=at, coupon=t.coupon)
            else:
                env = order(t.tenant_id, 1_000_000 + j, at=at, cites=self.click_id(c))
            yield "orders", env.key(), env.to_bytes(json_body=True)
            if self.refunded[j]:
                back = refund(
                    t.tenant_id, 1_000_000 + j, j + 1, [(1, 1)], at=at + timedelta(seconds=600)
                )
                yield "refunds", back.key(), back.to_bytes(json_body=True)

    @property
    def refunds(self) -> int:
        return sum(self.refunded)

    def order_agent(self, j: int) -> str:
        c = self.order_clicks[j]
        return self.tenant.bob if c is None else self.agent(c)

    @property
    def tenant_ids(self) -> tuple[str, ...]:
        return (self.tenant.tenant_id,)

    def expected_ledger(self, extra_agents: list[str] = ()) -> tuple[int, dict[str, Decimal]]:
        """(rows, net amount per agent): 10% of 100.00 to the agent, 0.50 to ana's manager;
        a full refund reverses every entry of its order."""
        t = self.tenant
        rows, totals = 0, {t.ana: Decimal(0), t.bob: Decimal(0), t.boss: Decimal(0)}
        agents = [(self.order_agent(j), self.refunded[j]) for j in range(self.orders)]
        agents += [(a, False) for a in extra_agents]
        for agent, refunded in agents:
            entries = 2 if agent == t.ana else 1
            rows += entries * (2 if refunded else 1)
            if not refunded:
                totals[agent] += Decimal("10.00")
                if agent == t.ana:
                    totals[t.boss] += Decimal("0.50")
        return rows, {a: v for a, v in totals.items() if v}


@dataclass
class Tenants:
    """Several small tenants as one input (`--tenants N`): the same clicks, orders and refunds
    as one `Plan` of the totals, split evenly, each tenant with its own agents, program and
    coupon; event i of the click stream (and each round of the order stream) goes to tenant
    i % N, so the tenants' events interleave as a shared ingress would write them. Offers what
    the bounded, single-process, archive, state and decode phases read of a `Plan`."""

    plans: list[Plan]

    @classmethod
    def split(
        cls, tenants: list[Tenant], clicks: int, orders: int, refund_share: float, base: datetime
    ) -> Tenants:
        n = len(tenants)
        if clicks % n or orders % n:
            raise SystemExit(f"--clicks and --orders must be multiples of --tenants ({n})")
        return cls([Plan(t, clicks // n, orders // n, refund_share, base) for t in tenants])

    @property
    def tenant(self) -> Tenant:
        return self.plans[0].tenant

    @property
    def tenant_ids(self) -> tuple[str, ...]:
        return tuple(p.tenant.tenant_id for p in self.plans)

    @property
    def clicks(self) -> int:
        return sum(p.clicks for p in self.plans)

    @property
    def orders(self) -> int:
        return sum(p.orders for p in self.plans)

    @property
    def refunds(self) -> int:
        return sum(p.refunds for p in self.plans)

    def click_bytes(self, i: int) -> tuple[bytes, bytes]:
        n = len(self.plans)
        return self.plans[i % n].click_bytes(i // n)

    def order_messages(self) -> Iterator[tuple[str, bytes, bytes]]:
        streams = [p.order_messages() for p in self.plans]
        while streams:
            alive = []
            for stream in streams:
                message = next(stream, None)
                if message is not None:
                    yield message
                    alive.append(stream)
            streams = alive

    def expected_ledger(self) -> tuple[int, dict[str, Decimal]]:
        rows, totals = 0, {}
        for plan in self.plans:
            n, per_agent = plan.expected_ledger()
            rows += n
            totals.update(per_agent)  # agent ids are the tenant's own
        return rows, totals


def fresh_order(t: Tenant, order_id: int, cites: str, now: datetime) -> EventEnvelope:
    body = order_body(order_id, at=now, cites=cites)
    return EventEnvelope.wrap(
        orjson.dumps(body), event_id=f"ev-{uuid.uuid4().hex}", source=Source.SHOPIFY,
        kind="orders/create", tenant_id=t.tenant_id, shop=f"{t.tenant_id}.myshopify.com",
        entity_id=str(order_id), occurred_at=now, received_at=now,
    )  # fmt: skip


# --- the private stack -----------------------------------------------------------------------


@dataclass
class Stack:
    scratch: Path
    databases: list[str] = field(default_factory=list)
    broker_pid: int | None = None
    clickhouse: subprocess.Popen[bytes] | None = None
    flows: list[subprocess.Popen[bytes]] = field(default_factory=list)
    settings: Settings | None = None

    def teardown(self) -> None:
        for proc in self.flows:
            stop_flow(proc)
        if self.clickhouse is not None:
            stop_subprocess(self.clickhouse)
        if self.broker_pid is not None:
            stop_pid(self.broker_pid)
        for database in self.databases:
            with contextlib.suppress(Exception):
                admin = "postgresql://postgres@127.0.0.1:5432/postgres"
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(database)
                        )
                    )
        shutil.rmtree(self.scratch, ignore_errors=True)


def start_stack(stack: Stack, topics: Topics) -> Settings:
    paths = StatePaths(stack.scratch / "state").ensure()
    port = free_port()
    stack.broker_pid = start_kafka(HOST, port, paths, tie_to_parent=True)
    stack.clickhouse, ch_port = start_subprocess(stack.scratch / "chdb", host=HOST, port=0)
    settings = Settings(
        kafka_bootstrap=f"{HOST}:{port}",
        postgres_url="postgresql://postgres@127.0.0.1:5432/postgres",
        clickhouse_url=f"http://default:@{HOST}:{ch_port}/default",
        state_dir=paths.root,
    )
    stack.settings = settings
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    wanted = [
        NewTopic(name, num_partitions=PARTITIONS, replication_factor=1) for name in topics.all()
    ]
    for future in admin.create_topics(wanted, request_timeout=15).values():
        future.result(timeout=15)
    return settings


def stores(stack: Stack, base: Settings, name: str) -> Settings:
    """A fresh PostgreSQL database and ClickHouse database, migrated (the ledger is append-only:
    each measured run gets its own stores instead of emptying them)."""
    database = f"refstream_bench_{uuid.uuid4().hex[:8]}_{name}"
    stack.databases.append(database)
    ch = base.clickhouse
    settings = Settings(
        kafka_bootstrap=base.kafka_bootstrap,
        postgres_url=f"postgresql://postgres@127.0.0.1:5432/{database}",
        postgres_owner_url=f"postgresql://postgres@127.0.0.1:5432/{database}",
        postgres_admin_url=None,
        clickhouse_url=f"http://default:@{ch.host}:{ch.port}/bench_{name}",
        state_dir=base.state_dir,
    )  # not model_copy: `Settings.clickhouse` is a cached property
    migrate_postgres(settings)
    migrate_clickhouse(settings)
    return settings


def producer(settings: Settings, linger_ms: int = 20) -> Producer:
    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": 1_000_000,
            "log_level": 0,
        }
    )


def produce_all(settings: Settings, messages: Iterator[tuple[str, bytes, bytes]]) -> int:
    out, n = producer(settings), 0
    for topic, key, value in messages:
        while True:
            try:
                out.produce(topic, key=key, value=value)
                break
            except BufferError:
                out.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            out.poll(0)
    if out.flush(60) != 0:
        raise RuntimeError("the producer could not deliver everything within 60 s")
    return n


def count_to_end(bootstrap: str, topic: str, timeout: float = 60) -> int:
    """Messages in `topic`, read to the end of every partition (never trust high watermarks)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 0,
        }
    )
    try:
        partitions = set(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_eof: set[int] = set()
        n, deadline = 0, time.monotonic() + timeout
        while at_eof != partitions and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is None:
                    n += 1
                elif msg.error().code() == -191:  # _PARTITION_EOF
                    at_eof.add(msg.partition())
        return n
    finally:
        consumer.close()


# --- flows as subprocesses -------------------------------------------------------------------


def flow_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFSTREAM_")}
    env.update(
        {
            "REFSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "REFSTREAM_POSTGRES_URL": settings.postgres_url,
            "REFSTREAM_CLICKHOUSE_URL": settings.clickhouse_url,
        }
    )
    return env


def start_flow(
    stack: Stack,
    settings: Settings,
    factory: str,
    log: Path,
    cluster: Sequence[str] = (),
    profile: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`python -m bytewax.run factory`; `cluster` = (`-i`, id, `-a`, addresses) for a process
    of a multi-process run; `profile`: a py-spy command that runs it (`bench.profiling`)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*profile, sys.executable, "-m", "bytewax.run", *cluster, factory],
            cwd=ROOT, env=flow_env(settings), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    stack.flows.append(proc)
    LOGS[proc.pid] = log
    return proc


def stop_flow(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def attribution_factory(inputs: tuple[str, ...], dead: str, *, tail: bool, args: Any) -> str:
    return (
        f"dataflows.attribution.flow:build(tail={tail!r}, input_topics={inputs!r}, "
        f"deadletter_topic={dead!r}, batch_max_size={args.batch_max_size}, "
        f"batch_timeout_seconds={args.batch_timeout}, kafka_batch_size={args.kafka_batch_size})"
    )


def run_bounded(
    stack: Stack,
    settings: Settings,
    factory: str,
    log: Path,
    processes: int = 1,
    cpu: list[float] | None = None,
    profile: Sequence[str] = (),
) -> float:
    """Wall time of a bounded run over `processes` bytewax processes (one worker each); each
    process's CPU seconds (user + system, from `wait4`) are appended to `cpu` if given.
    `profile`: a py-spy command that runs the first process (`bench.profiling`)."""
    addresses = ";".join(f"{HOST}:{free_port()}" for _ in range(processes))
    started = time.perf_counter()
    cluster = [("-i", str(i), "-a", addresses) if processes > 1 else () for i in range(processes)]
    procs = []
    for i in range(processes):
        spy = profile if i == 0 else ()
        procs.append(
            start_flow(stack, settings, factory, log.with_suffix(f".{i}.log"), cluster[i], spy)
        )
    codes = []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        codes.append(proc.returncode)
        if cpu is not None:
            cpu.append(usage.ru_utime + usage.ru_stime)
    elapsed = time.perf_counter() - started
    for i, code in enumerate(codes):
        if code != 0:
            text = log.with_suffix(f".{i}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{factory} process {i} exited {code}:\n{text}")
    return elapsed


# --- reading the sinks -----------------------------------------------------------------------


class Sinks:
    def __init__(self, settings: Settings, tenant_ids: str | tuple[str, ...]) -> None:
        ids = (tenant_ids,) if isinstance(tenant_ids, str) else tenant_ids
        self.settings, self.tenant_ids = settings, list(ids)
        self.ch = client_for(settings)
        self.pg = psycopg.connect(settings.postgres_url, autocommit=True)

    def close(self) -> None:
        self.ch.close()
        self.pg.close()

    def ch_count(self, table: str, *, final: bool = True) -> int:
        rows = self.ch.query(
            f"SELECT count() FROM {table} {'FINAL' if final else ''}"
            " WHERE tenant_id IN {t:Array(String)}",
            parameters={"t": self.tenant_ids},
        ).result_rows
        return int(rows[0][0])

    def ledger(self) -> tuple[int, dict[str, Decimal]]:
        rows = self.pg.execute(
            "SELECT agent_id, sum(amount), count(*) FROM ledger_entries"
            " WHERE tenant_id = ANY(%s) GROUP BY agent_id",
            (self.tenant_ids,),
        ).fetchall()
        return sum(n for *_, n in rows), {a: total for a, total, _ in rows if total}

    def ledger_rows(self) -> int:
        row = self.pg.execute(
            "SELECT count(*) FROM ledger_entries WHERE tenant_id = ANY(%s)", (self.tenant_ids,)
        ).fetchone()
        return int(row[0]) if row else 0


def wait_until(what: str, check: Any, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Poll `check()` every 0.1 s until true; returns the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if proc.poll() is not None:
            tail = LOGS[proc.pid].read_text(errors="replace")
            raise RuntimeError(
                f"the flow exited ({proc.returncode}) waiting for {what}:\n{tail[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(0.1)


# --- phases ----------------------------------------------------------------------------------


@dataclass
class Figures:
    events: int = 0
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    e2e_s: float | None = None
    click_phase: tuple[int, float] | None = None
    order_phase: tuple[int, float] | None = None
    e2e_cpu: list[float] = field(default_factory=list)  # CPU s per process, bounded run
    single_s: float | None = None  # the bounded run on one process (with --processes > 1)
    single_cpu: list[float] = field(default_factory=list)
    bare_s: float | None = None
    bare_cpu: list[float] = field(default_factory=list)  # CPU s per process, bare map
    # With --processes > 1, CPU s: the bare map on 1 process; the keyed one on N and on 1.
    bare_single_cpu: float | None = None
    bare_keyed_cpu: float | None = None
    bare_keyed_single_cpu: float | None = None
    bare_broker_cpu: float | None = None  # the broker's CPU s during the bare map
    read_cpu: list[float] = field(default_factory=list)  # CPU s per process, reading alone
    # Archiving alone (`bench.dataflow_archive`): its processes, the front and the broker, CPU s
    archive_cpu: list[float] = field(default_factory=list)
    archive_s: float | None = None  # archiving alone, wall seconds
    archive_front_cpu: float | None = None
    archive_broker_cpu: float | None = None
    # Archive + one keyed step (`bench.dataflow_archive`, `keyed=True`: the design's skeleton),
    # the same measures
    skeleton_cpu: list[float] = field(default_factory=list)
    skeleton_s: float | None = None
    skeleton_front_cpu: float | None = None
    skeleton_broker_cpu: float | None = None
    read_broker_cpu: float | None = None  # the broker's CPU s while reading alone
    decode_us: float | None = None  # decoding one envelope of the input mix, in process
    front_cpu: float | None = None  # the ClickHouse front's CPU s during the bounded run
    broker_cpu: float | None = None  # the broker's CPU s during the bounded run
    bare_out: int | None = None
    pickle_bytes: float | None = None
    traced_bytes: float | None = None
    state_clicks: int = 0
    # With --processes > 1: the tailing run's phases on N processes, (events, seconds).
    click_phase_n: tuple[int, float] | None = None
    order_phase_n: tuple[int, float] | None = None
    # Cores the one-process order phase kept busy (flow, ClickHouse front, broker, bench).
    order_phase_cores: float | None = None
    fresh: Window | None = None  # at --fresh-rate
    fresh_half: Window | None = None  # at half the order phase's rate (--no-half-max: not run)
    checks: list[tuple[str, str, str, bool]] = field(default_factory=list)  # what, want, got, ok
    notes: list[str] = field(default_factory=list)
    profile: list[tuple[str, float]] = field(default_factory=list)  # (stage, share), --profile

    def check(self, what: str, want: object, got: object) -> None:
        self.checks.append((what, str(want), str(got), want == got))


def click_and_order_phases(
    stack: Stack,
    settings: Settings,
    plan: Plan,
    procs: Sequence[subprocess.Popen[bytes]],
    sinks: Sinks,
    order_topics: dict[str, str],
    started: float,
    label: str,
) -> tuple[tuple[int, float], tuple[int, float], float]:
    """A tailing run's two phases, its flow processes `procs` started at `started`: the click
    phase (until every click is in ClickHouse, start-up included), then the order phase (the
    plan's orders and refunds produced to `order_topics`, by kind, until every conversion and
    ledger row is written). Returns both as (events, seconds) and the cores every process on the
    machine kept busy during the order phase: the flow's, the ClickHouse front, the broker and
    this bench (producing and polling)."""

    def others_alive() -> bool:  # (`wait_until` watches the first process)
        return all(p.poll() is None for p in procs[1:])

    done = wait_until(
        f"all clicks in ClickHouse{label}",
        lambda: sinks.ch_count("clicks", final=False) >= plan.clicks and others_alive(),
        procs[0],
        600,
    )
    clicks = (plan.clicks, done - started)
    print(f"  click phase{label}: {plan.clicks} clicks in {done - started:.1f} s (incl. start-up)")
    expected_rows, _ = plan.expected_ledger()
    assert stack.clickhouse is not None
    assert stack.broker_pid is not None
    busy = (*(p.pid for p in procs), stack.clickhouse.pid, stack.broker_pid, os.getpid())
    cpu_before = sum(cpu_seconds(pid) for pid in busy)
    started = time.monotonic()
    messages = plan.order_messages()
    sent = produce_all(settings, ((order_topics[k], key, v) for k, key, v in messages))
    done = wait_until(
        f"all conversions and ledger rows{label}",
        lambda: (
            sinks.ledger_rows() >= expected_rows
            and sinks.ch_count("conversions", final=False) >= plan.orders
        ),
        procs[0],
        600,
    )
    cores = (sum(cpu_seconds(pid) for pid in busy) - cpu_before) / (done - started)
    print(f"  order phase{label}: {sent} orders+refunds in {done - started:.1f} s (incl."
          f" producing; {cores:.2f} cores busy)")  # fmt: skip
    return clicks, (sent, done - started), cores


def tailing_phase(
    stack: Stack, settings: Settings, plan: Plan, topics: Topics, args: Any, fig: Figures
) -> None:
    t = plan.tenant
    sinks = Sinks(settings, t.tenant_id)
    log = stack.scratch / "tail.log"
    inputs = (*topics.inputs, topics.fresh)
    started = time.monotonic()
    proc = start_flow(
        stack, settings, attribution_factory(inputs, topics.dead_tail, tail=True, args=args), log
    )
    try:
        fig.click_phase, fig.order_phase, fig.order_phase_cores = click_and_order_phases(
            stack, settings, plan, [proc], sinks, topics.inputs_by_kind(), started, ""
        )
        window = (args.fresh_rate, args.fresh_seconds, FRESH_FIRST)
        assert stack.clickhouse is not None
        assert stack.broker_pid is not None
        servers = {"ClickHouse front": stack.clickhouse.pid, "broker": stack.broker_pid}
        fig.fresh = freshness(settings, plan, topics, window, fig, proc, sinks, servers)
        fresh_agents = list(fig.fresh.agents)
        if args.half_max and fig.order_phase:
            # Issue #19: freshness p99 ≤ 1 s at half the maximum throughput, the order phase's.
            half = fig.order_phase[0] / fig.order_phase[1] / 2
            window = (half, args.fresh_seconds, FRESH_FIRST + fig.fresh.sent)
            fig.fresh_half = freshness(settings, plan, topics, window, fig, proc, sinks, servers)
            fresh_agents += fig.fresh_half.agents
        rows, totals = plan.expected_ledger(fresh_agents)
        wait_until("fresh ledger rows", lambda: sinks.ledger_rows() >= rows, proc, 60)
        fig.check("tailing run: ledger rows", rows, sinks.ledger()[0])
        fig.check("tailing run: ledger net per agent", totals, sinks.ledger()[1])
        fig.check(
            "tailing run: conversions (FINAL)",
            plan.orders + len(fresh_agents),
            sinks.ch_count("conversions"),
        )
    finally:
        stop_flow(proc)
        sinks.close()
    fig.check(
        "tailing run: dead letters", 0, count_to_end(settings.kafka_bootstrap, topics.dead_tail)
    )


def tailing_phases_n(
    stack: Stack, settings: Settings, plan: Plan, topics: Topics, args: Any, fig: Figures
) -> None:
    """The tailing run's click and order phases again, on `args.processes` processes (one
    worker each), on stores of their own and orders of their own topics: how one tenant's
    order path spreads over processes (issue #19's item 1; docs/design/engine-keys.md). No
    freshness windows (those are the one-process run's)."""
    n = args.processes
    sinks = Sinks(settings, plan.tenant.tenant_id)
    inputs = (topics.clicks, topics.orders_n, topics.refunds_n)
    factory = attribution_factory(inputs, topics.dead_tail_n, tail=True, args=args)
    addresses = ";".join(f"{HOST}:{free_port()}" for _ in range(n))
    started = time.monotonic()
    procs = [
        start_flow(
            stack,
            settings,
            factory,
            stack.scratch / f"tail_n.{i}.log",
            ("-i", str(i), "-a", addresses),
        )
        for i in range(n)
    ]
    try:
        mine = {"orders": topics.orders_n, "refunds": topics.refunds_n}
        fig.click_phase_n, fig.order_phase_n, _ = click_and_order_phases(
            stack, settings, plan, procs, sinks, mine, started, f" on {n} processes"
        )
        expected_rows, totals = plan.expected_ledger()
        fig.check(f"tailing run on {n} processes: ledger rows", expected_rows, sinks.ledger()[0])
        fig.check(f"tailing run on {n} processes: ledger net per agent", totals, sinks.ledger()[1])
    finally:
        for proc in procs:
            stop_flow(proc)
        sinks.close()
    fig.check(
        f"tailing run on {n} processes: dead letters", 0,
        count_to_end(settings.kafka_bootstrap, topics.dead_tail_n),
    )  # fmt: skip


@dataclass
class Window:
    """One freshness window's result: conversions' and archive rows' latencies (ms, sorted),
    the agents its orders go to, how many it sent, the median poll."""

    rate: float
    sent: int
    agents: list[str]
    conv: list[float]
    raw: list[float]
    poll_ms: float | None
    # Cores each process used during the window (CPU seconds ÷ the window's wall seconds): the
    # flow, the ClickHouse front, the broker, this bench (generator and poller).
    cores: dict[str, float] = field(default_factory=dict)


def freshness(
    settings: Settings,
    plan: Plan,
    topics: Topics,
    window: tuple[float, float, int],
    fig: Figures,
    proc: subprocess.Popen[bytes],
    sinks: Sinks,
    pids: dict[str, int] | None = None,
) -> Window:
    """Orders at a steady rate citing preloaded clicks, stamped with their send time; a second
    thread polls ClickHouse as fast as it answers (its own client) while they are sent.
    `window`: (orders/s, seconds, the first order id: windows' ids must not overlap); `pids`:
    other processes whose CPU during the window is reported (`Window.cores`) beside the flow's
    and this bench's."""
    rate, seconds, first = window
    t = plan.tenant
    rng = random.Random(9 + first)
    since = datetime.now(UTC)
    since_ms = int(since.timestamp() * 1000)
    # Written as the ingress writes accepted events (its producer's own settings: acks=all,
    # idempotence, LZ4, 2 ms linger), so the broker and the flow see what they see in service.
    # Like the ingress's producer, it is ready before it stamps anything: an idempotent
    # producer's first write waits for its producer id, which delayed a new producer's first
    # second of orders by up to ~1 s (freshness p95 0.6 s, p99 1.0 s at 200 orders/s, measured;
    # the ingress's own producer is made once, at start-up).
    out = Producer({**producer_config(settings.kafka_bootstrap, 15.0), "log_level": 0})
    out.produce(topics.warmup, value=b"ready")
    out.flush(15)
    total = int(rate * seconds)
    agents: list[str] = []
    seen_conv: dict[str, float] = {}
    cycles: list[float] = []
    stop = threading.Event()
    ch = client_for(settings)
    ids = {"t": t.tenant_id, "s": since_ms, "first": first, "end": first + total}

    def poll() -> None:
        begun = time.time()
        rows = ch.query(
            "SELECT order_id, toUnixTimestamp64Milli(attributed_at) FROM conversions"
            " WHERE tenant_id = {t:String}"
            " AND attributed_at >= fromUnixTimestamp64Milli({s:Int64})"
            " AND toUInt64OrZero(order_id) >= {first:UInt64}"
            " AND toUInt64OrZero(order_id) < {end:UInt64}",
            parameters=ids,
        ).result_rows
        now = time.time()
        cycles.append(now - begun)
        for order_id, stamp in rows:
            if order_id not in seen_conv:
                seen_conv[order_id] = now * 1000 - stamp  # upper bound: visible by `now`

    def poller() -> None:
        deadline = None
        while len(seen_conv) < total and proc.poll() is None:
            if stop.is_set():
                deadline = deadline or time.monotonic() + 60
                if time.monotonic() > deadline:
                    return
            poll()
            time.sleep(0.005)

    watched = {"flow": proc.pid, **(pids or {}), "bench": os.getpid()}
    cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    wall_before = time.monotonic()
    thread = threading.Thread(target=poller, name="freshness-poller", daemon=True)
    thread.start()
    try:
        begin = time.monotonic()
        for n in range(total):
            due = begin + n / rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            c = rng.randrange(plan.clicks)
            agents.append(plan.agent(c))
            env = fresh_order(t, first + n, plan.click_id(c), datetime.now(UTC))
            out.produce(topics.fresh, key=env.key(), value=env.to_bytes(json_body=True))
            out.poll(0)
        out.flush(15)
        wall = time.monotonic() - wall_before
        cores = {n: (cpu_seconds(pid) - cpu_before[n]) / wall for n, pid in watched.items()}
    finally:
        stop.set()
        thread.join(timeout=90)
        ch.close()
    raw = sinks.ch.query(
        "SELECT toUnixTimestamp64Milli(archived_at) - toUnixTimestamp64Milli(received_at)"
        " FROM raw_events WHERE tenant_id = {t:String} AND kind = 'orders/create'"
        " AND received_at >= fromUnixTimestamp64Milli({s:Int64})"
        " AND toUInt64OrZero(entity_id) >= {first:UInt64}"
        " AND toUInt64OrZero(entity_id) < {end:UInt64}",
        parameters=ids,
    ).result_rows
    if len(seen_conv) < total:
        fig.notes.append(
            f"freshness at {rate:,.0f}/s: only {len(seen_conv)}/{total} conversions became visible"
        )
    return Window(
        rate, total, agents, sorted(seen_conv.values()), sorted(float(r[0]) for r in raw),
        statistics.median(cycles) * 1000 if cycles else None, cores,
    )  # fmt: skip


def bounded_phase(
    stack: Stack, settings: Settings, plan: Plan | Tenants, topics: Topics, args: Any, fig: Figures
) -> None:
    sinks = Sinks(settings, plan.tenant_ids)
    try:
        factory = attribution_factory(topics.inputs, topics.dead_bounded, tail=False, args=args)
        raw = stack.scratch / "bounded.pyspy"
        spy = [*py_spy_command(), str(raw), "--"] if args.profile else []
        if args.profile and len(spy) == 2:
            fig.notes.append("--profile: py-spy could not be installed; not profiled")
            spy = []
        assert stack.clickhouse is not None
        assert stack.broker_pid is not None
        front, broker = cpu_seconds(stack.clickhouse.pid), cpu_seconds(stack.broker_pid)
        fig.e2e_s = run_bounded(
            stack, settings, factory, stack.scratch / "bounded.log", args.processes, fig.e2e_cpu,
            spy,
        )  # fmt: skip
        front_s = cpu_seconds(stack.clickhouse.pid) - front
        fig.front_cpu, fig.broker_cpu = front_s, cpu_seconds(stack.broker_pid) - broker
        if spy:  # wait4 reports py-spy's own CPU, not its child's: no CPU figures
            fig.e2e_cpu.clear()
        cpu = ", ".join(f"{c:.1f}" for c in fig.e2e_cpu) or "not measured under py-spy"
        print(f"  bounded run: {fig.events} events in {fig.e2e_s:.1f} s (CPU s per process: {cpu};"
              f" ClickHouse front: {front_s:.1f} CPU s, ~{1e6 * front_s / fig.events:.0f} µs per"
              " event, inserts and merges)")  # fmt: skip
        if spy:
            fig.profile = summarize(raw) if raw.exists() else []
            if args.profile_out is not None and raw.exists():
                shutil.copyfile(raw, args.profile_out)
            fig.notes.append(
                "--profile: the bounded run's first process ran under py-spy (100 samples/s):"
                " its wall time includes the profiler's overhead, its CPU is not measured"
            )
        rows, totals = plan.expected_ledger()
        got_rows, got_totals = sinks.ledger()
        fig.check("bounded run: ledger rows", rows, got_rows)
        fig.check("bounded run: ledger net per agent", totals, got_totals)
        fig.check("bounded run: conversions (FINAL)", plan.orders, sinks.ch_count("conversions"))
        fig.check("bounded run: clicks (FINAL)", plan.clicks, sinks.ch_count("clicks"))
        fig.check("bounded run: raw_events (FINAL)", fig.events, sinks.ch_count("raw_events"))
    finally:
        sinks.close()
    fig.check(
        "bounded run: dead letters", 0, count_to_end(settings.kafka_bootstrap, topics.dead_bounded)
    )


def single_process_phase(
    stack: Stack, settings: Settings, topics: Topics, args: Any, fig: Figures
) -> None:
    """The same bounded run on one process, on fresh stores: the base of the scale-out ratio."""
    factory = attribution_factory(topics.inputs, topics.dead_single, tail=False, args=args)
    fig.single_s = run_bounded(
        stack, settings, factory, stack.scratch / "single.log", 1, fig.single_cpu
    )
    print(f"  bounded run on 1 process: {fig.events} events in {fig.single_s:.1f} s"
          f" ({fig.single_cpu[0]:.1f} CPU s)")  # fmt: skip


def bare_factory(settings: Settings, topics: Topics, out_topic: str, **options: bool) -> str:
    """The `bytewax.run` factory of `bench.dataflow_bare` over the input topics, writing to
    `out_topic` (`options`: its `keyed`, `read_only`)."""
    extra = "".join(f", {name}={value!r}" for name, value in options.items())
    return (
        f"bench.dataflow_bare:build({settings.kafka_bootstrap!r}, {topics.inputs!r}, "
        f"{out_topic!r}{extra})"
    )


def bare_phase(
    stack: Stack, settings: Settings, topics: Topics, fig: Figures, processes: int
) -> None:
    """The bare map and reading alone on `processes` processes, with the broker's CPU meanwhile;
    with more than one process, also the bare map on one process and the keyed bare map on N and
    on one (each to an output topic of its own): bytewax's own events per CPU-second N ÷ 1, the
    engine's floor for the scale-out ratio."""
    assert stack.broker_pid is not None
    broker = cpu_seconds(stack.broker_pid)
    fig.bare_s = run_bounded(
        stack, settings, bare_factory(settings, topics, topics.bare_out),
        stack.scratch / "bare.log", processes, fig.bare_cpu,
    )  # fmt: skip
    fig.bare_broker_cpu = cpu_seconds(stack.broker_pid) - broker
    fig.bare_out = count_to_end(settings.kafka_bootstrap, topics.bare_out)
    print(f"  bare map: {fig.events} events in {fig.bare_s:.1f} s"
          f" (CPU s per process: {', '.join(f'{c:.1f}' for c in fig.bare_cpu)})")  # fmt: skip
    fig.check("bare map: messages out", fig.events, fig.bare_out)
    broker = cpu_seconds(stack.broker_pid)
    seconds = run_bounded(
        stack, settings, bare_factory(settings, topics, topics.bare_out, read_only=True),
        stack.scratch / "read.log", processes, fig.read_cpu,
    )  # fmt: skip
    fig.read_broker_cpu = cpu_seconds(stack.broker_pid) - broker
    print(f"  reading alone: {fig.events} events in {seconds:.1f} s (CPU s per process:"
          f" {', '.join(f'{c:.1f}' for c in fig.read_cpu)})")  # fmt: skip
    if processes > 1:
        runs = (("bare map", topics.bare_single_out, False, 1),
                ("keyed bare map", topics.bare_keyed_out, True, processes),
                ("keyed bare map", topics.bare_keyed_single_out, True, 1))  # fmt: skip
        cpu_s: list[float] = []
        for label, out_topic, keyed, n in runs:
            factory = bare_factory(settings, topics, out_topic, keyed=keyed)
            cpu: list[float] = []
            seconds = run_bounded(stack, settings, factory, stack.scratch / f"{out_topic}.log", n,
                                  cpu)  # fmt: skip
            cpu_s.append(sum(cpu))
            print(f"  {label} on {n} process(es): {fig.events} events in {seconds:.1f} s"
                  f" ({sum(cpu):.1f} CPU s)")  # fmt: skip
            out = count_to_end(settings.kafka_bootstrap, out_topic)
            fig.check(f"{label} on {n} process(es): messages out", fig.events, out)
        fig.bare_single_cpu, fig.bare_keyed_cpu, fig.bare_keyed_single_cpu = cpu_s


def archive_phase(
    stack: Stack,
    settings: Settings,
    plan: Plan | Tenants,
    topics: Topics,
    fig: Figures,
    processes: int,
    keyed: bool = False,
) -> None:
    """Archiving alone (`bench.dataflow_archive`) on `processes` processes, on fresh stores:
    every event decoded and archived through the flow's own row builders and sink, nothing
    else; with the front's and the broker's CPU meanwhile. Checks every row arrived.

    `keyed=True`: archive + one keyed step, the design's skeleton (the same archiving, and
    every event through one stateful step keyed as the flow's first keyed step keys it, a count
    per key, nothing written): into the `skeleton_*` figures."""
    assert stack.clickhouse is not None
    assert stack.broker_pid is not None
    label, name = ("archive + one keyed step", "skeleton") if keyed else ("archiving alone",
                                                                           "archive")  # fmt: skip
    cpu: list[float] = fig.skeleton_cpu if keyed else fig.archive_cpu
    front, broker = cpu_seconds(stack.clickhouse.pid), cpu_seconds(stack.broker_pid)
    option = ", keyed=True" if keyed else ""
    factory = f"bench.dataflow_archive:build({topics.inputs!r}{option})"
    seconds = run_bounded(stack, settings, factory, stack.scratch / f"{name}.log", processes,
                          cpu)  # fmt: skip
    front_cpu = cpu_seconds(stack.clickhouse.pid) - front
    broker_cpu = cpu_seconds(stack.broker_pid) - broker
    if keyed:
        fig.skeleton_s, fig.skeleton_front_cpu, fig.skeleton_broker_cpu = (seconds, front_cpu,
                                                                           broker_cpu)  # fmt: skip
    else:
        fig.archive_s, fig.archive_front_cpu, fig.archive_broker_cpu = (seconds, front_cpu,
                                                                        broker_cpu)  # fmt: skip
    print(f"  {label}: {fig.events} events in {seconds:.1f} s (CPU s per process:"
          f" {', '.join(f'{c:.1f}' for c in cpu)}; ClickHouse front:"
          f" {front_cpu:.1f} CPU s)")  # fmt: skip
    sinks = Sinks(settings, plan.tenant_ids)
    try:
        fig.check(f"{label}: raw_events (FINAL)", fig.events, sinks.ch_count("raw_events"))
        fig.check(f"{label}: clicks (FINAL)", plan.clicks, sinks.ch_count("clicks"))
        fig.check(f"{label}: refunds (FINAL)", plan.refunds, sinks.ch_count("refunds"))
    finally:
        sinks.close()


def decode_phase(plan: Plan | Tenants, fig: Figures) -> None:
    """The least work any flow must do per event before its own: decode the envelope with the
    contract's checks (`parse_envelope`: msgspec, both times, the body against its size and
    SHA-256), in this process, on the run's own mix (every order and refund, as many clicks);
    best of three passes, CPU µs per event, weighted by the mix."""
    orders = [value for _, _, value in plan.order_messages()]
    clicks = [plan.click_bytes(i)[1] for i in range(min(plan.clicks, len(orders)))]
    per: list[float] = []
    for values in (clicks, orders):
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for value in values:
                parse_envelope(value)
            best = min(best, time.process_time() - started)
        per.append(best / max(1, len(values)))
    n_orders = len(orders)
    fig.decode_us = 1e6 * (per[0] * plan.clicks + per[1] * n_orders) / (plan.clicks + n_orders)


def state_phase(settings: Settings, plan: Plan | Tenants, sample: int, fig: Figures) -> None:
    """Clicks through the flow's click shards (`bench.engine`, config read from the bench
    database): memory and snapshot bytes per live click, over all the tenant's shards."""
    config = StaticConfig(load_snapshot(settings.postgres_url))
    n = min(sample, plan.clicks)
    raws = [plan.click_bytes(i)[1] for i in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = Engine(config)
    for raw in raws:
        envelope = parse_envelope(raw)
        engine.event(click_event(envelope, parse_click(envelope)))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    live = sum(len(shard.state.clicks) for shard in engine.shards.values())
    if live != n:
        fig.notes.append(f"state: {live} live clicks of {n} fed (some expired)")
    fig.state_clicks = live
    fig.traced_bytes = (after - before) / live
    fig.pickle_bytes = engine.snapshot_touched() / live


# --- report ----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def archiving_us(fig: Figures, keyed: bool = False) -> tuple[float, float, float] | None:
    """Archiving alone's CPU µs per event (`keyed`: archive + one keyed step's): its flow
    processes, the ClickHouse front and the broker (None when that phase did not run)."""
    cpu, front_s, broker_s = (
        (fig.skeleton_cpu, fig.skeleton_front_cpu, fig.skeleton_broker_cpu) if keyed
        else (fig.archive_cpu, fig.archive_front_cpu, fig.archive_broker_cpu)
    )  # fmt: skip
    if not cpu or front_s is None:
        return None
    used = (sum(cpu), front_s, broker_s or 0.0)
    flow, front, broker = (1e6 * x / fig.events for x in used)
    return flow, front, broker


def budget(fig: Figures) -> None:
    """Where the machine's cores go per event, every process of the run measured: the flow,
    the ClickHouse front and the broker in the bounded run; bytewax and the broker in the bare
    map and in reading alone (`bench.dataflow_bare`, `read_only`). Reading every event through
    bytewax, with the front's CPU for archiving every event, is a floor for any flow of this
    design (it reads every event through bytewax and archives it to ClickHouse) on this
    machine's cores, before any work of its own (parsing included)."""
    cores = os.cpu_count() or 1
    measured = (fig.e2e_cpu, fig.bare_cpu, fig.read_cpu, fig.front_cpu, fig.broker_cpu)
    if not all(measured):
        return
    assert fig.front_cpu is not None
    assert fig.broker_cpu is not None
    n = fig.events
    flow, front, broker = (1e6 * x / n for x in (sum(fig.e2e_cpu), fig.front_cpu, fig.broker_cpu))
    bare, bare_broker = 1e6 * sum(fig.bare_cpu) / n, 1e6 * (fig.bare_broker_cpu or 0) / n
    read, read_broker = 1e6 * sum(fig.read_cpu) / n, 1e6 * (fig.read_broker_cpu or 0) / n
    total, floor = flow + front + broker, read + read_broker + front
    print(f"  CPU µs per event, bounded run: flow {flow:.1f} + ClickHouse front {front:.1f}"
          f" + broker {broker:.1f} = {total:.1f}")  # fmt: skip
    print(f"  CPU µs per event, bare map (reads and writes each event): bytewax {bare:.1f} +"
          f" broker {bare_broker:.1f}; reading alone: bytewax {read:.1f} + broker"
          f" {read_broker:.1f}")  # fmt: skip
    print(f"  floor of any flow that reads every event through bytewax and archives it:"
          f" {read:.1f} + {read_broker:.1f} + {front:.1f} = {floor:.1f} µs per event")  # fmt: skip
    decode = fig.decode_us or 0.0
    print(f"  the same with decoding each envelope ({decode:.1f} µs, in process):"
          f" {floor + decode:.1f} µs per event")  # fmt: skip
    print(f"  ceiling on {cores} cores: this flow {cores * 1e6 / total:,.0f} events/s; the"
          f" floor {cores * 1e6 / floor:,.0f}; with decoding"
          f" {cores * 1e6 / (floor + decode):,.0f} events/s")  # fmt: skip
    floors = (
        ("archiving alone (decode, archive rows, the same sink; no attribution)",
         archiving_us(fig), "no flow that archives every event this way goes faster here"),
        ("archive + one keyed step (the same archiving, every event through one stateful step"
         " keyed as the flow keys it first, a count per key)", archiving_us(fig, keyed=True),
         "no flow of this design goes faster here"),
    )  # fmt: skip
    for label, used, verdict in floors:
        if used is None:
            continue
        flow_us, front_us, broker_us = used
        whole = flow_us + front_us + broker_us
        print(f"  {label}: flow {flow_us:.1f} + ClickHouse front {front_us:.1f} + broker"
              f" {broker_us:.1f} = {whole:.1f} µs per event; ceiling on {cores} cores"
              f" {cores * 1e6 / whole:,.0f} events/s: {verdict}")  # fmt: skip


def report(fig: Figures, args: Any) -> None:
    def row(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        mark = "" if ok is None else ("met" if ok else "MISSED")
        print(f"  {name:<44} {value:>18}  {target:<12} {mark}")

    tenants = "one tenant" if args.tenants == 1 else f"{args.tenants} tenants, split evenly"
    print(f"\nFigures ({args.clicks} clicks, {args.orders} orders, refund share"
          f" {args.refund_share}, {tenants}; bounded/bare runs on {args.processes} bytewax"
          f" process(es) of one worker, tailing run on one (with N > 1 its phases also on N);"
          f" {os.cpu_count()} cores):")  # fmt: skip
    print("  load average 1/5/15 min: at start " + " ".join(f"{x:.2f}" for x in fig.load_start)
          + ", at end " + " ".join(f"{x:.2f}" for x in os.getloadavg()))  # fmt: skip
    row("figure", "value", "target")
    e2e = fig.events / fig.e2e_s if fig.e2e_s else None
    if e2e is not None:
        row("end-to-end events/s (bounded run, wall)", f"{e2e:,.0f}", "≥ 50,000", e2e >= 50_000)
    else:
        row("end-to-end events/s", "not measured")
    for label, phase in (("click phase", fig.click_phase), ("order phase", fig.order_phase)):
        if phase:
            n, s = phase
            row(f"  {label} events/s (tailing run)", f"{n / s:,.0f}")
    for label, phase, one in (
        ("click phase", fig.click_phase_n, fig.click_phase),
        ("order phase", fig.order_phase_n, fig.order_phase),
    ):
        if phase and one:
            rate = phase[0] / phase[1]
            row(f"  {label} events/s, tailing run on {args.processes}", f"{rate:,.0f}")
            ratio = rate / (one[0] / one[1])
            if label == "order phase":  # one tenant's order path over processes: the design's
                row(
                    f"    ratio {args.processes} / 1 process", f"{ratio:.2f}", "≥ 1.6", ratio >= 1.6
                )
                if fig.order_phase_cores and fig.bare_keyed_cpu and fig.bare_keyed_single_cpu:
                    # The rate on N processes can grow at most by the cores the one-process
                    # phase left idle, times what CPU per event keeps of its one-process rate
                    # once events cross bytewax's keyed exchange (the keyed bare map's ratio).
                    cores = os.cpu_count() or 1
                    idle = cores / fig.order_phase_cores
                    keyed = fig.bare_keyed_single_cpu / fig.bare_keyed_cpu
                    row("    cores busy at 1 process; their headroom",
                        f"{fig.order_phase_cores:.2f} of {cores}; {idle:.2f}")  # fmt: skip
                    row("    ceiling: headroom times keyed map per CPU-s", f"{idle * keyed:.2f}")
                    row("    ≥ 1.6 within bytewax's keyed exchange here?",
                        "yes" if idle * keyed >= 1.6 else "no: beyond it")  # fmt: skip
            else:
                row(f"    ratio {args.processes} / 1 process", f"{ratio:.2f}")
    if len(fig.e2e_cpu) > 1:
        total = sum(fig.e2e_cpu)
        shares = [c / total for c in fig.e2e_cpu]
        ok = all(0.4 <= share <= 0.6 for share in shares) if len(shares) == 2 else None
        row("  CPU share per process (bounded run)", " / ".join(f"{x:.0%}" for x in shares),
            "40-60 %", ok)  # fmt: skip
        if fig.single_s and fig.single_cpu:
            per_cpu = fig.events / total
            single = fig.events / fig.single_cpu[0]
            row("  events per CPU-second, N processes", f"{per_cpu:,.0f}")
            row("  events per CPU-second, 1 process", f"{single:,.0f}")
            row("  ratio N / 1 process (per CPU-second)", f"{per_cpu / single:.2f}", "≥ 0.8",
                per_cpu / single >= 0.8)  # fmt: skip
            row("  end-to-end events/s on 1 process", f"{fig.events / fig.single_s:,.0f}")
        if fig.bare_cpu and fig.bare_single_cpu:
            bare_ratio = fig.bare_single_cpu / sum(fig.bare_cpu)
            row("  bare map: ratio N / 1 process (per CPU-s)", f"{bare_ratio:.2f}")
        if fig.bare_keyed_cpu and fig.bare_keyed_single_cpu:
            keyed_ratio = fig.bare_keyed_single_cpu / fig.bare_keyed_cpu
            row("  keyed bare map: ratio N / 1 (per CPU-s)", f"{keyed_ratio:.2f}")
            # Bytewax's own per-CPU rate once items cross processes as the flow's do (to their
            # click shard): a flow keyed this way keeps no more of it than bytewax does.
            row("  ratio ≥ 0.8 within bytewax's keyed exchange here?",
                "yes" if keyed_ratio >= 0.8 else "no: beyond it")  # fmt: skip
    bare = fig.events / fig.bare_s if fig.bare_s else None
    row("bare Kafka→Kafka map events/s", f"{bare:,.0f}" if bare else "not measured")
    if e2e and bare:
        ratio = e2e / bare
        row("ratio end-to-end / bare", f"{ratio:.2f}", "≥ 0.5", ratio >= TARGETS["ratio"])
    # The design's floors, measured (`bench.dataflow_archive`): archiving alone (decoding every
    # event and writing the flow's own archive rows through its own sink, no attribution), and
    # the skeleton, archive + one keyed step (the same, with every event also through one
    # stateful step keyed as the flow's first keyed step keys it: a count per key). No flow of
    # this design (it archives every event it reads and keeps state keyed by what the event
    # joins) runs faster than the skeleton, so where it is below a target the target is beyond
    # the design on this machine. The verdicts use the skeleton (archiving alone's ceiling too
    # for 50,000 events/s, where it is lower); archiving alone where the skeleton did not run.
    ceilings: dict[str, float] = {}  # floor's name → its CPU ceiling on all cores, events/s
    ratio_floor: tuple[str, float] | None = None
    all_cores = os.cpu_count() or 1
    for label, name, seconds, keyed in (
        ("archiving alone events/s (no attribution)", "archiving alone", fig.archive_s, False),
        ("archive + one keyed step events/s (skeleton)", "skeleton", fig.skeleton_s, True),
    ):
        if not seconds:
            continue
        rate = fig.events / seconds
        row(label, f"{rate:,.0f}")
        per_event = archiving_us(fig, keyed)
        if per_event is not None:
            if keyed:  # (to one decimal in the budget below)
                parts = "+".join(f"{x:.0f}" for x in per_event)
                row("  CPU µs/event: flow+front+broker", f"{parts}={sum(per_event):.0f}")
            # What every process of it used (flow, front, broker) spread over all the cores.
            ceilings[name] = all_cores * 1e6 / sum(per_event)
            row("  its ceiling on all cores (CPU), events/s", f"{ceilings[name]:,.0f}")
        if bare:
            row(f"  ratio {name} / bare", f"{rate / bare:.2f}")
            ratio_floor = (name, rate / bare)  # the skeleton's when it ran
    # (The target column names the floor that decided.)
    if ceilings:
        floor = min(ceilings, key=ceilings.__getitem__)
        row("  ≥ 50,000 events/s within this design here?",
            "yes" if ceilings[floor] >= 50_000 else "no: beyond it", f"({floor})")  # fmt: skip
    if ratio_floor is not None:
        name, ratio = ratio_floor
        row("  ratio ≥ 0.5 within this design here?",
            "yes" if ratio >= TARGETS["ratio"] else "no: beyond it", f"({name})")  # fmt: skip
    budget(fig)
    if fig.traced_bytes is not None and fig.pickle_bytes is not None:
        ok_t, ok_p = fig.traced_bytes <= 200, fig.pickle_bytes <= 200
        row("state bytes/live click, in memory", f"{fig.traced_bytes:,.0f}", "≤ 200", ok_t)
        row("state bytes/live click, pickled snapshot", f"{fig.pickle_bytes:,.0f}", "≤ 200", ok_p)
        row(f"  (measured over {fig.state_clicks:,} clicks)", "")
    else:
        row("state bytes/live click", "not measured")
    for window, limit, label in (
        (fig.fresh, TARGETS["p99"] if args.fresh_rate <= 200 else TARGETS["p99_loaded"],
         "freshness → conversions p50/p95/p99 s"),
        (fig.fresh_half, TARGETS["p99_loaded"], "  the same at half the order phase's rate"),
    ):  # fmt: skip
        if window is None or not window.conv:
            row(label, "not measured")
            continue
        p = [pct(window.conv, q) / 1000 for q in (0.5, 0.95, 0.99)]
        row(label, "/".join(f"{v:.2f}" for v in p), f"p99 ≤ {limit:g} s", p[2] <= limit)
        poll = f"{window.poll_ms:.0f}" if window.poll_ms is not None else "-"
        print(
            f"    ({window.rate:,.0f} orders/s for {args.fresh_seconds:g} s; conversions"
            f" polled, median poll {poll} ms; {len(window.conv)} of {window.sent} seen)"
        )
        if window.raw:
            p = [pct(window.raw, q) / 1000 for q in (0.5, 0.95, 0.99)]
            row("    → raw_events.archived_at p50/p95/p99 s", "/".join(f"{v:.2f}" for v in p))
        if window.cores:
            used = ", ".join(f"{name} {cores:.2f}" for name, cores in window.cores.items())
            print(f"      cores used during the window: {used}")
    print(f"  (batch_timeout_seconds={args.batch_timeout}, batch_max_size={args.batch_max_size},"
          f" kafka_batch_size={args.kafka_batch_size}, fresh rate {args.fresh_rate}/s"
          f" for {args.fresh_seconds} s)")  # fmt: skip
    if fig.profile:
        print("\nWhere the bounded run's first process spent its CPU (py-spy, by stage):")
        for stage, share in fig.profile:
            print(f"  {stage:<56} {share:6.1%}")
    print("\nCorrectness:")
    for what, want, got, ok in fig.checks:
        if ok and len(want) > 300:  # many tenants' agents: the comparison was whole, the line not
            want = want[:300] + f"… ({len(want):,} characters)"
        print(
            f"  {'ok  ' if ok else 'FAIL'} {what}: expected {want}" + ("" if ok else f", got {got}")
        )
    for note in fig.notes:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=200_000)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--refund-share", type=float, default=0.1)
    parser.add_argument(
        "--tenants", type=int, default=1,
        help="split the input over this many small tenants (needs --skip-tailing when > 1)",
    )  # fmt: skip
    parser.add_argument("--fresh-rate", type=float, default=200.0, help="orders/s")
    parser.add_argument("--fresh-seconds", type=float, default=10.0)
    parser.add_argument(
        "--batch-timeout",
        type=float,
        default=0.0,
        help="flow's sink batching: 0 = adaptive (the default)",
    )
    parser.add_argument("--batch-max-size", type=int, default=5000)
    parser.add_argument(
        "--kafka-batch-size",
        type=int,
        default=KAFKA_BATCH_SIZE,
        help="messages per topic partition and poll (the flow's default)",
    )
    parser.add_argument("--state-sample", type=int, default=200_000)
    parser.add_argument("--skip-tailing", action="store_true")
    parser.add_argument(
        "--no-half-max", dest="half_max", action="store_false",
        help="skip the second freshness window, at half the order phase's rate",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="run the bounded run's first process under py-spy; print its CPU by stage",
    )  # fmt: skip
    parser.add_argument(
        "--profile-out", type=Path, help="keep py-spy's raw (collapsed) stacks here"
    )
    parser.add_argument(
        "--processes", type=int, default=1,
        help="bytewax processes (one worker each) for the bounded and bare runs",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.profile = args.profile or args.profile_out is not None
    if args.tenants < 1 or (args.tenants > 1 and not args.skip_tailing):
        parser.error("--tenants N > 1 measures the bounded runs only: add --skip-tailing")

    topics = Topics()
    fig = Figures()
    fig.load_start = os.getloadavg()
    stack = Stack(Path(tempfile.mkdtemp(prefix="refstream-bench-")))
    try:
        print("starting broker, ClickHouse front, PostgreSQL database…")
        base_settings = start_stack(stack, topics)
        tenants = [new_tenant() for _ in range(args.tenants)]
        tail_settings = stores(stack, base_settings, "tail")
        bounded_settings = stores(stack, base_settings, "bounded")
        for settings in (tail_settings, bounded_settings):
            for tenant in tenants:
                seed_tenant(settings, tenant)
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=4)
        plan: Plan | Tenants = (
            Plan(tenants[0], args.clicks, args.orders, args.refund_share, base)
            if args.tenants == 1
            else Tenants.split(tenants, args.clicks, args.orders, args.refund_share, base)
        )
        started = time.perf_counter()
        clicks = ((topics.clicks, *plan.click_bytes(i)) for i in range(plan.clicks))
        produce_all(base_settings, clicks)
        print(f"  produced {plan.clicks} clicks in {time.perf_counter() - started:.1f} s")
        fig.events = plan.clicks + plan.orders + plan.refunds
        if args.skip_tailing:
            produce_all(
                settings, ((getattr(topics, k), key, v) for k, key, v in plan.order_messages())
            )
            fig.notes.append("tailing run skipped (--skip-tailing): no phases, no freshness")
        else:
            assert isinstance(plan, Plan)  # (checked below: --tenants > 1 needs --skip-tailing)
            tailing_phase(stack, tail_settings, plan, topics, args, fig)
        if args.processes > 1 and not args.skip_tailing:
            assert isinstance(plan, Plan)
            tail_n_settings = stores(stack, base_settings, "tail_n")
            for tenant in tenants:
                seed_tenant(tail_n_settings, tenant)
            tailing_phases_n(stack, tail_n_settings, plan, topics, args, fig)
        bounded_phase(stack, bounded_settings, plan, topics, args, fig)
        if args.processes > 1:
            single_settings = stores(stack, base_settings, "single")
            for tenant in tenants:
                seed_tenant(single_settings, tenant)
            single_process_phase(stack, single_settings, topics, args, fig)
        bare_phase(stack, base_settings, topics, fig, args.processes)
        archive_settings = stores(stack, base_settings, "archive")
        archive_phase(stack, archive_settings, plan, topics, fig, args.processes)
        skeleton_settings = stores(stack, base_settings, "skeleton")
        archive_phase(stack, skeleton_settings, plan, topics, fig, args.processes, keyed=True)
        state_phase(bounded_settings, plan, args.state_sample, fig)
        decode_phase(plan, fig)
        report(fig, args)
    finally:
        stack.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
