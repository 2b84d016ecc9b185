from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.users import service
from api.users.repository import UserRepository
from api.users.schemas import MembershipSet, UserCreate, UserRead

router = APIRouter(prefix="/users", tags=["users"])

UsersManage = Annotated[Principal, Depends(Authorized("users.manage"))]


@router.get(
    "", operation_id="users.list", summary="Users with a membership in the caller's subtrees"
)
async def list_users(principal: UsersManage, session: ReadOnlySession) -> list[UserRead]:
    users = await UserRepository(session, principal, "users.manage").list()
    return [service.to_read(principal, u) for u in users]


@router.post("", operation_id="users.create", status_code=201)
async def create_user(
    body: UserCreate, principal: UsersManage, session: WriteSession, meta: Meta
) -> UserRead:
    return service.to_read(principal, await service.create_user(session, principal, body, meta))


@router.post(
    "/{user_id}/disable",
    operation_id="users.disable",
    summary="Disable a user: logins refused, refresh tokens revoked, access tokens stop at once",
)
async def disable_user(
    user_id: str, principal: UsersManage, session: WriteSession, meta: Meta
) -> UserRead:
    return service.to_read(principal, await service.disable_user(session, principal, user_id, meta))


@router.put(
    "/{user_id}/memberships/{unit_id}",
    operation_id="users.set_membership",
    summary="Grant or change the role on a unit",
)
async def set_membership(
    user_id: str,
    unit_id: str,
    body: MembershipSet,
    principal: UsersManage,
    session: WriteSession,
    meta: Meta,
) -> UserRead:
    user = await service.set_membership(
        session, principal, user_id=user_id, unit_id=unit_id, body=body, meta=meta
    )
    return service.to_read(principal, user)


@router.delete(
    "/{user_id}/memberships/{unit_id}", operation_id="users.delete_membership", status_code=204
)
async def delete_membership(
    user_id: str, unit_id: str, principal: UsersManage, session: WriteSession, meta: Meta
) -> Response:
    await service.delete_membership(session, principal, user_id=user_id, unit_id=unit_id, meta=meta)
    return Response(status_code=204)
