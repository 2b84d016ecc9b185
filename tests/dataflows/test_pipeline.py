"""The dataflow through the real servers: envelopes produced to the session's Kafka broker,
the flow run bounded (`tail=False`), then the PostgreSQL ledger and ClickHouse totals checked;
re-processing the same input must not change them. Servers down → these tests fail."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import orjson
import psycopg
from bytewax.testing import run_main
from psycopg.types.json import Jsonb

from dataflows.attribution.flow import build
from deploy.demo import read_to_end
from schemas.events.envelope import EventEnvelope
from schemas.settings import Settings
from tests.dataflows.builders import (
    T0,
    click,
    click_id,
    days,
    order,
    order_body,
    refund,
    rules_body,
    shopify,
)
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


def rules_scenario(t: Tenant, topics: Topics) -> list[tuple[str, EventEnvelope | bytes]]:
    """The program is first-click, 30-day lookback, 12-month customer binding (set below)."""
    ana_1, bob_1, old, ana_2 = (click_id(f"{t.tenant_id}-r{n}") for n in range(4))
    c = t.tenant_id

    def clk(cid: str, agent: str, at: datetime) -> tuple[str, EventEnvelope]:
        return topics.clicks, click(c, cid, at=at, agent=agent, program=t.program)

    both = order_body(2001, at=T0 + days(2), cites=ana_1)
    both["note_attributes"].append({"name": "_rsclid", "value": bob_1})
    first = shopify(c, "orders/create", both, at=T0 + days(2), entity="2001", event_id=f"{c}-o")
    return [
        clk(ana_1, t.ana, T0), clk(bob_1, t.bob, T0 + days(1)),
        clk(old, t.bob, T0 - days(40)), clk(ana_2, t.ana, T0),
        clk(ana_1, t.ana, T0),  # a duplicate click delivery
        # First click: ana's click is older than bob's, both cited.
        (topics.orders, first),
        (topics.orders, first),  # a duplicate order delivery
        # Window expiry: the only cited click is 40 days old.
        (topics.orders, order(c, 2002, at=T0, cites=old)),
        # Customer binding: 2003 (bob's coupon) binds customer 77 to bob; 2004 cites ana's
        # click, bob keeps it. Bindings follow the order orders are decided in: one Kafka key
        # (one partition), and 2003 cites no click it could wait for.
        (topics.orders, order(c, 2003, at=T0 + days(1), coupon=t.coupon, customer=77)),
        (topics.orders, shopify(c, "orders/create", order_body(2004, at=T0 + days(5), cites=ana_1,
                                customer=77), at=T0 + days(5), entity="2003")),
        # Refund before its order (same key, same partition: read first), partial.
        (topics.orders, refund(c, 2005, 81, [(1, 1)], at=T0 + days(4))),
        (topics.orders, order(c, 2005, at=T0 + days(3), cites=ana_1, lines=[(1, 2, "100.00")])),
        # Cancellation nets the order to zero.
        (topics.orders, order(c, 2006, at=T0 + days(1), cites=ana_2)),
        (topics.orders, order(c, 2006, at=T0 + days(2), cites=ana_2, topic="orders/cancelled")),
    ]  # fmt: skip


def test_pipeline_applies_the_attribution_rules_through_the_real_servers(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t = tenant
    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute(
            "UPDATE programs SET attribution_model = 'first_click', binding_months = 12"
            " WHERE id = %s",
            (t.program,),
        )
    produce(stack_settings, rules_scenario(t, topics))
    run_bounded(stack_settings, topics)

    analytics = clickhouse_totals(stack_settings, t.tenant_id)
    assert [(o, r, a) for o, r, a, _ in analytics["conversions"]] == [  # type: ignore[attr-defined]
        ("2001", "first_click", t.ana),
        ("2002", "unattributed", None),
        ("2003", "coupon", t.bob),
        ("2004", "customer_binding", t.bob),
        ("2005", "first_click", t.ana),
        ("2006", "first_click", t.ana),
    ]
    # ana: 10.00 (2001) + 20.00 - 10.00 (2005, one of two units refunded) + 10.00 - 10.00
    # (2006, cancelled); boss 5 % of ana's; bob: 10.00 (2003) + 10.00 (2004, bound customer).
    assert ledger_totals(stack_settings, t.tenant_id) == {
        t.ana: Decimal("20.00"),
        t.boss: Decimal("1.00"),
        t.bob: Decimal("20.00"),
        "#rows": Decimal(12),
    }
    assert analytics["commission"] == [
        (t.ana, Decimal("20.00"), 5),
        (t.bob, Decimal("20.00"), 2),
        (t.boss, Decimal("1.00"), 5),
    ]


def test_an_eur_order_under_usd_rules_earns_the_converted_flat_amount(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t = tenant
    flat = rules_body(t.program, version=2, overrides=["5"])
    flat["base"] = {"kind": "flat_per_unit", "value": "5.00"}  # USD, the program's currency
    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO commission_rules (id, version, tenant_id, program_id, body)"
            " VALUES (%s, 2, %s, %s, %s)",
            (flat["rule_id"], t.tenant_id, t.program, Jsonb(flat)),
        )
        conn.execute(
            "INSERT INTO fx_rates (tenant_id, currency, rate, valid_from, created_by)"
            " VALUES (%s, 'EUR', 1.08, %s, 'test')",
            (t.tenant_id, T0 - days(30)),
        )
    c1, c2 = click_id(f"{t.tenant_id}-fx1"), click_id(f"{t.tenant_id}-fx2")
    produce(stack_settings, [
        (topics.clicks, click(t.tenant_id, c1, at=T0, agent=t.ana, program=t.program)),
        (topics.orders, order(t.tenant_id, 3001, at=T0 + days(1), cites=c1, currency="EUR",
                              lines=[(1, 2, "40.00")])),
        # No GBP rate: this one stays a dead letter.
        (topics.clicks, click(t.tenant_id, c2, at=T0, agent=t.ana, program=t.program)),
        (topics.orders, order(t.tenant_id, 3002, at=T0 + days(1), cites=c2, currency="GBP")),
    ])  # fmt: skip
    run_bounded(stack_settings, topics)

    # 2 units * 5.00 USD = 10.00 USD = 9.259… EUR → 9.26; boss 5 % of it → 0.46 (EUR).
    assert ledger_totals(stack_settings, t.tenant_id) == {
        t.ana: Decimal("9.26"),
        t.boss: Decimal("0.46"),
        "#rows": Decimal(2),
    }
    with psycopg.connect(stack_settings.postgres_url) as conn:
        currencies = conn.execute(
            "SELECT DISTINCT currency, fx_rate FROM ledger_entries WHERE tenant_id = %s",
            (t.tenant_id,),
        ).fetchall()
    assert currencies == [("EUR", Decimal("1.08"))]
    dead = read_to_end(stack_settings.kafka_bootstrap, topics.deadletter)
    reasons = [orjson.loads(m.value() or b"")["reason"] for m in dead]
    assert [r.split(":")[0] for r in reasons] == ["fx"]
    assert "no GBP rate" in reasons[0]


def test_a_terminated_agent_stops_earning_and_the_manager_above_gets_the_override(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t, c = tenant, tenant.tenant_id
    ana_coupon = f"ANA{c[-8:]}".upper()
    with psycopg.connect(stack_settings.postgres_url) as conn:
        # bob now reports to ana, who reports to boss; ana is terminated from T0.
        conn.execute("UPDATE agents SET parent_agent_id = %s WHERE id = %s", (t.ana, t.bob))
        conn.execute(
            "INSERT INTO coupon_codes (tenant_id, code, program_id, agent_id)"
            " VALUES (%s, %s, %s, %s)",
            (c, ana_coupon, t.program, t.ana),
        )
        conn.execute(
            "INSERT INTO agent_status_changes (tenant_id, agent_id, status, effective_at,"
            " recorded_by) VALUES (%s, %s, 'terminated', %s, 'test')",
            (c, t.ana, T0),
        )
        conn.execute("UPDATE agents SET status = 'terminated' WHERE id = %s", (t.ana,))
    ana_click, bob_click = click_id(f"{c}-s1"), click_id(f"{c}-s2")
    produce(stack_settings, [
        (topics.clicks, click(c, ana_click, at=T0 - days(1), agent=t.ana, program=t.program)),
        (topics.clicks, click(c, bob_click, at=T0, agent=t.bob, program=t.program)),
        # bob's coupon: bob earns, ana's override level goes to boss.
        (topics.orders, order(c, 4001, at=T0 + days(1), coupon=t.coupon)),
        # ana's click (made while active) on an order after the termination: nobody earns.
        (topics.orders, order(c, 4002, at=T0 + days(1), cites=ana_click)),
        # The same click on an order before the termination: ana earns (event time).
        (topics.orders, order(c, 4003, at=T0 - days(0.5), cites=ana_click)),
        # ana's coupon is rejected; bob's click is the next candidate.
        (topics.orders, order(c, 4004, at=T0 + days(1), coupon=ana_coupon, cites=bob_click)),
    ])  # fmt: skip
    run_bounded(stack_settings, topics)

    analytics = clickhouse_totals(stack_settings, c)
    assert [(o, r, a) for o, r, a, _ in analytics["conversions"]] == [  # type: ignore[attr-defined]
        ("4001", "coupon", t.bob),
        ("4002", "unattributed", None),
        ("4003", "last_click", t.ana),
        ("4004", "last_click", t.bob),
    ]
    # bob 10.00 + 10.00; ana 10.00 (4003 only); boss 5 % of each: level 1 of bob's orders
    # passes over the terminated ana.
    assert ledger_totals(stack_settings, c) == {
        t.bob: Decimal("20.00"),
        t.ana: Decimal("10.00"),
        t.boss: Decimal("1.50"),
        "#rows": Decimal(6),
    }
