"""Login, access-token checks, refresh rotation with reuse detection, logout, rate limiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from httpx import AsyncClient

from api.auth.tokens import issue_access_token
from schemas.settings import Settings
from tests.api.factories import PASSWORD, ClientFactory, bearer, create_company, login


async def test_login_issues_tokens_that_authenticate(client: AsyncClient) -> None:
    company = await create_company(client)
    tokens = await login(client, company=company["company"]["slug"], email=company["owner_email"])
    assert tokens["token_type"] == "bearer"
    assert tokens["refresh_token"].startswith("rrt_")
    me = await client.get("/v1/companies/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json()["id"] == company["company"]["id"]


async def test_wrong_password_unknown_user_and_unknown_company_look_the_same(
    client: AsyncClient,
) -> None:
    company = await create_company(client)
    slug = company["company"]["slug"]
    attempts = [
        {"company": slug, "email": company["owner_email"], "password": "wrong password!"},
        {"company": slug, "email": "nobody@example.com", "password": PASSWORD},
        {"company": "no-such-company", "email": company["owner_email"], "password": PASSWORD},
    ]
    bodies = []
    for attempt in attempts:
        response = await client.post("/v1/auth/login", json=attempt)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        bodies.append(response.json()["detail"])
    assert len(set(bodies)) == 1


async def test_expired_or_forged_access_tokens_are_rejected(
    client: AsyncClient, api_settings: Settings
) -> None:
    company = await create_company(client)
    tokens = await login(client, company=company["company"]["slug"], email=company["owner_email"])
    claims = {"user_id": company["owner_user_id"], "tenant_id": company["company"]["id"]}
    expired, _ = issue_access_token(
        **claims,
        secret=api_settings.jwt_secret.get_secret_value(),
        issuer=api_settings.jwt_issuer,
        ttl=timedelta(seconds=60),
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    forged, _ = issue_access_token(
        **claims,
        secret="not-the-server-secret-" + "y" * 40,
        issuer=api_settings.jwt_issuer,
        ttl=timedelta(seconds=60),
        now=datetime.now(UTC),
    )
    for token in (expired, forged, tokens["refresh_token"], "garbage"):
        response = await client.get("/v1/companies/me", headers=bearer(token))
        assert response.status_code == 401, token


async def test_refresh_rotates_and_the_old_token_stops_working(client: AsyncClient) -> None:
    company = await create_company(client)
    first = await login(client, company=company["company"]["slug"], email=company["owner_email"])
    response = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    me = await client.get("/v1/companies/me", headers=bearer(second["access_token"]))
    assert me.status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
    client: AsyncClient, pg_url: str
) -> None:
    company = await create_company(client)
    first = await login(client, company=company["company"]["slug"], email=company["owner_email"])
    second = (
        await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    ).json()

    reuse = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert reuse.json()["type"] == "urn:refstream:problem:refresh-token-reused"
    # The legitimate successor is dead too: the attacker and the victim both log in again.
    successor = await client.post(
        "/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert successor.status_code == 401
    with psycopg.connect(pg_url) as conn:
        actions = [
            row[0]
            for row in conn.execute(
                "SELECT action FROM audit_log WHERE tenant_id = %s ORDER BY seq",
                (company["company"]["id"],),
            )
        ]
    assert actions[-1] == "auth.refresh_reuse"


async def test_expired_refresh_token_is_rejected(client: AsyncClient, pg_url: str) -> None:
    company = await create_company(client)
    tokens = await login(client, company=company["company"]["slug"], email=company["owner_email"])
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE user_id = %s",
            (company["owner_user_id"],),
        )
    response = await client.post(
        "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_logout_revokes_the_refresh_token(client: AsyncClient) -> None:
    company = await create_company(client)
    tokens = await login(client, company=company["company"]["slug"], email=company["owner_email"])
    logout = await client.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert logout.status_code == 204
    response = await client.post(
        "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert response.status_code == 401


async def test_login_is_rate_limited_per_email_and_ip(
    client_factory: ClientFactory, api_settings: Settings
) -> None:
    attacker = client_factory("203.0.113.50")
    company = await create_company(attacker)
    body = {
        "company": company["company"]["slug"],
        "email": company["owner_email"],
        "password": "wrong password!",
    }
    for _ in range(api_settings.login_rate_limit):
        assert (await attacker.post("/v1/auth/login", json=body)).status_code == 401
    limited = await attacker.post("/v1/auth/login", json={**body, "password": PASSWORD})
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["Retry-After"]) <= api_settings.login_rate_window_seconds
    assert limited.json()["type"] == "urn:refstream:problem:rate-limited"
    # Another client IP is not locked out by the attacker.
    other = client_factory("203.0.113.51")
    ok = await other.post("/v1/auth/login", json={**body, "password": PASSWORD})
    assert ok.status_code == 200
