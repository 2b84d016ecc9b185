"""Throughput and latency of the real ingress under signed Shopify webhooks and referral clicks.

Run from the project root::

    .venv/bin/python -m bench.ingress [--seconds 20] [--workers 2] [--connections 64]
                                      [--clicks-share 0.2] [--profile]

Self-contained: starts a private tansu broker, a private PostgreSQL database
(`refstream_bench_<hex>`), uses Redis db 14 (flushed before and after), registers a shop and
referral links, starts `refstream ingest serve` as a subprocess and drives it over loopback with
wrk (`apt-get install -y wrk`; a multi-process asyncio fallback runs when wrk is missing). After
the load it reads both topics back to the end and checks that every acknowledged webhook is in
Kafka. Everything it started is stopped and dropped again, also on Ctrl-C. Nothing is asserted:
it prints figures (timings belong here, not in tests).

The load generator, the broker, Redis and the ingress share the machine's cores: the CPU table
says who used what during the measured phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from psycopg import sql
from rich.console import Console
from rich.table import Table

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
REDIS_DB = 14
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
console = Console(highlight=False)


# --- the private stack ---------------------------------------------------------------------


@dataclass
class Stack:
    """What the bench started, so `teardown` can undo exactly that."""

    scratch: Path
    database: str
    settings: Settings | None = None
    broker_pid: int | None = None
    ingress: subprocess.Popen[bytes] | None = None
    notes: list[str] = field(default_factory=list)

    def teardown(self) -> None:
        stop_ingress(self.ingress)
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
        shutil.rmtree(self.scratch, ignore_errors=True)


@dataclass(frozen=True)
class Registration:
    shop: str
    secret: str
    link_codes: tuple[str, ...]


def start_stack(stack: Stack) -> Settings:
    paths = StatePaths(stack.scratch / "state").ensure()
    port = free_port()
    stack.broker_pid = start_kafka(HOST, port, paths)
    settings = Settings(
        kafka_bootstrap=f"{HOST}:{port}",
        postgres_url=f"postgresql://postgres@127.0.0.1:5432/{stack.database}",
        postgres_owner_url=f"postgresql://postgres@127.0.0.1:5432/{stack.database}",
        postgres_admin_url=None,
        redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
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


def start_ingress(settings: Settings, workers: int, log: Path) -> subprocess.Popen[bytes]:
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
            [sys.executable, "-m", "deploy.cli", "ingest", "serve", "--workers", str(workers)],
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


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pids: list[int]) -> Counter[str]:
    """CPU seconds of the threads of `pids`, by kind: event loop (main), librdkafka, others."""
    usage: Counter[str] = Counter()
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    comm = (task / "comm").read_text().strip()
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK
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
        return "uvicorn worker"
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


def check_topic(bootstrap: str, topic: str, acked: set[str], timeout: float) -> TopicCheck:
    messages = read_to_end(bootstrap, topic, timeout)
    ids = Counter()
    for msg in messages:
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
    parser.add_argument("--seconds", type=float, default=20, help="measured phase (default 20)")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up phase, not measured")
    parser.add_argument("--workers", type=int, default=2, help="ingress worker processes")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--clicks-share", type=float, default=0.2, help="share of GET /r/{code}")
    parser.add_argument("--load-threads", type=int, default=1,
                        help="wrk threads / fallback processes (default 1: leave cores to the "
                             "system under test)")  # fmt: skip
    parser.add_argument("--bodies", type=int, default=2000, help="distinct signed order bodies")
    parser.add_argument("--profile", action="store_true", help="py-spy one worker for ~10 s")
    parser.add_argument("--profile-out", type=Path, help="keep py-spy's raw (collapsed) stacks")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    args = parser.parse_args()
    args.profile = args.profile or args.profile_out is not None
    if not 0 <= args.clicks_share < 1:
        parser.error("--clicks-share must be in [0, 1)")

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
                      f"redis db {REDIS_DB}, {stack.scratch}[/dim]")  # fmt: skip


def run(stack: Stack, args: argparse.Namespace) -> None:
    wrk = None if args.no_wrk else shutil.which("wrk")
    if wrk is None and not args.no_wrk:
        console.print("[yellow]wrk not found: using the slower Python load generator. "
                      "Install it with `apt-get install -y wrk` for figures that measure the "
                      "ingress rather than the client.[/yellow]")  # fmt: skip
    py_spy = py_spy_binary() if args.profile else None

    step = time.perf_counter()
    settings = start_stack(stack)
    reg = register(settings)
    records = stack.scratch / "records.bin"
    n_orders, n_clicks, sizes = build_records(reg, settings.ingest_port, args.bodies, records)
    log = stack.scratch / "ingress.log"
    stack.ingress = start_ingress(settings, args.workers, log)
    wait_ready(stack.ingress, settings.ingest_port, log)
    pids = group_pids(stack.ingress.pid)
    console.print(
        f"[dim]stack ready in {time.perf_counter() - step:.1f}s: broker {settings.kafka_bootstrap}"
        f", db {stack.database}, redis db {REDIS_DB}, ingress :{settings.ingest_port} "
        f"(pids {pids}); {n_orders} signed bodies ({min(sizes)}-{max(sizes)} B, "
        f"mean {sum(sizes) // len(sizes)} B), {n_clicks} click requests[/dim]"
    )
    out_dir = stack.scratch / "acked"
    out_dir.mkdir()

    def load(phase: str, seconds: float) -> LoadResult:
        if wrk is not None:
            return run_wrk(wrk, settings.ingest_port, records, out_dir, phase, seconds,
                           args.connections, args.load_threads, args.clicks_share)  # fmt: skip
        return run_fallback(settings.ingest_port, records, phase, seconds, args.connections,
                            max(1, args.load_threads), args.clicks_share)  # fmt: skip

    warm = load("w", args.warmup) if args.warmup > 0 else None

    # Measured phase, with CPU accounting (and the profiler) around it.
    ingress_pids = group_pids(stack.ingress.pid)
    redis_client = redis.Redis.from_url(settings.redis_url)
    redis_pid = int(redis_client.info("server")["process_id"])
    redis_client.close()
    watched = {"broker (tansu)": [stack.broker_pid or 0], "redis-server": [redis_pid],
               "ingress (all processes)": ingress_pids}  # fmt: skip
    worker_pids = [p for p in ingress_pids if describe(process_info(p)[0]) == "uvicorn worker"]
    cpu_before = {k: sum(cpu_seconds(p) for p in v) for k, v in watched.items()}
    threads_before = thread_cpu(worker_pids)
    busy_before = machine_busy()
    profiler = None
    profile_out = stack.scratch / "profile.txt"
    if py_spy is not None:
        target = worker_pids[0] if worker_pids else ingress_pids[-1]
        length = min(10.0, max(2.0, args.seconds - 3))
        profiler_box: list[subprocess.Popen[bytes]] = []
        delayed = threading.Timer(
            1.0, lambda: profiler_box.append(start_profile(py_spy, target, length, profile_out))
        )
        delayed.start()
    result = load("m", args.seconds)
    busy_after = machine_busy()
    cpu_after = {k: sum(cpu_seconds(p) for p in v) for k, v in watched.items()}
    threads_used = thread_cpu(worker_pids)
    threads_used.subtract(threads_before)
    if py_spy is not None:
        delayed.join()
        profiler = profiler_box[0] if profiler_box else None
        if profiler is not None:
            _, stderr = profiler.communicate(timeout=60)
            if profiler.returncode != 0:
                console.print(f"[yellow]py-spy failed: {stderr.decode()[-500:]}[/yellow]")

    peaks = [(p, *process_info(p)) for p in group_pids(stack.ingress.pid)]
    stop_ingress(stack.ingress)

    acked_orders = result.acked_orders | (warm.acked_orders if warm else set())
    acked_clicks = result.acked_clicks | (warm.acked_clicks if warm else set())
    step = time.perf_counter()
    orders = check_topic(settings.kafka_bootstrap, str(Topic.ORDERS), acked_orders, 300)
    clicks = check_topic(settings.kafka_bootstrap, str(Topic.CLICKS), acked_clicks, 300)
    read_seconds = time.perf_counter() - step

    # --- report ---
    if result.raw_output:
        console.print(f"[dim]{result.raw_output.strip()}[/dim]")
    rps = result.requests / result.seconds if result.seconds else 0.0
    accepted = result.statuses.get("200 accepted", 0)
    redirects = result.statuses.get("302 redirect", 0)
    table = Table(title=f"ingress under load — {args.workers} workers, {args.connections} "
                        f"connections, {result.generator}, {result.seconds:.1f} s measured "
                        f"(+{args.warmup:g} s warm-up)")  # fmt: skip
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("requests/s (all)", f"{rps:,.0f}")
    table.add_row("signed webhooks accepted/s (200)", f"{accepted / result.seconds:,.0f}")
    table.add_row("clicks redirected/s (302)", f"{redirects / result.seconds:,.0f}")
    for key in ("p50", "p75", "p90", "p95", "p99", "p99.9", "mean", "max"):
        if key in result.latency_ms:
            table.add_row(f"latency {key} (ms, all requests)", f"{result.latency_ms[key]:.2f}")
    for key, count in sorted(result.statuses.items()):
        table.add_row(f"HTTP {key}", f"{count:,}")
    non_2xx3xx = sum(n for k, n in result.statuses.items() if not k.startswith(("2", "3")))
    table.add_row("non-2xx/3xx responses", f"{non_2xx3xx:,}")
    for key, count in sorted(result.socket_errors.items()):
        if count:
            table.add_row(f"socket errors: {key}", f"{count:,}")
    table.add_row("requests sent: orders / clicks",
                  f"{result.sent['orders']:,} / {result.sent['clicks']:,}")  # fmt: skip
    table.add_section()
    table.add_row("webhooks acked 200 (warm-up + measured)", f"{len(acked_orders):,}")
    table.add_row(f"{Topic.ORDERS} messages (read to end)", f"{orders.messages:,}")
    table.add_row("[bold]acked but missing in Kafka[/bold]", f"[bold]{orders.acked_missing}[/bold]")
    table.add_row("duplicate order messages", f"{orders.bench_messages - orders.distinct:,}")
    table.add_row("order messages not acked (in flight at stop)", f"{orders.not_acked_present:,}")
    table.add_row("clicks redirected 302 (warm-up + measured)", f"{len(acked_clicks):,}")
    table.add_row(f"{Topic.CLICKS} messages (read to end)", f"{clicks.messages:,}")
    table.add_row("redirected clicks missing in Kafka", f"{clicks.acked_missing}")
    table.add_row("read-back time (s)", f"{read_seconds:.1f}")
    table.add_section()
    for pid, cmd, hwm in peaks:
        table.add_row(f"peak RSS {describe(cmd)} (pid {pid})", f"{hwm / 1024:,.0f} MiB")
    table.add_row("peak RSS ingress total (sum of VmHWM)",
                  f"{sum(h for _, _, h in peaks) / 1024:,.0f} MiB")  # fmt: skip
    table.add_section()
    wall = result.seconds or 1.0
    cores = os.cpu_count() or 1
    busy = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]) * 100
    table.add_row(f"machine CPU busy ({cores} cores)", f"{busy:.0f} %")
    rows = {k: cpu_after[k] - cpu_before[k] for k in watched}
    rows["load generator"] = result.cpu_seconds
    machine_seconds = (busy_after[0] - busy_before[0]) / CLK_TCK
    rows["everything else on the machine"] = max(0.0, machine_seconds - sum(rows.values()))
    for name, seconds in sorted(rows.items(), key=lambda kv: -kv[1]):
        table.add_row(f"CPU {name}", f"{seconds / wall:.2f} cores ({seconds:.1f} s)")
    for kind, seconds in sorted(threads_used.items()):
        table.add_row(
            f"  of which workers' {kind}", f"{seconds / wall:.2f} cores ({seconds:.1f} s)"
        )
    console.print(table)
    console.print(
        f"target: ≥ 8,000 signed webhooks/s with p99 ≤ 25 ms on 2 cores — measured "
        f"{accepted / result.seconds:,.0f}/s accepted webhooks, {rps:,.0f}/s all requests, "
        f"p99 {result.latency_ms.get('p99', float('nan')):.1f} ms "
        f"(load generator and broker share the same cores)"
    )
    if py_spy is not None and profile_out.exists():
        summarize_profile(profile_out)
        if args.profile_out:
            shutil.copyfile(profile_out, args.profile_out)
            console.print(f"raw py-spy stacks kept in {args.profile_out}")


if __name__ == "__main__":
    main()
