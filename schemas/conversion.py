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

import io
import pickle
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Protocol
from urllib.parse import parse_qs, urlsplit

import msgspec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.compact import CompactPickle
from schemas.ids import derived_id
from schemas.money import CURRENCY_CODE_PATTERN, parse_amount

# Where a storefront puts refstream's ids on an order: the landing URL's query string and/or
# cart attributes (`note_attributes`). Underscore-prefixed attributes are hidden at checkout.
CLICK_ID_PARAM = "rsclid"
CLICK_ID_ATTRIBUTES = frozenset({"rsclid", "_rsclid"})
VISITOR_ID_ATTRIBUTES = frozenset({"rsvid", "_rsvid"})

_NonEmpty = Annotated[str, Field(min_length=1)]


def normalise_email(email: str | None) -> str | None:
    """`email` stripped and lower-cased; `None` for a missing or blank one."""
    if email is None or not email.strip():
        return None
    return email.strip().lower()


def normalise_coupon(code: str) -> str:
    """A coupon code as it is matched: stripped and upper-cased (Shopify codes are case-blind)."""
    return code.strip().upper()


_ZERO = Decimal(0)


class ConversionLine(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One order line: units sold, unit price and what was taken off it.

    A msgspec struct checked by `__post_init__` (made, copied with `msgspec.structs.replace` or
    loaded from a pickle, it is valid), not a pydantic model: the order path makes one per line
    of every order, and pydantic's validation cost about 80 % of making an order's facts
    (`bench.order_instructions`). `ValueError` names what is wrong."""

    line_id: str
    product_id: str | None = None
    collection_ids: tuple[str, ...] = ()
    quantity: int
    unit_price: Decimal
    discount: Decimal = _ZERO
    included_tax: Decimal = _ZERO

    def __post_init__(self) -> None:
        line_id, quantity = self.line_id, self.quantity
        if type(line_id) is not str or not line_id:
            raise ValueError(f"line_id: a non-empty text, not {line_id!r}")
        if type(quantity) is not int or quantity < 0:
            raise ValueError(f"line {line_id}: quantity must be a whole number ≥ 0: {quantity!r}")
        if self.product_id is not None and type(self.product_id) is not str:
            raise ValueError(f"line {line_id}: product_id must be text, not {self.product_id!r}")
        _tuple_of(self, "collection_ids", str, f"line {line_id}: collection ids must be text")
        for name in _LINE_AMOUNTS:
            value = getattr(self, name)
            if type(value) is not Decimal:
                _set(self, name, value := _amount_of(f"line {line_id}: {name}", value))
            if not value >= 0:
                raise ValueError(f"line {line_id}: {name} must be ≥ 0, not {value}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (ConversionLine, msgspec.structs.astuple(self)))

    def __setstate__(self, state: dict[str, Any]) -> None:
        _from_pydantic_state(self, state)

    @property
    def gross(self) -> Decimal:
        """`unit_price * quantity`, before any discount."""
        return self.unit_price * self.quantity

    @property
    def net_before_order_discount(self) -> Decimal:
        """Gross less the line's own discounts and included tax, never below zero."""
        return max(_ZERO, self.gross - self.discount - self.included_tax)


class Conversion(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """An order's facts as attribution and commission see them (see the module contracts).

    A msgspec struct checked (and its email, coupon codes and click ids normalised) by
    `__post_init__`, as `ConversionLine` is; `dict=True` only for the computed properties
    kept once computed."""

    tenant_id: str
    shop: str | None = None
    order_id: str
    order_name: str | None = None
    occurred_at: datetime  # event time: when the order was placed; aware
    currency: str
    customer_id: str | None = None
    customer_email: str | None = None  # stripped and lower-cased
    coupon_codes: tuple[str, ...] = ()  # upper-cased, in order, each once
    click_ids: tuple[str, ...] = ()  # click ids the order cites, stripped, each once
    visitor_id: str | None = None
    lines: tuple[ConversionLine, ...] = ()
    order_discount: Decimal = _ZERO
    source_event_id: str

    def __post_init__(self) -> None:
        for name in ("tenant_id", "order_id", "source_event_id"):
            value = getattr(self, name)
            if type(value) is not str or not value:
                raise ValueError(f"{name}: a non-empty text, not {value!r}")
        for name in _OPTIONAL_TEXT:
            value = getattr(self, name)
            if value is not None and type(value) is not str:
                raise ValueError(f"{name}: text or null, not {value!r}")
        currency, at = self.currency, self.occurred_at
        if type(currency) is not str or _CURRENCY.fullmatch(currency) is None:
            raise ValueError(f"currency: three upper-case letters, not {currency!r}")
        if not isinstance(at, datetime) or at.utcoffset() is None:
            raise ValueError(f"occurred_at: an aware timestamp, not {at!r}")
        lines = _tuple_of(self, "lines", ConversionLine, "lines: order lines")
        if len(lines) > 1 and len({line.line_id for line in lines}) != len(lines):
            raise ValueError("line ids must be unique within an order")
        discount = self.order_discount
        if type(discount) is not Decimal:
            _set(self, "order_discount", discount := _amount_of("order_discount", discount))
        if not discount >= 0:
            raise ValueError(f"order_discount must be ≥ 0, not {discount}")
        email = self.customer_email
        if email is not None:
            normal = normalise_email(email)
            if normal != email:
                _set(self, "customer_email", normal)
        if self.coupon_codes:
            codes = (normalise_coupon(code) for code in self.coupon_codes)
            _set(self, "coupon_codes", tuple(dict.fromkeys(code for code in codes if code)))
        elif type(self.coupon_codes) is not tuple:
            _set(self, "coupon_codes", ())
        if self.click_ids:
            clicks = (c.strip() for c in self.click_ids)
            _set(self, "click_ids", tuple(dict.fromkeys(c for c in clicks if c)))
        elif type(self.click_ids) is not tuple:
            _set(self, "click_ids", ())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (Conversion, msgspec.structs.astuple(self)))

    def __setstate__(self, state: dict[str, Any]) -> None:
        _from_pydantic_state(self, state)

    @cached_property
    def conversion_id(self) -> str:
        """Deterministic id of the conversion: one per (tenant, order). Kept once computed (the
        order path asks several times); not a field: never pickled or dumped."""
        return derived_id("cv", self.tenant_id, self.order_id)

    @cached_property
    def net_revenue(self) -> Decimal:
        """Merchandise revenue after every discount, excluding tax and shipping; ≥ 0."""
        lines = sum((line.net_before_order_discount for line in self.lines), _ZERO)
        return max(_ZERO, lines - self.order_discount)

    def line(self, line_id: str) -> ConversionLine | None:
        """The line with `line_id`, or `None`."""
        return next((line for line in self.lines if line.line_id == line_id), None)


_set = msgspec.structs.force_setattr
_LINE_AMOUNTS = ("unit_price", "discount", "included_tax")
_OPTIONAL_TEXT = ("shop", "order_name", "customer_id", "customer_email", "visitor_id")
_CURRENCY = re.compile(CURRENCY_CODE_PATTERN)


def _tuple_of(made: msgspec.Struct, name: str, kind: type, wrong: str) -> tuple[Any, ...]:
    """`made`'s field `name` as a tuple (one given as another iterable is replaced by it), each
    item of exactly type `kind`, else `ValueError` (`wrong`, and the item)."""
    items = getattr(made, name)
    if type(items) is not tuple:
        _set(made, name, items := tuple(items))
    for item in items:
        if type(item) is not kind:
            raise ValueError(f"{wrong}, not {item!r}")
    return items


def _amount_of(what: str, value: object) -> Decimal:
    """A plain `Decimal` of an amount given otherwise (text, a number, the wire's `Amount`), as
    `schemas.money.parse_amount` reads it; `ValueError` naming `what` if it is none."""
    try:
        amount = parse_amount(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from exc
    return amount if type(amount) is Decimal else Decimal(amount)


def _rebuild(cls: type[ConversionLine] | type[Conversion], values: tuple[Any, ...]) -> Any:
    """A line or conversion from its field values in field order (its pickle; fields are only
    appended, so an older, shorter tuple gives the new fields their defaults)."""
    cls = getattr(cls, "stands_for", cls)  # (found through `StateUnpickler`)
    return cls(**dict(zip(cls.__struct_fields__, values, strict=False)))


def _from_pydantic_state(made: ConversionLine | Conversion, state: dict[str, Any]) -> None:
    """Fill `made` (made by `cls.__new__`, as unpickling does) from the state pydantic pickled
    when these classes were its models, before `CompactPickle` (snapshots of those versions):
    the field values under `__dict__`, defaults for fields it lacks, checked as a new one is."""
    values = state["__dict__"]
    for f in msgspec.structs.fields(made):
        if f.name in values:
            value = values[f.name]
        elif f.default is not msgspec.NODEFAULT:
            value = f.default
        else:
            raise ValueError(f"a pickled {type(made).__name__} without {f.name}")
        _set(made, f.name, value)
    made.__post_init__()


class _FormerModel:
    """What a pickle in pydantic's own format (`copyreg.__newobj__`, then the state) finds
    under the name of `ConversionLine` or `Conversion` when they were pydantic models: a msgspec
    struct cannot be made empty by `__new__`, so this makes a placeholder of the struct it
    `stands_for`, which the pickle's state then fills (`__setstate__`). Only `StateUnpickler`
    hands it out (and `schemas.compact.rebuild_model` reads `stands_for`)."""

    stands_for: Any = None
    placeholder: Any = None

    def __new__(cls, *_: Any) -> Any:
        return msgspec.structs.replace(cls.placeholder)


class _FormerLine(_FormerModel):
    stands_for = ConversionLine
    placeholder = ConversionLine(line_id="-", quantity=0, unit_price=_ZERO)


class _FormerConversion(_FormerModel):
    stands_for = Conversion
    placeholder = Conversion(
        tenant_id="-", order_id="-", occurred_at=datetime(2000, 1, 1, tzinfo=UTC),
        currency="XXX", source_event_id="-",
    )  # fmt: skip


_FORMER = {"ConversionLine": _FormerLine, "Conversion": _FormerConversion}


class StateUnpickler(pickle.Unpickler):
    """`pickle`'s unpickler, and pickles of `ConversionLine` and `Conversion` written in
    pydantic's own format (recovery snapshots from before 2026-12-06) load as their structs."""

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name in _FORMER:
            return _FORMER[name]
        return super().find_class(module, name)


def load_state(data: bytes) -> Any:
    """`pickle.loads` through `StateUnpickler`."""
    return StateUnpickler(io.BytesIO(data)).load()


def conversion_fields(model: ConversionLine | Conversion) -> dict[str, Any]:
    """The fields of a line or conversion by name, its lines as such dicts too (what
    pydantic's `model_dump` gave)."""
    values = msgspec.structs.asdict(model)
    if isinstance(model, Conversion):
        values["lines"] = [msgspec.structs.asdict(line) for line in model.lines]
    return values


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
