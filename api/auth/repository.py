"""Queries of the auth domain: users by login, grants, refresh tokens, API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import ReadSession
from api.models import ApiKey, Membership, RefreshToken, Tenant, Unit, User


async def user_by_login(session: ReadSession, *, company_slug: str, email: str) -> User | None:
    statement = (
        select(User)
        .join(Tenant, Tenant.id == User.tenant_id)
        .where(Tenant.slug == company_slug, User.email == email.strip().lower())
    )
    user: User | None = await session.scalar(statement)
    return user


async def active_user(session: ReadSession, *, user_id: str, tenant_id: str) -> User | None:
    user: User | None = await session.scalar(
        select(User).where(User.id == user_id, User.tenant_id == tenant_id, ~User.disabled)
    )
    return user


async def user_grants(
    session: ReadSession, *, user_id: str, tenant_id: str
) -> list[tuple[str, str, str]]:
    """(unit_id, unit_path, role) of every membership of the user in the tenant."""
    result = await session.execute(
        select(Membership.unit_id, Unit.path, Membership.role)
        .join(Unit, Unit.id == Membership.unit_id)
        .where(Membership.user_id == user_id, Unit.tenant_id == tenant_id)
    )
    return [(unit_id, path, role) for unit_id, path, role in result.all()]


async def api_key_with_unit(session: ReadSession, key_hash: str) -> tuple[ApiKey, str] | None:
    result = await session.execute(
        select(ApiKey, Unit.path)
        .join(Unit, Unit.id == ApiKey.unit_id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    row = result.first()
    if row is None:
        return None
    api_key, unit_path = row
    return api_key, unit_path


async def refresh_token_for_update(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    token: RefreshToken | None = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
    )
    return token


async def family_revoked(session: ReadSession, family_id: str) -> bool:
    """Whether the refresh-token family (a login session) was revoked (logout, reuse, disable)."""
    revoked: bool = await session.scalar(
        select(
            exists().where(
                RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_not(None)
            )
        )
    )
    return revoked


async def revoke_user_families(session: AsyncSession, *, user_id: str, now: datetime) -> int:
    """Revoke every live refresh token of the user; the number revoked."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def revoke_family(session: AsyncSession, *, family_id: str, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
