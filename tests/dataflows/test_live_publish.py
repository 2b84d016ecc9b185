"""Live fan-out from the ClickHouse sink: what the dataflow writes is published on the tenant's
Redis channel, and a Redis outage never stops the dataflow (real Kafka, ClickHouse, PostgreSQL
and Redis; the outage is a Redis URL nobody serves)."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import redis

from dataflows.sinks.clickhouse import COLUMNS, conversion_row, entry_row
from dataflows.sinks.live import LivePublisher, live_batches
from deploy.stack import free_port
from schemas.ledger import (
    AttributedConversion,
    AttributionRule,
    CommissionAccrual,
    EntryKind,
)
from schemas.live import LiveBatch, live_channel
from schemas.settings import Settings
from tests.dataflows.builders import T0
from tests.dataflows.conftest import Tenant, Topics, clickhouse_totals, ledger_totals, produce
from tests.dataflows.test_pipeline import run_bounded, scenario

WRITTEN = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)


def conversion(tenant: str, n: int, agent: str | None = "agt_a") -> AttributedConversion:
    return AttributedConversion(
        conversion_id=f"cv_{n}", tenant_id=tenant, shop="s.myshopify.com", order_id=str(n),
        order_name=f"#{n}", occurred_at=T0, attributed_at=T0, rule=AttributionRule.COUPON,
        agent_id=agent, program_id="prg", currency="EUR", revenue=Decimal("12.34"),
        source_event_id=f"ev_{n}",
    )  # fmt: skip


def entry(tenant: str, n: int, amount: str) -> CommissionAccrual:
    return CommissionAccrual(
        entry_id=f"le_{n}", tenant_id=tenant, agent_id="agt_a", program_id="prg",
        conversion_id=f"cv_{n}", order_id=str(n), kind=EntryKind.ACCRUAL,
        amount=Decimal(amount), currency="EUR", occurred_at=T0, source_event_id=f"ev_{n}",
    )  # fmt: skip


def test_batches_group_rows_per_tenant_and_keep_money_exact() -> None:
    per_table = {
        "conversions": [conversion_row(conversion("t1", 1)), conversion_row(conversion("t2", 2))],
        "commission_events": [entry_row(entry("t1", 1, "1.23"))],
        "clicks": [("ignored",)],
    }
    batches = live_batches(per_table, COLUMNS, WRITTEN)
    assert [b.tenant_id for b in batches] == ["t1", "t2"]
    t1 = batches[0]
    assert [(c.id, c.order, c.order_id, c.agent_id, c.revenue, c.rule) for c in t1.conversions] == [
        ("cv_1", "#1", "1", "agt_a", Decimal("12.34"), "coupon")
    ]
    # A batch published before `order_id` existed still parses (the dashboard then looks the
    # order up by its name).
    old = t1.to_bytes().replace(b',"order_id":"1"', b"")
    assert b"order_id" not in old
    assert LiveBatch.from_bytes(old).conversions[0].order_id is None
    assert [(e.id, e.amount, e.kind) for e in t1.entries] == [("le_1", Decimal("1.23"), "accrual")]
    # The wire form keeps decimals as strings and round-trips exactly.
    assert b'"revenue":"12.34"' in t1.to_bytes()
    assert LiveBatch.from_bytes(t1.to_bytes()) == t1


def test_large_writes_are_split_conversions_first() -> None:
    per_table = {
        "conversions": [conversion_row(conversion("t1", n)) for n in range(3)],
        "commission_events": [entry_row(entry("t1", n, "1")) for n in range(3)],
    }
    batches = live_batches(per_table, COLUMNS, WRITTEN, max_items=4)
    assert [(len(b.conversions), len(b.entries)) for b in batches] == [(3, 1), (0, 2)]


def test_published_batch_reaches_a_subscriber_of_the_tenant_channel(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(live_channel("t_pub"))
    publisher = LivePublisher(redis_url, COLUMNS)
    try:
        publisher.publish({"conversions": [conversion_row(conversion("t_pub", 7))]}, WRITTEN)
        (batch,) = collect(pubsub, seconds=1)
        assert (batch.tenant_id, [c.id for c in batch.conversions]) == ("t_pub", ["cv_7"])
        assert (publisher.published, publisher.failures, publisher.dropped) == (1, 0, 0)
    finally:
        publisher.close()
        pubsub.close()
        client.close()


def test_redis_down_is_counted_and_paused_never_raised() -> None:
    now = [100.0]
    publisher = LivePublisher(
        f"redis://127.0.0.1:{free_port()}/0", COLUMNS, backoff_seconds=5, clock=lambda: now[0]
    )
    rows = {"conversions": [conversion_row(conversion("t1", 1))]}
    publisher.publish(rows, WRITTEN)
    assert (publisher.published, publisher.failures, publisher.dropped) == (0, 1, 1)
    now[0] += 1  # inside the pause: not even tried
    publisher.publish(rows, WRITTEN)
    assert (publisher.failures, publisher.dropped) == (1, 2)
    now[0] += 5  # after the pause: tried again
    publisher.publish(rows, WRITTEN)
    assert (publisher.failures, publisher.dropped) == (2, 3)
    publisher.close()


def collect(pubsub: redis.client.PubSub, seconds: float) -> list[LiveBatch]:
    batches: list[LiveBatch] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message is not None:
            batches.append(LiveBatch.from_bytes(message["data"]))
    return batches


def test_dataflow_publishes_what_it_wrote_to_clickhouse(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t = tenant
    client = redis.Redis.from_url(stack_settings.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(live_channel(t.tenant_id))
    try:
        produce(stack_settings, scenario(t, topics))
        run_bounded(stack_settings, topics)
        batches = collect(pubsub, seconds=1)
    finally:
        pubsub.close()
        client.close()
    conversions = {c.order: (c.rule, c.agent_id) for b in batches for c in b.conversions}
    assert conversions == {
        "#1001": ("last_click", t.ana),
        "#1002": ("coupon", t.bob),
        "#1003": ("unattributed", None),
    }
    # The published entries add up to what the ledger holds, agent by agent.
    published: dict[str, Decimal] = defaultdict(Decimal)
    for entry_message in (e for b in batches for e in b.entries):
        published[entry_message.agent_id] += entry_message.amount
    ledger = ledger_totals(stack_settings, t.tenant_id)
    assert dict(published) == {k: v for k, v in ledger.items() if k != "#rows"}
    assert all(b.tenant_id == t.tenant_id for b in batches)


def test_dataflow_keeps_writing_when_redis_is_down(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t = tenant
    no_redis = stack_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    produce(stack_settings, scenario(t, topics))
    run_bounded(no_redis, topics)
    assert ledger_totals(stack_settings, t.tenant_id)["#rows"] == Decimal(5)
    orders = [row[0] for row in clickhouse_totals(stack_settings, t.tenant_id)["conversions"]]  # type: ignore[index]
    assert orders == ["1001", "1002", "1003"]
