"""Every query of the exceptions inbox. The inbox is company-wide operational data (a dead
letter belongs to the company, not to a unit), so anyone holding the permission somewhere in the
company reads all of the company's exceptions; another company's are not found."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Text, column, func, select, table, true, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TIMESTAMP

from api.authz.policies import Scope
from api.exceptions.schemas import ExceptionFilters, ExceptionStatus
from api.kit.repository import ScopedRepository
from api.models import ExceptionRecord

# The replay tables have no ORM models (the replay writes them with psycopg): what we read.
_replay_orders = table("ledger_replay_orders", column("replay_id", Text), column("order_id", Text))
_replays = table(
    "ledger_replays", column("replay_id", Text), column("started_at", TIMESTAMP(timezone=True))
)


class ExceptionRepository(ScopedRepository[ExceptionRecord]):
    model = ExceptionRecord
    id_column = ExceptionRecord.id
    tenant_column = ExceptionRecord.tenant_id

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:  # noqa: ARG002
        return true()

    async def list(
        self, filters: ExceptionFilters, *, after: tuple[datetime, str] | None
    ) -> Sequence[ExceptionRecord]:
        """Newest `failed_at` first (then by id, descending), after the keyset `after`."""
        statement = self.readable_statement()
        if filters.reason is not None:
            statement = statement.where(
                ExceptionRecord.reason.startswith(filters.reason, autoescape=True)
            )
        if filters.stage is not None:
            statement = statement.where(ExceptionRecord.stage == filters.stage)
        if filters.status is ExceptionStatus.open:
            statement = statement.where(ExceptionRecord.resolved_at.is_(None))
        elif filters.status is ExceptionStatus.resolved:
            statement = statement.where(ExceptionRecord.resolved_at.is_not(None))
        if filters.from_ is not None:
            statement = statement.where(ExceptionRecord.failed_at >= filters.from_)
        if filters.to is not None:
            statement = statement.where(ExceptionRecord.failed_at < filters.to)
        if after is not None:
            statement = statement.where(
                tuple_(ExceptionRecord.failed_at, ExceptionRecord.id) < tuple_(*after)
            )
        statement = statement.order_by(
            ExceptionRecord.failed_at.desc(), ExceptionRecord.id.desc()
        ).limit(filters.limit)
        return (await self.session.scalars(statement)).all()

    async def counts(self) -> tuple[int, int]:
        """(open, resolved) exceptions of the company."""
        statement = self.readable_statement().with_only_columns(
            func.count().filter(ExceptionRecord.resolved_at.is_(None)),
            func.count().filter(ExceptionRecord.resolved_at.is_not(None)),
        )
        row = (await self.session.execute(statement)).one()
        return int(row[0]), int(row[1])


async def resolve(
    session: AsyncSession, exception_id: str, *, by: str, resolution: str, at: datetime
) -> bool:
    """Mark one open exception resolved; False when it is already resolved."""
    result = await session.execute(
        update(ExceptionRecord)
        .where(ExceptionRecord.id == exception_id, ExceptionRecord.resolved_at.is_(None))
        .values(resolved_at=at, resolved_by=by, resolution=resolution)
        .returning(ExceptionRecord.id)
    )
    return result.first() is not None


async def resolve_replayed(
    session: AsyncSession, tenant_id: str, replay_id: str, *, by: str, at: datetime
) -> int:
    """Mark resolved the tenant's open exceptions about an order the replay decided that failed
    before the replay started (the documented fix: correct the cause, replay, promote). Returns
    how many."""
    decided = select(_replay_orders.c.order_id).where(_replay_orders.c.replay_id == replay_id)
    started = (
        select(_replays.c.started_at).where(_replays.c.replay_id == replay_id).scalar_subquery()
    )
    result = await session.execute(
        update(ExceptionRecord)
        .where(
            ExceptionRecord.tenant_id == tenant_id,
            ExceptionRecord.resolved_at.is_(None),
            ExceptionRecord.entity_id.in_(decided),
            ExceptionRecord.failed_at < started,
        )
        .values(resolved_at=at, resolved_by=by, resolution=f"replay {replay_id} promoted")
        .returning(ExceptionRecord.id)
    )
    return len(result.all())
