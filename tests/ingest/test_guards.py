"""The guards (`ingest.guards`) against the real Redis, on the pipelined connection and on
redis-py: the click-duplicate window and its second identity, the rate window (native `INCR` and
`EXISTS`, its `EXPIRE` queued) and the dedup mark."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from ingest import guards
from ingest.resp import Commands, PipelinedRedis, RedisPyCommands, commands_for
from schemas.settings import Settings


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
    # The visitor id given with the first click is judged by it within the window.
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
