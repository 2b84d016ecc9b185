"""`/v1/live` over real HTTP (the app served by uvicorn on a free port, real PostgreSQL and
Redis): role scoping, one-time tickets, heartbeats, disconnect and shutdown. Live batches are
published on Redis exactly as the dataflow's sink publishes them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import uvicorn
from fastapi import FastAPI
from httpx import AsyncClient

from deploy.stack import free_port, wait_ready
from schemas.live import LiveBatch, LiveConversion, LiveEntry, live_channel
from schemas.settings import Settings
from tests.api.factories import bearer, build_world, create_agent, create_company, login

T = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)


def conversion(agent_id: str | None, cid: str | None = None) -> LiveConversion:
    return LiveConversion(
        id=cid or f"cv_{uuid.uuid4().hex[:8]}", order="#1", agent_id=agent_id, program_id="prg",
        revenue=Decimal("100.00"), currency="USD", occurred_at=T, rule="coupon", order_id="1",
    )  # fmt: skip


def entry(agent_id: str, conversion_id: str) -> LiveEntry:
    return LiveEntry(
        id=f"le_{conversion_id}", agent_id=agent_id, conversion_id=conversion_id, order="#1",
        amount=Decimal("10.00"), currency="USD", kind="accrual",
    )  # fmt: skip


def publish(redis_url: str, tenant_id: str, *conversions: LiveConversion, raw: bytes = b"") -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        if raw:
            client.publish(live_channel(tenant_id), raw)
        entries = tuple(entry(c.agent_id, c.id) for c in conversions if c.agent_id)
        batch = LiveBatch(
            tenant_id=tenant_id, written_at=T, conversions=conversions, entries=entries
        )
        client.publish(live_channel(tenant_id), batch.to_bytes())
    finally:
        client.close()


class Stream:
    """An open text/event-stream response, parsed into (event, id, data) tuples."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []
        self.retry: str | None = None

    async def next_event(self) -> tuple[str, str | None, dict[str, Any]]:
        event, event_id, data = "message", None, b""
        async for line in self.lines:
            if line == "":
                if data:
                    return event, event_id, orjson.loads(data)
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comments.append(value)
            elif field == "event":
                event = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data += value.encode()
            elif field == "retry":
                self.retry = value
        raise EOFError("stream ended")

    async def until(self, event_id: str) -> list[tuple[str, str | None, dict[str, Any]]]:
        """Events up to and including the one with `event_id`."""
        seen = []
        while True:
            item = await asyncio.wait_for(self.next_event(), 10)
            seen.append(item)
            if item[1] == event_id:
                return seen


@pytest.fixture
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    """The test's app (lifespan already running) served over HTTP by uvicorn."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def open_stream(
    http: AsyncClient, path: str, headers: dict[str, str] | None = None
) -> tuple[Stream, Any]:
    context = http.stream("GET", path, headers=headers or {})
    response = await context.__aenter__()
    assert response.status_code == 200, (await response.aread()).decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = Stream(response)
    event, _, _ = await asyncio.wait_for(stream.next_event(), 10)
    assert event == "ready"
    return stream, context


async def test_each_role_sees_only_its_scope(
    client: AsyncClient, base_url: str, redis_url: str
) -> None:
    world = await build_world(client)
    other = await create_company(client)
    other_token = (
        await login(client, company=other["company"]["slug"], email=other["owner_email"])
    )["access_token"]
    team, apac, own = world.team_agent_id, world.other_region_agent_id, world.own_agent_id
    c_team, c_apac, c_own, c_none = (
        conversion(team),
        conversion(apac),
        conversion(own),
        conversion(None),
    )
    expected = {
        "owner": {c_team.id, c_apac.id, c_own.id, c_none.id},  # the whole company
        "manager": {c_team.id, c_own.id},  # EMEA: Team 1's agents, not APAC's
        "operator": {c_team.id, c_own.id},
        "observer": {c_team.id, c_own.id},
        "agent": {c_own.id},  # only the agent row linked to the user
    }
    async with AsyncClient(base_url=base_url, timeout=10) as http:
        streams = {
            role: await open_stream(http, "/v1/live", bearer(world.tokens[role]))
            for role in expected
        }
        other_stream = await open_stream(http, "/v1/live", bearer(other_token))
        # A malformed message on the channel is skipped; later ones still arrive.
        publish(redis_url, world.company_id, c_team, c_apac, c_own, c_none, raw=b"not json")
        sentinel = conversion(own, "cv_sentinel")  # visible to every role of the company
        publish(redis_url, world.company_id, sentinel)
        publish(redis_url, other["company"]["id"], conversion(None, "cv_other_company"))
        for role, ids in expected.items():
            events = await streams[role][0].until(f"le_{sentinel.id}")
            seen = {i for e, i, _ in events if e == "conversion"} - {sentinel.id}
            assert seen == ids, role
            commission = {d["conversion_id"] for e, _, d in events if e == "commission"}
            assert commission == {i for i in ids if i != c_none.id} | {sentinel.id}, role
        # The other company's owner saw none of it, only their own company's conversion.
        events = await other_stream[0].until("cv_other_company")
        assert [i for _, i, _ in events] == ["cv_other_company"]
        for _, context in [*streams.values(), other_stream]:
            await context.__aexit__(None, None, None)


async def test_conversion_payload_carries_money_as_strings_and_the_agent_name(
    client: AsyncClient, base_url: str, redis_url: str
) -> None:
    world = await build_world(client)
    c = conversion(world.team_agent_id)
    async with AsyncClient(base_url=base_url, timeout=10) as http:
        stream, context = await open_stream(http, "/v1/live", bearer(world.tokens["owner"]))
        assert stream.retry == "3000"
        publish(redis_url, world.company_id, c)
        events = await stream.until(f"le_{c.id}")
        await context.__aexit__(None, None, None)
    (conv,) = [d for e, _, d in events if e == "conversion"]
    assert conv == {
        "id": c.id, "order": "#1", "agent_id": world.team_agent_id, "agent_name": "Team agent",
        "program_id": "prg", "revenue": "100.00", "currency": "USD",
        "occurred_at": "2026-11-25T05:00:00Z", "rule": "coupon", "order_id": "1",
        "written_at": T.isoformat(),
    }  # fmt: skip
    (commission,) = [d for e, _, d in events if e == "commission"]
    assert (commission["amount"], commission["kind"]) == ("10.00", "accrual")


async def test_agents_created_after_connecting_are_followed(
    client: AsyncClient, base_url: str, redis_url: str
) -> None:
    world = await build_world(client)
    async with AsyncClient(base_url=base_url, timeout=10) as http:
        stream, context = await open_stream(http, "/v1/live", bearer(world.tokens["manager"]))
        newcomer = await create_agent(
            client, world.tokens["owner"], unit_id=world.team_unit_id, name="New"
        )
        await asyncio.sleep(1.1)  # past the unknown-agent re-read interval
        c = conversion(newcomer)
        publish(redis_url, world.company_id, c)
        events = await stream.until(c.id)
        await context.__aexit__(None, None, None)
    assert events[-1][2]["agent_name"] == "New"


async def test_ticket_opens_one_stream_once(
    client: AsyncClient, base_url: str, redis_url: str
) -> None:
    world = await build_world(client)
    issued = await client.post("/v1/live/tickets", headers=bearer(world.tokens["agent"]))
    assert issued.status_code == 201, issued.text
    ticket = issued.json()["ticket"]
    assert issued.json()["expires_in"] == 30
    async with AsyncClient(base_url=base_url, timeout=10) as http:
        stream, context = await open_stream(http, f"/v1/live?ticket={ticket}")
        c = conversion(world.own_agent_id)
        publish(redis_url, world.company_id, conversion(world.team_agent_id), c)
        events = await stream.until(c.id)
        assert [i for e, i, _ in events if e == "conversion"] == [c.id]  # the agent's scope
        await context.__aexit__(None, None, None)
        again = await http.get(f"/v1/live?ticket={ticket}")
        assert again.status_code == 401
        assert again.headers["content-type"] == "application/problem+json"
        assert (await http.get("/v1/live?ticket=lvt_made-up")).status_code == 401
        assert (await http.get("/v1/live")).status_code == 401
    assert (await client.post("/v1/live/tickets")).status_code == 401


async def test_idle_stream_sends_heartbeats_and_disconnect_releases_it(
    client: AsyncClient, app: FastAPI, base_url: str
) -> None:
    world = await build_world(client)
    hub = app.state.live_hub
    hub.heartbeat_seconds = 0.2
    async with AsyncClient(base_url=base_url, timeout=10) as http:
        stream, context = await open_stream(http, "/v1/live", bearer(world.tokens["observer"]))
        assert hub.subscriber_count == 1
        async for line in stream.lines:
            if line.startswith(":"):
                break
        await context.__aexit__(None, None, None)
    deadline = time.monotonic() + 10
    while hub.subscriber_count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert hub.subscriber_count == 0


@pytest.fixture
def api_process(
    api_settings: Settings, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    env = {
        **os.environ,
        "REFSTREAM_POSTGRES_URL": api_settings.postgres_url,
        "REFSTREAM_REDIS_URL": api_settings.redis_url,
        "REFSTREAM_JWT_SECRET": api_settings.jwt_secret.get_secret_value(),
    }
    log_path = tmp_path / "api.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready("api", lambda: _healthy(url), 60, proc)
        yield proc, url, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _healthy(url: str) -> str | None:
    try:
        return None if httpx.get(f"{url}/healthz").status_code == 200 else "not yet"
    except httpx.HTTPError as exc:
        return str(exc)


async def test_sigterm_ends_open_streams_and_the_server_exits(
    client: AsyncClient, api_process: tuple[subprocess.Popen[bytes], str, Path]
) -> None:
    proc, url, log_path = api_process
    world = await build_world(client)
    async with AsyncClient(base_url=url, timeout=10) as http:
        stream, context = await open_stream(http, "/v1/live", bearer(world.tokens["owner"]))
        proc.send_signal(signal.SIGTERM)
        event, _, data = await asyncio.wait_for(stream.next_event(), 10)
        assert (event, data) == ("end", {"reason": "shutdown"})
        with pytest.raises(EOFError):
            await asyncio.wait_for(stream.next_event(), 10)
        await context.__aexit__(None, None, None)
    # Without the stop flag uvicorn would wait forever for the open stream to close. It exits
    # through its own graceful path (lifespan shutdown ran), re-raising the SIGTERM it caught.
    assert await asyncio.to_thread(proc.wait, 20) in (0, -signal.SIGTERM)
    log = log_path.read_text()
    assert "Application shutdown complete" in log, log
