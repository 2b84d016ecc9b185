"""Conditional GETs: every successful JSON GET carries an `ETag`, and `If-None-Match` with a
current tag answers 304 without a body (a phone re-validates a list instead of re-downloading it).

The tag is a digest of the exact bytes the caller would receive, so it is correct under
concurrent writes by construction: a write committed before the read changes the bytes and the
tag; a read that raced a write gives the tag of what it returned. Routes that set their own
`ETag` (CRUD items: the digest of the representation, also used by `If-Match`) keep it.
The cost is one hash over the body; the database work of the GET still happens.
"""

from __future__ import annotations

import hashlib

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_DROPPED_ON_304 = frozenset({"content-length", "content-type"})


def body_etag(body: bytes) -> str:
    """A strong ETag (quoted) of a response body."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str, etag: str) -> bool:
    """Whether an `If-None-Match` value names `etag` (weak comparison, RFC 9110 13.1.2)."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


class ConditionalGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if_none_match = Headers(scope=scope).get("if-none-match")
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffered(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = Headers(raw=message["headers"]).get("content-type", "")
                if message["status"] == 200 and content_type.startswith("application/json"):
                    start = message
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._answer(start, b"".join(chunks), if_none_match, send)

        await self.app(scope, receive, buffered)

    @staticmethod
    async def _answer(start: Message, body: bytes, if_none_match: str | None, send: Send) -> None:
        headers = MutableHeaders(scope=start)
        etag = headers.get("etag") or body_etag(body)
        headers["ETag"] = etag
        headers.setdefault("Cache-Control", "private, no-cache")
        if if_none_match is None or not matches(if_none_match, etag):
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        kept = [(k, v) for k, v in start["headers"] if k.decode("latin-1") not in _DROPPED_ON_304]
        await send({"type": "http.response.start", "status": 304, "headers": kept})
        await send({"type": "http.response.body", "body": b""})
