from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.authz.policies import Principal, can
from api.context import RequestMeta
from api.errors import Forbidden
from api.models import Unit
from api.snapshots import snapshot
from api.units.repository import UnitRepository
from api.units.schemas import UnitCreate
from schemas.ids import random_id


async def create_unit(
    session: AsyncSession, principal: Principal, body: UnitCreate, meta: RequestMeta
) -> Unit:
    parent = await UnitRepository(session, principal, "units.read").get(body.parent_id)
    if not can(principal, "units.write", parent.path):
        raise Forbidden("You cannot add units under this unit.")
    unit_id = random_id("unit")
    unit = Unit(
        id=unit_id,
        tenant_id=principal.tenant_id,
        parent_id=parent.id,
        name=body.name,
        path=f"{parent.path}{unit_id}/",
        created_at=meta.now,
    )
    session.add(unit)
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="unit.create",
        entity_type="unit",
        entity_id=unit.id,
        before=None,
        after=snapshot(unit),
        meta=meta,
    )
    return unit
