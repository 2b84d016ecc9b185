"""The Kafka contract: one topic per stream, and which stream each event kind goes to.

Message key = tenant + the entity that must stay ordered (order id, click id); value = an
`EventEnvelope` serialised with orjson.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Topic(StrEnum):
    CLICKS = "refstream.clicks"
    ORDERS = "refstream.orders"
    CUSTOMERS = "refstream.customers"
    REFUNDS = "refstream.refunds"
    ERP = "refstream.erp"
    GDPR = "refstream.gdpr"
    SHOPS = "refstream.shops"
    CONFIG = "refstream.config"
    DEADLETTER = "refstream.deadletter"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    topic: Topic
    purpose: str
    compacted: bool = False


TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.CLICKS, "referral link clicks and storefront pixel hits"),
    TopicSpec(Topic.ORDERS, "Shopify orders/* webhooks (create, updated, paid, edited, ...)"),
    TopicSpec(Topic.CUSTOMERS, "Shopify customers/create (customer binding to agents)"),
    TopicSpec(Topic.REFUNDS, "Shopify refunds/create webhooks"),
    TopicSpec(Topic.ERP, "Odoo sale.order and account.move notifications"),
    TopicSpec(Topic.GDPR, "Shopify mandatory compliance webhooks"),
    TopicSpec(
        Topic.SHOPS,
        "Shopify shop lifecycle (app/uninstalled) and catalog (collections/*, products/*)",
    ),
    TopicSpec(Topic.CONFIG, "rule and mapping changes published by the API", compacted=True),
    TopicSpec(Topic.DEADLETTER, "authenticated bodies that could not be parsed, with the reason"),
)

_SHOPIFY_TOPIC_STREAMS: dict[str, Topic] = {
    "orders/create": Topic.ORDERS,
    "orders/updated": Topic.ORDERS,
    "orders/paid": Topic.ORDERS,
    "orders/edited": Topic.ORDERS,
    "orders/cancelled": Topic.ORDERS,
    "orders/fulfilled": Topic.ORDERS,
    "refunds/create": Topic.REFUNDS,
    "customers/create": Topic.CUSTOMERS,
    "app/uninstalled": Topic.SHOPS,
    # The catalog: collection membership is shop configuration (dataflows.catalog).
    "collections/create": Topic.SHOPS,
    "collections/update": Topic.SHOPS,
    "collections/delete": Topic.SHOPS,
    "products/create": Topic.SHOPS,
    "products/update": Topic.SHOPS,
    "customers/data_request": Topic.GDPR,
    "customers/redact": Topic.GDPR,
    "shop/redact": Topic.GDPR,
}


def topic_for_shopify(shopify_topic: str) -> Topic:
    """The stream a Shopify webhook topic is written to; `KeyError` for topics we do not take."""
    return _SHOPIFY_TOPIC_STREAMS[shopify_topic]


def message_key(tenant_id: str, entity: str) -> bytes:
    """Kafka key: events of one tenant's entity land on one partition, in order."""
    return f"{tenant_id}:{entity}".encode()
