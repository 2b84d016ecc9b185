from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from api.db import ReadSession
from api.models import AuditLogEntry


async def page(
    session: ReadSession,
    *,
    tenant_id: str,
    before_seq: int | None,
    limit: int,
    entity_id: str | None = None,
) -> Sequence[AuditLogEntry]:
    """Newest first."""
    statement = (
        select(AuditLogEntry)
        .where(AuditLogEntry.tenant_id == tenant_id)
        .order_by(AuditLogEntry.seq.desc())
        .limit(limit)
    )
    if before_seq is not None:
        statement = statement.where(AuditLogEntry.seq < before_seq)
    if entity_id is not None:
        statement = statement.where(AuditLogEntry.entity_id == entity_id)
    return (await session.scalars(statement)).all()
