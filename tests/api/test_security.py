"""Security hardening of the API (issue 13): what each role reads, URL validation, response
headers, CSV export, four eyes on money and authentication edges."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import psycopg
from httpx import AsyncClient

from tests.api.factories import (
    PASSWORD,
    World,
    approve,
    bearer,
    build_world,
    create_agent,
    create_payout,
    create_user,
    idempotent,
    insert_ledger_entry,
    login,
)


async def api_key(client: AsyncClient, world: World, *, role: str, unit_id: str) -> str:
    response = await client.post(
        "/v1/api-keys",
        json={"name": f"{role} key", "role": role, "unit_id": unit_id},
        headers=bearer(world.tokens["owner"]),
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


async def test_the_statement_shows_payouts_only_to_roles_that_read_payouts(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    agent = world.team_agent_id
    entry = insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=agent)
    await approve(client, world.tokens["owner"], entry)
    payout = await create_payout(client, world.tokens["owner"], agent_id=agent)
    observer_key = await api_key(client, world, role="observer", unit_id=world.region_unit_id)
    url = f"/v1/agents/{agent}/statement"

    for role in ("owner", "manager"):
        seen = (await client.get(url, headers=bearer(world.tokens[role]))).json()
        assert [p["id"] for p in seen["payouts"]] == [payout["id"]], role
    callers = {
        "observer": bearer(world.tokens["observer"]),
        "operator": bearer(world.tokens["operator"]),
        "observer key": {"X-API-Key": observer_key},
    }
    for name, headers in callers.items():
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, (name, response.text)
        assert response.json()["payouts"] is None, name
        assert response.json()["lines"], name  # the ledger totals stay readable


async def test_company_level_agents_hide_personal_data_from_an_observer_on_the_root(
    client: AsyncClient, pg_url: str
) -> None:
    """The user's operator grant on a team says nothing about agents outside it: a company-level
    agent (no unit) is judged by the root grant, an observer's."""
    world = await build_world(client)
    owner = world.tokens["owner"]
    email = f"mixed@{world.slug}.example"
    user = await create_user(
        client, owner, email=email, unit_id=world.team_unit_id, role="operator"
    )
    granted = await client.put(
        f"/v1/users/{user}/memberships/{world.root_unit_id}",
        json={"role": "observer"},
        headers=bearer(owner),
    )
    assert granted.status_code == 200, granted.text
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO agents (id, tenant_id, name, email) VALUES (%s, %s, 'HQ', 'hq@x.example')",
            (f"agt_hq_{world.slug}", world.company_id),
        )
    token = (await login(client, company=world.slug, email=email))["access_token"]

    hq = await client.get(f"/v1/agents/agt_hq_{world.slug}", headers=bearer(token))
    assert hq.status_code == 200, hq.text
    assert hq.json()["email"] is None
    team = await client.get(f"/v1/agents/{world.team_agent_id}", headers=bearer(token))
    assert team.json()["email"] == "agent@example.com"  # the team operator sees its own agents
    listed = (await client.get("/v1/agents", headers=bearer(token))).json()["items"]
    assert next(a for a in listed if a["id"] == f"agt_hq_{world.slug}")["email"] is None
    as_owner = await client.get(f"/v1/agents/agt_hq_{world.slug}", headers=bearer(owner))
    assert as_owner.json()["email"] == "hq@x.example"


async def test_a_landing_url_urllib_cannot_split_is_refused_with_422(client: AsyncClient) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    for url in ("http://[", "http://shop.example:99999/", "https://", "http://a b.example/"):
        response = await client.post(
            "/v1/programs", json={"name": "P", "landing_url": url}, headers=owner
        )
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    program = await client.post(
        "/v1/programs", json={"name": "P", "landing_url": "https://[::1]:8443/x"}, headers=owner
    )
    assert program.status_code == 201, program.text
    patched = await client.patch(
        f"/v1/programs/{program.json()['id']}", json={"landing_url": "http://["}, headers=owner
    )
    assert patched.status_code == 422


async def test_every_answer_carries_the_security_headers(client: AsyncClient) -> None:
    for response in (
        await client.get("/healthz"),
        await client.get("/v1/agents"),  # 401 problem
        await client.get("/no/such/path"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_answers_carrying_credentials_are_not_stored(client: AsyncClient) -> None:
    world = await build_world(client)
    logged_in = await client.post(
        "/v1/auth/login",
        json={"company": world.slug, "email": world.emails["owner"], "password": PASSWORD},
    )
    refreshed = await client.post(
        "/v1/auth/refresh", json={"refresh_token": logged_in.json()["refresh_token"]}
    )
    key = await client.post(
        "/v1/api-keys",
        json={"name": "k", "role": "observer", "unit_id": world.root_unit_id},
        headers=bearer(world.tokens["owner"]),
    )
    ticket = await client.post("/v1/live/tickets", headers=bearer(world.tokens["owner"]))
    for response in (logged_in, refreshed, key, ticket):
        assert response.status_code in {200, 201}, response.text
        assert response.headers["cache-control"] == "no-store", response.request.url


def csv_rows(text: str) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_payout_csv_cells_a_spreadsheet_would_evaluate_are_quoted(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    token = world.tokens["owner"]
    agent = world.team_agent_id
    evil = '=HYPERLINK("http://evil.example","x")'
    rows = (
        (f"le_f1_{world.slug}", evil, "10.00"),
        (f"le_f2_{world.slug}", "@SUM(A1)", "-2.50"),
        (f"le_f3_{world.slug}", "+1", "1.00"),
        (f"le_f4_{world.slug}", "-1+2", "1.00"),
        (f"le_f5_{world.slug}", "\tcmd", "1.00"),
    )
    with psycopg.connect(pg_url) as conn:
        for entry_id, order_id, amount in rows:
            conn.execute(
                "INSERT INTO ledger_entries (entry_id, tenant_id, agent_id, conversion_id,"
                " order_id, kind, amount, currency, occurred_at, source_event_id)"
                " VALUES (%s, %s, %s, %s, %s, 'accrual', %s, 'USD', now(), %s)",
                (entry_id, world.company_id, agent, entry_id, order_id, amount, entry_id),
            )
    for entry_id, _, _ in rows:
        await approve(client, token, entry_id)
    payout = await create_payout(client, token, agent_id=agent)
    paid = await client.post(
        f"/v1/payouts/{payout['id']}/paid",
        json={"reference": "=cmd|'/C calc'!A0"},
        headers=idempotent(token),
    )
    assert paid.status_code == 200, paid.text

    exported = await client.get(f"/v1/payouts/{payout['id']}/export.csv", headers=bearer(token))
    exported_rows = csv_rows(exported.text)
    assert sorted(r["order_id"] for r in exported_rows) == sorted(
        ["'" + evil, "'@SUM(A1)", "'+1", "'-1+2", "'\tcmd"]
    )
    assert {r["reference"] for r in exported_rows} == {"'=cmd|'/C calc'!A0"}
    assert sorted(r["amount"] for r in exported_rows) == [
        "-2.5000",
        "1.0000",
        "1.0000",
        "1.0000",
        "10.0000",
    ]


async def adjust(client: AsyncClient, token: str, agent_id: str, amount: str) -> Any:
    return await client.post(
        "/v1/ledger/adjustments",
        json={"agent_id": agent_id, "amount": amount, "currency": "USD", "reason": "bonus"},
        headers=idempotent(token),
    )


async def approval(client: AsyncClient, headers: dict[str, str], entry_id: str) -> int:
    response = await client.post(
        f"/v1/ledger/entries/{entry_id}/approve",
        json={},
        headers={**headers, "Idempotency-Key": f"idem-{uuid.uuid4().hex}"},
    )
    return response.status_code


async def test_nobody_approves_an_adjustment_they_made_even_through_their_api_key(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    owner, manager = world.tokens["owner"], world.tokens["manager"]
    by_manager = (await adjust(client, manager, world.team_agent_id, "900.00")).json()["entry_id"]
    by_owner = (await adjust(client, owner, world.team_agent_id, "20.00")).json()["entry_id"]
    owners_key = await api_key(client, world, role="owner", unit_id=world.root_unit_id)

    assert await approval(client, bearer(manager), by_manager) == 403
    assert await approval(client, bearer(owner), by_owner) == 403
    assert await approval(client, {"X-API-Key": owners_key}, by_owner) == 403
    assert await approval(client, bearer(owner), by_manager) == 200
    assert await approval(client, bearer(manager), by_owner) == 200


async def test_nobody_adjusts_or_approves_money_of_an_agent_linked_to_them(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    owner, manager = world.tokens["owner"], world.tokens["manager"]
    mine = await create_agent(
        client, owner, unit_id=world.team_unit_id, name="Mgr", user_id=world.users["manager"]
    )
    entry = insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=mine)

    assert await approval(client, bearer(manager), entry) == 403
    assert (await adjust(client, manager, mine, "5.00")).status_code == 403
    assert await approval(client, bearer(owner), entry) == 200


async def test_a_managers_limit_is_cumulative_per_agent_and_calendar_month(
    client: AsyncClient, pg_url: str
) -> None:
    """Two 900.00 entries of one agent: each is under the 1,000 limit, together they are not."""
    world = await build_world(client)
    owner, manager = world.tokens["owner"], world.tokens["manager"]
    agent, second_agent = world.team_agent_id, world.own_agent_id
    first, second, elsewhere = (
        insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=a, amount="900.00")
        for a in (agent, agent, second_agent)
    )
    assert await approval(client, bearer(manager), first) == 200
    assert await approval(client, bearer(manager), second) == 403
    assert await approval(client, bearer(manager), elsewhere) == 200  # another agent
    assert await approval(client, bearer(owner), second) == 200  # owners have no limit

    assert (await adjust(client, manager, agent, "600.00")).status_code == 201
    refused = await adjust(client, manager, agent, "600.00")
    assert refused.status_code == 403, refused.text
    assert "this month" in refused.json()["detail"]
    assert (await adjust(client, owner, agent, "600.00")).status_code == 201


async def test_only_owners_link_an_agent_to_a_user(client: AsyncClient) -> None:
    world = await build_world(client)
    body = {"name": "Mine", "unit_id": world.team_unit_id, "user_id": world.users["manager"]}
    as_manager = await client.post("/v1/agents", json=body, headers=bearer(world.tokens["manager"]))
    assert as_manager.status_code == 403, as_manager.text
    unlinked = await client.post(
        "/v1/agents", json={**body, "user_id": None}, headers=bearer(world.tokens["manager"])
    )
    assert unlinked.status_code == 201
    as_owner = await client.post("/v1/agents", json=body, headers=bearer(world.tokens["owner"]))
    assert as_owner.status_code == 201
