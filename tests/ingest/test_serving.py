"""`ingest.serving`: uvicorn's protocol with a loop turn's writes joined into one."""

from __future__ import annotations

import asyncio
from typing import Any

from ingest.serving import _OneWrite


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

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
