"""Exchange rates: shop currency → the company's reporting currency, each valid from an instant
until the next rate of the same currency."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.fx_rates import service
from api.fx_rates.repository import FxRateRepository
from api.fx_rates.schemas import FxRateCreate, FxRateFilters, FxRateRead
from api.kit.idempotency import IdempotencyKeyHeader, run_once
from api.kit.pagination import Page, decode_keyset, encode_keyset

router = APIRouter(prefix="/fx-rates", tags=["fx rates"])

FxRatesRead = Annotated[Principal, Depends(Authorized("fx_rates.read"))]
FxRatesWrite = Annotated[Principal, Depends(Authorized("fx_rates.write"))]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "A rate of this currency from this instant exists"},
    422: {
        "description": "Invalid request, the company's reporting currency, or the "
        "Idempotency-Key was reused"
    },
}


@router.get(
    "",
    operation_id="fx_rates.list",
    summary="The company's exchange rates, oldest valid_from first",
)
async def list_rates(
    principal: FxRatesRead, session: ReadOnlySession, filters: Annotated[FxRateFilters, Query()]
) -> Page[FxRateRead]:
    after = decode_keyset(filters.cursor, datetime) if filters.cursor else None
    rows = await FxRateRepository(session, principal, "fx_rates.read").list(filters, after=after)
    last = rows[-1] if len(rows) == filters.limit else None
    return Page[FxRateRead](
        items=[FxRateRead.model_validate(r) for r in rows],
        next_cursor=encode_keyset(last.valid_from, last.currency) if last else None,
    )


@router.post(
    "",
    operation_id="fx_rates.create",
    status_code=201,
    summary="Add an exchange rate (rates are never changed; a later one supersedes it)",
    response_model=FxRateRead,
    responses=_RESPONSES,
)
async def create_rate(
    body: FxRateCreate,
    principal: FxRatesWrite,
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
        operation=lambda: service.create_rate(session, principal, body, meta=meta),
    )
