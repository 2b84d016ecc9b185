from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.rules import service
from api.rules.schemas import RuleVersionCreate, RuleVersionRead

router = APIRouter(prefix="/programs/{program_id}/rules", tags=["commission rules"])

RulesRead = Annotated[Principal, Depends(Authorized("rules.read"))]
RulesPropose = Annotated[Principal, Depends(Authorized("rules.propose"))]
RulesActivate = Annotated[Principal, Depends(Authorized("rules.activate"))]
Version = Annotated[int, Path(ge=1, le=2_147_483_647)]


@router.get(
    "",
    operation_id="rules.list",
    summary="Every version of the program's commission rules, oldest first",
)
async def list_rule_versions(
    program_id: str, principal: RulesRead, session: ReadOnlySession
) -> list[RuleVersionRead]:
    return await service.list_versions(session, principal, program_id)


@router.get(
    "/{version}", operation_id="rules.get", summary="One version of the program's commission rules"
)
async def get_rule_version(
    program_id: str,
    version: Version,
    principal: RulesRead,
    session: ReadOnlySession,
) -> RuleVersionRead:
    return await service.get_version(session, principal, program_id, version)


@router.post(
    "",
    operation_id="rules.propose",
    status_code=201,
    summary="Store new rules as the next version (an owner's is active, a manager's proposed)",
)
async def create_rule_version(
    program_id: str,
    body: RuleVersionCreate,
    principal: RulesPropose,
    session: WriteSession,
    meta: Meta,
) -> RuleVersionRead:
    return await service.create_version(session, principal, program_id, body, meta)


@router.post(
    "/{version}/activate",
    operation_id="rules.activate",
    summary="Activate a proposed version (it becomes live)",
)
async def activate_rule_version(
    program_id: str, version: Version, principal: RulesActivate, session: WriteSession, meta: Meta
) -> RuleVersionRead:
    return await service.review_version(session, principal, program_id, version, "active", meta)


@router.post(
    "/{version}/reject",
    operation_id="rules.reject",
    summary="Reject a proposed version (it never goes live)",
)
async def reject_rule_version(
    program_id: str, version: Version, principal: RulesActivate, session: WriteSession, meta: Meta
) -> RuleVersionRead:
    return await service.review_version(session, principal, program_id, version, "rejected", meta)
