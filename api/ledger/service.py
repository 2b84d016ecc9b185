"""Ledger operations: status changes with the approval policy, manual adjustments, statements.

Entries are never updated: a status change appends a `ledger_status_events` row, an adjustment
appends an entry. Every check that guards money is made here, where the entry's unit is known
(`can_at`), not only by the route dependency: no other endpoint can reach these writes.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.agents.repository import AgentRepository
from api.api_keys.repository import creator_of
from api.audit import record
from api.authz.policies import (
    Principal,
    calendar_month,
    can_at,
    four_eyes_refusal,
    within_approval_limit,
)
from api.context import RequestMeta
from api.db import ReadSession
from api.errors import Conflict, Forbidden, NotFound, Unprocessable
from api.fx_rates.repository import FxRateRepository
from api.ledger.repository import LedgerRepository, adjustment_source, created_by
from api.ledger.schemas import (
    AdjustmentCreate,
    AgentStatement,
    LedgerEntryDetail,
    LedgerEntryRead,
    StatementLine,
    StatementPayout,
    StatusEventRead,
)
from api.models import LedgerEntry, LedgerStatusEvent, Program
from api.payouts.repository import PayoutRepository
from api.snapshots import snapshot
from schemas.ids import derived_id
from schemas.ledger import EntryKind, EntryStatus

# Which status an entry may move to by hand; `paid` is only reached through a payout.
TRANSITIONS: dict[str, frozenset[str]] = {
    EntryStatus.PENDING: frozenset({EntryStatus.APPROVED, EntryStatus.HOLD, EntryStatus.REJECTED}),
    EntryStatus.HOLD: frozenset({EntryStatus.APPROVED, EntryStatus.REJECTED}),
    EntryStatus.APPROVED: frozenset({EntryStatus.HOLD, EntryStatus.REJECTED}),
    EntryStatus.REJECTED: frozenset(),
    EntryStatus.PAID: frozenset(),
}


def to_read(entry: LedgerEntry, status: str) -> LedgerEntryRead:
    return LedgerEntryRead(
        entry_id=entry.entry_id,
        agent_id=entry.agent_id,
        program_id=entry.program_id,
        conversion_id=entry.conversion_id,
        order_id=entry.order_id,
        line_item_id=entry.line_item_id,
        kind=entry.kind,
        status=status,
        level=entry.level,
        amount=entry.amount,
        currency=entry.currency.strip(),
        fx_rate=entry.fx_rate,
        rule_id=entry.rule_id,
        rule_version=entry.rule_version,
        occurred_at=entry.occurred_at,
        recorded_at=entry.recorded_at,
        reason=entry.reason,
    )


async def get_entry(session: ReadSession, principal: Principal, entry_id: str) -> LedgerEntryDetail:
    repository = LedgerRepository(session, principal, "ledger.read")
    entry, status, _ = await repository.get_row(entry_id)
    history = [StatusEventRead.model_validate(e) for e in await repository.history(entry_id)]
    return LedgerEntryDetail(**to_read(entry, status).model_dump(), history=history)


async def change_status(
    session: AsyncSession,
    principal: Principal,
    entry_id: str,
    target: EntryStatus,
    *,
    reason: str,
    manager_limit: Decimal,
    meta: RequestMeta,
) -> LedgerEntryRead:
    """Approve, hold or reject one entry. Needs `ledger.approve` where the entry's agent lives.
    Four eyes: nobody approves an entry they created or one paying an agent linked to them.
    Non-owners approve up to `manager_limit` per agent and calendar month (UTC), cumulatively.
    An entry in a payout keeps its status."""
    repository = LedgerRepository(session, principal, "ledger.read")
    entry, current, path = await repository.get_row(entry_id, lock=True)
    if not can_at(principal, "ledger.approve", path):
        raise Forbidden("You cannot approve, hold or reject this entry.")
    if target == EntryStatus.APPROVED:
        await _check_four_eyes(session, repository, principal, entry)
        await repository.lock_agent(entry.agent_id)
        start, end = calendar_month(meta.now)
        already = await repository.approved_by(principal.actor, entry.agent_id, start, end)
        if not within_approval_limit(
            principal,
            path,
            entry.amount * entry.fx_rate,
            manager_limit=manager_limit,
            already=already,
        ):
            raise Forbidden(
                f"Approving this entry would take what you approved for this agent this month "
                f"({already} so far) above your limit of {manager_limit}; an owner must approve it."
            )
    if target not in TRANSITIONS[current]:
        raise Conflict(f"An entry that is {current!r} cannot become {target.value!r}.")
    if await repository.is_in_payout(entry_id):
        raise Conflict("The entry is in a payout; its status changes only when the payout is paid.")
    session.add(
        LedgerStatusEvent(
            entry_id=entry_id,
            status=target.value,
            actor=principal.actor,
            reason=reason,
            changed_at=meta.now,
        )
    )
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action=f"ledger_entry.{_VERBS[target]}",
        entity_type="ledger_entry",
        entity_id=entry_id,
        before={"status": current},
        after={"status": target.value, "reason": reason},
        meta=meta,
    )
    return to_read(entry, target.value)


async def _people(session: ReadSession, actor: str) -> frozenset[str]:
    """The actor and, for an API key, the user who created it: one person behind both."""
    if actor.startswith("api_key:"):
        creator = await creator_of(session, actor.removeprefix("api_key:"))
        return frozenset({actor, creator} if creator else {actor})
    return frozenset({actor})


async def _check_four_eyes(
    session: ReadSession, repository: LedgerRepository, principal: Principal, entry: LedgerEntry
) -> None:
    creator = created_by(entry)
    linked = await repository.agent_user(entry.agent_id)
    refusal = four_eyes_refusal(
        await _people(session, principal.actor),
        creator=await _people(session, creator) if creator else frozenset(),
        linked_user=f"user:{linked}" if linked else None,
    )
    if refusal:
        raise Forbidden(refusal)


_VERBS = {
    EntryStatus.APPROVED: "approve",
    EntryStatus.HOLD: "hold",
    EntryStatus.REJECTED: "reject",
}


async def create_adjustment(
    session: AsyncSession,
    principal: Principal,
    body: AdjustmentCreate,
    *,
    idempotency_key: str,
    manager_limit: Decimal,
    meta: RequestMeta,
) -> LedgerEntryRead:
    """Append a manual entry for an agent. Its id derives from the idempotency key, so one
    intended adjustment is one entry however often it is sent. Like the dataflow's entries it
    carries the exchange rate valid at its time (`Unprocessable` without one), and a non-owner's
    adjustments for one agent in a calendar month (UTC) stay within the approval limit,
    cumulatively, in the reporting currency. Nobody adjusts an agent linked to themselves."""
    agent, path = await AgentRepository(session, principal, "ledger.read").get_with_path(
        body.agent_id
    )
    if not can_at(principal, "ledger.adjust", path):
        raise Forbidden("You cannot adjust this agent's ledger.")
    if agent.user_id is not None and f"user:{agent.user_id}" in await _people(
        session, principal.actor
    ):
        raise Forbidden("This agent is linked to you; another person must adjust it.")
    occurred_at = body.occurred_at or meta.now
    rates = FxRateRepository(session, principal, "fx_rates.read")
    fx_rate = await rates.rate_at(body.currency, occurred_at)
    if fx_rate is None:
        raise Unprocessable(
            f"No {body.currency} exchange rate at {occurred_at.isoformat()}: add one "
            "(POST /v1/fx-rates) before adjusting in that currency."
        )
    in_reporting = body.amount * fx_rate
    ledger = LedgerRepository(session, principal, "ledger.read")
    await ledger.lock_agent(body.agent_id)
    start, end = calendar_month(meta.now)
    already = await ledger.adjusted_by(principal.actor, body.agent_id, start, end)
    if not within_approval_limit(
        principal, path, in_reporting, manager_limit=manager_limit, already=already
    ):
        raise Forbidden(
            f"This adjustment would take what you adjusted for this agent this month "
            f"({already} so far) above your limit of {manager_limit}; an owner must make it."
        )
    if body.program_id is not None:
        program = await session.get(Program, body.program_id)
        if program is None or program.tenant_id != principal.tenant_id:
            raise NotFound(f"No program {body.program_id!r}.")
    entry_id = derived_id("le", principal.tenant_id, "adjustment", idempotency_key)
    entry = LedgerEntry(
        entry_id=entry_id,
        tenant_id=principal.tenant_id,
        agent_id=body.agent_id,
        program_id=body.program_id,
        conversion_id=entry_id,
        order_id=body.order_id,
        kind=EntryKind.ADJUSTMENT.value,
        status=EntryStatus.PENDING.value,
        level=0,
        amount=body.amount,
        currency=body.currency,
        fx_rate=fx_rate,
        occurred_at=occurred_at,
        recorded_at=meta.now,
        reason=body.reason,
        source_event_id=adjustment_source(principal.actor),
    )
    session.add(entry)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("This adjustment was already recorded.") from exc
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="ledger_entry.adjust",
        entity_type="ledger_entry",
        entity_id=entry_id,
        before=None,
        after=snapshot(entry),
        meta=meta,
    )
    return to_read(entry, entry.status)


async def statement(
    session: ReadSession,
    principal: Principal,
    agent_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
) -> AgentStatement:
    """An agent's totals per currency and status over the period, and their payouts in it
    (`payouts` is None for a caller without `payouts.read` where the agent lives)."""
    agent, path = await AgentRepository(session, principal, "ledger.read").get_with_path(agent_id)
    sums: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    repository = LedgerRepository(session, principal, "ledger.read")
    for currency, status, in_payout, amount in await repository.statement_sums(
        agent_id, start, end
    ):
        sums[currency][status] += amount
        if status == EntryStatus.APPROVED and not in_payout:
            sums[currency]["payable"] += amount
    lines = [
        StatementLine(
            currency=currency,
            pending=by[EntryStatus.PENDING],
            approved=by[EntryStatus.APPROVED],
            hold=by[EntryStatus.HOLD],
            rejected=by[EntryStatus.REJECTED],
            paid=by[EntryStatus.PAID],
            earned=sum(
                (v for k, v in by.items() if k not in {EntryStatus.REJECTED, "payable"}),
                Decimal(0),
            ),
            payable=by["payable"],
        )
        for currency, by in sorted(sums.items())
    ]
    payouts = (
        await PayoutRepository(session, principal, "payouts.read").for_agent(
            agent_id, start=start, end=end
        )
        if can_at(principal, "payouts.read", path)
        else None
    )
    return AgentStatement(
        agent_id=agent.id,
        agent_name=agent.name,
        period_start=start,
        period_end=end,
        lines=lines,
        payouts=None if payouts is None else [StatementPayout.model_validate(p) for p in payouts],
    )
