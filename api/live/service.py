"""The live feed: one-time stream tickets, the caller's scope, and the event stream itself.

Browsers' `EventSource` cannot send an `Authorization` header, so a logged-in page first asks
`POST /v1/live/tickets` (bearer) for a random one-time ticket kept in Redis for
`TICKET_TTL_SECONDS`, and opens `GET /v1/live?ticket=…`. Only the ticket's SHA-256 is stored;
redeeming it deletes it (GETDEL), so a ticket leaked through a log or the browser history is
worthless once used or expired, and the long-lived access token never appears in a URL.
Clients that can set headers (mobile, server-side) use the bearer header directly.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth.dependencies import principal_for_user
from api.authz.policies import Principal, is_root_path, readable_scope
from api.errors import Unauthorized
from api.live import repository
from api.live.events import (
    LiveScope,
    SseEvent,
    frame,
    heartbeat_frame,
    retry_frame,
    unknown_agents,
    visible_events,
)
from api.live.hub import LiveHub
from schemas.live import LiveBatch

log = structlog.get_logger(__name__)

PERMISSION = "ledger.read"  # the feed shows conversions and commission: ledger data
TICKET_PREFIX = "lvt_"
TICKET_TTL_SECONDS = 30
SCOPE_REFRESH_SECONDS = 30.0  # grants and agents are re-read this often during a stream
UNKNOWN_AGENT_REFRESH_SECONDS = 1.0  # earliest re-read when an unknown agent shows up
_TICKET_KEY = "refstream:live-ticket:{digest}"


def _ticket_key(ticket: str) -> str:
    return _TICKET_KEY.format(digest=hashlib.sha256(ticket.encode()).hexdigest())


async def issue_ticket(redis: Redis, principal: Principal) -> str:
    """A one-time ticket standing for `principal` for `TICKET_TTL_SECONDS`."""
    ticket = TICKET_PREFIX + secrets.token_urlsafe(24)
    who = {
        "kind": principal.kind,
        "id": principal.id,
        "tenant_id": principal.tenant_id,
        "session_id": principal.session_id,
    }
    await redis.set(_ticket_key(ticket), orjson.dumps(who), ex=TICKET_TTL_SECONDS)
    return ticket


async def redeem_ticket(
    redis: Redis, maker: async_sessionmaker[AsyncSession], ticket: str
) -> Principal:
    """The principal of an unused, unexpired ticket (its grants read now), else `Unauthorized`."""
    raw = await redis.getdel(_ticket_key(ticket)) if ticket.startswith(TICKET_PREFIX) else None
    if raw is None:
        raise Unauthorized("Unknown, used or expired live ticket.")
    who = orjson.loads(raw)
    return await reload_principal(
        maker, who["kind"], who["id"], who["tenant_id"], session_id=who.get("session_id")
    )


async def reload_principal(
    maker: async_sessionmaker[AsyncSession],
    kind: str,
    principal_id: str,
    tenant_id: str,
    *,
    session_id: str | None = None,
) -> Principal:
    """The principal as the database says now (disabled users, revoked login sessions and
    revoked keys fail)."""
    async with maker() as session:
        try:
            if kind == "user":
                return await principal_for_user(
                    session, user_id=principal_id, tenant_id=tenant_id, family_id=session_id
                )
            found = await repository.api_key_principal(
                session, key_id=principal_id, tenant_id=tenant_id
            )
            if found is None:
                raise Unauthorized("The API key was revoked.")
            return found
        finally:
            await session.rollback()


async def load_scope(maker: async_sessionmaker[AsyncSession], principal: Principal) -> LiveScope:
    """Company-wide when the caller's reach includes the root unit; else the agents it reads."""
    scope = readable_scope(principal, PERMISSION)
    async with maker() as session:
        try:
            agents = await repository.readable_agents(session, principal, PERMISSION)
        finally:
            await session.rollback()
    company_wide = any(is_root_path(p) for p in scope.subtree_paths)
    return LiveScope(company_wide=company_wide, agents=agents)


@dataclass
class ScopeTracker:
    """The stream's current principal and scope, re-read from the database from time to time."""

    maker: async_sessionmaker[AsyncSession]
    principal: Principal
    scope: LiveScope
    clock: Callable[[], float] = time.monotonic
    loaded_at: float = 0.0
    # Agent ids looked up since the last full refresh and still not in scope (other units).
    checked: set[str] = field(default_factory=set)

    async def refresh(self) -> None:
        p = self.principal
        self.principal = await reload_principal(
            self.maker, p.kind, p.id, p.tenant_id, session_id=p.session_id
        )
        self.scope = await load_scope(self.maker, self.principal)
        self.loaded_at = self.clock()

    def age(self) -> float:
        return self.clock() - self.loaded_at

    def stale_for(self, item: LiveBatch | str | None) -> bool:
        """Whether to re-read grants and agents before handling `item`: periodically, and when
        the item names agents not looked up yet (created after the scope was read; at most
        once per `UNKNOWN_AGENT_REFRESH_SECONDS`)."""
        if self.age() >= SCOPE_REFRESH_SECONDS:
            self.checked.clear()
            return True
        if not isinstance(item, LiveBatch) or self.age() < UNKNOWN_AGENT_REFRESH_SECONDS:
            return False
        new = unknown_agents(item, self.scope) - self.checked
        self.checked |= new
        return bool(new)


async def open_scope(maker: async_sessionmaker[AsyncSession], principal: Principal) -> ScopeTracker:
    """The caller's scope, read before the response starts (so failures are plain 4xx/5xx)."""
    tracker = ScopeTracker(maker, principal, LiveScope(company_wide=False))
    await tracker.refresh()
    return tracker


async def event_stream(hub: LiveHub, tracker: ScopeTracker) -> AsyncIterator[bytes]:
    """`retry`, `ready`, then the caller's conversions and commission entries as they are
    written, heartbeat comments when idle, `resync` when updates may have been missed, and
    `end` before the server closes the stream (shutdown or revoked access). Ends when the
    client disconnects (cancellation) or the hub stops. `ready` is sent once the hub's Redis
    subscription is active: everything written after it is delivered."""
    sub = hub.subscribe(tracker.principal.tenant_id)
    try:
        await hub.wait_ready(timeout=2.0)
        yield retry_frame()
        yield frame(SseEvent("ready", _ready_data(tracker.scope)))
        last_sent = time.monotonic()
        while not hub.stopping:
            item = await sub.next(timeout=hub.poll_seconds)
            if tracker.stale_for(item):
                try:
                    await tracker.refresh()
                except Unauthorized:
                    yield frame(SseEvent("end", {"reason": "unauthorized"}))
                    return
            if item is None:
                if time.monotonic() - last_sent >= hub.heartbeat_seconds:
                    yield heartbeat_frame()
                    last_sent = time.monotonic()
                continue
            if isinstance(item, str):
                chunk = frame(SseEvent(item, {}))  # RESYNC
            else:
                chunk = b"".join(frame(e) for e in visible_events(item, tracker.scope))
            if chunk:
                yield chunk
                last_sent = time.monotonic()
        yield frame(SseEvent("end", {"reason": "shutdown"}))
    finally:
        hub.unsubscribe(sub)


def _ready_data(scope: LiveScope) -> dict[str, object]:
    return {"company_wide": scope.company_wide, "agents": len(scope.agents)}
