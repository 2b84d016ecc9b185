from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth.dependencies import ApiKeyHeader, BearerCredentials, authenticate
from api.authz.dependencies import Authorized
from api.authz.policies import Principal, can_anywhere
from api.errors import Forbidden
from api.kit.headers import no_store
from api.live import service
from api.live.hub import LiveHub
from api.live.schemas import LiveTicket

router = APIRouter(tags=["live"])

LiveRead = Annotated[Principal, Depends(Authorized(service.PERMISSION))]

EVENT_STREAM = "text/event-stream"
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `ready`, then `conversion` and `commission` events "
        "(each with `id:`), `resync`, `end`; `: ping` comments when idle.",
        "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
    }
}


def _maker(request: Request) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return maker


async def _live_principal(
    request: Request,
    bearer: BearerCredentials,
    api_key: ApiKeyHeader,
    ticket: Annotated[
        str | None,
        Query(max_length=100, description="One-time ticket from POST /v1/live/tickets."),
    ] = None,
) -> Principal:
    if ticket is not None:
        principal = await service.redeem_ticket(request.app.state.redis, _maker(request), ticket)
        request.state.principal_actor = principal.actor
    else:
        principal = await authenticate(request, bearer, api_key)
    if not can_anywhere(principal, service.PERMISSION):
        raise Forbidden(f"This operation needs the `{service.PERMISSION}` permission.")
    return principal


@router.post(
    "/live/tickets",
    operation_id="live.create_ticket",
    status_code=201,
    summary="A one-time ticket to open the live stream from a browser (EventSource)",
    dependencies=[Depends(no_store)],
)
async def create_ticket(principal: LiveRead, request: Request) -> LiveTicket:
    redis: Redis = request.app.state.redis
    ticket = await service.issue_ticket(redis, principal)
    return LiveTicket(ticket=ticket, expires_in=service.TICKET_TTL_SECONDS)


@router.get(
    "/live",
    operation_id="live.stream",
    response_class=StreamingResponse,
    responses=_STREAM_DOC,
    summary="Live conversions and commission entries of the caller's scope (SSE)",
)
async def live(
    principal: Annotated[Principal, Depends(_live_principal)], request: Request
) -> StreamingResponse:
    hub: LiveHub = request.app.state.live_hub
    tracker = await service.open_scope(_maker(request), principal)
    return StreamingResponse(
        service.event_stream(hub, tracker),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
