from __future__ import annotations

from sqlalchemy import select

from api.db import ReadSession
from api.models import Tenant


async def slug_taken(session: ReadSession, slug: str) -> bool:
    return (await session.scalar(select(Tenant.id).where(Tenant.slug == slug))) is not None


async def company(session: ReadSession, tenant_id: str) -> Tenant:
    tenant: Tenant = (await session.scalars(select(Tenant).where(Tenant.id == tenant_id))).one()
    return tenant
