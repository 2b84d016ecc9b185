"""The edge: problem+json for every error, request ids, health, readiness and metrics."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient

from api.app import create_app
from schemas.settings import Settings
from tests.api.factories import bearer, create_company, login

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


async def test_validation_errors_are_422_problems_listing_the_fields(client: AsyncClient) -> None:
    response = await client.post("/v1/companies", json={"name": "", "slug": "Bad Slug!"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) >= PROBLEM_KEYS
    assert body["type"] == "urn:refstream:problem:validation-error"
    fields = {tuple(e["loc"]) for e in body["errors"]}
    assert {("body", "slug"), ("body", "owner_email"), ("body", "owner_password")} <= fields


async def test_unknown_route_and_wrong_method_are_problems(client: AsyncClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["instance"] == "/v1/nothing-here"
    wrong = await client.delete("/v1/companies/me")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == "application/problem+json"


async def test_unauthenticated_is_401_problem_with_challenge(client: AsyncClient) -> None:
    response = await client.get("/v1/agents")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert set(response.json()) >= PROBLEM_KEYS


async def test_request_id_is_echoed_or_generated(client: AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["X-Request-Id"] == "abc-123"
    generated = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert generated.headers["X-Request-Id"].startswith("req_")
    problem = await client.get("/v1/agents", headers={"X-Request-Id": "trace-me"})
    assert problem.json()["request_id"] == "trace-me"


async def test_duplicate_slug_is_409(client: AsyncClient) -> None:
    company = await create_company(client)
    again = await client.post(
        "/v1/companies",
        json={
            "name": "Copycat",
            "slug": company["company"]["slug"],
            "owner_email": "x@example.com",
            "owner_password": "correct horse battery staple",
        },
    )
    assert again.status_code == 409
    assert again.json()["type"] == "urn:refstream:problem:conflict"


async def test_signup_can_be_disabled(api_settings: Settings) -> None:
    from httpx import ASGITransport

    closed = create_app(api_settings.model_copy(update={"open_signup": False}))
    async with (
        closed.router.lifespan_context(closed),
        AsyncClient(transport=ASGITransport(app=closed), base_url="http://t") as client,
    ):
        response = await client.post(
            "/v1/companies",
            json={
                "name": "Nope",
                "slug": "closed-signup",
                "owner_email": "x@example.com",
                "owner_password": "correct horse battery staple",
            },
        )
    assert response.status_code == 404


async def test_health_readiness_and_metrics(client: AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    company = await create_company(client)
    tokens = await login(client, company=company["company"]["slug"], email=company["owner_email"])
    await client.get("/v1/companies/me", headers=bearer(tokens["access_token"]))
    metrics = (await client.get("/metrics")).text
    assert 'route="/v1/companies/me"' in metrics
    assert "refstream_api_request_duration_seconds_bucket" in metrics


async def test_readiness_reports_a_down_dependency(api_settings: Settings) -> None:
    from httpx import ASGITransport

    broken = create_app(api_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    async with (
        broken.router.lifespan_context(broken),
        AsyncClient(transport=ASGITransport(app=broken), base_url="http://t") as client,
    ):
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("error")
    assert response.json()["checks"]["postgres"] == "ok"


def test_openapi_lists_the_v1_routes(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    assert "/v1/agents/{agent_id}" in paths
    assert "/v1/audit" in paths
