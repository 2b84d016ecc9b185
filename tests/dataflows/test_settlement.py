"""Arrival-order-free ledgers (issue #14 item 4): an order's refunds and cancellation give the
same sum per (agent, currency, kind, entry month) in every arrival order, with duplicates, as
when they arrive in event-time order. Driven through the tenant state itself (the same code the
dataflow runs); the ledger's corrections are new entries, never edits."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import psycopg
from bytewax.testing import run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.attribution.events import Event, event_from_envelope
from dataflows.attribution.flow import build
from dataflows.attribution.local import builder
from dataflows.config import StaticConfig
from dataflows.stages.base import Tuning
from schemas.events.envelope import EventEnvelope
from schemas.ledger import CommissionAccrual
from schemas.settings import Settings
from tests.dataflows.builders import (
    T0,
    Tenant,
    click,
    click_id,
    days,
    new_tenant,
    order_body,
    refund,
    seed_tenant,
    shopify,
    snapshot,
)
from tests.dataflows.conftest import Topics, produce

TENANT = "t_settle"
ORDER = 1001
LINES = ((1, 3, "33.33"), (2, 2, "50.00"))
Sums = dict[tuple[str, str, str, str], Decimal]


def _event(envelope: EventEnvelope) -> Event:
    parsed = event_from_envelope(envelope, envelope.to_bytes())
    assert parsed is not None
    return parsed


def _cancel(at_days: float) -> EventEnvelope:
    """orders/cancelled as Shopify sends it: the order's own times, cancelled (and the
    webhook's event time) later."""
    body = order_body(ORDER, at=T0, lines=LINES, cites=click_id(1))
    at = T0 + days(at_days)
    body["updated_at"] = body["cancelled_at"] = at.isoformat()
    return shopify(TENANT, "orders/cancelled", body, at=at, entity=str(ORDER), event_id="ev-cancel")


def _order() -> EventEnvelope:
    body = order_body(ORDER, at=T0, lines=LINES, cites=click_id(1))
    return shopify(TENANT, "orders/create", body, at=T0, entity=str(ORDER), event_id="ev-order")


def _ledger(envelopes: list[EventEnvelope]) -> tuple[Sums, list[CommissionAccrual]]:
    tuning = Tuning(allowed_lateness_ms=400 * 86_400_000)  # nothing here is late on purpose
    logic = builder(StaticConfig(snapshot(TENANT)), tuning, lambda: 0)(None)
    entries: list[CommissionAccrual] = []
    for envelope in [click(TENANT, click_id(1), at=T0 - days(1), agent="agt_ana"), *envelopes]:
        out, _ = logic.on_item(_event(envelope))
        entries += [item for item in out if isinstance(item, CommissionAccrual)]
    out, _ = logic.on_eof()
    entries += [item for item in out if isinstance(item, CommissionAccrual)]
    assert len({e.entry_id for e in entries}) == len(entries)  # nothing booked twice
    sums: Sums = defaultdict(Decimal)
    for e in entries:
        sums[(e.agent_id, e.currency, e.kind.value, e.occurred_at.strftime("%Y-%m"))] += e.amount
    return {k: v for k, v in sums.items() if v != 0}, entries


def test_the_issues_example_books_the_same_months_in_both_arrival_orders() -> None:
    """Partial refund of one unit on 30 November, cancellation on 1 December."""
    the_order = _order()
    part = refund(TENANT, ORDER, 81, [(1, 1)], at=T0 + days(29), event_id="ev-r81")
    cancel = _cancel(30)
    in_order, _ = _ledger([the_order, part, cancel])
    late_refund, entries = _ledger([the_order, cancel, part])
    assert late_refund == in_order
    corrections = [e for e in entries if "correction" in e.reason]
    assert corrections, "the cancellation's reversal is corrected, not rewritten"
    assert all(e.occurred_at == T0 + days(30) for e in corrections)
    assert {k[3] for k in in_order} == {"2026-11", "2026-12"}
    assert sum(v for k, v in in_order.items() if k[0] == "agt_ana") == 0  # cancelled: nets to 0


FOLLOWUPS = st.lists(
    st.tuples(st.sampled_from([1, 2]), st.integers(1, 2), st.floats(0.5, 70)),
    min_size=1, max_size=3,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    followups=FOLLOWUPS,
    cancel_at=st.none() | st.floats(0.5, 70),
    data=st.data(),
)
def test_refunds_and_cancellation_in_any_arrival_order_with_duplicates(
    followups: list[tuple[int, int, float]], cancel_at: float | None, data: st.DataObject
) -> None:
    the_order = _order()
    events = [(0.0, the_order)]
    for n, (line, units, at) in enumerate(followups):
        events.append((at, refund(TENANT, ORDER, 80 + n, [(line, units)],
                                  at=T0 + days(at), event_id=f"ev-r{n}")))  # fmt: skip
    if cancel_at is not None:
        events.append((cancel_at, _cancel(cancel_at)))
    by_time = [e for _, e in sorted(events, key=lambda te: te[0])]
    want, _ = _ledger(by_time)

    arrival = data.draw(st.permutations(by_time))
    extra = data.draw(st.lists(st.sampled_from(by_time), max_size=3))
    for envelope in extra:  # re-deliveries, anywhere after a first delivery or before it
        arrival.insert(data.draw(st.integers(0, len(arrival))), envelope)
    got, _ = _ledger(arrival)
    assert got == want


def test_a_duplicate_cancellation_and_refund_add_nothing() -> None:
    the_order = _order()
    part = refund(TENANT, ORDER, 81, [(2, 1)], at=T0 + timedelta(days=40), event_id="ev-r81")
    cancel = _cancel(10)
    once, entries_once = _ledger([the_order, part, cancel])
    twice, entries_twice = _ledger([the_order, part, cancel, part, cancel, part])
    assert once == twice
    assert len(entries_once) == len(entries_twice)


def _month_sums(settings: Settings, t: Tenant) -> dict[tuple[str, str, str, str], Decimal]:
    roles = {t.ana: "ana", t.boss: "boss", t.bob: "bob"}
    with psycopg.connect(settings.postgres_url) as conn:
        rows = conn.execute(
            "SELECT agent_id, currency, kind, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM'),"
            " sum(amount) FROM ledger_entries WHERE tenant_id = %s GROUP BY 1, 2, 3, 4",
            (t.tenant_id,),
        ).fetchall()
    return {(roles[a], c, k, m): s for a, c, k, m, s in rows if s != 0}


def test_real_servers_book_the_same_months_when_the_cancellation_arrives_first(
    stack_settings: Settings, topics: Topics
) -> None:
    """Through Kafka, the dataflow and the PostgreSQL ledger, each delivery three times: one
    tenant gets refund then cancellation, the other cancellation then refund (same topic and
    key, so that is the order the flow reads them in)."""
    tenants = [new_tenant(), new_tenant()]
    items: list[tuple[str, EventEnvelope]] = []
    for n, t in enumerate(tenants):
        seed_tenant(stack_settings, t)
        # A coupon, not a click: the order is decided at once (a cited click read after it would
        # hold the order, and its follow-ups would wait and apply in event-time order anyway).
        body = order_body(ORDER, at=T0, lines=LINES, coupon=t.coupon)
        placed = shopify(t.tenant_id, "orders/create", body, at=T0, entity=str(ORDER),
                         event_id=f"{t.tenant_id}-o")  # fmt: skip
        part = refund(t.tenant_id, ORDER, 81, [(1, 1)], at=T0 + days(29),
                      event_id=f"{t.tenant_id}-r")  # fmt: skip
        cancelled = dict(body, updated_at=(T0 + days(30)).isoformat())
        cancel = shopify(t.tenant_id, "orders/cancelled", cancelled, at=T0 + days(30),
                         entity=str(ORDER), event_id=f"{t.tenant_id}-c")  # fmt: skip
        followups = [part, cancel] if n == 0 else [cancel, part]
        items += [(topics.orders, e) for e in (placed, *followups) for _ in range(3)]
    produce(stack_settings, items)
    run_main(build(stack_settings, tail=False, input_topics=topics.inputs,
                   deadletter_topic=topics.deadletter))  # fmt: skip

    in_order, late_refund = (_month_sums(stack_settings, t) for t in tenants)
    assert in_order == late_refund
    assert {m for *_, m in in_order} == {"2026-11", "2026-12"}
    with psycopg.connect(stack_settings.postgres_url) as conn:
        corrections = conn.execute(
            "SELECT count(*) FROM ledger_entries WHERE tenant_id = %s"
            " AND reason LIKE 'correction%%'",
            (tenants[1].tenant_id,),
        ).fetchone()
    assert corrections is not None
    assert corrections[0] > 0
