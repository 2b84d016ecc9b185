"""Payout batches: create one from an agent's approved, unpaid entries; mark it paid (which
appends a `paid` status event to every entry in it) or cancel it (its entries, never changed,
are free for another payout); export it as CSV.

Only holders of `payouts.write` where the agent lives may create or pay a payout; the check is
made here, so no route (generic or not) can move money without it.
"""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.agents.repository import AgentRepository
from api.audit import record
from api.authz.policies import Principal, can_at
from api.context import RequestMeta
from api.db import ReadSession
from api.errors import Conflict, Forbidden
from api.ledger.repository import LedgerRepository
from api.models import Agent, LedgerStatusEvent, Payout, PayoutClaim, PayoutItem
from api.payouts.repository import PayoutRepository
from api.payouts.schemas import (
    PayoutCancel,
    PayoutCreate,
    PayoutDetail,
    PayoutItemRead,
    PayoutPaid,
    PayoutRead,
)
from api.snapshots import snapshot
from schemas.ids import derived_id
from schemas.ledger import EntryStatus


async def detail(session: ReadSession, principal: Principal, payout_id: str) -> PayoutDetail:
    repository = PayoutRepository(session, principal, "payouts.read")
    payout, _ = await repository.get_with_path(payout_id)
    items = [PayoutItemRead.model_validate(i) for i, _ in await repository.items(payout_id)]
    return PayoutDetail(**PayoutRead.model_validate(payout).model_dump(), items=items)


async def create_payout(
    session: AsyncSession,
    principal: Principal,
    body: PayoutCreate,
    *,
    idempotency_key: str,
    meta: RequestMeta,
) -> PayoutDetail:
    """A payout of every approved entry of the agent in `currency` (and period) that no payout
    holds yet. Refused when there is none or their sum is not positive."""
    _, path = await AgentRepository(session, principal, "ledger.read").get_with_path(body.agent_id)
    if not can_at(principal, "payouts.write", path):
        raise Forbidden("You cannot create payouts for this agent.")
    # Payouts of one agent serialise on the agent's row, so two requests do not race; the
    # claims' primary key is the database's guarantee of one live payout per entry.
    await session.execute(select(Agent.id).where(Agent.id == body.agent_id).with_for_update())
    # The agent was reached through the scoped repository above; its entries are locked here.
    entries = await PayoutRepository(session, principal, "payouts.read").payable_entries(
        tenant_id=principal.tenant_id,
        agent_id=body.agent_id,
        currency=body.currency,
        start=body.period_start,
        end=body.period_end,
    )
    if not entries:
        raise Conflict("The agent has no approved, unpaid entries in this currency and period.")
    total = sum((e.amount for e in entries), Decimal(0))
    if total <= 0:
        raise Conflict(f"The approved, unpaid entries sum to {total}; nothing to pay.")
    payout = Payout(
        id=derived_id("po", principal.tenant_id, idempotency_key),
        tenant_id=principal.tenant_id,
        agent_id=body.agent_id,
        currency=body.currency,
        amount=total,
        entry_count=len(entries),
        period_start=body.period_start,
        period_end=body.period_end,
        status="created",
        reference="",
        created_by=principal.actor,
        created_at=meta.now,
    )
    session.add(payout)
    await session.flush()
    session.add_all(
        PayoutItem(payout_id=payout.id, entry_id=e.entry_id, amount=e.amount) for e in entries
    )
    session.add_all(PayoutClaim(entry_id=e.entry_id, payout_id=payout.id) for e in entries)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("An entry of this payout is already in another payout; retry.") from exc
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="payout.create",
        entity_type="payout",
        entity_id=payout.id,
        before=None,
        after={**snapshot(payout), "entry_ids": [e.entry_id for e in entries]},
        meta=meta,
    )
    items = [PayoutItemRead(entry_id=e.entry_id, amount=e.amount) for e in entries]
    return PayoutDetail(**PayoutRead.model_validate(payout).model_dump(), items=items)


async def mark_paid(
    session: AsyncSession,
    principal: Principal,
    payout_id: str,
    body: PayoutPaid,
    *,
    meta: RequestMeta,
) -> PayoutDetail:
    repository = PayoutRepository(session, principal, "payouts.read")
    payout, path = await repository.get_with_path(payout_id, lock=True)
    if not can_at(principal, "payouts.write", path):
        raise Forbidden("You cannot pay this payout.")
    if payout.status != "created":
        raise Conflict(f"The payout is {payout.status}.")
    items = await repository.items(payout_id)
    ledger = LedgerRepository(session, principal, "ledger.read")
    for _, entry in items:
        _, status, _ = await ledger.get_row(entry.entry_id, lock=True)
        if status != EntryStatus.APPROVED:  # cannot happen: entries in a payout keep their status
            raise Conflict(f"Entry {entry.entry_id} is {status!r}, not approved.")
        session.add(
            LedgerStatusEvent(
                entry_id=entry.entry_id,
                status=EntryStatus.PAID.value,
                actor=principal.actor,
                reason=f"payout {payout.id}",
                changed_at=meta.now,
            )
        )
    before = snapshot(payout)
    payout.status = "paid"
    payout.paid_at = meta.now
    payout.paid_by = principal.actor
    payout.reference = body.reference
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="payout.pay",
        entity_type="payout",
        entity_id=payout.id,
        before=before,
        after=snapshot(payout),
        meta=meta,
    )
    read = [PayoutItemRead.model_validate(i) for i, _ in items]
    return PayoutDetail(**PayoutRead.model_validate(payout).model_dump(), items=read)


async def cancel(
    session: AsyncSession,
    principal: Principal,
    payout_id: str,
    body: PayoutCancel,
    *,
    meta: RequestMeta,
) -> PayoutDetail:
    """Cancel an unpaid payout. Its items stay as facts and its entries keep their (approved)
    status; they become payable again because only payouts that are not cancelled hold them."""
    repository = PayoutRepository(session, principal, "payouts.read")
    payout, path = await repository.get_with_path(payout_id, lock=True)
    if not can_at(principal, "payouts.write", path):
        raise Forbidden("You cannot cancel this payout.")
    if payout.status != "created":
        raise Conflict(f"The payout is {payout.status}; only an unpaid payout can be cancelled.")
    before = snapshot(payout)
    await session.execute(delete(PayoutClaim).where(PayoutClaim.payout_id == payout_id))
    payout.status = "cancelled"
    payout.cancelled_at = meta.now
    payout.cancelled_by = principal.actor
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="payout.cancel",
        entity_type="payout",
        entity_id=payout.id,
        before=before,
        after={**snapshot(payout), "reason": body.reason},
        meta=meta,
    )
    items = [PayoutItemRead.model_validate(i) for i, _ in await repository.items(payout_id)]
    return PayoutDetail(**PayoutRead.model_validate(payout).model_dump(), items=items)


CSV_COLUMNS = (
    "payout_id",
    "agent_id",
    "entry_id",
    "kind",
    "order_id",
    "occurred_at",
    "amount",
    "currency",
    "payout_status",
    "reference",
)


# OWASP's CSV-injection rule: a cell a spreadsheet would read as a formula gets a leading "'".
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def csv_cell(value: str) -> str:
    """`value` as a CSV cell no spreadsheet evaluates: text starting with = + - @ tab or CR is
    prefixed with a single quote. The export's own negative amounts (plain decimals) stay
    numbers."""
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


async def export_csv(session: ReadSession, principal: Principal, payout_id: str) -> str:
    """One line per entry of the payout (amounts as exact decimals); every cell passes
    `csv_cell`, since order ids and references come from outside."""
    repository = PayoutRepository(session, principal, "payouts.read")
    payout, _ = await repository.get_with_path(payout_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item, entry in await repository.items(payout_id):
        row = (
            payout.id,
            payout.agent_id,
            entry.entry_id,
            entry.kind,
            entry.order_id,
            entry.occurred_at.isoformat(),
            str(item.amount),
            payout.currency.strip(),
            payout.status,
            payout.reference,
        )
        writer.writerow(csv_cell(cell) for cell in row)
    return out.getvalue()
