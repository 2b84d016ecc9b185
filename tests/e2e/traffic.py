"""Realistic webhook deliveries built from the real payloads in `tests/fixtures/data/`.

Each builder copies a real Shopify or Odoo body and changes only what a scenario needs (ids,
times, lines, discount codes, the referral click cited by the landing page), then signs it with
the shop's secret exactly as Shopify does. Delivery ids (`X-Shopify-Event-Id`) are derived from
the scenario, so a re-delivery carries the same id, as Shopify's retries do.
"""

from __future__ import annotations

import copy
import json
import zlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from ingest.shopify import sign
from tests.e2e.harness import Delivery, TenantSetup
from tests.fixtures import DATA

FIXTURES = DATA


@cache
def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


@dataclass(frozen=True)
class Line:
    line_id: int
    quantity: int
    price: str
    discount: str = "0.00"  # the line's share of the order's discount codes
    sku: str = "SKU-CHAIR"


@dataclass(frozen=True)
class Order:
    order_id: int
    lines: tuple[Line, ...]
    at: datetime
    coupon: str | None = None
    cites: str | None = None  # a click id, as the landing page's ?rsclid= carries it
    email: str | None = None
    customer_id: int | None = None

    @property
    def name(self) -> str:
        return f"#{self.order_id}"


def order_body(order: Order, template: str = "shopify/orders_create.json") -> dict[str, Any]:
    """The fixture order with this order's ids, times, lines, coupon and landing page."""
    body = copy.deepcopy(fixture(template))
    line_template = body["line_items"][0]
    stamp = order.at.isoformat()
    email = order.email or f"buyer{order.order_id}@example.com"
    gross = sum(Decimal(line.price) * line.quantity for line in order.lines)
    discounts = sum(Decimal(line.discount) for line in order.lines)
    body.update(
        id=order.order_id, name=order.name, order_number=order.order_id, number=order.order_id,
        created_at=stamp, processed_at=stamp, updated_at=stamp, email=email, contact_email=email,
        currency="USD", presentment_currency="USD", taxes_included=False, total_tax="0.00",
        tax_lines=[], total_line_items_price=str(gross), subtotal_price=str(gross - discounts),
        total_price=str(gross - discounts), total_discounts=str(discounts), note_attributes=[],
        landing_site=f"/collections/office?rsclid={order.cites}" if order.cites else None,
        discount_codes=(
            [{"code": order.coupon, "amount": str(discounts), "type": "percentage"}]
            if order.coupon else []
        ),
    )  # fmt: skip
    customer = body.get("customer") or {}
    body["customer"] = {**customer, "id": order.customer_id or 7_000_000 + order.order_id,
                        "email": email}  # fmt: skip
    body["line_items"] = [_line(line_template, line) for line in order.lines]
    return body


def _line(template: dict[str, Any], line: Line) -> dict[str, Any]:
    item = copy.deepcopy(template)
    item.update(
        id=line.line_id, quantity=line.quantity, current_quantity=line.quantity,
        price=line.price, sku=line.sku, title=line.sku, name=line.sku, total_discount="0.00",
        product_id=zlib.crc32(line.sku.encode()), tax_lines=[],
        discount_allocations=(
            [{"amount": line.discount, "discount_application_index": 0,
              "amount_set": _money(line.discount)}]
            if Decimal(line.discount) else []
        ),
    )  # fmt: skip
    return item


def _money(amount: str) -> dict[str, Any]:
    return {
        "shop_money": {"amount": amount, "currency_code": "USD"},
        "presentment_money": {"amount": amount, "currency_code": "USD"},
    }


def cancel_body(order: Order, at: datetime) -> dict[str, Any]:
    body = order_body(order, "shopify/orders_cancelled.json")
    body.update(cancelled_at=at.isoformat(), updated_at=at.isoformat(), cancel_reason="customer",
                financial_status="voided")  # fmt: skip
    return body


def refund_body(
    order: Order, refund_id: int, quantities: dict[int, int], at: datetime
) -> dict[str, Any]:
    """The fixture refund of `quantities` (line id → units) of `order`."""
    body = copy.deepcopy(fixture("shopify/refunds_create.json"))
    item_template = body["refund_line_items"][0]
    lines = {line.line_id: line for line in order.lines}
    items = []
    for n, (line_id, quantity) in enumerate(sorted(quantities.items())):
        item = copy.deepcopy(item_template)
        price = Decimal(lines[line_id].price)
        item.update(id=refund_id * 10 + n, line_item_id=line_id, quantity=quantity,
                    subtotal=float(price * quantity), total_tax=0.0)  # fmt: skip
        item["line_item"] = {**item["line_item"], "id": line_id, "price": str(price)}
        items.append(item)
    for transaction in body["transactions"]:
        transaction.update(order_id=order.order_id, parent_id=None)
    body.update(id=refund_id, order_id=order.order_id, created_at=at.isoformat(),
                processed_at=at.isoformat(), refund_line_items=items)  # fmt: skip
    return body


def invoice_paid_body(order: Order, invoice_id: int, amount: str) -> bytes:
    """Odoo 17's `account.move` notification for the order's invoice, posted and paid."""
    body = copy.deepcopy(fixture("odoo/odoo17_account_move_invoice_posted.json"))
    body.update(
        _id=invoice_id, id=invoice_id, invoice_origin=order.name, name=f"INV/E2E/{invoice_id}",
        payment_reference=f"INV/E2E/{invoice_id}", payment_state="paid",
        amount_total=float(amount), amount_total_signed=float(amount), amount_residual=0.0,
        amount_untaxed=float(amount), amount_tax=0.0,
    )  # fmt: skip
    return json.dumps(body, sort_keys=True).encode()


def shopify(tenant: TenantSetup, topic: str, body: dict[str, Any], key: str) -> Delivery:
    """A signed Shopify delivery; `key` makes the delivery id (stable across re-deliveries)."""
    raw = json.dumps(body).encode()
    stream = "refunds" if topic.startswith("refunds/") else "orders"
    return Delivery(
        stream=stream,
        key=key,
        method="POST",
        path="/webhooks/shopify",
        body=raw,
        headers=(
            ("Content-Type", "application/json"),
            ("X-Shopify-Topic", topic),
            ("X-Shopify-Shop-Domain", tenant.demo.shop),
            ("X-Shopify-Hmac-Sha256", sign(tenant.demo.secret, raw)),
            ("X-Shopify-Event-Id", f"evt-{tenant.tenant_id}-{key}"),
            ("X-Shopify-Webhook-Id", f"whk-{tenant.tenant_id}-{key}"),
            ("X-Shopify-API-Version", "2026-07"),
        ),
    )


def odoo(tenant: TenantSetup, body: bytes, key: str) -> Delivery:
    return Delivery(
        stream="erp",
        key=key,
        method="POST",
        path=f"/webhooks/odoo/{tenant.demo.odoo_token}",
        body=body,
        headers=(("Content-Type", "application/json"),),
    )
