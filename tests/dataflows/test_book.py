"""The money rules of an order's book (`dataflows.commission.book`), on a book the tenant's
logic opened for a real order: follow-ups book once, edits reprice, approvals say why."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import msgspec

from dataflows.attribution.events import (
    Event,
    event_from_envelope,
    from_ms,
    parse_envelope,
    to_ms,
)
from dataflows.attribution.local import builder
from dataflows.commission.book import (
    DAY_MS,
    OrderBook,
    apply_cancel,
    apply_edit,
    apply_refund,
    approval_reason,
    due_approvals,
    is_same_order,
    mark_paid,
)
from dataflows.commission.holds import approves_at
from dataflows.config import StaticConfig
from schemas.conversion import Conversion, OrderRefund
from schemas.ledger import EntryApproval, EntryKind
from tests.dataflows.builders import T0, click, click_id, days, order, refund, snapshot

TENANT = "t_book"
CONFIG = StaticConfig(snapshot(TENANT))


def _event(envelope: object) -> Event:
    raw = envelope.to_bytes()  # type: ignore[attr-defined]
    event = event_from_envelope(parse_envelope(raw), raw)
    assert event is not None
    return event


def _book(lines: tuple[tuple[int, int, str], ...] = ((1, 2, "50.00"),)) -> OrderBook:
    """ana's order 1001 (10 % to her, 5 % of that to her manager), as the tenant opened it."""
    logic = builder(CONFIG, None, lambda: 0)(None)
    logic.on_item(_event(click(TENANT, click_id(1), at=T0)))
    logic.on_item(_event(order(TENANT, 1001, at=T0 + days(1), cites=click_id(1), lines=lines)))
    book = logic.book("1001")
    assert book is not None
    return book


def _refund(refund_id: int, quantity: int, at_days: float) -> OrderRefund:
    payload = _event(refund(TENANT, 1001, refund_id, [(1, quantity)], at=T0 + days(at_days)))
    assert isinstance(payload.payload, OrderRefund)
    return payload.payload


def _net(book: OrderBook) -> Decimal:
    return sum((e.amount for e in book.entries), Decimal(0))


def test_a_refund_books_once_however_often_it_arrives() -> None:
    book = _book()
    assert _net(book) == Decimal("10.50")
    first = apply_refund(book, _refund(7, 1, 2), "ev-r7")
    assert {e.kind for e in first} == {EntryKind.REVERSAL}
    assert _net(book) == Decimal("5.25")  # half the units back: half the commission reversed
    assert apply_refund(book, _refund(7, 1, 2), "ev-r7-again") == []
    assert _net(book) == Decimal("5.25")


def test_a_cancellation_reverses_what_is_left_once() -> None:
    book = _book()
    apply_refund(book, _refund(7, 1, 2), "ev-r7")
    assert apply_cancel(book, T0 + days(3), "ev-c") != []
    assert _net(book) == Decimal(0)
    assert apply_cancel(book, T0 + days(4), "ev-c2") == []
    assert apply_refund(book, _refund(8, 1, 5), "ev-r8") == []  # nothing left to reverse
    assert _net(book) == Decimal(0)


def test_an_edit_reprices_under_the_rules_that_booked_the_order() -> None:
    book = _book()
    assert book.rule_key is not None
    rules = CONFIG.tenant(TENANT).rule_versions[book.rule_key]
    line = book.conversion.lines[0]
    edited = msgspec.structs.replace(
        book.conversion, lines=(msgspec.structs.replace(line, quantity=4),)
    )
    assert not is_same_order(book, edited)
    assert is_same_order(book, book.conversion)
    new = apply_edit(book, edited, rules, CONFIG.tenant(TENANT).rules_rate, "ev-e", T0 + days(2))
    assert {e.kind for e in new} == {EntryKind.REPRICE}
    assert _net(book) == Decimal("21.00")  # twice the units: twice the commission
    assert book.conversion == edited
    # A cancelled order is not repriced, but keeps the edited facts.
    apply_cancel(book, T0 + days(3), "ev-c")
    again: Conversion = msgspec.structs.replace(edited, order_discount=Decimal("1.00"))
    assert apply_edit(book, again, rules, CONFIG.tenant(TENANT).rules_rate, "ev-e2", T0) == []
    assert book.conversion == again


def test_approvals_come_when_the_hold_ends_and_say_why() -> None:
    book = _book()
    order_ms = to_ms(book.conversion.occurred_at)
    approvals, due = due_approvals(book, 30, now_ms=order_ms + DAY_MS)
    assert approvals == []
    assert due == order_ms + 30 * DAY_MS
    approvals, due = due_approvals(book, 30, now_ms=order_ms + 30 * DAY_MS)
    assert {a.entry_id for a in approvals} == {e.entry_id for e in book.entries}
    assert {a.reason for a in approvals} == {"hold period of 30 days ended"}
    assert due is None
    assert due_approvals(book, 30, now_ms=order_ms + 40 * DAY_MS) == ([], None)  # once each


def test_an_invoice_paid_before_the_hold_ends_approves_early_and_says_so() -> None:
    book = _book()
    order_ms = to_ms(book.conversion.occurred_at)
    mark_paid(book, order_ms + 5 * DAY_MS, "INV/2026/00017")
    mark_paid(book, order_ms + 9 * DAY_MS, "INV/2026/00018")  # a later payment: the first counts
    assert approval_reason(book, 30) == "invoice INV/2026/00017 paid"
    approvals, due = due_approvals(book, 30, now_ms=order_ms + 5 * DAY_MS)
    assert len(approvals) == len(book.entries)
    assert due is None
    late = replace(book, paid_ms=order_ms + 40 * DAY_MS)
    assert approval_reason(late, 30) == "hold period of 30 days ended"


def _reference_approvals(
    book: OrderBook, hold_days: int, now_ms: int
) -> tuple[list[EntryApproval], int | None]:
    """What `due_approvals` gives, spelled with the datetime rule (`holds.approves_at`) and
    validated models: every entry not yet approved, due by `now_ms` or not."""
    paid = from_ms(book.paid_ms) if book.paid_ms is not None else None
    order_at = book.conversion.occurred_at
    by_hold = order_at + timedelta(days=hold_days)
    reason = (
        f"invoice {book.paid_invoice} paid"
        if paid is not None and paid < by_hold
        else f"hold period of {hold_days} days ended"
    )
    approvals, later = [], []
    for entry in book.entries:
        if entry.entry_id in book.approved:
            continue
        due = to_ms(approves_at(entry, paid, hold_days, order_occurred_at=order_at))
        if due > now_ms:
            later.append(due)
            continue
        approvals.append(
            EntryApproval(
                tenant_id=entry.tenant_id, entry_id=entry.entry_id, approved_at=from_ms(due),
                reason=reason,
            )
        )  # fmt: skip
    return approvals, min(later, default=None)


def test_approvals_are_those_of_the_hold_rule_entry_by_entry() -> None:
    """Accruals, reversals after the order (inside and after the hold), paid or not: at each
    moment, the same approvals (with the same fields set) and the same next due time as the
    datetime rule gives."""
    for paid_days, hold_days in ((None, 30), (4.5, 30), (40, 30), (None, 0), (2, 0)):
        book = _book(lines=((1, 2, "50.00"), (2, 1, "19.99")))
        order_ms = to_ms(book.conversion.occurred_at)
        apply_refund(book, _refund(7, 1, 3), "ev-r7")  # inside the hold
        apply_refund(book, _refund(8, 1, 45), "ev-r8")  # after it
        if paid_days is not None:
            mark_paid(book, order_ms + int(paid_days * DAY_MS), "INV/7")
        expected = replace(book, approved=set())
        for now_days in (0, 1.75, 3, 4.5, 29, 31, 44, 46, 400):
            now_ms = order_ms + int(now_days * DAY_MS)
            wanted = _reference_approvals(expected, hold_days, now_ms)
            expected.approved.update(a.entry_id for a in wanted[0])
            approvals, due = due_approvals(book, hold_days, now_ms)
            assert (approvals, due) == wanted, (paid_days, hold_days, now_days)
            for made, validated in zip(approvals, wanted[0], strict=True):
                assert made.model_fields_set == validated.model_fields_set
                assert made.model_dump_json() == validated.model_dump_json()
        assert book.approved == {e.entry_id for e in book.entries}
