"""The dataflow through the real servers: envelopes produced to the session's Kafka broker,
the flow run bounded (`tail=False`), then the PostgreSQL ledger and ClickHouse totals checked;
re-processing the same input must not change them. Servers down → these tests fail."""

from __future__ import annotations

from decimal import Decimal

import orjson
from bytewax.testing import run_main

from dataflows.attribution.flow import build
from deploy.demo import read_to_end
from schemas.events.envelope import EventEnvelope
from schemas.settings import Settings
from tests.dataflows.builders import T0, click, click_id, days, order, refund
from tests.dataflows.conftest import Tenant, Topics, clickhouse_totals, ledger_totals, produce


def scenario(t: Tenant, topics: Topics) -> list[tuple[str, EventEnvelope | bytes]]:
    c1, c2 = click_id(f"{t.tenant_id}-1"), click_id(f"{t.tenant_id}-2")
    return [
        # Order 1001 arrives before its click (held), then a partial refund.
        (topics.orders, order(t.tenant_id, 1001, at=T0 + days(1), cites=c1,
                              lines=[(1, 2, "100.00")])),
        (topics.clicks, click(t.tenant_id, c1, at=T0, agent=t.ana, program=t.program)),
        (topics.refunds, refund(t.tenant_id, 1001, 71, [(1, 1)], at=T0 + days(2))),
        # Order 1002 cites ana's click but carries bob's coupon: the coupon wins.
        (topics.clicks, click(t.tenant_id, c2, at=T0, agent=t.ana, program=t.program)),
        (topics.orders, order(t.tenant_id, 1002, at=T0 + days(1), cites=c2, coupon=t.coupon)),
        # Unattributed order, and a message that is not an envelope.
        (topics.orders, order(t.tenant_id, 1003, at=T0 + days(1))),
        (topics.orders, b"garbage"),
    ]  # fmt: skip


def run_bounded(settings: Settings, topics: Topics) -> None:
    flow = build(
        settings, tail=False, input_topics=topics.inputs, deadletter_topic=topics.deadletter
    )
    run_main(flow)


def test_pipeline_writes_ledger_and_analytics_idempotently(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t = tenant
    produce(stack_settings, scenario(t, topics))
    run_bounded(stack_settings, topics)

    ledger = ledger_totals(stack_settings, t.tenant_id)
    # ana: 20.00 on 1001, half reversed; boss: 5% of it; bob: 10.00 on 1002 (coupon).
    assert ledger == {
        t.ana: Decimal("10.00"),
        t.boss: Decimal("0.50"),
        t.bob: Decimal("10.00"),
        "#rows": Decimal(5),
    }
    analytics = clickhouse_totals(stack_settings, t.tenant_id)
    assert analytics["commission"] == [
        (t.ana, Decimal("10.00"), 2),
        (t.bob, Decimal("10.00"), 1),
        (t.boss, Decimal("0.50"), 2),
    ]
    assert [(o, r, a) for o, r, a, _ in analytics["conversions"]] == [  # type: ignore[attr-defined]
        ("1001", "last_click", t.ana),
        ("1002", "coupon", t.bob),
        ("1003", "unattributed", None),
    ]
    assert (analytics["raw_events"], analytics["clicks"]) == (6, 2)
    dead = read_to_end(stack_settings.kafka_bootstrap, topics.deadletter)
    reasons = [orjson.loads(m.value() or b"")["reason"] for m in dead]
    assert len(reasons) == 1
    assert reasons[0].startswith("not an event envelope")

    # Re-processing the same input (a replay from the start) changes nothing.
    run_bounded(stack_settings, topics)
    assert ledger_totals(stack_settings, t.tenant_id) == ledger
    assert clickhouse_totals(stack_settings, t.tenant_id) == analytics
