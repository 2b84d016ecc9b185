"""Pure rules of the configuration snapshot (built from rows, no database): cross rates."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from tests.dataflows.builders import T0, days, snapshot

OCT = datetime(2026, 10, 1, tzinfo=UTC)


def test_cross_rates_go_through_the_reporting_currency_at_the_given_instant() -> None:
    config = snapshot(
        "t1", reporting_currency="USD",
        fx_rates=[("EUR", "1.08", OCT), ("EUR", "1.10", T0), ("GBP", "1.25", OCT)],
    ).tenant("t1")  # fmt: skip
    # Units of the target per 1 of the source: USD rules on an EUR order.
    assert config.cross_rate("USD", "EUR", T0 - days(1)) == Fraction(100, 108)
    assert config.cross_rate("USD", "EUR", T0) == Fraction(100, 110)
    assert config.cross_rate("GBP", "EUR", T0) == Fraction(125, 110)
    assert config.cross_rate("EUR", "EUR", T0) == 1
    assert config.cross_rate("USD", "EUR", OCT - days(1)) is None  # no rate yet
    assert config.cross_rate("USD", "CHF", T0) is None
    assert config.fx_rate("EUR", T0) == Decimal("1.10")
