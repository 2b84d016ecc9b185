"""Keyword-only builders of API state, all through the public HTTP API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import clickhouse_connect
import orjson
import psycopg
from httpx import AsyncClient

from api.exceptions.consumer import store
from api.exceptions.letters import exception_row
from dataflows.sinks.clickhouse import COLUMNS, conversion_row
from ingest.claims import ClaimRecord, promote, proven_claim
from ingest.shopify import sign
from schemas.events.envelope import DeadLetter, EventEnvelope, Source
from schemas.ledger import (
    AttributedConversion,
    AttributionRule,
    CandidateKind,
    RejectedCandidate,
    RejectionCode,
)
from schemas.settings import Settings

ClientFactory = Callable[..., AsyncClient]
PASSWORD = "correct horse battery staple"
ROLES = ("owner", "manager", "operator", "agent", "observer")


def unique_slug(prefix: str = "co") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_company(client: AsyncClient, *, slug: str | None = None) -> dict[str, Any]:
    slug = slug or unique_slug()
    response = await client.post(
        "/v1/companies",
        json={
            "name": f"Company {slug}",
            "slug": slug,
            "owner_email": f"owner@{slug}.example",
            "owner_password": PASSWORD,
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    body["owner_email"] = f"owner@{slug}.example"
    return body


async def login(client: AsyncClient, *, company: str, email: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/auth/login", json={"company": company, "email": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def create_unit(client: AsyncClient, token: str, *, parent_id: str, name: str) -> str:
    response = await client.post(
        "/v1/units", json={"parent_id": parent_id, "name": name}, headers=bearer(token)
    )
    assert response.status_code == 201, response.text
    unit_id: str = response.json()["id"]
    return unit_id


async def create_user(
    client: AsyncClient, token: str, *, email: str, unit_id: str, role: str
) -> str:
    response = await client.post(
        "/v1/users",
        json={"email": email, "password": PASSWORD, "unit_id": unit_id, "role": role},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    user_id: str = response.json()["id"]
    return user_id


async def create_agent(
    client: AsyncClient,
    token: str,
    *,
    unit_id: str,
    name: str = "Agent",
    email: str | None = "agent@example.com",
    user_id: str | None = None,
) -> str:
    response = await client.post(
        "/v1/agents",
        json={"name": name, "unit_id": unit_id, "email": email, "user_id": user_id},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    agent_id: str = response.json()["id"]
    return agent_id


@dataclass
class World:
    """A company with root -> region -> team units, one user per role (owner at the root, the
    others on the region), agents in the team and a sibling region, and their access tokens."""

    slug: str
    company_id: str
    root_unit_id: str
    region_unit_id: str
    team_unit_id: str
    other_region_unit_id: str
    users: dict[str, str] = field(default_factory=dict)  # role -> user id
    emails: dict[str, str] = field(default_factory=dict)  # role -> email
    tokens: dict[str, str] = field(default_factory=dict)  # role -> access token
    team_agent_id: str = ""
    other_region_agent_id: str = ""
    own_agent_id: str = ""  # the agent row linked to the agent-role user


async def build_world(client: AsyncClient) -> World:
    company = await create_company(client)
    slug = company["company"]["slug"]
    owner = await login(client, company=slug, email=company["owner_email"])
    token = owner["access_token"]
    root = company["root_unit_id"]
    region = await create_unit(client, token, parent_id=root, name="EMEA")
    team = await create_unit(client, token, parent_id=region, name="Team 1")
    other = await create_unit(client, token, parent_id=root, name="APAC")
    world = World(
        slug=slug,
        company_id=company["company"]["id"],
        root_unit_id=root,
        region_unit_id=region,
        team_unit_id=team,
        other_region_unit_id=other,
    )
    world.users["owner"] = company["owner_user_id"]
    world.emails["owner"] = company["owner_email"]
    world.tokens["owner"] = token
    for role in ROLES[1:]:
        email = f"{role}@{slug}.example"
        world.users[role] = await create_user(client, token, email=email, unit_id=region, role=role)
        world.emails[role] = email
        world.tokens[role] = (await login(client, company=slug, email=email))["access_token"]
    world.team_agent_id = await create_agent(client, token, unit_id=team, name="Team agent")
    world.other_region_agent_id = await create_agent(client, token, unit_id=other, name="APAC")
    world.own_agent_id = await create_agent(
        client, token, unit_id=team, name="Me", email="me@example.com", user_id=world.users["agent"]
    )
    return world


def idempotent(token: str, key: str | None = None) -> dict[str, str]:
    return {**bearer(token), "Idempotency-Key": key or f"idem-{uuid.uuid4().hex}"}


async def create_program(client: AsyncClient, token: str, *, currency: str = "USD") -> str:
    response = await client.post(
        "/v1/programs",
        json={"name": "Program", "landing_url": "https://shop.example/", "currency": currency},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    program_id: str = response.json()["id"]
    return program_id


async def create_link(client: AsyncClient, token: str, *, program_id: str, agent_id: str) -> str:
    response = await client.post(
        "/v1/links",
        json={"program_id": program_id, "agent_id": agent_id, "code": unique_slug("l")},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    link_id: str = response.json()["id"]
    return link_id


async def create_coupon(client: AsyncClient, token: str, *, program_id: str, agent_id: str) -> str:
    code = unique_slug("C").upper()
    response = await client.post(
        "/v1/coupons",
        json={"program_id": program_id, "agent_id": agent_id, "code": code},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    return code


async def create_shop(client: AsyncClient, token: str, pg_url: str) -> str:
    """A custom-app shop of the token's company, through the product's own path: the claim
    (`POST /v1/shops`), then its proof as the ingress makes it (`prove_claim`)."""
    domain = f"{unique_slug('s')}.myshopify.com"
    response = await client.post(
        "/v1/shops", json={"domain": domain, "secret": "s" * 32}, headers=bearer(token)
    )
    assert response.status_code == 202, response.text
    await prove_claim(pg_url, domain, "s" * 32)
    return domain


async def prove_claim(pg_url: str, domain: str, secret: str) -> None:
    """The documented fixture path of API tests, which run no ingress: exactly what the ingress
    does with the first webhook for `domain` signed with `secret` (`ingest.claims`: the claim
    whose secret verifies the delivery is promoted), minus the HTTP delivery itself. Tests of
    the proof through a real ingress are in tests/ingest/test_shop_claims.py."""
    body = b'{"id": 1, "test": true}'
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT tenant_id, secret FROM shop_claims WHERE domain = %s", (domain,)
        ).fetchall()
    pending = tuple(ClaimRecord(domain, tenant, stored) for tenant, stored in rows)
    claim = proven_claim(body, sign(secret, body), pending)
    assert claim is not None, f"no claim of {domain} is signed by this secret"
    assert await promote(pg_url, claim), f"{domain} was not promoted"


async def create_note(client: AsyncClient, token: str, *, agent_id: str) -> str:
    response = await client.post(
        "/v1/notes", json={"agent_id": agent_id, "body": "Met at the fair."}, headers=bearer(token)
    )
    assert response.status_code == 201, response.text
    note_id: str = response.json()["id"]
    return note_id


def insert_ledger_entry(
    pg_url: str,
    *,
    tenant_id: str,
    agent_id: str,
    amount: str = "10.00",
    currency: str = "USD",
    occurred_at: datetime | None = None,
    kind: str = "accrual",
) -> str:
    """An entry as the commission dataflow writes it (the API never creates accruals)."""
    entry_id = f"le_{uuid.uuid4().hex}"
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO ledger_entries (entry_id, tenant_id, agent_id, conversion_id, order_id,"
            " kind, amount, currency, occurred_at, source_event_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                entry_id,
                tenant_id,
                agent_id,
                f"conv_{entry_id}",
                f"order-{entry_id[-6:]}",
                kind,
                Decimal(amount),
                currency,
                occurred_at or datetime(2026, 11, 1, tzinfo=UTC),
                f"evt_{entry_id}",
            ),
        )
    return entry_id


def insert_proposed_rule_version(pg_url: str, *, tenant_id: str, program_id: str) -> int:
    """A copy of the program's newest rules as a new, proposed version (as a manager would
    propose it); the program must have a version already."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "INSERT INTO commission_rules"
            " (id, version, tenant_id, program_id, body, created_by, status)"
            " SELECT id, version + 1, tenant_id, program_id,"
            "  body || jsonb_build_object('version', version + 1), 'test', 'proposed'"
            " FROM commission_rules WHERE tenant_id = %s AND program_id = %s"
            " ORDER BY version DESC LIMIT 1 RETURNING version",
            (tenant_id, program_id),
        ).fetchone()
    assert row is not None, "the program has no rules to copy"
    version: int = row[0]
    return version


async def approve(client: AsyncClient, token: str, entry_id: str) -> None:
    response = await client.post(
        f"/v1/ledger/entries/{entry_id}/approve", json={}, headers=idempotent(token)
    )
    assert response.status_code == 200, response.text


async def create_payout(client: AsyncClient, token: str, *, agent_id: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/payouts", json={"agent_id": agent_id, "currency": "USD"}, headers=idempotent(token)
    )
    assert response.status_code == 201, response.text
    payout: dict[str, Any] = response.json()
    return payout


def refund_dead_letter(
    *,
    tenant_id: str,
    order_id: str = "450789469",
    reason: str = "late: older than the allowed lateness",
    event_id: str | None = None,
    failed_at: datetime | None = None,
) -> DeadLetter:
    """A dataflow dead letter of a Shopify `refunds/create` event of `order_id`."""
    body = orjson.dumps({"id": 1, "order_id": int(order_id) if order_id.isdigit() else order_id})
    at = failed_at or datetime(2026, 11, 2, tzinfo=UTC)
    envelope = EventEnvelope.wrap(
        body,
        event_id=event_id or f"evt_{uuid.uuid4().hex}",
        source=Source.SHOPIFY,
        kind="refunds/create",
        tenant_id=tenant_id,
        shop="acme.myshopify.com",
        entity_id=order_id,
        occurred_at=at - timedelta(hours=1),
        received_at=at - timedelta(minutes=1),
        headers={"x-shopify-topic": "refunds/create"},
    )
    return DeadLetter(reason=reason, stage="dataflow", failed_at=at, envelope=envelope)


def insert_exception(pg_url: str, *, tenant_id: str, **letter: Any) -> str:
    """One exception stored as the exceptions consumer stores it (see `refund_dead_letter`)."""
    row = exception_row(refund_dead_letter(tenant_id=tenant_id, **letter))
    assert row is not None
    with psycopg.connect(pg_url, autocommit=True) as conn:
        store(conn, [row])
    return row.id


def insert_decided_order(settings: Settings, *, tenant_id: str, agent_id: str) -> str:
    """One order decided for `agent_id` by a click, beating an earlier click, written to
    ClickHouse's `conversions` as the dataflow's sink writes it (`conversion_row`)."""
    order_id = f"ord-{uuid.uuid4().hex[:10]}"
    at = datetime(2026, 10, 5, 12, tzinfo=UTC)
    fact = AttributedConversion(
        conversion_id=f"cv_{order_id}", tenant_id=tenant_id, shop="s1.myshopify.com",
        order_id=order_id, order_name=f"#{order_id}", occurred_at=at, attributed_at=at,
        rule=AttributionRule.LAST_CLICK, agent_id=agent_id, program_id=None, click_id="clk_2",
        link_code="spring", currency="EUR", revenue=Decimal("50.00"),
        explanation=f"last_click click clk_2 of agent {agent_id} via link spring",
        source_event_id=f"ev_{order_id}",
        rejected=(RejectedCandidate(
            kind=CandidateKind.CLICK, ref="clk_1", agent_id=agent_id, link_code="spring",
            at=at - timedelta(days=1), code=RejectionCode.ATTRIBUTION_MODEL,
            reason="last_click: click clk_2 is later",
        ),),
    )  # fmt: skip
    target = settings.clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, database=target.database
    )
    try:
        columns = list(COLUMNS["conversions"])
        client.insert("conversions", [list(conversion_row(fact))], column_names=columns)
    finally:
        client.close()
    return order_id
