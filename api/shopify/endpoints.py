"""`POST /v1/shopify/installs` (start) and `GET /v1/shopify/callback` (finish): installing the
refstream Shopify app on a shop through OAuth, for the company of the user who starts it.

The `state` nonce binds the install to that company and user: it is stored in Redis under its
own value with the shop it was issued for, lives `shopify_install_ttl_seconds`, and is consumed
(GETDEL) by the first correctly signed callback that presents it, so a replayed or forged
callback finds nothing. Shopify's redirect carries no refstream credential: the nonce is the
only link between the browser that returns and the company that asked.

After the token exchange the shop belongs to the installing company, whoever held it before
(Shopify has just authenticated a staff member of the shop, the strongest proof there is: a
custom-app registration of another company is released, with an entry in its audit log). The
access token is stored sealed (`schemas.secretbox`), the webhook subscriptions are created
through the GraphQL Admin API, and only then is the transaction committed: a failure leaves no
half-installed shop.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, BackgroundTasks, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.authz.dependencies import Authorized
from api.authz.policies import Principal, can_at
from api.context import Meta, RequestMeta
from api.db import WriteSession
from api.errors import BadRequest, Forbidden, RefstreamError, Unauthorized
from api.models import Shop, ShopClaim, ShopCollection
from api.registry import announce_registry_change
from api.shopify import admin, oauth
from api.snapshots import snapshot
from schemas import secretbox
from schemas.registry import valid_shop
from schemas.settings import Settings

router = APIRouter(prefix="/shopify", tags=["shopify"])
ShopsWrite = Annotated[Principal, Depends(Authorized("shops.write"))]

STATE_KEY = "refstream:shopify:install:"
SYSTEM_ACTOR = "system:shopify-oauth"


class NotConfigured(RefstreamError):
    status_code = 503
    type = "shopify-app-not-configured"
    title = "The Shopify app is not configured"


class InvalidShop(BadRequest):
    type = "invalid-shop"
    title = "Not a Shopify shop domain"


class InvalidSignature(Unauthorized):
    type = "invalid-signature"
    title = "The callback's signature does not match"


class InvalidState(BadRequest):
    type = "invalid-state"
    title = "Unknown, used or expired install state"


class BadCallback(BadRequest):
    type = "bad-callback"
    title = "Malformed OAuth callback"


class StaleCallback(BadRequest):
    type = "stale-callback"
    title = "The callback's timestamp is too old"


class ShopifyUnavailable(RefstreamError):
    status_code = 502
    type = "shopify-call-failed"
    title = "Shopify refused or did not answer"


_REFUSALS: dict[str, type[RefstreamError]] = {
    "invalid_signature": InvalidSignature,
    "invalid_shop": InvalidShop,
    "stale_callback": StaleCallback,
    "bad_callback": BadCallback,
}


class InstallStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shop: str = Field(
        description="The shop's `*.myshopify.com` domain.", examples=["acme.myshopify.com"]
    )


class InstallStarted(BaseModel):
    shop: str
    authorize_url: str = Field(description="Send the merchant's browser here.")
    expires_in: int = Field(description="Seconds the install can be completed in.")


class Installed(BaseModel):
    shop: str
    company_id: str
    status: str = "installed"
    scopes: list[str]
    webhook_subscriptions: int = Field(description="Subscriptions created (or already there).")


def _app(settings: Settings) -> tuple[str, str, bytes]:
    """(client id, client secret, token key), or `NotConfigured`."""
    if (
        not settings.shopify_api_key
        or settings.shopify_api_secret is None
        or settings.shopify_token_key is None
    ):
        raise NotConfigured(
            "Set REFSTREAM_SHOPIFY_API_KEY, REFSTREAM_SHOPIFY_API_SECRET and "
            "REFSTREAM_SHOPIFY_TOKEN_KEY to install the Shopify app."
        )
    try:
        key = secretbox.load_key(settings.shopify_token_key.get_secret_value())
    except secretbox.SecretBoxError as exc:
        raise NotConfigured(f"REFSTREAM_SHOPIFY_TOKEN_KEY: {exc}") from exc
    return settings.shopify_api_key, settings.shopify_api_secret.get_secret_value(), key


def redirect_uri(settings: Settings) -> str:
    return settings.api_public_url.rstrip("/") + oauth.CALLBACK_PATH


@router.post(
    "/installs",
    status_code=201,
    operation_id="shopify.start_install",
    summary="Start installing the Shopify app on a shop (OAuth): returns Shopify's approval URL",
)
async def start_install(
    body: InstallStart, principal: ShopsWrite, request: Request
) -> InstallStarted:
    if not can_at(principal, "shops.write", None):  # company configuration: the root unit's
        raise Forbidden("You cannot install the Shopify app here.")
    settings: Settings = request.app.state.settings
    client_id, _, _ = _app(settings)
    shop = body.shop.strip().lower()
    if not valid_shop(shop):
        raise InvalidShop("`shop` must match ^[a-z0-9][a-z0-9-]*\\.myshopify\\.com$.")
    state = secrets.token_urlsafe(32)
    bound = {"tenant_id": principal.tenant_id, "actor": principal.actor, "shop": shop}
    redis: Redis = request.app.state.redis
    ttl = settings.shopify_install_ttl_seconds
    await redis.set(STATE_KEY + state, orjson.dumps(bound), ex=ttl)
    url = oauth.authorize_url(
        client_id=client_id,
        scopes=settings.shopify_scopes,
        redirect_uri=redirect_uri(settings),
        state=state,
        base=oauth.admin_base(shop, settings.shopify_admin_url),
    )
    return InstallStarted(shop=shop, authorize_url=url, expires_in=ttl)


@router.get(
    "/callback",
    operation_id="shopify.finish_install",
    summary="Shopify's OAuth redirect: checks it, exchanges the code, stores the shop",
)
async def finish_install(
    request: Request, session: WriteSession, meta: Meta, background: BackgroundTasks
) -> Installed:
    settings: Settings = request.app.state.settings
    client_id, client_secret, key = _app(settings)
    try:
        callback = oauth.check_callback(
            list(request.query_params.multi_items()),
            secret=client_secret,
            now=time.time(),
            max_age_seconds=settings.shopify_install_ttl_seconds,
        )
    except oauth.CallbackRefused as refused:
        raise _REFUSALS[refused.code](refused.detail) from None
    redis: Redis = request.app.state.redis
    stored = await redis.getdel(STATE_KEY + callback.state)
    if stored is None:
        raise InvalidState("This install link is unknown, was used already or has expired.")
    bound: dict[str, str] = orjson.loads(stored)
    if bound["shop"] != callback.shop:
        raise InvalidState("This install was started for another shop.")
    base = oauth.admin_base(callback.shop, settings.shopify_admin_url)
    async with httpx.AsyncClient(timeout=15.0) as client:
        try:
            grant = await admin.exchange_code(
                client, base, client_id=client_id, client_secret=client_secret, code=callback.code
            )
        except admin.AdminCallFailed as exc:
            raise ShopifyUnavailable(str(exc)) from exc
        await _store(session, callback.shop, bound, grant, key, meta)
        callback_url = settings.ingest_public_url.rstrip("/") + "/webhooks/shopify"
        try:
            subscriptions = await admin.subscribe_webhooks(
                client, base, grant.access_token, callback_url
            )
        except admin.AdminCallFailed as exc:  # rolls the install back
            raise ShopifyUnavailable(f"webhook subscription: {exc}") from exc
    background.add_task(announce_registry_change, request)
    return Installed(
        shop=callback.shop,
        company_id=bound["tenant_id"],
        scopes=[s for s in grant.scope.split(",") if s],
        webhook_subscriptions=len(subscriptions),
    )


async def _store(
    session: AsyncSession,
    shop: str,
    bound: dict[str, str],
    grant: admin.Grant,
    key: bytes,
    meta: RequestMeta,
) -> None:
    """The shop row as the installing company's OAuth shop, with the sealed token."""
    tenant_id, actor = bound["tenant_id"], bound["actor"]
    row = await session.scalar(select(Shop).where(Shop.domain == shop).with_for_update())
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "install": "oauth",
        "access_token": secretbox.seal(key, grant.access_token, shop),
        "token_scopes": grant.scope,
        "verified_at": meta.now,
        "installed_by": actor,
        "uninstalled_at": None,
        "active": True,
        "updated_at": meta.now,
    }
    if row is None:
        row = Shop(domain=shop, secret=None, previous_secret=None, created_at=meta.now, **values)
        session.add(row)
        before = None
    else:
        before = snapshot(row)
        if row.tenant_id != tenant_id:
            await _release(session, row, meta)
        # A custom app's secret stays accepted as the previous one while its webhooks drain.
        values["previous_secret"] = row.secret or row.previous_secret
        values["secret"] = None
        for name, value in values.items():
            setattr(row, name, value)
    await session.execute(
        delete(ShopClaim).where(ShopClaim.domain == shop, ShopClaim.tenant_id == tenant_id)
    )
    await session.flush()
    await record(
        session, tenant_id=tenant_id, actor=actor, action="shop.install", entity_type="shop",
        entity_id=shop, before=before if before and before["tenant_id"] == tenant_id else None,
        after=snapshot(row), meta=meta,
    )  # fmt: skip


async def _release(session: AsyncSession, row: Shop, meta: RequestMeta) -> None:
    """`row`'s previous company loses the shop: its collections of the shop go, and its audit
    log says why (the new owner is not named: it is another company's business)."""
    await session.execute(
        delete(ShopCollection).where(
            ShopCollection.shop == row.domain, ShopCollection.tenant_id == row.tenant_id
        )
    )
    await record(
        session, tenant_id=row.tenant_id, actor=SYSTEM_ACTOR, action="shop.release",
        entity_type="shop", entity_id=row.domain, before=snapshot(row), after=None, meta=meta,
    )  # fmt: skip
