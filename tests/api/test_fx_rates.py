"""Exchange rates: stored per company, append-only, owners of the root unit write them, every role
reads them; the reporting currency and duplicates are refused; Idempotency-Key replays."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from api.authz.permissions import Role
from api.context import RequestMeta
from api.errors import Forbidden
from api.fx_rates import service
from api.fx_rates.schemas import FxRateCreate
from tests.api.factories import bearer, build_world, create_company, idempotent, login
from tests.api.test_money import principal_with

NOV = "2026-11-01T00:00:00Z"


def rate_body(currency: str = "EUR", rate: Any = "1.0842", valid_from: str = NOV) -> dict[str, Any]:
    return {"currency": currency, "rate": rate, "valid_from": valid_from}


async def test_an_owner_adds_rates_and_every_role_lists_them_oldest_first(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    owner = world.tokens["owner"]
    bodies = [
        rate_body("GBP", "1.27", "2026-10-01T00:00:00+02:00"),
        rate_body("EUR", "1.0842", NOV),
        rate_body("EUR", "1.10000001", "2026-12-01T00:00:00Z"),
    ]
    for body in bodies:
        response = await client.post("/v1/fx-rates", json=body, headers=idempotent(owner))
        assert response.status_code == 201, response.text
    created = response.json()
    assert created["currency"] == "EUR"
    assert created["rate"] == "1.10000001"
    assert created["valid_from"] == "2026-12-01T00:00:00Z"
    assert created["created_by"] == f"user:{world.users['owner']}"
    for role in ("owner", "manager", "operator", "observer", "agent"):
        listed = await client.get("/v1/fx-rates", headers=bearer(world.tokens[role]))
        assert listed.status_code == 200, (role, listed.text)
        items = listed.json()["items"]
        assert [(i["currency"], i["valid_from"]) for i in items] == [
            ("GBP", "2026-09-30T22:00:00Z"),
            ("EUR", "2026-11-01T00:00:00Z"),
            ("EUR", "2026-12-01T00:00:00Z"),
        ], role
    eur = await client.get("/v1/fx-rates?currency=EUR", headers=bearer(owner))
    assert [i["rate"] for i in eur.json()["items"]] == ["1.08420000", "1.10000001"]
    with psycopg.connect(pg_url) as conn:
        audits = conn.execute(
            "SELECT entity_id FROM audit_log WHERE tenant_id = %s AND action = 'fx_rate.create'"
            " ORDER BY seq",
            (world.company_id,),
        ).fetchall()
    assert [a for (a,) in audits] == [
        "GBP@2026-10-01T00:00:00+02:00",
        "EUR@2026-11-01T00:00:00+00:00",
        "EUR@2026-12-01T00:00:00+00:00",
    ]


async def test_the_list_pages_with_a_cursor(client: AsyncClient) -> None:
    world = await build_world(client)
    owner = world.tokens["owner"]
    for day in range(1, 6):
        body = rate_body("CHF", f"1.1{day}", f"2026-11-0{day}T00:00:00Z")
        assert (await client.post("/v1/fx-rates", json=body, headers=idempotent(owner))).is_success
    seen: list[str] = []
    url = "/v1/fx-rates?limit=2"
    while True:
        page = (await client.get(url, headers=bearer(owner))).json()
        seen += [i["rate"] for i in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/fx-rates?limit=2&cursor={page['next_cursor']}"
    assert seen == ["1.11000000", "1.12000000", "1.13000000", "1.14000000", "1.15000000"]
    bad = await client.get("/v1/fx-rates?cursor=nonsense", headers=bearer(owner))
    assert bad.status_code == 400


async def test_another_companys_rates_are_invisible(client: AsyncClient) -> None:
    world = await build_world(client)
    body = rate_body()
    assert (
        await client.post("/v1/fx-rates", json=body, headers=idempotent(world.tokens["owner"]))
    ).status_code == 201
    other = await create_company(client)
    tokens = await login(client, company=other["company"]["slug"], email=other["owner_email"])
    listed = await client.get("/v1/fx-rates", headers=bearer(tokens["access_token"]))
    assert listed.json() == {"items": [], "next_cursor": None}
    # The same currency and instant in another company is not a duplicate.
    again = await client.post("/v1/fx-rates", json=body, headers=idempotent(tokens["access_token"]))
    assert again.status_code == 201


async def test_the_reporting_currency_is_refused_and_duplicates_conflict(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)  # the company reports in USD (the sign-up default)
    owner = world.tokens["owner"]
    usd = await client.post("/v1/fx-rates", json=rate_body("USD", "1"), headers=idempotent(owner))
    assert usd.status_code == 422
    assert usd.headers["content-type"] == "application/problem+json"
    assert "reporting currency" in usd.json()["detail"]
    first = await client.post("/v1/fx-rates", json=rate_body(), headers=idempotent(owner))
    assert first.status_code == 201
    # Same instant written with another offset: the same valid_from.
    duplicate = await client.post(
        "/v1/fx-rates",
        json=rate_body(rate="2", valid_from="2026-11-01T01:00:00+01:00"),
        headers={**idempotent(owner), "X-Request-Id": f"dup-{world.slug}"},
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["type"].endswith("conflict")
    with psycopg.connect(pg_url) as conn:
        rates = conn.execute(
            "SELECT rate FROM fx_rates WHERE tenant_id = %s", (world.company_id,)
        ).fetchall()
        audits = conn.execute(
            "SELECT count(*) FROM audit_log WHERE request_id = %s", (f"dup-{world.slug}",)
        ).fetchone()
    assert [str(r) for (r,) in rates] == ["1.08420000"]
    assert audits == (0,)


@pytest.mark.parametrize(
    "body",
    [
        rate_body(currency="eur"),
        rate_body(currency="EURO"),
        rate_body(currency="ABC"),  # well-formed, not an ISO 4217 code
        rate_body(rate="0"),
        rate_body(rate="-1.2"),
        rate_body(rate="NaN"),
        rate_body(rate="1.123456789"),  # more than 8 decimals
        rate_body(rate="12345678901"),  # more than 10 integer digits
        rate_body(rate=1.08),  # a JSON number: rates are decimal strings
        rate_body(valid_from="2026-11-01T00:00:00"),  # naive
        {**rate_body(), "extra": 1},
    ],
)
async def test_invalid_rates_are_refused(client: AsyncClient, body: dict[str, Any]) -> None:
    world = await build_world(client)
    response = await client.post(
        "/v1/fx-rates", json=body, headers=idempotent(world.tokens["owner"])
    )
    assert response.status_code == 422, response.text


async def test_idempotency_key_replays_the_same_rate_and_refuses_another(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    headers = idempotent(world.tokens["owner"], key=f"fx-{world.slug}")
    first = await client.post("/v1/fx-rates", json=rate_body(), headers=headers)
    replay = await client.post("/v1/fx-rates", json=rate_body(), headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    other = await client.post("/v1/fx-rates", json=rate_body(rate="1.2"), headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")
    missing = await client.post(
        "/v1/fx-rates", json=rate_body(valid_from="2027-01-01T00:00:00Z"),
        headers=bearer(world.tokens["owner"]),
    )  # fmt: skip
    assert missing.status_code == 422
    with psycopg.connect(pg_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM fx_rates WHERE tenant_id = %(t)s),"
            " (SELECT count(*) FROM audit_log WHERE tenant_id = %(t)s"
            "  AND action = 'fx_rate.create')",
            {"t": world.company_id},
        ).fetchone()
    assert counts == (1, 1)


async def test_only_owners_on_the_root_unit_write_rates_even_calling_the_service(
    client: AsyncClient, app: FastAPI
) -> None:
    """A manager, even on the root unit, cannot set rates: a rate moves the reporting-currency
    value of every entry, which the managers' approval limit is compared with."""
    world = await build_world(client)
    region_owner_email = f"region-owner@{world.slug}.example"
    owner = world.tokens["owner"]
    response = await client.post(
        "/v1/users",
        json={"email": region_owner_email, "password": "correct horse battery staple",
              "unit_id": world.region_unit_id, "role": "owner"},
        headers=bearer(owner),
    )  # fmt: skip
    assert response.status_code == 201, response.text
    region_owner = await login(client, company=world.slug, email=region_owner_email)
    refused = await client.post(
        "/v1/fx-rates", json=rate_body(), headers=idempotent(region_owner["access_token"])
    )
    assert refused.status_code == 403
    root = (await client.get(f"/v1/units/{world.root_unit_id}", headers=bearer(owner))).json()
    meta = RequestMeta(request_id=None, source_ip=None, now=datetime.now(UTC))
    body = FxRateCreate.model_validate(rate_body())
    async with app.state.sessionmaker() as session:
        for role in (Role.manager, Role.operator):
            with pytest.raises(Forbidden):
                await service.create_rate(
                    session, principal_with(role, root["path"], world.company_id), body, meta=meta
                )
        await session.rollback()


def adjustment(world: Any, amount: str, currency: str, at: str = "2026-11-15T00:00:00Z") -> dict:
    return {
        "agent_id": world.team_agent_id, "amount": amount, "currency": currency,
        "reason": "bonus", "occurred_at": at,
    }  # fmt: skip


async def test_adjustments_carry_the_rate_at_their_time_and_need_one(client: AsyncClient) -> None:
    world = await build_world(client)
    owner = world.tokens["owner"]
    url = "/v1/ledger/adjustments"
    eur = adjustment(world, "10.00", "EUR")
    early = await client.post(url, json=eur, headers=idempotent(owner))
    assert early.status_code == 422, early.text
    assert "No EUR exchange rate" in early.json()["detail"]

    await client.post("/v1/fx-rates", json=rate_body(), headers=idempotent(owner))
    before_rate = adjustment(world, "10.00", "EUR", at="2026-10-31T23:59:59Z")
    assert (await client.post(url, json=before_rate, headers=idempotent(owner))).status_code == 422
    made = await client.post(url, json=eur, headers=idempotent(owner))
    assert made.status_code == 201, made.text
    assert Decimal(made.json()["fx_rate"]) == Decimal("1.0842")
    usd = await client.post(url, json=adjustment(world, "10.00", "USD"), headers=idempotent(owner))
    assert Decimal(usd.json()["fx_rate"]) == 1


async def test_a_managers_adjustment_limit_is_in_the_reporting_currency(
    client: AsyncClient,
) -> None:
    """The limit is 1,000 USD: 950 EUR at 1.0842 is 1,029.99 USD, above it; 900 EUR is not."""
    world = await build_world(client)
    await client.post("/v1/fx-rates", json=rate_body(), headers=idempotent(world.tokens["owner"]))
    manager = world.tokens["manager"]
    url = "/v1/ledger/adjustments"
    over = await client.post(
        url, json=adjustment(world, "950.00", "EUR"), headers=idempotent(manager)
    )
    assert over.status_code == 403, over.text
    under = await client.post(
        url, json=adjustment(world, "900.00", "EUR"), headers=idempotent(manager)
    )
    assert under.status_code == 201, under.text
