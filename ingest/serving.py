"""uvicorn's HTTP/1.1 protocol (httptools) with one write per answer.

uvicorn writes an answer's status line and headers (`http.response.start`) and its body
(`http.response.body`) to the transport as they come: two `send` system calls for every answer,
each waking the client. Here a connection's writes of one event-loop turn are joined and written
once, at the end of the turn (`loop.call_soon`), so an answer leaves in one system call and
one TCP segment when it fits. Everything else is uvicorn's own: parsing, keep-alive, flow
control (the real transport's buffer still pauses and resumes the protocol), timeouts.

The hot path may also write an answer whole (`write_answer`, below) instead of as two ASGI
messages that uvicorn's `send` checks and spells header by header.

`refstream ingest serve` runs uvicorn with it (`http="ingest.serving:OneWriteHttpToolsProtocol"`).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)


class _OneWrite:
    """The connection's transport, with the writes of one loop turn joined into one."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            pending.append(data)

    def write_now(self, data: bytes) -> None:
        """`data` written at once, after what this turn wrote before it: an answer that
        leaves whole needs no joining (and no loop callback to join it)."""
        if self._pending is not None:
            self.write(data)
        elif not self._transport.is_closing():
            self._transport.write(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()  # what was written goes out before the close, as with the transport
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    # Asked by uvicorn on every answer (`on_response_complete`) and on flow control: spelled
    # here, not found by a failed attribute lookup and `__getattr__`.
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, self.loop))  # type: ignore[arg-type]


# --- answers written whole -------------------------------------------------------------------
#
# uvicorn's `RequestResponseCycle.send` takes an answer as two ASGI messages (dicts) and, for
# every header, runs two regular expressions, lower-cases the name and compares it with three
# names it handles itself: about a third of a click's server-side Python besides the app's own
# (bench.ingress_cpu under cProfile). The hot path (`ingest.hot`) knows its answers: the names
# are its own constants and only a few values vary. `write_answer` lets it hand over the head's
# header lines already spelled, and does the bookkeeping `send` would have done for an answer
# with a Content-Length (the keep-alive decision, `Connection: close`, HEAD, completion, the
# next pipelined request). Whatever it is not sure of goes back to `send` (it answers False).

# uvicorn's own checks of a header line, for the server's default headers (the `date` header,
# renewed every second, and any `--header`): run once per list, not per answer.
_DEFAULT_HEADERS: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")


def _default_head(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The server's default header lines, spelled once per list (uvicorn replaces the list
    when the date changes); None if uvicorn's own checks would refuse one."""
    global _DEFAULT_HEADERS
    cached, head = _DEFAULT_HEADERS
    if cached is headers:
        return head
    lines = []
    for name, value in headers:
        name = name.lower()
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value) or name in _FRAMING:
            return None
        lines.append(name + b": " + value + b"\r\n")
    head = b"".join(lines)
    _DEFAULT_HEADERS = (headers, head)
    return head


# Names whose header uvicorn's `send` acts on: never in a head written whole.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})


@functools.lru_cache(maxsize=256)
def header_name(name: str) -> bytes | None:
    """`name` as a header line's start (`b"name: "`, lower-case), checked with uvicorn's own
    expression once per name; None for a name `write_answer` must not take (invalid, or one
    of the framing headers uvicorn's `send` handles itself)."""
    try:
        encoded = name.lower().encode("latin-1")
    except UnicodeEncodeError:
        return None
    if not encoded or HEADER_RE.search(encoded) or encoded in _FRAMING:
        return None
    return encoded + b": "


def header_value(value: str) -> bytes | None:
    """`value` as header bytes if it is plainly safe: printable (no CR, LF, NUL or any other
    control character, tab included) and Latin-1; None otherwise (the caller then leaves the
    answer to uvicorn's `send`, which checks it its own way). One C call for the usual value,
    instead of a regular expression."""
    if not value.isprintable():
        return None
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return None


def write_answer(send: Any, status: int, head: bytes, body: bytes) -> bool:
    """Write a whole answer on the connection `send` belongs to, if it is one of
    `OneWriteHttpToolsProtocol`'s: the status line, the server's default headers, `head`
    (header lines, each `b"name: value\\r\\n"`, spelled with `header_name` and `header_value`,
    starting with a `content-length` line that is `len(body)`) and `body`. False, with nothing
    written, when `send` must do it: another server, an answer already started, a connection
    whose writes are paused (`send` waits for the drain) or lost, the access log on.

    The rest is what `RequestResponseCycle.send` does for such an answer: a connection that is
    not kept alive gets `connection: close` and is closed after it, a HEAD request gets no
    body, and the cycle is completed (its `receive` answers `http.disconnect`, the next
    pipelined request starts, the keep-alive timer is armed)."""
    cycle = getattr(send, "__self__", None)
    if (
        type(cycle) is not RequestResponseCycle
        or type(cycle.transport) is not _OneWrite  # type: ignore[comparison-overlap]
        or cycle.response_started
        or cycle.disconnected
        or cycle.flow.write_paused
        or cycle.access_log
    ):
        return False
    cached, default = _DEFAULT_HEADERS  # (`_default_head`'s own look, without the call)
    if cached is not cycle.default_headers:
        default = _default_head(cycle.default_headers)
        if default is None:
            return False
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    keep_alive = cycle.keep_alive
    parts = [STATUS_LINE[status], default, head]
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if body and cycle.scope["method"] != "HEAD":
        parts.append(body)
    transport: _OneWrite = cycle.transport
    if transport._pending is None and not transport._transport.is_closing():
        transport._transport.write(b"".join(parts))  # `write_now`'s usual case, without the call
    else:
        transport.write_now(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True
