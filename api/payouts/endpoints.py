from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.kit.idempotency import IdempotencyKeyHeader, run_once
from api.kit.pagination import Page, decode_keyset, encode_keyset
from api.payouts import service
from api.payouts.repository import PayoutRepository
from api.payouts.schemas import (
    PayoutCancel,
    PayoutCreate,
    PayoutDetail,
    PayoutFilters,
    PayoutPaid,
    PayoutRead,
)

router = APIRouter(prefix="/payouts", tags=["payouts"])

PayoutsRead = Annotated[Principal, Depends(Authorized("payouts.read"))]
PayoutsWrite = Annotated[Principal, Depends(Authorized("payouts.write"))]
_IDEMPOTENT: dict[int | str, dict[str, Any]] = {
    422: {"description": "Invalid request, or the Idempotency-Key was reused"}
}


@router.get("", operation_id="payouts.list", summary="Payouts the caller may see")
async def list_payouts(
    principal: PayoutsRead, session: ReadOnlySession, filters: Annotated[PayoutFilters, Query()]
) -> Page[PayoutRead]:
    after = decode_keyset(filters.cursor, datetime) if filters.cursor else None
    rows = await PayoutRepository(session, principal, "payouts.read").list(filters, after=after)
    last = rows[-1] if len(rows) == filters.limit else None
    return Page[PayoutRead](
        items=[PayoutRead.model_validate(p) for p in rows],
        next_cursor=encode_keyset(last.created_at, last.id) if last else None,
    )


@router.post(
    "",
    operation_id="payouts.create",
    status_code=201,
    summary="Create a payout from an agent's approved, unpaid entries",
    response_model=PayoutDetail,
    responses=_IDEMPOTENT,
)
async def create_payout(
    body: PayoutCreate,
    principal: PayoutsWrite,
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
        operation=lambda: service.create_payout(
            session, principal, body, idempotency_key=idempotency_key, meta=meta
        ),
    )


@router.get("/{payout_id}", operation_id="payouts.get", summary="A payout and its entries")
async def get_payout(
    payout_id: str, principal: PayoutsRead, session: ReadOnlySession
) -> PayoutDetail:
    return await service.detail(session, principal, payout_id)


@router.post(
    "/{payout_id}/paid",
    operation_id="payouts.mark_paid",
    summary="Mark a payout paid (its entries become paid)",
    response_model=PayoutDetail,
    responses=_IDEMPOTENT,
)
async def mark_paid(
    payout_id: str,
    body: PayoutPaid,
    principal: PayoutsWrite,
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
        operation=lambda: service.mark_paid(session, principal, payout_id, body, meta=meta),
    )


@router.post(
    "/{payout_id}/cancel",
    operation_id="payouts.cancel",
    summary="Cancel an unpaid payout (its entries become payable again)",
    response_model=PayoutDetail,
    responses=_IDEMPOTENT,
)
async def cancel_payout(
    payout_id: str,
    body: PayoutCancel,
    principal: PayoutsWrite,
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
        operation=lambda: service.cancel(session, principal, payout_id, body, meta=meta),
    )


@router.get(
    "/{payout_id}/export.csv",
    operation_id="payouts.export_csv",
    summary="The payout's entries as CSV",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_payout(
    payout_id: str, principal: PayoutsRead, session: ReadOnlySession
) -> Response:
    body = await service.export_csv(session, principal, payout_id)
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{payout_id}.csv"'},
    )
