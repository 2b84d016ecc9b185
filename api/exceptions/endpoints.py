"""The exceptions inbox: the company's dead letters (events and rows that could not be
processed), newest first, for owners and managers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.exceptions import service
from api.exceptions.repository import ExceptionRepository
from api.exceptions.schemas import (
    ExceptionCounts,
    ExceptionFilters,
    ExceptionRead,
    ExceptionResolve,
)
from api.kit.pagination import Page, decode_keyset, encode_keyset

router = APIRouter(prefix="/exceptions", tags=["exceptions"])

ExceptionsRead = Annotated[Principal, Depends(Authorized("exceptions.read"))]
ExceptionsResolve = Annotated[Principal, Depends(Authorized("exceptions.resolve"))]


@router.get("", summary="The company's dead letters, newest first", operation_id="exceptions.list")
async def list_exceptions(
    principal: ExceptionsRead,
    session: ReadOnlySession,
    filters: Annotated[ExceptionFilters, Query()],
) -> Page[ExceptionRead]:
    after = decode_keyset(filters.cursor, datetime) if filters.cursor else None
    rows = await ExceptionRepository(session, principal, "exceptions.read").list(
        filters, after=after
    )
    last = rows[-1] if len(rows) == filters.limit else None
    return Page[ExceptionRead](
        items=[ExceptionRead.model_validate(r) for r in rows],
        next_cursor=encode_keyset(last.failed_at, last.id) if last else None,
    )


@router.get(
    "/counts",
    summary="How many of the company's exceptions are open and resolved",
    operation_id="exceptions.counts",
)
async def count_exceptions(principal: ExceptionsRead, session: ReadOnlySession) -> ExceptionCounts:
    open_, resolved = await ExceptionRepository(session, principal, "exceptions.read").counts()
    return ExceptionCounts(open=open_, resolved=resolved)


@router.post(
    "/{exception_id}/resolve",
    summary="Mark an open exception resolved, with what was done about it",
    operation_id="exceptions.resolve",
    responses={409: {"description": "The exception is resolved already"}},
)
async def resolve_exception(
    exception_id: str,
    body: ExceptionResolve,
    principal: ExceptionsResolve,
    session: WriteSession,
    meta: Meta,
) -> ExceptionRead:
    return await service.resolve(session, principal, exception_id, body, meta=meta)
