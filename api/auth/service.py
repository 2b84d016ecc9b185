"""Login, refresh-token rotation with reuse detection, logout.

Each login starts a refresh-token family. A refresh marks the presented token rotated and issues
its successor in the same family. Presenting a rotated token again means it leaked (or the
client raced itself): the whole family is revoked and the error keeps that revocation committed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.auth import passwords, repository, tokens
from api.auth.ratelimit import LoginAttempt, LoginLimits, check_login_rate, count_login_failure
from api.auth.schemas import LoginRequest, TokenPair
from api.context import RequestMeta
from api.errors import Unauthorized
from api.models import RefreshToken, User
from schemas.ids import random_id
from schemas.settings import Settings


class RefreshTokenReused(Unauthorized):
    type = "refresh-token-reused"
    title = "Refresh token reused"
    commit_transaction: ClassVar[bool] = True


async def login(
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
    body: LoginRequest,
    meta: RequestMeta,
) -> TokenPair:
    attempt = LoginAttempt(body.company, body.email, meta.source_ip or "unknown")
    limits = LoginLimits.from_settings(settings)
    await check_login_rate(redis, attempt, limits)
    user = await repository.user_by_login(session, company_slug=body.company, email=body.email)
    password_hash = user.password_hash if user and not user.disabled else None
    if user is None or not passwords.verify_password(password_hash, body.password):
        await count_login_failure(redis, attempt, limits)
        raise Unauthorized("Invalid company, email or password.")
    if password_hash and passwords.needs_rehash(password_hash):
        user.password_hash = passwords.hash_password(body.password)
    pair, token = await _issue(session, settings, user, family_id=random_id("rtf"), meta=meta)
    await _audit(session, user, meta, "auth.login", token)
    return pair


async def refresh(
    session: AsyncSession, settings: Settings, presented: str, meta: RequestMeta
) -> TokenPair:
    token = await repository.refresh_token_for_update(session, tokens.secret_hash(presented))
    if token is None or token.revoked_at is not None:
        raise Unauthorized("Unknown or revoked refresh token.")
    if token.rotated_at is not None:
        await repository.revoke_family(session, family_id=token.family_id, now=meta.now)
        await record(
            session,
            tenant_id=token.tenant_id,
            actor=f"user:{token.user_id}",
            action="auth.refresh_reuse",
            entity_type="refresh_token_family",
            entity_id=token.family_id,
            before=None,
            after={"revoked_at": meta.now, "reused_token_id": token.id},
            meta=meta,
        )
        raise RefreshTokenReused("This refresh token was already used; its session is revoked.")
    if token.expires_at <= meta.now:
        raise Unauthorized("The refresh token has expired.")
    user = await repository.active_user(session, user_id=token.user_id, tenant_id=token.tenant_id)
    if user is None:
        raise Unauthorized("The user no longer exists or is disabled.")
    token.rotated_at = meta.now
    pair, successor = await _issue(session, settings, user, family_id=token.family_id, meta=meta)
    await _audit(session, user, meta, "auth.refresh", successor)
    return pair


async def logout(session: AsyncSession, presented: str, meta: RequestMeta) -> None:
    """Revoke the token's family. Unknown or already revoked tokens are a no-op."""
    token = await repository.refresh_token_for_update(session, tokens.secret_hash(presented))
    if token is None or token.revoked_at is not None:
        return
    await repository.revoke_family(session, family_id=token.family_id, now=meta.now)
    await record(
        session,
        tenant_id=token.tenant_id,
        actor=f"user:{token.user_id}",
        action="auth.logout",
        entity_type="refresh_token_family",
        entity_id=token.family_id,
        before=None,
        after={"revoked_at": meta.now},
        meta=meta,
    )


async def _issue(
    session: AsyncSession, settings: Settings, user: User, *, family_id: str, meta: RequestMeta
) -> tuple[TokenPair, RefreshToken]:
    access, _ = tokens.issue_access_token(
        user_id=user.id,
        tenant_id=user.tenant_id,
        secret=settings.jwt_secret.get_secret_value(),
        issuer=settings.jwt_issuer,
        ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        now=meta.now,
        family_id=family_id,
    )
    plaintext = tokens.new_refresh_token()
    token = RefreshToken(
        id=random_id("rt"),
        token_hash=tokens.secret_hash(plaintext),
        family_id=family_id,
        tenant_id=user.tenant_id,
        user_id=user.id,
        issued_at=meta.now,
        expires_at=meta.now + timedelta(seconds=settings.refresh_token_ttl_seconds),
    )
    session.add(token)
    await session.flush()
    pair = TokenPair(
        access_token=access,
        expires_in=settings.access_token_ttl_seconds,
        refresh_token=plaintext,
        refresh_expires_in=settings.refresh_token_ttl_seconds,
    )
    return pair, token


async def _audit(
    session: AsyncSession, user: User, meta: RequestMeta, action: str, token: RefreshToken
) -> None:
    await record(
        session,
        tenant_id=user.tenant_id,
        actor=f"user:{user.id}",
        action=action,
        entity_type="refresh_token_family",
        entity_id=token.family_id,
        before=None,
        after={"token_id": token.id, "expires_at": token.expires_at},
        meta=meta,
    )
