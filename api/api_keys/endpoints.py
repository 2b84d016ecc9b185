from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.api_keys import service
from api.api_keys.repository import ApiKeyRepository
from api.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.kit.headers import no_store

router = APIRouter(prefix="/api-keys", tags=["api keys"])

ApiKeysManage = Annotated[Principal, Depends(Authorized("api_keys.manage"))]


@router.get("", operation_id="api_keys.list")
async def list_api_keys(principal: ApiKeysManage, session: ReadOnlySession) -> list[ApiKeyRead]:
    keys = await ApiKeyRepository(session, principal, "api_keys.manage").list()
    return [ApiKeyRead.model_validate(k) for k in keys]


@router.post(
    "",
    operation_id="api_keys.create",
    status_code=201,
    summary="Create a key; the response is the only time it shows",
    dependencies=[Depends(no_store)],
)
async def create_api_key(
    body: ApiKeyCreate, principal: ApiKeysManage, session: WriteSession, meta: Meta
) -> ApiKeyCreated:
    return await service.create_api_key(session, principal, body, meta)


@router.delete("/{key_id}", operation_id="api_keys.revoke", status_code=204, summary="Revoke a key")
async def revoke_api_key(
    key_id: str, principal: ApiKeysManage, session: WriteSession, meta: Meta
) -> Response:
    await service.revoke_api_key(session, principal, key_id, meta)
    return Response(status_code=204)
