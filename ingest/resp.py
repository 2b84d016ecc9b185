"""A pipelined Redis connection for the guards on the hot path (`ingest.guards`).

redis-py's asyncio client costs ~60 µs of event-loop time per command (a pooled connection
checked out and back under a lock, an `asyncio.timeout` and a `wait_for` per read, the command
encoded in Python): with two commands per webhook that was ~25 % of a worker's time
(bench/ingress `--profile`). Here every request of a worker shares one connection: a command is
packed by hiredis and written at once, its reply future queued; replies arrive in order and
hiredis parses them as they come, resolving the futures. Concurrent requests pipeline on the
connection without waiting for each other. A command whose reply nobody waits for (`send`: the
dedup mark after the ack, a click's second identity, a rate window's expiry) takes a place in
that queue without a future: its reply is dropped, an error handed to the sink it names.

Failures are the guards' to handle (they fail open): a refused or lost connection raises
`ConnectionError`, no reply within `timeout` raises `TimeoutError` (both `OSError`s) and closes
the connection (a late reply would answer the wrong request), a Redis error reply raises
redis-py's `ResponseError` (`NoScriptError` for NOSCRIPT). The next command reconnects, so a
restarted Redis is used again as soon as it answers.

URLs with TLS (`rediss://`) or a Unix socket are served by redis-py instead
(`RedisPyCommands`): same interface, its own connection handling.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import hiredis
import redis.asyncio as aioredis
from redis.connection import parse_url
from redis.exceptions import NoScriptError, ResponseError


class Commands(Protocol):
    def call(self, *args: str | int | bytes) -> Awaitable[Any]: ...

    def send(self, sink: Unawaited, *args: str | int | bytes) -> None: ...

    async def close(self) -> None: ...


class Unawaited:
    """Where the reply of a command that nobody awaits goes (`Commands.send`): nowhere, unless
    it is an error (an error reply, a lost or silent connection), which is handed to `failed`.
    One per purpose, shared by all its commands: no future, no done callback and no loop
    callback per command, as a reply future that nobody awaits would cost. It stands in the
    pipelined connection's queue of reply futures, so it answers as a pending one."""

    __slots__ = ("failed",)

    def __init__(self, failed: Callable[[BaseException], None]) -> None:
        self.failed = failed

    def done(self) -> bool:
        return False

    def set_result(self, _reply: Any) -> None:
        pass

    def set_exception(self, exc: BaseException) -> None:
        self.failed(exc)

    def exception(self) -> None:
        return None


_unawaited_tasks: set[asyncio.Future[Any]] = set()  # kept from the collector until done


def _send_by_task(sink: Unawaited, reply: Awaitable[Any]) -> None:
    """A command's reply awaited by a task of its own (a connection not open yet, redis-py)."""
    task = asyncio.ensure_future(reply)
    _unawaited_tasks.add(task)

    def done(task: asyncio.Future[Any]) -> None:
        _unawaited_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            sink.failed(task.exception())  # type: ignore[arg-type]

    task.add_done_callback(done)


def commands_for(url: str, timeout: float) -> Commands:
    """The pipelined connection for `redis://` URLs, redis-py for the others."""
    options = parse_url(url)  # type: ignore[no-untyped-call]
    if "connection_class" in options or "path" in options:
        return RedisPyCommands(aioredis.Redis.from_url(url, socket_timeout=timeout))
    return PipelinedRedis(
        options.get("host", "localhost"),
        int(options.get("port", 6379)),
        db=int(options.get("db", 0)),
        username=options.get("username"),
        password=options.get("password"),
        timeout=timeout,
    )


class RedisPyCommands:
    """`Commands` over a redis-py client (TLS, Unix sockets)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    def send(self, sink: Unawaited, *args: str | int | bytes) -> None:
        _send_by_task(sink, self.call(*args))

    async def call(self, *args: str | int | bytes) -> Any:
        return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self._client.aclose()


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PipelinedRedis) -> None:
        self._owner = owner
        self._reader = hiredis.Reader(replyError=ResponseError)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._owner._waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not waiting:  # a reply nobody waits for: out of step, start over
                self._owner._drop(ConnectionError("unexpected reply from Redis"))
                return
            future = waiting.popleft()[0]
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                text = str(reply)
                future.set_exception(NoScriptError(text) if text.startswith("NOSCRIPT") else reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._drop(ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))


class PipelinedRedis:
    """One pipelined connection to a Redis server (see the module docstring)."""

    def __init__(
        self, host: str, port: int, *, db: int = 0, username: str | None = None,
        password: str | None = None, timeout: float = 2.0,
    ) -> None:  # fmt: skip
        self._host, self._port, self._db = host, port, db
        self._username, self._password = username, password
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the transport's
        self._connecting: asyncio.Future[None] | None = None
        # Commands written and not answered yet, in order: (reply future, reply deadline).
        self._waiting: collections.deque[tuple[asyncio.Future[Any] | Unawaited, float]] = (
            collections.deque()
        )
        self._outgoing: list[bytes] = []  # packed commands of this loop turn, not yet written
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_loop: asyncio.AbstractEventLoop | None = None  # where it is scheduled

    def call(self, *args: str | int | bytes) -> Awaitable[Any]:
        """The command's reply, to await. On an open connection this is the reply's future
        itself (no coroutine per command); otherwise a coroutine that connects first."""
        transport, loop = self._transport, self._loop
        if transport is None or transport.is_closing() or loop is None or loop.is_closed():
            return self._connect_and_call(args)
        # (hiredis's stub types the tuple as one element long)
        return self._send(transport, loop, hiredis.pack_command(args))  # type: ignore[arg-type]

    def send(self, sink: Unawaited, *args: str | int | bytes) -> None:
        """The command queued as `call` queues it, its reply not awaited: dropped, or its
        error handed to `sink`."""
        transport, loop = self._transport, self._loop
        if transport is None or transport.is_closing() or loop is None or loop.is_closed():
            _send_by_task(sink, self._connect_and_call(args))
            return
        self._queue(transport, loop, hiredis.pack_command(args), sink)  # type: ignore[arg-type]

    async def _connect_and_call(self, args: tuple[str | int | bytes, ...]) -> Any:
        await self._connect()
        transport, loop = self._transport, self._loop
        assert transport is not None
        assert loop is not None
        packed = hiredis.pack_command(args)  # type: ignore[arg-type]
        return await self._send(transport, loop, packed)

    def _send(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, packed: bytes
    ) -> asyncio.Future[Any]:
        """Queue the command; the commands of one event-loop turn go out in one write (one
        system call for all the requests that reached Redis in that turn). Replies come in
        order, so one watchdog timer, set for the oldest unanswered command, keeps every
        deadline (a timer per command cost a third of this connection's time). `loop` is the
        transport's, the running one (asking for the running loop costs a getpid call)."""
        future: asyncio.Future[Any] = loop.create_future()
        self._queue(transport, loop, packed, future)
        return future

    def _queue(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, packed: bytes,
        waiter: asyncio.Future[Any] | Unawaited,
    ) -> None:  # fmt: skip
        self._waiting.append((waiter, loop.time() + self._timeout))
        if not self._outgoing:
            loop.call_soon(self._flush, transport)
        self._outgoing.append(packed)
        if self._watchdog is None or self._watchdog_loop is not loop:
            self._watchdog, self._watchdog_loop = loop.call_later(self._timeout, self._watch), loop

    def _flush(self, transport: asyncio.Transport) -> None:
        if transport is not self._transport:  # dropped since: its commands have failed
            return
        outgoing, self._outgoing = self._outgoing, []
        if outgoing:
            transport.write(b"".join(outgoing))

    def _watch(self) -> None:
        """The oldest unanswered command's deadline: passed, the connection is dropped (a
        late reply would answer the wrong command); else look again at that deadline."""
        self._watchdog = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        deadline = self._waiting[0][1]
        if deadline <= loop.time():
            self._drop(TimeoutError(f"no reply from Redis within {self._timeout:g}s"))
        else:
            self._watchdog = loop.call_at(deadline, self._watch)

    def _drop(self, error: Exception) -> None:
        """Fail every waiting command and close the connection (the next call reconnects)."""
        transport, self._transport = self._transport, None
        waiting, self._waiting = self._waiting, collections.deque()
        self._outgoing = []
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: its waiter may be gone
        if transport is not None:
            transport.abort()

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        pending = self._connecting
        try:
            await asyncio.shield(pending)
        finally:
            if self._connecting is pending and pending.done():
                self._connecting = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(self), self._host, self._port),
            self._timeout,
        )
        self._transport = transport  # (uvloop's is no asyncio.Transport subclass: no isinstance)
        self._loop = loop
        try:
            if self._password is not None:
                credentials = (self._username, self._password) if self._username else (
                    self._password,
                )  # fmt: skip
                await self._send(transport, loop, hiredis.pack_command(("AUTH", *credentials)))
            if self._db:
                select = hiredis.pack_command(("SELECT", self._db))  # type: ignore[arg-type]
                await self._send(transport, loop, select)
        except BaseException:
            self._drop(ConnectionError("Redis refused the connection's AUTH or SELECT"))
            raise

    async def close(self) -> None:
        self._drop(ConnectionError("closed"))
