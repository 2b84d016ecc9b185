from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, select, true, tuple_

from api.authz.policies import Scope
from api.fx_rates.schemas import FxRateFilters
from api.kit.repository import ScopedRepository
from api.models import FxRate, Tenant


class FxRateRepository(ScopedRepository[FxRate]):
    """A company's exchange rates: company configuration, so anyone holding the read permission
    somewhere in the company reads all of them."""

    model = FxRate
    tenant_column = FxRate.tenant_id

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:  # noqa: ARG002
        return true()

    async def list(
        self, filters: FxRateFilters, *, after: tuple[datetime, str] | None
    ) -> Sequence[FxRate]:
        """Oldest `valid_from` first (then by currency), after the keyset `after`."""
        statement = self.readable_statement()
        if filters.currency is not None:
            statement = statement.where(FxRate.currency == filters.currency)
        if after is not None:
            statement = statement.where(tuple_(FxRate.valid_from, FxRate.currency) > tuple_(*after))
        statement = statement.order_by(FxRate.valid_from, FxRate.currency).limit(filters.limit)
        return (await self.session.scalars(statement)).all()

    async def find(self, currency: str, valid_from: datetime) -> FxRate | None:
        statement: Any = self.readable_statement().where(
            FxRate.currency == currency, FxRate.valid_from == valid_from
        )
        rate: FxRate | None = await self.session.scalar(statement)
        return rate

    async def rate_at(self, currency: str, at: datetime) -> Decimal | None:
        """Units of the reporting currency per 1 `currency` at `at`: 1 for the reporting currency,
        else the rate with the latest `valid_from` <= `at`; `None` when there is none."""
        if currency == await self.reporting_currency():
            return Decimal(1)
        statement: Any = (
            select(FxRate.rate)
            .where(
                FxRate.tenant_id == self.principal.tenant_id,
                FxRate.currency == currency,
                FxRate.valid_from <= at,
            )
            .order_by(FxRate.valid_from.desc())
            .limit(1)
        )
        rate: Decimal | None = await self.session.scalar(statement)
        return rate

    async def reporting_currency(self) -> str:
        currency: str = await self.session.scalar(
            select(Tenant.currency).where(Tenant.id == self.principal.tenant_id)
        )
        return currency.strip()
