"""The storefront snippet in a real browser, end to end.

The whole stack runs as processes (`refstream up`: broker, ClickHouse, ingress, API, dataflow). A
company is set up through the API with its Shopify shop `{slug}.myshopify.com`; a local stand-in
for that storefront (`storefront.py`, HTTPS, Shopify's AJAX Cart API) serves the shop's pages with
the theme's `<script src="{ingress}/pixel/v1.js">`, and Chromium resolves the shop's domain to it,
so the page's origin is the registered `https://{shop domain}` and the ingress on 127.0.0.1 is
another origin. A shopper lands from a referral link; the test checks the click reached Kafka,
the cart's attributes hold the click and visitor ids, then sends the signed `orders/create`
Shopify would (its `note_attributes` are the cart's attributes) and waits for the dataflow to
attribute the order to the link's agent. A page on an unregistered origin records nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import orjson

from ingest.pixel import CART_CLICK_ATTRIBUTE, CART_VISITOR_ATTRIBUTE
from ingest.shopify import sign
from schemas.conversion import conversion_from_shopify
from schemas.events.shopify import ShopifyOrder
from schemas.settings import Settings
from tests.browser.conftest import ARTIFACTS, CHROMIUM, HERE, Stack
from tests.browser.storefront import PRODUCTS, Cart, Storefront
from tests.browser.traffic import Shop, ingest_url, set_up_company, wait_for_links
from tests.ingest.test_clicks import clicks_by_id

CLICK_ID = re.compile(r"^clk_[0-9a-f]{32}$")


def shop_page(node: Path, page_url: str, hosts: list[str], port: int, name: str) -> dict[str, Any]:
    """`storefront.mjs` on `page_url`, with `hosts` resolved to the local storefront."""
    rules = ", ".join(f"MAP {host} 127.0.0.1:{port}" for host in hosts)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(node), str(HERE / "storefront.mjs")], cwd=HERE, text=True, capture_output=True,
        timeout=120, check=False,
        env={**os.environ, "PAGE_URL": page_url, "HOST_RULES": rules,
             "SCREENSHOT": str(ARTIFACTS / f"storefront-{name}.png"), "CHROMIUM": str(CHROMIUM)},
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"no answer from the browser (exit {result.returncode}): {result.stderr[-2000:]}"
    answer: dict[str, Any] = json.loads(lines[-1])
    assert answer["event"] == "result", answer
    return answer


def place_order(ingress: httpx.Client, shop: Shop, cart: Cart) -> tuple[int, ShopifyOrder]:
    """The signed `orders/create` Shopify sends for `cart`: its lines, and its attributes as the
    order's `note_attributes`. No `landing_site`: only the cart carries refstream's ids."""
    order_id = int(time.time() * 1000)
    now = datetime.now(UTC).isoformat()
    lines = []
    total = 0
    for variant, quantity in cart.lines.items():
        product, sku, title, cents = PRODUCTS[variant]
        total += cents * quantity
        lines.append({"id": order_id * 10 + len(lines), "variant_id": variant,
                      "product_id": product, "sku": sku, "title": title, "quantity": quantity,
                      "price": f"{cents / 100:.2f}", "total_discount": "0.00"})  # fmt: skip
    price = f"{total / 100:.2f}"
    body = orjson.dumps({
        "id": order_id, "name": f"#{order_id}", "email": f"buyer{order_id}@example.com",
        "created_at": now, "processed_at": now, "updated_at": now, "currency": "USD",
        "total_price": price, "subtotal_price": price, "total_discounts": "0.00",
        "total_tax": "0.00", "financial_status": "paid", "discount_codes": [],
        "cart_token": cart.token, "landing_site": "/collections/office",
        "note": cart.note, "customer": {"id": 800_000 + order_id % 1000},
        "note_attributes": [{"name": k, "value": v} for k, v in cart.attributes.items()],
        "line_items": lines,
    })  # fmt: skip
    response = ingress.post("/webhooks/shopify", content=body, headers={
        "Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": shop.domain, "X-Shopify-Hmac-Sha256": sign(shop.secret, body),
        "X-Shopify-Event-Id": uuid.uuid4().hex, "X-Shopify-API-Version": "2026-07",
    })  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted", response.text
    return order_id, ShopifyOrder.model_validate_json(body)


def attribution(settings: Settings, tenant_id: str, order_id: int, timeout: float = 60) -> Any:
    """The conversion row the dataflow wrote for the order: (agent, click, link code, rule)."""
    target = settings.clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, username=target.username, database=target.database
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = client.query(
                "SELECT agent_id, click_id, link_code, rule FROM conversions FINAL"
                " WHERE tenant_id = {t:String} AND order_id = {o:String}",
                parameters={"t": tenant_id, "o": str(order_id)},
            ).result_rows
            if rows:
                return rows[0]
            time.sleep(0.3)
        raise AssertionError(f"the dataflow wrote no conversion for order {order_id}")
    finally:
        client.close()


def shop_cookies(answer: dict[str, Any], domain: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in answer["cookies"] if c["domain"] == domain}


def test_a_referred_shopper_s_order_is_attributed_through_the_cart(
    playwright_ready: Path, stack: Stack, tmp_path: Path
) -> None:
    settings = stack.settings
    shop = set_up_company(settings)
    ana, bo = shop.links[0], shop.links[1]
    stranger = f"not-registered-{uuid.uuid4().hex[:8]}.example"
    ingress_url = ingest_url(settings)
    with (
        httpx.Client(base_url=ingress_url, timeout=10) as ingress,
        Storefront(ingress_url, tmp_path) as storefront,
    ):
        wait_for_links(ingress, shop)
        hosts = [shop.domain, stranger]

        # 1. A landing from an agent's shared shop link: https://SHOP/...?ref=CODE
        landed = shop_page(playwright_ready, f"https://{shop.domain}/collections/office?ref={ana}",
                           hosts, storefront.port, "ref")  # fmt: skip
        assert landed["console_errors"] == [], landed
        ids = landed["ids"]
        click_id, visitor_id = ids["click_id"], ids["visitor_id"]
        assert CLICK_ID.match(click_id or ""), landed
        (call,) = landed["clicks"]
        assert call["status"] == 202, call
        assert call["headers"]["access-control-allow-origin"] == f"https://{shop.domain}"
        assert call["request_headers"]["origin"] == f"https://{shop.domain}"
        assert call["request_headers"]["content-type"].startswith("text/plain")
        # The click reached Kafka, for Ana's link, with the shop's visitor id, not a bot.
        click = clicks_by_id(settings)[click_id]
        assert click.link_code == ana
        assert click.visitor_id == visitor_id
        assert click.shop == shop.domain
        assert click.landing_url == f"https://{shop.domain}/collections/office?ref={ana}"
        assert not click.is_bot
        # First-party cookies of the shop's own domain, and the cart's attributes.
        cookies = shop_cookies(landed, shop.domain)
        assert cookies["rs_vid"]["value"] == visitor_id
        assert cookies["rs_clid"]["value"] == click_id
        assert cookies["rs_vid"]["secure"]
        assert landed["cart"]["attributes"] == {
            CART_CLICK_ATTRIBUTE: click_id, CART_VISITOR_ATTRIBUTE: visitor_id}  # fmt: skip
        # A later page keeps the same ids and records no second click.
        assert landed["ids_later"] == ids
        assert landed["cart_later"]["attributes"] == landed["cart"]["attributes"]
        assert landed["cart_later"]["item_count"] == 1

        cart_token = landed["cart_later"]["token"]
        order_id, order = place_order(ingress, shop, storefront.carts[cart_token])
        # What the dataflow reads of it: the cart's click id and visitor id.
        conversion = conversion_from_shopify(
            order, tenant_id=shop.tenant_id, source_event_id="evt_check", shop=shop.domain
        )
        assert conversion.click_ids == (click_id,)
        assert conversion.visitor_id == visitor_id
        agent, cited, link, rule = attribution(settings, shop.tenant_id, order_id)
        assert (agent, cited, link) == (click.agent_id, click_id, ana), rule

        # 2. A landing through the ingress's own referral link: /r/CODE -> https://SHOP/?rsclid=
        redirected = shop_page(playwright_ready, f"{ingress_url}/r/{bo}", hosts,
                               storefront.port, "redirect")  # fmt: skip
        assert redirected["landed"].startswith(f"https://{shop.domain}/collections/office?")
        bo_click = redirected["ids"]["click_id"]
        assert f"rsclid={bo_click}" in redirected["landed"]
        assert redirected["clicks"] == []  # recorded by the redirect, not again by the snippet
        recorded = clicks_by_id(settings)[bo_click]
        assert recorded.link_code == bo
        assert redirected["cart"]["attributes"][CART_CLICK_ATTRIBUTE] == bo_click
        bo_cart = storefront.carts[redirected["cart_later"]["token"]]
        bo_order, _ = place_order(ingress, shop, bo_cart)
        agent, cited, link, _rule = attribution(settings, shop.tenant_id, bo_order)
        assert (agent, cited, link) == (recorded.agent_id, bo_click, bo)

        # 3. The same snippet on a site that is no registered shop: the browser blocks the
        # call (no CORS headers; the ingress answered 403) and no click is recorded.
        before = set(clicks_by_id(settings))
        blocked = shop_page(playwright_ready, f"https://{stranger}/collections/office?ref={ana}",
                            hosts, storefront.port, "unregistered")  # fmt: skip
        assert blocked["ids"]["click_id"] is None, blocked
        assert blocked["cart"]["attributes"] == {
            CART_VISITOR_ATTRIBUTE: blocked["ids"]["visitor_id"]}  # fmt: skip
        # (the fetch, then its sendBeacon fallback; Chromium may hide a blocked answer)
        assert {c["status"] for c in blocked["clicks"]} <= {403}, blocked["clicks"]
        for call in blocked["clicks"]:
            assert "access-control-allow-origin" not in call["headers"]
        after = clicks_by_id(settings)
        assert not [c for c in set(after) - before if after[c].link_code == ana]
