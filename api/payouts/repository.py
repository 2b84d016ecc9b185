from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, select, tuple_

from api.agents.repository import agent_scope_clause
from api.authz.policies import Scope
from api.errors import NotFound
from api.kit.repository import ScopedRepository
from api.ledger.repository import current_status, in_a_payout
from api.models import Agent, LedgerEntry, Payout, PayoutItem, Unit
from api.payouts.schemas import PayoutFilters
from schemas.ledger import EntryStatus


class PayoutRepository(ScopedRepository[Payout]):
    """Payouts of the agents in the principal's reach (agent grants: their own)."""

    model = Payout
    id_column = Payout.id
    tenant_column = Payout.tenant_id

    def base_statement(self) -> Select[Any]:
        return (
            select(Payout)
            .join(Agent, Agent.id == Payout.agent_id)
            .outerjoin(Unit, Unit.id == Agent.unit_id)
        )

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:
        return agent_scope_clause(self.principal, scope)

    async def get_with_path(
        self, payout_id: str, *, lock: bool = False
    ) -> tuple[Payout, str | None]:
        statement = self.readable_statement().add_columns(Unit.path).where(Payout.id == payout_id)
        if lock:
            statement = statement.with_for_update(of=Payout)
        row = (await self.session.execute(statement)).first()
        if row is None:
            raise NotFound(f"No payout {payout_id!r}.")
        payout, path = row
        return payout, path

    async def list(
        self, filters: PayoutFilters, *, after: tuple[datetime, str] | None
    ) -> Sequence[Payout]:
        statement = self.readable_statement()
        if filters.agent_id is not None:
            statement = statement.where(Payout.agent_id == filters.agent_id)
        if filters.status is not None:
            statement = statement.where(Payout.status == filters.status)
        if after is not None:
            statement = statement.where(tuple_(Payout.created_at, Payout.id) > tuple_(*after))
        statement = statement.order_by(Payout.created_at, Payout.id).limit(filters.limit)
        return (await self.session.scalars(statement)).all()

    async def for_agent(
        self, agent_id: str, *, start: datetime | None, end: datetime | None
    ) -> Sequence[Payout]:
        statement = self.readable_statement().where(Payout.agent_id == agent_id)
        if start is not None:
            statement = statement.where(Payout.created_at >= start)
        if end is not None:
            statement = statement.where(Payout.created_at < end)
        return (await self.session.scalars(statement.order_by(Payout.created_at))).all()

    async def items(self, payout_id: str) -> Sequence[tuple[PayoutItem, LedgerEntry]]:
        statement = (
            select(PayoutItem, LedgerEntry)
            .join(LedgerEntry, LedgerEntry.entry_id == PayoutItem.entry_id)
            .where(PayoutItem.payout_id == payout_id)
            .order_by(LedgerEntry.occurred_at, LedgerEntry.entry_id)
        )
        return [(i, e) for i, e in (await self.session.execute(statement)).all()]

    async def payable_entries(
        self,
        *,
        tenant_id: str,
        agent_id: str,
        currency: str,
        start: datetime | None,
        end: datetime | None,
    ) -> Sequence[LedgerEntry]:
        """The agent's approved entries in `currency` that no payout holds yet, locked."""
        statement = (
            select(LedgerEntry)
            .where(
                LedgerEntry.tenant_id == tenant_id,
                LedgerEntry.agent_id == agent_id,
                LedgerEntry.currency == currency,
                current_status() == EntryStatus.APPROVED.value,
                ~in_a_payout(),
            )
            .order_by(LedgerEntry.occurred_at, LedgerEntry.entry_id)
            .with_for_update()
        )
        if start is not None:
            statement = statement.where(LedgerEntry.occurred_at >= start)
        if end is not None:
            statement = statement.where(LedgerEntry.occurred_at < end)
        return (await self.session.scalars(statement)).all()
