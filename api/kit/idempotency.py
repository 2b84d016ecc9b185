"""Idempotency keys on POSTs that move money.

The first successful response to a key is stored in the same transaction as the effect; the same
key with the same request (caller, method, path, body) replays that response without running the
operation again, and the same key with a different request answers 422. A failed request stores
nothing (its transaction rolls back), so the client may retry it with the same key. Two
concurrent requests with one key serialise on the key's row: the second waits and then replays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.authz.policies import Principal
from api.errors import RefstreamError
from api.models import IdempotencyKey

IdempotencyKeyHeader = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="A unique key per intended operation (e.g. a UUID); a retry sends it again.",
    ),
]
REPLAYED_HEADER = "Idempotent-Replayed"


class IdempotencyKeyReused(RefstreamError):
    status_code = 422
    type = "idempotency-key-reused"
    title = "Idempotency key reused for a different request"


def fingerprint(principal: Principal, method: str, path: str, body: BaseModel | None) -> str:
    """What makes two requests "the same": caller, method, path and the parsed body."""
    payload = body.model_dump(mode="json") if body is not None else None
    raw = orjson.dumps([principal.actor, method, path, payload], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


async def run_once(
    session: AsyncSession,
    principal: Principal,
    request: Request,
    body: BaseModel | None,
    *,
    key: str,
    status_code: int,
    operation: Callable[[], Awaitable[BaseModel]],
) -> JSONResponse:
    """Run `operation` once per (tenant, key) and answer its JSON; replay it for repeats.

    "The same request" is the same caller, method, path and parsed body (`fingerprint`).
    """
    tenant_id = principal.tenant_id
    request_fingerprint = fingerprint(principal, request.method, request.url.path, body)
    claimed = await session.scalar(
        insert(IdempotencyKey)
        .values(tenant_id=tenant_id, key=key, fingerprint=request_fingerprint)
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)
    )
    if claimed is None:
        stored = await session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key
            )
        )
        if stored is None or stored.fingerprint != request_fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for a different request; use a new key."
            )
        response: Any = stored.response
        return JSONResponse(
            response, status_code=stored.status_code or 200, headers={REPLAYED_HEADER: "true"}
        )
    result = (await operation()).model_dump(mode="json")
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
        .values(status_code=status_code, response=result)
    )
    return JSONResponse(result, status_code=status_code)
