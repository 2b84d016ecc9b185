"""One Redis pub/sub connection per API process, fanned out to the process's live streams.

The hub pattern-subscribes to every tenant's live channel and hands each batch to the local
subscribers of that tenant (bounded queues: a stream that cannot keep up is told to resync
instead of holding memory). Its reader polls with a timeout and checks a stop flag, because
redis-py's `PubSub.get_message` can swallow task cancellation; `stop()` is also chained to the
server's SIGTERM/SIGINT handlers so open streams end *before* uvicorn waits for connections to
close (otherwise a graceful shutdown would wait forever on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import structlog
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from schemas.live import LIVE_CHANNEL_PREFIX, LiveBatch, tenant_of_channel

log = structlog.get_logger(__name__)

RESYNC = "resync"  # queued when updates may have been missed (overflow, Redis reconnect)


@dataclass(eq=False)
class Subscription:
    """One stream's view of a tenant's updates."""

    tenant_id: str
    queue: asyncio.Queue[LiveBatch | str] = field(
        default_factory=lambda: asyncio.Queue(maxsize=1000)
    )

    def offer(self, item: LiveBatch | str) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # Drop the backlog: the reader re-reads the totals on RESYNC anyway.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)

    async def next(self, timeout: float) -> LiveBatch | str | None:
        """The next item, or None after `timeout` seconds (cancellable)."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class LiveHub:
    def __init__(
        self, redis_url: str, *, poll_seconds: float = 0.5, heartbeat_seconds: float = 15.0
    ) -> None:
        self._redis_url = redis_url
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._subscribers: dict[str, set[Subscription]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.stopping = False

    def subscribe(self, tenant_id: str) -> Subscription:
        """A new subscription to `tenant_id`'s updates; starts the reader on first use."""
        if self._reader is None or self._reader.done():
            self._ready = asyncio.Event()
            # A context of its own: not the first subscriber's request id in every log line.
            self._reader = asyncio.create_task(
                self._read(), name="live-hub-reader", context=contextvars.Context()
            )
        sub = Subscription(tenant_id)
        self._subscribers.setdefault(tenant_id, set()).add(sub)
        return sub

    async def wait_ready(self, timeout: float) -> bool:
        """Whether the Redis subscription is active (so a publish from now on is seen)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self._ready.is_set()

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.tenant_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.tenant_id]

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def stop(self) -> None:
        """Ask the reader and every stream to end (safe from a signal handler)."""
        self.stopping = True

    async def close(self) -> None:
        self.stop()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, self.poll_seconds + 2)
            except TimeoutError:
                self._reader.cancel()

    def _dispatch(self, channel: bytes | str, data: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        tenant = tenant_of_channel(name)
        subs = self._subscribers.get(tenant or "")
        if not subs:
            return
        try:
            batch = LiveBatch.from_bytes(data)
        except ValidationError as exc:
            log.warning("live_message_unreadable", channel=name, error=str(exc)[:200])
            return
        for sub in list(subs):
            sub.offer(batch)

    def _broadcast(self, item: str) -> None:
        for subs in self._subscribers.values():
            for sub in list(subs):
                sub.offer(item)

    async def _read(self) -> None:
        failed = False
        while not self.stopping:
            client = Redis.from_url(self._redis_url)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(f"{LIVE_CHANNEL_PREFIX}*")
                self._ready.set()
                if failed:
                    log.info("live_hub_reconnected")
                    self._broadcast(RESYNC)  # updates published while we were away are lost
                    failed = False
                while not self.stopping:
                    message = await pubsub.get_message(timeout=self.poll_seconds)
                    if message is not None and message["type"] == "pmessage":
                        self._dispatch(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                self._ready.clear()
                if not failed:
                    log.warning("live_hub_redis_error", error=f"{type(exc).__name__}: {exc}")
                failed = True
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()


def stop_on_signals(hub: LiveHub) -> Callable[[], None]:
    """Chain `hub.stop()` before the server's SIGTERM/SIGINT handlers (when a server such as
    uvicorn installed callable ones, in the main thread); returns a function restoring them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Callable[[int, FrameType | None], object]] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(signum)
        if not callable(handler):
            continue
        previous[signum] = handler

        def chained(
            sig: int,
            frame: FrameType | None,
            _next: Callable[[int, FrameType | None], object] = handler,
        ) -> None:
            hub.stop()
            _next(sig, frame)

        signal.signal(signum, chained)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
