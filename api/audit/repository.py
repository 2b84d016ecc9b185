from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from api.audit import personal
from api.db import ReadSession
from api.models import AuditLogEntry, AuditPersonal


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


async def personal_values(
    session: ReadSession, tenant_id: str, rows: Sequence[AuditLogEntry]
) -> dict[str, str]:
    """The personal values the entries refer to (erased ones are absent)."""
    refs = personal.refs_in([x for r in rows for x in (r.before, r.after, r.source_ip)])
    if not refs:
        return {}
    found = await session.execute(
        select(AuditPersonal.ref, AuditPersonal.value).where(
            AuditPersonal.tenant_id == tenant_id, AuditPersonal.ref.in_(sorted(refs))
        )
    )
    return dict(found.all())
