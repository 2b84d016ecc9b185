"""Commission rule sets: what an agent earns on an order line, as versioned data.

A `CommissionRuleSet` is stored as JSON (`commission_rules.body`, jsonb) and never edited in
place: a change is version n+1, and every ledger entry records the `rule_id`/`rule_version` it
was computed with. `CommissionRuleSet.model_validate(body)` is the only way a body becomes rules,
so an invalid body is refused where it is saved.

Which rate applies to a line (first that applies):
1. a **product** rate for the line's product;
2. a **collection** rate: the first entry of `collection_rates` (list order is priority) whose
   collection the line's product belongs to;
3. the **new-customer** rate, on every line of a customer's first order;
4. a **tier** rate: the tier with the highest `min_volume` ≤ the agent's volume in the period
   *before* this order (the order's own revenue never lifts itself into a tier, so the result
   depends only on state known before the order and replays identically);
5. the **base** rate.

A rate is a percentage of the line's net revenue, a flat amount per unit sold, or a flat amount
per order (paid once per order for all lines using that rate, spread over them pro rata).
Caps (`max_per_line`, `max_per_order`, whole minor units of `currency`) bound the agent's
commission; manager overrides are
paid on top of it, level k receiving `manager_overrides[k-1]` % *of the agent's (capped)
commission* — not of revenue, and not of the level below's override.
Money amounts (flat rates, caps, tier volumes) are in `currency`, the program's; an order in
another currency gets them converted at the rate of its sale (`dataflows.commission.logic`).
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from itertools import pairwise
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.conversion import ConversionLine
from schemas.money import CurrencyCode, DecimalStr, decimal_to_text, quantize

Percent = Annotated[DecimalStr, Field(ge=0, le=100)]
Amount = Annotated[DecimalStr, Field(ge=0)]
_NonEmpty = Annotated[str, Field(min_length=1)]


class RateKind(StrEnum):
    PERCENT = "percent"  # of the line's net revenue
    FLAT_PER_UNIT = "flat_per_unit"
    FLAT_PER_ORDER = "flat_per_order"


class Rate(BaseModel):
    """A percentage (0..100) of line net revenue, or a non-negative flat amount."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RateKind
    value: Amount

    @model_validator(mode="after")
    def _percent_at_most_100(self) -> Rate:
        if self.kind is RateKind.PERCENT and self.value > 100:
            raise ValueError("a percentage rate must be within 0..100")
        return self

    def describe(self, currency: str) -> str:
        """Human-readable: `12%`, `5.00 USD per unit`, `20.00 USD per order`."""
        value = decimal_to_text(self.value)
        if self.kind is RateKind.PERCENT:
            return f"{value}%"
        unit = "unit" if self.kind is RateKind.FLAT_PER_UNIT else "order"
        return f"{value} {currency} per {unit}"


class ProductRate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    product_id: _NonEmpty
    rate: Rate


class CollectionRate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    collection_id: _NonEmpty
    rate: Rate


class Tier(BaseModel):
    """Applies when the agent's period volume before the order is ≥ `min_volume`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_volume: Amount
    rate: Rate


class CommissionRuleSet(BaseModel):
    """One version of a program's commission rules (see the module docstring for semantics)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: _NonEmpty
    version: Annotated[int, Field(ge=1)]
    program_id: _NonEmpty
    currency: CurrencyCode
    base: Rate
    product_rates: tuple[ProductRate, ...] = ()
    collection_rates: tuple[CollectionRate, ...] = ()
    tiers: tuple[Tier, ...] = Field(default=(), description="Strictly ascending min_volume.")
    new_customer_rate: Rate | None = None
    max_per_order: Amount | None = None
    max_per_line: Amount | None = None
    manager_overrides: tuple[Percent, ...] = Field(
        default=(), description="Level 1, 2, …: percent of the agent's commission."
    )
    hold_days: Annotated[int, Field(ge=0)] = 30

    @model_validator(mode="after")
    def _consistent(self) -> CommissionRuleSet:
        volumes = [tier.min_volume for tier in self.tiers]
        if any(a >= b for a, b in pairwise(volumes)):
            raise ValueError("tiers must be sorted by strictly ascending min_volume")
        products = [p.product_id for p in self.product_rates]
        if len(products) != len(set(products)):
            raise ValueError("a product may have only one rate")
        collections = [c.collection_id for c in self.collection_rates]
        if len(collections) != len(set(collections)):
            raise ValueError("a collection may have only one rate")
        for name, cap in (
            ("max_per_order", self.max_per_order),
            ("max_per_line", self.max_per_line),
        ):
            # A cap off the currency's grid could be exceeded by rounding to it.
            if cap is not None and quantize(cap, self.currency) != cap:
                raise ValueError(f"{name} must be a whole number of {self.currency} minor units")
        return self

    def tier_for(self, period_volume: Decimal) -> Tier | None:
        """The tier reached by `period_volume` (the agent's volume before this order)."""
        reached = [tier for tier in self.tiers if tier.min_volume <= period_volume]
        return reached[-1] if reached else None

    def rate_for(
        self, line: ConversionLine, *, period_volume: Decimal, is_new_customer: bool
    ) -> tuple[Rate, str]:
        """The rate that applies to `line` and a short label of where it came from."""
        for product in self.product_rates:
            if product.product_id == line.product_id:
                return product.rate, f"product {product.product_id}"
        for collection in self.collection_rates:
            if collection.collection_id in line.collection_ids:
                return collection.rate, f"collection {collection.collection_id}"
        if is_new_customer and self.new_customer_rate is not None:
            return self.new_customer_rate, "new customer"
        tier = self.tier_for(period_volume)
        if tier is not None:
            return tier.rate, f"tier ≥ {decimal_to_text(tier.min_volume)}"
        return self.base, "base"
