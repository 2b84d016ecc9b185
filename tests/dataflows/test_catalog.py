"""Collection webhooks → `shop_collections` (PostgreSQL) → the configuration the flow reads.
Shopify's documented bodies (tests/fixtures/data/shopify/collections_*.json) become membership
changes; the sink applies them in any arrival order with triple delivery to the same rows; and
through the real servers, a collection webhook carrying collects makes the next run of the
flow pay the collection's rate."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from dataflows.attribution.flow import build, parse_value
from dataflows.catalog import CollectionChange, collection_change
from dataflows.sinks.catalog import write_changes
from ingest.cli import ensure_tenant
from schemas.events.envelope import EventEnvelope, Source
from schemas.settings import Settings
from tests.dataflows.builders import RECEIVED, T0, days, kinds, order_body, rules_body
from tests.dataflows.conftest import Tenant, Topics, ledger_totals, produce
from tests.fixtures import DATA
from tests.fixtures.kafka import TopicFactory

SHOP = "catalog-test.myshopify.com"


def webhook(topic: str, body: bytes, *, tenant: str = "t1", shop: str = SHOP) -> EventEnvelope:
    return EventEnvelope.wrap(
        body, event_id=f"ev-{uuid.uuid4().hex}", source=Source.SHOPIFY, kind=topic,
        tenant_id=tenant, shop=shop, entity_id=str(orjson.loads(body)["id"]),
        occurred_at=RECEIVED, received_at=RECEIVED,
    )  # fmt: skip


def fixture(name: str) -> bytes:
    return (DATA / "shopify" / name).read_bytes()


def test_shopifys_collection_bodies_become_membership_changes() -> None:
    update = collection_change(webhook("collections/update", fixture("collections_update.json")))
    assert update is not None
    assert (update.collection_id, update.title, update.product_ids, update.deleted) == (
        "841564295", "IPods", None, False,
    )  # fmt: skip
    assert update.changed_at == datetime.fromisoformat("2008-02-01T19:00:00-05:00")
    deleted = collection_change(webhook("collections/delete", fixture("collections_delete.json")))
    assert deleted is not None
    assert (deleted.deleted, deleted.changed_at, deleted.product_ids) == (True, RECEIVED, None)
    with_collects = orjson.loads(fixture("collections_create.json")) | {
        "collects": [{"product_id": 921728736}, {"product_id": 632910392, "position": 2}]
    }
    created = collection_change(webhook("collections/create", orjson.dumps(with_collects)))
    assert created is not None
    assert created.product_ids == ("632910392", "921728736")
    product = webhook("products/update", b'{"id": 632910392, "title": "IPod Nano - 8GB"}')
    assert collection_change(product) is None
    # The live flow's parse step emits the change next to the archive row; replays do not.
    parsed = parse_value(webhook("collections/delete", b'{"id": 1}').to_bytes())
    assert kinds(parsed) == ["row", "catalog"]
    assert parse_value(webhook("collections/delete", b'{"id": 1}').to_bytes(), archive=False) == []


def stored(conn: psycopg.Connection[Any], collection: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT title, product_ids, deleted, changed_at FROM shop_collections"
        " WHERE shop = %s AND collection_id = %s",
        (SHOP, collection),
    ).fetchone()


def change(collection: str, at: int, **facts: Any) -> CollectionChange:
    return CollectionChange(
        tenant_id=TENANT, shop=SHOP, collection_id=collection, changed_at=T0 + days(at), **facts
    )


TENANT = f"t_cat_{uuid.uuid4().hex[:8]}"


def test_the_sink_converges_in_any_arrival_order_with_triple_delivery(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_tenant(conn, TENANT)
        conn.execute(
            "INSERT INTO shops (domain, tenant_id, secret) VALUES (%s, %s, 'x')"
            " ON CONFLICT DO NOTHING",
            (SHOP, TENANT),
        )

        def apply(changes: list[CollectionChange]) -> tuple[Any, ...] | None:
            collection = str(uuid.uuid4().int % 10**12)
            write_changes(conn, [c.__class__(**{**_fields(c), "collection_id": collection})
                                 for c in changes])  # fmt: skip
            return stored(conn, collection)

        kept = [
            change("c", 1, title="Old"),
            change("c", 2, title="New", product_ids=("7", "8")),
            change("c", 3),  # a title-less update keeps title and products
        ]
        gone = [*kept, change("c", 2, deleted=True)]

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.permutations(kept * 3), st.permutations(gone * 3))
        def check(kept_order: list[CollectionChange], gone_order: list[CollectionChange]) -> None:
            assert apply(kept_order)[:3] == ("New", ["7", "8"], False)  # type: ignore[index]
            assert apply(gone_order)[1:3] == (None, True)  # type: ignore[index]

        check()
        # A shop not (or no longer) registered: the change is skipped, not an error.
        write_changes(conn, [CollectionChange(TENANT, "gone.myshopify.com", "1", T0)])
        assert conn.execute(
            "SELECT count(*) FROM shop_collections WHERE shop = 'gone.myshopify.com'"
        ).fetchone() == (0,)


def _fields(change: CollectionChange) -> dict[str, Any]:
    return {name: getattr(change, name) for name in change.__slots__}


def test_a_collection_webhook_reaches_the_flow_through_postgresql(
    stack_settings: Settings, tenant: Tenant, topics: Topics, kafka_topic_factory: TopicFactory
) -> None:
    t, shop = tenant, f"{tenant.tenant_id}.myshopify.com"
    body = rules_body(t.program, version=2) | {
        "collection_rates": [{"collection_id": "841564295", "rate": {"kind": "percent",
                                                                     "value": "20"}}]
    }  # fmt: skip
    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO shops (domain, tenant_id, secret) VALUES (%s, %s, 'x')",
            (shop, t.tenant_id),
        )
        conn.execute(
            "INSERT INTO commission_rules (id, version, tenant_id, program_id, body)"
            " VALUES (%s, 2, %s, %s, %s)",
            (body["rule_id"], t.tenant_id, t.program, Jsonb(body)),
        )
    shops = kafka_topic_factory("shops", partitions=1)
    inputs = (*topics.inputs, shops)
    collection = orjson.loads(fixture("collections_update.json")) | {
        "collects": [{"product_id": 632910392}]
    }
    produce(stack_settings, [(shops, webhook("collections/update", orjson.dumps(collection),
                                             tenant=t.tenant_id, shop=shop))])  # fmt: skip
    run_bounded(stack_settings, inputs, topics.deadletter)
    with psycopg.connect(stack_settings.postgres_url) as conn:
        assert conn.execute(
            "SELECT title, product_ids, source FROM shop_collections WHERE shop = %s", (shop,)
        ).fetchall() == [("IPods", ["632910392"], "webhook")]
    # The next run's configuration has the membership: the iPod line earns 20 %, the other 10 %.
    order = order_body(4001, at=T0, coupon=t.coupon, lines=[(1, 1, "100.00"), (2, 1, "100.00")])
    order["line_items"][0]["product_id"] = 632910392
    order["line_items"][1]["product_id"] = 921728736
    envelope = EventEnvelope.wrap(
        orjson.dumps(order), event_id="o-4001", source=Source.SHOPIFY, kind="orders/create",
        tenant_id=t.tenant_id, shop=shop, entity_id="4001", occurred_at=T0, received_at=RECEIVED,
    )  # fmt: skip
    produce(stack_settings, [(topics.orders, envelope)])
    run_bounded(stack_settings, inputs, topics.deadletter)
    assert ledger_totals(stack_settings, t.tenant_id) == {t.bob: Decimal("30.00"),
                                                          "#rows": Decimal(2)}  # fmt: skip


def run_bounded(settings: Settings, inputs: tuple[str, ...], deadletter: str) -> None:
    from bytewax.testing import run_main

    run_main(build(settings, tail=False, input_topics=inputs, deadletter_topic=deadletter))
