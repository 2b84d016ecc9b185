from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.audit import personal, repository
from api.audit.schemas import AuditEntryRead
from api.authz.dependencies import Authorized
from api.authz.policies import Principal, can_company_wide
from api.db import ReadOnlySession
from api.errors import Forbidden
from api.kit.pagination import Cursor, Limit, Page, decode_int_cursor, encode_cursor

router = APIRouter(prefix="/audit", tags=["audit"])

AuditRead = Annotated[Principal, Depends(Authorized("audit.read"))]


@router.get("", operation_id="audit.list", summary="The company's audit log, newest first")
async def list_audit(
    principal: AuditRead,
    session: ReadOnlySession,
    cursor: Cursor = None,
    limit: Limit = 50,
    entity_id: Annotated[str | None, Query()] = None,
) -> Page[AuditEntryRead]:
    # The log spans the whole company, so only a holder of audit.read on the root unit reads it.
    if not can_company_wide(principal, "audit.read"):
        raise Forbidden("Reading the audit log needs `audit.read` on the company's root unit.")
    before = decode_int_cursor(cursor) if cursor else None
    rows = await repository.page(
        session, tenant_id=principal.tenant_id, before_seq=before, limit=limit, entity_id=entity_id
    )
    values = await repository.personal_values(session, principal.tenant_id, rows)
    items = [
        AuditEntryRead.model_validate(r).model_copy(
            update={
                "before": personal.resolve(r.before, values),
                "after": personal.resolve(r.after, values),
                "source_ip": personal.resolve(r.source_ip, values),
            }
        )
        for r in rows
    ]
    next_cursor = encode_cursor(items[-1].seq) if len(items) == limit else None
    return Page[AuditEntryRead](items=items, next_cursor=next_cursor)
