"""Shopify webhook verification and envelope building: pure functions, no I/O.

Shopify signs the raw body bytes: base64(HMAC-SHA256(app secret, body)), sent in
`X-Shopify-Hmac-Sha256` (`shopify-hmac-sha256` on Events deliveries). Header names are
case-insensitive and may lack the `X-` prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson
from pydantic import BaseModel, ValidationError

from schemas.events.envelope import EventEnvelope, Source
from schemas.events.shopify import (
    ShopifyCustomer,
    ShopifyOrder,
    ShopifyOrderEdited,
    ShopifyRefund,
    parse_shopify_body,
)
from schemas.ids import body_sha256, derived_id

# Headers worth keeping on the envelope (lower-case, without the `x-` prefix).
KEPT_HEADERS = (
    "shopify-topic",
    "shopify-shop-domain",
    "shopify-api-version",
    "shopify-webhook-id",
    "shopify-event-id",
    "shopify-triggered-at",
    "shopify-name",
    "shopify-sub-topic",
)


@dataclass(frozen=True, slots=True)
class ShopifyHeaders:
    """The delivery headers, read case-insensitively, `X-` prefix optional."""

    hmac: str | None
    topic: str | None
    shop_domain: str | None
    event_id: str | None
    webhook_id: str | None
    triggered_at: str | None
    kept: dict[str, str]

    @classmethod
    def read(cls, headers: Mapping[str, str]) -> ShopifyHeaders:
        lowered = {k.lower(): v for k, v in headers.items()}

        def get(name: str) -> str | None:
            value = lowered.get(f"x-{name}", lowered.get(name))
            return value.strip() if value is not None else None

        return cls(
            hmac=get("shopify-hmac-sha256"),
            topic=get("shopify-topic"),
            shop_domain=(get("shopify-shop-domain") or "").lower() or None,
            event_id=get("shopify-event-id"),
            webhook_id=get("shopify-webhook-id"),
            triggered_at=get("shopify-triggered-at"),
            kept={name: v for name in KEPT_HEADERS if (v := get(name)) is not None},
        )

    def delivery_id(self, raw: bytes) -> str:
        """Dedup identity: the event id, else the webhook id, else shop+topic+body hash."""
        if self.event_id:
            return self.event_id
        if self.webhook_id:
            return self.webhook_id
        return derived_id("evt", self.shop_domain or "", self.topic or "", body_sha256(raw))


def sign(secret: str, raw: bytes) -> str:
    """The signature Shopify sends for `raw` under `secret`."""
    return base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()


def verify(raw: bytes, signature: str | None, secrets: tuple[str, ...]) -> bool:
    """True if `signature` is a valid HMAC of `raw` under any of `secrets` (rotation).

    Compares decoded digests in constant time; tolerates a trailing newline in the base64 text
    (Ruby's `Base64.encode64` adds one). Every secret is tried, so timing does not reveal which.
    """
    if not signature:
        return False
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    ok = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).digest()
        ok |= hmac.compare_digest(expected, given)
    return ok


class UnreadableBody(ValueError):
    """An authenticated body that cannot be parsed for its topic."""


def parse(topic: str, raw: bytes) -> BaseModel:
    """The typed body for `topic`; `UnreadableBody` with the reason otherwise."""
    try:
        return parse_shopify_body(topic, raw)
    except orjson.JSONDecodeError as exc:
        raise UnreadableBody(f"invalid JSON: {exc}") from exc
    except (ValueError, ValidationError) as exc:
        raise UnreadableBody(_short_reason(exc)) from exc


def event_facts(body: BaseModel, received_at: datetime) -> tuple[datetime, str | None]:
    """(event time, ordered entity id) of a parsed body.

    Orders: the last change (`updated_at`), else processing/creation time, keyed by order id;
    refunds are keyed by their order so an order's events share a key; bodies without a
    timestamp (GDPR, shop) use the receive time.
    """
    if isinstance(body, ShopifyOrder):
        at = body.updated_at or body.processed_at or body.created_at
        return at or received_at, str(body.id)
    if isinstance(body, ShopifyRefund):
        return body.processed_at or body.created_at or received_at, str(body.order_id)
    if isinstance(body, ShopifyOrderEdited):
        edit = body.order_edit
        return edit.created_at or received_at, str(edit.order_id)
    if isinstance(body, ShopifyCustomer):
        return body.updated_at or body.created_at or received_at, str(body.id)
    return received_at, None


def build_envelope(
    raw: bytes, headers: ShopifyHeaders, body: BaseModel, tenant_id: str, received_at: datetime
) -> EventEnvelope:
    occurred_at, entity_id = event_facts(body, received_at)
    return EventEnvelope.wrap(
        raw,
        event_id=headers.delivery_id(raw),
        source=Source.SHOPIFY,
        kind=headers.topic or "unknown",
        tenant_id=tenant_id,
        shop=headers.shop_domain,
        entity_id=entity_id,
        occurred_at=occurred_at,
        received_at=received_at,
        headers=headers.kept,
    )


def _short_reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return f"{exc.error_count()} validation error(s); first at {where}: {first['msg']}"
    return str(exc)[:300]
