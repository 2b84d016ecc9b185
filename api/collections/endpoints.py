from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.collections import service
from api.collections.schemas import (
    CollectionImport,
    CollectionList,
    CollectionProducts,
    CollectionRead,
)
from api.context import Meta
from api.db import ReadOnlySession, WriteSession

router = APIRouter(prefix="/shops/{domain}/collections", tags=["shops"])

ShopsRead = Annotated[Principal, Depends(Authorized("shops.read"))]
ShopsWrite = Annotated[Principal, Depends(Authorized("shops.write"))]
CollectionId = Annotated[str, Path(pattern=r"^[0-9]{1,20}$", description="Shopify collection id")]


@router.get(
    "",
    summary="The shop's known collections and their products",
    operation_id="shops.list_collections",
)
async def list_collections(
    domain: str, principal: ShopsRead, session: ReadOnlySession
) -> CollectionList:
    return await service.list_collections(session, principal, domain.strip().lower())


@router.put(
    "/{collection_id}/products",
    summary="Replace one collection's products (the backfill for what webhooks do not carry)",
    operation_id="shops.put_collection_products",
)
async def put_collection_products(
    domain: str,
    collection_id: CollectionId,
    body: CollectionProducts,
    principal: ShopsWrite,
    session: WriteSession,
    meta: Meta,
) -> CollectionRead:
    return await service.put_products(
        session, principal, domain.strip().lower(), collection_id, body, meta
    )


@router.put(
    "",
    summary="Bulk backfill: replace the products of every listed collection",
    operation_id="shops.import_collections",
)
async def import_collections(
    domain: str,
    body: CollectionImport,
    principal: ShopsWrite,
    session: WriteSession,
    meta: Meta,
) -> CollectionList:
    return await service.import_collections(session, principal, domain.strip().lower(), body, meta)
