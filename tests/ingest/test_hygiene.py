"""What the ingress answers outside the happy path: a stored landing URL that cannot be
redirected to, unknown paths, security headers and its OpenAPI document."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

from ingest.app import create_app
from ingest.clicks import CLICK_PARAM, ip_hash
from schemas.settings import Settings
from tests.ingest.conftest import ClientFactory, Registered
from tests.ingest.test_clicks import clicks_by_id

PROBLEM = "application/problem+json"


async def test_a_stored_landing_url_that_cannot_be_split_answers_a_problem_not_500(
    make_client: ClientFactory, registered: Registered, stack_settings: Settings
) -> None:
    """Written past the API (or before it validated URLs): the shopper gets a clear 404."""
    code = f"bad-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO programs (id, tenant_id, name, landing_url) VALUES (%s, %s, 'P', %s)",
            (f"prg_{code}", registered.tenant_id, "http://["),
        )
        conn.execute(
            "INSERT INTO links (id, tenant_id, program_id, agent_id, code)"
            " VALUES (%s, %s, %s, %s, %s)",
            (f"lnk_{code}", registered.tenant_id, f"prg_{code}", registered.agent_id, code),
        )
    async with make_client() as client:
        response = await client.get(f"/r/{code}")
        healthy = await client.get(f"/r/{registered.link_code}")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "bad_landing_url"
    assert healthy.status_code == 302


async def test_unknown_paths_and_methods_answer_problem_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/no/such/path")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    assert missing.json()["code"] == "not_found"
    wrong_method = await client.get("/webhooks/shopify")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == PROBLEM
    assert wrong_method.json()["code"] == "method_not_allowed"
    assert "POST" in wrong_method.headers["allow"]


async def test_every_answer_carries_the_security_headers(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    for response in (
        await client.get("/healthz"),
        await client.get(f"/r/{registered.link_code}"),
        await client.get("/no/such/path"),
        await client.post("/webhooks/shopify", content=b"{}"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"


async def test_the_openapi_document_states_bodies_and_error_codes(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    shopify = paths["/webhooks/shopify"]["post"]
    assert "application/json" in shopify["requestBody"]["content"]
    assert {"401", "413", "415", "429", "503"} <= set(shopify["responses"])
    assert "invalid_signature" in shopify["responses"]["401"]["description"]
    assert "application/problem+json" in shopify["responses"]["401"]["content"]
    odoo = paths["/webhooks/odoo/{token}"]["post"]
    assert odoo["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "_model",
        "_id",
    ]
    pixel = paths["/v1/clicks"]["post"]
    batch = pixel["requestBody"]["content"]["application/json"]["schema"]
    assert batch["properties"]["clicks"]["items"]["required"] == ["link_code"]
    assert "$ref" not in str(batch)
    assert "202" in pixel["responses"]
    redirect = paths["/r/{link_code}"]["get"]
    assert {"302", "404"} <= set(redirect["responses"])
    assert "200" not in redirect["responses"]  # it never answers 200


async def test_every_problem_answer_refers_to_one_named_problem_schema(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    problem = document["components"]["schemas"]["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail", "code"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            for status, answer in responses.items():
                problem_body = answer.get("content", {}).get("application/problem+json")
                if problem_body is not None:
                    assert problem_body["schema"] == {"$ref": "#/components/schemas/Problem"}, (
                        method, path, status,
                    )  # fmt: skip


async def test_an_unexpected_error_answers_a_problem_500(stack_settings: Settings) -> None:
    app = create_app(stack_settings)

    async def broken() -> None:
        raise RuntimeError("a bug with internals: /secret/path")

    app.add_api_route("/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        response = await client.get("/broken")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "internal_error"
    assert "secret" not in response.text


async def test_an_unexpected_error_on_the_hot_path_answers_a_problem_500(
    stack_settings: Settings,
) -> None:
    """The hot path (`ingest.hot`) runs before FastAPI's error middleware: it answers the same
    problem+json 500 itself, with the request id and the security headers."""
    app = create_app(stack_settings)

    class BrokenRegistry:
        async def shop(self, domain: str) -> None:
            raise RuntimeError("a bug with internals: /secret/path")

        async def link(self, code: str) -> None:
            raise RuntimeError("a bug with internals: /secret/path")

    app.state.ingress = SimpleNamespace(settings=stack_settings, registry=BrokenRegistry())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        webhook = await client.post(
            "/webhooks/shopify", content=b"{}", headers={
                "Content-Type": "application/json", "X-Shopify-Shop-Domain": "a.myshopify.com",
                "X-Request-Id": "req-hot-500",
            },
        )  # fmt: skip
        click = await client.get("/r/some-code")
    for response in (webhook, click):
        assert response.status_code == 500
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "internal_error"
        assert "secret" not in response.text
        assert response.headers["x-content-type-options"] == "nosniff"
    assert webhook.headers["x-request-id"] == "req-hot-500"


async def test_click_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(
    make_client: ClientFactory, registered: Registered, stack_settings: Settings
) -> None:
    """The test client's address is 203.0.113.7 (tests/ingest/conftest.py)."""
    headers = {"X-Forwarded-For": "192.0.2.44", "User-Agent": "Mozilla/5.0"}
    ids = []
    for trusted in ([], ["203.0.113.0/24"]):
        async with make_client(trusted_proxies=trusted) as client:
            response = await client.get(f"/r/{registered.link_code}", headers=headers)
        ids.append(parse_qs(urlsplit(response.headers["location"]).query)[CLICK_PARAM][0])
    clicks = clicks_by_id(stack_settings)
    salt = stack_settings.click_ip_salt
    assert clicks[ids[0]].ip_hash == ip_hash(salt, "203.0.113.7")
    assert clicks[ids[1]].ip_hash == ip_hash(salt, "192.0.2.44")
