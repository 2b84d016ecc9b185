"""Shopify shops and their webhook secrets (write-only: never returned by the API).

A shop comes in one of two ways: the refstream app installed through Shopify's OAuth
(`api/shopify`), or a company's own custom app, whose webhook secret `POST /v1/shops` files as a
**claim** (`shop_claims`) that becomes the shop when the ingress receives a webhook for the
domain signed with it (`ingest.claims` says why that proof). The answer to a claim is the same
whether the domain is free, claimed by others or another company's shop: nothing tells a company
about another's shops. Listing, reading, rotating and deleting are the generated CRUD routes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from api.audit import record
from api.authz.dependencies import Authorized
from api.authz.policies import Principal, can_at
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.errors import Conflict, Forbidden, Unprocessable
from api.kit.crud import Change, CompanyWide, CrudSpec, crud_router
from api.models import Shop, ShopClaim
from api.registry import announce_registry_change
from api.shops.schemas import ShopClaimRead, ShopCreate, ShopRead, ShopUpdate
from schemas.settings import Settings


def _prepare(change: Change) -> dict[str, Any]:
    values = {**change.values, "updated_at": change.meta.now}
    if change.row is not None and "secret" in values and change.row.install == "oauth":
        raise Unprocessable(
            "This shop was installed through OAuth: its webhooks are signed with the app's "
            "secret, so it has no secret of its own to rotate."
        )
    if change.row is not None and "secret" in values:
        # Rotation: webhooks signed with the old secret stay valid until the next rotation.
        values["previous_secret"] = change.row.secret
        # A custom app uninstalled and installed again: giving its secret reconnects the shop.
        values["uninstalled_at"] = None
    return values


# Shops are company configuration: changing one needs shops.write on the root unit.
SPEC = CrudSpec(
    noun="shop",
    prefix="/shops",
    tag="shops",
    model=Shop,
    id_field="domain",
    id_param="domain",
    id_prefix=None,
    create_schema=ShopCreate,
    update_schema=ShopUpdate,
    read_schema=ShopRead,
    read_permission="shops.read",
    write_permission="shops.write",
    placement=CompanyWide(),
    filters={"active": bool},
    sorts=("created_at", "domain"),
    prepare=_prepare,
    after_commit=announce_registry_change,
    generate_create=False,
)

ShopsRead = Annotated[Principal, Depends(Authorized("shops.read"))]
ShopsWrite = Annotated[Principal, Depends(Authorized("shops.write"))]

claims_router = APIRouter(tags=["shops"])


@claims_router.post(
    "/shops",
    status_code=202,
    operation_id="shops.create",
    summary="Connect a shop through its custom app: files a claim, proven by the first webhook "
    "signed with the secret",
)
async def claim_shop(
    body: ShopCreate,
    principal: ShopsWrite,
    session: WriteSession,
    meta: Meta,
    request: Request,
    background: BackgroundTasks,
) -> ShopClaimRead:
    if not can_at(principal, "shops.write", None):  # company configuration: the root unit's
        raise Forbidden("You cannot connect a shop here.")
    settings: Settings = request.app.state.settings
    own = await session.scalar(
        select(Shop.domain).where(Shop.domain == body.domain, Shop.tenant_id == principal.tenant_id)
    )
    if own is not None:  # the caller's own shop: telling it so reveals nothing
        raise Conflict(
            f"{body.domain} is already your company's shop; PATCH /v1/shops/{body.domain} "
            "rotates its secret."
        )
    expires_at = meta.now + timedelta(hours=settings.shop_claim_ttl_hours)
    values = {"secret": body.secret, "created_at": meta.now, "expires_at": expires_at}
    statement = (
        insert(ShopClaim)
        .values(tenant_id=principal.tenant_id, domain=body.domain, **values)
        .on_conflict_do_update(index_elements=["tenant_id", "domain"], set_=values)
        .returning(ShopClaim)
    )
    claim = (await session.scalars(statement)).one()
    await record(
        session, tenant_id=principal.tenant_id, actor=principal.actor,
        action="shop_claim.create", entity_type="shop_claim", entity_id=body.domain,
        before=None, after={"domain": body.domain, "expires_at": expires_at}, meta=meta,
    )  # fmt: skip
    background.add_task(announce_registry_change, request)
    return ShopClaimRead.model_validate(claim, from_attributes=True)


@claims_router.get(
    "/shop-claims",
    operation_id="shops.list_claims",
    summary="The company's shop claims still waiting for their first signed webhook",
)
async def list_claims(principal: ShopsRead, session: ReadOnlySession) -> list[ShopClaimRead]:
    rows = await session.scalars(
        select(ShopClaim)
        .where(ShopClaim.tenant_id == principal.tenant_id, ShopClaim.expires_at > func.now())
        .order_by(ShopClaim.created_at)
    )
    return [ShopClaimRead.model_validate(r, from_attributes=True) for r in rows]


router = APIRouter()
router.include_router(claims_router)
router.include_router(crud_router(SPEC))
