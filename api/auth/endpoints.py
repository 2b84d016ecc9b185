from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from redis.asyncio import Redis

from api.auth import service
from api.auth.schemas import LoginRequest, RefreshRequest, TokenPair
from api.context import Meta
from api.db import WriteSession
from api.kit.headers import no_store
from schemas.settings import Settings

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/login",
    operation_id="auth.login",
    summary="Email + password -> access token + refresh token",
    dependencies=[Depends(no_store)],
)
async def login(
    request: Request, body: LoginRequest, session: WriteSession, meta: Meta
) -> TokenPair:
    settings: Settings = request.app.state.settings
    redis: Redis = request.app.state.redis
    return await service.login(session, redis, settings, body, meta)


@router.post(
    "/refresh",
    operation_id="auth.refresh",
    summary="Rotate a refresh token (reuse revokes its whole family)",
    dependencies=[Depends(no_store)],
)
async def refresh(
    request: Request, body: RefreshRequest, session: WriteSession, meta: Meta
) -> TokenPair:
    settings: Settings = request.app.state.settings
    return await service.refresh(session, settings, body.refresh_token, meta)


@router.post(
    "/logout",
    operation_id="auth.logout",
    status_code=204,
    summary="Revoke a refresh token and its family",
)
async def logout(body: RefreshRequest, session: WriteSession, meta: Meta) -> Response:
    await service.logout(session, body.refresh_token, meta)
    return Response(status_code=204)
