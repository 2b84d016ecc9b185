from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataflows.attribution.events import from_ms, to_ms
from dataflows.commission.holds import approves_at, approves_at_ms, status_at
from schemas.ledger import CommissionAccrual, EntryKind, EntryStatus

ORDER_AT = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
HOLD = 30
APPROVAL = ORDER_AT + timedelta(days=HOLD)


def an_entry(
    *, kind: EntryKind = EntryKind.ACCRUAL, occurred_at: datetime = ORDER_AT, amount: str = "10.00"
) -> CommissionAccrual:
    return CommissionAccrual(
        entry_id=f"le_{kind.value}",
        tenant_id="t1",
        agent_id="a1",
        program_id="p1",
        conversion_id="cv_1",
        order_id="1001",
        line_item_id="l1",
        kind=kind,
        amount=Decimal(amount),
        currency="USD",
        occurred_at=occurred_at,
        source_event_id="evt_1",
    )


def test_entries_start_pending() -> None:
    assert status_at(an_entry(), ORDER_AT, None, HOLD) is EntryStatus.PENDING
    assert status_at(an_entry(), APPROVAL - timedelta(seconds=1), None, HOLD) is (
        EntryStatus.PENDING
    )


def test_approved_once_the_hold_period_has_passed_in_event_time() -> None:
    assert approves_at(an_entry(), None, HOLD) == APPROVAL
    assert status_at(an_entry(), APPROVAL, None, HOLD) is EntryStatus.APPROVED


def test_paid_invoice_approves_before_the_hold_ends() -> None:
    paid = ORDER_AT + timedelta(days=2)
    assert status_at(an_entry(), paid, paid, HOLD) is EntryStatus.APPROVED
    assert status_at(an_entry(), paid - timedelta(seconds=1), paid, HOLD) is EntryStatus.PENDING


def test_an_invoice_paid_after_the_hold_changes_nothing() -> None:
    assert approves_at(an_entry(), APPROVAL + timedelta(days=5), HOLD) == APPROVAL


def test_zero_hold_days_approve_at_the_order_time() -> None:
    assert status_at(an_entry(), ORDER_AT, None, 0) is EntryStatus.APPROVED


def test_reversal_inside_the_hold_window_waits_with_its_accrual() -> None:
    refund_at = ORDER_AT + timedelta(days=3)
    reversal = an_entry(kind=EntryKind.REVERSAL, occurred_at=refund_at, amount="-10.00")
    kwargs = {"order_occurred_at": ORDER_AT}
    assert status_at(reversal, refund_at, None, HOLD, **kwargs) is EntryStatus.PENDING
    assert approves_at(reversal, None, HOLD, **kwargs) == approves_at(an_entry(), None, HOLD)


def test_reversal_of_an_approved_accrual_is_approved_at_once() -> None:
    refund_at = APPROVAL + timedelta(days=10)
    reversal = an_entry(kind=EntryKind.REVERSAL, occurred_at=refund_at, amount="-10.00")
    assert approves_at(reversal, None, HOLD, order_occurred_at=ORDER_AT) == refund_at
    assert status_at(reversal, refund_at, None, HOLD, order_occurred_at=ORDER_AT) is (
        EntryStatus.APPROVED
    )


def test_negative_hold_days_are_refused() -> None:
    with pytest.raises(ValueError, match="hold_days"):
        status_at(an_entry(), ORDER_AT, None, -1)


_ZONES = [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(minutes=330))]
_TIMES = st.datetimes(
    min_value=datetime(1971, 1, 1),  # noqa: DTZ001  (naive bounds; hypothesis adds the zones)
    max_value=datetime(2199, 12, 31),  # noqa: DTZ001
    timezones=st.sampled_from(_ZONES),
)


@given(
    entry_at=_TIMES, order_at=_TIMES, hold=st.integers(0, 400),
    paid=st.none() | st.integers(0, 7_000_000_000_000),
)  # fmt: skip
def test_approves_at_ms_is_approves_at_in_milliseconds(
    entry_at: datetime, order_at: datetime, hold: int, paid: int | None
) -> None:
    """The order path's integer form (`approves_at_ms`, used by `book.due_approvals`) gives the
    instant `approves_at` gives, floored to the millisecond, for any times and offsets."""
    entry = an_entry(occurred_at=entry_at)
    paid_at = from_ms(paid) if paid is not None else None
    expected = to_ms(approves_at(entry, paid_at, hold, order_occurred_at=order_at))
    assert approves_at_ms(to_ms(entry_at), to_ms(order_at), paid, hold) == expected


def test_approves_at_ms_refuses_a_negative_hold() -> None:
    with pytest.raises(ValueError, match="hold_days"):
        approves_at_ms(0, 0, None, -1)
