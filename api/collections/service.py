"""Collection membership of a shop's Shopify collections (which products each holds), so the
dataflow applies collection commission rates to the order lines they name (see
`dataflows.commission.collections`). The backfill writes it here: Shopify's collection webhooks
say a collection exists or was deleted, but their bodies carry no products (and a smart
collection's membership follows its rules), so the full membership of a collection comes from
this API (or `refstream shop collections import`), replacing what was known. Company
configuration, like shops: `shops.read` to read, `shops.write` at the root unit to change;
every change is audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.authz.policies import Principal, can_at
from api.collections.repository import CollectionRepository
from api.collections.schemas import (
    CollectionImport,
    CollectionList,
    CollectionProducts,
    CollectionRead,
)
from api.context import RequestMeta
from api.db import ReadSession
from api.errors import Forbidden
from api.kit.crud import scoped_repository
from api.models import Shop, ShopCollection
from api.shops.endpoints import SPEC as SHOPS
from api.snapshots import snapshot


def to_read(row: ShopCollection) -> CollectionRead:
    return CollectionRead(
        shop=row.shop,
        collection_id=row.collection_id,
        title=row.title,
        product_ids=row.product_ids,
        deleted=row.deleted,
        source="api" if row.source == "api" else "webhook",
        changed_at=row.changed_at,
        updated_at=row.updated_at,
    )


async def _shop(session: ReadSession, principal: Principal, domain: str) -> Shop:
    shop, _ = await scoped_repository(SHOPS)(session, principal, "shops.read").get_with_path(domain)
    assert isinstance(shop, Shop)
    return shop


async def list_collections(
    session: ReadSession, principal: Principal, domain: str
) -> CollectionList:
    shop = await _shop(session, principal, domain)
    rows = await CollectionRepository(session, tenant_id=principal.tenant_id).of_shop(shop.domain)
    return CollectionList(items=[to_read(r) for r in rows])


async def put_products(
    session: AsyncSession,
    principal: Principal,
    domain: str,
    collection_id: str,
    body: CollectionProducts,
    meta: RequestMeta,
) -> CollectionRead:
    """Replace the membership of one collection (creating it, or reviving a deleted one)."""
    shop = await _writable_shop(session, principal, domain)
    row = await _replace(session, principal, shop, collection_id, body, meta)
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="shop_collection.update",
        entity_type="shop_collection",
        entity_id=f"{shop.domain}/{collection_id}",
        before=row[1],
        after=snapshot(row[0]),
        meta=meta,
    )
    return to_read(row[0])


async def import_collections(
    session: AsyncSession,
    principal: Principal,
    domain: str,
    body: CollectionImport,
    meta: RequestMeta,
) -> CollectionList:
    """Replace the membership of every listed collection, in one transaction and one audit
    entry (the collection ids and their product counts)."""
    shop = await _writable_shop(session, principal, domain)
    rows = [await _replace(session, principal, shop, c.id, c, meta) for c in body.collections]
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="shop_collection.import",
        entity_type="shop",
        entity_id=shop.domain,
        before=None,
        after={"collections": {r.collection_id: len(r.product_ids or ()) for r, _ in rows}},
        meta=meta,
    )
    return CollectionList(items=[to_read(r) for r, _ in rows])


async def _writable_shop(session: AsyncSession, principal: Principal, domain: str) -> Shop:
    shop = await _shop(session, principal, domain)
    if not can_at(principal, "shops.write", None):
        raise Forbidden("Changing a shop's collections needs shops.write on the company.")
    return shop


async def _replace(
    session: AsyncSession,
    principal: Principal,
    shop: Shop,
    collection_id: str,
    body: CollectionProducts,
    meta: RequestMeta,
) -> tuple[ShopCollection, dict[str, Any] | None]:
    repository = CollectionRepository(session, tenant_id=principal.tenant_id)
    row = await repository.get(shop.domain, collection_id, lock=True)
    before = snapshot(row) if row is not None else None
    product_ids = sorted(set(body.product_ids), key=lambda p: (len(p), p))
    if row is None:
        row = ShopCollection(
            shop=shop.domain, collection_id=collection_id, tenant_id=principal.tenant_id
        )
        session.add(row)
    row.title = body.title if body.title is not None else row.title
    row.product_ids = product_ids
    row.deleted = False
    row.source = "api"
    row.changed_at = meta.now
    row.products_changed_at = meta.now
    row.updated_at = meta.now
    await session.flush()
    return row, before


async def unknown_collections(
    session: ReadSession, tenant_id: str, collection_ids: list[str]
) -> list[str]:
    """Those of `collection_ids` with no known membership in any of the tenant's shops."""
    known = await CollectionRepository(session, tenant_id=tenant_id).known_memberships(
        collection_ids
    )
    return [c for c in collection_ids if c not in known]
