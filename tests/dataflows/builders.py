"""Builders of the envelopes the dataflow reads (clicks, Shopify orders, refunds, Odoo invoices
and sale orders) and of a configuration snapshot, for the dataflow tests."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from dataflows.attribution.events import to_ms
from dataflows.attribution.local import LocalAttribution
from dataflows.attribution.segments import SegmentedMap
from dataflows.config import ConfigSnapshot, build_snapshot
from dataflows.stages.base import unpack
from dataflows.stages.tenant import BOOK_SEGMENT, DECIDED_SEGMENT, TenantState
from ingest import odoo
from ingest.cli import ensure_tenant
from schemas.events.click import ClickEvent
from schemas.events.envelope import EventEnvelope, Source
from schemas.settings import Settings
from tests.fixtures import DATA

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ODOO_FIXTURES = DATA / "odoo"


def click_id(n: int | str) -> str:
    return f"clk_{uuid.uuid5(uuid.NAMESPACE_URL, str(n)).hex}"


def click(
    tenant: str,
    cid: str,
    *,
    at: datetime = T0,
    agent: str | None = "agt_ana",
    program: str | None = "prg_main",
    visitor: str | None = None,
    event_id: str | None = None,
) -> EventEnvelope:
    body = ClickEvent(
        click_id=cid, tenant_id=tenant, link_code=f"link-{agent}", occurred_at=at,
        visitor_id=visitor, program_id=program, agent_id=agent,
    )  # fmt: skip
    return EventEnvelope.wrap(
        orjson.dumps(body.model_dump(mode="json")), event_id=event_id or cid, source=Source.CLICK,
        kind="click", tenant_id=tenant, entity_id=cid, occurred_at=at,
        received_at=max(at, RECEIVED),
    )  # fmt: skip


def order_body(
    order_id: int,
    *,
    at: datetime = T0,
    lines: Sequence[tuple[int, int, str]] = ((1, 1, "100.00"),),
    coupon: str | None = None,
    cites: str | None = None,
    customer: int | None = None,
    email: str | None = None,
    currency: str = "USD",
    visitor: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": order_id,
        "name": f"#{order_id}",
        "created_at": at.isoformat(),
        "processed_at": at.isoformat(),
        "updated_at": at.isoformat(),
        "currency": currency,
        "line_items": [
            {"id": line_id, "quantity": quantity, "price": price}
            for line_id, quantity, price in lines
        ],
    }
    if coupon is not None:
        body["discount_codes"] = [{"code": coupon, "amount": "0.00", "type": "fixed_amount"}]
    if cites is not None:
        body["note_attributes"] = [{"name": "_rsclid", "value": cites}]
    if visitor is not None:
        body.setdefault("note_attributes", []).append({"name": "_rsvid", "value": visitor})
    if customer is not None:
        body["customer"] = {"id": customer}
    if email is not None:
        body["email"] = email
    return body


def shopify(
    tenant: str,
    topic: str,
    body: dict[str, Any],
    *,
    at: datetime,
    entity: str,
    event_id: str | None = None,
) -> EventEnvelope:
    return EventEnvelope.wrap(
        orjson.dumps(body), event_id=event_id or f"ev-{uuid.uuid4().hex}", source=Source.SHOPIFY,
        kind=topic, tenant_id=tenant, shop=f"{tenant}.myshopify.com", entity_id=entity,
        occurred_at=at, received_at=max(at, RECEIVED),
    )  # fmt: skip


def order(
    tenant: str,
    order_id: int,
    *,
    topic: str = "orders/create",
    event_id: str | None = None,
    **facts: Any,
) -> EventEnvelope:
    body = order_body(order_id, **facts)
    at = datetime.fromisoformat(body["updated_at"])
    return shopify(tenant, topic, body, at=at, entity=str(order_id), event_id=event_id)


def refund(
    tenant: str,
    order_id: int,
    refund_id: int,
    lines: Sequence[tuple[int, int]],
    *,
    at: datetime,
    event_id: str | None = None,
) -> EventEnvelope:
    body = {
        "id": refund_id,
        "order_id": order_id,
        "created_at": at.isoformat(),
        "processed_at": at.isoformat(),
        "refund_line_items": [
            {"id": refund_id * 100 + i, "line_item_id": line_id, "quantity": quantity}
            for i, (line_id, quantity) in enumerate(lines)
        ],
    }
    return shopify(tenant, "refunds/create", body, at=at, entity=str(order_id), event_id=event_id)


def _odoo(tenant: str, fixture: str, at: datetime, **fields: Any) -> EventEnvelope:
    """An Odoo 17 notification built from a real payload, wrapped by the ingress's own code."""
    body = {**orjson.loads((ODOO_FIXTURES / fixture).read_bytes()), **fields}
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return odoo.build_envelope(raw, odoo.parse(raw), tenant, at)


def invoice(
    tenant: str, origin: str, *, at: datetime, invoice_id: int = 318, state: str = "paid"
) -> EventEnvelope:
    """A posted customer invoice of `origin` (a sale or shop order name) with `payment_state`."""
    return _odoo(
        tenant, "odoo17_account_move_invoice_posted.json", at, _id=invoice_id, id=invoice_id,
        invoice_origin=origin, name=f"INV/2026/{invoice_id:05d}", payment_state=state,
        amount_residual=0.0 if state == "paid" else 1322.5,
    )  # fmt: skip


def sale_order(tenant: str, name: str, shop_order: str, *, at: datetime) -> EventEnvelope:
    """A confirmed Odoo sale order `name` created from the shop order `shop_order`."""
    return _odoo(
        tenant, "odoo17_sale_order_confirmed.json", at, name=name, client_order_ref=shop_order
    )


def rules_body(
    program: str = "prg_main",
    *,
    percent: str = "10",
    version: int = 1,
    overrides: Sequence[str] = (),
    currency: str = "USD",
) -> dict[str, Any]:
    return {
        "rule_id": f"rule_{program}",
        "version": version,
        "program_id": program,
        "currency": currency,
        "base": {"kind": "percent", "value": percent},
        "manager_overrides": list(overrides),
    }


def snapshot(
    tenant: str,
    *,
    lookback_days: int = 30,
    coupon_beats_cookie: bool = True,
    coupons: dict[str, str] | None = None,
    agents: Sequence[tuple[str, str | None, str | None]] = (
        ("agt_ana", "agt_boss", "ana@example.com"),
        ("agt_bob", None, None),
        ("agt_boss", None, None),
    ),
    overrides: Sequence[str] = ("5",),
    hold_days: int = 30,
    currency: str = "USD",
    reporting_currency: str = "USD",
    fx_rates: Sequence[tuple[str, str, datetime]] = (),
) -> ConfigSnapshot:
    """One tenant, one program `prg_main` in `currency` (10% base, level-1 override 5%,
    `hold_days`), reporting in `reporting_currency` with `fx_rates` as (currency, rate,
    valid_from)."""
    policy = (lookback_days, "last_click", coupon_beats_cookie, 0, hold_days, currency)
    programs = [(tenant, "prg_main", *policy)]
    coupon_rows = [(tenant, code, "prg_main", agent) for code, agent in (coupons or {}).items()]
    agent_rows = [(tenant, a, parent, email) for a, parent, email in agents]
    body = rules_body(overrides=overrides, currency=currency)
    rules = [(tenant, "rule_prg_main", 1, "prg_main", body)]
    rates = [
        (tenant, c, Decimal(r), at) for c, r, at in sorted(fx_rates, key=lambda f: (f[0], f[2]))
    ]
    return build_snapshot(
        programs, coupon_rows, agent_rows, rules,
        tenant_rows=[(tenant, reporting_currency)], fx_rates=rates,
    )  # fmt: skip


def days(n: float) -> timedelta:
    return timedelta(days=n)


def money(text: str) -> Decimal:
    return Decimal(text)


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    program: str
    ana: str  # reports to boss: accrual + override
    bob: str  # owns the coupon
    boss: str
    coupon: str


def new_tenant() -> Tenant:
    s = uuid.uuid4().hex[:8]
    return Tenant(f"t_{s}", f"prg_{s}", f"agt_ana_{s}", f"agt_bob_{s}", f"agt_boss_{s}", f"BOB{s}")


def seed_tenant(settings: Settings, t: Tenant) -> None:
    """Register `t` in PostgreSQL: one program (10% base, 5% level-1 override, rules version 1),
    agents ana (reporting to boss), bob and boss, and bob's coupon (stored lower-case)."""
    with psycopg.connect(settings.postgres_url) as conn:
        ensure_tenant(conn, t.tenant_id)
        conn.execute(
            "INSERT INTO programs (id, tenant_id, name, landing_url) VALUES (%s, %s, 'P', 'x')",
            (t.program, t.tenant_id),
        )
        for agent, parent, email in ((t.boss, None, None), (t.ana, t.boss, "ana@x.test"),
                                     (t.bob, None, None)):  # fmt: skip
            conn.execute(
                "INSERT INTO agents (id, tenant_id, name, parent_agent_id, email)"
                " VALUES (%s, %s, %s, %s, %s)",
                (agent, t.tenant_id, agent, parent, email),
            )
        conn.execute(
            "INSERT INTO coupon_codes (tenant_id, code, program_id, agent_id)"
            " VALUES (%s, %s, %s, %s)",
            (t.tenant_id, t.coupon.lower(), t.program, t.bob),
        )
        body = rules_body(t.program, overrides=["5"])
        conn.execute(
            "INSERT INTO commission_rules (id, version, tenant_id, program_id, body)"
            " VALUES (%s, 1, %s, %s, %s)",
            (body["rule_id"], t.tenant_id, t.program, Jsonb(body)),
        )


def kind_of(item: object) -> str:
    """A short name for what the flow's steps emit (they tell items apart by type): parsing's
    `(table, row)` archive rows, events, collection changes and dead letters; the state's
    conversions, ledger entries, approvals and dead letters."""
    from dataflows.attribution.events import Event
    from dataflows.catalog import CollectionChange
    from schemas.events.envelope import DeadLetter
    from schemas.ledger import AttributedConversion, CommissionAccrual, EntryApproval

    names: dict[type, str] = {
        tuple: "row", Event: "event", CollectionChange: "catalog", DeadLetter: "dead",
        AttributedConversion: "conversion", CommissionAccrual: "entry", EntryApproval: "approval",
    }  # fmt: skip
    return names[type(item)]


def kinds(items: Iterable[object]) -> list[str]:
    return [kind_of(item) for item in items]


def tenant_keyed(local: LocalAttribution) -> TenantState:
    """The tenant's state as the tenant-keyed flow (before book buckets) snapshotted it: its
    books in `orders`, as stored, and nothing in `decided`."""
    old: TenantState = pickle.loads(local.tenant.snapshot())
    old.orders = SegmentedMap(BOOK_SEGMENT)
    for bucket in local.books.values():
        for order_id, stored in bucket.state.orders.items():
            occurred = to_ms(unpack(stored).conversion.occurred_at)
            old.orders.add(order_id, stored, occurred)
    old.decided = SegmentedMap(DECIDED_SEGMENT)
    return old
