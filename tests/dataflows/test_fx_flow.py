"""Exchange rates in the attribution dataflow (in process, `run` of test_flow): conversions and
entries carry the rate valid at the order's event time, follow-ups keep the sale's rate, and an
order without a known rate is decided but books nothing at a guessed rate."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from decimal import Decimal

from api.exceptions.letters import exception_row
from dataflows.attribution.logic import AttributionDecision, AttributionRule
from dataflows.commission.book import OrderBook
from dataflows.config import ConfigSnapshot
from dataflows.stages.base import unpack
from schemas.conversion import Conversion
from schemas.events.envelope import EventEnvelope
from schemas.ledger import EntryKind
from tests.dataflows.builders import T0, click, click_id, days, order, refund, snapshot
from tests.dataflows.test_flow import TENANT, run

OCT = datetime(2026, 10, 1, tzinfo=UTC)
C1, C2 = click_id("fx-1"), click_id("fx-2")
EDIT = "orders/updated"


def eur_shop(*rates: tuple[str, str, datetime]) -> ConfigSnapshot:
    """The tenant reports in USD; its program (and shop) sells in EUR."""
    return snapshot(TENANT, currency="EUR", reporting_currency="USD", fx_rates=rates)


def test_conversions_and_entries_carry_the_rate_valid_at_the_order_time() -> None:
    config = eur_shop(("EUR", "1.08", OCT), ("EUR", "1.10", T0 + days(5)))
    events = [
        click(TENANT, C1, at=T0),
        order(TENANT, 1001, at=T0 + days(1), cites=C1, currency="EUR"),
        click(TENANT, C2, at=T0 + days(4)),
        order(TENANT, 1002, at=T0 + days(5), cites=C2, currency="EUR"),  # the new rate's start
    ]
    result = run(events, config)

    assert result.last_conversion("1001").fx_rate == Decimal("1.08")
    assert result.last_conversion("1002").fx_rate == Decimal("1.10")
    rates = {(e.order_id, e.kind, e.level): e.fx_rate for e in result.entries}
    assert rates == {
        ("1001", EntryKind.ACCRUAL, 0): Decimal("1.08"),
        ("1001", EntryKind.OVERRIDE, 1): Decimal("1.08"),
        ("1002", EntryKind.ACCRUAL, 0): Decimal("1.10"),
        ("1002", EntryKind.OVERRIDE, 1): Decimal("1.10"),
    }
    assert {e.currency for e in result.entries} == {"EUR"}  # amounts stay in shop currency
    assert result.balance("agt_ana") == Decimal("20.00")
    assert not result.dead


def test_refunds_and_edits_keep_the_rate_of_the_sale() -> None:
    config = eur_shop(("EUR", "1.08", OCT), ("EUR", "1.25", T0 + days(2)))
    events = [
        click(TENANT, C1, at=T0),
        order(TENANT, 1001, at=T0 + days(1), cites=C1, currency="EUR", lines=[(1, 2, "50.00")]),
        refund(TENANT, 1001, 77, [(1, 1)], at=T0 + days(3)),
        order(TENANT, 1001, at=T0 + days(4), cites=C1, currency="EUR", lines=[(1, 3, "50.00")],
              topic=EDIT),
    ]  # fmt: skip
    result = run(events, config)

    kinds = {e.kind for e in result.entries}
    assert {EntryKind.REVERSAL, EntryKind.REPRICE} <= kinds
    assert {e.fx_rate for e in result.entries} == {Decimal("1.08")}
    assert [c.fx_rate for c in result.conversions] == [Decimal("1.08"), Decimal("1.08")]
    assert not result.dead


def test_orders_in_the_reporting_currency_have_rate_one() -> None:
    config = snapshot(TENANT, fx_rates=[("EUR", "1.08", OCT)])  # reports and sells in USD
    result = run([click(TENANT, C1, at=T0), order(TENANT, 1001, at=T0 + days(1), cites=C1)], config)
    assert result.last_conversion("1001").fx_rate == Decimal(1)
    assert {e.fx_rate for e in result.entries} == {Decimal(1)}
    assert len(result.entries) == 2


def history() -> list[EventEnvelope]:
    """1001 (EUR) is sold on day 1 and later refunded and edited; 1002 on day 11."""
    return [
        click(TENANT, C1, at=T0),
        order(TENANT, 1001, at=T0 + days(1), cites=C1, currency="EUR"),
        refund(TENANT, 1001, 77, [(1, 1)], at=T0 + days(2)),
        order(TENANT, 1001, at=T0 + days(3), cites=C1, currency="EUR", lines=[(1, 2, "100.00")],
              topic=EDIT),
        click(TENANT, C2, at=T0 + days(10)),
        order(TENANT, 1002, at=T0 + days(11), cites=C2, currency="EUR"),
    ]  # fmt: skip


def test_an_order_without_a_known_rate_is_decided_but_books_nothing() -> None:
    result = run(history(), eur_shop(("EUR", "1.10", T0 + days(10))))

    (dead,) = result.dead
    assert dead.reason == (
        "fx: no EUR rate at 2026-11-02T12:00:00+00:00: order 1001 decided without conversion "
        "row or commission"
    )
    # The letter names its tenant and order, so the exceptions inbox files it.
    row = exception_row(dead)
    assert row is not None
    assert (row.tenant_id, row.entity_id) == (TENANT, "1001")
    # Nothing of 1001 at a guessed rate: no conversion row (its refund and edit add none), no
    # accrual, no reversal or reprice.
    assert [c.order_id for c in result.conversions] == ["1002"]
    assert {e.order_id for e in result.entries} == {"1002"}
    assert {a.entry_id for a in result.approvals} <= {e.entry_id for e in result.entries}
    assert {e.fx_rate for e in result.entries} == {Decimal("1.10")}


def test_a_replay_after_the_rate_was_added_books_the_order_at_that_rate() -> None:
    live = run(history(), eur_shop(("EUR", "1.10", T0 + days(10))))
    replay = run(history(), eur_shop(("EUR", "1.07", OCT), ("EUR", "1.10", T0 + days(10))))

    assert not replay.dead
    missing = {k: v for k, v in replay.ledger().items() if k not in live.ledger()}
    booked = [e for e in replay.entries if e.entry_id in missing]
    assert {e.order_id for e in booked} == {"1001"}
    assert {e.kind for e in booked} == {EntryKind.ACCRUAL, EntryKind.OVERRIDE,
                                        EntryKind.REVERSAL, EntryKind.REPRICE}  # fmt: skip
    assert {e.fx_rate for e in booked} == {Decimal("1.07")}
    # 1002's entries are the same in both: the tier volume counted 1001 either way.
    assert {k: v for k, v in replay.ledger().items() if k not in missing} == live.ledger()
    assert replay.last_conversion("1001").fx_rate == Decimal("1.07")


def test_an_order_book_from_an_older_snapshot_keeps_rate_one() -> None:
    """Books pickled before fx rates existed were written at 1, and stay so for follow-ups."""
    conversion = Conversion(
        tenant_id=TENANT, shop=None, order_id="1", occurred_at=T0, currency="EUR",
        source_event_id="e",
    )  # fmt: skip
    decision = AttributionDecision(
        rule=AttributionRule.UNATTRIBUTED, agent_id=None, program_id=None, click_id=None,
        coupon_code=None, explanation="",
    )  # fmt: skip
    book = OrderBook(conversion, decision, received_ms=0)
    del book.fx_rate  # what unpickling an older book gives
    assert unpack(pickle.dumps(book)).fx_rate == Decimal(1)
