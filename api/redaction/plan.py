"""What a redaction request erases: pure functions over archived events, no I/O.

A request is read from its archived envelope (`customers/redact` or `shop/redact`, as Shopify
documents the bodies). `affected` decides which archived events of the shop concern it and
`masked_body` rewrites a body with every personal field removed. Masking sets the field to
JSON `null` (objects that are personal as a whole, addresses and client details, become `null`
too): the body still parses as the same Shopify model, so a replay of the archive attributes
and counts exactly as before (ids, amounts, line items, note attributes and landing URLs, which
carry the referral codes, are kept), while nothing that identifies the person remains.

The Shopify customer id is kept: it is the shop's internal number for the customer, not a
personal datum by itself, and the customer binding (orders attributed through the customer's
agent) needs it to give the same totals on replay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

RedactKind = Literal["customers/redact", "shop/redact"]
REDACT_KINDS: tuple[RedactKind, ...] = ("customers/redact", "shop/redact")

# Scalars that identify a person wherever they appear in a body (orders, customers, refunds,
# compliance requests, clicks).
PERSONAL_KEYS = frozenset(
    {
        "email", "contact_email", "phone", "first_name", "last_name", "browser_ip", "ip_hash",
        "user_agent", "visitor_id", "referrer", "referring_site", "note",
    }
)  # fmt: skip
# Objects that are personal as a whole: every field of an address or a browser's details.
PERSONAL_OBJECTS = frozenset(
    {"billing_address", "shipping_address", "default_address", "addresses", "client_details"}
)
ORDER_KINDS = frozenset(
    {
        "orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled",
        "orders/edited",
    }
)  # fmt: skip
CUSTOMER_KINDS = frozenset({"customers/create"})
COMPLIANCE_KINDS = frozenset({"customers/data_request", "customers/redact"})
REFUND_KINDS = frozenset({"refunds/create"})
CLICK_KIND = "click"


class RequestError(ValueError):
    """An archived redaction envelope whose body is not the documented shape."""


@dataclass(frozen=True, slots=True)
class RedactRequest:
    """One compliance request, as archived: `event_id` identifies it (one redaction each)."""

    tenant_id: str
    shop: str
    kind: RedactKind
    event_id: str
    requested_at: datetime
    customer_id: int | None = None
    email: str | None = None
    phone: str | None = None
    orders: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    """The parts of a `raw_events` row that selection and masking read."""

    source: str
    kind: str
    event_id: str
    body: bytes


def request_from_body(
    *, tenant_id: str, shop: str | None, kind: str, event_id: str, requested_at: datetime,
    body: bytes,
) -> RedactRequest:  # fmt: skip
    """The request an archived compliance envelope carries; `RequestError` if its body is not
    Shopify's documented `customers/redact` or `shop/redact` body."""
    if kind not in REDACT_KINDS:
        raise RequestError(f"{kind!r} is not a redaction topic")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"{kind} body is not JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("shop_domain"), str):
        raise RequestError(f"{kind} body names no shop_domain")
    domain = shop or doc["shop_domain"]
    if kind == "shop/redact":
        return RedactRequest(tenant_id, domain, "shop/redact", event_id, requested_at)
    customer = doc.get("customer")
    if not isinstance(customer, dict) or not isinstance(customer.get("id"), int):
        raise RequestError("customers/redact body names no customer.id")
    orders = doc.get("orders_to_redact") or []
    return RedactRequest(
        tenant_id, domain, "customers/redact", event_id, requested_at,
        customer_id=customer["id"], email=_text(customer.get("email")),
        phone=_text(customer.get("phone")), orders=frozenset(str(o) for o in orders),
    )  # fmt: skip


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def customer_ref(key: bytes, tenant_id: str, shop: str, customer_id: int) -> str:
    """The keyed hash recorded instead of the customer: whoever holds the key can tell whether
    a given customer was redacted; the record alone reveals nothing."""
    message = f"refstream-redaction\x00{tenant_id}\x00{shop}\x00{customer_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _same(a: object, b: str | None) -> bool:
    return b is not None and isinstance(a, str) and a.strip().lower() == b.strip().lower()


def _customer_of(doc: dict[str, Any]) -> object:
    customer = doc.get("customer")
    return customer.get("id") if isinstance(customer, dict) else None


def order_id(doc: dict[str, Any]) -> str:
    """The order an order body is about (`orders/edited` nests it in `order_edit`)."""
    edit = doc.get("order_edit")
    if isinstance(edit, dict):
        return str(edit.get("order_id"))
    return str(doc.get("id"))


def order_matches(request: RedactRequest, doc: object) -> bool:
    """An order body of the request's customer: listed in `orders_to_redact`, placed by the
    customer id, or under the customer's email (guest checkouts have no customer)."""
    if not isinstance(doc, dict):
        return False
    return (
        order_id(doc) in request.orders
        or (request.customer_id is not None and _customer_of(doc) == request.customer_id)
        or _same(doc.get("email"), request.email)
        or _same(doc.get("contact_email"), request.email)
    )


def affected_orders(request: RedactRequest, events: Iterable[ArchivedEvent]) -> set[str]:
    """The ids of the orders the request covers: the listed ones and those the archive shows
    the customer placed."""
    found = set(request.orders)
    for event in events:
        if event.kind in ORDER_KINDS:
            doc = _json(event.body)
            if isinstance(doc, dict) and order_matches(request, doc):
                found.add(order_id(doc))
    return found


def affected(
    request: RedactRequest,
    event: ArchivedEvent,
    orders: frozenset[str],
    clicks: frozenset[str],
) -> bool:
    """Whether `event` (an archived event of the request's tenant) holds the request's personal
    data. A shop redaction covers every event of the shop; a customer redaction its orders
    (`orders`, from `affected_orders`), their refunds, the customer's own records and
    compliance requests, and the clicks its orders were attributed to (`clicks`)."""
    if request.kind == "shop/redact":
        return True
    if event.kind == CLICK_KIND:
        return event.event_id in clicks
    doc = _json(event.body)
    if not isinstance(doc, dict):
        return False
    if event.kind in ORDER_KINDS:
        return order_id(doc) in orders or order_matches(request, doc)
    if event.kind in REFUND_KINDS:
        return str(doc.get("order_id")) in orders
    if event.kind in CUSTOMER_KINDS:
        return doc.get("id") == request.customer_id or _same(doc.get("email"), request.email)
    if event.kind in COMPLIANCE_KINDS:
        return _customer_of(doc) == request.customer_id
    return False


def mask(value: Any) -> Any:
    """`value` with every personal field set to null, at any depth."""
    if isinstance(value, dict):
        return {
            key: (
                None
                if (key in PERSONAL_OBJECTS or key in PERSONAL_KEYS) and item is not None
                else mask(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask(item) for item in value]
    return value


def masked_body(body: bytes) -> bytes:
    """The archived body without its personal data. A body that is not JSON cannot be masked
    field by field and is emptied (it cannot be read by a replay either way)."""
    doc = _json(body)
    if doc is None:
        return b""
    return orjson.dumps(mask(doc))


def _envelope_body(event: dict[str, Any]) -> bytes | None:
    body = event.get("body")
    if not isinstance(body, str):
        return None
    if event.get("body_encoding") == "base64":
        try:
            return base64.b64decode(body)
        except ValueError:
            return None
    return body.encode()


def masked_letter(
    request: RedactRequest,
    event: dict[str, Any],
    orders: frozenset[str],
    clicks: frozenset[str],
) -> dict[str, Any] | None:
    """An exceptions-inbox letter (`exceptions.event`: the envelope that failed, or the sink
    row a store refused) with the personal data masked, or None if it does not concern the
    request. The caller passes only letters of the request's shop (and, for a customer, the
    letters without a shop: refused sink rows)."""
    body = _envelope_body(event)
    if body is not None and isinstance(event.get("kind"), str):
        archived = ArchivedEvent(
            str(event.get("source", "")), event["kind"], str(event.get("event_id", "")), body
        )
        if not affected(request, archived, orders, clicks):
            return None
        masked = masked_body(body)
        payload_ref = event.get("payload_ref")
        ref: dict[str, Any] = payload_ref if isinstance(payload_ref, dict) else {}
        return event | {
            "body": masked.decode(),
            "body_encoding": "utf-8",
            "payload_ref": {
                **ref,
                "sha256": hashlib.sha256(masked).hexdigest(),
                "size": len(masked),
            },
        }
    concerned = (
        request.kind == "shop/redact"
        or str(event.get("order_id")) in orders
        or event.get("click_id") in clicks
    )
    if not concerned:
        return None
    masked_row: dict[str, Any] = mask(event)
    return masked_row
