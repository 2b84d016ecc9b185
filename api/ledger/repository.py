from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, select, tuple_

from api.agents.repository import agent_scope_clause
from api.authz.policies import Scope
from api.errors import NotFound
from api.kit.repository import ScopedRepository
from api.ledger.schemas import LedgerFilters
from api.models import Agent, LedgerEntry, LedgerStatusEvent, Payout, PayoutItem, Unit


def current_status() -> ColumnElement[str]:
    """An entry's current status: its newest status event, else the status it was written with."""
    newest = (
        select(LedgerStatusEvent.status)
        .where(LedgerStatusEvent.entry_id == LedgerEntry.entry_id)
        .order_by(LedgerStatusEvent.id.desc())
        .limit(1)
        .correlate(LedgerEntry)
        .scalar_subquery()
    )
    return func.coalesce(newest, LedgerEntry.status)


def held_by_a_payout(entry_id: Any) -> ColumnElement[bool]:
    """Whether a payout that is not cancelled holds the entry (a cancelled one released it)."""
    return exists().where(
        PayoutItem.entry_id == entry_id,
        Payout.id == PayoutItem.payout_id,
        Payout.status != "cancelled",
    )


def in_a_payout() -> ColumnElement[bool]:
    return held_by_a_payout(LedgerEntry.entry_id)


# Manual adjustments name their creator in `source_event_id`: "api:<actor>".
_ADJUSTMENT_SOURCE = "api:"


def adjustment_source(actor: str) -> str:
    return _ADJUSTMENT_SOURCE + actor


def created_by(entry: LedgerEntry) -> str | None:
    """The actor who made a manual adjustment; None for entries the dataflow or a replay wrote."""
    source = entry.source_event_id
    return (
        source.removeprefix(_ADJUSTMENT_SOURCE) if source.startswith(_ADJUSTMENT_SOURCE) else None
    )


EntryRow = tuple[LedgerEntry, str, str | None]  # entry, current status, agent's unit path


class LedgerRepository(ScopedRepository[LedgerEntry]):
    """Entries of the agents in the principal's reach (agent grants: their own agents' entries)."""

    model = LedgerEntry
    id_column = LedgerEntry.entry_id
    tenant_column = LedgerEntry.tenant_id

    def base_statement(self) -> Select[Any]:
        return (
            select(LedgerEntry)
            .join(
                Agent,
                and_(Agent.id == LedgerEntry.agent_id, Agent.tenant_id == LedgerEntry.tenant_id),
            )
            .outerjoin(Unit, Unit.id == Agent.unit_id)
        )

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:
        return agent_scope_clause(self.principal, scope)

    def _filtered(self, filters: LedgerFilters) -> Select[Any]:
        statement = self.readable_statement()
        for name in ("agent_id", "program_id", "order_id", "kind"):
            value = getattr(filters, name)
            if value is not None:
                statement = statement.where(getattr(LedgerEntry, name) == value)
        if filters.status is not None:
            statement = statement.where(current_status() == filters.status)
        if filters.period_start is not None:
            statement = statement.where(LedgerEntry.occurred_at >= filters.period_start)
        if filters.period_end is not None:
            statement = statement.where(LedgerEntry.occurred_at < filters.period_end)
        return statement

    async def list(
        self, filters: LedgerFilters, *, after: tuple[datetime, str] | None
    ) -> Sequence[tuple[LedgerEntry, str]]:
        """Ordered by (occurred_at, entry_id), after the keyset position `after`."""
        statement = self._filtered(filters).add_columns(current_status())
        if after is not None:
            statement = statement.where(
                tuple_(LedgerEntry.occurred_at, LedgerEntry.entry_id) > tuple_(*after)
            )
        statement = statement.order_by(LedgerEntry.occurred_at, LedgerEntry.entry_id).limit(
            filters.limit
        )
        return [(e, s) for e, s in (await self.session.execute(statement)).all()]

    async def totals(self, filters: LedgerFilters) -> Sequence[tuple[str, str, int, Decimal]]:
        """(currency, status, count, sum) over every entry matching `filters`."""
        matching = self._filtered(filters).add_columns(current_status().label("current")).subquery()
        statement = (
            select(
                matching.c.currency,
                matching.c.current,
                func.count(),
                func.coalesce(func.sum(matching.c.amount), 0),
            )
            .group_by(matching.c.currency, matching.c.current)
            .order_by(matching.c.currency, matching.c.current)
        )
        return [
            (c.strip(), s, n, a) for c, s, n, a in (await self.session.execute(statement)).all()
        ]

    async def statement_sums(
        self, agent_id: str, start: datetime | None, end: datetime | None
    ) -> Sequence[tuple[str, str, bool, Decimal]]:
        """(currency, status, in a payout, sum) of one agent's entries in the period."""
        filters = LedgerFilters(agent_id=agent_id, period_start=start, period_end=end)
        matching = (
            self._filtered(filters)
            .add_columns(current_status().label("current"), in_a_payout().label("in_payout"))
            .subquery()
        )
        statement = select(
            matching.c.currency,
            matching.c.current,
            matching.c.in_payout,
            func.sum(matching.c.amount),
        ).group_by(matching.c.currency, matching.c.current, matching.c.in_payout)
        rows = (await self.session.execute(statement)).all()
        return [(c.strip(), s, p, a) for c, s, p, a in rows]

    async def get_row(self, entry_id: str, *, lock: bool = False) -> EntryRow:
        """The entry, its current status and its agent's unit path, or `NotFound`. `lock` takes
        a row lock on the entry so status changes of one entry serialise."""
        statement = (
            self.readable_statement()
            .add_columns(current_status(), Unit.path)
            .where(LedgerEntry.entry_id == entry_id)
        )
        if lock:
            statement = statement.with_for_update(of=LedgerEntry)
        row = (await self.session.execute(statement)).first()
        if row is None:
            raise NotFound(f"No ledger entry {entry_id!r}.")
        entry, status, path = row
        return entry, status, path

    async def history(self, entry_id: str) -> Sequence[LedgerStatusEvent]:
        statement = (
            select(LedgerStatusEvent)
            .where(LedgerStatusEvent.entry_id == entry_id)
            .order_by(LedgerStatusEvent.id)
        )
        return (await self.session.scalars(statement)).all()

    async def agent_user(self, agent_id: str) -> str | None:
        """The user linked to the agent (in the principal's tenant), if any."""
        user_id: str | None = await self.session.scalar(
            select(Agent.user_id).where(
                Agent.id == agent_id, Agent.tenant_id == self.principal.tenant_id
            )
        )
        return user_id

    async def lock_agent(self, agent_id: str) -> None:
        """Serialise money decisions about one agent (cumulative limits are read, then added to)."""
        await self.session.execute(
            select(Agent.id)
            .where(Agent.id == agent_id, Agent.tenant_id == self.principal.tenant_id)
            .with_for_update()
        )

    async def approved_by(
        self, actor: str, agent_id: str, start: datetime, end: datetime
    ) -> Decimal:
        """What `actor` approved for the agent in [start, end): the sum of the absolute amounts
        in the reporting currency (an entry approved twice counts twice)."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(func.abs(LedgerEntry.amount * LedgerEntry.fx_rate)), 0))
            .select_from(LedgerStatusEvent)
            .join(LedgerEntry, LedgerEntry.entry_id == LedgerStatusEvent.entry_id)
            .where(
                LedgerStatusEvent.actor == actor,
                LedgerStatusEvent.status == "approved",
                LedgerStatusEvent.changed_at >= start,
                LedgerStatusEvent.changed_at < end,
                LedgerEntry.tenant_id == self.principal.tenant_id,
                LedgerEntry.agent_id == agent_id,
            )
        )
        return Decimal(total)

    async def adjusted_by(
        self, actor: str, agent_id: str, start: datetime, end: datetime
    ) -> Decimal:
        """The absolute amounts (reporting currency) of the adjustments `actor` made for the
        agent in [start, end) of recording time."""
        total = await self.session.scalar(
            select(
                func.coalesce(func.sum(func.abs(LedgerEntry.amount * LedgerEntry.fx_rate)), 0)
            ).where(
                LedgerEntry.tenant_id == self.principal.tenant_id,
                LedgerEntry.agent_id == agent_id,
                LedgerEntry.kind == "adjustment",
                LedgerEntry.source_event_id == adjustment_source(actor),
                LedgerEntry.recorded_at >= start,
                LedgerEntry.recorded_at < end,
            )
        )
        return Decimal(total)

    async def is_in_payout(self, entry_id: str) -> bool:
        held: bool = await self.session.scalar(select(held_by_a_payout(entry_id)))
        return held
