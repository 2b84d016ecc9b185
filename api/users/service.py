"""User administration: only holders of `users.manage` on a unit grant roles on it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.auth.passwords import hash_password
from api.auth.repository import revoke_user_families
from api.authz.permissions import Role
from api.authz.policies import Principal, can
from api.context import RequestMeta
from api.errors import Conflict, Forbidden
from api.models import Membership, User
from api.snapshots import snapshot
from api.units.repository import UnitRepository
from api.users import repository
from api.users.repository import UserRepository
from api.users.schemas import MembershipRead, MembershipSet, UserCreate, UserRead
from schemas.ids import random_id


def to_read(principal: Principal, user: User) -> UserRead:
    visible = [
        MembershipRead(unit_id=m.unit_id, role=Role(m.role))
        for m in user.memberships
        if can(principal, "users.manage", m.unit.path)
    ]
    return UserRead(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        disabled=user.disabled,
        created_at=user.created_at,
        memberships=visible,
    )


async def _managed_unit_path(session: AsyncSession, principal: Principal, unit_id: str) -> str:
    unit = await UnitRepository(session, principal, "users.manage").get(unit_id)
    if not can(principal, "users.manage", unit.path):
        raise Forbidden("You cannot manage users of this unit.")
    return unit.path


async def create_user(
    session: AsyncSession, principal: Principal, body: UserCreate, meta: RequestMeta
) -> User:
    await _managed_unit_path(session, principal, body.unit_id)
    if await repository.email_taken(session, tenant_id=principal.tenant_id, email=body.email):
        raise Conflict(f"A user with email {body.email!r} exists.")
    user = User(
        id=random_id("usr"),
        tenant_id=principal.tenant_id,
        email=body.email,
        display_name=body.display_name,
        password_hash=hash_password(body.password) if body.password else None,
        disabled=False,
        created_at=meta.now,
    )
    session.add(user)
    await session.flush()
    session.add(Membership(user_id=user.id, unit_id=body.unit_id, role=body.role))
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="user.create",
        entity_type="user",
        entity_id=user.id,
        before=None,
        after={**snapshot(user), "unit_id": body.unit_id, "role": body.role},
        meta=meta,
    )
    return await UserRepository(session, principal, "users.manage").get(user.id)


async def set_membership(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: str,
    unit_id: str,
    body: MembershipSet,
    meta: RequestMeta,
) -> User:
    await _managed_unit_path(session, principal, unit_id)
    await UserRepository(session, principal, "users.manage").get(user_id)
    if user_id == principal.user_id:
        raise Conflict("You cannot change your own memberships; ask another owner.")
    existing = await repository.membership(session, user_id=user_id, unit_id=unit_id)
    before = {"role": existing.role} if existing else None
    if existing is None:
        session.add(Membership(user_id=user_id, unit_id=unit_id, role=body.role))
    else:
        existing.role = body.role
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="membership.set",
        entity_type="membership",
        entity_id=f"{user_id}:{unit_id}",
        before=before,
        after={"user_id": user_id, "unit_id": unit_id, "role": body.role},
        meta=meta,
    )
    session.expunge_all()  # reload the user's memberships as they are now
    return await UserRepository(session, principal, "users.manage").get(user_id)


async def delete_membership(
    session: AsyncSession, principal: Principal, *, user_id: str, unit_id: str, meta: RequestMeta
) -> None:
    await _managed_unit_path(session, principal, unit_id)
    await UserRepository(session, principal, "users.manage").get(user_id)
    if user_id == principal.user_id:
        raise Conflict("You cannot change your own memberships; ask another owner.")
    existing = await repository.membership(session, user_id=user_id, unit_id=unit_id)
    if existing is None:
        raise Conflict("The user has no membership on this unit.")
    before = {"user_id": user_id, "unit_id": unit_id, "role": existing.role}
    await session.delete(existing)
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="membership.delete",
        entity_type="membership",
        entity_id=f"{user_id}:{unit_id}",
        before=before,
        after=None,
        meta=meta,
    )


async def disable_user(
    session: AsyncSession, principal: Principal, user_id: str, meta: RequestMeta
) -> User:
    """Disable a user of the caller's subtrees: logins are refused, every refresh token is
    revoked and access tokens stop at their next request (grants are read per request). API
    keys the user created stay valid (they are the company's credentials, revoked one by one)."""
    user = await UserRepository(session, principal, "users.manage").get(user_id)
    if user_id == principal.user_id:
        raise Conflict("You cannot disable yourself; ask another owner.")
    before = snapshot(user)
    if not user.disabled:
        user.disabled = True
    revoked = await revoke_user_families(session, user_id=user_id, now=meta.now)
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="user.disable",
        entity_type="user",
        entity_id=user_id,
        before=before,
        after={**snapshot(user), "refresh_tokens_revoked": revoked},
        meta=meta,
    )
    return user
