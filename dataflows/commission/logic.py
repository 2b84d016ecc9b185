"""Commission maths: an attributed order's facts + rules → commission ledger entries. Pure.

Per line, the **net revenue** is `unit_price * quantity - line discounts - included tax`
(floored at 0), minus the line's share of the order-level discount (`Conversion.order_discount`,
capped at the lines' total), shared pro rata to those line nets by `allocate` — so line nets
sum exactly to the order's net revenue.

**Rounding** happens in exactly three places, always half-even to the currency's minor unit
(the rule of `schemas.money.quantize`), and every intermediate value is exact, in integers:
amounts are whole minor units of the order's currency, a percentage or flat amount is its
`Decimal`'s exact integer ratio (12.5 → 25/2, 7.125 → 57/8), and an unrounded amount is an
integer numerator over a denominator shared by the whole order, so sums, caps and remainders
compare as integers and rounding is an integer `divmod` — digit for digit what exact `Fraction`
arithmetic gives (a converted tier threshold is still compared as a `Fraction`):
1. line nets (the order-discount split above);
2. the agent's order commission: `sum(line commissions)` after the per-line cap, then the
   per-order cap, rounded once; it is then split over the lines pro rata to their unrounded
   line commissions by largest remainder (`allocate`), so the agent's line entries always sum
   exactly to the order commission — with or without a cap;
3. each manager level's order override (`percent * agent's order commission`), rounded once and
   split over the lines pro rata to the agent's line entries the same way.

Entries are per line, in shop currency, with `fx_rate` (shop → reporting currency, fixed at sale
time) recorded on each. Entry ids are `derived_id("le", tenant, order, line, kind, level)`: the
same inputs always give the same entries. Zero amounts produce no entry.

**Rules in another currency than the order's** (rules in USD, the order in EUR): the rule set's
money amounts are converted into the order's currency at `rules_rate` (order-currency units per
rules-currency unit, fixed at the order's event time; `TenantConfig.cross_rate`): flat amounts
exactly (rounded once, with the order commission, as above), tier thresholds exactly (a tier
applies when its converted `min_volume` ≤ the period volume), and caps rounded *down* to the
order currency's minor unit (a converted cap is never exceeded by rounding). Percentages need no
conversion. Without a rate for the pair, `CommissionError` (the order becomes a dead letter).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from dataflows.attribution.logic import AttributionDecision, StatusHistory
from schemas.commission_rules import CommissionRuleSet, Rate, RateKind
from schemas.compact import trusted, trusted_replace
from schemas.conversion import Conversion, ConversionLine
from schemas.ids import derived_id
from schemas.ledger import CommissionAccrual, EntryKind
from schemas.money import decimal_to_text, minor_units, quantize


class CommissionError(ValueError):
    """The inputs cannot be combined into commission (mismatched currency, program or chain)."""


def _half_even(numerator: int, denominator: int) -> int:
    """`numerator / denominator` (denominator > 0) rounded half-even to an integer, exactly."""
    whole, rest = divmod(numerator, denominator)
    twice = 2 * rest
    if twice > denominator or (twice == denominator and whole & 1):
        return whole + 1
    return whole


# Fewer units than this have at most 28 digits: `scaleb` is exact in the default context, so its
# result already has the currency's exponent and `quantize` would change nothing (a property test
# in tests/dataflows/test_commission_minor.py compares with quantizing).
_EXACT_UNITS = 10**28


def _amount(units: int, exponent: int, currency: str) -> Decimal:
    """`units` minor units of `currency` (`exponent` = its minor units) as a quantized Decimal."""
    amount = Decimal(units).scaleb(-exponent)
    if -_EXACT_UNITS < units < _EXACT_UNITS:
        return amount
    return quantize(amount, currency)


def _split(units: int, weights: Sequence[int]) -> list[int]:
    """`units` (≥ 0) split over integer `weights` (≥ 0) pro rata: each share the floor of its exact
    part, the leftover units one each to the largest remainders, ties to the earlier index; all-
    zero weights split equally. Every part has the denominator `sum(weights)`, so comparing the
    integer remainders compares the exact fractional parts."""
    if len(weights) == 1:  # the whole, weighted or not (the common one-line order)
        return [units]
    whole = sum(weights)
    if whole == 0:
        weights = [1] * len(weights)
        whole = len(weights)
    shares: list[int] = []
    remainders: list[int] = []
    for weight in weights:
        share, rest = divmod(units * weight, whole)
        shares.append(share)
        remainders.append(rest)
    leftover = units - sum(shares)
    if leftover:
        # A stable sort, also with reverse=True: equal remainders keep their index order.
        for i in sorted(range(len(shares)), key=remainders.__getitem__, reverse=True)[:leftover]:
            shares[i] += 1
    return shares


def _whole_weights(weights: Sequence[Fraction | Decimal | int]) -> list[int]:
    """Integers in exactly the proportions of `weights` (each times the lcm of the denominators)."""
    ratios = [w.as_integer_ratio() for w in weights]
    common = math.lcm(*(d for _, d in ratios))
    return [n * (common // d) for n, d in ratios]


def round_half_even(amount: Fraction, currency: str) -> Decimal:
    """Exact `amount` rounded half-even to `currency`'s minor unit (no decimal context involved)."""
    exponent = minor_units(currency)
    numerator, denominator = amount.as_integer_ratio()
    return _amount(_half_even(numerator * 10**exponent, denominator), exponent, currency)


def allocate(
    total: Decimal, weights: Sequence[Fraction | Decimal | int], currency: str
) -> list[Decimal]:
    """Split `total` over `weights` pro rata, in whole minor units, summing exactly to it.

    `total` is first quantized (half-even). Each share is the floor of its exact pro-rata part;
    the leftover minor units go one each to the largest fractional remainders, ties to the
    earlier index. Weights must be ≥ 0; if they are all 0 the split is equal. A negative total
    is split like its absolute value and negated. `CommissionError` for no weights and a
    non-zero total, or a negative weight.
    """
    amount = quantize(total, currency)
    if not weights:
        if amount != 0:
            raise CommissionError("cannot allocate a non-zero amount over nothing")
        return []
    if any(w < 0 for w in weights):
        raise CommissionError("allocation weights must be non-negative")
    # The two common cases, without converting the weights (same results as the general case).
    if amount == 0:
        return [quantize(Decimal(0), currency)] * len(weights)
    if len(weights) == 1:
        return [amount]
    exponent = minor_units(currency)
    units = int(abs(amount).scaleb(exponent))
    sign = -1 if amount < 0 else 1
    shares = _split(units, _whole_weights(weights))
    return [_amount(sign * s, exponent, currency) for s in shares]


def _nets(conversion: Conversion, exponent: int) -> tuple[list[Decimal], list[int]]:
    """Per line (in order): the net revenue as a quantized Decimal and as minor units."""
    currency = conversion.currency
    before: list[Decimal] = []
    units: list[int] = []
    for line in conversion.lines:  # one loop, not two comprehensions: each one is a call
        net = quantize(line.net_before_order_discount, currency)
        before.append(net)
        units.append(int(net.scaleb(exponent)))
    if not conversion.order_discount:
        return before, units
    discount = int(quantize(conversion.order_discount, currency).scaleb(exponent))
    discount = min(discount, sum(units))
    if discount == 0:
        return before, units
    units = [net - share for net, share in zip(units, _split(discount, units), strict=True)]
    return [_amount(net, exponent, currency) for net in units], units


def line_nets(conversion: Conversion) -> dict[str, Decimal]:
    """Net revenue per line id, after line discounts and the line's share of the order discount.

    Sums exactly to `quantize(conversion.net_revenue)`; every value is ≥ 0 and quantized.
    """
    nets, _ = _nets(conversion, minor_units(conversion.currency))
    return {line.line_id: net for line, net in zip(conversion.lines, nets, strict=True)}


@dataclass(frozen=True, slots=True)
class LineCommission:
    """The agent's commission on one line: the final (allocated) amount and how it came about."""

    line_id: str
    net: Decimal
    rate: Rate
    source: str
    raw: Fraction  # exact, after the per-line cap, before the order cap and rounding
    amount: Decimal
    reason: str


@dataclass(frozen=True, slots=True)
class OrderCommission:
    """The agent's commission on an order; `sum(line.amount) == total` always."""

    total: Decimal
    lines: tuple[LineCommission, ...]
    capped: bool


@dataclass(slots=True)  # not frozen: internal, and a frozen __init__ sets each field by a call
class _Commission:
    """`compute_commission` in minor units: line i's unrounded amount (after the per-line cap) is
    `raws[i] / denominator`; `amounts[i]` its allocated share of `total`."""

    exponent: int
    nets: list[Decimal]
    rows: list[tuple[ConversionLine, Rate, str, str]]  # line, rate, source, reason
    raws: list[int]
    denominator: int
    amounts: list[int]
    total: int
    capped: bool


def _tier_volume(
    rules: CommissionRuleSet, period_volume: Decimal, scale: Fraction | None
) -> Decimal:
    """The volume to choose `rules`' tier with, in the rules' currency: `period_volume` itself
    without a `scale`, else the highest threshold whose converted value it reaches exactly (or
    -1, below every threshold)."""
    if scale is None:
        return period_volume
    reached = [t.min_volume for t in rules.tiers if Fraction(t.min_volume) * scale <= period_volume]
    return reached[-1] if reached else Decimal(-1)


def _converted_cap(
    cap: Decimal | None, scale: Fraction | None, exponent: int
) -> tuple[int, int] | None:
    """A cap in the order currency's minor units, as (numerator, denominator): converted (with a
    `scale`), then rounded down to a minor unit."""
    if cap is None:
        return None
    numerator, denominator = cap.as_integer_ratio()
    if scale is None:
        return numerator * 10**exponent, denominator
    units = numerator * scale.numerator * 10**exponent // (denominator * scale.denominator)
    return units, 1


def _raw_line_amounts(
    conversion: Conversion,
    rules: CommissionRuleSet,
    nets: list[Decimal],
    net_units: list[int],
    *,
    exponent: int,
    period_volume: Decimal,
    is_new_customer: bool,
    scale: Fraction | None,
) -> list[tuple[ConversionLine, Rate, str, int, int, str]]:
    """Per line: (line, rate, source, numerator, denominator, how), the agent's exact commission
    in minor units before any cap being numerator / denominator."""
    rows: list[tuple[ConversionLine, Rate, str, int, int, str]] = []
    per_order: dict[str, list[int]] = {}  # rate source → row indexes sharing one flat amount
    volume = _tier_volume(rules, period_volume, scale)
    per, per_denominator = (1, 1) if scale is None else (scale.numerator, scale.denominator)
    to_minor = per * 10**exponent  # a flat amount's minor units (over per_denominator) per unit
    for line, net, units in zip(conversion.lines, nets, net_units, strict=True):
        rate, source = rules.rate_for(line, period_volume=volume, is_new_customer=is_new_customer)
        described = rate.describe(rules.currency)
        if line.quantity == 0:
            numerator, denominator, how = 0, 1, f"{described}: no units"
        elif rate.kind is RateKind.PERCENT:
            value, places = rate.value.as_integer_ratio()
            numerator, denominator = units * value, 100 * places
            how = f"{described} of {decimal_to_text(net)} net"
        elif rate.kind is RateKind.FLAT_PER_UNIT:
            value, places = rate.value.as_integer_ratio()
            numerator, denominator = value * to_minor * line.quantity, places * per_denominator
            how = f"{described} * {line.quantity}"
        else:
            per_order.setdefault(source, []).append(len(rows))
            numerator, denominator, how = 0, 1, f"share of {described}"
        rows.append((line, rate, source, numerator, denominator, how))
    for indexes in per_order.values():
        weights = [net_units[i] for i in indexes]
        if sum(weights) == 0:
            weights = [rows[i][0].quantity for i in indexes]
        whole = sum(weights)
        for i, weight in zip(indexes, weights, strict=True):
            line, rate, source, _, _, how = rows[i]
            value, places = rate.value.as_integer_ratio()
            numerator = value * to_minor * weight
            rows[i] = (line, rate, source, numerator, places * per_denominator * whole, how)
    return rows


def _compute(
    conversion: Conversion,
    rules: CommissionRuleSet,
    *,
    period_volume: Decimal,
    is_new_customer: bool,
    rules_rate: Fraction | Decimal | None,
) -> _Commission:
    currency = conversion.currency
    scale: Fraction | None = None  # rules' amounts → the order's currency; None: a rate of 1
    if rules.currency != currency:
        if rules_rate is None or rules_rate <= 0:
            raise CommissionError(
                f"rules are in {rules.currency}, the order in {currency}, and no "
                f"{rules.currency}→{currency} rate is known at the order's time"
            )
        scale = Fraction(rules_rate)
        if scale == 1:
            scale = None
    exponent = minor_units(currency)
    nets, net_units = _nets(conversion, exponent)
    rows = _raw_line_amounts(
        conversion, rules, nets, net_units, exponent=exponent, period_volume=period_volume,
        is_new_customer=is_new_customer, scale=scale,
    )  # fmt: skip
    line_cap = _converted_cap(rules.max_per_line, scale, exponent)
    order_cap = _converted_cap(rules.max_per_order, scale, exponent)
    # Everything over one common denominator: sums, caps and the split are then integer maths.
    denominators = [row[4] for row in rows]
    denominators += [cap[1] for cap in (line_cap, order_cap) if cap is not None]
    denominator = math.lcm(*denominators)
    uncapped = [row[3] * (denominator // row[4]) for row in rows]
    raws = uncapped
    if line_cap is not None:
        limit = line_cap[0] * (denominator // line_cap[1])
        raws = [min(raw, limit) for raw in uncapped]
    whole = sum(raws)
    capped = False
    if order_cap is not None:
        limit = order_cap[0] * (denominator // order_cap[1])
        capped = whole > limit
        whole = min(whole, limit)
    total = _half_even(whole, denominator)
    amounts = _split(total, raws) if rows else []
    converted = ""
    if scale is not None:
        at = f"{Decimal(scale.numerator) / Decimal(scale.denominator):.8g}"  # a label, not maths
        converted = f"; {rules.currency} amounts at {at} {currency} per {rules.currency}"
    reasons: list[tuple[ConversionLine, Rate, str, str]] = []
    for (line, rate, source, _, _, how), before, raw in zip(rows, uncapped, raws, strict=True):
        reason = f"{how} ({source})"
        if raw < before:
            reason += f"; capped at {decimal_to_text(rules.max_per_line or Decimal(0))} per line"
        if capped:
            reason += f"; order capped at {decimal_to_text(rules.max_per_order or Decimal(0))}"
        reasons.append((line, rate, source, reason + converted))
    return _Commission(exponent, nets, reasons, raws, denominator, amounts, total, capped)


def compute_commission(
    conversion: Conversion,
    rules: CommissionRuleSet,
    *,
    period_volume: Decimal,
    is_new_customer: bool,
    rules_rate: Fraction | Decimal | None = None,
) -> OrderCommission:
    """The agent's (level 0) commission on `conversion` under `rules`.

    `period_volume` is the agent's volume in the period before this order, in the order's
    currency (chooses the tier); `is_new_customer` selects the new-customer rate. Line amounts
    are ≥ 0 and sum exactly to `total`, which respects `max_per_order`; each line's unrounded
    amount respects `max_per_line`. Rules in another currency are converted at `rules_rate`
    (order-currency units per rules-currency unit; see the module docstring);
    `CommissionError` if they are and no positive `rules_rate` is given.
    """
    c = _compute(
        conversion, rules, period_volume=period_volume, is_new_customer=is_new_customer,
        rules_rate=rules_rate,
    )  # fmt: skip
    currency, one = conversion.currency, 10**c.exponent
    lines = tuple(
        LineCommission(
            line_id=line.line_id,
            net=net,
            rate=rate,
            source=source,
            raw=Fraction(raw, c.denominator * one),
            amount=_amount(units, c.exponent, currency),
            reason=reason,
        )
        for (line, rate, source, reason), net, raw, units in zip(
            c.rows, c.nets, c.raws, c.amounts, strict=True
        )
    )
    return OrderCommission(
        total=_amount(c.total, c.exponent, currency), lines=lines, capped=c.capped
    )


def entry_id(
    tenant_id: str, order_id: str, line_id: str | None, kind: EntryKind, level: int, *extra: str
) -> str:
    """The deterministic ledger entry id: `derived_id("le", tenant, order, line, kind, level, …)`.

    `extra` distinguishes entries of one kind that can repeat (agent, refund id, edit id).
    """
    # (`_value_`: an enum's `.value` is a Python-level property, measured 0.28 against 0.03 µs)
    return derived_id("le", tenant_id, order_id, line_id or "-", kind._value_, level, *extra)


def override_chain(
    chain: Sequence[str], statuses: Mapping[str, StatusHistory], at: datetime
) -> tuple[str, ...]:
    """Who is paid on an order of `chain[0]` at event time `at`: the attributed agent (whose
    status attribution already judged), then the managers of `chain` ([agent, manager,
    manager's manager, …]) that are active at `at`, in order. An inactive (paused or terminated)
    manager is skipped and **the next active manager above takes that level**, so a gap in the
    hierarchy never drops the override of the managers above it. No history: active."""
    if not chain:
        return ()
    managers = [m for m in chain[1:] if m not in statuses or statuses[m].is_active_at(at)]
    return (chain[0], *managers)


def _validate_chain(decision: AttributionDecision, agent_chain: Sequence[str]) -> None:
    if not agent_chain or agent_chain[0] != decision.agent_id:
        raise CommissionError("the agent chain must start with the attributed agent")
    if len(set(agent_chain)) != len(agent_chain):
        raise CommissionError(f"the agent chain repeats an agent: {list(agent_chain)}")


def accrue(
    conversion: Conversion,
    decision: AttributionDecision,
    rules: CommissionRuleSet,
    agent_chain: Sequence[str],
    *,
    period_volume: Decimal,
    is_new_customer: bool,
    fx_rate: Decimal = Decimal(1),
    rules_rate: Fraction | Decimal | None = None,
) -> list[CommissionAccrual]:
    """Commission entries for an attributed order: ACCRUAL per line for the agent (level 0),
    then OVERRIDE per line for each manager level that has both a percentage in
    `rules.manager_overrides` and an agent in `agent_chain` ([agent, manager, manager's
    manager, …]).

    Unattributed decisions give `[]`. Entries are PENDING, dated at the order's event time,
    carry `rules.rule_id`/`rules.version`, `fx_rate`, and what analytics groups commission by
    (the order's shop, the decision's coupon and link), and come out in a fixed order (level,
    then line order). `CommissionError` if the chain does not start with the decision's agent or
    repeats one, if the decision's program is not the rules' program, or if the rules are in
    another currency and `rules_rate` (see `compute_commission`) is missing.
    """
    if not decision.attributed or decision.agent_id is None:
        return []
    if decision.program_id is not None and decision.program_id != rules.program_id:
        raise CommissionError(
            f"decision is for program {decision.program_id}, rules for {rules.program_id}"
        )
    _validate_chain(decision, agent_chain)
    c = _compute(
        conversion, rules, period_volume=period_volume, is_new_customer=is_new_customer,
        rules_rate=rules_rate,
    )  # fmt: skip
    currency = conversion.currency
    tenant_id, order_id = conversion.tenant_id, conversion.order_id
    program_id = decision.program_id or rules.program_id
    conversion_id, occurred_at = conversion.conversion_id, conversion.occurred_at

    if not isinstance(fx_rate, Decimal):  # an int or str rate, as validation coerced it
        fx_rate = Decimal(fx_rate)
    if not fx_rate > 0:
        raise CommissionError(f"exchange rate {fx_rate} is not positive")
    for agent in agent_chain:  # a loop, not all() of a generator: a generator is a frame
        if not isinstance(agent, str):
            raise CommissionError(f"an agent id of the chain {agent_chain!r} is not text")

    made: CommissionAccrual | None = None  # the entry made last

    def entry(
        line_id: str, kind: EntryKind, level: int, units: int, reason: str
    ) -> CommissionAccrual:
        # Every value comes from validated models or is made here with its type: not validated
        # again (`trusted`; tests/dataflows/test_commission_minor.py compares). All but these
        # are the same for the order's entries: each after the first is made from the last.
        nonlocal made
        varying = {
            "entry_id": entry_id(tenant_id, order_id, line_id, kind, level),
            "agent_id": agent_chain[level],
            "line_item_id": line_id,
            "kind": kind,
            "level": level,
            "amount": _amount(units, c.exponent, currency),
            "reason": reason,
        }
        if made is not None:
            made = trusted_replace(made, **varying)
            return made
        made = trusted(
            CommissionAccrual,
            **varying,
            tenant_id=tenant_id,
            program_id=program_id,
            conversion_id=conversion_id,
            order_id=order_id,
            currency=currency,
            fx_rate=fx_rate,
            rule_id=rules.rule_id,
            rule_version=rules.version,
            occurred_at=occurred_at,
            source_event_id=conversion.source_event_id,
            shop=conversion.shop,
            coupon_code=decision.coupon_code,
            link_code=decision.link_code,
        )
        return made

    entries = [
        entry(line.line_id, EntryKind.ACCRUAL, 0, units, reason)
        for (line, _, _, reason), units in zip(c.rows, c.amounts, strict=True)
        if units != 0
    ]
    total = decimal_to_text(_amount(c.total, c.exponent, currency))
    for level, percent in enumerate(rules.manager_overrides, start=1):
        if level >= len(agent_chain):
            break
        numerator, denominator = percent.as_integer_ratio()
        level_total = _half_even(c.total * numerator, 100 * denominator)
        reason = (
            f"level {level} override: {decimal_to_text(percent)}% of agent "
            f"{agent_chain[0]}'s commission {total}"
        )
        shares = _split(level_total, c.amounts) if c.amounts else []
        entries.extend(
            entry(line.line_id, EntryKind.OVERRIDE, level, share, reason)
            for (line, *_), share in zip(c.rows, shares, strict=True)
            if share != 0
        )
    return entries
