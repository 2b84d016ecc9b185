"""Traffic for a whole-stack check, all through public interfaces: a company set up through the
API, referral clicks and signed Shopify orders through the ingress, conversions read back from
ClickHouse. Used by the browser test and `bench/freshness`."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import clickhouse_connect
import httpx
import orjson

from ingest.shopify import sign
from schemas.settings import Settings

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Shop:
    tenant_id: str
    slug: str
    owner_email: str
    domain: str
    secret: str
    links: tuple[str, ...]


def set_up_company(settings: Settings) -> Shop:
    """A company with a 10 % program, three agents with referral links and a Shopify shop,
    all through the public API (as an owner would)."""
    slug = f"acme-{uuid.uuid4().hex[:8]}"
    email = f"owner@{slug}.example"
    domain, secret = f"{slug}.myshopify.com", uuid.uuid4().hex
    with httpx.Client(base_url=api_url(settings), timeout=10) as api:
        created = api.post("/v1/companies", json={
            "name": "Acme Office Supply", "slug": slug, "owner_email": email,
            "owner_password": PASSWORD,
        })  # fmt: skip
        assert created.status_code == 201, created.text
        root = created.json()["root_unit_id"]
        login = api.post("/v1/auth/login", json={
            "company": slug, "email": email, "password": PASSWORD,
        })  # fmt: skip
        assert login.status_code == 200, login.text
        api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        program = ok(api.post("/v1/programs", json={
            "name": "Office partners", "landing_url": f"https://{domain}/collections/office",
            "currency": "USD",
        }))["id"]  # fmt: skip
        ok(api.post(f"/v1/programs/{program}/rules", json={
            "rules": {"currency": "USD", "base": {"kind": "percent", "value": "10"}},
        }))  # fmt: skip
        links = []
        for name in ("Ana Lima", "Bo Berg", "Chen Wu"):
            first = name.split()[0].lower()
            agent = ok(api.post("/v1/agents", json={
                "name": name, "unit_id": root, "email": f"{first}@agents.example",
            }))["id"]  # fmt: skip
            code = f"{first}-{slug}"
            ok(api.post("/v1/links", json={"program_id": program, "agent_id": agent, "code": code}))
            links.append(code)
        claimed = api.post("/v1/shops", json={"domain": domain, "secret": secret})
        assert claimed.status_code == 202, claimed.text
    prove_shop(settings, domain, secret)
    return Shop(created.json()["company"]["id"], slug, email, domain, secret, tuple(links))


def prove_shop(settings: Settings, domain: str, secret: str, timeout: float = 15) -> None:
    """What the merchant's test notification does: a webhook signed with the custom app's
    secret reaches the ingress, which makes the claim the company's shop (`ingest.claims`).
    Retried while the ingress has not loaded the claim yet (it answers 401 until then)."""
    body = orjson.dumps({"id": 706405506930370084, "email": f"test@{domain}",
                         "created_at": "2026-12-01T10:00:00Z",
                         "updated_at": "2026-12-01T10:00:00Z"})  # fmt: skip
    headers = {
        "Content-Type": "application/json", "X-Shopify-Topic": "customers/create",
        "X-Shopify-Shop-Domain": domain, "X-Shopify-Hmac-Sha256": sign(secret, body),
        "X-Shopify-Event-Id": f"test-{uuid.uuid4().hex}",
    }  # fmt: skip
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=ingest_url(settings), timeout=10) as ingress:
        while True:
            response = ingress.post("/webhooks/shopify", content=body, headers=headers)
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert response.status_code == 200, response.text


def ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


def api_url(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


def ingest_url(settings: Settings) -> str:
    return f"http://{settings.ingest_host}:{settings.ingest_port}"


def click(ingress: httpx.Client, code: str, visitor: str) -> str:
    """A shopper follows a referral link; returns the click id from the redirect."""
    response = ingress.get(f"/r/{code}", headers={"User-Agent": f"Mozilla/5.0 ({visitor})"})
    assert response.status_code == 302, response.text
    click_id: str = parse_qs(urlsplit(response.headers["location"]).query)["rsclid"][0]
    return click_id


def order(ingress: httpx.Client, shop: Shop, order_id: int, click_id: str, price: str) -> str:
    """Shopify delivers a signed orders/create citing the click; returns the order name."""
    now = datetime.now(UTC).isoformat()
    body = orjson.dumps({
        "id": order_id, "name": f"#{order_id}", "email": f"buyer{order_id}@example.com",
        "created_at": now, "processed_at": now, "updated_at": now, "currency": "USD",
        "total_price": price, "subtotal_price": price, "total_discounts": "0.00",
        "total_tax": "0.00", "financial_status": "paid", "discount_codes": [],
        "landing_site": f"/collections/office?rsclid={click_id}",
        "customer": {"id": 700_000 + order_id % 1000},
        "line_items": [{"id": order_id * 10, "product_id": 1, "sku": "SKU-DESK", "title": "Desk",
                        "quantity": 1, "price": price, "total_discount": "0.00"}],
    })  # fmt: skip
    response = ingress.post("/webhooks/shopify", content=body, headers={
        "Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": shop.domain, "X-Shopify-Hmac-Sha256": sign(shop.secret, body),
        "X-Shopify-Event-Id": uuid.uuid4().hex, "X-Shopify-API-Version": "2026-07",
    })  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted", response.text
    return f"#{order_id}"


def wait_for_links(ingress: httpx.Client, shop: Shop, timeout: float = 30) -> None:
    # The ingress reloads registrations on the API's announcement.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ingress.get(f"/r/{shop.links[-1]}").status_code == 302:
            return
        time.sleep(0.2)
    raise AssertionError("the ingress never learned the company's links")


def wait_for_conversions(
    settings: Settings, tenant_id: str, count: int, timeout: float = 60
) -> None:
    target = settings.clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, username=target.username, database=target.database
    )
    try:
        deadline = time.monotonic() + timeout
        found = 0
        while time.monotonic() < deadline:
            found = client.query(
                "SELECT uniqExact(order_id) FROM conversions FINAL WHERE tenant_id = {t:String}",
                parameters={"t": tenant_id},
            ).result_rows[0][0]
            if found >= count:
                return
            time.sleep(0.3)
        raise AssertionError(f"the dataflow wrote {found} of {count} conversions")
    finally:
        client.close()
