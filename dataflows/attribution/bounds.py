"""What every store can hold, checked once at parse time. Pure: no I/O, no clock.

An event whose facts do not fit the stores is refused here, with a reason, instead of stopping a
sink later: ClickHouse keeps amounts as `Decimal(18, 4)` and times as `DateTime64(3)` (1900 to
2299), the PostgreSQL ledger `numeric(18, 4)`. The bounds below are tighter than the columns so
that sums and commission derived from a valid order (revenue of many lines, a flat amount per
unit) still fit them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from schemas.conversion import Conversion, OrderRefund

MAX_AMOUNT = Decimal(10) ** 12  # one line's gross, one order's revenue: < 10^12 (columns: 10^14)
MAX_QUANTITY = 1_000_000  # units on one line
MAX_LINES = 5_000  # lines in one order or refund
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class OutOfBounds(ValueError):
    """A fact no store can hold; `str(exc)` says which and why."""


def check_time(what: str, when: datetime) -> None:
    if not EARLIEST <= when < LATEST:
        raise OutOfBounds(f"{what} {when.isoformat()} is outside {EARLIEST.year}-{LATEST.year}")


def _check_amount(what: str, amount: Decimal) -> None:
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
        raise OutOfBounds(f"{what} {amount} is not a finite amount below {MAX_AMOUNT:,}")


def check_conversion(conversion: Conversion) -> None:
    """`OutOfBounds` unless every amount, quantity and time of the order fits the stores."""
    check_time("order time", conversion.occurred_at)
    if len(conversion.lines) > MAX_LINES:
        raise OutOfBounds(f"{len(conversion.lines)} lines (at most {MAX_LINES})")
    _check_amount("order discount", conversion.order_discount)
    total = Decimal(0)
    for line in conversion.lines:
        if not 0 <= line.quantity <= MAX_QUANTITY:
            raise OutOfBounds(
                f"line {line.line_id}: quantity {line.quantity} (0 to {MAX_QUANTITY})"
            )
        for what, amount in (("price", line.unit_price), ("discount", line.discount),
                             ("tax", line.included_tax)):  # fmt: skip
            _check_amount(f"line {line.line_id}: {what}", amount)
        _check_amount(f"line {line.line_id}: gross", line.gross)
        total += line.gross
    _check_amount("order gross", total)


def check_refund(refund: OrderRefund) -> None:
    """`OutOfBounds` unless the refund's time and quantities fit the stores."""
    check_time("refund time", refund.occurred_at)
    if len(refund.lines) > MAX_LINES:
        raise OutOfBounds(f"{len(refund.lines)} refunded lines (at most {MAX_LINES})")
    for line in refund.lines:
        if not 0 <= line.quantity <= MAX_QUANTITY:
            raise OutOfBounds(
                f"line {line.line_id}: quantity {line.quantity} (0 to {MAX_QUANTITY})"
            )
