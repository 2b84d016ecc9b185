"""Shared by the dataflow tests that use the real servers: a registered tenant, per-test
topics, producing envelopes, and reading back ledger and ClickHouse totals."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest
from confluent_kafka import Producer

from dataflows.sinks.clickhouse import client_for
from schemas.events.envelope import EventEnvelope
from schemas.settings import Settings
from tests.dataflows.builders import Tenant, new_tenant, seed_tenant
from tests.fixtures.kafka import TopicFactory


@pytest.fixture
def tenant(stack_settings: Settings) -> Tenant:
    """A tenant with one program (10% base, 5% level-1 override), three agents and a coupon."""
    t = new_tenant()
    seed_tenant(stack_settings, t)
    return t


@dataclass(frozen=True)
class Topics:
    clicks: str
    orders: str
    refunds: str
    deadletter: str

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.clicks, self.orders, self.refunds)


@pytest.fixture
def topics(kafka_topic_factory: TopicFactory) -> Topics:
    return Topics(
        kafka_topic_factory("clicks", partitions=2),
        kafka_topic_factory("orders", partitions=2),
        kafka_topic_factory("refunds", partitions=2),
        kafka_topic_factory("deadletter", partitions=1),
    )


def produce(settings: Settings, items: Iterable[tuple[str, EventEnvelope | bytes]]) -> None:
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "log_level": 0}
    )
    for topic, item in items:
        if isinstance(item, bytes):
            producer.produce(topic, value=item)
        else:
            producer.produce(topic, key=item.key(), value=item.to_bytes())
    assert producer.flush(15) == 0


def ledger_totals(settings: Settings, tenant_id: str) -> dict[str, Decimal]:
    with psycopg.connect(settings.postgres_url) as conn:
        rows = conn.execute(
            "SELECT agent_id, sum(amount), count(*) FROM ledger_entries WHERE tenant_id = %s"
            " GROUP BY agent_id",
            (tenant_id,),
        ).fetchall()
    return {agent: total for agent, total, _ in rows} | {"#rows": Decimal(sum(n for *_, n in rows))}


def clickhouse_totals(settings: Settings, tenant_id: str) -> dict[str, object]:
    client = client_for(settings)
    try:
        params = {"t": tenant_id}
        commission = client.query(
            "SELECT agent_id, sum(amount), count() FROM commission_events FINAL"
            " WHERE tenant_id = {t:String} GROUP BY agent_id ORDER BY agent_id",
            parameters=params,
        ).result_rows
        conversions = client.query(
            "SELECT order_id, rule, agent_id, revenue FROM conversions FINAL"
            " WHERE tenant_id = {t:String} ORDER BY order_id",
            parameters=params,
        ).result_rows
        counts = {
            table: client.query(
                f"SELECT count() FROM {table} FINAL WHERE tenant_id = {{t:String}}",
                parameters=params,
            ).result_rows[0][0]
            for table in ("raw_events", "clicks")
        }
    finally:
        client.close()
    return {"commission": commission, "conversions": conversions, **counts}
