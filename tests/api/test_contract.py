"""The OpenAPI document as client teams consume it: explicit operation ids, problem answers with
the shared `Problem` schema, conditional GETs (ETag / If-None-Match -> 304), and GET /v1/me."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient

from api.app import create_app
from api.contract import missing_operation_ids
from schemas.settings import Settings
from tests.api.factories import bearer, build_world, create_note

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, ops in document["paths"].items()
        for method, operation in ops.items()
    ]


def test_every_route_has_an_explicit_unique_operation_id(api_settings: Settings) -> None:
    app = create_app(api_settings)
    assert missing_operation_ids(app) == [], "\n".join(missing_operation_ids(app))
    ids = [op["operationId"] for _, _, op in operations(app.openapi())]
    assert len(ids) == len(set(ids))
    assert {"notes.list", "notes.create", "ledger.approve_entry", "payouts.export_csv"} <= set(ids)


def test_a_route_without_an_operation_id_is_named_in_the_failure(api_settings: Settings) -> None:
    app = create_app(api_settings)

    @app.get("/v1/shop-collections", tags=["shop collections"])
    async def list_collections() -> list[str]:
        return []

    assert missing_operation_ids(app) == [
        "GET /v1/shop-collections (tests.api.test_contract.list_collections): no operation_id; "
        'add operation_id="shop_collections.<verb>" to its decorator'
    ]


def test_a_duplicate_operation_id_is_named_in_the_failure(api_settings: Settings) -> None:
    app = create_app(api_settings)

    @app.get("/v1/notes-again", operation_id="notes.list")
    async def again() -> list[str]:
        return []

    problems = missing_operation_ids(app)
    assert len(problems) == 2
    assert all("operation_id 'notes.list' is not unique" in p for p in problems)


def test_every_operation_documents_its_problems_with_the_problem_schema(
    api_settings: Settings,
) -> None:
    document = create_app(api_settings).openapi()
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "code", "title", "status", "detail"} <= set(problem["required"])
    for method, path, op in operations(document):
        responses = op["responses"]
        for status in ("4XX", "500"):
            content = responses[status]["content"]
            assert content == {"application/problem+json": {"schema": PROBLEM_REF}}, (method, path)
        for status, response in responses.items():
            # /readyz's 503 is the probe's own JSON, for orchestrators, not clients
            if status.startswith(("4", "5")) and (path, status) != ("/readyz", "503"):
                assert response["content"]["application/problem+json"]["schema"] == PROBLEM_REF
        if op.get("security"):
            assert {"401", "403"} <= set(responses), (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        validated = [p for p in op.get("parameters", []) if p["name"] != "If-None-Match"]
        if validated or "requestBody" in op:
            assert "422" in responses, (method, path)
    patch_note = document["paths"]["/v1/notes/{note_id}"]["patch"]["responses"]
    assert {"404", "409", "412", "422"} <= set(patch_note)
    assert "429" in document["paths"]["/v1/auth/login"]["post"]["responses"]
    assert "503" in document["paths"]["/v1/analytics/summary"]["get"]["responses"]


async def test_problem_bodies_carry_a_machine_readable_code(client: AsyncClient) -> None:
    missing = await client.get("/v1/agents")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "unauthorized"
    invalid = await client.post("/v1/auth/login", json={"company": 1})
    assert invalid.status_code == 422
    body = invalid.json()
    assert body["code"] == "validation-error"
    assert body["type"] == "urn:refstream:problem:validation-error"
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "email")}


async def test_list_and_item_gets_revalidate_with_304(client: AsyncClient) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    listed = await client.get("/v1/agents", headers=owner)
    assert listed.status_code == 200
    tag = listed.headers["etag"]
    again = await client.get("/v1/agents", headers={**owner, "If-None-Match": tag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == tag
    item = await client.get(f"/v1/agents/{world.team_agent_id}", headers=owner)
    item_tag = item.headers["etag"]
    unchanged = await client.get(
        f"/v1/agents/{world.team_agent_id}", headers={**owner, "If-None-Match": f"W/{item_tag}"}
    )
    assert unchanged.status_code == 304


async def test_a_write_changes_the_tag_so_the_next_revalidation_downloads(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    note_id = await create_note(client, world.tokens["owner"], agent_id=world.team_agent_id)
    item = await client.get(f"/v1/notes/{note_id}", headers=owner)
    tag = item.headers["etag"]
    listed = await client.get("/v1/notes", headers=owner)
    list_tag = listed.headers["etag"]
    changed = await client.patch(
        f"/v1/notes/{note_id}", json={"body": "changed"}, headers={**owner, "If-Match": tag}
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] != tag
    fresh = await client.get(f"/v1/notes/{note_id}", headers={**owner, "If-None-Match": tag})
    assert fresh.status_code == 200
    assert fresh.json()["body"] == "changed"
    assert fresh.headers["etag"] == changed.headers["etag"]
    fresh_list = await client.get("/v1/notes", headers={**owner, "If-None-Match": list_tag})
    assert fresh_list.status_code == 200
    assert fresh_list.headers["etag"] != list_tag


async def test_callers_seeing_different_rows_get_different_tags(client: AsyncClient) -> None:
    world = await build_world(client)
    owner = await client.get("/v1/agents", headers=bearer(world.tokens["owner"]))
    agent = await client.get(
        "/v1/agents",
        headers={**bearer(world.tokens["agent"]), "If-None-Match": owner.headers["etag"]},
    )
    assert agent.status_code == 200
    assert [a["id"] for a in agent.json()["items"]] == [world.own_agent_id]


async def test_me_tells_a_user_their_company_grants_permissions_and_agent_rows(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    me = await client.get("/v1/me", headers=bearer(world.tokens["agent"]))
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["kind"] == "user"
    assert body["user"]["id"] == world.users["agent"]
    assert body["user"]["email"] == world.emails["agent"]
    assert body["company"]["id"] == world.company_id
    assert [(g["unit_id"], g["unit_name"], g["role"]) for g in body["grants"]] == [
        (world.region_unit_id, "EMEA", "agent")
    ]
    assert "ledger.read" in body["grants"][0]["permissions"]
    assert body["permissions"]["ledger.read"] == [world.region_unit_id]
    assert "ledger.approve" not in body["permissions"]
    assert [a["id"] for a in body["agents"]] == [world.own_agent_id]
    assert body["agents"][0]["email"] == "me@example.com"

    owner = (await client.get("/v1/me", headers=bearer(world.tokens["owner"]))).json()
    assert owner["grants"][0]["role"] == "owner"
    assert owner["permissions"]["ledger.approve"] == [world.root_unit_id]
    assert owner["agents"] == []


async def test_me_for_an_api_key_has_no_user(client: AsyncClient) -> None:
    world = await build_world(client)
    created = await client.post(
        "/v1/api-keys",
        json={"name": "console", "unit_id": world.region_unit_id, "role": "observer"},
        headers=bearer(world.tokens["owner"]),
    )
    assert created.status_code == 201, created.text
    me = await client.get("/v1/me", headers={"X-API-Key": created.json()["key"]})
    assert me.status_code == 200, me.text
    body = me.json()
    assert (body["kind"], body["user"], body["agents"]) == ("api_key", None, [])
    assert body["permissions"]["analytics.read"] == [world.region_unit_id]
    assert "agents.write" not in body["permissions"]


async def test_me_needs_authentication(client: AsyncClient) -> None:
    me = await client.get("/v1/me")
    assert me.status_code == 401
    assert me.json()["code"] == "unauthorized"
