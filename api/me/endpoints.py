from __future__ import annotations

from fastapi import APIRouter

from api.auth.dependencies import Authenticated
from api.db import ReadOnlySession
from api.me import service
from api.me.schemas import Me

router = APIRouter(prefix="/me", tags=["me"])


@router.get(
    "",
    operation_id="me.get",
    summary="Who am I: user, company, grants, permissions per unit, linked agent rows",
)
async def get_me(principal: Authenticated, session: ReadOnlySession) -> Me:
    return await service.me(session, principal)
