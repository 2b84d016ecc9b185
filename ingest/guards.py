"""Redis-backed guards on the hot path: rate limits, webhook deduplication, click duplicates.

Deduplication here is the fast path only; downstream stays idempotent on event ids, because a
delivery can race its own retry and Redis is not the money ledger.

**Without Redis the guards fail open**: a request is admitted (not rate-limited, not a known
duplicate), a click counts as the first, and `remember` is skipped, each counted in
`refstream_ingest_redis_unavailable_total{operation}` and logged. Accepting is safe: the dataflow
deduplicates by event id and the sinks are idempotent, so a duplicate let through changes no
total, while refusing would turn a cache outage into lost clicks (shoppers are redirected
anyway) and webhook retries. Rate limits are off for the outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import NoScriptError, RedisError

from ingest.metrics import REDIS_UNAVAILABLE
from ingest.resp import Commands, Unawaited

PREFIX = "refstream:ingest"
log = structlog.get_logger(__name__)


def _unavailable(operation: str, exc: BaseException) -> None:
    REDIS_UNAVAILABLE.labels(operation).inc()
    log.warning("ingest_redis_unavailable", operation=operation, error=str(exc)[:200])


@dataclass(frozen=True, slots=True)
class Admission:
    over_limit: bool
    duplicate: bool
    retry_after: int = 1


_ADMISSIONS = {
    (over, seen): Admission(over_limit=over, duplicate=seen)
    for over in (False, True)
    for seen in (False, True)
}
_ADMITTED = _ADMISSIONS[False, False]


def dedup_key(source: str, scope: str, delivery_id: str) -> str:
    return f"{PREFIX}:seen:{source}:{scope}:{delivery_id}"


class _Script:
    """A Lua script and its SHA-1. The guards run it by `EVALSHA` (one command, one reply to
    parse) and send it in full (`EVAL`) to a Redis that answers `NOSCRIPT`: spelled out in
    `first_click` itself, a coroutine less per request."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


# The window's holder of a visitor's click on a link (set if none), and the click's second
# identity remembered too (KEYS[2], when given).
_FIRST_CLICK = _Script(
    "redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) "
    "local holder = redis.call('GET', KEYS[1]) "
    "if KEYS[2] then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2]) end "
    "return holder"
)


async def admit(redis: Commands, *, scope: str, dedup: str, limit_per_second: int) -> Admission:
    """One round trip: count this request in the scope's one-second window; was it seen before?

    Native commands, not a script: `INCR` of the window and `EXISTS` of the delivery, written
    together (one loop turn's commands leave in one write) and answered together; the window's
    first request then sets its expiry (`EXPIRE … 2`, queued, its reply not awaited). Redis
    runs them in less CPU than the script's `EVALSHA` (docs/performance/ingress.md, Round 9).
    Unlike the script this is not one atomic step: a connection lost between the first count
    and its `EXPIRE` leaves that one window's key without an expiry (a few bytes, never read
    again: the window is in the key's name)."""
    window = int(time.time())
    rate_key = f"{PREFIX}:rate:{scope}:{window}"
    seen_reply = None
    try:
        counted = redis.call("INCR", rate_key)
        seen_reply = _queued(redis.call("EXISTS", dedup))
        count = await counted
        seen = await seen_reply
    except (RedisError, OSError) as exc:  # fail open (see the module docstring)
        if seen_reply is not None:  # the same outage: counted once
            seen_reply.add_done_callback(_settled)
        _unavailable("admit", exc)
        return _ADMITTED
    if count == 1:  # the window's first request: its key goes with the window
        _expire(redis, rate_key)
    # One of four answers, made once (a frozen dataclass costs ~0.6 µs to make).
    return _ADMISSIONS[count > limit_per_second, bool(seen)]


def _failed(operation: str) -> Unawaited:
    """The sink of an operation's replies that nobody awaits: a failure counted and logged as
    the operation's (fail open), anything else unexpected logged as an error."""

    def failed(exc: BaseException) -> None:
        if isinstance(exc, (RedisError, OSError)):
            _unavailable(operation, exc)
        else:
            log.error("ingest_redis_command_failed", operation=operation, error=repr(exc)[:200])

    return Unawaited(failed)


_ADMIT_REPLIES = _failed("admit")
_REMEMBER_REPLIES = _failed("remember")


def _expire(redis: Commands, rate_key: str) -> None:
    try:
        redis.send(_ADMIT_REPLIES, "EXPIRE", rate_key, 2)
    except (RedisError, OSError) as exc:
        _unavailable("admit", exc)


def remember(redis: Commands, dedup: str, ttl_seconds: int) -> None:
    """Mark a delivery as written to Kafka (after the broker's ack, never before).

    Not awaited: the `SET` is queued on this worker's Redis connection (ahead of every later
    command of the worker, so its own next `admit` sees it) and written within the loop turn,
    and the answer does not wait for Redis's reply, which used to add a third round trip to
    every accepted webhook. A failed reply is counted and logged as before (fail open)."""
    try:
        redis.send(_REMEMBER_REPLIES, "SET", dedup, "1", "EX", ttl_seconds)
    except (RedisError, OSError) as exc:
        _unavailable("remember", exc)


async def first_click(
    redis: Commands,
    fingerprint: str,
    window_seconds: int,
    click_id: str,
    also: str | None = None,
) -> bool:
    """True for the first click of a visitor on a link within the window; later ones are dups.
    The window remembers the first click's id, so a re-delivery of that same click (a retried
    pixel batch: same `client_event_id`, same id) is never a duplicate of itself. `also` is a
    second identity of the same click remembered for the window (a visitor id just given to the
    browser, so its next click is judged by it).

    Still the script (`EVALSHA`): native `SET … NX GET EX` with the second identity's `SET`
    queued beside it cost Redis about half the CPU in a one-off, but the bench showed no gain
    for clicks (docs/performance/ingress.md, Round 9), so it was not kept."""
    key = f"{PREFIX}:click:{fingerprint}"
    args: tuple[str | int, ...] = (
        (1, key, click_id, window_seconds)
        if also is None
        else (2, key, f"{PREFIX}:click:{also}", click_id, window_seconds)
    )
    try:
        try:
            holder = await redis.call("EVALSHA", _FIRST_CLICK.sha, *args)
        except NoScriptError:
            holder = await redis.call("EVAL", _FIRST_CLICK.source, *args)
    except (RedisError, OSError) as exc:  # fail open (see the module docstring)
        _unavailable("first_click", exc)
        return True
    return bool(holder == click_id.encode())


def _queued(reply: Any) -> asyncio.Future[Any]:
    """A reply as a future (the pipelined connection's already is; another client's coroutine
    is scheduled now, so that its command is sent whether or not anyone awaits it)."""
    return reply if isinstance(reply, asyncio.Future) else asyncio.ensure_future(reply)


def _settled(reply: asyncio.Future[Any]) -> None:
    """A reply nobody needs: its error, if any, retrieved (already counted)."""
    if not reply.cancelled():
        reply.exception()
