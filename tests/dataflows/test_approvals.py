"""Holds in the tenant state machine: entries are approved when the program's hold period ends
(processing time) or when the ERP reports the order's invoice paid, whichever comes first."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta

from api.exceptions.letters import exception_row
from dataflows.attribution.events import event_from_envelope
from dataflows.attribution.local import LocalAttribution, builder
from dataflows.config import StaticConfig
from dataflows.stages.base import Output, Tuning, complete
from dataflows.stages.tenant import TenantState
from schemas.events.envelope import DeadLetter, EventEnvelope
from schemas.ledger import CommissionAccrual, EntryApproval, EntryKind
from tests.dataflows.builders import (
    T0,
    click,
    click_id,
    days,
    invoice,
    order,
    order_body,
    refund,
    sale_order,
    shopify,
    snapshot,
    tenant_keyed,
)

TENANT = "t_holds"
C1 = click_id("holds-1")


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now_ms = ms(now)

    def set(self, now: datetime) -> None:
        self.now_ms = ms(now)

    def __call__(self) -> int:
        return self.now_ms


def logic(clock: Clock, *, hold_days: int = 30, tuning: Tuning | None = None) -> LocalAttribution:
    config = StaticConfig(snapshot(TENANT, hold_days=hold_days))
    return builder(config, tuning, clock)(None)


def feed(state: LocalAttribution, *envelopes: EventEnvelope) -> list[Output]:
    out: list[Output] = []
    for envelope in envelopes:
        parsed = event_from_envelope(envelope, envelope.to_bytes())
        assert parsed is not None, envelope.kind
        out.extend(state.on_item(parsed)[0])
    return out


def entries(out: list[Output]) -> list[CommissionAccrual]:
    return [v for v in out if isinstance(v, CommissionAccrual)]


def letters(out: list[Output]) -> list[DeadLetter]:
    return [v for v in out if isinstance(v, DeadLetter)]


def approvals(out: list[Output]) -> dict[str, EntryApproval]:
    return {v.entry_id: v for v in out if isinstance(v, EntryApproval)}


def referred_order(order_id: int = 1001, at: datetime = T0) -> tuple[EventEnvelope, ...]:
    return click(TENANT, C1, at=at - timedelta(hours=1)), order(TENANT, order_id, at=at, cites=C1)


def test_entries_are_approved_when_the_hold_period_ends_on_the_wall_clock() -> None:
    clock = Clock(T0 + days(10))
    state = logic(clock)
    out = feed(state, *referred_order())
    accrued = entries(out)
    assert len(accrued) == 2  # ana's accrual and boss's override
    assert approvals(out) == {}
    assert state.notify_at() == T0 + days(30)

    clock.set(T0 + days(30) - timedelta(seconds=1))
    assert approvals(list(state.on_notify()[0])) == {}
    clock.set(T0 + days(30))
    approved = approvals(list(state.on_notify()[0]))

    assert set(approved) == {e.entry_id for e in accrued}
    assert {a.approved_at for a in approved.values()} == {T0 + days(30)}
    assert {a.reason for a in approved.values()} == {"hold period of 30 days ended"}
    assert state.notify_at() is None
    assert approvals(list(state.on_notify()[0])) == {}  # once only


def test_paid_invoice_approves_before_the_hold_period_ends() -> None:
    clock = Clock(T0 + days(2))
    state = logic(clock)
    accrued = entries(feed(state, *referred_order()))
    paid_at = T0 + days(2)

    approved = approvals(feed(state, invoice(TENANT, "#1001", at=paid_at)))

    assert set(approved) == {e.entry_id for e in accrued}
    assert {a.approved_at for a in approved.values()} == {paid_at}
    assert {a.reason for a in approved.values()} == {"invoice INV/2026/00318 paid"}
    assert state.notify_at() is None


def test_invoice_of_the_erp_sale_order_created_from_the_shop_order_approves_it() -> None:
    clock = Clock(T0 + days(2))
    state = logic(clock)
    accrued = entries(feed(state, *referred_order()))

    out = feed(
        state,
        sale_order(TENANT, "S00042", "#1001", at=T0 + days(1)),
        invoice(TENANT, "S00042", at=T0 + days(2)),
    )

    assert set(approvals(out)) == {e.entry_id for e in accrued}


def test_invoice_paid_before_its_order_arrived_approves_the_order_when_it_does() -> None:
    clock = Clock(T0 + days(3))
    state = logic(clock)
    # The invoice names the ERP sale order, whose link to the shop order arrives later too.
    assert feed(state, invoice(TENANT, "S00042", at=T0 + days(1))) == []
    assert feed(state, sale_order(TENANT, "S00042", "1001", at=T0 + days(1))) == []

    out = feed(state, *referred_order())

    assert set(approvals(out)) == {e.entry_id for e in entries(out)}
    assert {a.approved_at for a in approvals(out).values()} == {T0 + days(1)}
    assert state.state.paid_waiting == {}


def test_an_invoice_paid_before_its_sale_order_arrived_keeps_its_payment_time() -> None:
    clock = Clock(T0 + days(10))
    state = logic(clock)
    feed(state, *referred_order())
    assert feed(state, invoice(TENANT, "S00042", at=T0 + days(2))) == []

    out = feed(state, sale_order(TENANT, "S00042", "#1001", at=T0 + days(5)))

    assert {a.approved_at for a in approvals(out).values()} == {T0 + days(2)}


def test_unpaid_invoice_and_credit_note_approve_nothing() -> None:
    not_paid = invoice(TENANT, "#1001", at=T0, state="not_paid")
    assert event_from_envelope(not_paid, not_paid.to_bytes()) is None
    in_payment = invoice(TENANT, "#1001", at=T0, state="in_payment")
    assert event_from_envelope(in_payment, in_payment.to_bytes()) is None


def test_refund_inside_the_hold_waits_with_its_accrual_and_after_approval_counts_at_once() -> None:
    clock = Clock(T0 + days(5))
    state = logic(clock)
    accrued = entries(feed(state, *referred_order()))
    inside = feed(state, refund(TENANT, 1001, 9001, [(1, 1)], at=T0 + days(2)))
    reversed_inside = entries(inside)
    assert [e.kind for e in reversed_inside] == [EntryKind.REVERSAL, EntryKind.REVERSAL]
    assert approvals(inside) == {}

    clock.set(T0 + days(30))
    approved = approvals(list(state.on_notify()[0]))
    assert set(approved) == {e.entry_id for e in accrued + reversed_inside}


def test_refund_after_approval_is_approved_at_once() -> None:
    clock = Clock(T0 + days(40))
    state = logic(clock)
    first = feed(state, *referred_order(order_id=1001, at=T0))
    assert set(approvals(first)) == {e.entry_id for e in entries(first)}  # held 30 days: over

    late = feed(state, refund(TENANT, 1001, 9001, [(1, 1)], at=T0 + days(35)))

    assert set(approvals(late)) == {e.entry_id for e in entries(late)} != set()
    assert {a.approved_at for a in approvals(late).values()} == {T0 + days(35)}


def test_hold_period_comes_from_the_program() -> None:
    clock = Clock(T0 + days(8))
    state = logic(clock, hold_days=7)
    out = feed(state, *referred_order())
    assert set(approvals(out)) == {e.entry_id for e in entries(out)}
    assert {a.reason for a in approvals(out).values()} == {"hold period of 7 days ended"}


def test_two_orders_with_one_name_are_not_approved_by_an_invoice_naming_it() -> None:
    clock = Clock(T0 + days(2))
    state = logic(clock)
    feed(state, *referred_order())
    # Another shop of the tenant with its own #1001 (order id 5001).
    other = order_body(5001, at=T0, cites=C1)
    other["name"] = "#1001"
    feed(state, shopify(TENANT, "orders/create", other, at=T0, entity="5001"))

    out = feed(state, invoice(TENANT, "#1001", at=T0 + days(2)))

    assert approvals(out) == {}
    # Not silently: the exceptions inbox gets a letter saying why nothing was approved.
    [letter] = letters(out)
    assert "INV/2026/00318" in letter.reason
    assert "two orders" in letter.reason
    row = exception_row(letter)
    assert row is not None
    assert row.tenant_id == TENANT
    assert row.event == {"tenant_id": TENANT, "invoice": "INV/2026/00318", "order_ref": "1001",
                         "paid_at": (T0 + days(2)).isoformat()}  # fmt: skip
    # A second delivery of the invoice is a duplicate: no second letter.
    assert letters(feed(state, invoice(TENANT, "#1001", at=T0 + days(2)))) == []


def _quick_sweeps() -> Tuning:
    return Tuning(allowed_lateness_ms=days(1) // timedelta(milliseconds=1), sweep_every_ms=1)


def test_invoice_for_a_shop_order_that_never_arrived_is_reported_once_the_orders_settle() -> None:
    clock = Clock(T0 + days(10))
    state = logic(clock, tuning=_quick_sweeps())
    # The ERP made sale order S00077 from shop order #2002, which never reached us.
    out = feed(
        state,
        sale_order(TENANT, "S00077", "#2002", at=T0),
        invoice(TENANT, "S00077", at=T0 + days(1), invoice_id=319),
    )
    assert letters(out) == []  # the order may still come: it waits

    later = feed(state, *referred_order(order_id=1003, at=T0 + days(3)))

    [letter] = letters(later)
    assert "INV/2026/00319" in letter.reason
    assert "shop order 2002" in letter.reason
    assert "never reached" in letter.reason
    assert state.state.paid_waiting == {}
    assert state.state.unmatched_invoices == 1


def test_invoice_of_an_erp_only_sale_is_counted_not_reported() -> None:
    clock = Clock(T0 + days(10))
    state = logic(clock, tuning=_quick_sweeps())
    # No sale order made from a shop order names S00099: a sale refstream has no part in.
    feed(state, invoice(TENANT, "S00099", at=T0 + days(1), invoice_id=320))

    later = feed(state, *referred_order(order_id=1003, at=T0 + days(3)))

    assert letters(later) == []
    assert state.state.paid_waiting == {}
    assert state.state.unmatched_invoices == 1


def test_replays_decide_no_approvals() -> None:
    clock = Clock(T0 + days(60))
    state = logic(clock, tuning=Tuning(holds=False))
    out = feed(state, *referred_order(), invoice(TENANT, "#1001", at=T0 + days(1)))
    assert entries(out)
    assert approvals(out) == {}
    assert state.notify_at() is None
    assert state.state.order_refs == {}  # nothing kept for invoices either


def test_erp_events_in_real_time_do_not_age_a_backfills_orders() -> None:
    """Odoo events carry their receive time; a backfill of older orders must not see its
    order books expire (400 days of the order stream) because an invoice arrived today."""
    clock = Clock(T0 + days(900))
    state = logic(clock, tuning=Tuning(allowed_lateness_ms=days(1000) // timedelta(milliseconds=1)))
    feed(state, *referred_order(order_id=1001, at=T0))
    feed(state, invoice(TENANT, "#9999", at=T0 + days(800)))
    feed(state, *referred_order(order_id=1002, at=T0 + days(1)))

    assert set(state.stored_books()) == {"1001", "1002"}
    assert state.state.watermark_ms == ms(T0 + days(1))


def test_snapshot_from_before_holds_resumes_with_empty_hold_state() -> None:
    clock = Clock(T0 + days(2))
    state = logic(clock)
    feed(state, *referred_order())
    # A TenantState pickled by the version before holds: the tenant-keyed flow's, with its
    # books, without the fields added for holds (nor those added since).
    old = tenant_keyed(state)
    for name in ("holds", "hold_due", "order_refs", "sale_orders", "paid_waiting"):
        delattr(old, name)
    delattr(old, "unmatched_invoices")
    delattr(old, "decided")
    resumed = builder(StaticConfig(snapshot(TENANT)), None, clock)(pickle.dumps(old))

    assert resumed.state.order_refs == {}
    assert resumed.state.holds == []
    assert set(resumed.state.orders) == {"1001"}  # until the first item hands it to its bucket
    out = feed(resumed, refund(TENANT, 1001, 9001, [(1, 1)], at=T0 + days(1)))
    assert len(entries(out)) == 2
    assert set(resumed.stored_books()) == {"1001"}
    assert not resumed.state.orders


def test_complete_fills_missing_fields_with_defaults() -> None:
    state = TenantState.__new__(TenantState)
    complete(state)
    assert state == TenantState()
