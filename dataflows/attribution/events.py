"""From Kafka values to what the attribution state consumes. Pure: no I/O, no clock.

`parse_value(raw)` turns one Kafka message value (an `EventEnvelope`) into an `Event` for the
stateful step (clicks, orders, cancellations, refunds), or nothing for events that are only
archived (customers, ERP, order edit descriptions), or raises `Unprocessable` with the reason
the message goes to the dead-letter topic.

Events are compact and picklable: timestamps are integer milliseconds and a click is a tuple
(`Click`), because items cross worker boundaries pickled and clicks are kept for weeks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError

from schemas.conversion import (
    Conversion,
    OrderRefund,
    conversion_from_shopify,
    refund_from_shopify,
)
from schemas.events.click import ClickEvent
from schemas.events.envelope import EventEnvelope, Source
from schemas.events.shopify import ShopifyOrder, ShopifyRefund, parse_shopify_body

# (occurred_ms, agent_id, program_id, link_code, visitor_id, is_bot, is_duplicate)
Click = tuple[int, str | None, str | None, str, str | None, bool, bool]

EventKind = Literal["click", "order", "cancel", "refund"]

ORDER_KINDS = frozenset({"orders/create", "orders/updated", "orders/paid", "orders/fulfilled"})
# Archived but not attributed: an edit's facts arrive with the orders/updated that follows it.
ARCHIVE_ONLY_KINDS = frozenset({"orders/edited", "customers/create"})


class Unprocessable(ValueError):
    """A message that cannot be processed; `str(exc)` is the dead-letter reason."""

    def __init__(self, reason: str, envelope: EventEnvelope | None = None) -> None:
        super().__init__(reason)
        self.envelope = envelope


@dataclass(frozen=True, slots=True)
class Event:
    """One event for the tenant state. `payload` depends on `kind`: a `(click_id, Click)` for
    clicks, a `Conversion` for orders and cancellations, an `OrderRefund` for refunds.
    `raw` is the Kafka value (for dead letters); it is dropped before an event is kept."""

    kind: EventKind
    event_id: str
    tenant_id: str
    occurred_ms: int
    received_ms: int
    payload: tuple[str, Click] | Conversion | OrderRefund
    raw: bytes = b""

    @property
    def order_id(self) -> str:
        if isinstance(self.payload, Conversion | OrderRefund):
            return self.payload.order_id
        raise TypeError("a click has no order")


def to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def click_tuple(click: ClickEvent) -> Click:
    return (
        to_ms(click.occurred_at),
        click.agent_id,
        click.program_id,
        click.link_code,
        click.visitor_id,
        click.is_bot,
        click.is_duplicate,
    )


def is_click(envelope: EventEnvelope) -> bool:
    return envelope.source in (Source.CLICK, Source.PIXEL) and envelope.kind == "click"


def parse_click(envelope: EventEnvelope) -> ClickEvent:
    """The click in a click envelope; `Unprocessable` if the body is not one."""
    try:
        return ClickEvent.model_validate_json(envelope.raw_body())
    except ValueError as exc:
        raise Unprocessable(f"click: {_short(exc)}", envelope) from exc


def click_event(envelope: EventEnvelope, click: ClickEvent, raw: bytes = b"") -> Event:
    return Event(
        kind="click",
        event_id=envelope.event_id,
        tenant_id=envelope.tenant_id,
        occurred_ms=to_ms(envelope.occurred_at),
        received_ms=to_ms(envelope.received_at),
        payload=(click.click_id, click_tuple(click)),
        raw=raw,
    )


def parse_envelope(raw: bytes) -> EventEnvelope:
    try:
        return EventEnvelope.from_bytes(raw)
    except ValueError as exc:
        raise Unprocessable(f"not an event envelope: {_short(exc)}") from exc


def event_from_envelope(envelope: EventEnvelope, raw: bytes = b"") -> Event | None:
    """The state event of an envelope, `None` if it is only archived; `Unprocessable` if its
    body does not fit its kind."""

    def make(kind: EventKind, payload: Conversion | OrderRefund) -> Event:
        return Event(
            kind=kind,
            event_id=envelope.event_id,
            tenant_id=envelope.tenant_id,
            occurred_ms=to_ms(envelope.occurred_at),
            received_ms=to_ms(envelope.received_at),
            payload=payload,
            raw=raw,
        )

    try:
        if is_click(envelope):
            return click_event(envelope, parse_click(envelope), raw)
        if envelope.source is not Source.SHOPIFY or envelope.kind in ARCHIVE_ONLY_KINDS:
            return None
        if envelope.kind in ORDER_KINDS or envelope.kind == "orders/cancelled":
            order = parse_shopify_body(envelope.kind, envelope.raw_body())
            assert isinstance(order, ShopifyOrder)
            conversion = conversion_from_shopify(
                order, tenant_id=envelope.tenant_id, source_event_id=envelope.event_id,
                shop=envelope.shop,
            )  # fmt: skip
            kind: EventKind = "cancel" if envelope.kind == "orders/cancelled" else "order"
            return make(kind, conversion)
        if envelope.kind == "refunds/create":
            refund = parse_shopify_body(envelope.kind, envelope.raw_body())
            assert isinstance(refund, ShopifyRefund)
            facts = refund_from_shopify(refund, source_event_id=envelope.event_id)
            return make("refund", facts)
    except ValueError as exc:  # JSON, validation and missing-facts errors are all ValueErrors
        raise Unprocessable(f"{envelope.kind}: {_short(exc)}", envelope) from exc
    return None


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return f"{exc.error_count()} validation error(s); first at {where}: {first['msg']}"
    return str(exc)[:300]
