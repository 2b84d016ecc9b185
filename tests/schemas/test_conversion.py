from __future__ import annotations

import pickle
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import orjson
import pytest

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


NAIVE = datetime(2025, 1, 1, tzinfo=UTC).replace(tzinfo=None)


def test_conversion_refuses_bad_facts() -> None:
    line = ConversionLine(line_id="l1", quantity=1, unit_price=Decimal("1.00"))
    good = {"tenant_id": "t1", "order_id": "1", "occurred_at": datetime(2025, 1, 1, tzinfo=UTC),
            "currency": "USD", "source_event_id": "evt"}  # fmt: skip
    assert Conversion(**good).lines == ()
    with pytest.raises(ValueError, match="unique"):
        Conversion(**good, lines=(line, line))
    bad_conversions = [
        ({"tenant_id": ""}, "tenant_id"), ({"order_id": 1}, "order_id"),
        ({"source_event_id": ""}, "source_event_id"), ({"currency": "usd"}, "currency"),
        ({"currency": "EURO"}, "currency"), ({"occurred_at": NAIVE}, "aware"),
        ({"occurred_at": "2025-01-01T00:00:00Z"}, "aware"), ({"shop": 5}, "shop"),
        ({"customer_email": 5}, "customer_email"), ({"lines": ("l1",)}, "order lines"),
        ({"order_discount": Decimal("-0.01")}, "order_discount"),
        ({"order_discount": "NaN"}, "order_discount"),
    ]  # fmt: skip
    for change, match in bad_conversions:
        with pytest.raises(ValueError, match=match):
            Conversion(**good | change)
    bad_lines = [
        ({"line_id": ""}, "line_id"), ({"quantity": -1}, "quantity"),
        ({"quantity": True}, "quantity"), ({"quantity": 1.0}, "quantity"),
        ({"unit_price": Decimal("-1")}, "unit_price"), ({"discount": "-0.5"}, "discount"),
        ({"included_tax": "Infinity"}, "included_tax"), ({"unit_price": True}, "unit_price"),
        ({"product_id": 7}, "product_id"), ({"collection_ids": (1,)}, "collection ids"),
    ]  # fmt: skip
    for change, match in bad_lines:
        with pytest.raises(ValueError, match=match):
            ConversionLine(**{"line_id": "l1", "quantity": 1, "unit_price": Decimal(1)} | change)


def test_conversion_normalises_as_it_is_made_copied_and_loaded() -> None:
    """Amounts given as text or as a `Decimal` subclass (the wire's) become plain `Decimal`s,
    lists tuples; email, coupon codes and click ids are normalised however the struct is made
    (`msgspec.structs.replace` and unpickling check it again)."""

    class Amount(Decimal):
        pass

    line = ConversionLine(line_id="l1", quantity=2, unit_price=Amount("1.50"),  # type: ignore[arg-type]
                          discount="0.25", collection_ids=["c1"])  # type: ignore[arg-type]  # fmt: skip
    assert type(line.unit_price) is Decimal
    assert line.unit_price == Decimal("1.50")
    assert type(line.discount) is Decimal
    assert str(line.discount) == "0.25"
    assert line.collection_ids == ("c1",)
    made = Conversion(
        tenant_id="t1", order_id="1", occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        currency="USD", source_event_id="evt", customer_email=" Bob@Example.COM ",
        coupon_codes=[" tenoff", "TENOFF", " "], click_ids=(" clk_1 ", "clk_1", ""),  # type: ignore[arg-type]
        lines=[line],  # type: ignore[arg-type]
    )  # fmt: skip
    assert made.customer_email == "bob@example.com"
    assert made.coupon_codes == ("TENOFF",)
    assert made.click_ids == ("clk_1",)
    assert made.lines == (line,)
    copied = msgspec.structs.replace(made, coupon_codes=("a", "A"))
    assert copied.coupon_codes == ("A",)
    with pytest.raises(ValueError, match="quantity"):
        msgspec.structs.replace(line, quantity=-1)
    assert pickle.loads(pickle.dumps(made)) == made
    assert made.net_revenue == Decimal("2.75")
    assert made.conversion_id == pickle.loads(pickle.dumps(made)).conversion_id
