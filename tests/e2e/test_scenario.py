"""End to end: shoppers click agents' links, Shopify and Odoo send their webhooks over HTTP to
the ingress, and the ledger (PostgreSQL), the analytics (ClickHouse) and the API's totals end up
exactly as the program's rules say. Every component is its own process (`refstream up`).

The program (`deploy.demo_company.set_up`): 10 % of each line's net revenue, coupon beats
cookie, last click, 30-day lookback, 30 hold days; agents ana, bo, chen, dara own coupons ANA,
BO, CHEN, DARA.

Hand-computed expectations (net = price x quantity - the line's share of the coupon discount):
- O1 cites ana's 1st click; 2 x 100.00 → net 200.00 → ana 20.00. Shopify also sends
  `orders/paid` for it (same lines: no new entry). Its Odoo invoice is paid: its entry is
  approved at once (by `system:holds`), long before its 30 hold days end; the rest stay pending.
- O2 cites chen's click but carries bo's coupon BO (10 % off): coupon beats cookie → bo.
  249.00 - 24.90 = 224.10 → 22.41.
- O3 cites chen's click; lines 3 x 59.90 (179.70 → 17.97) and 1 x 34.50 (3.45) → 21.42 in two
  entries. Partial refund of 1 of the 3 units of the first line: -17.97 x 1/3 = -5.99.
  chen nets 15.43 over 3 entries.
- O4 carries DARA (10 % off 899.00): 809.10 → 80.91, then cancelled: -80.91. dara nets 0.00
  over 2 entries.
- O5 has no click and no coupon: unattributed, no entry.
- O6 cites ana's 2nd click; 1 x 120.00 → 12.00. Shopify sends `orders/updated` with the same
  lines later (no entry).
- O7 is bought by ana herself (her email) with her own coupon ANA: a self-referral, rejected →
  unattributed, no entry. 249.00 - 24.90 = 224.10 revenue.
Ledger: ana 32.00 (2 entries), bo 22.41 (1), chen 15.43 (3), dara 0.00 (2): 8 entries, 69.84.
Archive: 4 clicks + 11 Shopify webhooks + 1 Odoo invoice = 16 events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from tests.e2e import traffic
from tests.e2e.harness import (
    E2EStack,
    LedgerEntry,
    Sender,
    TenantSetup,
    analytics,
    api_ledger_totals,
    api_token,
    archived_ids,
    ledger,
    new_tenant,
    wait_for_registration,
    wait_until,
)
from tests.e2e.traffic import Line, Order

D = Decimal


@dataclass(frozen=True)
class Sent:
    tenant: TenantSetup
    sender: Sender
    orders: dict[str, Order]  # "O1" … "O7"


@pytest.fixture(scope="module")
def sent(e2e_stack: E2EStack) -> Iterator[Sent]:
    tenant = new_tenant(e2e_stack)
    wait_for_registration(e2e_stack, tenant)
    sender = Sender(e2e_stack.ingest_url)
    ana1 = sender.referral_click(tenant.link("ana"), "Mozilla/5.0 (shopper 1)")
    ana2 = sender.referral_click(tenant.link("ana"), "Mozilla/5.0 (shopper 2)")
    chen1 = sender.referral_click(tenant.link("chen"), "Mozilla/5.0 (shopper 3)")
    sender.referral_click(tenant.link("bo"), "Mozilla/5.0 (shopper 4)")  # bo's click: no order

    at = datetime.now(UTC)  # after every click: a click after its order never counts
    base = int(at.timestamp())
    orders = {
        "O1": Order(base + 1, (Line(11, 2, "100.00"),), at, cites=ana1),
        "O2": Order(base + 2, (Line(21, 1, "249.00", "24.90"),), at, coupon="BO", cites=chen1),
        "O3": Order(base + 3, (Line(31, 3, "59.90", sku="SKU-LAMP"),
                               Line(32, 1, "34.50", sku="SKU-MAT")), at, cites=chen1),
        "O4": Order(base + 4, (Line(41, 1, "899.00", "89.90", sku="SKU-DESK"),), at,
                    coupon="DARA"),
        "O5": Order(base + 5, (Line(51, 2, "34.50", sku="SKU-MAT"),), at),
        "O6": Order(base + 6, (Line(61, 1, "120.00"),), at, cites=ana2),
        "O7": Order(base + 7, (Line(71, 1, "249.00", "24.90"),), at, coupon="ANA",
                    email="ana@agents.example"),
    }  # fmt: skip
    later = at + timedelta(minutes=5)
    deliveries = [
        traffic.shopify(tenant, "orders/create", traffic.order_body(o), f"{name}-create")
        for name, o in orders.items()
    ]
    deliveries += [
        traffic.shopify(tenant, "orders/paid", traffic.order_body(orders["O1"]), "O1-paid"),
        traffic.shopify(tenant, "orders/updated", traffic.order_body(orders["O6"]), "O6-upd"),
        traffic.shopify(tenant, "refunds/create",
                        traffic.refund_body(orders["O3"], base * 10 + 3, {31: 1}, later),
                        "O3-refund"),
        traffic.shopify(tenant, "orders/cancelled", traffic.cancel_body(orders["O4"], later),
                        "O4-cancel"),
        traffic.odoo(tenant, traffic.invoice_paid_body(orders["O1"], base, "200.00"), "O1-inv"),
    ]  # fmt: skip
    sender.deliver_all(deliveries)
    names = {str(o.order_id): name for name, o in orders.items()}
    wait_until(
        "the archive to hold every acknowledged event",
        lambda: sender.all_acked <= archived_ids(e2e_stack, tenant.tenant_id),
    )
    wait_until(
        "every order to be decided",
        lambda: set(analytics(e2e_stack, tenant.tenant_id)["conversions"]) >= set(names),
    )
    wait_until(
        "the ledger to reach 8 entries", lambda: len(ledger(e2e_stack, tenant.tenant_id)) >= 8
    )
    yield Sent(tenant, sender, orders)
    sender.close()


def by_order(sent: Sent, entries: list[LedgerEntry]) -> dict[str, list[tuple[str, str, Decimal]]]:
    """order name → [(agent name, kind, amount)] sorted."""
    names = {str(o.order_id): name for name, o in sent.orders.items()}
    agents = {sent.tenant.agent(a): a for a in ("ana", "bo", "chen", "dara")}
    out: dict[str, list[tuple[str, str, Decimal]]] = {}
    for e in entries:
        out.setdefault(names[e.order_id], []).append((agents[e.agent_id], e.kind, e.amount))
    return {name: sorted(rows) for name, rows in sorted(out.items())}


def test_every_acknowledged_event_is_archived_once(sent: Sent, e2e_stack: E2EStack) -> None:
    assert dict(sent.sender.sent) == {"clicks": 4, "orders": 10, "refunds": 1, "erp": 1}
    # O1's orders/paid and O6's orders/updated carry the same order version (same updated_at)
    # as their orders/create: one event each (content-derived ids, README *Reconciliation*).
    acked = {s: len(ids) for s, ids in sent.sender.acked.items()}
    assert acked == {"clicks": 4, "orders": 8, "refunds": 1, "erp": 1}
    assert archived_ids(e2e_stack, sent.tenant.tenant_id) == sent.sender.all_acked
    assert len(sent.sender.all_acked) == 14


def test_ledger_matches_the_hand_computed_commission(sent: Sent, e2e_stack: E2EStack) -> None:
    entries = ledger(e2e_stack, sent.tenant.tenant_id)
    assert by_order(sent, entries) == {
        "O1": [("ana", "accrual", D("20.0000"))],
        "O2": [("bo", "accrual", D("22.4100"))],
        "O3": [("chen", "accrual", D("3.4500")), ("chen", "accrual", D("17.9700")),
               ("chen", "reversal", D("-5.9900"))],
        "O4": [("dara", "accrual", D("80.9100")), ("dara", "reversal", D("-80.9100"))],
        "O6": [("ana", "accrual", D("12.0000"))],
    }  # fmt: skip
    assert len({e.entry_id for e in entries}) == len(entries) == 8
    assert sum(e.amount for e in entries) == D("69.84")


def test_clickhouse_totals_match(sent: Sent, e2e_stack: E2EStack) -> None:
    t = sent.tenant
    seen = analytics(e2e_stack, t.tenant_id)
    names = {str(o.order_id): name for name, o in sent.orders.items()}
    conversions = {names[order]: row for order, row in seen["conversions"].items()}
    assert conversions == {
        "O1": ("last_click", t.agent("ana"), D("200.0000")),
        "O2": ("coupon", t.agent("bo"), D("224.1000")),
        "O3": ("last_click", t.agent("chen"), D("214.2000")),
        "O4": ("coupon", t.agent("dara"), D("809.1000")),
        "O5": ("unattributed", None, D("69.0000")),
        "O6": ("last_click", t.agent("ana"), D("120.0000")),
        "O7": ("unattributed", None, D("224.1000")),
    }
    assert seen["commission"] == {
        t.agent("ana"): (D("32.0000"), 2),
        t.agent("bo"): (D("22.4100"), 1),
        t.agent("chen"): (D("15.4300"), 3),
        t.agent("dara"): (D("0.0000"), 2),
    }
    assert seen["clicks"] == 4


def test_api_reports_the_same_totals(sent: Sent, e2e_stack: E2EStack) -> None:
    token = api_token(e2e_stack, sent.tenant)
    totals = api_ledger_totals(e2e_stack, token)
    # Every status (O1's entry is approved by its paid invoice, see below).
    assert sum(n for n, _ in totals.values()) == 8
    assert sum(amount for _, amount in totals.values()) == D("69.84")


def test_paid_odoo_invoice_approves_the_orders_held_entries(
    sent: Sent, e2e_stack: E2EStack
) -> None:
    token = api_token(e2e_stack, sent.tenant)
    order = sent.orders["O1"]

    def statuses() -> list[str]:
        response = httpx.get(
            f"{e2e_stack.api_url}/v1/ledger",
            params={"order_id": str(order.order_id)},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        response.raise_for_status()
        return [item["status"] for item in response.json()["items"]]

    # O1 was placed moments ago (30 hold days to go): only the paid invoice can approve it.
    wait_until("O1's entries to be approved", lambda: statuses() == ["approved"], timeout=15)
    others = api_ledger_totals(e2e_stack, token)
    assert others[("USD", "pending")] == (7, D("49.84"))
