"""Ingress under test: the real app (in-process ASGI) against the session's real broker,
Redis and PostgreSQL, with shops, an Odoo endpoint and a referral link registered."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from ingest.app import create_app
from ingest.cli import create_erp_endpoint, register_shop
from ingest.shopify import sign
from schemas.settings import Settings


@dataclass(frozen=True)
class Registered:
    tenant_id: str
    shop: str
    secret: str
    previous_secret: str
    odoo_token: str
    link_code: str
    agent_id: str
    program_id: str
    landing_url: str


@pytest.fixture
def registered(stack_settings: Settings) -> Registered:
    """A fresh tenant with a shop (secret + previous), an Odoo endpoint and a referral link."""
    suffix = uuid.uuid4().hex[:10]
    tenant = f"t_{suffix}"
    shop = f"shop-{suffix}.myshopify.com"
    secret, previous = f"new-secret-{suffix}", f"old-secret-{suffix}"
    register_shop(stack_settings, shop, tenant, secret, previous)
    token = create_erp_endpoint(stack_settings, tenant)
    program, agent, code = f"prg_{suffix}", f"agt_{suffix}", f"ana-{suffix}"
    landing = f"https://{shop}/collections/office?utm_source=refstream"
    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO programs (id, tenant_id, name, landing_url) VALUES (%s, %s, 'P', %s)",
            (program, tenant, landing),
        )
        conn.execute(
            "INSERT INTO agents (id, tenant_id, name) VALUES (%s, %s, 'Ana')", (agent, tenant)
        )
        conn.execute(
            "INSERT INTO links (id, tenant_id, program_id, agent_id, code)"
            " VALUES (%s, %s, %s, %s, %s)",
            (f"lnk_{suffix}", tenant, program, agent, code),
        )
    return Registered(tenant, shop, secret, previous, token, code, agent, program, landing)


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def make_client(stack_settings: Settings) -> ClientFactory:
    """`async with make_client(**setting_overrides) as client:` a running ingress app."""

    @asynccontextmanager
    async def factory(**overrides: object) -> AsyncIterator[httpx.AsyncClient]:
        settings = stack_settings.model_copy(update=overrides)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
                yield client

    return factory


@pytest.fixture
async def client(
    make_client: ClientFactory, registered: Registered
) -> AsyncIterator[httpx.AsyncClient]:
    """The ingress, started after this test's registrations."""
    async with make_client() as running:
        yield running


def shopify_headers(
    shop: str, secret: str, body: bytes, topic: str, event_id: str | None = None
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Hmac-Sha256": sign(secret, body),
        "X-Shopify-API-Version": "2026-07",
        "X-Shopify-Webhook-Id": f"wh-{uuid.uuid4().hex}",
        "X-Shopify-Event-Id": event_id or f"ev-{uuid.uuid4().hex}",
        "X-Shopify-Triggered-At": "2026-11-25T10:00:00Z",
    }
