"""Click shards: the keys below the tenant (`attribution.routing`, `stages.clicks`,
`stages.clock`). Routing is exact (every candidate an order can have is in a shard it asks),
the flow decides as the tenant-keyed logic does, over one worker or two, and a tenant's state
written before the shards keeps serving its clicks."""

from __future__ import annotations

import pickle
import re
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.attribution.events import Event, event_from_envelope, parse_envelope
from dataflows.attribution.flow import Batching, attribution_steps
from dataflows.attribution.local import builder
from dataflows.attribution.messages import Decided
from dataflows.attribution.routing import (
    Found,
    Held,
    Lookup,
    VisitorCopy,
    id_shard,
    route,
    shard_key,
    visitor_shard,
)
from dataflows.config import StaticConfig
from dataflows.stages.base import Tuning
from dataflows.stages.clicks import ClickShard, ShardState, shard_builder
from dataflows.stages.clock import TenantClocks
from dataflows.stages.tenant import tenant_builder
from schemas.events.envelope import EventEnvelope
from schemas.ids import click_id_for_visitor
from schemas.ledger import AttributionRule, CommissionAccrual
from tests.dataflows.builders import T0, click, click_id, days, kind_of, order, refund, snapshot

TENANT = "t_shards"
WALL_MS = 1_800_000_000_000


def _event(envelope: EventEnvelope) -> Event:
    raw = envelope.to_bytes()
    event = event_from_envelope(parse_envelope(raw), raw)
    assert event is not None
    return event


def _legacy_id_elsewhere(visitor: str) -> str:
    """A click id (as minted before the shards) whose shard is not its visitor's."""
    n = 0
    while id_shard(cid := click_id(f"{visitor}-{n}")) == visitor_shard(visitor):
        n += 1
    return cid


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=60))
def test_a_minted_click_id_lives_in_its_visitors_shard(visitor: str) -> None:
    cid = click_id_for_visitor(visitor)
    assert re.fullmatch(r"clk_[0-9a-f]{32}", cid)  # the click contract's form, unchanged
    assert id_shard(cid) == visitor_shard(visitor)


def test_a_click_goes_to_its_ids_shard_and_a_copy_to_its_visitors_when_they_differ() -> None:
    minted = _event(click(TENANT, click_id_for_visitor("v1"), visitor="v1"))
    assert route(minted) == [(shard_key(TENANT, visitor_shard("v1")), minted)]

    legacy_id = _legacy_id_elsewhere("v1")
    legacy = _event(click(TENANT, legacy_id, visitor="v1"))
    assert route(legacy) == [
        (shard_key(TENANT, id_shard(legacy_id)), legacy),
        (shard_key(TENANT, visitor_shard("v1")), VisitorCopy(legacy)),
    ]
    no_visitor = _event(click(TENANT, legacy_id))
    assert route(no_visitor) == [(shard_key(TENANT, id_shard(legacy_id)), no_visitor)]


def test_an_order_asks_the_shards_of_its_cited_clicks_and_of_its_visitor() -> None:
    cited = _legacy_id_elsewhere("v7")
    event = _event(order(TENANT, 1001, at=T0, cites=cited, visitor="v7"))
    items = route(event)
    shards = tuple(sorted({id_shard(cited), visitor_shard("v7")}))
    assert [key for key, _ in items] == [shard_key(TENANT, s) for s in shards]
    lookups = [item for _, item in items]
    assert all(isinstance(item, Lookup) and item.shards == shards for item in lookups)
    by_shard = {item.shard: item for item in lookups if isinstance(item, Lookup)}
    assert by_shard[id_shard(cited)].click_ids == (cited,)
    assert by_shard[id_shard(cited)].visitor is None
    assert by_shard[visitor_shard("v7")].visitor == "v7"
    # Nothing to look up: straight to the tenant; refunds and ERP events always.
    bare = _event(order(TENANT, 1002, at=T0, coupon="BOB10"))
    assert route(bare) == [(TENANT, bare)]


def _shard(clocks: TenantClocks, tuning: Tuning, now: list[int]) -> ClickShard:
    config = StaticConfig(snapshot(TENANT))
    return shard_builder(config, tuning, clocks, lambda: now[0])(None)


def _lookup(event: Event) -> Lookup:
    (_, item), *_ = route(event)
    assert isinstance(item, Lookup)
    return item


def test_a_shard_holds_an_order_until_its_cited_click_and_tells_the_tenant() -> None:
    tuning, now = Tuning(), [WALL_MS]
    clocks = TenantClocks(tuning.allowed_lateness_ms, tuning.future_skew_ms)
    shard = _shard(clocks, tuning, now)
    cid = click_id_for_visitor("v1")
    created = clocks.stamp(_event(order(TENANT, 1001, at=T0 + days(1), cites=cid)))
    updated = clocks.stamp(
        _event(order(TENANT, 1001, at=T0 + days(1), cites=cid, topic="orders/updated"))
    )
    (held,) = shard.on_item(_lookup(created))[0]
    assert isinstance(held, Held)
    assert held.event.event_id == created.event_id
    assert list(shard.on_item(_lookup(created))[0]) == []  # a redelivery while held
    # The order waits already: its later event is answered at once (the tenant keeps it as a
    # follow-up until the held one is answered).
    (answer,) = shard.on_item(_lookup(updated))[0]
    assert isinstance(answer, Found)
    assert answer.event.event_id == updated.event_id
    assert shard.notify_at() is not None

    out, discard = shard.on_item(clocks.stamp(_event(click(TENANT, cid, at=T0, visitor="v1"))))
    (found,) = list(out)
    assert isinstance(found, Found)
    assert found.event.event_id == created.event_id
    assert [c for c, _ in found.cited] == [cid]
    assert not discard
    assert shard.notify_at() is None


def test_the_tenant_applies_events_that_came_while_a_shard_held_the_order_in_event_time() -> None:
    """Refunds and edits that reach the tenant while a shard holds the order's first event are
    follow-ups: applied in event time once the order is decided, whichever path they took."""
    cid = click_id_for_visitor("v1")
    created = order(TENANT, 1001, at=T0 + days(1), cites=cid, lines=[(1, 2, "50.00")])
    edited = order(TENANT, 1001, at=T0 + days(2), cites=cid, lines=[(1, 2, "80.00")],
                   topic="orders/updated")  # fmt: skip
    refunded = refund(TENANT, 1001, 7, [(1, 1)], at=T0 + days(3))
    late_click = click(TENANT, cid, at=T0, visitor="v1")
    # The refund (t+3) reaches the tenant directly, before the edit (t+2) that went through
    # the shard; the click comes last.
    arrival = [created, refunded, edited, late_click]
    in_time = [late_click, created, edited, refunded]
    assert _ledger(_run(arrival)) == _ledger(_run(in_time))


def test_a_held_order_is_released_without_its_click_after_the_wait() -> None:
    tuning, now = Tuning(order_wait_wall_ms=60_000), [WALL_MS]
    clocks = TenantClocks(tuning.allowed_lateness_ms, tuning.future_skew_ms)
    shard = _shard(clocks, tuning, now)
    held = clocks.stamp(_event(order(TENANT, 1001, at=T0, cites=click_id_for_visitor("v1"))))
    shard.on_item(_lookup(held))
    assert list(shard.on_notify()[0]) == []
    now[0] += 60_000
    (found,) = shard.on_notify()[0]
    assert isinstance(found, Found)
    assert found.cited == ()
    assert found.visited == ()
    assert shard.state.is_empty()


def test_a_shard_reports_a_late_click_once_and_its_copy_quietly() -> None:
    tuning = Tuning(allowed_lateness_ms=days(7) // timedelta(milliseconds=1))
    clocks, now = TenantClocks(tuning.allowed_lateness_ms, tuning.future_skew_ms), [WALL_MS]
    shard = _shard(clocks, tuning, now)
    clocks.stamp(_event(click(TENANT, click_id(1), at=T0 + days(30))))
    late = clocks.stamp(_event(click(TENANT, click_id(2), at=T0, visitor="v1")))
    assert late.late
    (letter,) = shard.on_item(late)[0]
    assert letter.reason.startswith("late")
    assert list(shard.on_item(VisitorCopy(late))[0]) == []
    assert click_id(2) not in shard.state.clicks


def _run(envelopes: list[EventEnvelope], *, workers: int = 1) -> list[object]:
    flow = Dataflow("shards")
    values = [e.to_bytes() for e in envelopes]
    stream = op.input("in", flow, TestingSource(values, batch_size=100))
    outputs = attribution_steps(
        stream, StaticConfig(snapshot(TENANT, coupons={"BOB10": "agt_bob"})),
        batching=Batching(timeout=timedelta(seconds=30), max_size=100_000),
        wall_ms=lambda: WALL_MS,
    )  # fmt: skip
    rows: list[tuple[str, list[tuple[object, ...]]]] = []
    ledger: list[tuple[str, list[object]]] = []
    op.output("rows_out", outputs.rows, TestingSink(rows))
    op.output("ledger_out", outputs.ledger, TestingSink(ledger))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return [item for _, batch in ledger for item in batch]


def _direct(envelopes: list[EventEnvelope]) -> list[object]:
    """The same events through the tenant's logic alone, in input order (one key, its own
    click store): what the tenant-keyed flow did before the shards."""
    logic = builder(StaticConfig(snapshot(TENANT, coupons={"BOB10": "agt_bob"})), None,
                    lambda: WALL_MS)(None)  # fmt: skip
    out: list[object] = []
    for envelope in envelopes:
        emitted, _ = logic.on_item(_event(envelope))
        out.extend(value for value in emitted if kind_of(value) == "entry")
    emitted, _ = logic.on_eof()
    out.extend(value for value in emitted if kind_of(value) == "entry")
    return out


def _traffic() -> list[EventEnvelope]:
    """Visitors whose clicks live in several shards (minted and legacy ids), orders citing
    clicks, orders found by visitor only, a coupon, and an order citing a click that comes
    after it."""
    events: list[EventEnvelope] = []
    agents = ["agt_ana", "agt_bob"]
    for v in range(12):
        visitor = f"visitor-{v}"
        first = click_id_for_visitor(visitor) if v % 2 else _legacy_id_elsewhere(visitor)
        second = _legacy_id_elsewhere(visitor + "x")
        at = T0 + days(v % 3)
        agent = agents[v % 2]
        events.append(click(TENANT, first, at=at, agent=agent, visitor=visitor))
        events.append(click(TENANT, second, at=at + days(1), agent=agents[1 - v % 2],
                            visitor=visitor))  # fmt: skip
        if v % 3 == 0:
            events.append(order(TENANT, 2000 + v, at=at + days(2), cites=first, visitor=visitor))
        elif v % 3 == 1:
            events.append(order(TENANT, 2000 + v, at=at + days(2), visitor=visitor))
        else:
            events.append(order(TENANT, 2000 + v, at=at + days(2), cites=second))
    late_click = click_id_for_visitor("visitor-late")
    events.append(order(TENANT, 3001, at=T0 + days(4), cites=late_click))
    events.append(click(TENANT, late_click, at=T0 + days(3), agent="agt_bob"))
    events.append(order(TENANT, 3002, at=T0 + days(4), coupon="BOB10"))
    return events


def _ledger(items: list[object]) -> dict[str, Decimal]:
    return {e.entry_id: e.amount for e in items if isinstance(e, CommissionAccrual)}


def test_the_sharded_flow_books_what_the_tenant_keyed_logic_books() -> None:
    traffic = _traffic()
    expected = _ledger(_direct(traffic))
    assert len(expected) > 10  # most orders are credited
    assert _ledger(_run(traffic)) == expected


def test_two_workers_book_what_one_books() -> None:
    traffic = _traffic()
    assert _ledger(_run(traffic, workers=2)) == _ledger(_run(traffic))


def test_a_tenant_resumed_from_before_the_shards_still_credits_its_own_clicks() -> None:
    config = StaticConfig(snapshot(TENANT))
    old = builder(config, None, lambda: WALL_MS)(None)
    old.on_item(_event(click(TENANT, click_id(1), at=T0, visitor="v1")))
    written = pickle.dumps(old.state)  # a snapshot of the tenant-keyed flow, with its clicks

    clocks = TenantClocks(Tuning().allowed_lateness_ms, Tuning().future_skew_ms)
    resumed = tenant_builder(config, None, lambda: WALL_MS, clocks)(written)
    # The order as the sharded flow delivers it: its shards found nothing (the click is in the
    # tenant's own store, from before).
    event = replace(_event(order(TENANT, 1001, at=T0 + days(1), visitor="v1")), found=())
    out, _ = resumed.on_item(event)
    (decided,) = [value for value in out if isinstance(value, Decided)]
    assert decided.decision.rule is AttributionRule.LAST_CLICK
    assert decided.decision.click_id == click_id(1)


def test_a_shard_snapshot_resumes_with_the_tenants_marks() -> None:
    tuning, now = Tuning(), [WALL_MS]
    clocks = TenantClocks(tuning.allowed_lateness_ms, tuning.future_skew_ms)
    shard = _shard(clocks, tuning, now)
    shard.on_item(clocks.stamp(_event(click(TENANT, click_id(1), at=T0 + days(30)))))
    written = shard.snapshot()
    assert isinstance(pickle.loads(written), ShardState)

    fresh = TenantClocks(tuning.allowed_lateness_ms, tuning.future_skew_ms)
    shard_builder(StaticConfig(snapshot(TENANT)), tuning, fresh)(written)
    assert fresh.stamp(_event(click(TENANT, click_id(2), at=T0))).late
