"""The click-duplicate guard (`ingest.guards.first_click`) against the real Redis, on the
pipelined connection and on redis-py, and its fallback to the script on a Redis older than 7.0
(no `SET … NX GET`); and that a failure of the second identity's `SET` alone is counted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ingest import guards
from ingest.metrics import REDIS_UNAVAILABLE
from ingest.resp import Commands, PipelinedRedis, RedisPyCommands, Unawaited, commands_for
from schemas.settings import Settings


def _count(operation: str) -> float:
    return REDIS_UNAVAILABLE.labels(operation)._value.get()  # type: ignore[no-any-return]


@pytest.fixture(params=["pipelined", "redis-py"])
async def commands(
    request: pytest.FixtureRequest, stack_settings: Settings
) -> AsyncIterator[Commands]:
    if request.param == "pipelined":
        client: Commands = commands_for(stack_settings.redis_url, timeout=2)
        assert isinstance(client, PipelinedRedis)
    else:
        client = RedisPyCommands(aioredis.Redis.from_url(stack_settings.redis_url))
    try:
        yield client
    finally:
        await client.close()


def _key(fingerprint: str) -> str:
    return f"{guards.PREFIX}:click:{fingerprint}"


async def test_first_click_holds_the_window_and_remembers_the_second_identity(
    commands: Commands, stack_settings: Settings
) -> None:
    fingerprint, visitor = f"test-fp-{uuid.uuid4().hex}", f"test-v-{uuid.uuid4().hex}"
    first, second = f"clk_{uuid.uuid4().hex}", f"clk_{uuid.uuid4().hex}"
    assert await guards.first_click(commands, fingerprint, 30, first, also=visitor)
    # A re-delivery of the same click is never a duplicate of itself; another click is one.
    assert await guards.first_click(commands, fingerprint, 30, first)
    assert not await guards.first_click(commands, fingerprint, 30, second)
    # The visitor id given with the first click is judged by it within the window (its SET is
    # not awaited by the guard: on redis-py it may travel on another pooled connection).
    await asyncio.sleep(0.05)
    assert not await guards.first_click(commands, visitor, 30, second)
    admin = redis.Redis.from_url(stack_settings.redis_url)
    try:
        assert admin.get(_key(fingerprint)) == first.encode()
        assert admin.get(_key(visitor)) == first.encode()
        for key in (_key(fingerprint), _key(visitor)):
            assert 0 < admin.ttl(key) <= 30
    finally:
        admin.delete(_key(fingerprint), _key(visitor))
        admin.close()


async def test_the_window_ends(commands: Commands) -> None:
    fingerprint = f"test-fp-{uuid.uuid4().hex}"
    assert await guards.first_click(commands, fingerprint, 1, "clk_a")
    assert not await guards.first_click(commands, fingerprint, 1, "clk_b")
    await asyncio.sleep(1.2)
    assert await guards.first_click(commands, fingerprint, 1, "clk_b")


class _Redis62:
    """Commands over the real Redis that refuse `SET … NX GET` as Redis 6.2 does."""

    def __init__(self, real: Commands) -> None:
        self.real = real
        self.sent: list[str] = []

    def call(self, *args: str | int | bytes) -> Awaitable[Any]:
        self.sent.append(str(args[0]))
        if args[0] == "SET" and "NX" in args and "GET" in args:
            return self._refuse()
        return self.real.call(*args)

    def send(self, sink: Unawaited, *args: str | int | bytes) -> None:
        self.sent.append(str(args[0]))
        self.real.send(sink, *args)

    async def _refuse(self) -> Any:
        raise ResponseError("ERR syntax error")

    async def close(self) -> None:
        await self.real.close()


async def test_a_redis_without_set_nx_get_is_asked_by_the_script(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guards, "_set_nx_get", True)
    old = _Redis62(commands_for(stack_settings.redis_url, timeout=2))
    fingerprint, visitor = f"test-fp-{uuid.uuid4().hex}", f"test-v-{uuid.uuid4().hex}"
    unavailable = _count("first_click")
    try:
        assert await guards.first_click(old, fingerprint, 30, "clk_a", also=visitor)
        assert not guards._set_nx_get  # asked once: the script from then on
        assert not await guards.first_click(old, fingerprint, 30, "clk_b")
        assert not await guards.first_click(old, visitor, 30, "clk_b")
        # The refused SET once, then the script only (it remembers the second identity too).
        assert old.sent[0] == "SET"
        assert set(old.sent[1:]) <= {"EVALSHA", "EVAL"}
        assert len(old.sent) >= 4
        assert _count("first_click") == unavailable  # a fallback, not an outage
    finally:
        await old.close()
        admin = redis.Redis.from_url(stack_settings.redis_url)
        admin.delete(_key(fingerprint), _key(visitor))
        admin.close()


class _AlsoFails:
    """Commands over the real Redis whose plain `SET … EX` (the second identity's) fails, as
    a lost connection's reply would."""

    def __init__(self, real: Commands) -> None:
        self.real = real

    def call(self, *args: str | int | bytes) -> Awaitable[Any]:
        if args[0] == "SET" and "NX" not in args:
            return self._fail()
        return self.real.call(*args)

    def send(self, sink: Unawaited, *args: str | int | bytes) -> None:
        if args[0] == "SET" and "NX" not in args:
            asyncio.get_running_loop().call_soon(sink.failed, ConnectionError("lost"))
        else:
            self.real.send(sink, *args)

    async def _fail(self) -> Any:
        raise ConnectionError("lost")

    async def close(self) -> None:
        await self.real.close()


async def test_a_failed_second_identity_alone_is_counted_and_the_click_judged(
    stack_settings: Settings,
) -> None:
    client = _AlsoFails(commands_for(stack_settings.redis_url, timeout=2))
    fingerprint = f"test-fp-{uuid.uuid4().hex}"
    before = _count("first_click")
    try:
        assert await guards.first_click(client, fingerprint, 30, "clk_a", also="test-v-x")
        await asyncio.sleep(0)  # its reply's callback
        assert _count("first_click") == before + 1
        assert not await guards.first_click(client, fingerprint, 30, "clk_b")
        assert _count("first_click") == before + 1
    finally:
        await client.close()
        admin = redis.Redis.from_url(stack_settings.redis_url)
        admin.delete(_key(fingerprint))
        admin.close()


async def test_admit_counts_the_window_expires_it_and_sees_remembered_deliveries(
    commands: Commands, stack_settings: Settings
) -> None:
    scope = f"test-shop-{uuid.uuid4().hex}"
    dedup = guards.dedup_key("shopify", scope, uuid.uuid4().hex)
    admin = redis.Redis.from_url(stack_settings.redis_url)
    try:
        # Three requests in one second against a limit of 2 (retried once if the second
        # turned between them).
        for _ in range(2):
            window = int(time.time())
            answers = [
                await guards.admit(commands, scope=scope, dedup=dedup, limit_per_second=2)
                for _ in range(3)
            ]
            if int(time.time()) == window:
                break
        assert [a.over_limit for a in answers] == [False, False, True]
        assert not any(a.duplicate for a in answers)
        await asyncio.sleep(0.05)  # the window's EXPIRE is queued, not awaited
        rate_key = f"{guards.PREFIX}:rate:{scope}:{window}"
        assert admin.get(rate_key) == b"3"
        assert 0 < admin.ttl(rate_key) <= 2
        guards.remember(commands, dedup, 60)
        await asyncio.sleep(0.05)
        again = await guards.admit(commands, scope=scope, dedup=dedup, limit_per_second=100)
        assert again.duplicate
    finally:
        admin.delete(dedup)
        admin.close()
