"""The Fraction implementation of `dataflows.commission.logic`, kept as the oracle for the
property tests (`tests/dataflows/test_commission_minor.py`).

This is the commission maths exactly as it was before it moved to integer minor units (issue 19):
every intermediate value an exact `Fraction`, rounded half-even in the three places the logic
module's docstring names. Do not optimise or "fix" it: its only job is to say what the cents
were. `override_chain` (not maths) is left out; `CommissionError` is the logic module's, so both
implementations raise the same exception type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from dataflows.attribution.logic import AttributionDecision
from dataflows.commission.logic import CommissionError
from schemas.commission_rules import CommissionRuleSet, Rate, RateKind
from schemas.conversion import Conversion, ConversionLine
from schemas.ids import derived_id
from schemas.ledger import CommissionAccrual, EntryKind
from schemas.money import decimal_to_text, minor_units, quantize


def round_half_even(amount: Fraction, currency: str) -> Decimal:
    """Exact `amount` rounded half-even to `currency`'s minor unit (no decimal context involved)."""
    exponent = minor_units(currency)
    units = round(amount * 10**exponent)  # Fraction rounds half to even, exactly
    return quantize(Decimal(units).scaleb(-exponent), currency)


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
    # The two common cases, without Fraction arithmetic (same results as the general case).
    if amount == 0:
        return [quantize(Decimal(0), currency)] * len(weights)
    if len(weights) == 1:
        return [amount]
    parts = [Fraction(w) for w in weights]
    if sum(parts) == 0:
        parts = [Fraction(1)] * len(parts)
    exponent = minor_units(currency)
    units = int(abs(amount).scaleb(exponent))
    whole = sum(parts)
    exact = [units * p / whole for p in parts]
    shares = [math.floor(e) for e in exact]
    leftover = units - sum(shares)
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[:leftover]:
        shares[i] += 1
    sign = -1 if amount < 0 else 1
    return [quantize(Decimal(sign * s).scaleb(-exponent), currency) for s in shares]


def line_nets(conversion: Conversion) -> dict[str, Decimal]:
    """Net revenue per line id, after line discounts and the line's share of the order discount.

    Sums exactly to `quantize(conversion.net_revenue)`; every value is ≥ 0 and quantized.
    """
    currency = conversion.currency
    before = [quantize(line.net_before_order_discount, currency) for line in conversion.lines]
    discount = min(quantize(conversion.order_discount, currency), sum(before, Decimal(0)))
    shares = allocate(discount, before, currency)
    return {
        line.line_id: net - share
        for line, net, share in zip(conversion.lines, before, shares, strict=True)
    }


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


def _tier_volume(rules: CommissionRuleSet, period_volume: Decimal, scale: Fraction) -> Decimal:
    """The volume to choose `rules`' tier with, in the rules' currency: `period_volume` itself
    when `scale` is 1, else the highest threshold whose converted value it reaches exactly (or
    -1, below every threshold)."""
    if scale == 1:
        return period_volume
    reached = [t.min_volume for t in rules.tiers if Fraction(t.min_volume) * scale <= period_volume]
    return reached[-1] if reached else Decimal(-1)


def _converted_cap(cap: Decimal | None, scale: Fraction, currency: str) -> Fraction | None:
    """A cap in the order's currency: converted, then rounded down to a minor unit."""
    if cap is None:
        return None
    if scale == 1:
        return Fraction(cap)
    exponent = minor_units(currency)
    return Fraction(math.floor(Fraction(cap) * scale * 10**exponent), 10**exponent)


def _raw_line_amounts(
    conversion: Conversion,
    rules: CommissionRuleSet,
    nets: dict[str, Decimal],
    *,
    period_volume: Decimal,
    is_new_customer: bool,
    scale: Fraction = Fraction(1),
) -> list[tuple[ConversionLine, Rate, str, Fraction, str]]:
    rows: list[tuple[ConversionLine, Rate, str, Fraction, str]] = []
    per_order: dict[str, list[int]] = {}  # rate source → row indexes sharing one flat amount
    volume = _tier_volume(rules, period_volume, scale)
    for line in conversion.lines:
        rate, source = rules.rate_for(line, period_volume=volume, is_new_customer=is_new_customer)
        net = nets[line.line_id]
        described = rate.describe(rules.currency)
        if line.quantity == 0:
            raw, how = Fraction(0), f"{described}: no units"
        elif rate.kind is RateKind.PERCENT:
            raw = Fraction(net) * Fraction(rate.value) / 100
            how = f"{described} of {decimal_to_text(net)} net"
        elif rate.kind is RateKind.FLAT_PER_UNIT:
            raw = Fraction(rate.value) * scale * line.quantity
            how = f"{described} * {line.quantity}"
        else:
            per_order.setdefault(source, []).append(len(rows))
            raw, how = Fraction(0), f"share of {described}"
        rows.append((line, rate, source, raw, how))
    for indexes in per_order.values():
        rate = rows[indexes[0]][1]
        weights = [Fraction(nets[rows[i][0].line_id]) for i in indexes]
        if sum(weights) == 0:
            weights = [Fraction(rows[i][0].quantity) for i in indexes]
        whole = sum(weights)
        for i, weight in zip(indexes, weights, strict=True):
            line, rate, source, _, how = rows[i]
            rows[i] = (line, rate, source, Fraction(rate.value) * scale * weight / whole, how)
    return rows


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
    currency = conversion.currency
    scale = Fraction(1)
    if rules.currency != currency:
        if rules_rate is None or rules_rate <= 0:
            raise CommissionError(
                f"rules are in {rules.currency}, the order in {currency}, and no "
                f"{rules.currency}→{currency} rate is known at the order's time"
            )
        scale = Fraction(rules_rate)
    nets = line_nets(conversion)
    rows = _raw_line_amounts(
        conversion, rules, nets, period_volume=period_volume, is_new_customer=is_new_customer,
        scale=scale,
    )  # fmt: skip
    line_cap = _converted_cap(rules.max_per_line, scale, currency)
    raws = [min(raw, line_cap) if line_cap is not None else raw for *_, raw, _ in rows]
    uncapped = sum(raws, Fraction(0))
    order_cap = _converted_cap(rules.max_per_order, scale, currency)
    capped = order_cap is not None and uncapped > order_cap
    total = round_half_even(
        min(uncapped, order_cap) if order_cap is not None else uncapped, currency
    )
    amounts = allocate(total, raws, currency)
    converted = ""
    if scale != 1:
        at = f"{Decimal(scale.numerator) / Decimal(scale.denominator):.8g}"  # a label, not maths
        converted = f"; {rules.currency} amounts at {at} {currency} per {rules.currency}"
    lines = []
    for (line, rate, source, raw, how), capped_raw, amount in zip(rows, raws, amounts, strict=True):
        reason = f"{how} ({source})"
        if capped_raw < raw:
            reason += f"; capped at {decimal_to_text(rules.max_per_line or Decimal(0))} per line"
        if capped:
            reason += f"; order capped at {decimal_to_text(rules.max_per_order or Decimal(0))}"
        reason += converted
        lines.append(
            LineCommission(
                line_id=line.line_id,
                net=nets[line.line_id],
                rate=rate,
                source=source,
                raw=capped_raw,
                amount=amount,
                reason=reason,
            )
        )
    return OrderCommission(total=total, lines=tuple(lines), capped=capped)


def entry_id(
    tenant_id: str, order_id: str, line_id: str | None, kind: EntryKind, level: int, *extra: str
) -> str:
    """The deterministic ledger entry id: `derived_id("le", tenant, order, line, kind, level, …)`.

    `extra` distinguishes entries of one kind that can repeat (agent, refund id, edit id).
    """
    return derived_id("le", tenant_id, order_id, line_id or "-", kind.value, level, *extra)


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
    carry `rules.rule_id`/`rules.version` and `fx_rate`, and come out in a fixed order (level,
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
    commission = compute_commission(
        conversion, rules, period_volume=period_volume, is_new_customer=is_new_customer,
        rules_rate=rules_rate,
    )  # fmt: skip

    def entry(
        line_id: str, kind: EntryKind, level: int, amount: Decimal, reason: str
    ) -> CommissionAccrual:
        return CommissionAccrual(
            entry_id=entry_id(conversion.tenant_id, conversion.order_id, line_id, kind, level),
            tenant_id=conversion.tenant_id,
            agent_id=agent_chain[level],
            program_id=decision.program_id or rules.program_id,
            conversion_id=conversion.conversion_id,
            order_id=conversion.order_id,
            line_item_id=line_id,
            kind=kind,
            level=level,
            amount=amount,
            currency=conversion.currency,
            fx_rate=fx_rate,
            rule_id=rules.rule_id,
            rule_version=rules.version,
            occurred_at=conversion.occurred_at,
            reason=reason,
            source_event_id=conversion.source_event_id,
            # What analytics groups commission by (not money): as `accrue` writes them.
            shop=conversion.shop,
            coupon_code=decision.coupon_code,
            link_code=decision.link_code,
        )

    entries = [
        entry(line.line_id, EntryKind.ACCRUAL, 0, line.amount, line.reason)
        for line in commission.lines
        if line.amount != 0
    ]
    agent_amounts = [line.amount for line in commission.lines]
    for level, percent in enumerate(rules.manager_overrides, start=1):
        if level >= len(agent_chain):
            break
        level_total = round_half_even(
            Fraction(commission.total) * Fraction(percent) / 100, conversion.currency
        )
        reason = (
            f"level {level} override: {decimal_to_text(percent)}% of agent "
            f"{agent_chain[0]}'s commission {decimal_to_text(commission.total)}"
        )
        shares = allocate(level_total, agent_amounts, conversion.currency)
        entries.extend(
            entry(line.line_id, EntryKind.OVERRIDE, level, share, reason)
            for line, share in zip(commission.lines, shares, strict=True)
            if share != 0
        )
    return entries
