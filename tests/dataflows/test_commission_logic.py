from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace
from pydantic import ValidationError

from dataflows.attribution.logic import AgentStatus, AttributionDecision, StatusHistory
from dataflows.commission.logic import (
    CommissionError,
    accrue,
    allocate,
    compute_commission,
    line_nets,
    override_chain,
)
from schemas.commission_rules import CommissionRuleSet, Rate, RateKind
from schemas.conversion import Conversion, ConversionLine
from schemas.ledger import AttributionRule, CommissionAccrual, EntryKind, EntryStatus
from schemas.money import minor_units, quantize

ORDER_AT = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def a_line(
    line_id: str,
    *,
    quantity: int = 1,
    price: str = "100.00",
    discount: str = "0",
    product: str | None = None,
    collections: Sequence[str] = (),
    included_tax: str = "0",
) -> ConversionLine:
    return ConversionLine(
        line_id=line_id,
        product_id=product,
        collection_ids=tuple(collections),
        quantity=quantity,
        unit_price=Decimal(price),
        discount=Decimal(discount),
        included_tax=Decimal(included_tax),
    )


def an_order(
    *lines: ConversionLine, currency: str = "USD", order_discount: str = "0"
) -> Conversion:
    return Conversion(
        tenant_id="t1",
        order_id="1001",
        occurred_at=ORDER_AT,
        currency=currency,
        customer_id="c1",
        lines=lines,
        order_discount=Decimal(order_discount),
        source_event_id="evt_order",
    )


def percent(value: str) -> Rate:
    return Rate(kind=RateKind.PERCENT, value=Decimal(value))


def per_unit(value: str) -> Rate:
    return Rate(kind=RateKind.FLAT_PER_UNIT, value=Decimal(value))


def per_order(value: str) -> Rate:
    return Rate(kind=RateKind.FLAT_PER_ORDER, value=Decimal(value))


def rules(**overrides: Any) -> CommissionRuleSet:
    body: dict[str, Any] = {
        "rule_id": "r1",
        "version": 3,
        "program_id": "p1",
        "currency": "USD",
        "base": percent("10"),
    }
    return CommissionRuleSet.model_validate(body | overrides)


def a_decision(agent: str = "a1", program: str | None = "p1") -> AttributionDecision:
    return AttributionDecision(
        rule=AttributionRule.COUPON,
        agent_id=agent,
        program_id=program,
        click_id=None,
        coupon_code="TENOFF",
        explanation="coupon TENOFF owned by agent a1",
    )


def accrue_for(
    conversion: Conversion,
    ruleset: CommissionRuleSet,
    *,
    chain: Sequence[str] = ("a1",),
    volume: str = "0",
    new_customer: bool = False,
    fx_rate: str = "1",
) -> list[CommissionAccrual]:
    return accrue(
        conversion,
        a_decision(chain[0]),
        ruleset,
        chain,
        period_volume=Decimal(volume),
        is_new_customer=new_customer,
        fx_rate=Decimal(fx_rate),
    )


def amounts(
    entries: Sequence[CommissionAccrual], kind: EntryKind = EntryKind.ACCRUAL
) -> dict[tuple[str | None, int], Decimal]:
    return {(e.line_item_id, e.level): e.amount for e in entries if e.kind is kind}


# --- base maths ------------------------------------------------------------------------------


def test_percent_of_line_net_revenue() -> None:
    order = an_order(
        a_line("l1", quantity=2, price="50.00", discount="10.00"),
        a_line("l2", price="19.99"),
    )
    entries = accrue_for(order, rules())
    assert amounts(entries) == {("l1", 0): Decimal("9.00"), ("l2", 0): Decimal("2.00")}
    assert [e.reason for e in entries] == [
        "10% of 90.00 net (base)",
        "10% of 19.99 net (base)",
    ]


def test_order_discount_is_shared_pro_rata_to_line_nets() -> None:
    order = an_order(
        a_line("l1", price="100.00"),
        a_line("l2", price="100.00"),
        a_line("l3", price="100.00"),
        order_discount="10.00",
    )
    # 10.00 over three equal lines: 3.34 to the first (largest remainder, ties by position).
    assert line_nets(order) == {
        "l1": Decimal("96.66"),
        "l2": Decimal("96.67"),
        "l3": Decimal("96.67"),
    }
    assert sum(line_nets(order).values()) == order.net_revenue == Decimal("290.00")


def test_order_discount_never_makes_revenue_negative() -> None:
    order = an_order(a_line("l1", price="5.00"), order_discount="9.00")
    assert line_nets(order) == {"l1": Decimal("0.00")}
    assert accrue_for(order, rules()) == []


def test_included_tax_is_not_revenue() -> None:
    order = an_order(a_line("l1", price="119.00", included_tax="19.00"))
    assert amounts(accrue_for(order, rules())) == {("l1", 0): Decimal("10.00")}


def test_flat_per_unit_and_flat_per_order() -> None:
    order = an_order(a_line("l1", quantity=3, price="10.00"), a_line("l2", price="30.00"))
    assert amounts(accrue_for(order, rules(base=per_unit("2.50")))) == {
        ("l1", 0): Decimal("7.50"),
        ("l2", 0): Decimal("2.50"),
    }
    # 20.00 once per order, spread pro rata to line nets (30.00 : 30.00).
    assert amounts(accrue_for(order, rules(base=per_order("20.00")))) == {
        ("l1", 0): Decimal("10.00"),
        ("l2", 0): Decimal("10.00"),
    }


def test_product_rate_beats_collection_rate_beats_base() -> None:
    order = an_order(
        a_line("l1", product="p-thin", collections=["sale"]),
        a_line("l2", product="p-other", collections=["sale", "new"]),
        a_line("l3", product="p-plain"),
    )
    ruleset = rules(
        product_rates=[{"product_id": "p-thin", "rate": percent("2")}],
        collection_rates=[
            {"collection_id": "new", "rate": percent("15")},
            {"collection_id": "sale", "rate": percent("5")},
        ],
    )
    entries = accrue_for(order, ruleset)
    assert amounts(entries) == {
        ("l1", 0): Decimal("2.00"),
        ("l2", 0): Decimal("15.00"),  # first collection in the rules' list order wins
        ("l3", 0): Decimal("10.00"),
    }
    assert entries[1].reason == "15% of 100.00 net (collection new)"


def test_tiers_use_the_agent_volume_before_the_order() -> None:
    ruleset = rules(
        tiers=[
            {"min_volume": "10000", "rate": percent("12")},
            {"min_volume": "50000", "rate": percent("15")},
        ]
    )
    order = an_order(a_line("l1", price="1000.00"))
    assert amounts(accrue_for(order, ruleset, volume="9999.99")) == {("l1", 0): Decimal("100.00")}
    assert amounts(accrue_for(order, ruleset, volume="10000")) == {("l1", 0): Decimal("120.00")}
    assert amounts(accrue_for(order, ruleset, volume="70000")) == {("l1", 0): Decimal("150.00")}


def test_new_customer_rate_replaces_the_base_rate() -> None:
    ruleset = rules(
        new_customer_rate=percent("20"),
        product_rates=[{"product_id": "p-thin", "rate": percent("1")}],
        tiers=[{"min_volume": "0", "rate": percent("12")}],
    )
    order = an_order(a_line("l1"), a_line("l2", product="p-thin"))
    assert amounts(accrue_for(order, ruleset, new_customer=True)) == {
        ("l1", 0): Decimal("20.00"),
        ("l2", 0): Decimal("1.00"),  # product rates still win
    }
    assert amounts(accrue_for(order, ruleset, new_customer=False))[("l1", 0)] == Decimal("12.00")


# --- caps and rounding ----------------------------------------------------------------------


def test_order_cap_scales_lines_pro_rata_and_sums_exactly() -> None:
    order = an_order(
        a_line("l1", price="100.00"), a_line("l2", price="100.00"), a_line("l3", price="100.00")
    )
    entries = accrue_for(order, rules(max_per_order="10.00"))
    assert amounts(entries) == {
        ("l1", 0): Decimal("3.34"),
        ("l2", 0): Decimal("3.33"),
        ("l3", 0): Decimal("3.33"),
    }
    assert sum(e.amount for e in entries) == Decimal("10.00")
    assert entries[0].reason.endswith("; order capped at 10.00")


def test_line_cap_bounds_each_line() -> None:
    order = an_order(a_line("l1", price="1000.00"), a_line("l2", price="20.00"))
    assert amounts(accrue_for(order, rules(max_per_line="25"))) == {
        ("l1", 0): Decimal("25.00"),
        ("l2", 0): Decimal("2.00"),
    }


def test_jpy_rounding_has_no_minor_unit() -> None:
    order = an_order(
        a_line("l1", price="1005"), a_line("l2", price="1005"), a_line("l3", price="1005"),
        currency="JPY",
    )  # fmt: skip
    entries = accrue_for(order, rules(currency="JPY", base=percent("5")))
    # 50.25 each, 150.75 in total → 151 yen, the leftover yen to the first line.
    assert [e.amount for e in entries] == [Decimal("51"), Decimal("50"), Decimal("50")]
    assert all(e.amount.as_tuple().exponent == 0 for e in entries)


def test_half_cent_rounds_half_even() -> None:
    order = an_order(a_line("l1", price="0.25"))
    assert amounts(accrue_for(order, rules()))[("l1", 0)] == Decimal("0.02")  # 0.025 → 0.02
    order = an_order(a_line("l1", price="0.35"))
    assert amounts(accrue_for(order, rules()))[("l1", 0)] == Decimal("0.04")  # 0.035 → 0.04


# --- manager overrides ------------------------------------------------------------------------


def test_manager_overrides_pay_each_level_a_share_of_the_agents_commission() -> None:
    order = an_order(a_line("l1", price="300.00"), a_line("l2", price="100.00"))
    ruleset = rules(manager_overrides=["10", "5"], max_per_order="30")
    entries = accrue_for(order, ruleset, chain=("a1", "m1", "m2", "m3"))
    assert amounts(entries) == {("l1", 0): Decimal("22.50"), ("l2", 0): Decimal("7.50")}
    assert amounts(entries, EntryKind.OVERRIDE) == {
        ("l1", 1): Decimal("2.25"),
        ("l2", 1): Decimal("0.75"),
        ("l1", 2): Decimal("1.13"),  # 5% of 30.00 = 1.50, split 3:1 by largest remainder
        ("l2", 2): Decimal("0.37"),
    }
    overrides = [e for e in entries if e.kind is EntryKind.OVERRIDE]
    assert {(e.level, e.agent_id) for e in overrides} == {(1, "m1"), (2, "m2")}
    assert overrides[0].reason == "level 1 override: 10% of agent a1's commission 30.00"


def test_override_levels_without_a_manager_are_not_paid() -> None:
    entries = accrue_for(an_order(a_line("l1")), rules(manager_overrides=["10", "5"]))
    assert {e.kind for e in entries} == {EntryKind.ACCRUAL}


# --- entries ---------------------------------------------------------------------------------


def test_entries_record_rule_version_fx_rate_and_event_time() -> None:
    order = an_order(a_line("l1"))
    (entry,) = accrue_for(order, rules(), fx_rate="0.9215")
    assert (entry.rule_id, entry.rule_version) == ("r1", 3)
    assert entry.fx_rate == Decimal("0.9215")
    assert (entry.occurred_at, entry.status) == (ORDER_AT, EntryStatus.PENDING)
    assert (entry.conversion_id, entry.source_event_id) == (order.conversion_id, "evt_order")
    assert (entry.agent_id, entry.program_id, entry.currency) == ("a1", "p1", "USD")


def test_entry_ids_are_deterministic() -> None:
    order = an_order(a_line("l1"), a_line("l2"))
    ruleset = rules(manager_overrides=["10"])
    first = accrue_for(order, ruleset, chain=("a1", "m1"))
    again = accrue_for(order, ruleset, chain=("a1", "m1"))
    assert first == again
    ids = [e.entry_id for e in first]
    assert len(set(ids)) == len(ids) == 4
    assert all(i.startswith("le_") for i in ids)
    other_tenant = replace(an_order(a_line("l1"), a_line("l2")), tenant_id="t2")
    assert not set(ids) & {e.entry_id for e in accrue_for(other_tenant, ruleset)}


def test_unattributed_orders_produce_no_entries() -> None:
    unattributed = AttributionDecision(
        rule=AttributionRule.UNATTRIBUTED,
        agent_id=None,
        program_id=None,
        click_id=None,
        coupon_code=None,
        explanation="no eligible binding, coupon or click",
    )
    entries = accrue(
        an_order(a_line("l1")),
        unattributed,
        rules(),
        (),
        period_volume=Decimal(0),
        is_new_customer=False,
    )
    assert entries == []


def test_inconsistent_inputs_are_refused() -> None:
    order = an_order(a_line("l1"))
    with pytest.raises(CommissionError, match="rules are in EUR"):
        accrue_for(order, rules(currency="EUR"))
    with pytest.raises(CommissionError, match="must start with the attributed agent"):
        accrue(order, a_decision("a1"), rules(), ["m1"], period_volume=Decimal(0),
               is_new_customer=False)  # fmt: skip
    with pytest.raises(CommissionError, match="repeats an agent"):
        accrue_for(order, rules(), chain=("a1", "m1", "a1"))
    with pytest.raises(CommissionError, match="program p2"):
        accrue(order, a_decision("a1", "p2"), rules(), ["a1"], period_volume=Decimal(0),
               is_new_customer=False)  # fmt: skip


# --- rules validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"base": {"kind": "percent", "value": "100.01"}}, "within 0..100"),
        ({"base": {"kind": "flat_per_unit", "value": "-1"}}, "greater than or equal to 0"),
        ({"max_per_order": "-0.01"}, "greater than or equal to 0"),
        ({"manager_overrides": ["101"]}, "less than or equal to 100"),
        ({"currency": "usd"}, "should match pattern"),
        ({"version": 0}, "greater than or equal to 1"),
        (
            {
                "tiers": [
                    {"min_volume": "5000", "rate": {"kind": "percent", "value": "12"}},
                    {"min_volume": "1000", "rate": {"kind": "percent", "value": "11"}},
                ]
            },
            "strictly ascending",
        ),
        (
            {
                "product_rates": [
                    {"product_id": "p", "rate": {"kind": "percent", "value": "1"}},
                    {"product_id": "p", "rate": {"kind": "percent", "value": "2"}},
                ]
            },
            "only one rate",
        ),
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"currency": "JPY", "max_per_order": "10.5"}, "whole number of JPY minor units"),
    ],
)
def test_invalid_rules_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        rules(**overrides)


def test_rules_round_trip_through_json() -> None:
    ruleset = rules(
        tiers=[{"min_volume": "10000", "rate": percent("12")}],
        new_customer_rate=per_order("15.00"),
        collection_rates=[{"collection_id": "sale", "rate": per_unit("0.50")}],
        manager_overrides=["10", "2.5"],
        max_per_order="500.00",
        hold_days=14,
    )
    body = orjson.loads(ruleset.model_dump_json())
    assert body["tiers"][0]["min_volume"] == "10000"
    assert CommissionRuleSet.model_validate(body) == ruleset


# --- properties ------------------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=Decimal("5000"), places=2)
lines_strategy = st.lists(
    st.builds(
        lambda qty, price, discount_share: a_line(
            "x", quantity=qty, price=str(price), discount=str(price * qty * discount_share // 1)
        ),
        st.integers(min_value=0, max_value=20),
        prices,
        st.sampled_from([Decimal(0), Decimal("0.1"), Decimal("0.5")]),
    ),
    min_size=1,
    max_size=8,
).map(lambda ls: tuple(replace(line, line_id=f"l{i}") for i, line in enumerate(ls)))
rates = st.one_of(
    st.builds(percent, st.decimals(min_value=0, max_value=100, places=3).map(str)),
    st.builds(per_unit, st.decimals(min_value=0, max_value=50, places=2).map(str)),
    st.builds(per_order, st.decimals(min_value=0, max_value=50, places=2).map(str)),
)
currencies = st.sampled_from(["USD", "JPY", "KWD"])


@given(
    lines=lines_strategy,
    base=rates,
    currency=currencies,
    order_discount=prices,
    cap=st.none() | st.decimals(min_value=0, max_value=500, places=2),
    line_cap=st.none() | st.decimals(min_value=0, max_value=100, places=2),
    overrides=st.lists(st.decimals(min_value=0, max_value=100, places=2), max_size=3),
)
def test_line_entries_always_sum_to_the_order_commission(
    lines: tuple[ConversionLine, ...],
    base: Rate,
    currency: str,
    order_discount: Decimal,
    cap: Decimal | None,
    line_cap: Decimal | None,
    overrides: list[Decimal],
) -> None:
    order = an_order(*lines, currency=currency, order_discount=str(order_discount))
    cap = None if cap is None else quantize(cap, currency)
    line_cap = None if line_cap is None else quantize(line_cap, currency)
    ruleset = rules(
        base=base, currency=currency, max_per_order=cap, max_per_line=line_cap,
        manager_overrides=overrides,
    )  # fmt: skip
    commission = compute_commission(order, ruleset, period_volume=Decimal(0), is_new_customer=False)
    assert sum(line.amount for line in commission.lines) == commission.total
    assert all(line.amount >= 0 for line in commission.lines)
    if cap is not None:
        assert commission.total <= cap
    entries = accrue_for(order, ruleset, chain=("a1", "m1", "m2", "m3"))
    assert sum(e.amount for e in entries if e.level == 0) == commission.total
    for level, pct in enumerate(overrides, start=1):
        level_sum = sum(e.amount for e in entries if e.level == level)
        exact = Fraction(commission.total) * Fraction(pct) / 100
        half_minor_unit = Fraction(1, 2 * 10 ** minor_units(currency))
        assert abs(Fraction(level_sum) - exact) <= half_minor_unit
    assert len({e.entry_id for e in entries}) == len(entries)


@given(
    total=st.decimals(min_value=-10000, max_value=10000, places=2),
    weights=st.lists(st.decimals(min_value=0, max_value=1000, places=4), min_size=1, max_size=10),
)
def test_allocation_sums_exactly_and_stays_within_a_minor_unit(
    total: Decimal, weights: list[Decimal]
) -> None:
    shares = allocate(total, weights, "USD")
    assert sum(shares) == total
    parts = [Fraction(w) for w in weights] if sum(weights) else [Fraction(1)] * len(weights)
    for part, share in zip(parts, shares, strict=True):
        exact = Fraction(total) * part / sum(parts)
        assert abs(Fraction(share) - exact) < Fraction(1, 100)


@given(
    total=st.decimals(min_value=-10000, max_value=10000, places=3),
    weight=st.decimals(min_value=0, max_value=1000, places=4),
    zeros=st.integers(min_value=1, max_value=5),
)
def test_allocation_shortcuts_match_the_general_split(
    total: Decimal, weight: Decimal, zeros: int
) -> None:
    # One weight: the whole amount, rounded; zero total: positive zeros in the minor unit.
    rounded = quantize(total, "USD")
    expected = "0.00" if rounded == 0 else str(rounded)
    assert [str(s) for s in allocate(total, [weight], "USD")] == [expected]
    assert [str(s) for s in allocate(Decimal("-0.004"), [weight] * zeros, "USD")] == [
        "0.00"
    ] * zeros


# --- rules in another currency than the order's -----------------------------------------------

EUR_PER_USD = Fraction(100, 108)  # 1 EUR = 1.08 USD


def test_flat_amounts_of_usd_rules_are_converted_into_an_eur_order_at_the_sale_rate() -> None:
    order = an_order(a_line("l1", quantity=2), a_line("l2"), currency="EUR")
    ruleset = rules(base=per_unit("5"), manager_overrides=["10"])
    entries = accrue(
        order, a_decision("a1"), ruleset, ["a1", "m1"], period_volume=Decimal(0),
        is_new_customer=False, fx_rate=Decimal("1.08"), rules_rate=EUR_PER_USD,
    )  # fmt: skip
    accruals = {e.line_item_id: e.amount for e in entries if e.kind is EntryKind.ACCRUAL}
    # 15 USD = 13.888… EUR, rounded once: 13.89, split 2:1 by largest remainder.
    assert accruals == {"l1": Decimal("9.26"), "l2": Decimal("4.63")}
    assert sum(e.amount for e in entries if e.level == 1) == Decimal("1.39")  # 10 % of 13.89
    assert {e.currency for e in entries} == {"EUR"}
    assert {e.fx_rate for e in entries} == {Decimal("1.08")}
    assert entries[0].reason.endswith("; USD amounts at 0.92592593 EUR per USD")


def test_converted_caps_round_down_and_tier_thresholds_compare_exactly() -> None:
    ruleset = rules(
        base=percent("10"), max_per_order="10.00",
        tiers=[{"min_volume": "1080", "rate": percent("50")}],
    )  # fmt: skip
    order = an_order(a_line("l1", price="1000.00"), currency="EUR")

    def total(volume: str) -> Decimal:
        return compute_commission(
            order, ruleset, period_volume=Decimal(volume), is_new_customer=False,
            rules_rate=EUR_PER_USD,
        ).total  # fmt: skip

    assert total("0") == Decimal("9.25")  # cap 10 USD = 9.259… EUR, rounded down
    flat = rules(base=per_order("0"), tiers=[{"min_volume": "1080", "rate": per_order("10.80")}])

    def tiered(volume: str) -> Decimal:
        return compute_commission(
            order, flat, period_volume=Decimal(volume), is_new_customer=False,
            rules_rate=EUR_PER_USD,
        ).total  # fmt: skip

    assert tiered("999.99") == Decimal("0.00")  # 1080 USD = exactly 1000 EUR
    assert tiered("1000") == Decimal("10.00")  # 10.80 USD = 10.00 EUR


def test_rules_in_another_currency_without_a_rate_are_refused() -> None:
    order = an_order(a_line("l1"), currency="EUR")
    with pytest.raises(CommissionError, match="no USD→EUR rate is known"):
        compute_commission(order, rules(), period_volume=Decimal(0), is_new_customer=False)
    same = compute_commission(
        an_order(a_line("l1")), rules(), period_volume=Decimal(0), is_new_customer=False,
        rules_rate=Fraction(2),
    )  # fmt: skip
    assert same.total == Decimal("10.00")  # one currency: the rate is not used


# --- overrides past inactive managers ----------------------------------------------------------


def test_an_inactive_manager_is_skipped_and_the_next_active_one_takes_the_level() -> None:
    chain = ("a1", "m1", "m2", "m3")
    gone = StatusHistory(((ORDER_AT, AgentStatus.TERMINATED),))
    paused_later = StatusHistory(((ORDER_AT.replace(year=2026), AgentStatus.PAUSED),))
    statuses = {"m1": gone, "m3": paused_later}
    assert override_chain(chain, statuses, ORDER_AT) == ("a1", "m2", "m3")
    assert override_chain(chain, statuses, ORDER_AT.replace(year=2024)) == chain  # before
    assert override_chain(("a1",), statuses, ORDER_AT) == ("a1",)

    entries = accrue_for(
        an_order(a_line("l1")), rules(manager_overrides=["10", "5"]),
        chain=override_chain(chain, statuses, ORDER_AT),
    )  # fmt: skip
    paid = {(e.agent_id, e.level): e.amount for e in entries}
    # m2 takes level 1 (10 % of 10.00), m3 level 2 (5 %); m1 gets nothing.
    assert paid == {("a1", 0): Decimal("10.00"), ("m2", 1): Decimal("1.00"),
                    ("m3", 2): Decimal("0.50")}  # fmt: skip
