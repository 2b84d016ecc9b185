"""Throughput and latency of the real ingress under signed Shopify webhooks and referral clicks,
against the floor of its design measured in the same run.

Run from the project root::

    .venv/bin/python -m bench.ingress [--seconds 15] [--workers 2] [--connections 64]
                                      [--server uvicorn|granian] [--profile]

Self-contained: starts a private tansu broker, a private PostgreSQL database
(`refstream_bench_<hex>`), a Redis database index claimed as the test suite claims its own
(`refstream:test-db-claim:N` in db 0, so a concurrent test session never gets the same one;
flushed before and after, released at the end), registers a shop and
referral links, starts `refstream ingest serve` and the bare floor (`bench.ingress_floor`: read,
verify the HMAC, produce with the same producer settings, answer after the ack; no framework)
as subprocesses with the same worker count, and drives both over loopback with the same records:

- per kind (signed `POST /webhooks/shopify`, then `GET /r/{code}`): wrk, closed loop,
  `--connections` keep-alive connections (`apt-get install -y wrk`; a multi-process asyncio
  fallback runs when wrk is missing), floor then refstream back to back; then each at a fixed
  rate of `--rate-fraction` of its own maximum (an open-loop, wrk2-style generator: latency
  counts from when a request was due).
- the ratio refstream ÷ floor, p50/p99 of both, the fixed-rate p99, and the load average
  (other engineers share the cores: a ratio of the same run is what compares).

After the load it reads every topic back to the end and checks that every acknowledged webhook
and click is in Kafka. Everything it started is stopped and dropped again, also on Ctrl-C.
Nothing is asserted: it prints figures (timings belong here, not in tests). `--profile` runs
py-spy on one ingress worker during refstream's webhook phase and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from psycopg import sql
from rich.console import Console
from rich.table import Table

from bench.procstat import CLK_TCK, cpu_seconds, stat_cpu_seconds
from deploy.demo import read_to_end
from deploy.migrations import create_topics, migrate_postgres
from deploy.stack import StatePaths, free_port, start_kafka, stop_pid
from ingest.cli import register_shop
from ingest.shopify import sign
from schemas.events.shopify import parse_shopify_body
from schemas.settings import Settings
from schemas.topics import Topic

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "data" / "shopify"
TEMPLATES = (
    ("orders_create.json", "orders/create"),
    ("order_full_450789469.json", "orders/updated"),
)
LUA_SCRIPT = Path(__file__).with_name("ingress_wrk.lua")
REDIS_SERVER = "redis://127.0.0.1:6379"
# The test suite's claim (tests/fixtures/redis.py): which session owns db N, held in db 0.
REDIS_CLAIM = "refstream:test-db-claim:{index}"
REDIS_CLAIM_SECONDS = 3 * 3600
HOST = "127.0.0.1"
console = Console(highlight=False, width=150)


# --- the private stack ---------------------------------------------------------------------


@dataclass
class Stack:
    """What the bench started, so `teardown` can undo exactly that."""

    scratch: Path
    database: str
    redis_db: int | None = None  # the claimed Redis database index
    settings: Settings | None = None
    broker_pid: int | None = None
    ingress: subprocess.Popen[bytes] | None = None  # the first of `ingresses`
    ingresses: list[subprocess.Popen[bytes]] = field(default_factory=list)
    floor: subprocess.Popen[bytes] | None = None
    notes: list[str] = field(default_factory=list)

    def teardown(self) -> None:
        for proc in self.ingresses:
            stop_ingress(proc)
        stop_ingress(self.floor)
        report_server_logs(self.scratch)
        if self.broker_pid is not None:
            stop_pid(self.broker_pid)
        if self.settings is not None:
            with contextlib.suppress(Exception):
                admin = "postgresql://postgres@127.0.0.1:5432/postgres"
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(self.database)
                        )
                    )
            with contextlib.suppress(Exception):
                client = redis.Redis.from_url(self.settings.redis_url)
                client.flushdb()
                client.close()
        if self.redis_db is not None:
            with contextlib.suppress(Exception):
                registry = redis.Redis.from_url(f"{REDIS_SERVER}/0")
                registry.delete(REDIS_CLAIM.format(index=self.redis_db))
                registry.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def report_server_logs(scratch: Path) -> None:
    """A worker that died (and was restarted by uvicorn's supervisor) or an error in a server's
    log spoils that server's figures: say so, with the log's last lines, before the scratch
    directory goes."""
    for log in sorted(scratch.glob("*.log")):
        text = log.read_text(errors="replace")
        if any(mark in text for mark in ("died", "Traceback", "ERROR", "CRITICAL")):
            tail = "\n".join(text.splitlines()[-25:])
            console.print(f"[yellow]{log.name} reports errors or worker restarts:[/yellow]\n{tail}")


@dataclass(frozen=True)
class Registration:
    shop: str
    secret: str
    link_codes: tuple[str, ...]


def claim_redis_db() -> int:
    """A Redis database index in 1..15 that no test session or other bench holds, claimed with
    the test suite's own key (tests/fixtures/redis.py): a fixed index would be flushed under a
    concurrent test session that happened to claim it."""
    registry = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    try:
        indexes = list(range(1, 16))
        random.shuffle(indexes)
        for index in indexes:
            if registry.set(REDIS_CLAIM.format(index=index), f"bench.ingress {os.getpid()}",
                            nx=True, ex=REDIS_CLAIM_SECONDS):  # fmt: skip
                return index
    finally:
        registry.close()
    raise SystemExit("all Redis databases 1..15 are claimed by test sessions: try again later")


def start_stack(stack: Stack) -> Settings:
    stack.redis_db = claim_redis_db()
    paths = StatePaths(stack.scratch / "state").ensure()
    port = free_port()
    stack.broker_pid = start_kafka(HOST, port, paths)
    settings = Settings(
        kafka_bootstrap=f"{HOST}:{port}",
        postgres_url=f"postgresql://postgres@127.0.0.1:5432/{stack.database}",
        postgres_owner_url=f"postgresql://postgres@127.0.0.1:5432/{stack.database}",
        postgres_admin_url=None,
        redis_url=f"{REDIS_SERVER}/{stack.redis_db}",
        ingest_port=free_port(),
        state_dir=paths.root,
        ingest_rate_limit_per_shop=1_000_000_000,
    )
    stack.settings = settings
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    client.close()
    migrate_postgres(settings)
    create_topics(settings)
    return settings


def register(settings: Settings, links: int = 4) -> Registration:
    """A tenant with a shop and `links` referral links, as tests/ingest/conftest.py does."""
    suffix = uuid.uuid4().hex[:10]
    tenant, shop, secret = f"t_bench_{suffix}", f"bench-{suffix}.myshopify.com", f"shpss_{suffix}"
    register_shop(settings, shop, tenant, secret, None)
    program = f"prg_{suffix}"
    landing = f"https://{shop}/collections/office?utm_source=refstream"
    codes = tuple(f"agent{n}-{suffix}" for n in range(links))
    with psycopg.connect(settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO programs (id, tenant_id, name, landing_url) VALUES (%s, %s, 'P', %s)",
            (program, tenant, landing),
        )
        for n, code in enumerate(codes):
            agent = f"agt_{n}_{suffix}"
            conn.execute(
                "INSERT INTO agents (id, tenant_id, name) VALUES (%s, %s, %s)",
                (agent, tenant, f"Agent {n}"),
            )
            conn.execute(
                "INSERT INTO links (id, tenant_id, program_id, agent_id, code)"
                " VALUES (%s, %s, %s, %s, %s)",
                (f"lnk_{n}_{suffix}", tenant, program, agent, code),
            )
    return Registration(shop, secret, codes)


def start_ingress(
    settings: Settings, workers: int, log: Path, server: str = "uvicorn"
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFSTREAM_")}
    env.update(
        {
            "REFSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "REFSTREAM_POSTGRES_URL": settings.postgres_url,
            "REFSTREAM_REDIS_URL": settings.redis_url,
            "REFSTREAM_INGEST_HOST": HOST,
            "REFSTREAM_INGEST_PORT": str(settings.ingest_port),
            "REFSTREAM_STATE_DIR": str(settings.state_dir),
            "REFSTREAM_INGEST_RATE_LIMIT_PER_SHOP": str(settings.ingest_rate_limit_per_shop),
        }
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deploy.cli",
                "ingest",
                "serve",
                "--workers",
                str(workers),
                "--server",
                server,
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"ingress exited with code {proc.returncode}:\n{tail}")
        url = f"http://{HOST}:{port}/readyz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"ingress not ready after {timeout:.0f}s")


def stop_ingress(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


FLOOR_ORDERS_TOPIC = "bench.floor.orders"
FLOOR_CLICKS_TOPIC = "bench.floor.clicks"


def create_floor_topics(settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    topics = [NewTopic(t, num_partitions=settings.topic_partitions, replication_factor=1)
              for t in (FLOOR_ORDERS_TOPIC, FLOOR_CLICKS_TOPIC)]  # fmt: skip
    for future in admin.create_topics(topics).values():
        future.result(timeout=15)


def start_floor(
    settings: Settings,
    reg: Registration,
    port: int,
    workers: int,
    log: Path,
    guarded: bool = False,
) -> subprocess.Popen[bytes]:
    """The bare ASGI floor (`bench.ingress_floor`) under uvicorn, as the ingress is served;
    `guarded`: with the ingress's Redis guards (`--floor-guards`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFSTREAM_")}
    env.update({"FLOOR_BOOTSTRAP": settings.kafka_bootstrap, "FLOOR_SECRET": reg.secret,
                "FLOOR_ORDERS_TOPIC": FLOOR_ORDERS_TOPIC,
                "FLOOR_CLICKS_TOPIC": FLOOR_CLICKS_TOPIC})  # fmt: skip
    if guarded:
        env["FLOOR_REDIS_URL"] = settings.redis_url
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.ingress_floor:app", "--host", HOST,
             "--port", str(port), "--workers", str(workers), "--http", "httptools",
             "--loop", "uvloop", "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wait_answering(
    proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60
) -> None:
    """Until the floor answers anything over HTTP (it has no readiness endpoint: 404 will do)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"floor exited with code {proc.returncode}:\n{tail}")
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/ready", timeout=2)
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"floor not answering after {timeout:.0f}s")


# --- requests, built before the timed phase ------------------------------------------------


def build_records(
    reg: Registration, port: int, bodies: int, path: Path
) -> tuple[int, int, list[int]]:
    """Write the records file (see ingress_wrk.lua); returns (orders, clicks, body sizes)."""
    templates = [(orjson.loads((FIXTURES / name).read_bytes()), topic) for name, topic in TEMPLATES]
    sizes: list[int] = []
    with path.open("wb") as out:
        for n in range(bodies):
            template, topic = templates[n % len(templates)]
            order_id = 820_000_000_000 + n
            body = orjson.dumps(
                {
                    **template,
                    "id": order_id,
                    "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
                    "name": f"#B{n}",
                    "order_number": 100_000 + n,
                }
            )
            if n < len(templates):  # the ingress must accept them, not dead-letter them
                parse_shopify_body(topic, body)
            sizes.append(len(body))
            prefix = (
                f"POST /webhooks/shopify HTTP/1.1\r\n"
                f"Host: {HOST}:{port}\r\n"
                f"User-Agent: Shopify-Captain-Hook\r\n"
                f"Accept: */*\r\n"
                f"Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"X-Shopify-Topic: {topic}\r\n"
                f"X-Shopify-Shop-Domain: {reg.shop}\r\n"
                f"X-Shopify-Hmac-Sha256: {sign(reg.secret, body)}\r\n"
                f"X-Shopify-API-Version: 2026-07\r\n"
                f"X-Shopify-Webhook-Id: wh-{uuid.uuid4()}\r\n"
                f"X-Shopify-Triggered-At: 2026-11-25T10:00:00.000Z\r\n"
                f"X-Shopify-Event-Id: "
            ).encode()
            suffix = b"\r\n\r\n" + body
            out.write(b"o %d %d\n" % (len(prefix), len(suffix)) + prefix + suffix)
        agents = (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        )
        clicks = 0
        for code in reg.link_codes:
            for agent in agents:
                click = (
                    f"GET /r/{code} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: {agent}\r\n"
                    f"Accept: text/html\r\nReferer: https://blog.example.com/desk-review\r\n\r\n"
                ).encode()
                out.write(b"c %d 0\n" % len(click) + click)
                clicks += 1
    return bodies, clicks, sizes


def read_records(path: Path) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    data = path.read_bytes()
    orders: list[tuple[bytes, bytes]] = []
    clicks: list[bytes] = []
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        kind, a, b = data[pos:nl].split()
        start, mid, end = nl + 1, nl + 1 + int(a), nl + 1 + int(a) + int(b)
        if kind == b"o":
            orders.append((data[start:mid], data[mid:end]))
        else:
            clicks.append(data[start:end])
        pos = end
    return orders, clicks


# --- load: wrk, or the asyncio fallback ------------------------------------------------------


@dataclass
class LoadResult:
    generator: str
    seconds: float
    requests: int
    latency_ms: dict[str, float]
    statuses: Counter[str]
    socket_errors: dict[str, int]
    sent: Counter[str]
    acked_orders: set[str]
    acked_clicks: set[str]
    cpu_seconds: float
    raw_output: str = ""


def read_acked(out_dir: Path, phase: str) -> tuple[set[str], set[str]]:
    orders: set[str] = set()
    clicks: set[str] = set()
    for path in out_dir.glob(f"acked-{phase}-*.txt"):
        for line in path.read_text().splitlines():
            kind, _, ident = line.partition(" ")
            (orders if kind == "o" else clicks).add(ident)
    return orders, clicks


def run_wrk(
    wrk: str, port: int, records: Path, out_dir: Path, phase: str, seconds: float,
    connections: int, threads: int, share: float,
) -> LoadResult:  # fmt: skip
    argv = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "--timeout", "10s", "-s", str(LUA_SCRIPT), f"http://{HOST}:{port}/",
        "--", str(records), str(out_dir), phase, str(share),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as captured:
        proc = subprocess.Popen(argv, stdout=captured, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        captured.seek(0)
        output = captured.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{output}")
    latency: dict[str, float] = {}
    statuses: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    errors: dict[str, int] = {}
    duration_us, requests = 0, 0
    for line in output.splitlines():
        if not line.startswith("BENCH|"):
            continue
        _, key, *values = line.split("|")
        if key == "duration_us":
            duration_us = int(values[0])
        elif key == "requests":
            requests = int(values[0])
        elif key == "errors":
            names = ("connect", "read", "write", "status", "timeout")
            errors = {n: int(v) for n, v in zip(names, values, strict=True)}
        elif key == "latency_us":
            latency[f"p{values[0]}"] = int(values[1]) / 1000
        elif key == "latency_mean_us":
            latency["mean"] = float(values[0]) / 1000
        elif key == "latency_max_us":
            latency["max"] = int(values[0]) / 1000
        elif key == "status":
            statuses[values[0]] += int(values[1])
        elif key == "sent":
            sent[values[0]] += int(values[1])
    errors.pop("status", None)  # non-2xx/3xx: already in `statuses`
    acked_orders, acked_clicks = read_acked(out_dir, phase)
    shown = "\n".join(ln for ln in output.splitlines() if not ln.startswith("BENCH|"))
    return LoadResult(
        generator=f"wrk ({threads} threads)",
        seconds=duration_us / 1e6,
        requests=requests,
        latency_ms=latency,
        statuses=statuses,
        socket_errors=errors,
        sent=sent,
        acked_orders=acked_orders,
        acked_clicks=acked_clicks,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        raw_output=shown,
    )


STATUS_RE = re.compile(rb'"status":"([a-z_]+)","event_id":"([^"]*)"')
CODE_RE = re.compile(rb'"code":"([a-z_]+)"')
RSCLID_RE = re.compile(rb"rsclid=([A-Za-z0-9_-]+)")


def _fallback_process(
    port: int, records: str, phase: str, index: int, connections: int, seconds: float,
    share: float,
) -> dict[str, Any]:  # fmt: skip
    """One load process: `connections` keep-alive sockets, each one request at a time."""
    orders, clicks = read_records(Path(records))
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    acked_o: list[str] = []
    acked_c: list[str] = []
    errors: Counter[str] = Counter()
    state = {"acc": 0.0, "n": 0}

    def next_request() -> bytes:
        state["acc"] += share
        if state["acc"] >= 1.0 and clicks:
            state["acc"] -= 1.0
            sent["clicks"] += 1
            return clicks[sent["clicks"] % len(clicks)]
        state["n"] += 1
        n = state["n"]
        sent["orders"] += 1
        prefix, suffix = orders[n % len(orders)]
        return prefix + f"bench-{phase}-p{index}-{n}".encode() + suffix

    async def connection(deadline: float) -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            errors["connect"] += 1
            return
        try:
            while time.perf_counter() < deadline:
                request = next_request()
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(match.group(1))) if match else b""
                latencies.append(time.perf_counter() - started)
                status = int(head[9:12])
                if status == 200:
                    found = STATUS_RE.search(body)
                    if found and found.group(1) == b"accepted":
                        acked_o.append(found.group(2).decode())
                    statuses[f"200 {found.group(1).decode() if found else '?'}"] += 1
                elif status == 302:
                    clicked = RSCLID_RE.search(head)
                    if clicked:
                        acked_c.append(clicked.group(1).decode())
                    statuses["302 redirect"] += 1
                else:
                    code = CODE_RE.search(body)
                    statuses[f"{status} {code.group(1).decode() if code else '?'}"] += 1
        except (OSError, asyncio.IncompleteReadError):
            errors["read"] += 1
        finally:
            writer.close()

    async def main() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(connection(deadline) for _ in range(connections)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    return {
        "elapsed": elapsed, "latencies": latencies, "statuses": statuses, "sent": sent,
        "acked_o": acked_o, "acked_c": acked_c, "errors": errors,
    }  # fmt: skip


def run_fallback(
    port: int, records: Path, phase: str, seconds: float, connections: int, processes: int,
    share: float,
) -> LoadResult:  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    per = [connections // processes + (1 if i < connections % processes else 0)
           for i in range(processes)]  # fmt: skip
    with ProcessPoolExecutor(max_workers=processes) as pool:
        futures = [
            pool.submit(_fallback_process, port, str(records), phase, i, n, seconds, share)
            for i, n in enumerate(per)
        ]
        parts = [f.result() for f in futures]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    latencies = sorted(x for p in parts for x in p["latencies"])
    statuses: Counter[str] = sum((p["statuses"] for p in parts), Counter())
    sent: Counter[str] = sum((p["sent"] for p in parts), Counter())
    errors: Counter[str] = sum((p["errors"] for p in parts), Counter())

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q / 100))] * 1000

    latency = {f"p{q:g}": pct(q) for q in (50, 75, 90, 95, 99, 99.9)} if latencies else {}
    if latencies:
        latency["mean"] = sum(latencies) / len(latencies) * 1000
        latency["max"] = latencies[-1] * 1000
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return LoadResult(
        generator=f"python asyncio fallback ({processes} processes)",
        seconds=max(p["elapsed"] for p in parts),
        requests=len(latencies),
        latency_ms=latency,
        statuses=statuses,
        socket_errors=dict(errors),
        sent=sent,
        acked_orders={i for p in parts for i in p["acked_o"]},
        acked_clicks={i for p in parts for i in p["acked_c"]},
        cpu_seconds=cpu,
    )


def _open_loop_process(
    port: int, records: str, phase: str, rate: float, seconds: float, connections: int,
    share: float,
) -> dict[str, Any]:  # fmt: skip
    """A constant-rate (open-loop, wrk2-style) load: request i is due at i / rate, spread over
    `connections` keep-alive sockets (each one request at a time, as wrk's). Latency counts
    from when a request was due, not when it was sent, so a server that falls behind shows
    its queue in the figures (no coordinated omission)."""
    orders, clicks = read_records(Path(records))
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    latencies: list[float] = []
    late: list[float] = []
    statuses: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    acked_o: list[str] = []
    acked_c: list[str] = []
    errors: Counter[str] = Counter()
    state = {"acc": 0.0}
    counter = {"n": 0}
    total = int(rate * seconds)
    interval = connections / rate

    def next_request() -> bytes:
        state["acc"] += share
        if state["acc"] >= 1.0 and clicks:
            state["acc"] -= 1.0
            sent["clicks"] += 1
            return clicks[sent["clicks"] % len(clicks)]
        counter["n"] += 1
        n = counter["n"]
        sent["orders"] += 1
        prefix, suffix = orders[n % len(orders)]
        return prefix + f"bench-{phase}-{n}".encode() + suffix

    async def connection(index: int, start: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            errors["connect"] += 1
            return
        due = start + index / rate
        try:
            for _ in range(index, total, connections):
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                late.append(max(0.0, loop.time() - due))
                writer.write(next_request())
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(match.group(1))) if match else b""
                latencies.append(loop.time() - due)
                _tally(head, body, statuses, acked_o, acked_c)
                due += interval
        except (OSError, asyncio.IncompleteReadError):
            errors["read"] += 1
        finally:
            writer.close()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2  # every socket connected before the first request is due
        await asyncio.gather(*(connection(i, start) for i in range(connections)))
        return loop.time() - start

    elapsed = asyncio.run(main())
    late.sort()
    return {
        "elapsed": elapsed, "latencies": latencies, "statuses": statuses, "sent": sent,
        "acked_o": acked_o, "acked_c": acked_c, "errors": errors,
        "late_p99_ms": late[int(len(late) * 0.99)] * 1000 if late else 0.0,
    }  # fmt: skip


def _tally(
    head: bytes, body: bytes, statuses: Counter[str], acked_o: list[str], acked_c: list[str]
) -> None:
    status = int(head[9:12])
    if status == 200:
        found = STATUS_RE.search(body)
        if found and found.group(1) == b"accepted":
            acked_o.append(found.group(2).decode())
        statuses[f"200 {found.group(1).decode() if found else '?'}"] += 1
    elif status == 302:
        clicked = RSCLID_RE.search(head)
        if clicked:
            acked_c.append(clicked.group(1).decode())
        statuses["302 redirect"] += 1
    else:
        code = CODE_RE.search(body)
        statuses[f"{status} {code.group(1).decode() if code else '?'}"] += 1


def run_open_loop(
    port: int, records: Path, phase: str, rate: float, seconds: float, connections: int,
    share: float,
) -> LoadResult:  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ProcessPoolExecutor(max_workers=1) as pool:
        part = pool.submit(
            _open_loop_process, port, str(records), phase, rate, seconds, connections, share
        ).result()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    latencies = sorted(part["latencies"])
    latency = _percentiles(latencies)
    latency["generator late p99"] = part["late_p99_ms"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return LoadResult(
        generator=f"open loop at {rate:,.0f}/s", seconds=part["elapsed"],
        requests=len(latencies), latency_ms=latency, statuses=part["statuses"],
        socket_errors=dict(part["errors"]), sent=part["sent"],
        acked_orders=set(part["acked_o"]), acked_clicks=set(part["acked_c"]), cpu_seconds=cpu,
    )  # fmt: skip


def _percentiles(latencies: list[float]) -> dict[str, float]:
    """p50..p99.9, mean and max in ms of sorted latencies in seconds."""
    if not latencies:
        return {}

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q / 100))] * 1000

    latency = {f"p{q:g}": pct(q) for q in (50, 75, 90, 95, 99, 99.9)}
    latency["mean"] = sum(latencies) / len(latencies) * 1000
    latency["max"] = latencies[-1] * 1000
    return latency


# --- process accounting ---------------------------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return sorted(pids)


def thread_cpu(pids: list[int]) -> Counter[str]:
    """CPU seconds of the threads of `pids`, by kind: event loop (main), librdkafka, others."""
    usage: Counter[str] = Counter()
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    comm = (task / "comm").read_text().strip()
                    seconds = stat_cpu_seconds((task / "stat").read_text())
                    if int(task.name) == pid:
                        kind = "main thread (event loop)"
                    elif comm.startswith("rdk:"):
                        kind = "librdkafka threads"
                    else:
                        kind = "other threads (kafka-poll, ...)"
                    usage[kind] += seconds
    return usage


def process_info(pid: int) -> tuple[str, int]:
    """(short command line, peak RSS in KiB from VmHWM)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "?", 0
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return cmd, int(found.group(1)) if found else 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def describe(cmd: str) -> str:
    if "multiprocessing" in cmd and "resource_tracker" in cmd:
        return "resource tracker"
    if "multiprocessing" in cmd or "spawn_main" in cmd:
        return "worker"
    if "deploy.cli" in cmd:
        return "uvicorn supervisor"
    return cmd[:40]


# --- profiling ------------------------------------------------------------------------------


def py_spy_binary() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    if candidate.exists():
        return str(candidate)
    console.print("[dim]py-spy missing: pip install py-spy into the venv[/dim]")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=False
    )
    return str(candidate) if result.returncode == 0 and candidate.exists() else None


def start_profile(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
         "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _area(path: str) -> str:
    path = _short(path)
    for marker, name in (
        ("ingest/", "ingest/ (project)"), ("schemas/", "schemas/ (project)"),
        ("pydantic", "pydantic"), ("starlette", "starlette"), ("fastapi", "fastapi"),
        ("uvicorn", "uvicorn"), ("anyio", "anyio"), ("redis", "redis-py"),
        ("confluent_kafka", "confluent-kafka"), ("structlog", "structlog"),
        ("prometheus_client", "prometheus-client"), ("asyncio/", "asyncio (stdlib)"),
        ("hmac.py", "hmac"), ("base64", "base64"), ("json", "json"), ("typing", "typing"),
    ):  # fmt: skip
        if marker in path:
            return name
    return f"other: {path}"


# Where a request's own work starts: frames above these are server/framework plumbing.
PROJECT_PREFIXES = ("ingest/", "schemas/")


def summarize_profile(raw: Path, top: int = 18) -> None:
    """Self time by leaf frame, inclusive time by function, self time by package."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    background: Counter[str] = Counter()
    total = loop_total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if frames and frames[0].startswith("Thread._bootstrap "):
            background[frames[-1]] += count
            continue
        loop_total += count
        names = []
        for frame in frames:
            match = FRAME_RE.match(frame)
            func, path = (match["func"], match["file"]) if match else (frame, "")
            names.append((f"{func} ({_short(path)})", path))
        if not names:
            continue
        self_time[names[-1][0]] += count
        areas[_area(names[-1][1])] += count
        for name in {n for n, path in names if _short(path).startswith(PROJECT_PREFIXES)}:
            inclusive[name] += count
    if not loop_total:
        console.print("[yellow]py-spy recorded no event-loop samples[/yellow]")
        return
    console.print(
        f"py-spy: {total} samples, {loop_total} on the event-loop thread (below, as 100 %); "
        f"background threads: "
        + ", ".join(f"{frame} {n}" for frame, n in background.most_common(3))
        + " (native waits in rd_kafka_poll count as samples: see the per-thread CPU rows)"
    )
    for title, counter in (
        ("self time by package (leaf frame)", areas),
        ("self time by function (leaf frame)", self_time),
        ("inclusive time by project function (ingest/, schemas/)", inclusive),
    ):
        table = Table(title=f"py-spy, one worker's event loop: {title}")
        table.add_column("frame")
        table.add_column("%", justify="right")
        for name, count in counter.most_common(top):
            table.add_row(name, f"{100 * count / loop_total:.1f}")
        console.print(table)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# --- verification against Kafka -------------------------------------------------------------


@dataclass
class TopicCheck:
    messages: int
    bench_messages: int
    distinct: int
    acked_missing: int
    not_acked_present: int


def check_topic(
    bootstrap: str, topic: str, acked: set[str], timeout: float, by_key: bool = False
) -> TopicCheck:
    """What of `acked` is in `topic`: ids are the envelopes' event ids (the floor's topics:
    the message keys)."""
    messages = read_to_end(bootstrap, topic, timeout)
    ids: Counter[str] = Counter()
    for msg in messages:
        if by_key:
            ids[(msg.key() or b"").decode()] += 1
            continue
        value = msg.value()
        if value:
            ids[orjson.loads(value)["event_id"]] += 1
    del messages
    # Orders carry content-derived ids (`evt_`, one per order version: the bench re-sends its
    # bodies under fresh delivery ids), clicks their click ids.
    bench_ids = {i: n for i, n in ids.items() if i.startswith(("bench-", "clk_", "evt_"))}
    return TopicCheck(
        messages=sum(ids.values()),
        bench_messages=sum(bench_ids.values()),
        distinct=len(bench_ids),
        acked_missing=len(acked - bench_ids.keys()),
        not_acked_present=len(bench_ids.keys() - acked),
    )


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=5,
        help="one closed-loop round (default 5; fixed-rate runs last twice that)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="closed-loop rounds per server and kind, alternating (default 3)",
    )
    parser.add_argument("--warmup", type=float, default=3, help="warm-up phase, not measured")
    parser.add_argument("--workers", type=int, default=2, help="ingress worker processes")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument(
        "--rate-fraction",
        type=float,
        default=0.5,
        help="fixed-rate phase at this fraction of each server's own maximum",
    )
    parser.add_argument(
        "--server",
        choices=("uvicorn", "granian", "both"),
        default="uvicorn",
        help="HTTP server of the ingress; both: one ingress on each, measured in the same "
        "rounds (the floor always runs on uvicorn)",
    )
    parser.add_argument("--load-threads", type=int, default=1,
                        help="wrk threads / fallback processes (default 1: leave cores to the "
                             "system under test)")  # fmt: skip
    parser.add_argument("--bodies", type=int, default=2000, help="distinct signed order bodies")
    parser.add_argument("--profile", action="store_true", help="py-spy one worker for ~10 s")
    parser.add_argument("--profile-out", type=Path, help="keep py-spy's raw (collapsed) stacks")
    parser.add_argument(
        "--profile-kind",
        choices=("webhooks", "clicks"),
        default="webhooks",
        help="the phase CPU accounting and py-spy watch (default webhooks)",
    )
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    parser.add_argument(
        "--floor-guards", action="store_true",
        help="the floor also runs the ingress's Redis guards (dedup and rate window, first click)",
    )  # fmt: skip
    args = parser.parse_args()
    args.profile = args.profile or args.profile_out is not None
    if not 0 < args.rate_fraction <= 1:
        parser.error("--rate-fraction must be in (0, 1]")

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    scratch = Path(tempfile.mkdtemp(prefix="refstream-bench-"))
    stack = Stack(scratch, f"refstream_bench_{uuid.uuid4().hex[:12]}")
    try:
        run(stack, args)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: cleaning up[/yellow]")
    finally:
        stack.teardown()
        console.print(f"[dim]cleaned up: ingress, broker, database {stack.database}, "
                      f"redis db {stack.redis_db}, {stack.scratch}[/dim]")  # fmt: skip


@dataclass
class Phase:
    """Load phases against one server, one per round: closed loop (wrk) or fixed rate (open
    loop). Throughput sums the rounds; a latency percentile is the median of the rounds' (a
    burst of other engineers' work on the shared cores spoils one round, not the figure)."""

    rounds: list[LoadResult] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # cores others used, per round
    server_cpu: list[float] = field(default_factory=list)  # the server's CPU seconds, per round

    @property
    def cpu_per_ok_us(self) -> float:
        """CPU the server's processes used per 200/302 answer (µs): what a request costs,
        whatever share of the cores the neighbours left it."""
        ok = self.ok_per_second * self.seconds
        return sum(self.server_cpu) / ok * 1e6 if ok else float("nan")

    def _sum(self, count: int | float, seconds: float) -> float:
        return count / seconds if seconds else 0.0

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rounds)

    @property
    def ok_per_second(self) -> float:
        """200 accepted or 302 redirects per second: the work the server got done."""
        ok = sum(r.statuses.get("200 accepted", 0) + r.statuses.get("302 redirect", 0)
                 for r in self.rounds)  # fmt: skip
        return self._sum(ok, self.seconds)

    @property
    def requests_per_second(self) -> float:
        return self._sum(sum(r.requests for r in self.rounds), self.seconds)

    def latency(self, key: str) -> float:
        values = sorted(r.latency_ms[key] for r in self.rounds if key in r.latency_ms)
        return values[len(values) // 2] if values else float("nan")

    @property
    def refused(self) -> int:
        return sum(n for r in self.rounds for k, n in r.statuses.items()
                   if not k.startswith(("200 ", "302")))  # fmt: skip

    @property
    def others_cores(self) -> float:
        return sum(self.others) / len(self.others) if self.others else float("nan")


KINDS = (("webhooks", "POST /webhooks/shopify", 0.0), ("clicks", "GET /r/{code}", 1.0))


def run(stack: Stack, args: argparse.Namespace) -> None:
    wrk = None if args.no_wrk else shutil.which("wrk")
    if wrk is None and not args.no_wrk:
        console.print("[yellow]wrk not found: using the slower Python load generator. "
                      "Install it with `apt-get install -y wrk` for figures that measure the "
                      "ingress rather than the client.[/yellow]")  # fmt: skip
    py_spy = py_spy_binary() if args.profile else None
    servers = ["uvicorn", "granian"] if args.server == "both" else [args.server]

    step = time.perf_counter()
    settings = start_stack(stack)
    create_floor_topics(settings)
    reg = register(settings)
    records = stack.scratch / "records.bin"
    n_orders, n_clicks, sizes = build_records(reg, settings.ingest_port, args.bodies, records)
    # One ingress per HTTP server, each with its own port and state directory (metrics files).
    ports: dict[str, int] = {}
    codes: dict[str, str] = {}  # target -> one letter naming its phases (event ids, acked files)
    for server in servers:
        target = f"refstream ({server})"
        own = (
            settings
            if not stack.ingresses
            else settings.model_copy(
                update={"ingest_port": free_port(), "state_dir": stack.scratch / f"state-{server}"}
            )
        )
        log = stack.scratch / f"ingress-{server}.log"
        proc = start_ingress(own, args.workers, log, server)
        stack.ingresses.append(proc)
        wait_ready(proc, own.ingest_port, log)
        ports[target], codes[target] = own.ingest_port, server[0]
    stack.ingress = stack.ingresses[0]
    floor_port = free_port()
    floor_log = stack.scratch / "floor.log"
    stack.floor = start_floor(settings, reg, floor_port, args.workers, floor_log,
                              args.floor_guards)  # fmt: skip
    if args.floor_guards:
        console.print(
            "[bold]the floor runs with the ingress's Redis guards (--floor-guards):"
            " each ratio is refstream against a floor that pays for them[/bold]"
        )
    wait_answering(stack.floor, floor_port, floor_log)
    ports = {"floor": floor_port, **ports}
    codes["floor"] = "f"
    ours_targets = [t for t in ports if t != "floor"]
    console.print(
        f"[dim]stack ready in {time.perf_counter() - step:.1f}s: broker {settings.kafka_bootstrap}"
        f", db {stack.database}, redis db {stack.redis_db}, "
        + ", ".join(f"{t} :{p}" for t, p in ports.items())
        + f"; {n_orders} signed bodies ({min(sizes)}-{max(sizes)} B, mean "
        f"{sum(sizes) // len(sizes)} B), {n_clicks} click requests[/dim]"
    )
    out_dir = stack.scratch / "acked"
    out_dir.mkdir()

    def load(target: str, phase: str, seconds: float, share: float) -> LoadResult:
        port = ports[target]
        if wrk is not None:
            return run_wrk(wrk, port, records, out_dir, phase, seconds,
                           args.connections, args.load_threads, share)  # fmt: skip
        return run_fallback(port, records, phase, seconds, args.connections,
                            max(1, args.load_threads), share)  # fmt: skip

    load_before = os.getloadavg()
    warm: dict[str, LoadResult] = {}
    if args.warmup > 0:
        for target in ports:
            warm[target] = load(target, f"w{codes[target]}", args.warmup, 0.2)

    redis_client = redis.Redis.from_url(settings.redis_url)
    redis_pid = int(redis_client.info("server")["process_id"])
    redis_client.close()

    def measured(phase: Phase, target: str, run_load: Callable[[], LoadResult]) -> LoadResult:
        """`run_load`, with the CPU the target server's processes used (`phase.server_cpu`)
        and the CPU the rest of the machine used meanwhile (not us: the servers, the broker,
        Redis, the load generator; `phase.others`)."""
        assert stack.floor is not None
        procs = {**dict(zip(ours_targets, stack.ingresses, strict=True)), "floor": stack.floor}
        server = group_pids(procs[target].pid)
        pids = [*(p for proc in procs.values() for p in group_pids(proc.pid)),
                stack.broker_pid or 0, redis_pid]  # fmt: skip
        ours_before, busy_before = sum(cpu_seconds(p) for p in pids), machine_busy()
        server_before = sum(cpu_seconds(p) for p in server)
        result = run_load()
        phase.server_cpu.append(sum(cpu_seconds(p) for p in server) - server_before)
        ours = sum(cpu_seconds(p) for p in pids) - ours_before + result.cpu_seconds
        machine = (machine_busy()[0] - busy_before[0]) / CLK_TCK
        phase.rounds.append(result)
        phase.others.append(max(0.0, machine - ours) / (result.seconds or 1.0))
        return result

    closed = {(kind, target): Phase() for kind, _, _ in KINDS for target in ports}
    fixed = {(kind, target): Phase() for kind, _, _ in KINDS for target in ports}
    accounting: Accounting | None = None
    for kind, _, share in KINDS:
        for n in range(args.rounds):
            for target in ports:  # the floor, then refstream, back to back, round after round
                phase, name = closed[kind, target], f"{codes[target]}{kind[0]}{n}"
                run_load = functools.partial(load, target, name, args.seconds, share)
                if target == ours_targets[0] and kind == args.profile_kind and n == 0:
                    accounting = Accounting.start(stack, settings, py_spy, args.seconds)
                    accounting.stop(measured(phase, target, run_load))
                else:
                    measured(phase, target, run_load)
        for target, port in ports.items():
            rate = max(1.0, closed[kind, target].ok_per_second * args.rate_fraction)
            measured(fixed[kind, target], target, functools.partial(
                run_open_loop, port, records, f"{codes[target]}{kind[0]}o", rate,
                args.seconds * 2, args.connections, share,
            ))  # fmt: skip
    load_after = os.getloadavg()

    peaks = [(p, *process_info(p)) for p in group_pids(stack.ingress.pid)]
    for proc in stack.ingresses:
        stop_ingress(proc)
    stop_ingress(stack.floor)

    def results(floor: bool) -> list[LoadResult]:
        return [
            *(r for t, r in warm.items() if (t == "floor") == floor),
            *(r for (_, t), ph in (closed | fixed).items() if (t == "floor") == floor
              for r in ph.rounds),
        ]  # fmt: skip

    acked_orders = set().union(*(r.acked_orders for r in results(False)))
    acked_clicks = set().union(*(r.acked_clicks for r in results(False)))
    floor_orders = set().union(*(r.acked_orders for r in results(True)))
    floor_clicks = set().union(*(r.acked_clicks for r in results(True)))
    step = time.perf_counter()
    orders = check_topic(settings.kafka_bootstrap, str(Topic.ORDERS), acked_orders, 300)
    clicks = check_topic(settings.kafka_bootstrap, str(Topic.CLICKS), acked_clicks, 300)
    f_orders = check_topic(settings.kafka_bootstrap, FLOOR_ORDERS_TOPIC, floor_orders, 300, True)
    f_clicks = check_topic(settings.kafka_bootstrap, FLOOR_CLICKS_TOPIC, floor_clicks, 300, True)
    read_seconds = time.perf_counter() - step

    # --- report ---
    table = Table(title=f"refstream ingress against its bare floor, same run — {args.workers} "
                        f"workers each, wrk {args.connections} connections, {args.rounds} "
                        f"alternating rounds of {args.seconds:g} s; fixed rate = "
                        f"{args.rate_fraction:g} x each one's own maximum for "
                        f"{args.seconds * 2:g} s")  # fmt: skip
    table.add_column("figure")
    table.add_column("floor (bare ASGI, uvicorn)", justify="right")
    for target in ours_targets:
        table.add_column(target, justify="right")
        table.add_column("÷ floor", justify="right")
    table.add_column("target", justify="right")
    verdicts: list[str] = []

    def row(name: str, floor_text: str, values: list[tuple[str, str]], goal: str = "") -> None:
        table.add_row(name, floor_text, *(x for pair in values for x in pair), goal)

    for kind, label, _ in KINDS:
        floor, floor_f = closed[kind, "floor"], fixed[kind, "floor"]
        ours_c = [closed[kind, t] for t in ours_targets]
        ours_f = [fixed[kind, t] for t in ours_targets]
        table.add_row(f"[bold]{label}[/bold]")
        what = "accepted webhooks/s" if kind == "webhooks" else "redirects/s"
        row(f"  max: {what} ÷ floor requests/s", f"{floor.requests_per_second:,.0f}",
            [(f"{o.ok_per_second:,.0f}", f"{o.ok_per_second / floor.requests_per_second:.2f}")
             for o in ours_c], "≥ 0.60")  # fmt: skip
        row("  server CPU per answer (µs; floor ÷ refstream: the same ratio in CPU)",
            f"{floor.cpu_per_ok_us:,.0f}",
            [(f"{o.cpu_per_ok_us:,.0f}", f"{floor.cpu_per_ok_us / o.cpu_per_ok_us:.2f}")
             for o in ours_c])  # fmt: skip
        for key in ("p50", "p99"):
            row(f"  {key} at {args.connections} connections (ms)", f"{floor.latency(key):.1f}",
                [(f"{o.latency(key):.1f}", f"{o.latency(key) / floor.latency(key):.2f}")
                 for o in ours_c], "≤ 2.00" if key == "p99" else "")  # fmt: skip
        row("  fixed rate (requests/s)", f"{floor_f.requests_per_second:,.0f}",
            [(f"{o.requests_per_second:,.0f}", "") for o in ours_f])  # fmt: skip
        for key in ("p50", "p99"):
            row(f"  {key} at the fixed rate (ms)", f"{floor_f.latency(key):.1f}",
                [(f"{o.latency(key):.1f}", "") for o in ours_f],
                "≤ 10" if key == "p99" else "")  # fmt: skip
        row("  load generator late p99 at the fixed rate (ms)",
            f"{floor_f.latency('generator late p99'):.1f}",
            [(f"{o.latency('generator late p99'):.1f}", "") for o in ours_f])  # fmt: skip
        row(
            "  CPU others used meanwhile (cores, mean of the closed-loop rounds)",
            f"{floor.others_cores:.2f}",
            [(f"{o.others_cores:.2f}", "") for o in ours_c],
        )
        row("  refused / failed answers (all phases)", f"{floor.refused + floor_f.refused:,}",
            [(f"{c.refused + f.refused:,}", "") for c, f in zip(ours_c, ours_f, strict=True)],
            "0")  # fmt: skip
        for target, o, f in zip(ours_targets, ours_c, ours_f, strict=True):
            ratio = o.ok_per_second / floor.requests_per_second
            p99_ratio = o.latency("p99") / floor.latency("p99")
            verdicts.append(
                f"{target} {kind}: ratio {ratio:.2f} ({'met' if ratio >= 0.6 else 'missed'}), "
                f"p99 {p99_ratio:.2f}x the floor's ({'met' if p99_ratio <= 2 else 'missed'}), "
                f"fixed-rate p99 {f.latency('p99'):.1f} ms "
                f"({'met' if f.latency('p99') <= 10 else 'missed'})"
            )
    table.add_section()
    blank = [("", "")] * (len(ours_targets) - 1)
    row("acked but missing in Kafka (webhooks, all refstream servers)",
        f"{f_orders.acked_missing}", [(f"[bold]{orders.acked_missing}[/bold]", ""), *blank],
        "0")  # fmt: skip
    row("acked but missing in Kafka (clicks, all refstream servers)",
        f"{f_clicks.acked_missing}", [(f"[bold]{clicks.acked_missing}[/bold]", ""), *blank],
        "0")  # fmt: skip
    row("acked webhooks / topic messages", f"{len(floor_orders):,} / {f_orders.messages:,}",
        [(f"{len(acked_orders):,} / {orders.messages:,}", ""), *blank])  # fmt: skip
    row("redirected clicks / topic messages", f"{len(floor_clicks):,} / {f_clicks.messages:,}",
        [(f"{len(acked_clicks):,} / {clicks.messages:,}", ""), *blank])  # fmt: skip
    row("read-back time (s)", "", [(f"{read_seconds:.1f}", ""), *blank])
    table.add_section()
    row("load average (1, 5, 15 min) before / after",
        " ".join(f"{x:.2f}" for x in load_before),
        [(" ".join(f"{x:.2f}" for x in load_after), ""), *blank])  # fmt: skip
    console.print(table)

    detail = Table(title="every round: answers by status, and the CPU others used meanwhile")
    for column in ("phase", "generator", "seconds", "ok/s", "p99 ms", "CPU µs/answer",
                   "others' cores", "answers"):  # fmt: skip
        detail.add_column(column, justify="left" if column in ("phase", "answers") else "right")
    for (kind, target), ph in [*closed.items(), *fixed.items()]:
        for n, (result, others) in enumerate(zip(ph.rounds, ph.others, strict=True)):
            statuses = ", ".join(f"{k} {c:,}" for k, c in sorted(result.statuses.items()))
            errors = ", ".join(f"{k} {c}" for k, c in result.socket_errors.items() if c)
            single = Phase([result], [others], [ph.server_cpu[n]])
            detail.add_row(f"{target} {kind} #{n + 1}", result.generator, f"{result.seconds:.1f}",
                           f"{single.ok_per_second:,.0f}", f"{single.latency('p99'):.1f}",
                           f"{single.cpu_per_ok_us:,.0f}", f"{others:.2f}",
                           statuses + (f"; socket errors: {errors}" if errors else ""))  # fmt: skip
    console.print(detail)
    if accounting is not None:
        accounting.report(peaks)
    for verdict in verdicts:
        console.print(verdict)
    if py_spy is not None and accounting is not None and accounting.profile_out.exists():
        summarize_profile(accounting.profile_out)
        if args.profile_out:
            shutil.copyfile(accounting.profile_out, args.profile_out)
            console.print(f"raw py-spy stacks kept in {args.profile_out}")


@dataclass
class Accounting:
    """CPU by process and thread (and py-spy on one worker) around refstream's webhook phase."""

    stack: Stack
    watched: dict[str, list[int]]
    worker_pids: list[int]
    cpu_before: dict[str, float]
    threads_before: Counter[str]
    busy_before: tuple[float, float]
    profile_out: Path
    py_spy: str | None
    timer: threading.Timer | None = None
    profiler_box: list[subprocess.Popen[bytes]] = field(default_factory=list)
    rows: dict[str, float] = field(default_factory=dict)
    threads_used: Counter[str] = field(default_factory=Counter)
    busy: float = 0.0
    wall: float = 1.0

    @classmethod
    def start(
        cls, stack: Stack, settings: Settings, py_spy: str | None, seconds: float
    ) -> Accounting:
        assert stack.ingress is not None
        ingress_pids = group_pids(stack.ingress.pid)
        redis_client = redis.Redis.from_url(settings.redis_url)
        redis_pid = int(redis_client.info("server")["process_id"])
        redis_client.close()
        watched = {"broker (tansu)": [stack.broker_pid or 0], "redis-server": [redis_pid],
                   "ingress (all processes)": ingress_pids}  # fmt: skip
        workers = [p for p in ingress_pids if describe(process_info(p)[0]) == "worker"]
        acc = cls(
            stack, watched, workers, {k: sum(cpu_seconds(p) for p in v) for k, v in
                                      watched.items()},
            thread_cpu(workers), machine_busy(), stack.scratch / "profile.txt", py_spy,
        )  # fmt: skip
        if py_spy is not None:
            target = workers[0] if workers else ingress_pids[-1]
            length = min(10.0, max(2.0, seconds - 3))
            acc.timer = threading.Timer(1.0, lambda: acc.profiler_box.append(
                start_profile(py_spy, target, length, acc.profile_out)))  # fmt: skip
            acc.timer.start()
        return acc

    def stop(self, result: LoadResult) -> None:
        busy_after = machine_busy()
        cpu_after = {k: sum(cpu_seconds(p) for p in v) for k, v in self.watched.items()}
        self.threads_used = thread_cpu(self.worker_pids)
        self.threads_used.subtract(self.threads_before)
        self.wall = result.seconds or 1.0
        self.busy = (
            (busy_after[0] - self.busy_before[0])
            / max(1, busy_after[1] - self.busy_before[1])
            * 100
        )
        self.rows = {k: cpu_after[k] - self.cpu_before[k] for k in self.watched}
        self.rows["load generator"] = result.cpu_seconds
        machine_seconds = (busy_after[0] - self.busy_before[0]) / CLK_TCK
        self.rows["everything else on the machine"] = max(
            0.0, machine_seconds - sum(self.rows.values())
        )
        if self.timer is not None:
            self.timer.join()
            profiler = self.profiler_box[0] if self.profiler_box else None
            if profiler is not None:
                _, stderr = profiler.communicate(timeout=60)
                if profiler.returncode != 0:
                    console.print(f"[yellow]py-spy failed: {stderr.decode()[-500:]}[/yellow]")

    def report(self, peaks: list[tuple[int, str, int]]) -> None:
        table = Table(title="refstream's first closed-loop round (--profile-kind): CPU by user")
        table.add_column("measure")
        table.add_column("value", justify="right")
        cores = os.cpu_count() or 1
        table.add_row(f"machine CPU busy ({cores} cores)", f"{self.busy:.0f} %")
        for name, seconds in sorted(self.rows.items(), key=lambda kv: -kv[1]):
            table.add_row(f"CPU {name}", f"{seconds / self.wall:.2f} cores ({seconds:.1f} s)")
        for kind, seconds in sorted(self.threads_used.items()):
            table.add_row(f"  of which workers' {kind}",
                          f"{seconds / self.wall:.2f} cores ({seconds:.1f} s)")  # fmt: skip
        table.add_section()
        for pid, cmd, hwm in peaks:
            table.add_row(f"peak RSS {describe(cmd)} (pid {pid})", f"{hwm / 1024:,.0f} MiB")
        table.add_row("peak RSS ingress total (sum of VmHWM)",
                      f"{sum(h for _, _, h in peaks) / 1024:,.0f} MiB")  # fmt: skip
        console.print(table)


if __name__ == "__main__":
    main()
