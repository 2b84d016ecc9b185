"""CPU per answer of the ingress's hot path and of the floor, in one process, without the network.

    .venv/bin/python -m bench.ingress_cpu [--kind webhooks|clicks] [--target ingress|floor|
                                          floor-guards] [--requests 20000] [--repeats 5]

The real HTTP server code (uvicorn's httptools protocol: `ingest.serving`'s for the ingress,
uvicorn's own for the floor, as `bench.ingress` serves them), the real app and the real
Python of the producer bridge and the pipelined Redis connection, on uvloop, with 64 keep-alive
connections sending the bench's requests (signed orders, unique event ids; referral clicks). Only
what lies beyond a process's Python is replaced: the client sockets by transports that hand the
next request over when an answer is written, librdkafka by a producer that acknowledges every
message on the next loop turn, the Redis socket by a transport that answers the guards' commands
(admitted, first click, OK) on the next loop turn. So the figure is the Python (and C extension)
work of a request, free of the neighbours' noise that `bench.ingress` reads through: what a
change to the hot path saves. Under `valgrind --tool=callgrind --dump-before=getppid` the
measured requests are the second dump (the driver calls `os.getppid()` around them): its
instruction count divided by requests x repeats is a count per answer that no neighbour changes.

Not the system calls, librdkafka's threads, Redis or the broker: `bench.ingress` measures those.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import hiredis
import orjson
import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from schemas.runtime import freeze_startup_heap

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "data" / "shopify"
TEMPLATES = (
    ("orders_create.json", "orders/create"),
    ("order_full_450789469.json", "orders/updated"),
)
SHOP, SECRET, TENANT = "bench-cpu.myshopify.com", "shpss_benchcpu", "t_bench_cpu"
CODES = tuple(f"agent{n}-cpu" for n in range(4))
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
)


def requests(kind: str, bodies: int = 200) -> Callable[[int], bytes]:
    """The n-th request of `kind`, as `bench.ingress` builds them (unique event ids)."""
    from ingest.shopify import sign

    if kind == "clicks":
        clicks = [
            (f"GET /r/{code} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: {agent}\r\n"
             f"Accept: text/html\r\nReferer: https://blog.example.com/desk-review\r\n\r\n").encode()
            for code in CODES for agent in AGENTS
        ]  # fmt: skip
        return lambda n: clicks[n % len(clicks)]
    templates = [(orjson.loads((FIXTURES / name).read_bytes()), topic) for name, topic in TEMPLATES]
    orders: list[tuple[bytes, bytes]] = []
    for n in range(bodies):
        template, topic = templates[n % len(templates)]
        order_id = 820_000_000_000 + n
        graphql_id = f"gid://shopify/Order/{order_id}"
        body = orjson.dumps(
            {**template, "id": order_id, "name": f"#B{n}", "admin_graphql_api_id": graphql_id}
        )
        prefix = (
            f"POST /webhooks/shopify HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
            f"User-Agent: Shopify-Captain-Hook\r\nAccept: */*\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-Shopify-Topic: {topic}\r\nX-Shopify-Shop-Domain: {SHOP}\r\n"
            f"X-Shopify-Hmac-Sha256: {sign(SECRET, body)}\r\nX-Shopify-API-Version: 2026-07\r\n"
            f"X-Shopify-Webhook-Id: wh-{uuid.uuid4()}\r\n"
            f"X-Shopify-Triggered-At: 2026-11-25T10:00:00.000Z\r\nX-Shopify-Event-Id: "
        ).encode()
        orders.append((prefix, b"\r\n\r\n" + body))
    run = uuid.uuid4().hex[:8].encode()
    return lambda n: orders[n % bodies][0] + b"cpu-" + run + b"-%d" % n + orders[n % bodies][1]


class Kafka:
    """librdkafka's place: every message acknowledged on the next loop turn, in one batch."""

    def __init__(self) -> None:
        self._pending: list[Callable[..., None]] = []

    def produce(self, _topic: str, _value: bytes, _key: bytes, on_delivery: Any) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._deliver)
        self._pending.append(on_delivery)

    def _deliver(self) -> None:
        pending, self._pending = self._pending, []
        for report in pending:
            report(None, None)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


class RedisServer:
    """The Redis socket's place: the guards' commands answered on the next loop turn (admitted
    and not seen, the click the first of its window, OK)."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        self._reader = hiredis.Reader()
        self._counts: collections.Counter[bytes] = collections.Counter()

    def write(self, data: bytes) -> None:
        self._reader.feed(data)
        replies = []
        while (command := self._reader.gets()) is not False:
            name = command[0].upper()
            if name == b"SET":
                replies.append(b"+OK\r\n")
            elif name == b"EXPIRE":
                replies.append(b":1\r\n")
            elif name == b"INCR":  # admit: the window's count (its first one then sets EXPIRE)
                self._counts[command[1]] += 1
                replies.append(b":%d\r\n" % self._counts[command[1]])
            elif name == b"EXISTS":  # admit: not seen
                replies.append(b":0\r\n")
            else:  # first click: the window's holder is this click
                click_id = command[-2]
                replies.append(b"$%d\r\n%s\r\n" % (len(click_id), click_id))
        asyncio.get_running_loop().call_soon(self._protocol.data_received, b"".join(replies))

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def pipelined_redis() -> Any:
    from ingest.resp import PipelinedRedis, _Protocol

    redis = PipelinedRedis("127.0.0.1", 1, timeout=600)  # valgrind is slow: no timeouts
    redis._transport = RedisServer(_Protocol(redis))  # type: ignore[assignment]
    redis._loop = asyncio.get_running_loop()
    return redis


class Client(asyncio.Transport):
    """One keep-alive connection's socket: the next request goes in when an answer came out."""

    def __init__(self, driver: Driver) -> None:
        super().__init__()
        self._driver = driver
        self.protocol: asyncio.Protocol | None = None
        self._buffer = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("203.0.113.7", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        """An answer may come in more than one write (uvicorn's own protocol: head, then body)."""
        buffer = self._buffer + bytes(data)
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self._buffer = buffer
            return
        length = 0
        for line in buffer[:end].split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if len(buffer) < end + 4 + length:
            self._buffer = buffer
            return
        self._buffer = buffer[end + 4 + length :]
        self._driver.answered(self, buffer[9:12])

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise RuntimeError("the server closed a keep-alive connection")


class Driver:
    def __init__(self, make: Callable[[], asyncio.Protocol], request: Callable[[int], bytes],
                 connections: int) -> None:  # fmt: skip
        self._request = request
        self._sent = 0
        self._limit = 0
        self.statuses: collections.Counter[bytes] = collections.Counter()
        self._done: asyncio.Future[None] | None = None
        self._in_flight = 0
        self._clients = []
        for _ in range(connections):
            client = Client(self)
            protocol = make()
            protocol.connection_made(client)
            client.protocol = protocol
            self._clients.append(client)

    def _send(self, client: Client) -> None:
        if self._sent >= self._limit:
            if self._in_flight == 0 and self._done is not None and not self._done.done():
                self._done.set_result(None)
            return
        data = self._request(self._sent)
        self._sent += 1
        self._in_flight += 1
        assert client.protocol is not None
        client.protocol.data_received(data)

    def answered(self, client: Client, status: bytes) -> None:
        self.statuses[status] += 1
        self._in_flight -= 1
        asyncio.get_running_loop().call_soon(self._send, client)

    async def run(self, count: int) -> float:
        """`count` requests over the connections; the CPU seconds they took."""
        self._done = asyncio.get_running_loop().create_future()
        self._limit = self._sent + count
        started = time.process_time()
        for client in self._clients:
            self._send(client)
        await self._done
        return time.process_time() - started


def ingress_protocol(loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Protocol]:
    from ingest.app import Ingress, create_app
    from ingest.clicks import ClickPolicy
    from ingest.producer import EventProducer, _Inbox
    from ingest.registry import LinkRecord, Registry, ShopRecord, Snapshot
    from ingest.serving import OneWriteHttpToolsProtocol
    from schemas.settings import Settings

    settings = Settings(ingest_rate_limit_per_shop=1 << 30)
    app = create_app(settings)
    registry = Registry(settings.postgres_url, None, 3600)  # type: ignore[arg-type]
    policy = ClickPolicy(max_age=timedelta(hours=24))
    landing = f"https://{SHOP}/collections/office?utm_source=refstream"
    registry._snapshot = Snapshot(
        shops={SHOP: ShopRecord(SHOP, TENANT, (SECRET,))}, erp_tokens={},
        links={code: LinkRecord(code, f"lnk_{n}", TENANT, "prg_cpu", f"agt_{n}", landing, policy)
               for n, code in enumerate(CODES)},
    )  # fmt: skip
    producer = object.__new__(EventProducer)
    producer._timeout = 600.0  # valgrind is slow: no timeouts
    # The loop polls librdkafka every millisecond while messages are in flight; here the
    # "broker" acknowledges on the next turn by itself, and a tick per wall-clock millisecond
    # would make the count depend on the speed of the machine (valgrind's, the neighbours').
    _Inbox.TICK = 3600.0
    producer._producer = Kafka()  # type: ignore[assignment]
    producer._inbox = None
    app.state.ingress = Ingress(settings, producer, None, registry, pipelined_redis())  # type: ignore[arg-type]
    config = Config(app=app, lifespan="off", http=OneWriteHttpToolsProtocol, log_level="warning",
                    access_log=False, proxy_headers=False, server_header=False)  # fmt: skip
    config.load()
    state = ServerState()
    return lambda: OneWriteHttpToolsProtocol(config, state, {}, loop)


def floor_protocol(
    loop: asyncio.AbstractEventLoop, guarded: bool
) -> Callable[[], asyncio.Protocol]:
    os.environ.update({"FLOOR_BOOTSTRAP": "127.0.0.1:1", "FLOOR_SECRET": SECRET,
                       "FLOOR_ORDERS_TOPIC": "o", "FLOOR_CLICKS_TOPIC": "c"})  # fmt: skip
    from bench import ingress_floor

    floor = object.__new__(ingress_floor.Floor)
    floor.secret, floor.orders_topic, floor.clicks_topic = SECRET.encode(), "o", "c"
    floor.producer = Kafka()  # type: ignore[assignment]
    floor.redis = pipelined_redis() if guarded else None
    ingress_floor._floor = floor
    config = Config(app=ingress_floor.app, lifespan="off", http="httptools", log_level="warning",
                    access_log=False, proxy_headers=False)  # fmt: skip
    config.load()
    state = ServerState()
    return lambda: HttpToolsProtocol(config, state, {}, loop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("webhooks", "clicks"), default="webhooks")
    parser.add_argument("--target", choices=("ingress", "floor", "floor-guards"),
                        default="ingress")  # fmt: skip
    parser.add_argument("--requests", type=int, default=20_000, help="measured per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--one-process-metrics", action="store_true",
        help="prometheus_client's single-process values (the bench's ingress runs 2 workers: "
        "multiprocess mode, values in mmap'd files)",
    )  # fmt: skip
    args = parser.parse_args()
    if not args.one_process_metrics:  # before prometheus_client is imported
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ingress-cpu-metrics-")

    async def go() -> None:
        loop = asyncio.get_running_loop()
        make = (
            ingress_protocol(loop)
            if args.target == "ingress"
            else floor_protocol(loop, args.target == "floor-guards")
        )
        driver = Driver(make, requests(args.kind), args.connections)
        if args.target == "ingress":
            from ingest.app import settle_heap

            settle_heap()  # as each worker's start-up does
        else:
            freeze_startup_heap()  # (the floor does not; one process, as the ingress's)
        await driver.run(args.warmup)
        os.getppid()  # a mark for `valgrind --tool=callgrind --dump-before=getppid`
        times = [await driver.run(args.requests) for _ in range(args.repeats)]
        os.getppid()
        per = sorted(t / args.requests * 1e6 for t in times)
        print(f"{args.target} {args.kind}: CPU per answer best {per[0]:.1f} µs, median "
              f"{per[len(per) // 2]:.1f} µs ({args.repeats} x {args.requests}); answers "
              f"{dict(driver.statuses)}")  # fmt: skip

    try:
        uvloop.run(go())
    finally:
        if not args.one_process_metrics:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


if __name__ == "__main__":
    main()
