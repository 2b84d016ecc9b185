"""An order's book: what a decided order keeps so its follow-ups become ledger entries, and the
money rules that act on it. Pure: no I/O, no clock (times are parameters).

The dataflow's book buckets (`stages.books`) only do bookkeeping around these: where a
book is stored, when it is pickled, which timer wakes it. What a refund, a cancellation or an
edit books, that a refund counts once, and when and why an entry is approved are decided here,
so the flow, replays and the tests use one rule each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from dataflows.attribution.events import from_ms, to_ms
from dataflows.attribution.logic import AttributionDecision
from dataflows.commission.adjustments import Cancellation, reprice, settle
from dataflows.commission.holds import approves_at_ms
from dataflows.commission.logic import accrue
from schemas.commission_rules import CommissionRuleSet
from schemas.compact import _made
from schemas.conversion import Conversion, OrderRefund
from schemas.ledger import CommissionAccrual, EntryApproval

DAY_MS = 86_400_000


@dataclass(slots=True)
class OrderBook:
    """A decided order: what commission adjustments need later."""

    conversion: Conversion
    decision: AttributionDecision
    received_ms: int
    chain: tuple[str, ...] = ()
    rule_key: tuple[str, int] | None = None
    period_volume: Decimal = Decimal(0)
    is_new_customer: bool = False
    entries: list[CommissionAccrual] = field(default_factory=list)
    refunds: list[OrderRefund] = field(default_factory=list)
    cancelled: bool = False
    # Added for holds; older snapshots lack them (`commission.codec.unpack_book` fills them).
    paid_ms: int | None = None  # when the ERP reported the order's invoice paid
    paid_invoice: str = ""
    approved: set[str] = field(default_factory=set)  # entry ids whose approval was emitted
    # Added for fx rates; older snapshots lack it (their rows were written at 1). None: no rate
    # was known at the order's event time, so nothing was booked.
    fx_rate: Decimal | None = Decimal(1)
    # Added for event-time settlement (`adjustments.settle`); None in older snapshots, whose
    # cancelled books keep the arrival-order rule (a later refund books nothing).
    cancellation: Cancellation | None = None


def apply_refund(book: OrderBook, refund: OrderRefund, event_id: str) -> list[CommissionAccrual]:
    """A refund of the order: the entries it books (none for a refund already applied, by its
    refund id). Refunds and a cancellation settle in event time whatever order they arrive in
    (`adjustments.settle`); a book from before event-time settlement that was cancelled books
    nothing more. The new entries are added to the book."""
    if any(r.refund_id == refund.refund_id for r in book.refunds):
        return []
    book.refunds.append(refund)
    if book.cancelled and book.cancellation is None:
        return []
    new = settle(book.entries, book.conversion, book.refunds, book.cancellation, trigger=event_id)
    book.entries.extend(new)
    return new


def apply_cancel(book: OrderBook, occurred_at: datetime, event_id: str) -> list[CommissionAccrual]:
    """The order's cancellation (once): reverses what is left, settled in event time."""
    if book.cancelled:
        return []
    book.cancelled = True
    book.cancellation = Cancellation(occurred_at, event_id)
    new = settle(book.entries, book.conversion, book.refunds, book.cancellation, trigger=event_id)
    book.entries.extend(new)
    return new


def is_same_order(book: OrderBook, updated: Conversion) -> bool:
    """An update that changes nothing commission reads (lines and order discount)."""
    return (updated.lines, updated.order_discount) == (
        book.conversion.lines,
        book.conversion.order_discount,
    )


def apply_edit(
    book: OrderBook,
    updated: Conversion,
    rules: CommissionRuleSet | None,
    rules_rate: Callable[[CommissionRuleSet, Conversion], Fraction | Decimal | None],
    event_id: str,
    occurred_at: datetime,
) -> list[CommissionAccrual]:
    """An edit of the order (`updated`, already without changes `is_same_order` ignores):
    reprice its entries under the rule version that booked them (`rules`; None when that
    version is gone: nothing is repriced), unless it was cancelled or booked nothing for want
    of a rate; `rules_rate` gives the rate the rules' amounts apply at
    (`TenantConfig.rules_rate`). Raises `CommissionError` for an edit the rules cannot price
    (nothing changes then). The book takes the edited facts either way."""
    new: list[CommissionAccrual] = []
    if rules is not None and not book.cancelled and book.fx_rate is not None:
        target = accrue(
            updated, book.decision, rules, book.chain,
            period_volume=book.period_volume, is_new_customer=book.is_new_customer,
            fx_rate=book.fx_rate, rules_rate=rules_rate(rules, updated),
        )  # fmt: skip
        new = reprice(book.entries, target, edit_id=event_id, occurred_at=occurred_at,
                      source_event_id=event_id)  # fmt: skip
    book.conversion = updated
    book.entries.extend(new)
    return new


def mark_paid(book: OrderBook, paid_ms: int, invoice: str) -> None:
    """The ERP reported the order's invoice paid: the earliest payment counts."""
    if book.paid_ms is None or paid_ms < book.paid_ms:
        book.paid_ms, book.paid_invoice = paid_ms, invoice


def approval_reason(book: OrderBook, hold_days: int) -> str:
    """Why the book's entries are approved: its invoice paid before the hold ended, or the hold
    period over."""
    return _reason(book, to_ms(book.conversion.occurred_at), hold_days)


def _reason(book: OrderBook, order_ms: int, hold_days: int) -> str:
    if book.paid_ms is not None and book.paid_ms < order_ms + hold_days * DAY_MS:
        return f"invoice {book.paid_invoice} paid"
    return f"hold period of {hold_days} days ended"


_APPROVAL_FIELDS = tuple(EntryApproval.model_fields)


def _approval(tenant_id: str, entry_id: str, approved_at: datetime, reason: str) -> EntryApproval:
    """`trusted(EntryApproval, ...)` of the four fields (a validated entry's ids, an aware time):
    the same model, without `trusted`'s per-call merging and checks of the fields given
    (`tests/dataflows/test_book.py` compares it with the validated model)."""
    values = {"tenant_id": tenant_id, "entry_id": entry_id, "approved_at": approved_at,
              "reason": reason}  # fmt: skip
    return _made(EntryApproval, values, set(_APPROVAL_FIELDS))


def due_approvals(
    book: OrderBook, hold_days: int, now_ms: int
) -> tuple[list[EntryApproval], int | None]:
    """The approvals of the book's entries whose hold has ended by `now_ms` (each once: the book
    remembers them), and when the next entry still held is due (None: none is)."""
    order_at = book.conversion.occurred_at
    order_ms = to_ms(order_at)
    approved = book.approved
    # id of an entry's time → its ms (an order's entries mostly share its time object)
    times: dict[int, int] = {id(order_at): order_ms}
    approved_at: dict[int, datetime] = {}  # due ms → its time (entries share their due)
    reason: str | None = None
    approvals: list[EntryApproval] = []
    later: int | None = None
    for entry in book.entries:
        entry_id = entry.entry_id
        if entry_id in approved:
            continue
        at = entry.occurred_at
        entry_ms = times.get(id(at))
        if entry_ms is None:
            entry_ms = times[id(at)] = to_ms(at)
        due = approves_at_ms(entry_ms, order_ms, book.paid_ms, hold_days)
        if due > now_ms:
            if later is None or due < later:
                later = due
            continue
        approved.add(entry_id)
        if reason is None:
            reason = _reason(book, order_ms, hold_days)
        when = approved_at.get(due)
        if when is None:
            when = approved_at[due] = from_ms(due)
        approvals.append(_approval(entry.tenant_id, entry_id, when, reason))
    return approvals, later
