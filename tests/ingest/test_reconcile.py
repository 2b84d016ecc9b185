"""`refstream shopify reconcile` against a local stand-in for Shopify's Admin REST API
(`tests.fixtures.shopify_admin`, real HTTP), the session's real Kafka broker and PostgreSQL, and
end to end through the real ingress and the attribution dataflow. A server that is down fails
these tests."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from bytewax.testing import run_main

from dataflows.attribution.flow import build
from deploy.demo import read_to_end
from ingest import reconcile as rc
from ingest.cli import register_shop
from ingest.reconcile import AdminApi, ReconcileError
from schemas.events.envelope import EventEnvelope
from schemas.ids import derived_id
from schemas.settings import Settings
from schemas.topics import Topic
from tests.dataflows.builders import new_tenant, seed_tenant
from tests.fixtures import DATA
from tests.fixtures.kafka import TopicFactory
from tests.fixtures.shopify_admin import ShopifyAdmin
from tests.ingest.conftest import ClientFactory, Registered, shopify_headers

SHOPIFY = DATA / "shopify"
SINCE = datetime(2025, 1, 1, tzinfo=UTC)


async def no_sleep(_: float) -> None:
    return None


def admin_order(
    order_id: int,
    updated_at: datetime,
    *,
    template: str = "orders_create.json",
    coupon: str | None = None,
    refund_id: int | None = None,
    cancelled: bool = False,
    closed: bool = False,
) -> dict[str, Any]:
    """A real order resource (`tests/fixtures/data/shopify`) with a new id and times."""
    order: dict[str, Any] = orjson.loads((SHOPIFY / template).read_bytes())
    base = order_id * 10
    order.update(
        id=order_id, name=f"#{order_id}", order_number=order_id,
        admin_graphql_api_id=f"gid://shopify/Order/{order_id}",
        created_at=(updated_at - timedelta(minutes=5)).isoformat(),
        processed_at=(updated_at - timedelta(minutes=5)).isoformat(),
        updated_at=updated_at.isoformat(),
        cancelled_at=updated_at.isoformat() if cancelled else None,
        closed_at=updated_at.isoformat() if closed or cancelled else None,
    )  # fmt: skip
    if coupon is not None:
        order["discount_codes"] = [{"code": coupon, "amount": "10.00", "type": "fixed_amount"}]
    if isinstance(order.get("customer"), dict):
        order["customer"] = {**order["customer"], "id": base + 7}
    refunds = order.get("refunds") or []
    if refund_id is None or not refunds:
        order["refunds"] = []
    else:
        refund = copy.deepcopy(refunds[0])
        at = (updated_at - timedelta(minutes=1)).isoformat()
        refund.update(
            id=refund_id, order_id=order_id, created_at=at, processed_at=at,
            admin_graphql_api_id=f"gid://shopify/Refund/{refund_id}",
        )  # fmt: skip
        order["refunds"] = [refund]
    return order


def admin_for(admin: ShopifyAdmin, shop: str) -> ShopifyAdmin:
    admin.shop = shop
    return admin


# --- (1) the protocol: pagination, 429, the call-limit slowdown ------------------------------


async def test_pages_through_every_order_following_the_link_header(
    shopify_admin: ShopifyAdmin,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    for n in range(7):
        shopify_admin.put(admin_order(1000 + n, now - timedelta(hours=n)))
    shopify_admin.put(admin_order(1007, now, cancelled=True))
    shopify_admin.put(admin_order(1008, now, closed=True))
    shopify_admin.put(admin_order(1009, now - timedelta(days=3)))  # before `since`
    found: list[int] = []
    async with AdminApi(shopify_admin.shop, shopify_admin.token, base_url=shopify_admin.url,
                        page_size=2, sleep=no_sleep) as api:  # fmt: skip
        async for page in api.order_pages(now - timedelta(days=1)):
            assert 1 <= len(page) <= 2
            found.extend(o["id"] for o in page)
    # status=any: cancelled and closed orders too; 9 orders on 5 pages, each once.
    assert sorted(found) == list(range(1000, 1009))
    assert api.stats.pages == 5
    calls = shopify_admin.served()
    assert [c.status for c in calls] == [200] * 5
    first, *following = calls
    assert first.query == {
        "status": "any",
        "updated_at_min": (now - timedelta(days=1)).isoformat(),
        "limit": "2",
    }
    # Cursor pages carry only what Shopify allows with page_info (the stand-in 400s otherwise).
    assert all(set(c.query) == {"limit", "page_info"} for c in following)
    assert api.server_time is not None


async def test_a_wrong_token_is_an_error(shopify_admin: ShopifyAdmin) -> None:
    shopify_admin.put(admin_order(1000, datetime.now(UTC)))
    async with AdminApi(shopify_admin.shop, "wrong", base_url=shopify_admin.url) as api:
        with pytest.raises(rc.AdminApiError) as caught:
            async for _ in api.order_pages(SINCE):
                pass
    assert caught.value.status == 401


async def test_a_429_is_waited_out_for_retry_after_and_retried(
    shopify_admin: ShopifyAdmin,
) -> None:
    now = datetime.now(UTC)
    for n in range(4):
        shopify_admin.put(admin_order(2000 + n, now))
    found: list[int] = []
    async with AdminApi(shopify_admin.shop, shopify_admin.token, base_url=shopify_admin.url,
                        page_size=2) as api:  # fmt: skip
        pages = api.order_pages(SINCE)
        found.extend(o["id"] for o in await anext(pages))
        shopify_admin.throttle_next(1, retry_after="1.5")  # the second page's call
        async for page in pages:
            found.extend(o["id"] for o in page)
    assert sorted(found) == [2000, 2001, 2002, 2003]
    statuses = [c.status for c in shopify_admin.served()]
    assert statuses == [200, 429, 200]
    throttled, retried = shopify_admin.served()[1:]
    assert retried.at - throttled.at >= 1.5
    assert retried.query == throttled.query  # the same page again
    assert (api.stats.throttled, api.stats.waits) == (1, [1.5])


async def test_a_nearly_full_call_limit_bucket_slows_the_client_down(
    shopify_admin: ShopifyAdmin,
) -> None:
    now = datetime.now(UTC)
    for n in range(6):
        shopify_admin.put(admin_order(3000 + n, now))

    async def run(headroom: int) -> tuple[list[int], AdminApi]:
        ids: list[int] = []
        async with AdminApi(shopify_admin.shop, shopify_admin.token, base_url=shopify_admin.url,
                            page_size=1, headroom=headroom) as api:  # fmt: skip
            async for page in api.order_pages(SINCE):
                ids.extend(o["id"] for o in page)
        return ids, api

    # Another app left the bucket at 38/40. Ignoring the header (headroom 0) runs into 429s
    # (which are then waited out): the control that shows the bucket is real.
    shopify_admin.fill_bucket(38)
    ids, careless = await run(headroom=0)
    assert sorted(ids) == list(range(3000, 3006))
    assert careless.stats.throttled >= 1
    assert careless.stats.slowdowns == 0

    # The client reads X-Shopify-Shop-Api-Call-Limit and waits before the bucket is full.
    shopify_admin.requests.clear()
    shopify_admin.fill_bucket(38)
    started = time.monotonic()
    ids, careful = await run(headroom=4)
    assert sorted(ids) == list(range(3000, 3006))
    assert shopify_admin.served(429) == []
    assert careful.stats.throttled == 0
    assert careful.stats.slowdowns >= 1
    # 39/40 after the first call: 3 calls short of 4 free, at 2 calls/s.
    assert careful.stats.waits[0] == pytest.approx(1.5)
    assert time.monotonic() - started >= careful.stats.waited_seconds


def test_call_limit_arithmetic() -> None:
    assert rc.parse_call_limit("39/40") == (39, 40)
    assert rc.parse_call_limit("junk") is None
    assert rc.slowdown_seconds(39, 40, headroom=4) == pytest.approx(1.5)
    assert rc.slowdown_seconds(30, 40, headroom=4) == 0.0
    assert rc.slowdown_seconds(399, 400, headroom=4) == pytest.approx(0.15)  # Plus: 20/s
    assert rc.parse_retry_after("2.0") == 2.0
    assert rc.parse_retry_after(None) == 2.0


# --- (2) the watermark -------------------------------------------------------------------


def envelopes_by_id(settings: Settings, ids: set[str]) -> dict[str, EventEnvelope]:
    found = {}
    for topic in (Topic.ORDERS, Topic.REFUNDS):
        for message in read_to_end(settings.kafka_bootstrap, topic):
            envelope = EventEnvelope.from_bytes(message.value() or b"")
            if envelope.event_id in ids:
                found[envelope.event_id] = envelope
    return found


async def test_the_watermark_advances_and_a_second_run_finds_nothing_new(
    stack_settings: Settings, registered: Registered, shopify_admin: ShopifyAdmin
) -> None:
    admin = admin_for(shopify_admin, registered.shop)
    old = datetime(2025, 4, 2, 16, 31, tzinfo=UTC)
    admin.put(admin_order(4000, old))
    admin.put(admin_order(4001, old, template="order_full_450789469.json", refund_id=4901))
    admin.put(admin_order(4002, old, cancelled=True))
    assert rc.stored_watermark(stack_settings, registered.shop) is None
    with pytest.raises(ReconcileError, match="--since"):
        await rc.reconcile(stack_settings, registered.shop, token=admin.token, base_url=admin.url)

    before = datetime.now(UTC).replace(microsecond=0)
    first = await rc.reconcile(
        stack_settings, registered.shop, token=admin.token, since=SINCE, base_url=admin.url,
        overlap=timedelta(0), page_size=2,
    )  # fmt: skip
    after = datetime.now(UTC)
    assert (first.orders, first.refunds, first.dead_lettered) == (3, 1, 0)
    assert before - timedelta(seconds=1) <= first.watermark <= after  # the API's Date header
    assert rc.stored_watermark(stack_settings, registered.shop) == first.watermark
    sent = envelopes_by_id(stack_settings, set(first.event_ids))
    assert set(sent) == set(first.event_ids)  # acknowledged = in Kafka
    kinds = sorted(e.kind for e in sent.values())
    assert kinds == ["orders/cancelled", "orders/updated", "orders/updated", "refunds/create"]
    for envelope in sent.values():
        assert (envelope.tenant_id, envelope.shop) == (registered.tenant_id, registered.shop)
        assert envelope.headers[rc.RECONCILED_HEADER] == "true"

    # From the stored watermark: nothing changed, nothing sent, the watermark stays put.
    admin.requests.clear()
    second = await rc.reconcile(stack_settings, registered.shop, token=admin.token,
                                base_url=admin.url, overlap=timedelta(0))  # fmt: skip
    assert (second.orders, second.refunds, second.event_ids) == (0, 0, ())
    (call,) = admin.served()
    assert datetime.fromisoformat(call.query["updated_at_min"]) == first.watermark
    assert second.watermark >= first.watermark

    # One order changes, one is new: exactly those two are found next time.
    time.sleep(1.1)  # the Date header has whole seconds
    changed = datetime.now(UTC)
    admin.put(admin_order(4000, changed, coupon="LATER"))
    admin.put(admin_order(4003, changed))
    third = await rc.reconcile(stack_settings, registered.shop, token=admin.token,
                               base_url=admin.url, overlap=timedelta(0))  # fmt: skip
    assert (third.orders, third.refunds) == (2, 0)
    assert {e.entity_id for e in envelopes_by_id(stack_settings, set(third.event_ids)).values()} \
        == {"4000", "4003"}  # fmt: skip


async def test_the_watermark_stays_when_kafka_does_not_acknowledge(
    stack_settings: Settings, registered: Registered, shopify_admin: ShopifyAdmin
) -> None:
    admin = admin_for(shopify_admin, registered.shop)
    admin.put(admin_order(5000, datetime(2025, 4, 2, tzinfo=UTC)))
    rc.advance_watermark(stack_settings, registered.shop, SINCE, 0, 0)
    down = stack_settings.model_copy(
        update={"kafka_bootstrap": "127.0.0.1:9", "ingest_produce_timeout_seconds": 1.0}
    )
    with pytest.raises(ReconcileError, match="ProduceFailed"):
        await rc.reconcile(down, registered.shop, token=admin.token, base_url=admin.url)
    assert rc.stored_watermark(stack_settings, registered.shop) == SINCE
    # The repeated run sends it and moves on.
    done = await rc.reconcile(stack_settings, registered.shop, token=admin.token,
                              base_url=admin.url)  # fmt: skip
    assert done.orders == 1
    assert done.watermark > SINCE


# --- (3) end to end: webhooks + reconciliation → the ledger counts each order once -------------


def ledger_by_order(
    settings: Settings, tenant_id: str
) -> dict[str, list[tuple[str, str, Decimal]]]:
    """order id → its entries as (kind, line item id, amount)."""
    with psycopg.connect(settings.postgres_url) as conn:
        rows = conn.execute(
            "SELECT order_id, kind, line_item_id, amount FROM ledger_entries"
            " WHERE tenant_id = %s ORDER BY order_id, kind, line_item_id",
            (tenant_id,),
        ).fetchall()
    out: dict[str, list[tuple[str, str, Decimal]]] = {}
    for order_id, kind, line, amount in rows:
        out.setdefault(order_id, []).append((kind, line, amount))
    return out


def archived_events(settings: Settings, tenant_id: str) -> int:
    from dataflows.sinks.clickhouse import client_for

    client = client_for(settings)
    try:
        count: int = client.query(
            "SELECT count() FROM raw_events FINAL WHERE tenant_id = {t:String}",
            parameters={"t": tenant_id},
        ).result_rows[0][0]
    finally:
        client.close()
    return count


async def test_webhooks_and_reconciliation_count_every_order_once(
    stack_settings: Settings,
    make_client: ClientFactory,
    shopify_admin: ShopifyAdmin,
    kafka_topic_factory: TopicFactory,
) -> None:
    t = new_tenant()
    seed_tenant(stack_settings, t)
    shop, secret = f"shop-{uuid.uuid4().hex[:10]}.myshopify.com", f"secret-{uuid.uuid4().hex}"
    register_shop(stack_settings, shop, t.tenant_id, secret, None)
    admin = admin_for(shopify_admin, shop)
    v1 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    full = "order_full_450789469.json"  # three lines of 199.00, a refund of two of them

    # Six coupon orders in the shop. 7001-7003 reach refstream by webhook as well (7002 with
    # its refund); 7004-7006 only through the Admin API (7005 with a refund the webhook missed).
    shop_orders = {
        7001: admin_order(7001, v1, template=full, coupon=t.coupon),
        7002: admin_order(7002, v1, template=full, coupon=t.coupon, refund_id=8002),
        7003: admin_order(7003, v1, template=full, coupon=t.coupon),
        7004: admin_order(7004, v1, template=full, coupon=t.coupon),
        7005: admin_order(7005, v1, template=full, coupon=t.coupon, refund_id=8005),
        7006: admin_order(7006, v1, template=full, coupon=t.coupon),
    }
    webhook_ids: set[str] = set()
    async with make_client() as ingress:
        for order_id in (7001, 7002, 7003):
            order = shop_orders[order_id]
            deliveries = [("orders/create", orjson.dumps(order))]
            if order["refunds"]:
                deliveries.append(("refunds/create", orjson.dumps(order["refunds"][0])))
            for topic, body in deliveries:
                response = await ingress.post(
                    "/webhooks/shopify", content=body,
                    headers=shopify_headers(shop, secret, body, topic),
                )  # fmt: skip
                assert response.json()["status"] == "accepted", response.text
                webhook_ids.add(response.json()["event_id"])
        # orders/paid for 7001's same version: a second webhook of that version.
        body = orjson.dumps(shop_orders[7001])
        response = await ingress.post(
            "/webhooks/shopify",
            content=body,
            headers=shopify_headers(shop, secret, body, "orders/paid"),
        )
        assert response.json()["event_id"] in webhook_ids

    # 7003 changed after its webhook (a note: same lines), so the API holds a newer version.
    shop_orders[7003]["note"] = "deliver to the back door"
    shop_orders[7003]["updated_at"] = (v1 + timedelta(minutes=30)).isoformat()
    for order in shop_orders.values():
        admin.put(order)

    result = await rc.reconcile(
        stack_settings, shop, token=admin.token, since=v1 - timedelta(days=1), base_url=admin.url,
        page_size=4,
    )  # fmt: skip
    assert (result.orders, result.refunds) == (6, 2)
    # The webhook versions and their reconciled copies share their ids: 7001, 7002 and its
    # refund; 7003's newer version is a new event.
    assert webhook_ids - set(result.event_ids) == {
        i for i in webhook_ids
        if envelopes_by_id(stack_settings, {i})[i].entity_id == "7003"
    }  # fmt: skip
    assert len(webhook_ids & set(result.event_ids)) == 3
    # Running it again (an overlapping window) changes nothing either.
    again = await rc.reconcile(stack_settings, shop, token=admin.token,
                               since=v1 - timedelta(days=1), base_url=admin.url)  # fmt: skip
    assert set(again.event_ids) == set(result.event_ids)

    deadletter = kafka_topic_factory("deadletter", partitions=1)
    flow = build(
        stack_settings, tail=False, input_topics=(Topic.CLICKS, Topic.ORDERS, Topic.REFUNDS),
        deadletter_topic=deadletter,
    )  # fmt: skip
    run_main(flow)

    ledger = ledger_by_order(stack_settings, t.tenant_id)
    assert set(ledger) == {str(o) for o in shop_orders}
    # bob's coupon, 10 %: one accrual per line of each order (3 x 199.00 - 10.00 discount =
    # 587.00 → 58.70), and one reversal per refunded line (2 of 3) of each refund: nothing twice.
    lines = ["466157049", "518995019", "703073504"]
    for order_id, entries in ledger.items():
        accruals = [(line, amount) for kind, line, amount in entries if kind == "accrual"]
        reversals = [(line, amount) for kind, line, amount in entries if kind == "reversal"]
        assert sorted(line for line, _ in accruals) == lines, (order_id, entries)
        assert sum(a for _, a in accruals) == Decimal("58.70"), (order_id, entries)
        refunded = order_id in ("7002", "7005")
        assert sorted(line for line, _ in reversals) == (
            ["466157049", "703073504"] if refunded else []
        ), (order_id, entries)
        assert len(entries) == len(accruals) + len(reversals), (order_id, entries)
    total = sum(a for entries in ledger.values() for *_, a in entries)
    assert total == 6 * Decimal("58.70") - 2 * Decimal("39.13")
    # The archive holds each distinct event once: 6 orders + 1 newer version of 7003 + 2
    # refunds (webhook and reconciled copies of one version are one row).
    assert archived_events(stack_settings, t.tenant_id) == 9
    letters = [orjson.loads(m.value() or b"") for m in read_to_end(
        stack_settings.kafka_bootstrap, deadletter)]  # fmt: skip
    assert [x for x in letters if (x.get("envelope") or {}).get("tenant_id") == t.tenant_id] == []


# --- the command -------------------------------------------------------------------------


def test_the_refstream_command_takes_the_token_from_the_environment(
    stack_settings: Settings, registered: Registered, shopify_admin: ShopifyAdmin
) -> None:
    admin = admin_for(shopify_admin, registered.shop)
    admin.put(admin_order(6000, datetime(2025, 4, 2, tzinfo=UTC)))
    env = {
        **os.environ,
        "REFSTREAM_KAFKA_BOOTSTRAP": stack_settings.kafka_bootstrap,
        "REFSTREAM_POSTGRES_URL": stack_settings.postgres_url,
        "REFSTREAM_SHOPIFY_TOKEN": admin.token,
    }

    def refstream(*args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deploy.cli", "shopify", "reconcile", "--shop",
             registered.shop, "--admin-url", admin.url, *args],
            env=env if token else {k: v for k, v in env.items() if k != "REFSTREAM_SHOPIFY_TOKEN"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    no_token = refstream("--since", "2025-01-01T00:00:00Z", token=False)
    assert no_token.returncode == 1
    assert "REFSTREAM_SHOPIFY_TOKEN" in no_token.stdout
    first_run = refstream()  # no watermark yet and no --since
    assert first_run.returncode == 1
    assert "--since" in first_run.stdout
    assert rc.stored_watermark(stack_settings, registered.shop) is None
    done = refstream("--since", "2025-01-01T00:00:00Z", "--overlap-seconds", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{registered.shop}: 1 orders, 0 refunds sent" in done.stdout
    assert rc.stored_watermark(stack_settings, registered.shop) is not None
    again = refstream("--overlap-seconds", "0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{registered.shop}: 0 orders, 0 refunds sent" in again.stdout


async def test_the_identity_rule_is_pinned_and_a_repeated_delivery_gets_the_same_id(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    at = datetime(2025, 4, 2, 11, 31, 38, tzinfo=timezone(timedelta(hours=-5)))
    order = admin_order(9100, at, refund_id=9900, template="order_full_450789469.json")
    body = orjson.dumps(order)
    headers = shopify_headers(registered.shop, registered.secret, body, "orders/paid")
    first = (await client.post("/webhooks/shopify", content=body, headers=headers)).json()
    again = (await client.post("/webhooks/shopify", content=body, headers=headers)).json()
    assert (first["status"], again["status"]) == ("accepted", "duplicate")
    # shop + "order" + order id + updated_at in UTC (µs): the same for every order topic.
    version = derived_id("evt", registered.shop, "order", 9100, "2025-04-02T16:31:38.000000+00:00")
    assert first["event_id"] == again["event_id"] == version
    # Another delivery (new webhook id) of the same version, as orders/updated: the same id.
    headers = shopify_headers(registered.shop, registered.secret, body, "orders/updated")
    other = (await client.post("/webhooks/shopify", content=body, headers=headers)).json()
    assert (other["status"], other["event_id"]) == ("accepted", version)
    refund = orjson.dumps(order["refunds"][0])
    headers = shopify_headers(registered.shop, registered.secret, refund, "refunds/create")
    answer = (await client.post("/webhooks/shopify", content=refund, headers=headers)).json()
    assert answer["event_id"] == derived_id("evt", registered.shop, "refund", 9900)
    # What a reconciliation sends for this order carries the same ids.
    out = rc.events_of_order(order, registered.shop, registered.tenant_id, datetime.now(UTC))
    assert [o.envelope.event_id for o in out] == [version, answer["event_id"]]
    assert [o.envelope.kind for o in out] == ["orders/updated", "refunds/create"]
