"""The order hot path (`wire.decode_order`: msgspec, only the fields a conversion reads) never
disagrees with the contract (`ShopifyOrder`): what msgspec accepts, `ShopifyOrder` accepts with
the same `Conversion` (its fields compared one by one, time zones and digits included), unless
`ShopifyOrder` refused only a field no conversion reads (the body is archived as received; the
flow no longer dead-letters an order for an unread field). The flow's decoder (msgspec, then
`ShopifyOrder` for what msgspec refuses) answers exactly as the contract on every used field:
hypothesis mutations of real Shopify orders (missing, mistyped, extra, malformed amounts and
times, nested lines, attributes, customer)."""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from dataflows.attribution.events import _order_facts
from dataflows.attribution.wire import (
    Customer,
    DiscountAllocation,
    DiscountCode,
    LineItem,
    NoteAttribute,
    OrderBody,
    TaxLine,
    decode_order,
)
from schemas.conversion import Conversion, conversion_fields, conversion_from_shopify
from schemas.events.shopify import (
    ShopifyCustomer,
    ShopifyDiscountAllocation,
    ShopifyDiscountCode,
    ShopifyLineItem,
    ShopifyNoteAttribute,
    ShopifyOrder,
    ShopifyTaxLine,
)
from tests.dataflows.builders import T0, order_body
from tests.dataflows.test_wire import _mutate
from tests.dataflows.wire_facts import agree, judged, keep
from tests.fixtures import DATA

ORDERS = [
    orjson.loads((DATA / "shopify" / name).read_bytes())
    for name in ("orders_create.json", "order_full_450789469.json", "orders_paid.json")
] + [order_body(7, at=T0, cites="clk_" + "a" * 32, coupon="SAVE10")]


def _conversion(order: Any) -> Conversion:
    return conversion_from_shopify(order, tenant_id="t_w", source_event_id="e", shop="s")


def _fields(conversion: Conversion) -> dict[str, Any]:
    """Every field with its type and text: `Decimal("1.0") == Decimal("1.00")` is not enough."""
    dumped = conversion_fields(conversion)
    dumped["occurred_at"] = conversion.occurred_at.isoformat()
    dumped["lines"] = [
        {k: (type(v).__name__, str(v)) for k, v in line.items()} for line in dumped["lines"]
    ]
    return dumped


def _read(order: Any) -> dict[str, Any]:
    return _fields(_conversion(order))


_slow = partial(judged, _read, ShopifyOrder.model_validate_json)
_fast = partial(judged, _read, decode_order)
_flow = partial(judged, _read, partial(_order_facts, "orders/create"))


NESTED: dict[str, type] = {
    "line_items": LineItem, "discount_allocations": DiscountAllocation, "tax_lines": TaxLine,
    "note_attributes": NoteAttribute, "customer": Customer, "discount_codes": DiscountCode,
}  # fmt: skip


def _used_only(body: bytes) -> bytes:
    """The body with only the keys a conversion reads (what the fast path judges)."""
    return orjson.dumps(keep(orjson.loads(body), OrderBody, NESTED))


def test_real_orders_decode_to_the_same_conversion_on_the_fast_path() -> None:
    for doc in ORDERS:
        body = orjson.dumps(doc)
        fast = _fast(body)
        assert fast is not None
        assert fast == _slow(body)


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from(["", "1.50", "-3", "1e2", "1E+999999", "NaN", "Infinity", " 1.0", "0x10",
                     "2026-01-01T00:00:00", "2026-01-01T00:00:00+02:00", "2026-13-01T00:00:00Z",
                     "rsclid", "_rsvid", "USD", "usd"]),
    st.lists(st.integers(-5, 5), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-5, 5)),
)  # fmt: skip


def _paths(doc: dict[str, Any]) -> list[list[Any]]:
    paths: list[list[Any]] = [[k] for k in doc]
    for i, item in enumerate(doc.get("line_items", [])[:2]):
        paths += [["line_items", i, k] for k in item]
        for j, _ in enumerate(item.get("discount_allocations", [])[:1]):
            paths.append(["line_items", i, "discount_allocations", j, "amount"])
        for j, _ in enumerate(item.get("tax_lines", [])[:1]):
            paths.append(["line_items", i, "tax_lines", j, "price"])
    paths += [["note_attributes", i, k] for i, a in enumerate(doc.get("note_attributes", []))
              for k in a]  # fmt: skip
    paths += [["customer", k] for k in (doc.get("customer") or {})]
    paths += [["discount_codes", 0, "code"]] if doc.get("discount_codes") else []
    return paths


PATHS = [(n, p) for n, doc in enumerate(ORDERS) for p in _paths(doc)]


@settings(max_examples=600, deadline=None)
@given(which=st.sampled_from(PATHS), action=st.sampled_from(["drop", "set", "extra"]),
       junk=JUNK)  # fmt: skip
def test_mutated_orders_are_accepted_or_refused_alike(
    which: tuple[int, list[Any]], action: str, junk: Any
) -> None:
    n, path = which
    doc = copy.deepcopy(ORDERS[n])
    _mutate(doc, path, action, junk)
    agree(orjson.dumps(doc), _fast, _slow, _flow, _used_only)


def test_broken_bodies_are_refused_by_both() -> None:
    body = orjson.dumps(ORDERS[0])
    for bad in (body[:-1], b"[]", b"null", b"{}", b'{"id": "1"}'):
        assert _fast(bad) is None
        assert _slow(bad) is None
        try:
            _conversion(_order_facts("orders/create", bad))
        except (ValueError, ValidationError):
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_the_msgspec_structs_read_only_the_contracts_fields() -> None:
    """Each field the fast path decodes exists in the contract, so a renamed contract field
    cannot silently read nothing on the hot path."""
    pairs: list[tuple[type, type[BaseModel]]] = [
        (OrderBody, ShopifyOrder), (LineItem, ShopifyLineItem),
        (NoteAttribute, ShopifyNoteAttribute), (Customer, ShopifyCustomer),
        (DiscountAllocation, ShopifyDiscountAllocation), (TaxLine, ShopifyTaxLine),
        (DiscountCode, ShopifyDiscountCode),
    ]  # fmt: skip
    for fast, contract in pairs:
        fields = fast.__struct_fields__  # type: ignore[attr-defined]
        assert set(fields) <= set(contract.model_fields), fast
