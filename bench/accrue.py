"""`accrue` in process: the integer implementation against the Fraction one it replaced (issue 19).

    .venv/bin/python -m bench.accrue [--passes 15] [--calls 2000]

Times `dataflows.commission.logic.accrue` and the Fraction implementation kept as the property
tests' oracle (`tests.dataflows.commission_reference`) on the same inputs, alternating the two in
every pass so that both see the same load on a shared machine; prints the best pass of each in
µs per call, with the load average. Orders: the shape `bench.order_path` feeds (one line at
100.00, 10 % base, a 5 % level-1 override), the Shopify fixture `orders_create.json` (one line,
a discount allocation) and a six-line order with an order discount, caps, three override levels
and a rule set in another currency. Asserts that both give equal entries; prints figures.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from dataflows.attribution.logic import AttributionDecision
from dataflows.commission import logic
from schemas.commission_rules import CommissionRuleSet
from schemas.conversion import Conversion, ConversionLine, conversion_from_shopify
from schemas.events.shopify import ShopifyOrder
from schemas.ledger import AttributionRule
from tests.dataflows import commission_reference as reference
from tests.dataflows.builders import order_body, rules_body
from tests.fixtures import DATA

Call = Callable[[], object]


def _decision(agent: str, program: str) -> AttributionDecision:
    return AttributionDecision(
        rule=AttributionRule.LAST_CLICK, agent_id=agent, program_id=program, click_id="clk_1",
        coupon_code=None, explanation="bench",
    )  # fmt: skip


def _shopify(body: dict[str, Any] | bytes) -> Conversion:
    order = (
        ShopifyOrder.model_validate_json(body)
        if isinstance(body, bytes)
        else ShopifyOrder.model_validate(body)
    )
    return conversion_from_shopify(order, tenant_id="t_bench", source_event_id="ev_bench")


def cases() -> list[tuple[str, dict[str, Any]]]:
    """(label, keyword arguments of `accrue`) of the orders timed."""
    simple = rules_body("prg_main", overrides=["5"])
    rules = CommissionRuleSet.model_validate(simple)
    chain = ("agt_ana", "agt_boss")
    common = {
        "decision": _decision("agt_ana", "prg_main"),
        "agent_chain": chain,
        "period_volume": Decimal("1234.50"),
        "is_new_customer": False,
        "fx_rate": Decimal(1),
        "rules_rate": Fraction(1),
    }
    fixture = (DATA / "shopify" / "orders_create.json").read_bytes()
    facts = [
        (1, "199.00", "17.91", "0"), (3, "24.99", "0", "4.17"), (2, "5.00", "1.00", "0"),
        (1, "1250.00", "0", "0"), (0, "10.00", "0", "0"), (7, "0.99", "0.07", "0"),
    ]  # fmt: skip
    lines = tuple(
        ConversionLine(
            line_id=f"l{i}",
            product_id=f"p{i}",
            quantity=quantity,
            unit_price=Decimal(price),
            discount=Decimal(discount),
            included_tax=Decimal(tax),
        )
        for i, (quantity, price, discount, tax) in enumerate(facts)
    )
    big = Conversion(
        tenant_id="t_bench", order_id="9001", occurred_at=datetime(2026, 11, 1, tzinfo=UTC),
        currency="EUR", lines=lines, order_discount=Decimal("12.34"), source_event_id="ev_bench",
    )  # fmt: skip
    mixed = CommissionRuleSet.model_validate(
        simple
        | {
            "base": {"kind": "percent", "value": "7.125"},
            "product_rates": [
                {"product_id": "p1", "rate": {"kind": "flat_per_unit", "value": "0.75"}}
            ],
            "collection_rates": [],
            "tiers": [{"min_volume": "1000", "rate": {"kind": "percent", "value": "12.5"}}],
            "max_per_line": "60.00",
            "max_per_order": "95.00",
            "manager_overrides": ["10", "2.5", "0.333"],
        }
    )  # fmt: skip
    return [
        ("bench.order_path order (1 line, 1 override)",
         common | {"conversion": _shopify(order_body(1_000_001)), "rules": rules}),
        ("fixture orders_create.json (1 line)",
         common | {"conversion": _shopify(fixture), "rules": rules}),
        ("6 lines, EUR order, USD rules, caps, 3 levels",
         common | {"conversion": big, "rules": mixed, "rules_rate": Fraction(100, 108),
                   "agent_chain": ("agt_ana", "agt_boss", "agt_top", "agt_root")}),
    ]  # fmt: skip


def _best(calls: dict[str, Call], passes: int, n: int) -> dict[str, float]:
    """Best pass of each call in µs, the calls alternating within every pass."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(passes):
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(n):
                call()
            best[name] = min(best[name], (time.perf_counter() - started) / n * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passes", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    print("accrue, µs per call, best of", args.passes, "passes of", args.calls, "calls")
    for label, kwargs in cases():
        new = logic.accrue(**kwargs)
        old = reference.accrue(**kwargs)
        assert new == old, label
        assert [e.model_dump_json() for e in new] == [e.model_dump_json() for e in old], label
        best = _best(
            {"fraction": lambda k=kwargs: reference.accrue(**k),
             "integer": lambda k=kwargs: logic.accrue(**k)},
            args.passes, args.calls,
        )  # fmt: skip
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"  {label:<46} {len(new)} entries  fraction {best['fraction']:7.1f}  "
            f"integer {best['integer']:7.1f}  ({best['fraction'] / best['integer']:.2f}x)"
            f"  load {load}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
