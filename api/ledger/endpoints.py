from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.kit.idempotency import IdempotencyKeyHeader, run_once
from api.kit.pagination import decode_keyset, encode_keyset
from api.ledger import service
from api.ledger.repository import LedgerRepository
from api.ledger.schemas import (
    AdjustmentCreate,
    AgentStatement,
    LedgerEntryDetail,
    LedgerEntryRead,
    LedgerFilters,
    LedgerPage,
    LedgerTotal,
    StatusChange,
)
from schemas.ledger import EntryStatus
from schemas.settings import Settings

router = APIRouter(tags=["ledger"])

LedgerRead = Annotated[Principal, Depends(Authorized("ledger.read"))]
LedgerApprove = Annotated[Principal, Depends(Authorized("ledger.approve"))]
LedgerAdjust = Annotated[Principal, Depends(Authorized("ledger.adjust"))]
_IDEMPOTENT: dict[int | str, dict[str, Any]] = {
    422: {"description": "Invalid request, or the Idempotency-Key was reused"}
}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get(
    "/ledger",
    operation_id="ledger.list_entries",
    summary="Ledger entries with their current status, and totals",
)
async def list_entries(
    principal: LedgerRead, session: ReadOnlySession, filters: Annotated[LedgerFilters, Query()]
) -> LedgerPage:
    repository = LedgerRepository(session, principal, "ledger.read")
    after = decode_keyset(filters.cursor, datetime) if filters.cursor else None
    rows = await repository.list(filters, after=after)
    items = [service.to_read(e, s) for e, s in rows]
    last = rows[-1][0] if len(rows) == filters.limit else None
    totals = [
        LedgerTotal(currency=c, status=s, count=n, amount=a)
        for c, s, n, a in await repository.totals(filters)
    ]
    return LedgerPage(
        items=items,
        next_cursor=encode_keyset(last.occurred_at, last.entry_id) if last else None,
        totals=totals,
    )


@router.get(
    "/ledger/entries/{entry_id}",
    operation_id="ledger.get_entry",
    summary="One entry and its status history",
)
async def get_entry(
    entry_id: str, principal: LedgerRead, session: ReadOnlySession
) -> LedgerEntryDetail:
    return await service.get_entry(session, principal, entry_id)


def _status_route(target: EntryStatus, verb: str) -> None:
    async def change(
        entry_id: str,
        body: StatusChange,
        principal: LedgerApprove,
        session: WriteSession,
        meta: Meta,
        request: Request,
        idempotency_key: IdempotencyKeyHeader,
    ) -> JSONResponse:
        return await run_once(
            session,
            principal,
            request,
            body,
            key=idempotency_key,
            status_code=200,
            operation=lambda: service.change_status(
                session,
                principal,
                entry_id,
                target,
                reason=body.reason,
                manager_limit=_settings(request).manager_approval_limit,
                meta=meta,
            ),
        )

    change.__name__ = f"{verb}_entry"
    router.post(
        f"/ledger/entries/{{entry_id}}/{verb}",
        operation_id=f"ledger.{verb}_entry",
        summary=f"{verb.title()} an entry (appends a status event)",
        response_model=LedgerEntryRead,
        responses=_IDEMPOTENT,
    )(change)


_status_route(EntryStatus.APPROVED, "approve")
_status_route(EntryStatus.HOLD, "hold")
_status_route(EntryStatus.REJECTED, "reject")


@router.post(
    "/ledger/adjustments",
    operation_id="ledger.create_adjustment",
    status_code=201,
    summary="A manual adjustment entry, with a mandatory reason",
    response_model=LedgerEntryRead,
    responses=_IDEMPOTENT,
)
async def create_adjustment(
    body: AdjustmentCreate,
    principal: LedgerAdjust,
    session: WriteSession,
    meta: Meta,
    request: Request,
    idempotency_key: IdempotencyKeyHeader,
) -> JSONResponse:
    return await run_once(
        session,
        principal,
        request,
        body,
        key=idempotency_key,
        status_code=201,
        operation=lambda: service.create_adjustment(
            session,
            principal,
            body,
            idempotency_key=idempotency_key,
            manager_limit=_settings(request).manager_approval_limit,
            meta=meta,
        ),
    )


@router.get(
    "/agents/{agent_id}/statement",
    operation_id="ledger.agent_statement",
    summary="An agent's statement over a period",
)
async def agent_statement(
    agent_id: str,
    principal: LedgerRead,
    session: ReadOnlySession,
    period_start: Annotated[AwareDatetime | None, Query()] = None,
    period_end: Annotated[AwareDatetime | None, Query()] = None,
) -> AgentStatement:
    return await service.statement(session, principal, agent_id, start=period_start, end=period_end)
