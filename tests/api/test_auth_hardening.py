"""Authentication edges (issue 13, item 7): session revocation ends access tokens, disabling a
user, login limits per IP, email and company, trusted proxies, ISO 4217 sign-up."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from api.app import create_app
from api.errors import Unauthorized
from api.live import service as live_service
from deploy.stack import api_argv, free_port, wait_ready
from schemas.settings import Settings
from tests.api.factories import (
    PASSWORD,
    bearer,
    build_world,
    create_company,
    login,
    unique_slug,
)

ME = "/v1/companies/me"


async def test_sign_up_accepts_active_iso_4217_currencies_only(client: AsyncClient) -> None:
    def body(currency: str) -> dict[str, str]:
        slug = unique_slug()
        return {
            "name": "Co",
            "slug": slug,
            "currency": currency,
            "owner_email": f"o@{slug}.example",
            "owner_password": PASSWORD,
        }

    refused = await client.post("/v1/companies", json=body("ZZZ"))
    assert refused.status_code == 422, refused.text
    assert "ISO 4217" in refused.text
    assert (await client.post("/v1/companies", json=body("EUR"))).status_code == 201


async def test_logging_out_ends_that_sessions_access_tokens_at_once(client: AsyncClient) -> None:
    company = await create_company(client)
    slug, email = company["company"]["slug"], company["owner_email"]
    session = await login(client, company=slug, email=email)
    other = await login(client, company=slug, email=email)
    assert (await client.get(ME, headers=bearer(session["access_token"]))).status_code == 200

    await client.post("/v1/auth/logout", json={"refresh_token": session["refresh_token"]})
    ended = await client.get(ME, headers=bearer(session["access_token"]))
    assert ended.status_code == 401
    assert "revoked" in ended.json()["detail"]
    assert (await client.get(ME, headers=bearer(other["access_token"]))).status_code == 200


async def test_a_live_ticket_of_a_session_logged_out_since_does_not_open_the_stream(
    app: FastAPI, client: AsyncClient
) -> None:
    """The stream re-reads its principal (ticket redemption, then every 30 s) with the session."""
    company = await create_company(client)
    session = await login(client, company=company["company"]["slug"], email=company["owner_email"])
    tickets = [
        (await client.post("/v1/live/tickets", headers=bearer(session["access_token"]))).json()
        for _ in range(2)
    ]
    redis, maker = app.state.redis, app.state.sessionmaker
    opened = await live_service.redeem_ticket(redis, maker, tickets[0]["ticket"])
    assert opened.session_id is not None
    await client.post("/v1/auth/logout", json={"refresh_token": session["refresh_token"]})
    with pytest.raises(Unauthorized):
        await live_service.redeem_ticket(redis, maker, tickets[1]["ticket"])
    with pytest.raises(Unauthorized):
        await live_service.reload_principal(
            maker, "user", opened.id, opened.tenant_id, session_id=opened.session_id
        )


async def test_a_reused_refresh_token_ends_the_access_tokens_of_its_family(
    client: AsyncClient,
) -> None:
    company = await create_company(client)
    first = await login(client, company=company["company"]["slug"], email=company["owner_email"])
    rotated = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    successor = rotated.json()["access_token"]
    assert (await client.get(ME, headers=bearer(successor))).status_code == 200
    reused = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    assert (await client.get(ME, headers=bearer(successor))).status_code == 401


async def test_an_owner_disables_a_user_and_every_login_and_token_of_theirs_stops(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    manager_session = await login(client, company=world.slug, email=world.emails["manager"])
    user = world.users["manager"]

    refused = await client.post(
        f"/v1/users/{user}/disable", headers=bearer(world.tokens["operator"])
    )
    assert refused.status_code == 403
    own = await client.post(f"/v1/users/{world.users['owner']}/disable", headers=owner)
    assert own.status_code == 409
    disabled = await client.post(f"/v1/users/{user}/disable", headers=owner)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled"] is True

    assert (await client.get(ME, headers=bearer(world.tokens["manager"]))).status_code == 401
    refresh = await client.post(
        "/v1/auth/refresh", json={"refresh_token": manager_session["refresh_token"]}
    )
    assert refresh.status_code == 401
    again = await client.post(
        "/v1/auth/login",
        json={"company": world.slug, "email": world.emails["manager"], "password": PASSWORD},
    )
    assert again.status_code == 401
    audit = (await client.get(f"/v1/audit?entity_id={user}", headers=owner)).json()["items"]
    assert audit[0]["action"] == "user.disable"
    assert audit[0]["actor"] == f"user:{world.users['owner']}"
    assert audit[0]["after"]["refresh_tokens_revoked"] >= 2


AppClients = Callable[..., Any]


@pytest.fixture
async def limited_app(api_settings: Settings) -> AsyncIterator[Callable[[str], AsyncClient]]:
    """The app with small login limits; `make(ip)` is a client from that address."""
    settings = api_settings.model_copy(
        update={
            "login_rate_limit": 100,
            "login_rate_limit_per_ip": 4,
            "login_failure_limit_per_email": 3,
            "login_failure_limit_per_company": 5,
        }
    )
    app = create_app(settings)
    clients: list[AsyncClient] = []

    def make(ip: str) -> AsyncClient:
        transport = ASGITransport(app=app, client=(ip, 40000))
        clients.append(AsyncClient(transport=transport, base_url="http://testserver"))
        return clients[-1]

    async with app.router.lifespan_context(app):
        yield make
        for each in clients:
            await each.aclose()


def fresh_ip() -> str:
    """A documentation-range address of this test's own (limits are kept in the shared Redis)."""
    n = uuid.uuid4().int
    return f"2001:db8:{n % 65536:x}:{(n >> 16) % 65536:x}::1"


async def attempt(client: AsyncClient, company: str, email: str, password: str) -> int:
    body = {"company": company, "email": email, "password": password}
    return (await client.post("/v1/auth/login", json=body)).status_code


async def test_one_address_spraying_many_emails_is_limited(
    limited_app: Callable[[str], AsyncClient],
) -> None:
    sprayer = limited_app(fresh_ip())
    company = await create_company(limited_app(fresh_ip()))
    slug = company["company"]["slug"]
    codes = [await attempt(sprayer, slug, f"u{i}@{slug}.example", "guess") for i in range(5)]
    assert codes == [401, 401, 401, 401, 429]
    assert await attempt(limited_app(fresh_ip()), slug, company["owner_email"], PASSWORD) == 200


async def test_guessing_one_account_from_many_addresses_is_limited(
    limited_app: Callable[[str], AsyncClient],
) -> None:
    company = await create_company(limited_app(fresh_ip()))
    slug, email = company["company"]["slug"], company["owner_email"]
    codes = [await attempt(limited_app(fresh_ip()), slug, email, "guess") for _ in range(3)]
    assert codes == [401, 401, 401]
    # Even the right password, from yet another address, waits for the window to end.
    assert await attempt(limited_app(fresh_ip()), slug, email, PASSWORD) == 429


async def test_spraying_one_company_from_many_addresses_is_limited(
    limited_app: Callable[[str], AsyncClient],
) -> None:
    company = await create_company(limited_app(fresh_ip()))
    other = await create_company(limited_app(fresh_ip()))
    slug = company["company"]["slug"]
    codes = [
        await attempt(limited_app(fresh_ip()), slug, f"u{i}@{slug}.example", "guess")
        for i in range(5)
    ]
    assert codes == [401] * 5
    assert await attempt(limited_app(fresh_ip()), slug, company["owner_email"], PASSWORD) == 429
    other_login = await attempt(
        limited_app(fresh_ip()), other["company"]["slug"], other["owner_email"], PASSWORD
    )
    assert other_login == 200


@asynccontextmanager
async def api_server(api_settings: Settings, tmp_path: Path, **env: str) -> AsyncIterator[str]:
    """The API as `refstream up` starts it (`deploy.stack.api_argv`), on a free port."""
    port = free_port()
    variables = {
        **os.environ,
        "REFSTREAM_POSTGRES_URL": api_settings.postgres_url,
        "REFSTREAM_REDIS_URL": api_settings.redis_url,
        "REFSTREAM_CLICKHOUSE_URL": api_settings.clickhouse_url,
        "REFSTREAM_JWT_SECRET": api_settings.jwt_secret.get_secret_value(),
        **env,
    }
    log = (tmp_path / f"api-{port}.log").open("wb")
    proc = subprocess.Popen(
        api_argv("127.0.0.1", port),
        env=variables,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready("api", lambda: _healthy(url), 60, proc)
        yield url
    finally:
        proc.kill()
        proc.wait()
        log.close()


def _healthy(url: str) -> str | None:
    try:
        return None if httpx.get(f"{url}/healthz").status_code == 200 else "not yet"
    except httpx.HTTPError as exc:
        return str(exc)


async def login_source_ip(http: AsyncClient, company: dict[str, Any], forwarded: str) -> str:
    """Log in with `X-Forwarded-For: forwarded`; the source IP the audit log recorded."""
    slug = company["company"]["slug"]
    body = {"company": slug, "email": company["owner_email"], "password": PASSWORD}
    response = await http.post("/v1/auth/login", json=body, headers={"X-Forwarded-For": forwarded})
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    entries = (await http.get("/v1/audit", headers=bearer(token))).json()["items"]
    source_ip: str = next(e for e in entries if e["action"] == "auth.login")["source_ip"]
    return source_ip


async def test_x_forwarded_for_is_trusted_only_from_configured_proxies(
    api_settings: Settings, tmp_path: Path
) -> None:
    """uvicorn alone trusts X-Forwarded-For from any local peer: a forged header reset the
    login limit and the audit's source IP. Now only REFSTREAM_TRUSTED_PROXIES may set it."""
    async with (
        api_server(api_settings, tmp_path) as url,
        AsyncClient(base_url=url, timeout=30) as http,
    ):
        company = await create_company(http)
        assert await login_source_ip(http, company, "203.0.113.99") == "127.0.0.1"
        slug, email = company["company"]["slug"], company["owner_email"]
        codes = []
        for i in range(api_settings.login_rate_limit + 1):
            response = await http.post(
                "/v1/auth/login",
                json={"company": slug, "email": email, "password": "guess"},
                headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
            )
            codes.append(response.status_code)
        assert codes[-1] == 429, codes
    async with (
        api_server(api_settings, tmp_path, REFSTREAM_TRUSTED_PROXIES="127.0.0.1") as url,
        AsyncClient(base_url=url, timeout=30) as http,
    ):
        company = await create_company(http)
        assert await login_source_ip(http, company, "203.0.113.99") == "203.0.113.99"
