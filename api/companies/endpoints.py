from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.companies import repository, service
from api.companies.schemas import CompanyCreate, CompanyCreated, CompanyRead
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.errors import NotFound
from schemas.settings import Settings

router = APIRouter(prefix="/companies", tags=["companies"])

CompanyReader = Annotated[Principal, Depends(Authorized("company.read"))]


@router.post(
    "",
    operation_id="companies.create",
    status_code=201,
    summary="Sign up: create a company, its root unit and owner",
)
async def create_company(
    request: Request, body: CompanyCreate, session: WriteSession, meta: Meta
) -> CompanyCreated:
    settings: Settings = request.app.state.settings
    if not settings.open_signup:
        raise NotFound("Sign-up is disabled on this installation.")
    return await service.create_company(session, body, meta)


@router.get("/me", operation_id="companies.get_mine", summary="The caller's company")
async def my_company(principal: CompanyReader, session: ReadOnlySession) -> CompanyRead:
    return CompanyRead.model_validate(await repository.company(session, principal.tenant_id))
