"""Every webhook fixture parses into its model and dumps back to the same JSON.

The fixtures are real payloads copied into `tests/fixtures/data` (provenance in its
SOURCES.md). A missing directory fails collection: these tests must not pass by having
nothing to test.
"""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from schemas.events.odoo import (
    OdooAccountMove,
    OdooSaleOrder,
    OdooWebhook,
    false_to_none,
    parse_odoo_body,
)
from schemas.events.shopify import (
    SHOPIFY_TOPICS,
    CustomersDataRequest,
    CustomersRedact,
    ShopifyCustomer,
    ShopifyOrder,
    ShopifyOrderEdited,
    ShopifyRefund,
    ShopifyShop,
    ShopRedact,
    parse_shopify_body,
    shopify_model_for,
)
from schemas.events.wire import WireDatetime
from tests.fixtures import DATA

FIXTURES = DATA
SHOPIFY_DIR = FIXTURES / "shopify"
ODOO_DIR = FIXTURES / "odoo"
if not (SHOPIFY_DIR.is_dir() and ODOO_DIR.is_dir()):
    raise RuntimeError(f"webhook fixtures not found under {FIXTURES}")

# Which topic each Shopify file is the body of (see SOURCES.md §1).
SHOPIFY_TOPIC_BY_FILE: dict[str, str | None] = {
    "app_uninstalled.json": "app/uninstalled",
    "collections_create.json": "collections/create",
    "collections_update.json": "collections/update",
    "collections_delete.json": "collections/delete",
    "customers_create.json": "customers/create",
    "customers_data_request.json": "customers/data_request",
    "customers_redact.json": "customers/redact",
    "order_full_450789469.json": "orders/updated",  # the richest order; stands for any orders/*
    "orders_cancelled.json": "orders/cancelled",
    "orders_create.json": "orders/create",
    "orders_fulfilled.json": "orders/fulfilled",
    "orders_paid.json": "orders/paid",
    "orders_updated.json": "orders/updated",
    "refunds_create.json": "refunds/create",
    "shop_redact.json": "shop/redact",
    # An Admin API response (the collects backfill file), not a webhook body.
    "collects_list.json": None,
    # Example delivery *headers* (names and test values), not a body: nothing to parse.
    "delivery_headers_examples.json": None,
}

ODOO_MODEL_BY_FILE: dict[str, type[OdooWebhook]] = {
    "odoo17_sale_order_confirmed.json": OdooSaleOrder,
    "odoo17_account_move_invoice_posted.json": OdooAccountMove,
    "odoo17_account_move_credit_note_posted.json": OdooAccountMove,
    "odoo17_test_90_webhook_res_partner.json": OdooWebhook,
}

SHOPIFY_BODIES = [
    p for p in sorted(SHOPIFY_DIR.glob("*.json")) if SHOPIFY_TOPIC_BY_FILE.get(p.name) is not None
]
ODOO_BODIES = sorted(ODOO_DIR.glob("*.json"))


def _shopify(name: str) -> Any:
    topic = SHOPIFY_TOPIC_BY_FILE[name]
    assert topic is not None
    return parse_shopify_body(topic, (SHOPIFY_DIR / name).read_bytes())


def _odoo(name: str) -> Any:
    return parse_odoo_body((ODOO_DIR / name).read_bytes())


def _round_trips(raw: bytes, model: BaseModel) -> bool:
    return bool(orjson.loads(raw) == orjson.loads(model.model_dump_json(by_alias=True)))


# --- every fixture -------------------------------------------------------------------------


def test_every_fixture_file_is_mapped_to_a_model_or_explicitly_skipped() -> None:
    assert {p.name for p in SHOPIFY_DIR.glob("*.json")} == set(SHOPIFY_TOPIC_BY_FILE)
    assert {p.name for p in ODOO_DIR.glob("*.json")} == set(ODOO_MODEL_BY_FILE)


@pytest.mark.parametrize("path", SHOPIFY_BODIES, ids=lambda p: p.name)
def test_shopify_fixture_round_trips_unchanged(path: Path) -> None:
    topic = SHOPIFY_TOPIC_BY_FILE[path.name]
    assert topic is not None
    raw = path.read_bytes()

    model = parse_shopify_body(topic, raw)

    assert type(model) is shopify_model_for(topic)
    assert _round_trips(raw, model)
    assert type(model).model_validate_json(raw) == model  # pydantic's own JSON path agrees


@pytest.mark.parametrize("path", ODOO_BODIES, ids=lambda p: p.name)
def test_odoo_fixture_round_trips_unchanged(path: Path) -> None:
    raw = path.read_bytes()

    model = parse_odoo_body(raw)

    assert type(model) is ODOO_MODEL_BY_FILE[path.name]
    assert _round_trips(raw, model)
    assert orjson.loads(model.model_dump_json()) == orjson.loads(raw)  # wire names by default


# --- Shopify: typed values -----------------------------------------------------------------


def test_full_order_exposes_attribution_fields_typed() -> None:
    order = _shopify("order_full_450789469.json")

    assert isinstance(order, ShopifyOrder)
    assert order.id == 450789469
    assert order.admin_graphql_api_id == "gid://shopify/Order/450789469"
    assert order.name == "#1001"
    assert order.coupon_codes() == ["TENOFF"]
    assert order.landing_site == "http://www.example.com?source=abc"
    assert order.landing_site_ref == "abc"
    assert order.referring_site == "http://www.otherexample.com"
    assert order.source_name == "web"
    assert [(a.name, a.value) for a in order.note_attributes] == [
        ("custom engraving", "Happy Birthday"),
        ("colour", "green"),
    ]
    assert order.customer is not None
    assert order.customer.id == 207119551
    assert order.customer_email == "bob.norman@mail.example.com"
    assert order.financial_status == "partially_refunded"
    assert order.fulfillment_status is None
    assert order.cancelled_at is None


def test_order_money_is_decimal_with_the_digits_sent() -> None:
    order = _shopify("order_full_450789469.json")

    assert order.currency == "USD"
    assert order.presentment_currency == "USD"
    assert isinstance(order.total_price, Decimal)
    assert order.total_price == Decimal("598.94")
    assert str(order.subtotal_price) == "597.00"
    assert order.total_discounts == Decimal("10.00")
    assert order.total_tax == Decimal("11.94")
    assert order.total_price_set is not None
    assert order.total_price_set.presentment_money.amount == Decimal("598.94")
    assert order.total_price_set.presentment_money.currency_code == "USD"
    assert order.discount_codes[0].amount == Decimal("10.00")
    assert order.discount_codes[0].type == "fixed_amount"


def test_line_discount_allocations_add_up_to_the_order_discount() -> None:
    order = _shopify("order_full_450789469.json")

    line = order.line_items[0]
    assert (line.id, line.product_id, line.variant_id, line.sku) == (
        466157049,
        632910392,
        39072856,
        "IPOD2008GREEN",
    )
    assert (line.quantity, line.price, line.total_discount) == (
        1,
        Decimal("199.00"),
        Decimal("0.00"),
    )
    allocated = sum(a.amount for li in order.line_items for a in li.discount_allocations)
    assert allocated == order.total_discounts == Decimal("10.00")


def test_order_timestamps_are_aware_and_keep_their_offset() -> None:
    order = _shopify("order_full_450789469.json")

    assert order.created_at is not None
    assert order.created_at.utcoffset() == timedelta(hours=-5)
    assert order.created_at == datetime(2008, 1, 10, 16, 0, tzinfo=UTC)
    assert order.occurred_at == order.processed_at
    dumped = orjson.loads(order.model_dump_json())
    assert dumped["created_at"] == "2008-01-10T11:00:00-05:00"


def test_embedded_refund_line_items_sum_to_the_refunded_subtotal() -> None:
    order = _shopify("order_full_450789469.json")

    (refund,) = order.refunds
    assert refund.order_id == order.id
    subtotals = [rli.subtotal for rli in refund.refund_line_items]
    assert subtotals == [Decimal("195.66"), Decimal("195.67")]
    assert sum(s for s in subtotals if s is not None) == Decimal("391.33")
    shop_amounts = [
        rli.subtotal_set.shop_money.amount
        for rli in refund.refund_line_items
        if rli.subtotal_set is not None
    ]
    assert shop_amounts == subtotals
    assert refund.refund_line_items[0].line_item is not None
    assert refund.refund_line_items[0].line_item.id == refund.refund_line_items[0].line_item_id
    (transaction,) = refund.transactions
    assert (transaction.kind, transaction.status, transaction.amount, transaction.currency) == (
        "refund",
        "success",
        Decimal("209.00"),
        "USD",
    )


def test_refunds_create_body_is_a_refund() -> None:
    refund = _shopify("refunds_create.json")

    assert isinstance(refund, ShopifyRefund)
    assert (refund.id, refund.order_id) == (509562969, 450789469)
    assert refund.processed_at is not None
    assert refund.processed_at.tzinfo is not None
    assert sum(r.quantity for r in refund.refund_line_items) == 2
    assert sum(r.total_tax or 0 for r in refund.refund_line_items) == Decimal("7.96")
    assert refund.order_adjustments == ()
    assert refund.total_duties_set is not None
    # Untyped keys are kept as they came (this one even names its currency key differently).
    assert refund.transactions[0].model_extra is not None
    assert refund.transactions[0].model_extra["total_unsettled_set"]["shop_money"] == {
        "amount": "348.0",
        "currency": "USD",
    }


def test_created_order_carries_its_coupon_and_no_landing_site() -> None:
    order = _shopify("orders_create.json")

    assert order.coupon_codes() == ["FAKE30"]
    assert order.discount_codes[0].type == "percentage"
    assert order.landing_site is None
    assert order.referring_site is None
    assert order.source_name == "755357713"
    assert order.customer_email == "jane@example.com"


def test_paid_order_is_in_euro() -> None:
    order = _shopify("orders_paid.json")

    assert (order.currency, order.presentment_currency) == ("EUR", "EUR")
    assert order.financial_status == "paid"
    assert order.total_price == Decimal("238.47")


def test_cancelled_order_has_reason_and_aware_cancel_time() -> None:
    order = _shopify("orders_cancelled.json")

    assert order.cancel_reason == "other"
    assert order.financial_status == "refunded"
    assert order.cancelled_at == datetime(2025, 4, 2, 16, 31, 11, tzinfo=UTC)


def test_fulfilled_and_updated_orders() -> None:
    assert _shopify("orders_fulfilled.json").fulfillment_status == "fulfilled"
    updated = _shopify("orders_updated.json")
    assert [(a.name, a.value) for a in updated.note_attributes] == [("colour", "red")]


def test_non_order_bodies_parse_into_their_models() -> None:
    shop = _shopify("app_uninstalled.json")
    assert isinstance(shop, ShopifyShop)
    assert (shop.id, shop.myshopify_domain, shop.currency) == (
        548380009,
        "jsmith.myshopify.com",
        "USD",
    )

    customer = _shopify("customers_create.json")
    assert isinstance(customer, ShopifyCustomer)
    assert customer.email == "steve.lastnameson@example.com"

    data_request = _shopify("customers_data_request.json")
    assert isinstance(data_request, CustomersDataRequest)
    assert data_request.orders_requested == (299938, 280263, 220458)
    assert data_request.customer.id == 191167
    assert data_request.data_request is not None
    assert data_request.data_request.id == 9999

    redact = _shopify("customers_redact.json")
    assert isinstance(redact, CustomersRedact)
    assert redact.orders_to_redact == (299938, 280263, 220458)

    shop_redact = _shopify("shop_redact.json")
    assert isinstance(shop_redact, ShopRedact)
    assert (shop_redact.shop_id, shop_redact.shop_domain) == (954889, "{shop}.myshopify.com")


# CONSTRUCTED (no fixture exists): the orders/edited body shape from Shopify's webhook reference.
ORDERS_EDITED_BODY = (
    b'{"order_edit": {"id": 78912328, "app_id": null, "created_at": "2024-07-02T10:00:00-04:00",'
    b' "committed_at": "2024-07-02T10:00:05-04:00", "notify_customer": false,'
    b' "order_id": 450789469, "staff_note": "", "user_id": null, "line_items": {"additions":'
    b' [{"id": 466157049, "delta": 1}], "removals": [{"id": 518995019, "delta": 1}]},'
    b' "discounts": {"line_item": {"additions": [], "removals": []}}}}'
)


def test_orders_edited_body_is_an_edit_description_not_an_order() -> None:
    body = parse_shopify_body("orders/edited", ORDERS_EDITED_BODY)

    assert isinstance(body, ShopifyOrderEdited)
    assert body.order_edit.order_id == 450789469
    assert body.order_edit.line_items is not None
    assert [(d.id, d.delta) for d in body.order_edit.line_items.removals] == [(518995019, 1)]
    assert _round_trips(ORDERS_EDITED_BODY, body)
    with pytest.raises(ValidationError):
        parse_shopify_body("orders/edited", (SHOPIFY_DIR / "orders_updated.json").read_bytes())


def test_topic_table_covers_the_subscribed_topics() -> None:
    assert {
        "orders/create",
        "orders/updated",
        "orders/paid",
        "orders/edited",
        "orders/cancelled",
        "orders/fulfilled",
        "refunds/create",
        "app/uninstalled",
        "collections/create",
        "collections/update",
        "collections/delete",
        "products/create",
        "products/update",
        "customers/create",
        "customers/data_request",
        "customers/redact",
        "shop/redact",
    } == SHOPIFY_TOPICS
    assert {t for t in SHOPIFY_TOPIC_BY_FILE.values() if t} <= SHOPIFY_TOPICS


# --- Shopify: wire fidelity beyond the fixtures --------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02T09:10:11-05:00",
        "2024-01-02T14:10:11Z",
        "2024-01-02T14:10:11+00:00",
        "2024-01-02T14:10:11.123Z",
        "2024-01-02T19:40:11.5+05:30",
    ],
)
def test_timestamp_text_survives_the_round_trip(text: str) -> None:
    body = orjson.dumps({"id": 1, "created_at": text})

    order = ShopifyOrder.model_validate_json(body)

    assert order.created_at is not None
    assert order.created_at.tzinfo is not None
    assert orjson.loads(order.model_dump_json())["created_at"] == text


def test_timestamps_in_different_notations_are_the_same_instant() -> None:
    z = ShopifyOrder.model_validate({"id": 1, "created_at": "2024-01-02T14:10:11Z"})
    offset = ShopifyOrder.model_validate({"id": 1, "created_at": "2024-01-02T09:10:11-05:00"})

    assert z.created_at == offset.created_at


def test_computed_timestamp_serialises_as_iso_with_offset() -> None:
    order = ShopifyOrder.model_validate({"id": 1, "created_at": "2024-01-02T14:10:11Z"})
    assert order.created_at is not None
    later = order.model_copy(update={"created_at": order.created_at + timedelta(hours=1)})

    assert orjson.loads(later.model_dump_json())["created_at"] == "2024-01-02T15:10:11+00:00"


def test_parsed_timestamp_keeps_its_text_through_pickle_and_deepcopy() -> None:
    parsed = WireDatetime.from_wire("2024-01-02T14:10:11.120Z")

    for clone in (pickle.loads(pickle.dumps(parsed)), copy.deepcopy(parsed)):
        assert isinstance(clone, WireDatetime)
        assert clone == parsed
        assert clone.source_text == "2024-01-02T14:10:11.120Z"


@pytest.mark.parametrize(
    "created_at", ["2024-01-02T09:10:11", "2024-01-02", "yesterday", 1704200000, True]
)
def test_timestamp_without_offset_or_not_text_is_rejected(created_at: object) -> None:
    with pytest.raises(ValidationError):
        ShopifyOrder.model_validate({"id": 1, "created_at": created_at})


def test_absent_fields_stay_absent_and_explicit_nulls_stay_null() -> None:
    order = ShopifyOrder.model_validate({"id": 1, "cancelled_at": None, "x_custom": [1, 2.5]})

    assert order.total_price is None
    assert orjson.loads(order.model_dump_json()) == {
        "id": 1,
        "cancelled_at": None,
        "x_custom": [1, 2.5],
    }


def test_coupon_codes_are_normalised_and_deduplicated() -> None:
    order = ShopifyOrder.model_validate(
        {
            "id": 1,
            "discount_codes": [
                {"code": " tenoff ", "amount": "10.00", "type": "fixed_amount"},
                {"code": "TENOFF"},
                {"code": "  "},
                {"code": "Spring-24"},
            ],
        }
    )

    assert order.coupon_codes() == ["TENOFF", "SPRING-24"]


def test_customer_email_falls_back_and_is_lower_cased() -> None:
    order = ShopifyOrder.model_validate(
        {"id": 1, "email": "", "contact_email": None, "customer": {"id": 2, "email": " A@B.Com "}}
    )
    assert order.customer_email == "a@b.com"
    assert ShopifyOrder.model_validate({"id": 1}).customer_email is None


def test_occurred_at_falls_back_to_created_at() -> None:
    order = ShopifyOrder.model_validate({"id": 1, "created_at": "2024-01-02T09:10:11-05:00"})
    assert order.occurred_at == order.created_at


def test_models_are_immutable() -> None:
    order = ShopifyOrder.model_validate({"id": 1})
    with pytest.raises(ValidationError):
        order.id = 2  # type: ignore[misc]


# --- Shopify: rejected input ---------------------------------------------------------------


def test_unknown_shopify_topic_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported Shopify webhook topic"):
        parse_shopify_body("inventory_levels/update", b"{}")


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"id": 1,}', b"\xff\xfe"])
def test_malformed_shopify_json_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        parse_shopify_body("orders/create", raw)


@pytest.mark.parametrize(
    "body",
    [
        [],
        "order",
        {},
        {"id": "abc"},
        {"id": 1, "total_price": "NaN"},
        {"id": 1, "total_price": "1,00"},
        {"id": 1, "total_price": True},
        {"id": 1, "currency": "usd"},
        {"id": 1, "discount_codes": [{"amount": "1.00"}]},
        {"id": 1, "line_items": [{"id": 2, "quantity": 1}]},
        {"id": 1, "total_price_set": {"shop_money": {"amount": "1.00"}}},
        {"id": 1, "customer": {"email": "a@b.c"}},
        {"id": 1, "refunds": [{"id": 3, "order_id": 1, "refund_line_items": [{"id": 4}]}]},
    ],
)
def test_shopify_body_of_the_wrong_shape_is_a_validation_error(body: object) -> None:
    with pytest.raises(ValidationError):
        parse_shopify_body("orders/create", orjson.dumps(body))


# --- Odoo: typed values --------------------------------------------------------------------


def test_confirmed_sale_order_is_typed() -> None:
    order = _odoo("odoo17_sale_order_confirmed.json")

    assert isinstance(order, OdooSaleOrder)
    assert (order.model, order.record_id, order.id) == ("sale.order", 42, 42)
    assert order.action == "Notify affiliate platform: order confirmed(#57)"
    assert (order.name, order.state, order.client_order_ref) == ("S00042", "sale", "PO-7781")
    assert order.date_order == datetime(2024, 3, 14, 9, 12, 45, tzinfo=UTC)
    assert order.date_order is not None
    assert order.date_order.utcoffset() == timedelta(0)
    assert (order.amount_untaxed, order.amount_tax, order.amount_total) == (
        Decimal("1150.0"),
        Decimal("172.5"),
        Decimal("1322.5"),
    )
    assert isinstance(order.amount_total, Decimal)
    assert (order.partner_id, order.currency_id, order.medium_id, order.source_id) == (
        27,
        125,
        3,
        5,
    )
    assert order.campaign_id is False
    assert order.commitment_date is False
    assert false_to_none(order.origin) is None
    assert false_to_none(order.client_order_ref) == "PO-7781"
    assert order.order_line == (101, 102)


def test_invoice_and_credit_note_are_typed() -> None:
    invoice = _odoo("odoo17_account_move_invoice_posted.json")
    credit = _odoo("odoo17_account_move_credit_note_posted.json")

    assert isinstance(invoice, OdooAccountMove)
    assert isinstance(credit, OdooAccountMove)
    assert (invoice.move_type, invoice.state, invoice.payment_state) == (
        "out_invoice",
        "posted",
        "not_paid",
    )
    assert invoice.invoice_origin == credit.invoice_origin == "S00042"
    assert invoice.reversed_entry_id is False
    assert invoice.ref is False
    assert invoice.invoice_date == date(2024, 3, 15)
    assert invoice.amount_total == Decimal("1322.5")
    assert credit.move_type == "out_refund"
    assert credit.reversed_entry_id == invoice.id == 318
    assert credit.ref == "Reversal of: INV/2024/00017, Returned item"
    assert credit.amount_total_signed == Decimal("-172.5")
    assert credit.invoice_line_ids == (944,)


def test_unknown_odoo_model_is_a_generic_webhook_keeping_its_fields() -> None:
    partner = _odoo("odoo17_test_90_webhook_res_partner.json")

    assert type(partner) is OdooWebhook
    assert (partner.model, partner.record_id, partner.action) == (
        "res.partner",
        51,
        "TestAction(#612)",
    )
    assert partner.model_extra == {"city": "OrigCity", "country_id": 253, "name": "TestingPartner"}


def test_odoo_model_can_be_built_by_field_name_and_dumps_wire_names() -> None:
    hook = OdooWebhook(model="res.partner", record_id=7, action="A(#1)", id=7)

    assert orjson.loads(hook.model_dump_json()) == {
        "_model": "res.partner",
        "_id": 7,
        "_action": "A(#1)",
        "id": 7,
    }
    assert orjson.loads(hook.model_dump_json(by_alias=False))["record_id"] == 7


def _sale_order(**fields: object) -> bytes:
    return orjson.dumps({"_model": "sale.order", "_id": 1, "_action": "A(#1)", "id": 1, **fields})


@pytest.mark.parametrize(
    "text", ["2024-03-14 09:12:45", "2024-03-14T09:12:45", "2024-03-14 09:12:45.123456"]
)
def test_odoo_datetime_text_survives_the_round_trip(text: str) -> None:
    order = parse_odoo_body(_sale_order(date_order=text))

    assert isinstance(order, OdooSaleOrder)
    assert order.date_order is not None
    assert order.date_order.tzinfo is not None
    assert orjson.loads(order.model_dump_json())["date_order"] == text


def test_computed_odoo_datetime_is_dumped_as_naive_utc_text() -> None:
    plus_two = timezone(timedelta(hours=2))
    order = OdooSaleOrder(
        model="sale.order",
        record_id=1,
        action="A(#1)",
        id=1,
        date_order=datetime(2024, 3, 14, 11, 12, 45, tzinfo=plus_two),
    )

    assert orjson.loads(order.model_dump_json())["date_order"] == "2024-03-14 09:12:45"


# --- Odoo: rejected input ------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b'"sale.order"', b"null"])
def test_odoo_body_that_is_not_a_json_object_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - JSONDecodeError or our own, both ValueError
        parse_odoo_body(raw)


@pytest.mark.parametrize(
    "body",
    [
        {"_id": 1, "_action": "A(#1)", "id": 1},
        {"_model": ["sale.order"], "_id": 1, "_action": "A(#1)", "id": 1},
        {"_model": "sale.order", "_id": "one", "_action": "A(#1)", "id": 1},
    ],
)
def test_odoo_body_without_valid_envelope_keys_is_a_validation_error(body: object) -> None:
    with pytest.raises(ValidationError):
        parse_odoo_body(orjson.dumps(body))


@pytest.mark.parametrize(
    "fields",
    [
        {"partner_id": True},
        {"partner_id": "27"},
        {"client_order_ref": 0},
        {"amount_total": "abc"},
        {"amount_total": False},
        {"date_order": "2024-03-14 09:12:45+02:00"},
        {"date_order": "2024-03-14"},
        {"date_order": False},
        {"commitment_date": 0},
        {"order_line": [101, "x"]},
    ],
)
def test_odoo_field_of_the_wrong_type_is_a_validation_error(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_odoo_body(_sale_order(**fields))


@pytest.mark.parametrize(
    "fields",
    [{"invoice_date": "2024-W11-5"}, {"invoice_date": 0}, {"reversed_entry_id": 0.0}],
)
def test_odoo_invoice_field_of_the_wrong_type_is_a_validation_error(
    fields: dict[str, Any],
) -> None:
    body = {"_model": "account.move", "_id": 1, "_action": "A(#1)", "id": 1, **fields}
    with pytest.raises(ValidationError):
        parse_odoo_body(orjson.dumps(body))
