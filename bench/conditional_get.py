"""What conditional GETs cost and save (issue #18): the ETag middleware around a JSON page.

Run from the project root::

    .venv/bin/python -m bench.conditional_get [--items 50] [--repeat 5000]

An in-process ASGI app answers one list page (`--items` agent-shaped rows, rendered by the same
pydantic/FastAPI JSON path the API uses, once per request) three ways, in the same run: without
the middleware (the baseline), with it and no `If-None-Match` (200 + ETag: the cost of hashing
the body), and with a current `If-None-Match` (304: what a revalidating phone receives). It
prints the time per request and the bytes on the wire. The database work of a GET is not
included (it is the same with or without the middleware). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import UTC, datetime

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.agents.schemas import AgentRead
from api.conditional import ConditionalGetMiddleware


def page(items: int) -> ASGIApp:
    rows = [
        AgentRead(
            id=f"agt_{i:032x}",
            unit_id="unit_0123456789abcdef0123456789abcdef",
            user_id=None,
            parent_agent_id=None,
            name=f"Agent number {i}",
            email=f"agent{i}@example.com",
            status="active",
            created_at=datetime(2026, 12, 1, tzinfo=UTC),
        )
        for i in range(items)
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = {"items": [r.model_dump(mode="json") for r in rows], "next_cursor": None}
        await JSONResponse(body)(scope, receive, send)

    return app


async def call(app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> tuple[int, int, str]:
    """One GET; returns (status, body bytes, etag)."""
    scope: Scope = {"type": "http", "method": "GET", "path": "/v1/agents", "headers": headers}
    status, size, etag = 0, 0, ""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, size, etag
        if message["type"] == "http.response.start":
            status = message["status"]
            etag = dict(message["headers"]).get(b"etag", b"").decode()
        else:
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    return status, size, etag


async def timed(app: ASGIApp, headers: list[tuple[bytes, bytes]], repeat: int) -> float:
    """Median of 5 rounds of `repeat` calls, in microseconds per call."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            await call(app, headers)
        rounds.append((time.perf_counter() - started) / repeat * 1e6)
    return statistics.median(rounds)


async def main(items: int, repeat: int, load_before: str) -> None:
    bare = page(items)
    wrapped = ConditionalGetMiddleware(bare)
    _, bare_size, _ = await call(bare, [])
    status, size, etag = await call(wrapped, [])
    revalidate = [(b"if-none-match", etag.encode())]
    status_304, size_304, _ = await call(wrapped, revalidate)
    assert (status, status_304) == (200, 304)
    baseline = await timed(bare, [], repeat)
    with_tag = await timed(wrapped, [], repeat)
    not_modified = await timed(wrapped, revalidate, repeat)
    print(f"page of {items} agents, {repeat} requests x 5 rounds (median), in process")
    print(f"load average before: {load_before}")
    print(f"  baseline, no middleware     : {baseline:8.1f} us/request, {bare_size} body bytes")
    print(
        f"  200 + ETag (hash the body)  : {with_tag:8.1f} us/request, {size} body bytes "
        f"(+{with_tag - baseline:.1f} us)"
    )
    print(f"  304 (If-None-Match current) : {not_modified:8.1f} us/request, {size_304} body bytes")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    asyncio.run(main(args.items, args.repeat, load_before))
