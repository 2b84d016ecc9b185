"""The exceptions inbox: dead letters stored per company (by `api.exceptions.consumer`), listed
for owners and managers, and resolved either by the documented fix (correct the cause, replay,
promote: `api.replays.promote` resolves the promoted replay's orders) or by hand with a note
(e.g. an unparseable body the shop will never send again). A resolution is written once and
audited (`exception.resolve`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.authz.policies import Principal
from api.context import RequestMeta
from api.errors import Conflict
from api.exceptions import repository
from api.exceptions.repository import ExceptionRepository
from api.exceptions.schemas import ExceptionRead, ExceptionResolve

PERMISSION = "exceptions.resolve"


async def resolve(
    session: AsyncSession,
    principal: Principal,
    exception_id: str,
    body: ExceptionResolve,
    *,
    meta: RequestMeta,
) -> ExceptionRead:
    """Resolve one of the company's open exceptions with a note. `NotFound` for an unknown
    (or another company's) id, `Conflict` when it is resolved already."""
    found = await ExceptionRepository(session, principal, PERMISSION).get(exception_id)
    if found.resolved_at is not None:
        raise Conflict(f"Exception {exception_id!r} was resolved at {found.resolved_at}.")
    if not await repository.resolve(
        session, exception_id, by=principal.actor, resolution=body.note, at=meta.now
    ):
        raise Conflict(f"Exception {exception_id!r} was resolved meanwhile.")
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="exception.resolve",
        entity_type="exception",
        entity_id=exception_id,
        before={"resolved": False, "reason": found.reason},
        after={"resolved": True, "resolution": body.note},
        meta=meta,
    )
    await session.refresh(found)
    return ExceptionRead.model_validate(found)
