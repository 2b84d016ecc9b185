"""Installing the Shopify app through OAuth, driven end to end against the local Admin API
stand-in (`tests/fixtures/shopify_admin.py`): the test starts the install, follows the
authorize URL to the stand-in, which approves and redirects to the callback with a query signed
as Shopify signs it; the API exchanges the code and subscribes the webhooks at the stand-in.
Also the custom-app path: a claim without proof is no shop, and nothing tells a company that
another company has a domain."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis import Redis

from api.app import create_app
from api.shopify.admin import SUBSCRIBED_TOPICS, graphql_topic
from api.shopify.endpoints import STATE_KEY
from schemas import secretbox
from schemas.settings import Settings
from tests.api.conftest import SHOPIFY_CLIENT_ID, SHOPIFY_CLIENT_SECRET, SHOPIFY_TOKEN_KEY
from tests.api.factories import (
    bearer,
    create_company,
    create_shop,
    login,
    prove_claim,
    unique_slug,
)
from tests.fixtures.shopify_admin import ShopifyAdmin, serve

PROBLEM = "application/problem+json"


@pytest.fixture
def stand_in() -> Iterator[ShopifyAdmin]:
    """The shop's admin, for the app the API is configured with."""
    admin = ShopifyAdmin(
        shop=f"{unique_slug('acme')}.myshopify.com",
        token="shpat_unused",
        client_id=SHOPIFY_CLIENT_ID,
        client_secret=SHOPIFY_CLIENT_SECRET,
    )
    running = serve(admin)
    try:
        yield admin
    finally:
        running.stop()


@pytest.fixture
async def shopify_app(api_settings: Settings, stand_in: ShopifyAdmin) -> AsyncIterator[FastAPI]:
    settings = api_settings.model_copy(
        update={
            "shopify_admin_url": stand_in.url,
            "ingest_public_url": "https://ingest.example.test",
        }
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def api(shopify_app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=shopify_app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@dataclass
class Company:
    id: str
    token: str


async def new_company(api: AsyncClient) -> Company:
    made = await create_company(api)
    tokens = await login(api, company=made["company"]["slug"], email=made["owner_email"])
    return Company(made["company"]["id"], tokens["access_token"])


async def approve(api: AsyncClient, company: Company, shop: str) -> str:
    """Start the install and follow Shopify's approval: the callback path and query the
    stand-in redirected to (not followed yet)."""
    started = await api.post(
        "/v1/shopify/installs", json={"shop": shop}, headers=bearer(company.token)
    )
    assert started.status_code == 201, started.text
    async with httpx.AsyncClient() as browser:
        redirected = await browser.get(started.json()["authorize_url"])
    assert redirected.status_code == 302, redirected.text
    location = urlsplit(redirected.headers["location"])
    assert location.path == "/v1/shopify/callback"
    return f"{location.path}?{location.query}"


def tampered(callback: str, **changes: str) -> str:
    path, _, query = callback.partition("?")
    params = dict(parse_qsl(query)) | changes
    return f"{path}?{urlencode(params)}"


def shop_row(pg_url: str, domain: str) -> tuple[Any, ...] | None:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT tenant_id, install, access_token, secret, token_scopes, uninstalled_at"
            " FROM shops WHERE domain = %s",
            (domain,),
        ).fetchone()


async def test_an_install_stores_the_token_sealed_and_subscribes_the_webhooks(
    api: AsyncClient, stand_in: ShopifyAdmin, pg_url: str
) -> None:
    company = await new_company(api)
    callback = await approve(api, company, stand_in.shop)

    installed = await api.get(callback)

    assert installed.status_code == 200, installed.text
    assert installed.json()["shop"] == stand_in.shop
    assert installed.json()["company_id"] == company.id
    [token] = stand_in.issued_tokens
    row = shop_row(pg_url, stand_in.shop)
    assert row is not None
    tenant, install, sealed, secret, scopes, uninstalled = row
    assert (tenant, install, secret, uninstalled) == (company.id, "oauth", None, None)
    assert scopes == stand_in.granted_scope
    # Stored sealed: not the plaintext, and it opens with the key from settings only.
    assert token.encode() not in bytes(sealed)
    key = secretbox.load_key(SHOPIFY_TOKEN_KEY)
    assert secretbox.open_sealed(key, bytes(sealed), stand_in.shop) == token
    with pytest.raises(secretbox.SecretBoxError):
        secretbox.open_sealed(key, bytes(sealed), "another-shop.myshopify.com")
    # One subscription per topic, at the ingress, made with the new token.
    assert sorted(s["topic"] for s in stand_in.subscriptions) == sorted(
        graphql_topic(t) for t in SUBSCRIBED_TOPICS
    )
    assert "APP_UNINSTALLED" in {s["topic"] for s in stand_in.subscriptions}
    assert {s["callbackUrl"] for s in stand_in.subscriptions} == {
        "https://ingest.example.test/webhooks/shopify"
    }
    # The shop is the company's, and the audit entry carries no token.
    read = await api.get(f"/v1/shops/{stand_in.shop}", headers=bearer(company.token))
    assert read.status_code == 200
    assert read.json()["install"] == "oauth"
    assert "access_token" not in read.json()
    rotate = await api.patch(
        f"/v1/shops/{stand_in.shop}", json={"secret": "s" * 32}, headers=bearer(company.token)
    )
    assert rotate.status_code == 422
    assert rotate.headers["content-type"] == PROBLEM
    assert installed.json()["webhook_subscriptions"] == len(SUBSCRIBED_TOPICS)
    with psycopg.connect(pg_url) as conn:
        audit = conn.execute(
            "SELECT action, after::text FROM audit_log WHERE tenant_id = %s AND entity_id = %s",
            (company.id, stand_in.shop),
        ).fetchall()
    assert [a for a, _ in audit] == ["shop.install"]
    assert token not in audit[0][1]


async def test_a_tampered_callback_is_refused_and_leaves_the_install_usable(
    api: AsyncClient, stand_in: ShopifyAdmin, pg_url: str
) -> None:
    company = await new_company(api)
    callback = await approve(api, company, stand_in.shop)
    params = dict(parse_qsl(callback.partition("?")[2]))
    forged_hmac = params["hmac"][:-1] + ("0" if params["hmac"][-1] != "0" else "1")

    for bad in (
        tampered(callback, hmac=forged_hmac),
        tampered(callback, shop="someone-else.myshopify.com"),  # signed for another shop
        tampered(callback, code="guessed"),
        callback.replace("hmac=", "hmac_=", 1),  # no hmac at all
    ):
        refused = await api.get(bad)
        assert refused.status_code in (400, 401), refused.text
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["code"] in ("invalid-signature", "bad-callback")
    assert shop_row(pg_url, stand_in.shop) is None
    assert stand_in.issued_tokens == []  # no code was exchanged
    # Refusals before the signature check consumed nothing: the genuine callback still works.
    assert (await api.get(callback)).status_code == 200


async def test_a_state_is_single_use_expires_and_is_bound_to_its_shop(
    api: AsyncClient, stand_in: ShopifyAdmin, api_settings: Settings, redis_url: str
) -> None:
    company = await new_company(api)
    callback = await approve(api, company, stand_in.shop)
    state = dict(parse_qsl(callback.partition("?")[2]))["state"]
    redis = Redis.from_url(redis_url)
    try:
        ttl = redis.ttl(STATE_KEY + state)
        assert 0 < ttl <= api_settings.shopify_install_ttl_seconds
        assert (await api.get(callback)).status_code == 200
        reused = await api.get(callback)  # the same redirect again (a replay)
        assert reused.status_code == 400
        assert reused.json()["code"] == "invalid-state"

        # Expiry: Redis drops the nonce when its TTL lapses (made to lapse now).
        second = await approve(api, company, stand_in.shop)
        second_state = dict(parse_qsl(second.partition("?")[2]))["state"]
        redis.pexpire(STATE_KEY + second_state, 1)
        time.sleep(0.01)
        expired = await api.get(second)
        assert expired.status_code == 400
        assert expired.json()["code"] == "invalid-state"
    finally:
        redis.close()

    # A state issued for one shop does not install another, even with a valid signature.
    other_shop = f"{unique_slug('other')}.myshopify.com"
    started = await api.post(
        "/v1/shopify/installs", json={"shop": other_shop}, headers=bearer(company.token)
    )
    other_state = dict(parse_qsl(urlsplit(started.json()["authorize_url"]).query))["state"]
    now = str(int(time.time()))
    signed = stand_in.signed_query(
        {"code": "c", "shop": stand_in.shop, "state": other_state, "timestamp": now}
    )
    crossed = await api.get(f"/v1/shopify/callback?{urlencode(signed)}")
    assert crossed.status_code == 400
    assert crossed.json()["code"] == "invalid-state"


async def test_shop_domains_must_be_myshopify_domains_and_callbacks_recent(
    api: AsyncClient, stand_in: ShopifyAdmin
) -> None:
    company = await new_company(api)
    for shop in ("evil.example.com", "-acme.myshopify.com", "acme.myshopify.com.evil.io",
                 "acme.myshopify.com:443", "ac_me.myshopify.com"):  # fmt: skip
        started = await api.post(
            "/v1/shopify/installs", json={"shop": shop}, headers=bearer(company.token)
        )
        assert started.status_code == 400, shop
        assert started.headers["content-type"] == PROBLEM
        assert started.json()["code"] == "invalid-shop"
    now = str(int(time.time()))
    # Correctly signed (with the app's secret) but naming a host that is no Shopify shop.
    evil = stand_in.signed_query({"code": "c", "shop": "evil.example.com", "state": "s",
                                  "timestamp": now})  # fmt: skip
    refused = await api.get(f"/v1/shopify/callback?{urlencode(evil)}")
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid-shop"
    stale = stand_in.signed_query({"code": "c", "shop": stand_in.shop, "state": "s",
                                   "timestamp": str(int(time.time()) - 3600)})  # fmt: skip
    refused = await api.get(f"/v1/shopify/callback?{urlencode(stale)}")
    assert refused.status_code == 400
    assert refused.json()["code"] == "stale-callback"
    wrong_host = stand_in.signed_query({
        "code": "c", "shop": stand_in.shop, "state": "s", "timestamp": now,
        "host": base64.b64encode(b"admin.shopify.com/store/someone-else").decode(),
    })  # fmt: skip
    refused = await api.get(f"/v1/shopify/callback?{urlencode(wrong_host)}")
    assert refused.status_code == 400
    assert refused.json()["code"] == "bad-callback"


async def test_an_install_takes_a_shop_over_from_another_companys_custom_app(
    api: AsyncClient, stand_in: ShopifyAdmin, pg_url: str
) -> None:
    squatter, merchant = await new_company(api), await new_company(api)
    claimed = await api.post(
        "/v1/shops",
        json={"domain": stand_in.shop, "secret": "a-secret-of-my-own-choosing"},
        headers=bearer(squatter.token),
    )
    assert claimed.status_code == 202
    await prove_claim(pg_url, stand_in.shop, "a-secret-of-my-own-choosing")
    row = shop_row(pg_url, stand_in.shop)
    assert row is not None
    assert row[0] == squatter.id

    assert (await api.get(await approve(api, merchant, stand_in.shop))).status_code == 200

    row = shop_row(pg_url, stand_in.shop)
    assert row is not None
    assert (row[0], row[1]) == (merchant.id, "oauth")
    gone = await api.get(f"/v1/shops/{stand_in.shop}", headers=bearer(squatter.token))
    assert gone.status_code == 404
    with psycopg.connect(pg_url) as conn:
        released = conn.execute(
            "SELECT actor FROM audit_log WHERE tenant_id = %s AND action = 'shop.release'",
            (squatter.id,),
        ).fetchall()
    assert released == [("system:shopify-oauth",)]


async def test_a_claim_without_proof_is_no_shop_and_a_taken_domain_is_not_revealed(
    api: AsyncClient, pg_url: str
) -> None:
    owner, other = await new_company(api), await new_company(api)
    taken = await create_shop(api, owner.token, pg_url)  # claimed and proven
    free = f"{unique_slug('free')}.myshopify.com"
    nowhere = f"{unique_slug('none')}.myshopify.com"
    secret = f"secret-{uuid.uuid4().hex}"

    answers = []
    for domain in (taken, free):
        claimed = await api.post(
            "/v1/shops", json={"domain": domain, "secret": secret}, headers=bearer(other.token)
        )
        answers.append(claimed)
    # The same answer for another company's shop and for a free domain: a claim, unverified.
    assert [a.status_code for a in answers] == [202, 202]
    assert [sorted(a.json()) for a in answers] == [sorted(answers[1].json())] * 2
    assert {a.json()["status"] for a in answers} == {"unverified"}
    assert "secret" not in answers[0].json()
    # Without proof, no shop: reading it is the same 404 as for a domain nobody has.
    for domain in (taken, free):
        read = await api.get(f"/v1/shops/{domain}", headers=bearer(other.token))
        absent = await api.get(f"/v1/shops/{nowhere}", headers=bearer(other.token))
        assert read.status_code == absent.status_code == 404
        assert read.json()["code"] == absent.json()["code"]
        assert read.json()["detail"] == absent.json()["detail"].replace(nowhere, domain)
    listed = await api.get("/v1/shops", headers=bearer(other.token))
    assert listed.json()["items"] == []
    claims = await api.get("/v1/shop-claims", headers=bearer(other.token))
    assert sorted(c["domain"] for c in claims.json()) == sorted([taken, free])
    # The owner's shop is untouched, and the owner may be told about its own.
    row = shop_row(pg_url, taken)
    assert row is not None
    assert row[0] == owner.id
    again = await api.post(
        "/v1/shops", json={"domain": taken, "secret": secret}, headers=bearer(owner.token)
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM


async def test_a_failed_webhook_subscription_rolls_the_install_back(
    api_settings: Settings, stand_in: ShopifyAdmin, pg_url: str
) -> None:
    # Shopify accepts HTTPS endpoints only: an http:// ingress URL fails the subscriptions.
    settings = api_settings.model_copy(
        update={"shopify_admin_url": stand_in.url, "ingest_public_url": "http://ingest.test"}
    )
    application = create_app(settings)
    async with (
        application.router.lifespan_context(application),
        AsyncClient(
            transport=ASGITransport(app=application, raise_app_exceptions=False),
            base_url="http://testserver",
        ) as client,
    ):
        company = await new_company(client)
        failed = await client.get(await approve(client, company, stand_in.shop))
        assert failed.status_code == 502
        assert failed.headers["content-type"] == PROBLEM
        assert failed.json()["code"] == "shopify-call-failed"
        assert "not supported" in failed.json()["detail"]
    assert len(stand_in.issued_tokens) == 1  # Shopify issued one; refstream kept nothing
    assert shop_row(pg_url, stand_in.shop) is None
    assert stand_in.subscriptions == []
