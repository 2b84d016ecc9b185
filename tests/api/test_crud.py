"""The generated CRUD routers: ETags and If-Match, pagination, write-only secrets, registry
announcements and audit entries."""

from __future__ import annotations

import asyncio

import psycopg
from httpx import AsyncClient
from redis.asyncio import Redis

from schemas.registry import REGISTRY_CHANGED_CHANNEL
from tests.api.factories import bearer, build_world, create_program, create_shop, unique_slug


async def test_patch_with_a_stale_etag_answers_412_and_changes_nothing(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    program_id = await create_program(client, world.tokens["owner"])
    read = await client.get(f"/v1/programs/{program_id}", headers=owner)
    etag = read.headers["ETag"]
    first = await client.patch(
        f"/v1/programs/{program_id}", json={"name": "A"}, headers={**owner, "If-Match": etag}
    )
    assert first.status_code == 200
    assert first.headers["ETag"] != etag
    stale = await client.patch(
        f"/v1/programs/{program_id}", json={"name": "B"}, headers={**owner, "If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    again = await client.get(f"/v1/programs/{program_id}", headers=owner)
    assert again.json()["name"] == "A"
    assert again.headers["ETag"] == first.headers["ETag"]


async def test_list_pages_with_a_cursor_and_filters(client: AsyncClient) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    made = {await create_program(client, world.tokens["owner"]) for _ in range(5)}
    await create_program(client, world.tokens["owner"], currency="EUR")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "currency": "USD", "sort": "-created_at"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/programs", params=params, headers=owner)).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(seen) == made
    assert len(seen) == len(made)
    malformed = await client.get("/v1/programs", params={"cursor": "!!"}, headers=owner)
    assert malformed.status_code == 400


async def test_shop_secrets_are_write_only_and_rotation_keeps_the_previous_one(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    domain = await create_shop(client, world.tokens["owner"], pg_url)
    rotated = await client.patch(f"/v1/shops/{domain}", json={"secret": "n" * 32}, headers=owner)
    assert rotated.status_code == 200
    listed = await client.get("/v1/shops", headers=owner)
    for body in (rotated.json(), *listed.json()["items"]):
        assert "secret" not in body
        assert "previous_secret" not in body
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT secret, previous_secret FROM shops WHERE domain = %s", (domain,)
        ).fetchone()
        audit = conn.execute(
            "SELECT before::text, after::text FROM audit_log WHERE entity_id = %s", (domain,)
        ).fetchall()
    assert row == ("n" * 32, "s" * 32)
    assert audit
    assert all("s" * 32 not in str(a) and "n" * 32 not in str(a) for a in audit)


async def test_shop_changes_are_announced_to_the_ingress_after_commit(
    client: AsyncClient, redis_url: str, pg_url: str
) -> None:
    world = await build_world(client)
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(REGISTRY_CHANGED_CHANNEL)
    try:
        await create_shop(client, world.tokens["owner"], pg_url)
        message = None
        for _ in range(20):
            message = await pubsub.get_message(timeout=0.5)
            if message is not None:
                break
            await asyncio.sleep(0)
        assert message is not None
        assert message["channel"] == REGISTRY_CHANGED_CHANNEL.encode()
    finally:
        await pubsub.aclose()
        await redis.aclose()


async def test_a_duplicate_link_code_is_a_conflict_and_leaves_no_audit(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    program_id = await create_program(client, world.tokens["owner"])
    body = {"program_id": program_id, "agent_id": world.team_agent_id, "code": f"dup-{world.slug}"}
    assert (await client.post("/v1/links", json=body, headers=owner)).status_code == 201
    again = await client.post(
        "/v1/links", json=body, headers={**owner, "X-Request-Id": f"dup-{world.slug}"}
    )
    assert again.status_code == 409
    with psycopg.connect(pg_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM audit_log WHERE request_id = %s", (f"dup-{world.slug}",)
        ).fetchone()
    assert found == (0,)


async def test_agents_see_only_their_own_links(client: AsyncClient) -> None:
    world = await build_world(client)
    token = world.tokens["owner"]
    program_id = await create_program(client, token)
    for agent in (world.team_agent_id, world.own_agent_id):
        await client.post(
            "/v1/links",
            json={"program_id": program_id, "agent_id": agent, "code": f"c-{agent[-10:]}"},
            headers=bearer(token),
        )
    mine = await client.get("/v1/links", headers=bearer(world.tokens["agent"]))
    assert {link["agent_id"] for link in mine.json()["items"]} == {world.own_agent_id}


async def test_coupon_codes_are_stored_and_looked_up_upper_case(client: AsyncClient) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    program_id = await create_program(client, world.tokens["owner"])
    code = unique_slug("summer")  # lower-case, as a shop owner may type it
    created = await client.post(
        "/v1/coupons",
        json={"code": code, "program_id": program_id, "agent_id": world.team_agent_id},
        headers=owner,
    )
    assert created.status_code == 201, created.text
    assert created.json()["code"] == code.upper()
    duplicate = await client.post(
        "/v1/coupons",
        json={"code": code.upper(), "program_id": program_id, "agent_id": world.team_agent_id},
        headers=owner,
    )
    assert duplicate.status_code == 409
    assert (await client.get(f"/v1/coupons/{code}", headers=owner)).json()["code"] == code.upper()
    other_program = await create_program(client, world.tokens["owner"])
    changed = await client.patch(
        f"/v1/coupons/{code}", json={"program_id": other_program}, headers=owner
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["program_id"] == other_program
    assert (await client.delete(f"/v1/coupons/{code.title()}", headers=owner)).status_code == 204
