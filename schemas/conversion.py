"""Conversion facts: what attribution and commission need to know about an order and its refunds.

A `Conversion` is the source-neutral view of one order (Shopify today, Odoo or manual later):
who bought, what they cited (coupons, click ids, visitor cookie) and what each line sold for.
`OrderRefund` is one refund of some of its lines. The ingress/dataflow builds them (for Shopify
with `conversion_from_shopify` and `refund_from_shopify`); the pure domain modules
(`dataflows.attribution.logic`, `dataflows.commission.*`) only ever read these facts.

Contracts:
- Amounts are `Decimal` in the shop currency (`currency`), never negative.
- A line's `quantity` is the number of units sold as the facts stand: after order edits, *before*
  refunds (refunds are separate `OrderRefund` facts and are never subtracted here).
- `ConversionLine.discount` is every discount already allocated to that line (Shopify puts
  order-level discount codes into each line's `discount_allocations`); `Conversion.order_discount`
  is merchandise discount *not* allocated to lines by the source (commission logic spreads it pro
  rata). Shipping is not merchandise and belongs in neither.
- `included_tax` is tax contained in a tax-inclusive price; it is not revenue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Protocol
from urllib.parse import parse_qs, urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.compact import CompactPickle
from schemas.ids import derived_id
from schemas.money import CurrencyCode, DecimalStr

# Where a storefront puts refstream's ids on an order: the landing URL's query string and/or
# cart attributes (`note_attributes`). Underscore-prefixed attributes are hidden at checkout.
CLICK_ID_PARAM = "rsclid"
CLICK_ID_ATTRIBUTES = frozenset({"rsclid", "_rsclid"})
VISITOR_ID_ATTRIBUTES = frozenset({"rsvid", "_rsvid"})

NonNegativeAmount = Annotated[DecimalStr, Field(ge=0)]
_NonEmpty = Annotated[str, Field(min_length=1)]


def normalise_email(email: str | None) -> str | None:
    """`email` stripped and lower-cased; `None` for a missing or blank one."""
    if email is None or not email.strip():
        return None
    return email.strip().lower()


def normalise_coupon(code: str) -> str:
    """A coupon code as it is matched: stripped and upper-cased (Shopify codes are case-blind)."""
    return code.strip().upper()


class ConversionLine(CompactPickle, BaseModel):
    """One order line: units sold, unit price and what was taken off it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line_id: _NonEmpty
    product_id: str | None = None
    collection_ids: tuple[str, ...] = ()
    quantity: Annotated[int, Field(ge=0)]
    unit_price: NonNegativeAmount
    discount: NonNegativeAmount = Decimal(0)
    included_tax: NonNegativeAmount = Decimal(0)

    @property
    def gross(self) -> Decimal:
        """`unit_price * quantity`, before any discount."""
        return self.unit_price * self.quantity

    @property
    def net_before_order_discount(self) -> Decimal:
        """Gross less the line's own discounts and included tax, never below zero."""
        return max(Decimal(0), self.gross - self.discount - self.included_tax)


class Conversion(CompactPickle, BaseModel):
    """An order's facts as attribution and commission see them (see the module contracts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: _NonEmpty
    shop: str | None = None
    order_id: _NonEmpty
    order_name: str | None = None
    occurred_at: AwareDatetime = Field(description="Event time: when the order was placed.")
    currency: CurrencyCode
    customer_id: str | None = None
    customer_email: str | None = Field(default=None, description="Stripped and lower-cased.")
    coupon_codes: tuple[str, ...] = Field(default=(), description="Upper-cased, in order.")
    click_ids: tuple[str, ...] = Field(default=(), description="Click ids the order cites.")
    visitor_id: str | None = None
    lines: tuple[ConversionLine, ...] = ()
    order_discount: NonNegativeAmount = Decimal(0)
    source_event_id: _NonEmpty

    @field_validator("customer_email")
    @classmethod
    def _normalise_email(cls, value: str | None) -> str | None:
        return normalise_email(value)

    @field_validator("coupon_codes")
    @classmethod
    def _normalise_coupons(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        codes = (normalise_coupon(code) for code in value)
        return tuple(dict.fromkeys(code for code in codes if code))

    @field_validator("click_ids")
    @classmethod
    def _dedupe_click_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.strip() for c in value if c.strip()))

    @model_validator(mode="after")
    def _unique_lines(self) -> Conversion:
        ids = [line.line_id for line in self.lines]
        if len(ids) != len(set(ids)):
            raise ValueError("line ids must be unique within an order")
        return self

    @cached_property
    def conversion_id(self) -> str:
        """Deterministic id of the conversion: one per (tenant, order). Kept once computed (the
        order path asks several times); not a field: never pickled or dumped."""
        return derived_id("cv", self.tenant_id, self.order_id)

    @cached_property
    def net_revenue(self) -> Decimal:
        """Merchandise revenue after every discount, excluding tax and shipping; ≥ 0."""
        lines = sum((line.net_before_order_discount for line in self.lines), Decimal(0))
        return max(Decimal(0), lines - self.order_discount)

    def line(self, line_id: str) -> ConversionLine | None:
        """The line with `line_id`, or `None`."""
        return next((line for line in self.lines if line.line_id == line_id), None)


class RefundedLine(CompactPickle, BaseModel):
    """Units of one order line given back in a refund."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line_id: _NonEmpty
    quantity: Annotated[int, Field(ge=0)]


class OrderRefund(CompactPickle, BaseModel):
    """One refund of an order. Only refunded *line quantities* move commission; amount-only
    refunds (shipping, goodwill) carry no lines and reverse nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    refund_id: _NonEmpty
    order_id: _NonEmpty
    occurred_at: AwareDatetime
    lines: tuple[RefundedLine, ...] = ()
    source_event_id: _NonEmpty

    def quantities(self) -> dict[str, int]:
        """Refunded units per line id (repeated lines summed)."""
        result: dict[str, int] = {}
        for line in self.lines:
            result[line.line_id] = result.get(line.line_id, 0) + line.quantity
        return result


# --- Shopify --------------------------------------------------------------------------------


class _Amounted(Protocol):
    @property
    def amount(self) -> Decimal: ...


class _Priced(Protocol):
    @property
    def price(self) -> Decimal: ...


class _Attribute(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> str | None: ...


class _Customer(Protocol):
    @property
    def id(self) -> int: ...


class LineFacts(Protocol):
    """What a conversion reads of a Shopify line item (`ShopifyLineItem`, or the flow's
    msgspec decoding of only these fields, `dataflows.attribution.wire.LineItem`)."""

    @property
    def id(self) -> int: ...
    @property
    def product_id(self) -> int | None: ...
    @property
    def quantity(self) -> int: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def total_discount(self) -> Decimal | None: ...
    @property
    def discount_allocations(self) -> Sequence[_Amounted]: ...
    @property
    def tax_lines(self) -> Sequence[_Priced]: ...


class OrderFacts(Protocol):
    """What a conversion reads of a Shopify order (`ShopifyOrder`, or
    `dataflows.attribution.wire.OrderBody`)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def currency(self) -> str | None: ...
    @property
    def taxes_included(self) -> bool | None: ...
    @property
    def landing_site(self) -> str | None: ...
    @property
    def landing_site_ref(self) -> str | None: ...
    @property
    def note_attributes(self) -> Sequence[_Attribute]: ...
    @property
    def customer(self) -> _Customer | None: ...
    @property
    def line_items(self) -> Sequence[LineFacts]: ...
    @property
    def occurred_at(self) -> datetime | None: ...
    @property
    def customer_email(self) -> str | None: ...
    def coupon_codes(self) -> list[str]: ...


def _click_ids_from_order(order: OrderFacts) -> tuple[str, ...]:
    ids: list[str] = []
    for url in (order.landing_site, order.landing_site_ref):
        if url:
            ids.extend(parse_qs(urlsplit(url).query).get(CLICK_ID_PARAM, []))
    ids.extend(
        attr.value
        for attr in order.note_attributes
        if attr.name.strip().lower() in CLICK_ID_ATTRIBUTES and attr.value
    )
    return tuple(ids)


def _visitor_id_from_order(order: OrderFacts) -> str | None:
    for attr in order.note_attributes:
        if attr.name.strip().lower() in VISITOR_ID_ATTRIBUTES and attr.value and attr.value.strip():
            return attr.value.strip()
    return None


def _line_from_shopify(
    item: LineFacts, *, taxes_included: bool, collections: Mapping[str, tuple[str, ...]]
) -> ConversionLine:
    if item.discount_allocations:
        discount = sum((a.amount for a in item.discount_allocations), Decimal(0))
    else:
        discount = item.total_discount or Decimal(0)
    included_tax = (
        sum((t.price for t in item.tax_lines), Decimal(0)) if taxes_included else Decimal(0)
    )
    product_id = str(item.product_id) if item.product_id is not None else None
    return ConversionLine(
        line_id=str(item.id),
        product_id=product_id,
        collection_ids=collections.get(product_id, ()) if product_id else (),
        quantity=item.quantity,
        unit_price=item.price,
        discount=discount,
        included_tax=included_tax,
    )


def conversion_from_shopify(
    order: OrderFacts,
    *,
    tenant_id: str,
    source_event_id: str,
    shop: str | None = None,
    collections: Mapping[str, tuple[str, ...]] | None = None,
) -> Conversion:
    """The facts of a Shopify order.

    Click ids come from the `rsclid` query parameter of `landing_site`/`landing_site_ref` and
    from `rsclid`/`_rsclid` cart attributes; the visitor id from an `rsvid`/`_rsvid` attribute.
    Line discounts are the line's `discount_allocations` (which already include its share of
    order-level codes), else `total_discount`; so `order_discount` is 0 for Shopify. With
    `taxes_included`, the line's tax is taken out of its revenue. `collections` maps a product
    id to its collection ids (orders do not carry them). Line `quantity` is the ordered
    quantity: an ingress handling order edits must pass the edited order's quantities.
    `ValueError` if the order has no event time or no currency.
    """
    if order.occurred_at is None or order.currency is None:
        raise ValueError(f"order {order.id} lacks processed_at/created_at or currency")
    customer_id = str(order.customer.id) if order.customer is not None else None
    return Conversion(
        tenant_id=tenant_id,
        shop=shop,
        order_id=str(order.id),
        order_name=order.name,
        occurred_at=order.occurred_at,
        currency=order.currency,
        customer_id=customer_id,
        customer_email=order.customer_email,
        coupon_codes=tuple(order.coupon_codes()),
        click_ids=_click_ids_from_order(order),
        visitor_id=_visitor_id_from_order(order),
        lines=tuple(
            _line_from_shopify(
                item, taxes_included=bool(order.taxes_included), collections=collections or {}
            )
            for item in order.line_items
        ),
        source_event_id=source_event_id,
    )


class _RefundedItem(Protocol):
    @property
    def line_item_id(self) -> int: ...
    @property
    def quantity(self) -> int: ...


class RefundFacts(Protocol):
    """What a refund's facts read of a Shopify refund (`ShopifyRefund`, or the flow's msgspec
    decoding of only the fields it reads, `dataflows.attribution.wire.RefundBody`)."""

    @property
    def id(self) -> int: ...
    @property
    def order_id(self) -> int: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def processed_at(self) -> datetime | None: ...
    @property
    def refund_line_items(self) -> Sequence[_RefundedItem]: ...


def refund_from_shopify(refund: RefundFacts, *, source_event_id: str) -> OrderRefund:
    """The facts of a Shopify refund; `ValueError` if it has no event time."""
    occurred_at = refund.processed_at or refund.created_at
    if occurred_at is None:
        raise ValueError(f"refund {refund.id} lacks processed_at/created_at")
    return OrderRefund(
        refund_id=str(refund.id),
        order_id=str(refund.order_id),
        occurred_at=occurred_at,
        lines=tuple(
            RefundedLine(line_id=str(r.line_item_id), quantity=r.quantity)
            for r in refund.refund_line_items
        ),
        source_event_id=source_event_id,
    )
