"""Agents through the policy layer: subtree scoping, own rows for agents, personal data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import AsyncClient

from tests.api.factories import bearer, build_world


async def test_each_role_sees_the_agents_of_its_subtree(client: AsyncClient) -> None:
    world = await build_world(client)
    seen = {}
    for role in ("owner", "manager", "operator", "observer", "agent"):
        response = await client.get("/v1/agents", headers=bearer(world.tokens[role]))
        seen[role] = {a["id"] for a in response.json()["items"]}
    everyone = {world.team_agent_id, world.other_region_agent_id, world.own_agent_id}
    region = {world.team_agent_id, world.own_agent_id}
    assert seen["owner"] == everyone
    assert seen["manager"] == seen["operator"] == seen["observer"] == region
    assert seen["agent"] == {world.own_agent_id}


async def test_observers_see_names_but_no_personal_data(client: AsyncClient) -> None:
    world = await build_world(client)
    as_observer = await client.get(
        f"/v1/agents/{world.own_agent_id}", headers=bearer(world.tokens["observer"])
    )
    assert as_observer.json()["name"] == "Me"
    assert as_observer.json()["email"] is None
    as_agent = await client.get(
        f"/v1/agents/{world.own_agent_id}", headers=bearer(world.tokens["agent"])
    )
    assert as_agent.json()["email"] == "me@example.com"
    as_operator = await client.get(
        f"/v1/agents/{world.own_agent_id}", headers=bearer(world.tokens["operator"])
    )
    assert as_operator.json()["email"] == "me@example.com"


async def test_manager_cannot_move_an_agent_out_of_their_subtree(client: AsyncClient) -> None:
    world = await build_world(client)
    response = await client.patch(
        f"/v1/agents/{world.team_agent_id}",
        json={"unit_id": world.other_region_unit_id},
        headers=bearer(world.tokens["manager"]),
    )
    assert response.status_code == 404  # APAC is invisible to an EMEA manager
    moved = await client.patch(
        f"/v1/agents/{world.team_agent_id}",
        json={"unit_id": world.region_unit_id, "status": "paused"},
        headers=bearer(world.tokens["manager"]),
    )
    assert moved.status_code == 200
    assert moved.json()["unit_id"] == world.region_unit_id
    assert moved.json()["status"] == "paused"


async def test_another_companys_agent_is_not_found_not_forbidden(client: AsyncClient) -> None:
    mine = await build_world(client)
    theirs = await build_world(client)
    for method, body in (("GET", None), ("PATCH", {"name": "hijack"})):
        response = await client.request(
            method,
            f"/v1/agents/{theirs.team_agent_id}",
            json=body,
            headers=bearer(mine.tokens["owner"]),
        )
        assert response.status_code == 404
    missing = await client.get("/v1/agents/agt_doesnotexist", headers=bearer(mine.tokens["owner"]))
    assert (missing.status_code, missing.json()["detail"]) == (
        404,
        "No agent 'agt_doesnotexist'.",
    )


async def test_agent_list_pages_with_a_cursor(client: AsyncClient) -> None:
    world = await build_world(client)
    headers = bearer(world.tokens["owner"])
    first = (await client.get("/v1/agents?limit=2", headers=headers)).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    rest = (
        await client.get(f"/v1/agents?limit=2&cursor={first['next_cursor']}", headers=headers)
    ).json()
    ids = [a["id"] for a in first["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) == 3


async def test_agent_patch_with_a_stale_etag_answers_412_and_changes_nothing(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    manager = bearer(world.tokens["manager"])
    url = f"/v1/agents/{world.team_agent_id}"
    etag = (await client.get(url, headers=manager)).headers["ETag"]
    first = await client.patch(url, json={"name": "A"}, headers={**manager, "If-Match": etag})
    assert first.status_code == 200, first.text
    assert first.headers["ETag"] != etag
    stale = await client.patch(url, json={"name": "B"}, headers={**manager, "If-Match": etag})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    again = await client.get(url, headers=manager)
    assert again.json()["name"] == "A"
    assert again.headers["ETag"] == first.headers["ETag"]


async def test_status_changes_carry_their_effective_time_and_are_kept_as_history(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    manager = bearer(world.tokens["manager"])
    url = f"/v1/agents/{world.team_agent_id}"
    created = (await client.get(url, headers=manager)).json()
    assert [c["status"] for c in created["status_history"]] == ["active"]
    assert created["status_history"][0]["effective_at"] == created["created_at"]

    # Changes are ordered by their effect, whatever the order they are recorded in; the status
    # in effect now is the one with the latest effect.
    born = datetime.fromisoformat(created["created_at"])

    async def change(status: str, effective_at: datetime) -> dict[str, Any]:
        body = {"status": status, "effective_at": effective_at.isoformat()}
        response = await client.post(f"{url}/status", json=body, headers=manager)
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert (await change("terminated", born - timedelta(days=1)))["status"] == "active"
    patched = await client.patch(url, json={"status": "paused"}, headers=manager)  # from now
    assert patched.json()["status"] == "paused"
    latest = await change("active", born - timedelta(days=2))
    assert latest["status"] == "paused"
    history = (await client.get(url, headers=manager)).json()["status_history"]
    assert history == latest["status_history"]
    assert [c["status"] for c in history] == ["active", "terminated", "active", "paused"]
    assert datetime.fromisoformat(history[1]["effective_at"]) == born - timedelta(days=1)

    future = await client.post(
        f"{url}/status",
        json={
            "status": "paused",
            "effective_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        },
        headers=manager,
    )
    assert future.status_code == 422
    assert future.headers["content-type"] == "application/problem+json"
    assert "in the future" in future.json()["detail"]
    for body in ({"status": "retired"}, {"status": "paused", "effective_at": "2026-01-01T00:00"}):
        refused = await client.post(f"{url}/status", json=body, headers=manager)
        assert refused.status_code == 422, body  # unknown status; a naive instant
    assert len((await client.get(url, headers=manager)).json()["status_history"]) == 4  # unchanged
