"""The hot path's decoding: Kafka values to envelopes and clicks without pydantic. Pure.

Nine events in ten are clicks, and pydantic's validation of the envelope and the click body cost
most of a click's time in the flow. These msgspec structs decode the same JSON as
`schemas.events.envelope.EventEnvelope` and `schemas.events.click.ClickEvent` (field names,
required fields, lengths, patterns, unknown fields refused, time zones required, the body checked
against its size and SHA-256), several times faster, and expose the attributes the flow reads
from the pydantic models, so the row builders and the state take either. What msgspec refuses,
the caller hands to the pydantic model (`events.parse_envelope`, `events.parse_click`): the
contract stays the judge of malformed input (pydantic's lax mode takes a few forms msgspec does
not, such as `false` for an integer), and well-formed input never pays for it.
`tests/dataflows/test_wire.py` checks that what msgspec accepts, pydantic accepts with the same
rows and state events, on real envelopes and on hypothesis mutations of them.

Both wire forms of the envelope are read (`schemas.events.envelope`'s docstring): form 1 (the
body a JSON string) by `Envelope`, form 2 (`body_encoding` `"json"`: the body embedded as JSON)
by `JsonEnvelope`, which keeps the body as `msgspec.Raw`, the exact bytes with no copy, and
reads as its form-1 twin (`body` the text, `body_encoding` `utf-8`): the same rows and events
(tests/schemas/test_envelope_forms.py).
"""

from __future__ import annotations

import base64
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from schemas.events.envelope import SCHEMA_VERSION, BodyEncoding, Source
from schemas.events.shopify import ShopifyOrder
from schemas.events.wire import WireDatetime
from schemas.ids import body_sha256
from schemas.money import parse_amount

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Short = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class PayloadRef(msgspec.Struct, frozen=True, gc=False):
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, msgspec.Meta(ge=0)]
    content_type: str = "application/json"


class _EnvelopeHead(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """The required fields of both wire forms (each form adds its body and the optional ones)."""

    event_id: _Id
    source: Source
    kind: _Short
    tenant_id: _Short
    occurred_at: datetime
    received_at: datetime
    payload_ref: PayloadRef


class Envelope(_EnvelopeHead, frozen=True, gc=False, forbid_unknown_fields=True):
    """`EventEnvelope`, decoded by msgspec (see the module docstring)."""

    body: str
    shop: str | None = None
    entity_id: str | None = None
    schema_version: int = SCHEMA_VERSION
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body_encoding: BodyEncoding = BodyEncoding.UTF8

    def raw_body(self) -> bytes:
        """The body exactly as received."""
        if self.body_encoding is BodyEncoding.BASE64:
            return base64.b64decode(self.body)
        return self.body.encode("utf-8")


class JsonEnvelope(_EnvelopeHead, frozen=True, gc=False, forbid_unknown_fields=True):
    """An envelope of wire form 2 (`body_encoding` `"json"`), read as its form-1 twin."""

    json_body: msgspec.Raw = msgspec.field(name="body")
    json_encoding: Literal["json"] = msgspec.field(name="body_encoding")
    shop: str | None = None
    entity_id: str | None = None
    schema_version: int = SCHEMA_VERSION
    headers: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def body(self) -> str:
        """The body's text, as form 1 holds it."""
        return bytes(self.json_body).decode("utf-8")

    @property
    def body_encoding(self) -> BodyEncoding:
        return BodyEncoding.UTF8

    def raw_body(self) -> bytes:
        """The body exactly as received."""
        return bytes(self.json_body)


class ClickBody(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """`ClickEvent`, decoded by msgspec."""

    click_id: Annotated[str, msgspec.Meta(pattern=r"^clk_[0-9a-f]{32}$")]
    tenant_id: Annotated[str, msgspec.Meta(min_length=1)]
    link_code: _Short
    occurred_at: datetime
    visitor_id: str | None = None
    program_id: str | None = None
    agent_id: str | None = None
    shop: str | None = None
    landing_url: str | None = None
    referrer: str | None = None
    user_agent: str | None = None
    ip_hash: str | None = None
    is_bot: bool = False
    is_duplicate: bool = False


# Strict: JSON types as declared. Lax forms go to the pydantic model, which judges them: msgspec's
# lax mode reads a number as a datetime in Unix seconds where pydantic reads one above 2e10 as
# milliseconds (found by test_wire's mutations), so lax decoding here could archive another time.
_ENVELOPE = msgspec.json.Decoder(Envelope)
_JSON_ENVELOPE = msgspec.json.Decoder(JsonEnvelope)
_JSON_TAIL = b'"body_encoding":"json"}'  # where `envelope_bytes` writes it
_CLICK = msgspec.json.Decoder(ClickBody)


def _aware(what: str, when: datetime) -> None:
    if when.tzinfo is None:
        raise ValueError(f"{what}: a time zone is required")


def _decode(raw: bytes) -> Envelope | JsonEnvelope:
    if raw.endswith(_JSON_TAIL):
        return _JSON_ENVELOPE.decode(raw)
    try:
        return _ENVELOPE.decode(raw)
    except msgspec.ValidationError:
        if b'"json"' not in raw:  # form 2 with its fields in another order
            raise
        return _JSON_ENVELOPE.decode(raw)


def decode_envelope(raw: bytes) -> Envelope | JsonEnvelope:
    """The envelope in a Kafka value of either wire form; `ValueError` (msgspec's
    `ValidationError`/`DecodeError` are ValueErrors) if it is not one, as
    `EventEnvelope.from_bytes` would refuse it."""
    envelope = _decode(raw)
    _aware("occurred_at", envelope.occurred_at)
    _aware("received_at", envelope.received_at)
    try:
        body = envelope.raw_body()
        if isinstance(envelope, JsonEnvelope) and not body.isascii():
            body.decode("utf-8")  # as `EventEnvelope` reads it (form 1's text is UTF-8)
    except (ValueError, UnicodeError) as exc:
        raise ValueError(f"body: {exc}") from exc
    ref = envelope.payload_ref
    if len(body) != ref.size or body_sha256(body) != ref.sha256:
        raise ValueError("body does not match payload_ref (size or sha256)")
    return envelope


def decode_click(body: bytes) -> ClickBody:
    """The click in a click envelope's body; `ValueError` as `ClickEvent` would refuse it."""
    click = _CLICK.decode(body)
    _aware("occurred_at", click.occurred_at)
    return click


# --- Shopify orders: only the fields attribution and commission use ------------------------


class Amount(Decimal):
    """A money amount decoded by `parse_amount`, as `DecimalStr` validates it (a marker type
    for msgspec's `dec_hook`; the conversion's models turn it into a plain `Decimal`)."""

    __slots__ = ()


class Stamp(WireDatetime):
    """A timestamp decoded by `WireDatetime.from_wire`, as `WireTimestamp` validates it."""

    __slots__ = ()


def _hook(kind: type, value: object) -> object:
    if kind is Amount:
        return Amount(parse_amount(value))  # type: ignore[arg-type]  # parse_amount judges it
    if kind is Stamp:
        if not isinstance(value, str):
            raise ValueError("expected an ISO 8601 timestamp with a UTC offset")
        return Stamp.from_wire(value)
    raise NotImplementedError(kind)


class NoteAttribute(msgspec.Struct, frozen=True, gc=False):
    name: str
    value: str | None = None


class DiscountCode(msgspec.Struct, frozen=True, gc=False):
    code: str


class DiscountAllocation(msgspec.Struct, frozen=True, gc=False):
    amount: Amount


class TaxLine(msgspec.Struct, frozen=True, gc=False):
    price: Amount


class LineItem(msgspec.Struct, frozen=True, gc=False):
    id: int
    quantity: int
    price: Amount
    product_id: int | None = None
    total_discount: Amount | None = None
    discount_allocations: tuple[DiscountAllocation, ...] = ()
    tax_lines: tuple[TaxLine, ...] = ()


class Customer(msgspec.Struct, frozen=True, gc=False):
    id: int
    email: str | None = None


class OrderBody(msgspec.Struct, frozen=True, gc=False):
    """The fields of `ShopifyOrder` that `conversion_from_shopify` reads, with the same types
    and validators; every other key of the body is ignored (it is archived as received)."""

    id: int
    name: str | None = None
    email: str | None = None
    contact_email: str | None = None
    created_at: Stamp | None = None
    processed_at: Stamp | None = None
    currency: str | None = None
    taxes_included: bool | None = None
    discount_codes: tuple[DiscountCode, ...] = ()
    landing_site: str | None = None
    landing_site_ref: str | None = None
    note_attributes: tuple[NoteAttribute, ...] = ()
    customer: Customer | None = None
    line_items: tuple[LineItem, ...] = ()

    coupon_codes = ShopifyOrder.coupon_codes
    occurred_at = ShopifyOrder.occurred_at
    customer_email = ShopifyOrder.customer_email


# strict: only JSON's own types; what pydantic's lax mode would coerce goes to pydantic.
_ORDER = msgspec.json.Decoder(OrderBody, dec_hook=_hook)


def decode_order(body: bytes) -> OrderBody:
    """The order facts in an `orders/*` body; `ValueError` for anything msgspec or the amount
    and timestamp validators refuse (the caller then asks `ShopifyOrder`, whose error is the
    dead letter's reason)."""
    try:
        return _ORDER.decode(body)
    except (TypeError, ArithmeticError) as exc:  # from a validator inside `dec_hook`
        raise ValueError(str(exc)) from exc


# --- Shopify refunds: the fields of a refund's state event and its `refunds` archive row ----

_Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]


class ShopMoney(msgspec.Struct, frozen=True, gc=False):
    amount: Amount
    currency_code: _Currency


class MoneySet(msgspec.Struct, frozen=True, gc=False):
    shop_money: ShopMoney
    presentment_money: ShopMoney


class RefundLine(msgspec.Struct, frozen=True, gc=False):
    line_item_id: int
    quantity: int
    subtotal: Amount | None = None
    subtotal_set: MoneySet | None = None


class RefundTransaction(msgspec.Struct, frozen=True, gc=False):
    currency: _Currency | None = None


class RefundBody(msgspec.Struct, frozen=True, gc=False):
    """The fields of `ShopifyRefund` that `refund_from_shopify` and the `refunds` archive row
    (`sinks.clickhouse.refund_row`) read, with the same types and validators; every other key
    is ignored (archived as received)."""

    id: int
    order_id: int
    created_at: Stamp | None = None
    processed_at: Stamp | None = None
    refund_line_items: tuple[RefundLine, ...] = ()
    transactions: tuple[RefundTransaction, ...] = ()


_REFUND = msgspec.json.Decoder(RefundBody, dec_hook=_hook)


def decode_refund(body: bytes) -> RefundBody:
    """The refund facts in a `refunds/create` body; `ValueError` for anything msgspec or the
    amount and timestamp validators refuse (the caller then asks `ShopifyRefund`)."""
    try:
        return _REFUND.decode(body)
    except (TypeError, ArithmeticError) as exc:  # from a validator inside `dec_hook`
        raise ValueError(str(exc)) from exc
