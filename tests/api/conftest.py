"""API tests: the app from `create_app`, its lifespan run for real, against a PostgreSQL and a
ClickHouse database of the API tests' own and the session's Redis index. Every test builds its
own company with unique slugs, so tests never depend on each other's rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from api.app import create_app
from deploy import migrations
from schemas.settings import Settings
from tests.api.factories import ClientFactory
from tests.fixtures.clickhouse import ClickHouseServer
from tests.fixtures.postgres import PgTarget, drop_database, migrated_database

SHOPIFY_CLIENT_ID = "test-client-id"
SHOPIFY_CLIENT_SECRET = "test-client-secret-0123456789"
SHOPIFY_TOKEN_KEY = "q2hZ4Jr1l5m7yN0dVbXpC8kLwE3sTgUaOiRfHjKmNnQ="  # 32 bytes, url-safe base64


@pytest.fixture(scope="session")
def pg_target(postgres_server: str) -> Iterator[PgTarget]:
    """A migrated database of the API tests' own: other suites count rows in the shared one
    (e.g. every audit_log row), and the API tests write many."""
    target = migrated_database(postgres_server)
    yield target
    drop_database(target)


@pytest.fixture(scope="session")
def api_clickhouse_url(clickhouse_server: ClickHouseServer) -> str:
    """A migrated ClickHouse database of the API tests' own (analytics reads it)."""
    url = f"http://default:@{clickhouse_server.host}:{clickhouse_server.port}/api_{uuid.uuid4().hex[:12]}"
    migrations.migrate_clickhouse(Settings(clickhouse_url=url))
    return url


@pytest.fixture
def api_settings(pg_url: str, redis_url: str, api_clickhouse_url: str) -> Settings:
    return Settings(
        postgres_url=pg_url,
        redis_url=redis_url,
        clickhouse_url=api_clickhouse_url,
        jwt_secret="test-secret-" + "x" * 40,
        # Every test's client shares one address within the window: only tests that set it
        # lower (tests/api/test_auth_hardening.py) exercise the per-IP limit.
        login_rate_limit_per_ip=100_000,
        # The Shopify app (OAuth installs); tests/api/test_shopify_install.py points
        # `shopify_admin_url` at its stand-in.
        shopify_api_key=SHOPIFY_CLIENT_ID,
        shopify_api_secret=SHOPIFY_CLIENT_SECRET,
        shopify_token_key=SHOPIFY_TOKEN_KEY,
    )


@pytest.fixture
async def app(api_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(api_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client_factory(app: FastAPI) -> AsyncIterator[ClientFactory]:
    """Clients of the app, each from a client IP of the caller's choice (rate limits are per IP)."""
    clients: list[AsyncClient] = []

    def make(ip: str = "198.51.100.7") -> AsyncClient:
        transport = ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 40000))
        client = AsyncClient(transport=transport, base_url="http://testserver")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(client_factory: ClientFactory) -> AsyncClient:
    return client_factory()
