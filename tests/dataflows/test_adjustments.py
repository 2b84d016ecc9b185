from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from dataflows.attribution.logic import AttributionDecision
from dataflows.commission.adjustments import reprice, reverse_cancellation, reverse_refund
from dataflows.commission.logic import CommissionError, accrue
from schemas.commission_rules import CommissionRuleSet, Rate, RateKind
from schemas.conversion import Conversion, ConversionLine, OrderRefund, RefundedLine
from schemas.ledger import AttributionRule, CommissionAccrual, EntryKind

ORDER_AT = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
REFUND_AT = ORDER_AT + timedelta(days=3)
DECISION = AttributionDecision(
    rule=AttributionRule.LAST_CLICK,
    agent_id="a1",
    program_id="p1",
    click_id="clk_" + "0" * 32,
    coupon_code=None,
    explanation="",
)
RULES = CommissionRuleSet(
    rule_id="r1",
    version=1,
    program_id="p1",
    currency="USD",
    base=Rate(kind=RateKind.PERCENT, value=Decimal(10)),
    manager_overrides=(Decimal(10),),
)


def an_order(quantities: Mapping[str, int], *, price: str = "100.00") -> Conversion:
    return Conversion(
        tenant_id="t1",
        order_id="1001",
        occurred_at=ORDER_AT,
        currency="USD",
        lines=tuple(
            ConversionLine(line_id=line_id, quantity=qty, unit_price=Decimal(price))
            for line_id, qty in quantities.items()
        ),
        source_event_id="evt_order",
    )


def accrued(conversion: Conversion, rules: CommissionRuleSet = RULES) -> list[CommissionAccrual]:
    return accrue(
        conversion,
        DECISION,
        rules,
        ("a1", "m1"),
        period_volume=Decimal(0),
        is_new_customer=False,
    )


def a_refund(
    refund_id: str, quantities: Mapping[str, int], *, order_id: str = "1001"
) -> OrderRefund:
    return OrderRefund(
        refund_id=refund_id,
        order_id=order_id,
        occurred_at=REFUND_AT,
        lines=tuple(RefundedLine(line_id=k, quantity=q) for k, q in quantities.items()),
        source_event_id=f"evt_{refund_id}",
    )


def net(
    entries: Sequence[CommissionAccrual], line: str | None = None, level: int | None = None
) -> Decimal:
    return sum(
        (
            e.amount
            for e in entries
            if (line is None or e.line_item_id == line) and (level is None or e.level == level)
        ),
        Decimal(0),
    )


def apply_refunds(
    ledger: list[CommissionAccrual], conversion: Conversion, refunds: Sequence[OrderRefund]
) -> list[CommissionAccrual]:
    seen: list[OrderRefund] = []
    for refund in refunds:
        ledger = ledger + reverse_refund(ledger, refund, conversion, seen)
        seen.append(refund)
    return ledger


# --- refunds ---------------------------------------------------------------------------------


def test_partial_refund_reverses_pro_rata_including_manager_overrides() -> None:
    order = an_order({"l1": 3, "l2": 1})
    ledger = accrued(order)
    assert (net(ledger, "l1", 0), net(ledger, "l1", 1)) == (Decimal("30.00"), Decimal("3.00"))

    reversals = reverse_refund(ledger, a_refund("r1", {"l1": 1}), order)
    assert [(e.line_item_id, e.level, e.agent_id, e.amount) for e in reversals] == [
        ("l1", 0, "a1", Decimal("-10.00")),
        ("l1", 1, "m1", Decimal("-1.00")),
    ]
    reversal = reversals[0]
    assert reversal.kind is EntryKind.REVERSAL
    assert (reversal.occurred_at, reversal.source_event_id) == (REFUND_AT, "evt_r1")
    assert (reversal.rule_id, reversal.rule_version) == ("r1", 1)
    assert reversal.reason == "refund r1: 1 of 3 units refunded, reversing 10.00 of 30.00 in total"


def test_partial_refunds_accumulate_and_a_full_refund_nets_to_exactly_zero() -> None:
    order = an_order({"l1": 3}, price="3.33")  # 10% of 9.99 → 1.00; override 0.10
    refunds = [a_refund("r1", {"l1": 1}), a_refund("r2", {"l1": 1}), a_refund("r3", {"l1": 1})]
    ledger = apply_refunds(accrued(order), order, refunds)
    agent_reversals = [e.amount for e in ledger if e.kind is EntryKind.REVERSAL and e.level == 0]
    assert agent_reversals == [Decimal("-0.33"), Decimal("-0.34"), Decimal("-0.33")]
    assert net(ledger) == 0


def test_the_same_refund_applied_twice_gives_the_same_entries_once() -> None:
    order = an_order({"l1": 3})
    ledger = accrued(order)
    refund = a_refund("r1", {"l1": 2})
    first = reverse_refund(ledger, refund, order)
    assert reverse_refund(ledger, refund, order) == first  # replay from the same ledger
    assert reverse_refund(ledger + first, refund, order) == []  # already in the ledger
    assert reverse_refund(ledger + first, refund, order, [refund]) == []


def test_double_refund_is_clamped_to_what_was_accrued() -> None:
    order = an_order({"l1": 2})
    ledger = apply_refunds(
        accrued(order), order, [a_refund("r1", {"l1": 2}), a_refund("r2", {"l1": 2})]
    )
    assert net(ledger) == 0
    assert {e.source_event_id for e in ledger if e.kind is EntryKind.REVERSAL} == {"evt_r1"}

    over = reverse_refund(accrued(order), a_refund("r9", {"l1": 5}), order)
    assert net(accrued(order) + over) == 0


def test_refunds_arriving_out_of_order_still_net_to_zero() -> None:
    order = an_order({"l1": 3}, price="3.33")
    r1, r2, r3 = (a_refund(f"r{i}", {"l1": 1}) for i in (1, 2, 3))
    ledger = accrued(order)
    ledger += reverse_refund(ledger, r3, order)
    ledger += reverse_refund(ledger, r1, order, [r3])
    ledger += reverse_refund(ledger, r2, order, [r3, r1])
    assert net(ledger) == 0


def test_amount_only_refunds_reverse_nothing() -> None:
    order = an_order({"l1": 1})
    assert reverse_refund(accrued(order), a_refund("r1", {}), order) == []


def test_refund_of_another_order_is_refused() -> None:
    order = an_order({"l1": 1})
    with pytest.raises(CommissionError, match="refund of order 2002"):
        reverse_refund(accrued(order), a_refund("r1", {"l1": 1}, order_id="2002"), order)


def test_unattributed_orders_have_nothing_to_reverse() -> None:
    order = an_order({"l1": 1})
    assert reverse_refund([], a_refund("r1", {"l1": 1}), order) == []
    assert reverse_cancellation([], occurred_at=REFUND_AT, source_event_id="evt_c") == []


# --- cancellation ----------------------------------------------------------------------------


def test_cancellation_nets_to_zero() -> None:
    order = an_order({"l1": 3, "l2": 1})
    ledger = apply_refunds(accrued(order), order, [a_refund("r1", {"l1": 1})])
    cancel = reverse_cancellation(ledger, occurred_at=REFUND_AT, source_event_id="evt_cancel")
    assert {(e.line_item_id, e.level): e.amount for e in cancel} == {
        ("l1", 0): Decimal("-20.00"),
        ("l1", 1): Decimal("-2.00"),
        ("l2", 0): Decimal("-10.00"),
        ("l2", 1): Decimal("-1.00"),
    }
    assert all(e.kind is EntryKind.REVERSAL for e in cancel)
    assert net(ledger + cancel) == 0
    again = reverse_cancellation(ledger + cancel, occurred_at=REFUND_AT, source_event_id="evt_c2")
    assert again == []
    # A refund after the cancellation has nothing left to reverse.
    assert reverse_refund(ledger + cancel, a_refund("r2", {"l2": 1}), order) == []


# --- order edits -----------------------------------------------------------------------------


def test_edit_reprice_adds_only_the_differences() -> None:
    order = an_order({"l1": 3, "l2": 1})
    ledger = accrued(order)
    edited = an_order({"l1": 2, "l2": 1, "l3": 1})
    changes = reprice(
        ledger, accrued(edited), edit_id="e1", occurred_at=REFUND_AT, source_event_id="evt_edit"
    )
    assert {(e.line_item_id, e.level): e.amount for e in changes} == {
        ("l1", 0): Decimal("-10.00"),
        ("l1", 1): Decimal("-1.00"),
        ("l3", 0): Decimal("10.00"),
        ("l3", 1): Decimal("1.00"),
    }
    assert all(e.kind is EntryKind.REPRICE for e in changes)
    ledger += changes
    assert net(ledger) == net(accrued(edited))
    assert reprice(ledger, accrued(edited), edit_id="e1", occurred_at=REFUND_AT,
                   source_event_id="evt_edit") == []  # fmt: skip


def test_full_refund_after_an_edit_nets_to_zero() -> None:
    order = an_order({"l1": 3})
    ledger = apply_refunds(accrued(order), order, [a_refund("r1", {"l1": 1})])
    edited = an_order({"l1": 4})  # one unit added by an edit
    ledger += reprice(
        ledger, accrued(edited), edit_id="e1", occurred_at=REFUND_AT, source_event_id="evt_edit"
    )
    assert net(ledger, "l1", 0) == Decimal("30.00")  # 40.00 earned, 10.00 refunded
    ledger += reverse_refund(ledger, a_refund("r2", {"l1": 3}), edited, [a_refund("r1", {"l1": 1})])
    assert net(ledger) == 0


def test_a_cancelled_order_is_never_repriced() -> None:
    order = an_order({"l1": 1})
    ledger = accrued(order)
    ledger += reverse_cancellation(ledger, occurred_at=REFUND_AT, source_event_id="evt_cancel")
    edited = an_order({"l1": 2})
    assert reprice(ledger, accrued(edited), edit_id="e1", occurred_at=REFUND_AT,
                   source_event_id="evt_edit") == []  # fmt: skip


def test_adjustment_entry_ids_are_deterministic_and_distinct() -> None:
    order = an_order({"l1": 3})
    ledger = accrued(order)
    r1 = reverse_refund(ledger, a_refund("r1", {"l1": 1}), order)
    r2 = reverse_refund(ledger + r1, a_refund("r2", {"l1": 1}), order, [a_refund("r1", {"l1": 1})])
    cancel = reverse_cancellation(ledger + r1 + r2, occurred_at=REFUND_AT, source_event_id="c")
    ids = [e.entry_id for e in ledger + r1 + r2 + cancel]
    assert len(ids) == len(set(ids))
    assert r1 == reverse_refund(accrued(order), a_refund("r1", {"l1": 1}), order)


# --- properties ------------------------------------------------------------------------------

quantities = st.dictionaries(
    st.sampled_from(["l1", "l2", "l3"]), st.integers(min_value=1, max_value=7), min_size=1
)
prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999.99"), places=2)


@given(
    order_quantities=quantities,
    price=prices,
    overrides=st.lists(st.decimals(min_value=0, max_value=100, places=1), max_size=2),
    data=st.data(),
)
def test_any_refund_sequence_never_over_reverses_and_a_full_refund_nets_to_zero(
    order_quantities: dict[str, int],
    price: Decimal,
    overrides: list[Decimal],
    data: st.DataObject,
) -> None:
    order = an_order(order_quantities, price=str(price))
    rules = RULES.model_copy(update={"manager_overrides": tuple(overrides)})
    ledger = accrue(
        order, DECISION, rules, ("a1", "m1", "m2"), period_volume=Decimal(0), is_new_customer=False
    )
    accrued_by_key = {(e.line_item_id, e.level): e.amount for e in ledger}
    partials = data.draw(
        st.lists(
            st.dictionaries(
                st.sampled_from(sorted(order_quantities)), st.integers(min_value=0, max_value=8)
            ),
            max_size=5,
        )
    )
    refunds = [a_refund(f"r{i}", q) for i, q in enumerate(partials)]
    ledger = apply_refunds(ledger, order, refunds)
    for (line, level), amount in accrued_by_key.items():
        assert Decimal(0) <= net(ledger, line, level) <= amount

    rest = a_refund("final", order_quantities)  # refunding every unit again can only clamp
    ledger += reverse_refund(ledger, rest, order, refunds)
    assert net(ledger) == 0


# --- what analytics groups commission by (issue #16) ----------------------------------------


def test_every_entry_carries_the_orders_shop_coupon_and_link() -> None:
    decision = AttributionDecision(
        rule=AttributionRule.LAST_CLICK, agent_id="a1", program_id="p1",
        click_id="clk_" + "0" * 32, coupon_code="SPRING", explanation="", link_code="lnk-a1",
    )  # fmt: skip
    conversion = replace(an_order({"l1": 2, "l2": 1}), shop="s1.myshopify.com")
    ledger = accrue(conversion, decision, RULES, ("a1", "m1"), period_volume=Decimal(0),
                    is_new_customer=False)  # fmt: skip
    ledger += reverse_refund(ledger, a_refund("r1", {"l1": 1}), conversion)
    ledger += reverse_cancellation(ledger, occurred_at=REFUND_AT, source_event_id="evt_cancel")
    kinds = {e.kind for e in ledger}
    assert kinds == {EntryKind.ACCRUAL, EntryKind.OVERRIDE, EntryKind.REVERSAL}
    assert {(e.agent_id, e.program_id) for e in ledger} == {("a1", "p1"), ("m1", "p1")}
    assert {(e.shop, e.coupon_code, e.link_code) for e in ledger} == {
        ("s1.myshopify.com", "SPRING", "lnk-a1")
    }


def test_entries_pickled_before_the_fields_existed_load_and_adjust_with_the_orders_shop() -> None:
    conversion = replace(an_order({"l1": 2}), shop="s1.myshopify.com")
    old = accrued(conversion)[0]
    state = old.__getstate__()
    for name in ("shop", "coupon_code", "link_code"):  # as pickled by the previous version
        del state["__dict__"][name]
    restored = CommissionAccrual.__new__(CommissionAccrual)
    restored.__setstate__(state)
    assert (restored.shop, restored.coupon_code, restored.link_code) == (None, None, None)
    assert restored.model_copy(update={"shop": None}) == old.model_copy(
        update={"shop": None, "link_code": None}
    )
    reversal = reverse_refund([restored], a_refund("r1", {"l1": 2}), conversion)
    assert [(e.amount, e.shop, e.link_code) for e in reversal] == [
        (-restored.amount, "s1.myshopify.com", None)
    ]
