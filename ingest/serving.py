"""uvicorn's HTTP/1.1 protocol (httptools) with one write per answer.

uvicorn writes an answer's status line and headers (`http.response.start`) and its body
(`http.response.body`) to the transport as they come: two `send` system calls for every answer,
each waking the client. Here a connection's writes of one event-loop turn are joined and written
once, at the end of the turn (`loop.call_soon`), so an answer leaves in one system call and
one TCP segment when it fits. Everything else is uvicorn's own: parsing, keep-alive, flow
control (the real transport's buffer still pauses and resumes the protocol), timeouts.

`refstream ingest serve` runs uvicorn with it (`http="ingest.serving:OneWriteHttpToolsProtocol"`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, self.loop))  # type: ignore[arg-type]
