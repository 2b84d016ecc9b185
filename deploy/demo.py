"""Synthetic traffic for the demo: referral clicks and Shopify-shaped orders for one tenant.

Deterministic for a given seed, so a demo run is reproducible. Events are wrapped in the same
`EventEnvelope` the ingress produces and written to the Kafka contract's topics.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from schemas.events.click import ClickEvent
from schemas.events.envelope import EventEnvelope, Source
from schemas.ids import derived_id, random_id
from schemas.topics import Topic

AGENTS = ("agent-ana", "agent-bo", "agent-chen", "agent-dara")
PRODUCTS = (("SKU-CHAIR", Decimal("249.00")), ("SKU-DESK", Decimal("899.00")),
            ("SKU-LAMP", Decimal("59.90")), ("SKU-MAT", Decimal("34.50")))  # fmt: skip


@dataclass(frozen=True, slots=True)
class DemoEvent:
    topic: Topic
    envelope: EventEnvelope


def synthetic_traffic(
    *, tenant_id: str, shop: str, clicks: int, orders: int, start: datetime, seed: int = 7
) -> Iterator[DemoEvent]:
    """`clicks` clicks spread over a day, then `orders` orders, some citing a click or a coupon."""
    rng = random.Random(seed)
    click_ids: list[str] = []
    for n in range(clicks):
        agent = rng.choice(AGENTS)
        at = start + timedelta(seconds=rng.randrange(86_400))
        click_id = derived_id("clk", tenant_id, "demo", n)
        click_ids.append(click_id)
        click = ClickEvent(
            click_id=click_id,
            tenant_id=tenant_id,
            link_code=f"{agent}-spring",
            agent_id=agent,
            shop=shop,
            occurred_at=at,
            visitor_id=f"v{rng.randrange(clicks * 2)}",
            landing_url=f"https://{shop}/collections/office",
            user_agent="Mozilla/5.0 (demo)",
        )
        envelope = _wrap(
            click.model_dump(mode="json"), click_id, Source.CLICK, "click", tenant_id, shop,
            click_id, at,
        )  # fmt: skip
        yield DemoEvent(Topic.CLICKS, envelope)
    for n in range(orders):
        order_id = 5_000_000 + n
        at = start + timedelta(days=1, seconds=rng.randrange(86_400))
        sku, price = rng.choice(PRODUCTS)
        qty = rng.randint(1, 5)
        total = price * qty
        coupon = (
            [{"code": f"{rng.choice(AGENTS).upper()}10", "amount": "0.00", "type": "percentage"}]
            if rng.random() < 0.3
            else []
        )
        landing = f"/?rsclid={rng.choice(click_ids)}" if click_ids and rng.random() < 0.5 else None
        body = {
            "id": order_id,
            "name": f"#{order_id}",
            "email": f"buyer{n}@example.com",
            "created_at": at.isoformat(),
            "processed_at": at.isoformat(),
            "currency": "USD",
            "total_price": str(total),
            "subtotal_price": str(total),
            "total_discounts": "0.00",
            "total_tax": "0.00",
            "financial_status": "paid",
            "discount_codes": coupon,
            "landing_site": landing,
            "line_items": [_line_item(order_id * 10, sku, qty, price)],
        }
        event_id = derived_id("evt", tenant_id, "orders/create", order_id)
        envelope = _wrap(
            body, event_id, Source.SHOPIFY, "orders/create", tenant_id, shop, str(order_id), at
        )
        yield DemoEvent(Topic.ORDERS, envelope)


def _line_item(line_id: int, sku: str, qty: int, price: Decimal) -> dict[str, object]:
    return {
        "id": line_id,
        "sku": sku,
        "title": sku,
        "quantity": qty,
        "price": str(price),
        "total_discount": "0.00",
    }


def _wrap(
    body: dict[str, object], event_id: str, source: Source, kind: str, tenant_id: str,
    shop: str, entity_id: str, at: datetime,
) -> EventEnvelope:  # fmt: skip
    return EventEnvelope.wrap(
        orjson.dumps(body),
        event_id=event_id,
        source=source,
        kind=kind,
        tenant_id=tenant_id,
        shop=shop,
        entity_id=entity_id,
        occurred_at=at,
        received_at=datetime.now(UTC),
    )


def produce(bootstrap: str, events: list[DemoEvent], timeout: float = 30) -> Counter[str]:
    """Write events with the ingress's producer guarantees; returns acknowledged counts by topic."""
    acked: Counter[str] = Counter()
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked[msg.topic()] += 1  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "compression.type": "lz4",
                         "linger.ms": 5, "log_level": 0})  # fmt: skip
    for event in events:
        producer.produce(event.topic, event.envelope.to_bytes(), key=event.envelope.key(),
                         on_delivery=on_delivery)  # fmt: skip
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise RuntimeError(f"{remaining} undelivered, errors: {errors[:3]}")
    return acked


def count_topic(bootstrap: str, topic: str, timeout: float = 20) -> int:
    """How many messages `topic` holds, read from the beginning to the end of every partition."""
    return len(read_to_end(bootstrap, topic, timeout))


def read_to_end(bootstrap: str, topic: str, timeout: float = 20) -> list[Message]:
    """Every message of `topic`, read from the beginning to the end of every partition.

    (Reads to EOF rather than trusting high watermarks, which the local broker reports wrong.)
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": random_id("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "session.timeout.ms": 6000,
            "log_level": 0,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        partitions = set(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_eof: set[int] = set()
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while at_eof != partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition() or 0)
                    continue
                raise RuntimeError(str(error))
            messages.append(msg)
        if at_eof != partitions:
            raise TimeoutError(f"{topic}: end of partitions {partitions - at_eof} not reached")
        return messages
    finally:
        consumer.close()
