"""Shopify webhook bodies (REST Admin resource payloads) as typed, round-tripping models.

Each model types the fields attribution and commission read and keeps every other key as-is
(`extra="allow"`, see `schemas.events.wire.WireModel`). Almost every field is optional: bodies
differ by topic, API version and order origin, and test orders carry `null`s.

Wire fidelity (`orjson.loads(raw) == orjson.loads(model.model_dump_json())` for every body):
- Money sent as JSON strings (`"199.00"`) is `Decimal` and is dumped as the same string
  (`DecimalStr`). The few amounts Shopify sends as JSON numbers (refund line `subtotal` and
  `total_tax`, tax `rate`) are `Decimal` and dumped as numbers again (`DecimalNumber`).
- Timestamps are timezone-aware `datetime`s that remember their source text (`WireTimestamp`):
  Shopify writes shop-local offsets (`"2024-01-02T09:10:11-05:00"`), `Z` for UTC shops and
  sometimes fractional seconds, and no single output format reproduces all of them; keeping the
  text is the only exact round trip. Compare and compute with them as ordinary datetimes.

`parse_shopify_body(topic, raw)` maps a webhook topic to its model.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

import orjson

from schemas.events.wire import WireModel, WireTimestamp
from schemas.money import CurrencyCode, DecimalNumber, DecimalStr


class ShopifyMoney(WireModel):
    """An amount in one currency, as inside a `*_set`."""

    amount: DecimalStr
    currency_code: CurrencyCode


class ShopifyMoneySet(WireModel):
    """One amount in the shop's currency and in the currency the buyer saw."""

    shop_money: ShopifyMoney
    presentment_money: ShopifyMoney


class ShopifyDiscountCode(WireModel):
    """A discount code applied to an order; `type` is fixed_amount, percentage or shipping."""

    code: str
    amount: DecimalStr | None = None
    type: str | None = None


class ShopifyNoteAttribute(WireModel):
    """A cart attribute (`note_attributes`): where storefronts put referral ids."""

    name: str
    value: str | None = None


class ShopifyDiscountAllocation(WireModel):
    """The part of a discount application that landed on one line."""

    amount: DecimalStr
    amount_set: ShopifyMoneySet | None = None
    discount_application_index: int | None = None


class ShopifyTaxLine(WireModel):
    """A tax charged on a line or order; `rate` is a fraction (0.06 = 6 %)."""

    title: str | None = None
    price: DecimalStr
    rate: DecimalNumber | None = None
    price_set: ShopifyMoneySet | None = None


class ShopifyLineItem(WireModel):
    """An order line. `price` is the unit price before discounts; `total_discount` and
    `discount_allocations` hold what was taken off."""

    id: int
    admin_graphql_api_id: str | None = None
    product_id: int | None = None
    variant_id: int | None = None
    sku: str | None = None
    title: str | None = None
    name: str | None = None
    variant_title: str | None = None
    vendor: str | None = None
    quantity: int
    current_quantity: int | None = None
    price: DecimalStr
    price_set: ShopifyMoneySet | None = None
    total_discount: DecimalStr | None = None
    total_discount_set: ShopifyMoneySet | None = None
    discount_allocations: tuple[ShopifyDiscountAllocation, ...] = ()
    tax_lines: tuple[ShopifyTaxLine, ...] = ()
    gift_card: bool | None = None
    taxable: bool | None = None


class ShopifyCustomer(WireModel):
    """A customer: embedded in orders, and the body of customers/create."""

    id: int
    admin_graphql_api_id: str | None = None
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    state: str | None = None
    tags: str | None = None
    currency: CurrencyCode | None = None
    created_at: WireTimestamp | None = None
    updated_at: WireTimestamp | None = None


class ShopifyTransaction(WireModel):
    """A payment transaction; `kind` is sale, capture, authorization, refund, void, ...;
    `status` is success, failure, pending, error."""

    id: int
    admin_graphql_api_id: str | None = None
    order_id: int | None = None
    parent_id: int | None = None
    kind: str
    status: str | None = None
    amount: DecimalStr
    currency: CurrencyCode | None = None
    gateway: str | None = None
    test: bool | None = None
    created_at: WireTimestamp | None = None
    processed_at: WireTimestamp | None = None


class ShopifyOrderAdjustment(WireModel):
    """A refund amount not tied to a line (shipping refund, refund discrepancy)."""

    id: int
    order_id: int | None = None
    refund_id: int | None = None
    kind: str | None = None
    reason: str | None = None
    amount: DecimalStr
    tax_amount: DecimalStr | None = None
    amount_set: ShopifyMoneySet | None = None
    tax_amount_set: ShopifyMoneySet | None = None


class ShopifyRefundLineItem(WireModel):
    """A refunded quantity of one order line. Shopify sends `subtotal` and `total_tax` here as
    JSON numbers (the `*_set` twins carry the same amounts as strings)."""

    id: int
    line_item_id: int
    quantity: int
    restock_type: str | None = None
    location_id: int | None = None
    subtotal: DecimalNumber | None = None
    subtotal_set: ShopifyMoneySet | None = None
    total_tax: DecimalNumber | None = None
    total_tax_set: ShopifyMoneySet | None = None
    line_item: ShopifyLineItem | None = None


class ShopifyRefund(WireModel):
    """A refund: embedded in orders, and the body of refunds/create."""

    id: int
    order_id: int
    admin_graphql_api_id: str | None = None
    created_at: WireTimestamp | None = None
    processed_at: WireTimestamp | None = None
    note: str | None = None
    restock: bool | None = None
    user_id: int | None = None
    refund_line_items: tuple[ShopifyRefundLineItem, ...] = ()
    transactions: tuple[ShopifyTransaction, ...] = ()
    order_adjustments: tuple[ShopifyOrderAdjustment, ...] = ()
    total_duties_set: ShopifyMoneySet | None = None


class ShopifyOrder(WireModel):
    """An order: the body of orders/create, updated, paid, cancelled and fulfilled.

    Amounts are in the shop currency (`currency`); `*_set` twins add the presentment currency.
    `total_*` are as placed; `current_*` reflect edits, refunds and removals since.
    """

    id: int
    admin_graphql_api_id: str | None = None
    name: str | None = None
    order_number: int | None = None
    email: str | None = None
    contact_email: str | None = None
    created_at: WireTimestamp | None = None
    processed_at: WireTimestamp | None = None
    updated_at: WireTimestamp | None = None
    cancelled_at: WireTimestamp | None = None
    closed_at: WireTimestamp | None = None
    cancel_reason: str | None = None
    currency: CurrencyCode | None = None
    presentment_currency: CurrencyCode | None = None
    total_price: DecimalStr | None = None
    total_price_set: ShopifyMoneySet | None = None
    subtotal_price: DecimalStr | None = None
    subtotal_price_set: ShopifyMoneySet | None = None
    total_discounts: DecimalStr | None = None
    total_discounts_set: ShopifyMoneySet | None = None
    total_tax: DecimalStr | None = None
    total_tax_set: ShopifyMoneySet | None = None
    total_line_items_price: DecimalStr | None = None
    total_line_items_price_set: ShopifyMoneySet | None = None
    total_shipping_price_set: ShopifyMoneySet | None = None
    current_total_price: DecimalStr | None = None
    current_total_price_set: ShopifyMoneySet | None = None
    current_subtotal_price: DecimalStr | None = None
    current_subtotal_price_set: ShopifyMoneySet | None = None
    current_total_discounts: DecimalStr | None = None
    current_total_discounts_set: ShopifyMoneySet | None = None
    current_total_tax: DecimalStr | None = None
    current_total_tax_set: ShopifyMoneySet | None = None
    taxes_included: bool | None = None
    financial_status: str | None = None
    fulfillment_status: str | None = None
    test: bool | None = None
    discount_codes: tuple[ShopifyDiscountCode, ...] = ()
    landing_site: str | None = None
    landing_site_ref: str | None = None
    referring_site: str | None = None
    source_name: str | None = None
    source_identifier: str | None = None
    note: str | None = None
    note_attributes: tuple[ShopifyNoteAttribute, ...] = ()
    tags: str | None = None
    customer: ShopifyCustomer | None = None
    line_items: tuple[ShopifyLineItem, ...] = ()
    refunds: tuple[ShopifyRefund, ...] = ()
    app_id: int | None = None
    user_id: int | None = None

    def coupon_codes(self) -> list[str]:
        """Discount codes, stripped and upper-cased, blanks and repeats dropped, in order."""
        codes = (c.code.strip().upper() for c in self.discount_codes)
        return list(dict.fromkeys(code for code in codes if code))

    @property
    def occurred_at(self) -> datetime | None:
        """Event time of the order: when it was processed (placed), else created."""
        return self.processed_at or self.created_at

    @property
    def customer_email(self) -> str | None:
        """The buyer's email, stripped and lower-cased (order, then contact, then customer)."""
        candidates = (self.email, self.contact_email, self.customer and self.customer.email)
        for candidate in candidates:
            if candidate and candidate.strip():
                return candidate.strip().lower()
        return None


class ShopifyOrderEditDelta(WireModel):
    """A line added to or removed from an order by an edit, and by how many units."""

    id: int
    delta: int


class ShopifyOrderEditLineItems(WireModel):
    additions: tuple[ShopifyOrderEditDelta, ...] = ()
    removals: tuple[ShopifyOrderEditDelta, ...] = ()


class ShopifyOrderEdit(WireModel):
    """What an order edit changed; `committed_at` (API 2024-07+) is when it took effect."""

    id: int
    order_id: int
    app_id: int | None = None
    user_id: int | None = None
    created_at: WireTimestamp | None = None
    committed_at: WireTimestamp | None = None
    notify_customer: bool | None = None
    staff_note: str | None = None
    line_items: ShopifyOrderEditLineItems | None = None


class ShopifyOrderEdited(WireModel):
    """Body of orders/edited: `{"order_edit": {...}}`, a change description, not the order.

    Shape per Shopify's orders/edited reference (no captured fixture): fetch or wait for the
    orders/updated that follows to see the order's new totals.
    """

    order_edit: ShopifyOrderEdit


class ShopifyShop(WireModel):
    """The shop resource: the body of app/uninstalled."""

    id: int
    name: str | None = None
    email: str | None = None
    domain: str | None = None
    myshopify_domain: str | None = None
    currency: CurrencyCode | None = None
    iana_timezone: str | None = None
    plan_name: str | None = None
    created_at: WireTimestamp | None = None
    updated_at: WireTimestamp | None = None


class ShopifyCollect(WireModel):
    """One product in a custom collection (Shopify's Collect resource)."""

    product_id: int
    collection_id: int | None = None
    id: int | None = None


class ShopifyCollection(WireModel):
    """The collection resource: the body of collections/create and collections/update (a custom
    or smart collection, without its products), and of collections/delete (only `id`). A body
    carrying `collects` (as the Admin API's custom-collection writes do) gives the collection's
    full membership; smart collections' `rules` are kept but not evaluated."""

    id: int
    handle: str | None = None
    title: str | None = None
    updated_at: WireTimestamp | None = None
    published_at: WireTimestamp | None = None
    sort_order: str | None = None
    collects: tuple[ShopifyCollect, ...] | None = None


class ShopifyProduct(WireModel):
    """The product resource: the body of products/create and products/update (no collections)."""

    id: int
    title: str | None = None
    handle: str | None = None
    created_at: WireTimestamp | None = None
    updated_at: WireTimestamp | None = None


class ShopifyPrivacyCustomer(WireModel):
    """The customer a compliance request is about."""

    id: int
    email: str | None = None
    phone: str | None = None


class ShopifyDataRequest(WireModel):
    id: int


class CustomersDataRequest(WireModel):
    """Body of customers/data_request: send the merchant what we hold on this customer."""

    shop_id: int
    shop_domain: str
    customer: ShopifyPrivacyCustomer
    orders_requested: tuple[int, ...] = ()
    data_request: ShopifyDataRequest | None = None


class CustomersRedact(WireModel):
    """Body of customers/redact: erase this customer's personal data."""

    shop_id: int
    shop_domain: str
    customer: ShopifyPrivacyCustomer
    orders_to_redact: tuple[int, ...] = ()


class ShopRedact(WireModel):
    """Body of shop/redact (48 h after uninstall): erase the shop's data."""

    shop_id: int
    shop_domain: str


ShopifyBody = (
    ShopifyOrder
    | ShopifyOrderEdited
    | ShopifyRefund
    | ShopifyShop
    | ShopifyCollection
    | ShopifyProduct
    | ShopifyCustomer
    | CustomersDataRequest
    | CustomersRedact
    | ShopRedact
)

_TOPIC_MODELS: Mapping[str, type[ShopifyBody]] = MappingProxyType(
    {
        "orders/create": ShopifyOrder,
        "orders/updated": ShopifyOrder,
        "orders/paid": ShopifyOrder,
        "orders/cancelled": ShopifyOrder,
        "orders/fulfilled": ShopifyOrder,
        "orders/edited": ShopifyOrderEdited,
        "refunds/create": ShopifyRefund,
        "app/uninstalled": ShopifyShop,
        "collections/create": ShopifyCollection,
        "collections/update": ShopifyCollection,
        "collections/delete": ShopifyCollection,
        "products/create": ShopifyProduct,
        "products/update": ShopifyProduct,
        "customers/create": ShopifyCustomer,
        "customers/data_request": CustomersDataRequest,
        "customers/redact": CustomersRedact,
        "shop/redact": ShopRedact,
    }
)

SHOPIFY_TOPICS: frozenset[str] = frozenset(_TOPIC_MODELS)


def shopify_model_for(topic: str) -> type[ShopifyBody]:
    """The model of `topic`'s body (`"orders/create"` → `ShopifyOrder`); `ValueError` if the
    topic is not one of `SHOPIFY_TOPICS`."""
    try:
        return _TOPIC_MODELS[topic]
    except KeyError:
        raise ValueError(f"unsupported Shopify webhook topic: {topic!r}") from None


def parse_shopify_body(topic: str, raw: bytes) -> ShopifyBody:
    """Parse a raw webhook body for `topic` into its model.

    `ValueError` for an unknown topic or bytes that are not JSON (`orjson.JSONDecodeError` is a
    `ValueError`); `pydantic.ValidationError` (also a `ValueError`) when the JSON does not fit.
    """
    model = shopify_model_for(topic)
    return model.model_validate(orjson.loads(raw))
