"""API keys: shown once, stored hashed, scoped to their role and unit, revocable."""

from __future__ import annotations

import psycopg
from httpx import AsyncClient

from tests.api.factories import bearer, build_world


async def test_api_key_is_shown_once_and_stored_hashed(client: AsyncClient, pg_url: str) -> None:
    world = await build_world(client)
    created = await client.post(
        "/v1/api-keys",
        json={"name": "ci", "role": "observer", "unit_id": world.region_unit_id},
        headers=bearer(world.tokens["owner"]),
    )
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("rsk_")
    listed = await client.get("/v1/api-keys", headers=bearer(world.tokens["owner"]))
    assert all("key" not in k for k in listed.json())
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute(
            "SELECT key_hash FROM api_keys WHERE id = %s", (created.json()["id"],)
        ).fetchone()
    assert stored is not None
    assert key not in stored[0]


async def test_api_key_acts_with_its_role_on_its_subtree(client: AsyncClient) -> None:
    world = await build_world(client)
    created = await client.post(
        "/v1/api-keys",
        json={"name": "region reader", "role": "observer", "unit_id": world.region_unit_id},
        headers=bearer(world.tokens["owner"]),
    )
    key = created.json()["key"]
    for headers in (bearer(key), {"X-API-Key": key}):
        agents = await client.get("/v1/agents", headers=headers)
        assert agents.status_code == 200
        ids = {a["id"] for a in agents.json()["items"]}
        assert world.team_agent_id in ids
        assert world.other_region_agent_id not in ids  # APAC is outside the key's unit
        outside = await client.get(f"/v1/agents/{world.other_region_agent_id}", headers=headers)
        assert outside.status_code == 404
        write = await client.post(
            "/v1/agents", json={"name": "x", "unit_id": world.team_unit_id}, headers=headers
        )
        assert write.status_code == 403
        assert all(a["email"] is None for a in agents.json()["items"])  # observer: names only


async def test_revoked_api_key_no_longer_authenticates(client: AsyncClient) -> None:
    world = await build_world(client)
    created = (
        await client.post(
            "/v1/api-keys",
            json={"name": "temp", "role": "manager", "unit_id": world.team_unit_id},
            headers=bearer(world.tokens["owner"]),
        )
    ).json()
    assert (await client.get("/v1/agents", headers=bearer(created["key"]))).status_code == 200
    revoked = await client.delete(
        f"/v1/api-keys/{created['id']}", headers=bearer(world.tokens["owner"])
    )
    assert revoked.status_code == 204
    assert (await client.get("/v1/agents", headers=bearer(created["key"]))).status_code == 401


async def test_api_keys_cannot_hold_the_agent_role(client: AsyncClient) -> None:
    world = await build_world(client)
    response = await client.post(
        "/v1/api-keys",
        json={"name": "bad", "role": "agent", "unit_id": world.team_unit_id},
        headers=bearer(world.tokens["owner"]),
    )
    assert response.status_code == 422
