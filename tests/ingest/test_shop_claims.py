"""Shops at the ingress: a custom-app claim (`refstream shop add`, `POST /v1/shops`) becomes a
shop only with a webhook signed with its secret; a shop installed through OAuth (the API driven
against the Admin API stand-in) takes webhooks signed with the app's client secret until
`app/uninstalled`, which deletes its token and stops its intake. Real ingress, broker, Redis
and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from api.app import create_app as create_api
from deploy.cli import app as cli
from ingest import reconcile
from ingest.cli import file_claim
from schemas.settings import Settings
from tests.api.factories import bearer, create_company, login
from tests.fixtures.shopify_admin import ShopifyAdmin, serve
from tests.ingest.conftest import ClientFactory, shopify_headers
from tests.ingest.test_reconcile import admin_order

CLIENT_ID, CLIENT_SECRET = "ingest-test-client", "ingest-test-client-secret-0123"
TOKEN_KEY = "3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def order(order_id: int) -> bytes:
    return orjson.dumps({"id": order_id, "updated_at": "2026-12-01T10:00:00Z"})


def tenant_of(settings: Settings, domain: str) -> str | None:
    with psycopg.connect(settings.postgres_url) as conn:
        row = conn.execute("SELECT tenant_id FROM shops WHERE domain = %s", (domain,)).fetchone()
    return row[0] if row else None


def new_tenant(settings: Settings) -> str:
    tenant = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, slug) VALUES (%s, %s, %s)", (tenant, tenant, tenant)
        )
    return tenant


async def deliver(
    client: httpx.AsyncClient, shop: str, secret: str, body: bytes, topic: str = "orders/create"
) -> httpx.Response:
    headers = shopify_headers(shop, secret, body, topic)
    return await client.post("/webhooks/shopify", content=body, headers=headers)


async def test_refstream_shop_add_files_a_claim_that_a_signed_webhook_proves(
    make_client: ClientFactory, stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = new_tenant(stack_settings)
    domain, secret = f"claim-{uuid.uuid4().hex[:10]}.myshopify.com", f"shpss_{uuid.uuid4().hex}"
    monkeypatch.setenv("REFSTREAM_POSTGRES_URL", stack_settings.postgres_url)
    monkeypatch.setenv("REFSTREAM_REDIS_URL", stack_settings.redis_url)
    refused = CliRunner().invoke(cli, ["shop", "add", "evil.example.com", "--secret",
                                       secret, "--tenant", tenant])  # fmt: skip
    assert refused.exit_code == 1
    added = CliRunner().invoke(cli, ["shop", "add", domain, "--secret", secret,
                                     "--tenant", tenant])  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "unverified" in added.output
    assert tenant_of(stack_settings, domain) is None  # a claim, no shop yet

    async with make_client() as client:
        for forged in ("x", "wrong-secret-0123456789"):
            unproven = await deliver(client, domain, forged, order(1))
            assert unproven.status_code == 401
            assert unproven.headers["content-type"] == "application/problem+json"
            assert unproven.json()["code"] == "unknown_shop"  # no word of the claim
        assert tenant_of(stack_settings, domain) is None

        proven = await deliver(client, domain, secret, order(2))
        assert proven.status_code == 200, proven.text
        assert proven.json()["status"] == "accepted"
        assert tenant_of(stack_settings, domain) == tenant
        assert (await deliver(client, domain, secret, order(3))).json()["status"] == "accepted"
        assert (await deliver(client, domain, "wrong-secret-0123", order(4))).status_code == 401
    with psycopg.connect(stack_settings.postgres_url) as conn:
        left = conn.execute("SELECT count(*) FROM shop_claims WHERE domain = %s", (domain,))
        assert left.fetchone() == (0,)


async def test_two_companies_claiming_a_domain_get_what_their_own_secret_proves(
    make_client: ClientFactory, stack_settings: Settings
) -> None:
    first, second = new_tenant(stack_settings), new_tenant(stack_settings)
    domain = f"both-{uuid.uuid4().hex[:10]}.myshopify.com"
    file_claim(stack_settings, domain, first, "first-company-secret-0123")
    file_claim(stack_settings, domain, second, "second-company-secret-0123")

    async with make_client() as client:
        won = await deliver(client, domain, "second-company-secret-0123", order(10))
        assert won.status_code == 200, won.text
        assert tenant_of(stack_settings, domain) == second
        # The first claim proves nothing about a shop that has an owner now.
        late = await deliver(client, domain, "first-company-secret-0123", order(11))
        assert late.status_code == 401
        assert late.json()["code"] == "invalid_signature"
    assert tenant_of(stack_settings, domain) == second


@pytest.fixture
def stand_in() -> Iterator[ShopifyAdmin]:
    admin = ShopifyAdmin(
        shop=f"oauth-{uuid.uuid4().hex[:10]}.myshopify.com",
        token="shpat_unused",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    running = serve(admin)
    try:
        yield admin
    finally:
        running.stop()


@pytest.fixture
def app_settings(stack_settings: Settings, stand_in: ShopifyAdmin) -> Settings:
    return stack_settings.model_copy(
        update={
            "shopify_api_key": CLIENT_ID,
            "shopify_api_secret": SecretStr(CLIENT_SECRET),
            "shopify_token_key": SecretStr(TOKEN_KEY),
            "shopify_admin_url": stand_in.url,
            "ingest_public_url": "https://ingest.example.test",  # Shopify takes HTTPS only
            "jwt_secret": SecretStr("test-secret-" + "x" * 40),
        }
    )


@pytest.fixture
async def api(app_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    application = create_api(app_settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def install(api: httpx.AsyncClient, shop: str) -> dict[str, Any]:
    """A company installs the app on `shop`, approving at the stand-in."""
    made = await create_company(api)
    owner = await login(api, company=made["company"]["slug"], email=made["owner_email"])
    started = await api.post(
        "/v1/shopify/installs", json={"shop": shop}, headers=bearer(owner["access_token"])
    )
    assert started.status_code == 201, started.text
    async with httpx.AsyncClient() as browser:
        approved = await browser.get(started.json()["authorize_url"])
    location = urlsplit(approved.headers["location"])
    installed = await api.get(f"{location.path}?{location.query}")
    assert installed.status_code == 200, installed.text
    body: dict[str, Any] = installed.json()
    return body


async def test_app_uninstalled_revokes_the_token_and_stops_the_shops_intake(
    make_client: ClientFactory,
    api: httpx.AsyncClient,
    app_settings: Settings,
    stand_in: ShopifyAdmin,
) -> None:
    shop = stand_in.shop
    installed = await install(api, shop)
    origin = {"Origin": f"https://{shop}", "Access-Control-Request-Method": "POST"}
    # The stored token is what `refstream shopify reconcile` uses for the shop by default.
    token = reconcile.stored_token(app_settings, shop)
    assert token is not None
    assert token == stand_in.issued_tokens[-1]
    stand_in.put(admin_order(7000, datetime(2026, 12, 1, tzinfo=UTC)))
    run = await reconcile.reconcile(app_settings, shop, token=token, base_url=stand_in.url,
                                    since=datetime(2026, 11, 1, tzinfo=UTC))  # fmt: skip
    assert (run.orders, run.tenant_id) == (1, installed["company_id"])

    async with make_client(shopify_api_secret=SecretStr(CLIENT_SECRET)) as ingress:
        # Webhooks of an installed shop are signed with the app's client secret.
        accepted = await deliver(ingress, shop, CLIENT_SECRET, order(20))
        assert accepted.status_code == 200, accepted.text
        assert (await deliver(ingress, shop, "not-the-app-secret", order(21))).status_code == 401
        assert (await ingress.options("/v1/clicks", headers=origin)).status_code == 204

        body = orjson.dumps({"id": 548380009, "name": "Acme", "domain": shop})
        uninstalled = await deliver(ingress, shop, CLIENT_SECRET, body, "app/uninstalled")
        assert uninstalled.status_code == 200, uninstalled.text
        stand_in.revoke_tokens()  # Shopify's side of the uninstall

        with psycopg.connect(app_settings.postgres_url) as conn:
            row = conn.execute(
                "SELECT tenant_id, access_token, token_scopes, uninstalled_at FROM shops"
                " WHERE domain = %s",
                (shop,),
            ).fetchone()
        assert row is not None
        tenant, token, scopes, when = row
        assert (tenant, token, scopes) == (installed["company_id"], None, None)
        assert when is not None
        assert reconcile.stored_token(app_settings, shop) is None

        refused = await deliver(ingress, shop, CLIENT_SECRET, order(22))
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "shop_uninstalled"
        # A forged delivery still learns only that its signature is wrong.
        assert (await deliver(ingress, shop, "forged-secret-0123", order(23))).status_code == 401
        # Its storefront is no longer an allowed origin of the pixel.
        assert (await ingress.options("/v1/clicks", headers=origin)).status_code == 403

    # Installing again restores the intake.
    assert (await install(api, shop))["shop"] == shop
    async with make_client(shopify_api_secret=SecretStr(CLIENT_SECRET)) as ingress:
        again = await deliver(ingress, shop, CLIENT_SECRET, order(24))
        assert again.status_code == 200, again.text


async def test_a_custom_app_shop_through_the_api_stops_at_uninstall_and_reconnects(
    make_client: ClientFactory, api: httpx.AsyncClient, app_settings: Settings
) -> None:
    made = await create_company(api)
    owner = await login(api, company=made["company"]["slug"], email=made["owner_email"])
    headers = bearer(owner["access_token"])
    domain, secret = f"custom-{uuid.uuid4().hex[:10]}.myshopify.com", f"shpss_{uuid.uuid4().hex}"
    claimed = await api.post("/v1/shops", json={"domain": domain, "secret": secret},
                             headers=headers)  # fmt: skip
    assert claimed.status_code == 202, claimed.text
    assert (await api.get(f"/v1/shops/{domain}", headers=headers)).status_code == 404

    async with make_client() as ingress:
        proof = await deliver(ingress, domain, secret, order(30))
        assert proof.status_code == 200, proof.text
        shop = await api.get(f"/v1/shops/{domain}", headers=headers)
        assert shop.status_code == 200
        assert (shop.json()["install"], shop.json()["uninstalled_at"]) == ("custom", None)
        assert (await api.get("/v1/shop-claims", headers=headers)).json() == []

        body = orjson.dumps({"id": 548380010, "name": "Custom", "domain": domain})
        assert (await deliver(ingress, domain, secret, body, "app/uninstalled")).status_code == 200
        refused = await deliver(ingress, domain, secret, order(31))
        assert refused.status_code == 403
        assert refused.json()["code"] == "shop_uninstalled"

        # Reinstalled on Shopify: the owner gives the app's secret again, which reconnects it.
        patched = await api.patch(f"/v1/shops/{domain}", json={"secret": secret},
                                  headers=headers)  # fmt: skip
        assert patched.status_code == 200, patched.text
        assert patched.json()["uninstalled_at"] is None
        for _ in range(50):  # the ingress reloads on the API's announcement
            again = await deliver(ingress, domain, secret, order(32))
            if again.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert again.status_code == 200, again.text
