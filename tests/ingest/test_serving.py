"""`ingest.serving`: uvicorn's protocol with a loop turn's writes joined into one, and answers
written whole by the hot path (`write_answer`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from ingest import hot, serving
from ingest.endpoints import Answer
from ingest.serving import OneWriteHttpToolsProtocol, _OneWrite


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.1", 5000)}.get(name, default)


async def test_the_writes_of_one_loop_turn_leave_in_one_write_in_order() -> None:
    transport = RecordingTransport()
    joined = _OneWrite(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    joined.write(b"{}")
    assert transport.writes == []  # not yet: at the end of the turn
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    joined.write(b"next")
    await asyncio.sleep(0)
    assert transport.writes[1:] == [b"next"]
    assert joined.get_extra_info("peername") == ("192.0.2.1", 5000)  # the rest is the transport's


async def test_close_sends_what_was_written_first_and_abort_drops_it() -> None:
    transport = RecordingTransport()
    joined = _OneWrite(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    joined.write(b"answer")
    joined.close()
    assert transport.writes == [b"answer"]
    assert transport.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert transport.writes == [b"answer"]

    transport = RecordingTransport()
    joined = _OneWrite(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    joined.write(b"answer")
    joined.abort()
    await asyncio.sleep(0)
    assert transport.writes == []
    assert transport.aborted


# --- answers written whole (`write_answer`, through the hot path's `_send`) ---------------------

DATE = (b"date", b"Mon, 07 Dec 2026 19:00:00 GMT")
REDIRECT = Answer(302, b"", None, (
    ("location", "https://shop.example/landing?utm_source=refstream&rs_click=clk_1"),
    ("cache-control", "no-store"),
    ("set-cookie", "rs_vid=v1; HttpOnly; Max-Age=2592000; Path=/; SameSite=lax"),
    ("set-cookie", "rs_click=clk_1; HttpOnly; Max-Age=2592000; Path=/; SameSite=lax"),
))  # fmt: skip
ANSWERS = [
    REDIRECT,
    Answer(200, b'{"status":"accepted","event_id":"evt_1"}'),
    Answer(503, b'{"code":"broker"}', "application/problem+json", (("Retry-After", "5"),)),
]


class AnswerApp:
    """Answers every request with `answer` through the hot path's `_send` (whole, when it can)
    or its `_send_messages` (uvicorn's `send`, header by header)."""

    def __init__(self, answer: Answer, whole: bool, request_id: str = "req-1") -> None:
        self.answer, self.whole, self.request_id = answer, whole, request_id
        self.written_whole: list[bool] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.whole:
            head = hot._head(self.answer, self.request_id)
            done = head is not None and serving.write_answer(
                send, self.answer.status, head, self.answer.body
            )
            self.written_whole.append(done)
            if not done:
                await hot._send_messages(send, self.answer, self.request_id)
        else:
            await hot._send_messages(send, self.answer, self.request_id)


async def serve(app: Any, data: bytes, *, turns: int = 10) -> tuple[RecordingTransport, Any]:
    """`data` received on a new connection of the ingress's protocol; what it wrote."""
    config = Config(app=app, lifespan="off", http=OneWriteHttpToolsProtocol, log_level="warning",
                    access_log=False, proxy_headers=False, server_header=False)  # fmt: skip
    config.load()
    state = ServerState()
    state.default_headers = [DATE]
    transport = RecordingTransport()
    protocol = OneWriteHttpToolsProtocol(config, state, {}, asyncio.get_running_loop())
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(data)
    for _ in range(turns):
        await asyncio.sleep(0)
    return transport, protocol


GET = b"GET /r/code HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_an_answer_written_whole_is_on_the_wire_as_uvicorn_writes_it() -> None:
    whole = AnswerApp(REDIRECT, whole=True)
    transport, protocol = await serve(whole, GET)
    assert whole.written_whole == [True]
    assert b"".join(transport.writes) == (
        b"HTTP/1.1 302 Found\r\n"
        b"date: Mon, 07 Dec 2026 19:00:00 GMT\r\n"
        b"content-length: 0\r\n"
        b"location: https://shop.example/landing?utm_source=refstream&rs_click=clk_1\r\n"
        b"cache-control: no-store\r\n"
        b"set-cookie: rs_vid=v1; HttpOnly; Max-Age=2592000; Path=/; SameSite=lax\r\n"
        b"set-cookie: rs_click=clk_1; HttpOnly; Max-Age=2592000; Path=/; SameSite=lax\r\n"
        b"x-request-id: req-1\r\n"
        b"x-content-type-options: nosniff\r\n"
        b"x-frame-options: DENY\r\n"
        b"referrer-policy: strict-origin-when-cross-origin\r\n"
        b"\r\n"
    )
    assert not transport.closed
    assert protocol.cycle.response_complete
    assert protocol.timeout_keep_alive_task is not None  # kept alive, its timer armed


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: str(a.status))
@pytest.mark.parametrize(
    "request_bytes",
    [
        GET,
        b"GET /r/code HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /r/code HTTP/1.0\r\nHost: x\r\n\r\n",
        b"HEAD /r/code HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["keep-alive", "connection-close", "http-1.0", "head", "post"],
)
async def test_written_whole_or_by_uvicorn_the_same_bytes_and_the_same_connection(
    answer: Answer, request_bytes: bytes
) -> None:
    whole = AnswerApp(answer, whole=True)
    by_whole, _ = await serve(whole, request_bytes)
    by_uvicorn, _ = await serve(AnswerApp(answer, whole=False), request_bytes)
    assert whole.written_whole == [True]
    assert b"".join(by_whole.writes) == b"".join(by_uvicorn.writes)
    assert by_whole.closed == by_uvicorn.closed == (b"close" in request_bytes or
                                                    b"HTTP/1.0" in request_bytes)  # fmt: skip
    if request_bytes.startswith(b"HEAD"):
        assert b"".join(by_whole.writes).endswith(b"\r\n\r\n")  # no body


async def test_pipelined_requests_after_an_answer_written_whole_are_answered_in_order() -> None:
    class Numbered:
        calls = 0

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            self.calls += 1
            answer = Answer(200, b'{"n":%d}' % self.calls)
            head = hot._head(answer, "r")
            assert head is not None
            assert serving.write_answer(send, 200, head, answer.body)

    transport, _ = await serve(Numbered(), GET * 3, turns=30)
    wire = b"".join(transport.writes)
    assert wire.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert wire.index(b'{"n":1}') < wire.index(b'{"n":2}') < wire.index(b'{"n":3}')
    assert not transport.closed


@pytest.mark.parametrize(
    "value", ["a\r\nset-cookie: stolen=1", "a\nb", "a\rb", "a\x00b", "a\x7fb", "a\tb", "\u0100"]
)
async def test_a_value_not_plainly_safe_is_never_written_whole(value: str) -> None:
    """CR/LF (header injection), other control characters or a value beyond Latin-1: left to
    uvicorn's `send`, which refuses it (RuntimeError: nothing of the answer is written) or, for
    a tab or a character it accepts, writes it its own way."""
    assert serving.header_value(value) is None
    for answer, request_id in [
        (Answer(302, b"", None, (("location", value),)), "r"),
        (Answer(200, b"{}"), value),
    ]:
        assert hot._head(answer, request_id) is None
        app = AnswerApp(answer, whole=True, request_id=request_id)
        transport, _ = await serve(app, GET)
        assert app.written_whole == [False]
        assert b"stolen" not in b"".join(transport.writes)


def test_framing_and_invalid_header_names_are_not_written_whole() -> None:
    for name in ("Content-Length", "transfer-encoding", "Connection", "bad name", "a:b", ""):
        assert serving.header_name(name) is None
        assert hot._head(Answer(200, b"", None, ((name, "1"),)), "r") is None
    assert serving.header_name("Retry-After") == b"retry-after: "


async def test_another_server_a_started_answer_or_paused_writes_go_through_send() -> None:
    async def plain_send(message: Any) -> None:  # not uvicorn's: an in-process ASGI client
        raise AssertionError("not called")

    assert not serving.write_answer(plain_send, 200, b"content-length: 0\r\n", b"")

    class Paused:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            send.__self__.flow.write_paused = True  # the transport's buffer is full
            self.whole = serving.write_answer(send, 200, b"content-length: 0\r\n", b"")
            send.__self__.flow.write_paused = False
            await hot._send_messages(send, Answer(200, b""), "r")
            self.again = serving.write_answer(send, 200, b"content-length: 0\r\n", b"")

    paused = Paused()
    transport, _ = await serve(paused, GET)
    assert not paused.whole
    assert not paused.again  # nothing written twice
    assert b"".join(transport.writes).count(b"HTTP/1.1") == 1


async def test_an_answer_written_whole_leaves_at_once_after_what_the_turn_wrote_before() -> None:
    transport = RecordingTransport()
    joined = _OneWrite(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    joined.write_now(b"answer 1")
    assert transport.writes == [b"answer 1"]  # no loop turn, no joining needed
    joined.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    joined.write_now(b"answer 2")
    assert transport.writes == [b"answer 1"]  # behind the pending write, in one
    await asyncio.sleep(0)
    assert transport.writes == [b"answer 1", b"HTTP/1.1 100 Continue\r\n\r\nanswer 2"]
    transport.closed = True
    joined.write_now(b"late")
    assert transport.writes[-1] == b"HTTP/1.1 100 Continue\r\n\r\nanswer 2"
