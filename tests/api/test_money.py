"""Rules, ledger and payouts: versioning, status events, totals, idempotency and who may move
money (checked in the services, not only by the routes)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from api.authz.permissions import Role
from api.authz.policies import Grant, Principal
from api.context import RequestMeta
from api.errors import Forbidden
from api.ledger import service as ledger_service
from api.payouts import service as payout_service
from api.payouts.schemas import PayoutCreate
from schemas.ledger import EntryStatus
from tests.api.factories import (
    World,
    approve,
    bearer,
    build_world,
    create_payout,
    create_program,
    create_user,
    idempotent,
    insert_ledger_entry,
    login,
)


async def test_editing_rules_adds_a_version_and_old_versions_stay_readable(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    program_id = await create_program(client, world.tokens["owner"])
    for value in ("10", "12"):
        body = {"rules": {"currency": "USD", "base": {"kind": "percent", "value": value}}}
        created = await client.post(f"/v1/programs/{program_id}/rules", json=body, headers=owner)
        assert created.status_code == 201, created.text
    versions = (await client.get(f"/v1/programs/{program_id}/rules", headers=owner)).json()
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["rule_id"] == versions[1]["rule_id"]
    first = (await client.get(f"/v1/programs/{program_id}/rules/1", headers=owner)).json()
    assert first["body"]["base"]["value"] == "10"
    invalid = await client.post(
        f"/v1/programs/{program_id}/rules",
        json={"rules": {"currency": "USD", "base": {"kind": "percent", "value": "120"}}},
        headers=owner,
    )
    assert invalid.status_code == 422
    wrong_currency = await client.post(
        f"/v1/programs/{program_id}/rules",
        json={"rules": {"currency": "EUR", "base": {"kind": "percent", "value": "1"}}},
        headers=owner,
    )
    assert wrong_currency.status_code == 422
    assert (
        await client.get(f"/v1/programs/{program_id}/rules/3", headers=owner)
    ).status_code == 404


def percent_rules(value: str) -> dict[str, Any]:
    return {"rules": {"currency": "USD", "base": {"kind": "percent", "value": value}}}


async def root_manager(client: AsyncClient, world: World) -> dict[str, str]:
    """Headers of a manager on the root unit (rules are company configuration)."""
    email = f"root-manager@{world.slug}.example"
    await create_user(
        client, world.tokens["owner"], email=email, unit_id=world.root_unit_id, role="manager"
    )
    return bearer((await login(client, company=world.slug, email=email))["access_token"])


async def test_a_manager_proposes_rules_and_an_owner_activates_or_rejects_them(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    manager = await root_manager(client, world)
    program_id = await create_program(client, world.tokens["owner"])
    rules = f"/v1/programs/{program_id}/rules"

    live = await client.post(rules, json=percent_rules("10"), headers=owner)
    assert live.json()["status"] == "active"  # an owner's version is live at once
    proposed = await client.post(rules, json=percent_rules("12"), headers=manager)
    assert proposed.status_code == 201, proposed.text
    assert (proposed.json()["version"], proposed.json()["status"]) == (2, "proposed")
    assert proposed.json()["reviewed_by"] is None
    assert (await client.post(f"{rules}/2/activate", headers=manager)).status_code == 403

    activated = await client.post(f"{rules}/2/activate", headers=owner)
    assert activated.status_code == 200, activated.text
    assert activated.json()["status"] == "active"
    assert activated.json()["reviewed_by"] == f"user:{world.users['owner']}"
    assert (await client.post(f"{rules}/2/reject", headers=owner)).status_code == 409

    await client.post(rules, json=percent_rules("14"), headers=manager)
    rejected = await client.post(f"{rules}/3/reject", headers=owner)
    assert rejected.json()["status"] == "rejected"
    assert (await client.post(f"{rules}/3/activate", headers=owner)).status_code == 409
    assert (await client.post(f"{rules}/9/activate", headers=owner)).status_code == 404

    audit = (await client.get("/v1/audit", headers=owner)).json()["items"]
    actions = [e["action"] for e in audit if e["entity_type"] == "commission_rule"]
    assert actions[:4] == [
        "commission_rule.reject",
        "commission_rule.create",
        "commission_rule.activate",
        "commission_rule.create",
    ]


async def test_a_proposal_older_than_the_active_version_cannot_be_activated(
    client: AsyncClient,
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    manager = await root_manager(client, world)
    program_id = await create_program(client, world.tokens["owner"])
    rules = f"/v1/programs/{program_id}/rules"
    await client.post(rules, json=percent_rules("10"), headers=manager)
    await client.post(rules, json=percent_rules("11"), headers=owner)

    stale = await client.post(f"{rules}/1/activate", headers=owner)
    assert stale.status_code == 409, stale.text
    assert (await client.get(f"{rules}/1", headers=owner)).json()["status"] == "proposed"


async def test_a_region_manager_cannot_propose_company_wide_rules(client: AsyncClient) -> None:
    world = await build_world(client)
    program_id = await create_program(client, world.tokens["owner"])
    response = await client.post(
        f"/v1/programs/{program_id}/rules",
        json=percent_rules("10"),
        headers=bearer(world.tokens["manager"]),
    )
    assert response.status_code == 403


def totals_by_status(page: dict[str, Any]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for total in page["totals"]:
        out[total["status"]] += Decimal(total["amount"])
    return out


async def test_ledger_totals_stay_consistent_through_approve_adjust_and_payout(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    token = world.tokens["owner"]
    agent = world.team_agent_id
    entries = [
        insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=agent, amount=a)
        for a in ("10.00", "20.00", "30.00", "-5.00")
    ]
    await approve(client, token, entries[0])
    await approve(client, token, entries[1])
    await approve(client, token, entries[3])
    rejected = await client.post(
        f"/v1/ledger/entries/{entries[2]}/reject",
        json={"reason": "fraud"},
        headers=idempotent(token),
    )
    assert rejected.json()["status"] == "rejected"
    adjustment = await client.post(
        "/v1/ledger/adjustments",
        json={"agent_id": agent, "amount": "7.50", "currency": "USD", "reason": "fair bonus"},
        headers=idempotent(token),
    )
    assert adjustment.status_code == 201
    # Four eyes: the owner who made the adjustment may not approve it; the manager does.
    await approve(client, world.tokens["manager"], adjustment.json()["entry_id"])
    payout = await create_payout(client, token, agent_id=agent)
    assert Decimal(payout["amount"]) == Decimal("32.50")  # 10 + 20 - 5 + 7.50
    paid = await client.post(
        f"/v1/payouts/{payout['id']}/paid", json={"reference": "T-1"}, headers=idempotent(token)
    )
    assert paid.json()["status"] == "paid"

    page = (
        await client.get("/v1/ledger", params={"agent_id": agent}, headers=bearer(token))
    ).json()
    by_status = totals_by_status(page)
    assert by_status == {"paid": Decimal("32.50"), "rejected": Decimal("30.00")}
    assert sum(Decimal(e["amount"]) for e in page["items"]) == sum(by_status.values())
    assert {e["status"] for e in page["items"] if e["entry_id"] in payout_entries(payout)} == {
        "paid"
    }
    statement = (await client.get(f"/v1/agents/{agent}/statement", headers=bearer(token))).json()
    (line,) = statement["lines"]
    assert Decimal(line["paid"]) == Decimal("32.50")
    assert Decimal(line["earned"]) == Decimal("32.50")
    assert Decimal(line["payable"]) == 0
    csv = await client.get(f"/v1/payouts/{payout['id']}/export.csv", headers=bearer(token))
    lines = csv.text.strip().splitlines()
    assert len(lines) == 1 + payout["entry_count"]
    assert sum(Decimal(row.split(",")[6]) for row in lines[1:]) == Decimal("32.50")
    with psycopg.connect(pg_url) as conn, pytest.raises(psycopg.Error):
        conn.execute("UPDATE ledger_entries SET amount = 0 WHERE entry_id = %s", (entries[0],))


def payout_entries(payout: dict[str, Any]) -> set[str]:
    return {item["entry_id"] for item in payout["items"]}


async def test_a_paid_or_paying_entry_cannot_change_status(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    token = world.tokens["owner"]
    entry = insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=world.team_agent_id)
    await approve(client, token, entry)
    await create_payout(client, token, agent_id=world.team_agent_id)
    hold = await client.post(f"/v1/ledger/entries/{entry}/hold", json={}, headers=idempotent(token))
    assert hold.status_code == 409
    nothing_left = await client.post(
        "/v1/payouts",
        json={"agent_id": world.team_agent_id, "currency": "USD"},
        headers=idempotent(token),
    )
    assert nothing_left.status_code == 409


async def test_idempotency_key_replays_the_same_request_and_refuses_another(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    headers = idempotent(world.tokens["owner"], key=f"adj-{world.slug}")
    body = {"agent_id": world.team_agent_id, "amount": "3.00", "currency": "USD", "reason": "gift"}
    first = await client.post("/v1/ledger/adjustments", json=body, headers=headers)
    replay = await client.post("/v1/ledger/adjustments", json=body, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    other = await client.post(
        "/v1/ledger/adjustments", json={**body, "amount": "4.00"}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")
    with psycopg.connect(pg_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM ledger_entries WHERE tenant_id = %s AND kind = 'adjustment'",
            (world.company_id,),
        ).fetchone()
        audits = conn.execute(
            "SELECT count(*) FROM audit_log"
            " WHERE tenant_id = %s AND action = 'ledger_entry.adjust'",
            (world.company_id,),
        ).fetchone()
    assert count == (1,)
    assert audits == (1,)
    missing = await client.post(
        "/v1/ledger/adjustments", json=body, headers=bearer(world.tokens["owner"])
    )
    assert missing.status_code == 422


async def test_an_adjustment_needs_a_reason(client: AsyncClient) -> None:
    world = await build_world(client)
    response = await client.post(
        "/v1/ledger/adjustments",
        json={"agent_id": world.team_agent_id, "amount": "3.00", "currency": "USD", "reason": ""},
        headers=idempotent(world.tokens["owner"]),
    )
    assert response.status_code == 422


async def test_managers_approve_only_up_to_the_limit(client: AsyncClient, pg_url: str) -> None:
    world = await build_world(client)
    big = insert_ledger_entry(
        pg_url, tenant_id=world.company_id, agent_id=world.team_agent_id, amount="5000.00"
    )
    as_manager = await client.post(
        f"/v1/ledger/entries/{big}/approve", json={}, headers=idempotent(world.tokens["manager"])
    )
    assert as_manager.status_code == 403
    await approve(client, world.tokens["owner"], big)


def principal_with(role: Role, world_root_path: str, tenant_id: str) -> Principal:
    grant = Grant(unit_id="u", unit_path=world_root_path, role=role)
    return Principal(kind="api_key", id="k", tenant_id=tenant_id, grants=(grant,))


async def test_an_operator_cannot_approve_or_pay_even_calling_the_services(
    client: AsyncClient, app: FastAPI, pg_url: str
) -> None:
    """The operation-level check: bypassing the routes does not bypass the policy."""
    world = await build_world(client)
    entry = insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=world.team_agent_id)
    root = (
        await client.get(f"/v1/units/{world.root_unit_id}", headers=bearer(world.tokens["owner"]))
    ).json()["path"]
    operator = principal_with(Role.operator, root, world.company_id)
    meta = RequestMeta(request_id=None, source_ip=None, now=datetime.now(UTC))
    async with app.state.sessionmaker() as session:
        with pytest.raises(Forbidden):
            await ledger_service.change_status(
                session,
                operator,
                entry,
                EntryStatus.APPROVED,
                reason="",
                manager_limit=Decimal(10**9),
                meta=meta,
            )
        with pytest.raises(Forbidden):
            await payout_service.create_payout(
                session,
                operator,
                PayoutCreate(agent_id=world.team_agent_id, currency="USD"),
                idempotency_key="k-operator",
                meta=meta,
            )
        await session.rollback()


async def test_an_agent_sees_only_their_own_statement_and_entries(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    insert_ledger_entry(
        pg_url, tenant_id=world.company_id, agent_id=world.own_agent_id, amount="4.00"
    )
    insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=world.team_agent_id)
    agent = bearer(world.tokens["agent"])
    own = await client.get(f"/v1/agents/{world.own_agent_id}/statement", headers=agent)
    assert own.status_code == 200
    assert Decimal(own.json()["lines"][0]["pending"]) == Decimal("4.00")
    other = await client.get(f"/v1/agents/{world.team_agent_id}/statement", headers=agent)
    assert other.status_code == 404
    entries = (await client.get("/v1/ledger", headers=agent)).json()["items"]
    assert {e["agent_id"] for e in entries} == {world.own_agent_id}


async def test_cancelling_an_unpaid_payout_makes_its_entries_payable_again(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    token = world.tokens["owner"]
    owner = bearer(token)
    entry = insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=world.team_agent_id)
    await approve(client, token, entry)
    first = await create_payout(client, token, agent_id=world.team_agent_id)
    cancel_url = f"/v1/payouts/{first['id']}/cancel"

    refused = await client.post(cancel_url, json={}, headers=idempotent(world.tokens["manager"]))
    assert refused.status_code == 403
    cancelled = await client.post(
        cancel_url, json={"reason": "wrong period"}, headers=idempotent(token, "cancel-1")
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancelled_by"] == f"user:{world.users['owner']}"
    replay = await client.post(
        cancel_url, json={"reason": "wrong period"}, headers=idempotent(token, "cancel-1")
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    again = await client.post(cancel_url, json={}, headers=idempotent(token))
    assert again.status_code == 409
    paying = await client.post(
        f"/v1/payouts/{first['id']}/paid", json={}, headers=idempotent(token)
    )
    assert paying.status_code == 409

    entry_page = (await client.get(f"/v1/ledger/entries/{entry}", headers=owner)).json()
    assert entry_page["status"] == EntryStatus.APPROVED  # the entry itself never changed
    second = await create_payout(client, token, agent_id=world.team_agent_id)
    assert [i["entry_id"] for i in second["items"]] == [entry]
    paid = await client.post(f"/v1/payouts/{second['id']}/paid", json={}, headers=idempotent(token))
    assert paid.status_code == 200, paid.text
    unpaid = await client.post(
        f"/v1/payouts/{second['id']}/cancel", json={}, headers=idempotent(token)
    )
    assert unpaid.status_code == 409

    audit = (await client.get(f"/v1/audit?entity_id={first['id']}", headers=owner)).json()
    latest = audit["items"][0]
    assert latest["action"] == "payout.cancel"
    assert latest["after"]["reason"] == "wrong period"
    assert latest["before"]["status"] == "created"


def claims(pg_url: str, entry_id: str) -> list[str]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT payout_id FROM payout_claims WHERE entry_id = %s", (entry_id,)
        ).fetchall()
    return [r[0] for r in rows]


async def test_the_database_keeps_an_entry_in_one_live_payout(
    client: AsyncClient, pg_url: str
) -> None:
    """Past the service (which serialises payouts per agent): a second live payout of an entry
    is refused by the claims' primary key; cancelling releases the claim."""
    world = await build_world(client)
    token = world.tokens["owner"]
    entry = insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=world.team_agent_id)
    await approve(client, token, entry)
    first = await create_payout(client, token, agent_id=world.team_agent_id)
    assert claims(pg_url, entry) == [first["id"]]

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO payouts (id, tenant_id, agent_id, currency, amount, entry_count,"
            " status, reference, created_by) SELECT 'po_rogue', tenant_id, agent_id, currency,"
            " amount, 1, 'created', '', 'sql' FROM payouts WHERE id = %s",
            (first["id"],),
        )
        claim = "INSERT INTO payout_claims (entry_id, payout_id) VALUES (%s, 'po_rogue')"
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(claim, (entry,))

    cancel_url = f"/v1/payouts/{first['id']}/cancel"
    cancelled = await client.post(cancel_url, json={}, headers=idempotent(token))
    assert cancelled.status_code == 200, cancelled.text
    assert claims(pg_url, entry) == []
    second = await create_payout(client, token, agent_id=world.team_agent_id)
    assert claims(pg_url, entry) == [second["id"]]
