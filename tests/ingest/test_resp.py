"""The guards' pipelined Redis connection (`ingest.resp`) against the real Redis."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from ingest.resp import Commands, PipelinedRedis, RedisPyCommands, Unawaited, commands_for
from schemas.settings import Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_concurrent_commands_share_the_connection_and_get_their_own_replies(
    stack_settings: Settings,
) -> None:
    client = commands_for(stack_settings.redis_url, timeout=2)
    assert isinstance(client, PipelinedRedis)
    prefix = f"test:resp:{uuid.uuid4().hex}"
    try:
        await asyncio.gather(*(client.call("SET", f"{prefix}:{n}", n, "EX", 60)
                               for n in range(200)))  # fmt: skip
        replies = await asyncio.gather(*(client.call("GET", f"{prefix}:{n}") for n in range(200)))
        assert replies == [str(n).encode() for n in range(200)]
        # The URL's database: what it wrote is there for another client of the same URL.
        other = redis.Redis.from_url(stack_settings.redis_url)
        assert other.get(f"{prefix}:7") == b"7"
        other.close()
    finally:
        await client.close()


async def test_error_replies_raise_and_the_connection_stays_usable(
    stack_settings: Settings,
) -> None:
    client = commands_for(stack_settings.redis_url, timeout=2)
    try:
        with pytest.raises(NoScriptError):
            await client.call("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError):
            await client.call("INCR", "not", "a", "command", "shape")
        assert await client.call("PING") == b"PONG"
    finally:
        await client.close()


async def test_a_refused_connection_is_an_oserror_and_a_killed_one_is_reopened(
    stack_settings: Settings,
) -> None:
    down = PipelinedRedis("127.0.0.1", _closed_port(), timeout=1)
    with pytest.raises(ConnectionRefusedError):  # an OSError: the guards fail open on it
        await down.call("PING")

    client = commands_for(stack_settings.redis_url, timeout=2)
    try:
        name = f"resp-{uuid.uuid4().hex[:8]}"
        await client.call("CLIENT", "SETNAME", name)
        admin = redis.Redis.from_url(stack_settings.redis_url)
        killed = [c for c in admin.client_list() if c.get("name") == name]
        assert len(killed) == 1
        admin.client_kill_filter(_id=killed[0]["id"])
        admin.close()
        await asyncio.sleep(0.1)  # the close reaches the connection
        assert await client.call("PING") == b"PONG"
    finally:
        await client.close()


def test_tls_and_unix_socket_urls_are_left_to_redis_py() -> None:
    assert isinstance(commands_for("rediss://cache.example:6380/0", 2), RedisPyCommands)
    assert isinstance(commands_for("unix:///run/redis.sock?db=1", 2), RedisPyCommands)


async def test_a_silent_server_times_out_every_waiting_command_and_the_next_call_reconnects() -> (
    None
):
    """No reply within the timeout: every command waiting on the connection fails with a
    `TimeoutError` (an OSError: the guards fail open), the connection is closed, and the next
    command opens a new one."""
    connections: list[asyncio.StreamWriter] = []
    answer = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while line := await reader.readline():
            if answer.is_set() and line.startswith(b"PING"):
                writer.write(b"+PONG\r\n")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PipelinedRedis("127.0.0.1", port, timeout=0.3)
    try:
        started = asyncio.get_running_loop().time()
        first = asyncio.ensure_future(client.call("PING"))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(client.call("PING"))  # a later deadline, same drop
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert [type(r) for r in results] == [TimeoutError, TimeoutError]
        assert asyncio.get_running_loop().time() - started < 2
        answer.set()
        assert await client.call("PING") == b"PONG"
        assert len(connections) == 2  # the silent one was dropped, a new one opened
    finally:
        await client.close()
        server.close()


@pytest.mark.parametrize("kind", ["pipelined", "redis-py"])
async def test_sent_commands_are_written_and_only_their_errors_reach_the_sink(
    stack_settings: Settings, kind: str
) -> None:
    failures: list[BaseException] = []
    sink = Unawaited(failures.append)
    client: Commands = (
        commands_for(stack_settings.redis_url, timeout=2)
        if kind == "pipelined"
        else RedisPyCommands(aioredis.Redis.from_url(stack_settings.redis_url))
    )
    key = f"test:resp:{uuid.uuid4().hex}"
    try:
        client.send(sink, "SET", key, "v", "EX", 60)  # before the connection is open
        await asyncio.sleep(0.2)
        client.send(sink, "SET", key, "w", "EX", 60)
        client.send(sink, "INCR", key)  # not an integer: an error reply
        if kind == "redis-py":  # its pooled connections keep no order between commands
            await asyncio.sleep(0.1)
        assert await client.call("GET", key) == b"w"  # pipelined: behind them on the connection
        await asyncio.sleep(0.05)
        assert len(failures) == 1
        assert isinstance(failures[0], ResponseError)
    finally:
        await client.call("DEL", key)
        await client.close()

    down = PipelinedRedis("127.0.0.1", _closed_port(), timeout=1)
    down.send(sink, "SET", key, "v")
    await asyncio.sleep(0.2)
    assert len(failures) == 2
    assert isinstance(failures[1], ConnectionRefusedError)
