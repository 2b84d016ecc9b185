"""Shared by the dataflow tests that use the real servers: a registered tenant, per-test
topics, producing envelopes, and reading back ledger and ClickHouse totals."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest
from confluent_kafka import Producer
from psycopg.types.json import Jsonb

from dataflows.sinks.clickhouse import client_for
from ingest.cli import ensure_tenant
from schemas.events.envelope import EventEnvelope
from schemas.settings import Settings
from tests.dataflows.builders import rules_body
from tests.fixtures.kafka import TopicFactory


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    program: str
    ana: str
    bob: str
    boss: str
    coupon: str


@pytest.fixture
def tenant(stack_settings: Settings) -> Tenant:
    """A tenant with one program (10% base, 5% level-1 override), three agents and a coupon."""
    s = uuid.uuid4().hex[:8]
    t = Tenant(f"t_{s}", f"prg_{s}", f"agt_ana_{s}", f"agt_bob_{s}", f"agt_boss_{s}", f"BOB{s}")
    with psycopg.connect(stack_settings.postgres_url) as conn:
        ensure_tenant(conn, t.tenant_id)
        conn.execute(
            "INSERT INTO programs (id, tenant_id, name, landing_url) VALUES (%s, %s, 'P', 'x')",
            (t.program, t.tenant_id),
        )
        for agent, parent, email in ((t.boss, None, None), (t.ana, t.boss, "ana@x.test"),
                                     (t.bob, None, None)):  # fmt: skip
            conn.execute(
                "INSERT INTO agents (id, tenant_id, name, parent_agent_id, email)"
                " VALUES (%s, %s, %s, %s, %s)",
                (agent, t.tenant_id, agent, parent, email),
            )
        conn.execute(
            "INSERT INTO coupon_codes (tenant_id, code, program_id, agent_id)"
            " VALUES (%s, %s, %s, %s)",
            (t.tenant_id, t.coupon.lower(), t.program, t.bob),
        )
        body = rules_body(t.program, overrides=["5"])
        conn.execute(
            "INSERT INTO commission_rules (id, version, tenant_id, program_id, body)"
            " VALUES (%s, 1, %s, %s, %s)",
            (body["rule_id"], t.tenant_id, t.program, Jsonb(body)),
        )
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
