"""Shopify catalog webhooks → collection membership changes for PostgreSQL (`shop_collections`).

What each topic says (Shopify's documented bodies):
- `collections/create|update`: the collection exists, with its title. Its products only when the
  body carries `collects` (the custom-collection shape of the Admin API); otherwise the known
  membership is kept (a new collection's stays unknown until the backfill API gives it).
- `collections/delete` (`{"id": …}`): the collection and its membership are gone.
- `products/create|update`: archived only; a product body names no collection.

Changes are idempotent and order-independent (`dataflows.sinks.catalog`): by source time
(the collection's `updated_at`, else the delivery's time) the newest title and the newest
products win, and a delete is final for webhooks (Shopify never reuses a collection id). The
dataflow only writes them (the live flow; replays rewrite no configuration); the attribution
state reads membership from the configuration snapshot, like every other setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schemas.events.envelope import Source
from schemas.events.shopify import ShopifyCollection, parse_shopify_body

COLLECTION_TOPICS = frozenset({"collections/create", "collections/update", "collections/delete"})


@dataclass(frozen=True, slots=True)
class CollectionChange:
    tenant_id: str
    shop: str
    collection_id: str
    changed_at: datetime
    deleted: bool = False
    title: str | None = None
    product_ids: tuple[str, ...] | None = None  # None: the change says nothing about products


class Envelope(Protocol):
    """What is read of an envelope (`EventEnvelope` or the dataflow's msgspec decoding)."""

    @property
    def source(self) -> Source: ...
    @property
    def kind(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def shop(self) -> str | None: ...
    @property
    def occurred_at(self) -> datetime: ...
    def raw_body(self) -> bytes: ...


def is_collection_webhook(envelope: Envelope) -> bool:
    return envelope.source == Source.SHOPIFY and envelope.kind in COLLECTION_TOPICS


def collection_change(envelope: Envelope) -> CollectionChange | None:
    """The membership change a collection webhook makes; `None` for another event or one
    without a shop. `ValueError` (incl. pydantic's) for a body that is not a collection."""
    if not is_collection_webhook(envelope) or not envelope.shop:
        return None
    body = parse_shopify_body(envelope.kind, envelope.raw_body())
    assert isinstance(body, ShopifyCollection)
    deleted = envelope.kind == "collections/delete"
    products = None
    if body.collects is not None and not deleted:
        products = tuple(sorted({str(c.product_id) for c in body.collects}, key=_numeric))
    return CollectionChange(
        tenant_id=envelope.tenant_id,
        shop=envelope.shop,
        collection_id=str(body.id),
        changed_at=body.updated_at or envelope.occurred_at,
        deleted=deleted,
        title=body.title,
        product_ids=products,
    )


def _numeric(product_id: str) -> tuple[int, str]:
    return len(product_id), product_id
