from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.units import service
from api.units.repository import UnitRepository
from api.units.schemas import UnitCreate, UnitRead

router = APIRouter(prefix="/units", tags=["units"])

UnitsRead = Annotated[Principal, Depends(Authorized("units.read"))]
UnitsWrite = Annotated[Principal, Depends(Authorized("units.write"))]


@router.get(
    "", operation_id="units.list", summary="Units in the caller's subtrees, parents before children"
)
async def list_units(principal: UnitsRead, session: ReadOnlySession) -> list[UnitRead]:
    units = await UnitRepository(session, principal, "units.read").list()
    return [UnitRead.model_validate(u) for u in units]


@router.get("/{unit_id}", operation_id="units.get")
async def get_unit(unit_id: str, principal: UnitsRead, session: ReadOnlySession) -> UnitRead:
    unit = await UnitRepository(session, principal, "units.read").get(unit_id)
    return UnitRead.model_validate(unit)


@router.post("", operation_id="units.create", status_code=201)
async def create_unit(
    body: UnitCreate, principal: UnitsWrite, session: WriteSession, meta: Meta
) -> UnitRead:
    return UnitRead.model_validate(await service.create_unit(session, principal, body, meta))
