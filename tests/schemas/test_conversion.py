from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from pydantic import ValidationError

from schemas.conversion import (
    Conversion,
    ConversionLine,
    conversion_from_shopify,
    refund_from_shopify,
)
from schemas.events.shopify import ShopifyOrder, ShopifyRefund
from tests.fixtures import DATA

FIXTURES = DATA / "shopify"
CLICK = "clk_" + "ab" * 16


def shopify_order(**changes: object) -> ShopifyOrder:
    body = orjson.loads((FIXTURES / "order_full_450789469.json").read_bytes())
    return ShopifyOrder.model_validate(body | changes)


def test_shopify_order_becomes_conversion_facts() -> None:
    order = shopify_order(
        landing_site=f"/products/ipod?utm_source=x&rsclid={CLICK}",
        note_attributes=[{"name": "_rsvid", "value": " v-123 "}, {"name": "colour", "value": "g"}],
    )
    conversion = conversion_from_shopify(
        order, tenant_id="t1", source_event_id="evt_1", collections={"632910392": ("ipods",)}
    )
    assert conversion.order_id == "450789469"
    assert conversion.occurred_at == datetime(2008, 1, 10, 16, tzinfo=UTC)
    assert conversion.coupon_codes == ("TENOFF",)
    assert conversion.click_ids == (CLICK,)
    assert conversion.visitor_id == "v-123"
    assert conversion.customer_email == "bob.norman@mail.example.com"
    # The 10.00 order-level code is already allocated to the lines by Shopify (3.34/3.33/3.33).
    assert [line.discount for line in conversion.lines] == [
        Decimal("3.34"),
        Decimal("3.33"),
        Decimal("3.33"),
    ]
    assert conversion.order_discount == 0
    assert conversion.net_revenue == Decimal("587.00")
    assert conversion.lines[0].collection_ids == ("ipods",)


def test_click_id_from_cart_attribute_and_tax_inclusive_prices() -> None:
    order = shopify_order(
        landing_site=None,
        note_attributes=[{"name": "rsclid", "value": CLICK}],
        taxes_included=True,
    )
    conversion = conversion_from_shopify(order, tenant_id="t1", source_event_id="evt_1")
    assert conversion.click_ids == (CLICK,)
    assert conversion.lines[0].included_tax == Decimal("3.98")


def test_order_without_event_time_is_refused() -> None:
    order = shopify_order(processed_at=None, created_at=None)
    with pytest.raises(ValueError, match="lacks processed_at"):
        conversion_from_shopify(order, tenant_id="t1", source_event_id="evt_1")


def test_shopify_refund_becomes_refund_facts() -> None:
    body = orjson.loads((FIXTURES / "refunds_create.json").read_bytes())
    refund = refund_from_shopify(ShopifyRefund.model_validate(body), source_event_id="evt_r")
    assert (refund.refund_id, refund.order_id) == ("509562969", "450789469")
    assert refund.quantities() == {"703073504": 1, "466157049": 1}


def test_conversion_normalises_what_it_matches_on() -> None:
    conversion = Conversion(
        tenant_id="t1",
        order_id="1",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        currency="USD",
        customer_email="  Bob@Example.COM ",
        coupon_codes=(" tenoff", "TENOFF", ""),
        source_event_id="evt",
    )
    assert conversion.customer_email == "bob@example.com"
    assert conversion.coupon_codes == ("TENOFF",)


def test_conversion_refuses_bad_facts() -> None:
    line = ConversionLine(line_id="l1", quantity=1, unit_price=Decimal("1.00"))
    with pytest.raises(ValidationError, match="unique"):
        Conversion(
            tenant_id="t1",
            order_id="1",
            occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
            currency="USD",
            lines=(line, line),
            source_event_id="evt",
        )
    with pytest.raises(ValidationError):
        ConversionLine(line_id="l1", quantity=1, unit_price=Decimal("-1"))
