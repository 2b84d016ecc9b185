"""A reference model of the attribution engine, for the differential test
(`tests/dataflows/test_differential.py`).

One plain function, `reference_ledger`, reads the whole input at once, sorted in event time
(occurred time, then event id), and says what the ledger and the decisions should be. It is
written to be obviously right, not fast: no state machine, no watermarks, no expiry, no pending
orders, no bytewax. It calls the project's *pure* domain functions (`attribute`, `binding_from`,
`accrue`, `settle`, `reprice`, `with_collections`, `approves_at`) and the configuration, and
re-implements only the driver around them — never `dataflows.stages.tenant` or `flow`:

- the input is deduplicated by event id, and clicks by click id (a click re-sent under another
  event id is the same click);
- every click of the input is known to every order: the order's candidates are the clicks it
  cites and the clicks of its visitor, and `attribute` judges the lookback window, bots and the
  click being after the order (so nothing ever has to wait for a click, or expire);
- orders are decided in event-time order: the first of an order's events (create, update or
  cancellation) decides it, with the customer binding that the customer's earlier orders left
  (binding first, then coupon vs cookie, then clicks, as `attribute` says), and accrues
  commission with the agent's month volume of the orders decided before it;
- then, in event-time order, refunds and cancellations are settled (`settle`) and edits that
  change the lines or the order discount are repriced (`reprice`) with the sale-time inputs;
  a refund or cancellation earlier than its order waits for it;
- holds are judged once, on the final ledger: an entry is approved when `approves_at` (the
  earliest paid invoice of its order, found by the order's name directly or through an ERP
  sale order, or the program's hold period) is at or before `wall` (the engine's processing
  time, a constant in the test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from dataflows.attribution.events import (
    ORDER_KINDS,
    InvoicePaid,
    SaleOrderRef,
    erp_facts,
    order_ref,
)
from dataflows.attribution.logic import (
    AttributionDecision,
    ClickCandidate,
    CustomerBinding,
    KnownReferrals,
    attribute,
    binding_from,
)
from dataflows.commission.adjustments import Cancellation, reprice, settle
from dataflows.commission.collections import with_collections
from dataflows.commission.holds import approves_at
from dataflows.commission.logic import CommissionError, accrue
from dataflows.config import TenantConfig
from schemas.conversion import Conversion, OrderRefund, conversion_from_shopify, refund_from_shopify
from schemas.events.click import ClickEvent
from schemas.events.envelope import EventEnvelope, Source
from schemas.events.shopify import ShopifyOrder, ShopifyRefund, parse_shopify_body
from schemas.ledger import AttributionRule, CommissionAccrual

# What the differential test compares of a decision: who got the order, and through what.
Decided = tuple[AttributionRule, str | None, str | None, str | None, str | None]


@dataclass
class Book:
    """A decided order: its facts as they stand, the sale-time inputs and its entries."""

    conversion: Conversion
    decision: AttributionDecision
    volume: Decimal = Decimal(0)
    is_new_customer: bool = False
    chain: tuple[str, ...] = ()
    rules_key: tuple[str, int] | None = None
    fx_rate: Decimal | None = Decimal(1)
    entries: list[CommissionAccrual] = field(default_factory=list)
    refunds: list[OrderRefund] = field(default_factory=list)
    cancellation: Cancellation | None = None


@dataclass
class ReferenceResult:
    entries: list[CommissionAccrual]
    decisions: dict[str, Decided]  # order id → (rule, agent, program, click id, coupon)
    approvals: dict[str, datetime]  # entry id → approved at
    errors: list[str]  # commission errors (the engine dead-letters those orders)


@dataclass
class _Order:
    """An order-stream event: `kind` is "order" (create/update) or "cancel"."""

    kind: str
    event_id: str
    occurred_at: datetime
    conversion: Conversion


@dataclass
class _Refund:
    event_id: str
    occurred_at: datetime
    refund: OrderRefund


def _event_time(envelope: EventEnvelope) -> tuple[datetime, str]:
    return (envelope.occurred_at, envelope.event_id)


def _parse(
    envelope: EventEnvelope,
) -> ClickEvent | _Order | _Refund | InvoicePaid | SaleOrderRef | None:
    """An envelope's facts, read with the contract's pydantic models (not the flow's decoder)."""
    body = envelope.raw_body()
    if envelope.source in (Source.CLICK, Source.PIXEL) and envelope.kind == "click":
        return ClickEvent.model_validate_json(body)
    if envelope.source is Source.ODOO:
        return erp_facts(body)
    if envelope.source is not Source.SHOPIFY:
        return None
    if envelope.kind in ORDER_KINDS or envelope.kind == "orders/cancelled":
        order = parse_shopify_body(envelope.kind, body)
        assert isinstance(order, ShopifyOrder)
        conversion = conversion_from_shopify(
            order, tenant_id=envelope.tenant_id, source_event_id=envelope.event_id,
            shop=envelope.shop,
        )  # fmt: skip
        kind = "cancel" if envelope.kind == "orders/cancelled" else "order"
        return _Order(kind, envelope.event_id, envelope.occurred_at, conversion)
    if envelope.kind == "refunds/create":
        refund = parse_shopify_body(envelope.kind, body)
        assert isinstance(refund, ShopifyRefund)
        facts = refund_from_shopify(refund, source_event_id=envelope.event_id)
        return _Refund(envelope.event_id, envelope.occurred_at, facts)
    return None


def reference_ledger(
    envelopes: list[EventEnvelope], config: TenantConfig, *, wall: datetime
) -> ReferenceResult:
    """The ledger, decisions and approvals the input should give (see the module docstring)."""
    unique: dict[str, EventEnvelope] = {}
    for envelope in envelopes:
        unique.setdefault(envelope.event_id, envelope)
    inputs = sorted(unique.values(), key=_event_time)
    facts = [(envelope, _parse(envelope)) for envelope in inputs]

    clicks: dict[str, ClickCandidate] = {}
    for _, fact in facts:
        if isinstance(fact, ClickEvent) and fact.click_id not in clicks:
            clicks[fact.click_id] = ClickCandidate.from_event(fact)

    every_agent = set(config.agents)
    books: dict[str, Book] = {}
    waiting: dict[str, list[_Order | _Refund]] = {}  # follow-ups earlier than their order
    bindings: dict[str, CustomerBinding] = {}
    first_order: dict[str, datetime] = {}
    volumes: dict[tuple[str, str], Decimal] = {}
    paid: list[tuple[datetime, InvoicePaid]] = []
    sale_orders: dict[str, str] = {}
    errors: list[str] = []

    def decide(event: _Order) -> Book:
        conversion = with_collections(
            event.conversion, config.product_collections(event.conversion.shop)
        )
        customer = conversion.customer_id
        binding = bindings.get(customer) if customer is not None else None
        candidates = [
            c for c in clicks.values()
            if c.click_id in conversion.click_ids
            or (conversion.visitor_id is not None and c.visitor_id == conversion.visitor_id)
        ]  # fmt: skip
        known = KnownReferrals(
            clicks=candidates,
            coupons=config.coupons,
            bindings={customer: binding} if customer is not None and binding is not None else {},
            identities=config.identities(every_agent),
            statuses=config.statuses(every_agent),
        )
        decision = attribute(conversion, known, config.policy(), programs=config.policies)
        when = conversion.occurred_at
        is_new = customer is not None and first_order.get(customer, when) >= when
        if customer is not None:
            first_order[customer] = min(first_order.get(customer, when), when)
            created = binding_from(
                conversion, decision, config.policy_for(decision.program_id), binding
            )
            if created is not None:
                bindings[customer] = created
        book = Book(conversion, decision, is_new_customer=is_new)
        rules = config.rules_for(decision.program_id) if decision.attributed else None
        if rules is not None and decision.agent_id is not None:
            month = (decision.agent_id, f"{when.year:04d}-{when.month:02d}")
            book.volume = volumes.get(month, Decimal(0))
            book.chain = config.agent_chain(decision.agent_id, at=when)
            book.rules_key = (rules.rule_id, rules.version)
            book.fx_rate = config.fx_rate(conversion.currency, when)
            volumes[month] = book.volume + conversion.net_revenue
            if book.fx_rate is None:  # the engine books nothing without a rate
                errors.append(f"order {conversion.order_id}: no {conversion.currency} rate")
                return book
            try:
                book.entries = accrue(
                    conversion, decision, rules, book.chain, period_volume=book.volume,
                    is_new_customer=is_new, fx_rate=book.fx_rate,
                    rules_rate=config.rules_rate(rules, conversion),
                )  # fmt: skip
            except CommissionError as exc:
                errors.append(f"order {conversion.order_id}: {exc}")
        return book

    def follow_up(book: Book, event: _Order | _Refund) -> None:
        new: list[CommissionAccrual] = []
        if isinstance(event, _Refund):
            if any(r.refund_id == event.refund.refund_id for r in book.refunds):
                return
            book.refunds.append(event.refund)
            new = settle(
                book.entries, book.conversion, book.refunds, book.cancellation,
                trigger=event.event_id,
            )  # fmt: skip
        elif event.kind == "cancel":
            if book.cancellation is not None:
                return
            book.cancellation = Cancellation(event.occurred_at, event.event_id)
            new = settle(
                book.entries, book.conversion, book.refunds, book.cancellation,
                trigger=event.event_id,
            )  # fmt: skip
        else:
            edited = with_collections(
                event.conversion,
                config.product_collections(event.conversion.shop),
                decided=book.conversion,
            )
            before = (book.conversion.lines, book.conversion.order_discount)
            if (edited.lines, edited.order_discount) == before:
                return
            rules = config.rule_versions.get(book.rules_key) if book.rules_key else None
            if rules is not None and book.cancellation is None and book.fx_rate is not None:
                try:
                    target = accrue(
                        edited, book.decision, rules, book.chain, period_volume=book.volume,
                        is_new_customer=book.is_new_customer, fx_rate=book.fx_rate,
                        rules_rate=config.rules_rate(rules, edited),
                    )  # fmt: skip
                except CommissionError as exc:
                    errors.append(f"edit {event.event_id}: {exc}")
                    return
                new = reprice(
                    book.entries, target, edit_id=event.event_id, occurred_at=event.occurred_at,
                    source_event_id=event.event_id,
                )  # fmt: skip
            book.conversion = edited
        book.entries.extend(new)

    for envelope, fact in facts:
        if isinstance(fact, InvoicePaid):
            paid.append((envelope.occurred_at, fact))
        elif isinstance(fact, SaleOrderRef):
            sale_orders.setdefault(fact.sale_order, fact.order_ref)
        elif isinstance(fact, _Order | _Refund):
            order_id = (
                fact.conversion.order_id if isinstance(fact, _Order) else fact.refund.order_id
            )
            if order_id in books:
                follow_up(books[order_id], fact)
            elif isinstance(fact, _Refund):
                waiting.setdefault(order_id, []).append(fact)
            else:
                book = books[order_id] = decide(fact)
                if fact.kind == "cancel":
                    follow_up(book, fact)
                for early in waiting.pop(order_id, []):  # already in event-time order
                    follow_up(book, early)

    # Holds, on the final ledger: the earliest paid invoice of each order name.
    paid_at: dict[str, datetime] = {}
    for when, invoice in paid:
        for ref in invoice.refs:
            name = sale_orders.get(ref, ref)
            paid_at[name] = min(paid_at.get(name, when), when)
    approvals: dict[str, datetime] = {}
    for book in books.values():
        program = config.program_for(book.decision.program_id)
        hold_days = program.hold_days if program is not None else 30
        name = order_ref(book.conversion.order_name or "")
        for entry in book.entries:
            due = approves_at(
                entry, paid_at.get(name), hold_days, order_occurred_at=book.conversion.occurred_at
            )
            if due <= wall:
                approvals[entry.entry_id] = due

    decisions: dict[str, Decided] = {}
    for order_id, book in books.items():
        d = book.decision
        decisions[order_id] = (d.rule, d.agent_id, d.program_id, d.click_id, d.coupon_code)
    entries = [entry for book in books.values() for entry in book.entries]
    return ReferenceResult(entries, decisions, approvals, errors)
