"""A shop is accepted the moment its row exists: an unknown domain is looked up in PostgreSQL
once (`Registry.shop`), not refused until the registry announcement arrives; a domain found
nowhere is remembered as unknown for `ingest_unknown_shop_ttl_seconds`."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import psycopg

from ingest.cli import ensure_tenant
from schemas.settings import Settings
from tests.ingest.conftest import ClientFactory, Registered, shopify_headers


def insert_shop_unannounced(settings: Settings, tenant: str, domain: str, secret: str) -> None:
    """The row the API writes, without the Redis announcement (it comes later, or is lost)."""
    with psycopg.connect(settings.postgres_url) as conn:
        ensure_tenant(conn, tenant)
        conn.execute(
            "INSERT INTO shops (domain, tenant_id, secret) VALUES (%s, %s, %s)",
            (domain, tenant, secret),
        )


async def test_a_shop_created_after_the_start_is_accepted_on_its_first_webhook(
    make_client: ClientFactory, registered: Registered, stack_settings: Settings
) -> None:
    suffix = uuid.uuid4().hex[:10]
    domain, secret = f"fresh-{suffix}.myshopify.com", f"fresh-secret-{suffix}"
    body = orjson.dumps({"id": 5_000_001, "created_at": "2026-11-02T08:00:00Z"})
    async with make_client() as client:
        insert_shop_unannounced(stack_settings, registered.tenant_id, domain, secret)
        response = await client.post(
            "/webhooks/shopify", content=body,
            headers=shopify_headers(domain, secret, body, "orders/paid"),
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "accepted"
        forged = await client.post(
            "/webhooks/shopify", content=body,
            headers=shopify_headers(domain, "not-the-secret", body, "orders/paid"),
        )  # fmt: skip
        assert forged.status_code == 401
        assert forged.json()["code"] == "invalid_signature"


async def test_an_unknown_domain_is_refused_then_asked_again_after_the_negative_ttl(
    make_client: ClientFactory, registered: Registered, stack_settings: Settings
) -> None:
    suffix = uuid.uuid4().hex[:10]
    domain, secret = f"later-{suffix}.myshopify.com", f"later-secret-{suffix}"
    body = orjson.dumps({"id": 5_000_002, "created_at": "2026-11-02T08:00:00Z"})

    async def post() -> tuple[int, str]:
        response = await client.post(
            "/webhooks/shopify", content=body,
            headers=shopify_headers(domain, secret, body, "orders/paid"),
        )  # fmt: skip
        return response.status_code, response.json().get("code") or response.json()["status"]

    async with make_client(ingest_unknown_shop_ttl_seconds=1.0) as client:
        assert await post() == (401, "unknown_shop")
        insert_shop_unannounced(stack_settings, registered.tenant_id, domain, secret)
        # Within the negative TTL the domain is known to be unknown: PostgreSQL is not asked.
        assert await post() == (401, "unknown_shop")
        await asyncio.sleep(1.2)
        assert await post() == (200, "accepted")
