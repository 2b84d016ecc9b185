"""Click policies as program settings: validated on POST/PATCH (422 problem+json), stored
normalised, the relay token write-only (hashed, never shown or audited)."""

from __future__ import annotations

import psycopg
from httpx import AsyncClient

from schemas.click_policy import relay_token_hash
from tests.api.factories import bearer, build_world

TOKEN = "relay-" + "k" * 40


async def test_program_click_policies_round_trip_with_a_write_only_relay_token(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    plain = await client.post(
        "/v1/programs", json={"name": "P", "landing_url": "https://s.example/"}, headers=owner
    )
    body = plain.json()
    assert (body["click_max_age_hours"], body["bot_user_agents"], body["relay_ips"]) == (
        24,
        None,
        [],
    )
    assert body["relay_token_set"] is False

    created = await client.post(
        "/v1/programs",
        json={
            "name": "Relayed", "landing_url": "https://s.example/", "click_max_age_hours": 72,
            "bot_user_agents": [" Acme-Uptime ", "acme-uptime", "HeadlessChrome"],
            "relay_ips": ["203.0.113.0/24", "2001:db8::1"], "relay_token": TOKEN,
        },
        headers=owner,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    program = created.json()
    assert program["click_max_age_hours"] == 72
    assert program["bot_user_agents"] == ["acme-uptime", "headlesschrome"]
    assert program["relay_ips"] == ["203.0.113.0/24", "2001:db8::1/128"]
    assert program["relay_token_set"] is True
    assert TOKEN not in created.text
    assert "relay_token_hash" not in program
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT relay_token_hash FROM programs WHERE id = %s", (program["id"],)
        ).fetchone()
        audited = conn.execute(
            "SELECT after::text FROM audit_log WHERE entity_id = %s", (program["id"],)
        ).fetchone()
    assert row == (relay_token_hash(TOKEN),)
    assert audited is not None
    assert relay_token_hash(TOKEN) not in audited[0]

    changed = await client.patch(
        f"/v1/programs/{program['id']}",
        json={"bot_user_agents": None, "relay_token": None, "click_max_age_hours": 1},
        headers=owner,
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert (after["bot_user_agents"], after["relay_token_set"]) == (None, False)
    assert (after["click_max_age_hours"], after["relay_ips"]) == (1, program["relay_ips"])


BAD = [
    {"click_max_age_hours": 0},
    {"click_max_age_hours": 169},
    {"bot_user_agents": ["x"]},
    {"bot_user_agents": ["bad\x00pattern"]},
    {"bot_user_agents": ["bot"] * 101},
    {"relay_ips": ["10.0.0.1/8"]},
    {"relay_ips": ["relay.example"]},
    {"relay_token": "short"},
]


async def test_bad_click_policies_are_422_problems(client: AsyncClient) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    plain = await client.post(
        "/v1/programs", json={"name": "P", "landing_url": "https://s.example/"}, headers=owner
    )
    for change in BAD:
        created = await client.post(
            "/v1/programs", json={"name": "P", "landing_url": "https://s.example/", **change},
            headers=owner,
        )  # fmt: skip
        patched = await client.patch(
            f"/v1/programs/{plain.json()['id']}", json=change, headers=owner
        )
        for response in (created, patched):
            assert response.status_code == 422, change
            assert response.headers["content-type"] == "application/problem+json"
