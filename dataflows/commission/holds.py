"""Hold periods: when a ledger entry stops being `pending` and becomes `approved`. Pure.

An order's commission is **approved** at the earlier of
- its event time + `hold_days` (the refund window has passed), and
- the moment the ERP reports the order's invoice paid (`invoice_paid_at`).

Every entry of the order — accrual, override, reprice or reversal — is approved at the later of
that order approval time and its own event time. So a refund *inside* the hold window leaves its
reversal pending alongside the accrual it cancels and both are approved together (the approved
balance never goes negative for money that was never approved), while a refund *after* approval
is approved at once: a clawback of approved (perhaps already paid) commission must count against
the agent's next payout, not wait out another hold.

Manual states (`hold`, `rejected`) and `paid` are status events recorded by people and payouts;
they take precedence over this computed status and are not decided here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from schemas.ledger import CommissionAccrual, EntryStatus


def approves_at(
    entry: CommissionAccrual,
    invoice_paid_at: datetime | None,
    hold_days: int,
    *,
    order_occurred_at: datetime | None = None,
) -> datetime:
    """The instant `entry` becomes approved (see the module docstring).

    `order_occurred_at` is the order's event time; it defaults to `entry.occurred_at`, which is
    the order's time for accruals and overrides but not for reversals and reprices, so pass it
    for those. `ValueError` for a negative `hold_days`.
    """
    if hold_days < 0:
        raise ValueError("hold_days must be >= 0")
    order_time = order_occurred_at or entry.occurred_at
    order_approved = order_time + timedelta(days=hold_days)
    if invoice_paid_at is not None:
        order_approved = min(order_approved, invoice_paid_at)
    return max(order_approved, entry.occurred_at)


DAY_MS = 86_400_000


def approves_at_ms(entry_ms: int, order_ms: int, paid_ms: int | None, hold_days: int) -> int:
    """`approves_at` in whole milliseconds since the epoch, from the entry's and the order's
    event times and the invoice's payment time in milliseconds (floored, as `events.to_ms`
    gives them): the same instant `to_ms(approves_at(...))` gives (flooring commutes with `min`,
    `max` and adding whole days; `tests/dataflows/test_holds.py`), without datetime
    arithmetic on the order path. `ValueError` for a negative `hold_days`."""
    if hold_days < 0:
        raise ValueError("hold_days must be >= 0")
    order_approved = order_ms + hold_days * DAY_MS
    if paid_ms is not None and paid_ms < order_approved:
        order_approved = paid_ms
    return order_approved if order_approved > entry_ms else entry_ms


def status_at(
    entry: CommissionAccrual,
    now: datetime,
    invoice_paid_at: datetime | None,
    hold_days: int,
    *,
    order_occurred_at: datetime | None = None,
) -> EntryStatus:
    """`APPROVED` if `now >= approves_at(...)`, else `PENDING`.

    `now` is a parameter (never read from a clock); an `invoice_paid_at` later than `now` has
    not happened yet and so cannot approve anything before it.
    """
    when = approves_at(entry, invoice_paid_at, hold_days, order_occurred_at=order_occurred_at)
    return EntryStatus.APPROVED if now >= when else EntryStatus.PENDING
