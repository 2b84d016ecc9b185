"""The `refunds` analytics rows: built from Shopify refunds/create bodies, emitted by the flow for
every refund event, and written to ClickHouse idempotently by the real pipeline."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bytewax.testing import run_main

from dataflows.attribution.flow import build
from dataflows.sinks.clickhouse import COLUMNS, client_for, refund_row
from schemas.events.envelope import EventEnvelope
from schemas.settings import Settings
from tests.dataflows.builders import T0, click, click_id, days, order, shopify
from tests.dataflows.conftest import Tenant, Topics, produce
from tests.dataflows.test_flow import run


def refund_with_amounts(tenant: str, order_id: int, refund_id: int, *, at: datetime,
                        subtotals: list[str], currency: str = "EUR") -> EventEnvelope:  # fmt: skip
    body: dict[str, Any] = {
        "id": refund_id,
        "order_id": order_id,
        "created_at": at.isoformat(),
        "processed_at": at.isoformat(),
        "refund_line_items": [
            {
                "id": refund_id * 100 + i,
                "line_item_id": 1,
                "quantity": 1,
                "subtotal": float(amount),
                "subtotal_set": {
                    "shop_money": {"amount": amount, "currency_code": currency},
                    "presentment_money": {"amount": amount, "currency_code": currency},
                },
            }
            for i, amount in enumerate(subtotals)
        ],
        # Shipping refunds are not merchandise revenue: left out of the amount.
        "order_adjustments": [{"id": 9, "kind": "shipping_refund", "amount": "-4.00"}],
    }
    return shopify(tenant, "refunds/create", body, at=at, entity=str(order_id))


def as_dict(row: tuple[object, ...]) -> dict[str, object]:
    return dict(zip(COLUMNS["refunds"], row, strict=True))


def test_refund_row_of_the_real_shopify_payload(shared_fixtures: Path) -> None:
    raw = (shared_fixtures / "shopify" / "refunds_create.json").read_bytes()
    envelope = shopify("t_fx", "refunds/create", json.loads(raw), at=T0, entity="450789469")

    row = as_dict(refund_row(envelope))

    # Two refunded lines, 195.66 + 195.67 USD of merchandise (the 209.00 transaction
    # includes tax).
    assert row["refund_id"] == "509562969"
    assert row["order_id"] == "450789469"
    assert (row["amount"], row["currency"], row["fx_rate"]) == (Decimal("391.33"), "USD", None)
    assert row["line_count"] == 2
    assert row["source_event_id"] == envelope.event_id


def test_the_flow_emits_one_refund_row_per_refund_event() -> None:
    tenant = "t_flow"
    c1 = click_id("refund-rows")
    result = run(
        [
            click(tenant, c1, at=T0),
            order(tenant, 1001, at=T0 + days(1), cites=c1, lines=[(1, 2, "100.00")]),
            refund_with_amounts(tenant, 1001, 71, at=T0 + days(2), subtotals=["100.00"]),
        ]
    )
    (row,) = [as_dict(r) for r in result.rows["refunds"]]
    assert (row["tenant_id"], row["refund_id"], row["order_id"]) == (tenant, "71", "1001")
    assert (row["amount"], row["currency"]) == (Decimal("100.00"), "EUR")
    assert row["occurred_at"] == T0 + days(2)


def test_pipeline_writes_refunds_to_clickhouse_once(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t = tenant
    c1 = click_id(f"{t.tenant_id}-refunds")
    events = [
        (topics.clicks, click(t.tenant_id, c1, at=T0, agent=t.ana, program=t.program)),
        (topics.orders, order(t.tenant_id, 2001, at=T0 + days(1), cites=c1,
                              lines=[(1, 2, "100.00")])),
        (topics.refunds, refund_with_amounts(t.tenant_id, 2001, 81, at=T0 + days(2),
                                             subtotals=["60.00", "40.00"])),
        (topics.refunds, refund_with_amounts(t.tenant_id, 2001, 82, at=T0 + days(3),
                                             subtotals=["12.50"])),
    ]  # fmt: skip
    produce(stack_settings, events)

    def refunds() -> list[tuple[object, ...]]:
        client = client_for(stack_settings)
        try:
            return list(
                client.query(
                    "SELECT refund_id, order_id, amount, currency, line_count FROM refunds FINAL"
                    " WHERE tenant_id = {t:String} ORDER BY refund_id",
                    parameters={"t": t.tenant_id},
                ).result_rows
            )
        finally:
            client.close()

    def run_bounded() -> None:
        run_main(
            build(stack_settings, tail=False, input_topics=topics.inputs,
                  deadletter_topic=topics.deadletter)
        )  # fmt: skip

    run_bounded()
    expected = [
        ("81", "2001", Decimal("100.00"), "EUR", 2),
        ("82", "2001", Decimal("12.50"), "EUR", 1),
    ]
    assert refunds() == expected
    # A replay from the start writes the same keys again: still one row per refund.
    run_bounded()
    assert refunds() == expected
