from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from api.db import ReadSession
from api.models import CommissionRule


class RuleRepository:
    """Versions of one program's rules. The program is reached first through the programs'
    scoped repository, so these queries only add the tenant and program."""

    def __init__(self, session: ReadSession, *, tenant_id: str, program_id: str) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.program_id = program_id

    def _statement(self) -> Any:
        return select(CommissionRule).where(
            CommissionRule.tenant_id == self.tenant_id,
            CommissionRule.program_id == self.program_id,
        )

    async def versions(self) -> Sequence[CommissionRule]:
        statement = self._statement().order_by(CommissionRule.version)
        return (await self.session.scalars(statement)).all()

    async def version(self, version: int, *, lock: bool = False) -> CommissionRule | None:
        statement = self._statement().where(CommissionRule.version == version)
        if lock:
            statement = statement.with_for_update()
        rule: CommissionRule | None = await self.session.scalar(statement)
        return rule

    async def latest_active_version(self) -> int:
        """The newest active version (the live one), 0 if none."""
        statement = select(func.coalesce(func.max(CommissionRule.version), 0)).where(
            CommissionRule.tenant_id == self.tenant_id,
            CommissionRule.program_id == self.program_id,
            CommissionRule.status == "active",
        )
        latest: int = await self.session.scalar(statement)
        return latest

    async def latest_version(self) -> int:
        statement = select(func.coalesce(func.max(CommissionRule.version), 0)).where(
            CommissionRule.tenant_id == self.tenant_id,
            CommissionRule.program_id == self.program_id,
        )
        latest: int = await self.session.scalar(statement)
        return latest
