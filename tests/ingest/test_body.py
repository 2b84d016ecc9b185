"""`read_json_body` reads the hot path's ASGI body (`ASGIBody`) as it reads any `BodyStream`."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from ingest.endpoints import ASGIBody, Refused, read_json_body

HEADERS = {"content-type": "application/json"}


def receiving(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def body(chunk: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": chunk, "more_body": more}


@pytest.mark.parametrize("direct", [True, False])
async def test_the_chunks_are_joined_either_way(direct: bool) -> None:
    stream = ASGIBody(receiving(body(b'{"a":', True), body(b"", True), body(b"1}")))
    read = stream if direct else (lambda: stream())  # not an ASGIBody: its async generator
    assert await read_json_body(HEADERS, read, 100) == b'{"a":1}'
    one = ASGIBody(receiving(body(b"{}")))
    assert await read_json_body(HEADERS, one if direct else (lambda: one()), 100) == b"{}"


@pytest.mark.parametrize("direct", [True, False])
async def test_a_body_beyond_the_limit_across_chunks_is_refused(direct: bool) -> None:
    stream = ASGIBody(receiving(body(b"x" * 6, True), body(b"x" * 6)))
    with pytest.raises(Refused) as refused:
        await read_json_body(HEADERS, stream if direct else (lambda: stream()), 10)
    assert refused.value.status == 413


@pytest.mark.parametrize("direct", [True, False])
async def test_a_disconnect_is_a_client_disconnect(direct: bool) -> None:
    stream = ASGIBody(receiving(body(b"{", True), {"type": "http.disconnect"}))
    with pytest.raises(ClientDisconnect):
        await read_json_body(HEADERS, stream if direct else (lambda: stream()), 100)


@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON ; charset=utf-8", "application/json;"]
)
async def test_content_types_accepted_as_before(content_type: str) -> None:
    stream = ASGIBody(receiving(body(b"{}")))
    assert await read_json_body({"content-type": content_type}, stream, 100) == b"{}"


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/jsonx"])
async def test_other_content_types_are_refused(content_type: str) -> None:
    with pytest.raises(Refused) as refused:
        await read_json_body({"content-type": content_type}, ASGIBody(receiving()), 100)
    assert refused.value.status == 415
