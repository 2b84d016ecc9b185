"""Collection membership (issue 14, item 2): the backfill API stores which products a shop's
collections hold, the rules API warns about a collection rate whose membership is unknown, and
the dataflow, loading its configuration from the same PostgreSQL, applies the collection rate to
the lines whose product is in the collection: in every arrival order with triple delivery."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
from httpx import AsyncClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.collections import backfill
from dataflows.config import ConfigSnapshot, load_snapshot
from schemas.events.envelope import EventEnvelope, Source
from tests.api.factories import bearer, build_world, create_coupon, create_program, create_shop
from tests.dataflows.builders import RECEIVED, T0, days, order_body
from tests.dataflows.test_flow import run
from tests.fixtures import DATA

IPODS, MACBOOKS = (
    "841564295",
    "1063001322",
)  # collection ids of Shopify's custom_collection fixtures
IPOD, OTHER = "632910392", "921728736"  # product ids
RULES = {
    "currency": "USD",
    "base": {"kind": "percent", "value": "10"},
    "collection_rates": [
        {"collection_id": IPODS, "rate": {"kind": "percent", "value": "20"}},
        {"collection_id": MACBOOKS, "rate": {"kind": "percent", "value": "30"}},
    ],
}


def shopify_event(
    tenant: str, shop: str, topic: str, body: dict[str, Any], *, at: datetime, event_id: str
) -> EventEnvelope:
    return EventEnvelope.wrap(
        orjson.dumps(body), event_id=event_id, source=Source.SHOPIFY, kind=topic,
        tenant_id=tenant, shop=shop, entity_id=str(body.get("order_id", body["id"])),
        occurred_at=at, received_at=max(at, RECEIVED),
    )  # fmt: skip


def order_with_products(
    tenant: str, shop: str, *, coupon: str, topic: str = "orders/create", event_id: str
) -> EventEnvelope:
    """Order 5001: 2 x 50.00 of an iPod (line 1), 1 x 100.00 of another product (line 2)."""
    body = order_body(5001, at=T0, lines=[(1, 2, "50.00"), (2, 1, "100.00")], coupon=coupon)
    for item, product in zip(body["line_items"], (IPOD, OTHER), strict=True):
        item["product_id"] = int(product)
    return shopify_event(tenant, shop, topic, body, at=T0, event_id=event_id)


def refund_of_one_ipod(tenant: str, shop: str) -> EventEnvelope:
    at = T0 + days(2)
    body = {
        "id": 71, "order_id": 5001, "created_at": at.isoformat(), "processed_at": at.isoformat(),
        "refund_line_items": [{"id": 7100, "line_item_id": 1, "quantity": 1}],
    }  # fmt: skip
    return shopify_event(tenant, shop, "refunds/create", body, at=at, event_id="r1")


async def test_collection_rates_apply_to_lines_of_products_in_the_collection(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    program_id = await create_program(client, world.tokens["owner"])
    created = await client.post(
        f"/v1/programs/{program_id}/rules", json={"rules": RULES}, headers=owner
    )
    assert created.status_code == 201, created.text
    # Neither collection's products are known yet: both rates are reported, not ignored.
    assert [w.split("'")[1] for w in created.json()["warnings"]] == [IPODS, MACBOOKS]
    shop = await create_shop(client, world.tokens["owner"], pg_url)
    code = await create_coupon(
        client, world.tokens["owner"], program_id=program_id, agent_id=world.team_agent_id
    )
    put = await client.put(
        f"/v1/shops/{shop}/collections/{IPODS}/products",
        json={"product_ids": [IPOD, " 555 ", IPOD], "title": "IPods"},
        headers=owner,
    )
    assert put.status_code == 200, put.text
    assert (put.json()["product_ids"], put.json()["source"]) == ([IPOD, "555"][::-1], "api")
    listed = await client.get(f"/v1/programs/{program_id}/rules/1", headers=owner)
    assert len(listed.json()["warnings"]) == 1
    assert MACBOOKS in listed.json()["warnings"][0]

    config = load_snapshot(pg_url)  # what the dataflow reads, from the API's database
    tenant = world.company_id
    assert config.tenant(tenant).product_collections(shop) == {IPOD: (IPODS,), "555": (IPODS,)}
    scenario = [
        order_with_products(tenant, shop, coupon=code, event_id="o1"),
        order_with_products(tenant, shop, coupon=code, topic="orders/paid", event_id="o2"),
        refund_of_one_ipod(tenant, shop),
    ]
    result = run(list(scenario), config)
    by_line = {(e.line_item_id, e.kind.value): e.amount for e in result.entries}
    # Line 1 (in IPods): 20 % of 100.00; line 2: the base 10 % of 100.00; the refund of one of
    # two iPods reverses half of line 1's.
    assert by_line == {
        ("1", "accrual"): Decimal("20.00"),
        ("2", "accrual"): Decimal("10.00"),
        ("1", "reversal"): Decimal("-10.00"),
    }
    assert not result.dead
    assert_any_arrival_order_gives(scenario, config, result.ledger())


def assert_any_arrival_order_gives(
    scenario: list[EventEnvelope], config: ConfigSnapshot, expected: dict[str, Decimal]
) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.permutations(scenario * 3))
    def check(events: list[EventEnvelope]) -> None:
        assert run(list(events), config).ledger() == expected

    check()


async def test_bulk_import_replaces_listed_collections_and_is_audited(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    shop = await create_shop(client, world.tokens["owner"], pg_url)
    first = {"collections": [{"id": IPODS, "product_ids": [IPOD, OTHER]}]}
    assert (await client.put(f"/v1/shops/{shop}/collections", json=first, headers=owner)).is_success
    second = {
        "collections": [
            {"id": IPODS, "title": "IPods", "product_ids": [OTHER]},
            {"id": MACBOOKS, "product_ids": []},
        ]
    }
    response = await client.put(f"/v1/shops/{shop}/collections", json=second, headers=owner)
    assert response.status_code == 200, response.text
    listed = await client.get(f"/v1/shops/{shop}/collections", headers=owner)
    items = {i["collection_id"]: (i["title"], i["product_ids"]) for i in listed.json()["items"]}
    assert items == {MACBOOKS: (None, []), IPODS: ("IPods", [OTHER])}
    with psycopg.connect(pg_url) as conn:
        audits = conn.execute(
            "SELECT action, entity_id, after FROM audit_log WHERE tenant_id = %s"
            " AND action LIKE 'shop_collection.%%' ORDER BY seq",
            (world.company_id,),
        ).fetchall()
    assert [(a, e) for a, e, _ in audits] == [("shop_collection.import", shop)] * 2
    assert audits[-1][2] == {"collections": {IPODS: 1, MACBOOKS: 0}}


async def test_bad_membership_bodies_are_problems(client: AsyncClient, pg_url: str) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    shop = await create_shop(client, world.tokens["owner"], pg_url)
    base = f"/v1/shops/{shop}/collections"
    cases = [
        (f"{base}/{IPODS}/products", {"product_ids": ["gid://shopify/Product/1"]}, 422),
        (f"{base}/{IPODS}/products", {"products": [IPOD]}, 422),
        (f"{base}/not-a-number/products", {"product_ids": [IPOD]}, 422),
        (f"{base}", {"collections": []}, 422),
        ("/v1/shops/unknown.myshopify.com/collections/1/products", {"product_ids": []}, 404),
    ]
    for path, body, status in cases:
        response = await client.put(path, json=body, headers=owner)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_backfill_file_of_shopify_collects_replaces_each_collection(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    owner = bearer(world.tokens["owner"])
    shop = await create_shop(client, world.tokens["owner"], pg_url)
    document = orjson.loads((DATA / "shopify" / "collects_list.json").read_bytes())
    client.headers.update(owner)
    response = await backfill.send(client, shop, backfill.import_body(document))
    assert response.status_code == 200, response.text
    listed = await client.get(f"/v1/shops/{shop}/collections")
    assert {i["collection_id"]: i["product_ids"] for i in listed.json()["items"]} == {
        "395646240": [IPOD],
        "482865238": [IPOD, OTHER],
        "841564295": [IPOD],
    }
    for bad in ({"collects": [{"product_id": 1}]}, {"products": []}, [], {"collections": []}):
        with pytest.raises(backfill.BackfillError):
            backfill.import_body(bad)
